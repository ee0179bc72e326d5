"""``edgesc info``: sizes and costs of a preset — parameters, FLOPs per image (analytic and counted), layers,
tokens, symbols per token and bandwidth ratio.

* Parameters: of the training-form model (encoder = device side incl. patch embedding, token selector and
  channel encoder; decoder = server side incl. channel decoder and head). Paper 000 Table III: RecViT 3.70M.
* Analytic FLOPs: :mod:`edgesc.models.flops` — ``table1_layers``: paper 000 Table I per layer
  (4ME² + 2M²E + 2MED MACs) summed over the layers; ``analytic``: the contract's executed-FLOP model of the whole
  codec (patch embedding, layers, halting heads, channel coder, head) at full budget, depth and width.
* Counted FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` on the inference forms (encoder + decoder) for
  one image at full budget, no depth cap, full width and ``snr_db`` = 10 dB; with dynamic depth or width enabled
  the halting and retention of an untrained model decide what runs, so this is "what a fresh model executes".
* Bandwidth ratio: complex channel symbols per real source value, k/n = K·S / (C·H·W), per ratio level at full
  budget (000: 16 tokens × 32 symbols / 3072 = 1/6).
"""
from __future__ import annotations

from typing import Any

import torch

from edgesc.config import ModelConfig


def model_info(cfg: ModelConfig, snr_db: float = 10.0) -> dict[str, Any]:
    """The numbers ``edgesc info`` prints, as a JSON-ready dict."""
    from edgesc.models import build_model, flops

    torch.manual_seed(0)
    model = build_model(cfg).eval()
    image = torch.rand(1, cfg.channels, cfg.image_size, cfg.image_size)
    snr = torch.tensor(snr_db, dtype=torch.float32)
    enc, dec = model.encoder.inference(), model.decoder.inference()
    (symbols, index, lt_enc, _), f_enc = flops.counted_flops(enc, image, None, None, None, snr, None)
    (_, lt_dec, _), f_dec = flops.counted_flops(dec, symbols, index, None, None, snr, None)
    tokens = cfg.num_patches + int(cfg.class_token)
    source = cfg.channels * cfg.image_size * cfg.image_size
    analytic = flops.analytic_flops(cfg)
    t_enc = cfg.num_patches + cfg.specials
    t_dec = cfg.num_patches if cfg.task == "reconstruction" else tokens
    table1 = {"encoder": cfg.encoder.layers * flops.table1_layer_flops(t_enc, cfg.embed_dim, cfg.mlp_dim),
              "decoder": cfg.decoder.layers * flops.table1_layer_flops(t_dec, cfg.embed_dim, cfg.mlp_dim)}
    table1["total"] = table1["encoder"] + table1["decoder"]
    info: dict[str, Any] = {
        "name": cfg.name,
        "task": cfg.task,
        "description": cfg.description,
        "params": flops.param_counts(model),
        "layers": {"encoder": cfg.encoder.layers, "decoder": cfg.decoder.layers},
        "units": {"encoder": cfg.encoder.units, "decoder": cfg.decoder.units},
        "recursions": {"encoder": cfg.encoder.recursions, "decoder": cfg.decoder.recursions},
        "embed_dim": cfg.embed_dim, "heads": cfg.heads, "mlp_dim": cfg.mlp_dim, "mlp_groups": cfg.mlp_groups,
        "tokens": tokens,
        "patch_size": cfg.patch_size,
        "symbols_per_token": list(cfg.coder.symbols),
        "bandwidth_ratio": [tokens * s / source for s in cfg.coder.symbols],
        "dynamic": {"depth": cfg.depth.enabled, "width": cfg.width.enabled, "tokens": cfg.tokens.enabled},
        "flops": {
            "convention": "FLOPs = 2*MACs, matmul-class ops, per image",
            "table1_layers": table1,
            "analytic": analytic,
            "counted": {"encoder": f_enc, "decoder": f_dec, "total": f_enc + f_dec, "snr_db": snr_db,
                        "executed_layers": {"encoder": int((lt_enc > 0).sum()), "decoder": int((lt_dec > 0).sum())}},
        },
    }
    return info


def info_table(info: dict[str, Any]):
    """A rich table of :func:`model_info`."""
    from rich.table import Table

    t = Table(title=f"{info['name']} ({info['task']})", show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    p = info["params"]
    t.add_row("parameters (total / encoder / decoder)", f"{p['total'] / 1e6:.3f}M / {p['encoder'] / 1e6:.3f}M / "
              f"{p['decoder'] / 1e6:.3f}M")
    t.add_row("layers (encoder / decoder)", f"{info['layers']['encoder']} / {info['layers']['decoder']} "
              f"({info['units']['encoder']}x{info['recursions']['encoder']} / "
              f"{info['units']['decoder']}x{info['recursions']['decoder']})")
    t.add_row("embed dim / heads / MLP dim (groups)",
              f"{info['embed_dim']} / {info['heads']} / {info['mlp_dim']} ({info['mlp_groups']})")
    t.add_row("tokens / patch size", f"{info['tokens']} / {info['patch_size']}")
    t.add_row("symbols per token", ", ".join(str(s) for s in info["symbols_per_token"]))
    t.add_row("bandwidth ratio k/n", ", ".join(f"{r:.4f} (1/{1 / r:.1f})" for r in info["bandwidth_ratio"]))
    t.add_row("dynamic depth / width / tokens", " / ".join("yes" if info["dynamic"][k] else "no"
                                                           for k in ("depth", "width", "tokens")))
    a, c, t1 = info["flops"]["analytic"], info["flops"]["counted"], info["flops"]["table1_layers"]
    t.add_row("FLOPs Table I, transformer layers only (enc / dec / total)",
              f"{t1['encoder'] / 1e6:.2f}M / {t1['decoder'] / 1e6:.2f}M / {t1['total'] / 1e6:.2f}M")
    t.add_row("FLOPs analytic, full model (enc / dec / total)",
              f"{a['encoder'] / 1e6:.2f}M / {a['decoder'] / 1e6:.2f}M / {a['total'] / 1e6:.2f}M")
    t.add_row("FLOPs counted, inference form (enc / dec / total)",
              f"{c['encoder'] / 1e6:.2f}M / {c['decoder'] / 1e6:.2f}M / {c['total'] / 1e6:.2f}M")
    return t
