"""Parity: edgesc_runtime.flops (executed FLOPs from the graph statistics) against
torch.utils.flop_counter.FlopCounterMode on the PyTorch inference form (edgesc.models) — docs/contract.md
"Executed FLOPs": both must agree exactly. Randomly initialised weights, so halting varies by token and image."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
config = pytest.importorskip("edgesc.config")
models = pytest.importorskip("edgesc.models")

from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from edgesc_runtime.flops import FlopModel  # noqa: E402


def flop_model(cfg: Any) -> FlopModel:
    """The manifest's model/flops blocks as the exporter writes them from a preset (contract "Manifest")."""
    model = {"task": cfg.task, "channels": cfg.channels, "patch_size": cfg.patch_size,
             "num_patches": cfg.num_patches, "embed_dim": cfg.embed_dim, "heads": cfg.heads, "mlp_dim": cfg.mlp_dim,
             "mlp_groups": cfg.mlp_groups, "num_classes": cfg.num_classes, "class_token": cfg.class_token,
             "encoder_layers": cfg.encoder.units * cfg.encoder.recursions,
             "decoder_layers": cfg.decoder.units * cfg.decoder.recursions}
    enc = {"halting": cfg.depth.enabled, "tokens": cfg.tokens.enabled, "coder_hidden": cfg.coder.hidden,
           "specials": cfg.specials, "select_at": cfg.tokens.select_at if cfg.tokens.enabled else 0}
    dec = {"halting": cfg.depth.enabled, "coder_hidden": cfg.coder.hidden, "head": cfg.task}
    return FlopModel.from_dicts(model, enc, dec)


def _counted(fn, *args, **kwargs) -> tuple[int, Any]:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = fn(*args, **kwargs)
    return int(counter.get_total_flops()), out


VARIANTS = {
    "recvit-tiny": {},
    "tokens+ratios": {"tokens": {"enabled": True, "select_at": 1, "adaptive_layers": [1]},
                      "coder": {"symbols": [8, 4], "hidden": 0}},
    "tokens+mlp-coder": {"tokens": {"enabled": True, "select_at": 0, "adaptive_layers": [0]},
                         "coder": {"symbols": [8], "hidden": 16}},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_executed_flops_match_flop_counter(variant: str) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = config.load_preset("recvit-tiny")
    if VARIANTS[variant]:
        cfg = cfg.replace(**VARIANTS[variant])
    codec = models.build_model(cfg).eval()
    enc, dec = codec.encoder.inference(), codec.decoder.inference()
    fm = flop_model(cfg)
    names = set(models.control_names(cfg, "encoder"))
    images = torch.rand(3, cfg.channels, cfg.image_size, cfg.image_size)
    S_levels = list(cfg.coder.symbols)
    for budget, depth, width, snr, ratio in ((1.0, 2, 1.0, 10.0, 0), (0.5, 1, 0.5, 0.0, len(S_levels) - 1),
                                             (0.25, 2, 0.75, 20.0, 0)):
        kw = {k: torch.tensor(v) for k, v in (("budget", budget), ("depth", depth), ("width", width),
                                               ("snr_db", snr), ("ratio", ratio)) if k in names}
        counted, (symbols, index, lt, wu) = _counted(enc, images, **kw)
        K, S = symbols.shape[1], symbols.shape[2]
        assert S == S_levels[ratio]
        runtime = fm.encoder_flops(K, S, lt.numpy(), wu.numpy())
        assert int(runtime.sum()) == counted, f"encoder {variant} {kw}: runtime {runtime.sum()} vs counter {counted}"
        dkw = {k: v for k, v in kw.items() if k != "budget"}
        counted_d, (out, lt_d, wu_d) = _counted(dec, symbols, index, **dkw)
        runtime_d = fm.decoder_flops(K, S, lt_d.numpy(), wu_d.numpy())
        assert int(runtime_d.sum()) == counted_d, f"decoder {variant} {dkw}: runtime {runtime_d.sum()} vs {counted_d}"
    assert np.all(runtime > 0)
