"""``edgesc eval``: quality, executed depth, kept width and FLOPs per image, per SNR, with the inference form.

Evaluation runs what is deployed: ``model.encoder.inference()`` and ``model.decoder.inference()`` (hard top-k,
hard halting, hard width), with the channel between them (docs/contract.md, Model API). Per SNR it reports

* quality: mean per-image PSNR and SSIM (reconstruction) or accuracy (classification);
* ``enc_layers`` / ``dec_layers``: mean executed layers per token (Σ_l layer_tokens[l] / tokens — the average
  depth of paper 000 Fig. 8) and ``*_layers_any``: layers that ran for at least one token;
* ``enc_width`` / ``dec_width``: retained width, the parameter-weighted kept fraction of heads (4E² per layer)
  and MLP groups (2ED per layer) over executed layers (Eq. 36-37 with ρ → kept), plus the two parts;
* ``flops_per_image``: counted with ``torch.utils.flop_counter.FlopCounterMode`` on the inference form
  (FLOPs = 2·MACs, matmul-class ops, the contract's convention), encoder + decoder, divided by the batch;
  ``flops_formula_per_image``: the contract's executed-FLOP formula (:func:`edgesc.models.flops.executed_flops`)
  from the graphs' ``layer_tokens``/``width_units`` outputs — the two agree (tested); with ``count_flops=False``
  only the formula is computed and ``flops_per_image`` is the formula's value.

Baselines of paper 000 as configurations of the same checkpoint: ``ee:D`` (RecViT-EE) runs every token through
exactly ``D`` layers — halting switched off, depth cap D; ``sp:R`` (RecViT-SP) prunes a fixed fraction R of the
heads and MLP groups — channel-adaptive retention K(ξ, σ²) switched off, width scale 1 − R; ``sdw:D:R``
(RecViT-SDW) does both.
"""
from __future__ import annotations

from edgesc.plots import save_figure

import json
import math
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from edgesc.config import ModelConfig
from edgesc.errors import ControlError
from edgesc.train.options import Baseline, OptionError

QUALITY_KEYS = {"reconstruction": ("psnr", "ssim"), "classification": ("accuracy",)}


# ---- configuration of one evaluation --------------------------------------------------------------------------
NEUTRAL_LOGIT = 30.0
"""|logit| that saturates a float32 sigmoid: sigmoid(-30) ≈ 1e-13 (never halts), sigmoid(30) = 1.0 (keep all)."""


def baseline_model(model: nn.Module, cfg: ModelConfig, baseline: Baseline | None,
                   overrides: dict[str, Any]) -> tuple[nn.Module, ModelConfig, dict[str, Any]]:
    """Turn a trained model into a paper-000 baseline: returns (model, cfg, control overrides).

    Early exit (``ee:D``, RecViT-EE; the depth part of ``sdw``): dynamic depth is switched on if the checkpoint
    lacks it (β = 0) and the stop-score head is neutralised (w = 0, b = −30/α, so h ≈ 1e-13 and no token halts
    on its own); the depth cap D then forces every token to halt at layer D with weight 1 − Σh ≈ 1 — a fixed
    early exit after D layers.
    Static pruning (``sp:R``, RecViT-SP; the width part of ``sdw``): dynamic width is switched on if the
    checkpoint lacks it (importance scores 0: units kept in index order) and every threshold ξ is set to 30/γ so
    that K(ξ, σ²) = 100 % at every SNR; the width scale 1 − R then keeps the ceil(n·(1 − R)) most important
    units of every component — a static pruning ratio.
    """
    if baseline is None:
        return model, cfg, overrides
    from edgesc.config import from_dict
    from edgesc.models import build_model
    from edgesc.models.depth import DepthController
    from edgesc.models.width import WidthController

    kind = baseline.kind
    fix_depth, fix_width = baseline.depth is not None, baseline.prune is not None
    overrides = dict(overrides)
    d = cfg.to_dict()
    if fix_depth:
        depth = int(baseline.depth)
        layers = min(cfg.encoder.layers, cfg.decoder.layers)
        if depth > layers:
            raise OptionError(f"--baseline {baseline.label}: the model has only {layers} layers per side")
        if overrides.get("depth") is not None:
            raise OptionError(f"--baseline {baseline.label} sets the depth; do not pass --depth as well")
        if cfg.depth.alpha <= 0:
            raise OptionError(f"--baseline {baseline.label} needs depth.alpha > 0")
        overrides["depth"] = depth
        if not cfg.depth.enabled:
            d["depth"] = {**d["depth"], "enabled": True, "beta": 0.0}
    if fix_width:
        if overrides.get("width") is not None:
            raise OptionError(f"--baseline {baseline.label} sets the width; do not pass --width as well")
        if cfg.width.gamma == 0:
            raise OptionError(f"--baseline {baseline.label} needs width.gamma != 0")
        overrides["width"] = 1.0 - float(baseline.prune)
        if not cfg.width.enabled:
            d["width"] = {**d["width"], "enabled": True}
    new_cfg = from_dict(d)
    new_model = build_model(new_cfg)
    old_state = model.state_dict()
    own = new_model.state_dict()
    mismatched = [k for k in own if k in old_state and old_state[k].shape != own[k].shape]
    if mismatched:
        raise OptionError(f"--baseline {kind}: weight {mismatched[0]} changed shape")
    new_model.load_state_dict({k: v for k, v in old_state.items() if k in own}, strict=False)
    fresh = {k for k in own if k not in old_state}
    with torch.no_grad():
        for name, mod in new_model.named_modules():
            if fix_depth and isinstance(mod, DepthController):
                mod.halt.weight.zero_()
                mod.halt.bias.fill_(-NEUTRAL_LOGIT / mod.alpha)
                fresh -= {f"{name}.halt.weight", f"{name}.halt.bias"}
            if fix_width and isinstance(mod, WidthController):
                mod.xi.fill_(NEUTRAL_LOGIT / mod.gamma)
                if f"{name}.head_scores" in fresh:
                    mod.head_scores.zero_()
                    mod.group_scores.zero_()
                fresh -= {f"{name}.xi", f"{name}.head_scores", f"{name}.group_scores"}
    if fresh:
        raise OptionError(f"--baseline {kind}: the baseline model lacks trained weights for {sorted(fresh)[:3]}")
    device = next(model.parameters()).device
    return new_model.to(device).eval(), new_cfg, overrides


def control_tensors(cfg: ModelConfig, snr_db: float, overrides: dict[str, Any]) -> dict[str, torch.Tensor]:
    """0-d control tensors for the inference modules (defaults: full budget, no cap, full width, ratio 0)."""
    budget = overrides.get("budget")
    depth = overrides.get("depth")
    width = overrides.get("width")
    ratio = overrides.get("ratio")
    if budget is not None and not cfg.tokens.enabled:
        raise ControlError(f"--budget {budget:g}: model '{cfg.name}' has no token selection (no budget control)")
    budget = 1.0 if budget is None else float(budget)
    if not (0.0 < budget <= 1.0):
        raise ControlError(f"--budget {budget:g}: must be in (0, 1]")
    width = 1.0 if width is None else float(width)
    if not (0.0 < width <= 1.0):
        raise ControlError(f"--width {width:g}: must be in (0, 1]")
    lmax = max(cfg.encoder.layers, cfg.decoder.layers)
    depth = lmax if depth is None else int(depth)
    if not (1 <= depth <= lmax):
        raise ControlError(f"--depth {depth}: must be in [1, {lmax}]")
    ratio = 0 if ratio is None else int(ratio)
    if not (0 <= ratio < len(cfg.coder.symbols)):
        raise ControlError(f"--ratio {ratio}: must be in [0, {len(cfg.coder.symbols)})")
    return {
        "budget": torch.tensor(budget, dtype=torch.float32),
        "depth": torch.tensor(depth, dtype=torch.int64),
        "width": torch.tensor(width, dtype=torch.float32),
        "snr_db": torch.tensor(float(snr_db), dtype=torch.float32),
        "ratio": torch.tensor(ratio, dtype=torch.int64),
    }


# ---- statistics -----------------------------------------------------------------------------------------------
def depth_stats(layer_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: mean executed layers per token and the number of layers that ran at all."""
    lt = layer_tokens.to(torch.float64)
    tokens = lt.max(dim=1).values.clamp_min(1.0)  # tokens present at the first executed layer
    return lt.sum(dim=1) / tokens, (lt > 0).sum(dim=1).to(torch.float64)


def width_stats(cfg: ModelConfig, width_units: torch.Tensor, layer_tokens: torch.Tensor) -> dict[str, float]:
    """Kept fractions of heads, MLP groups, and their parameter-weighted mix (Eq. 36-37), over executed layers."""
    wu = width_units.to(torch.float64)
    ran = (layer_tokens > 0).any(dim=0)
    if not bool(ran.any()):
        return {"heads": 0.0, "mlp": 0.0, "kept": 0.0}
    heads = wu[ran, 0] / cfg.heads
    mlp = wu[ran, 1] / cfg.mlp_groups
    e, dm = cfg.embed_dim, cfg.mlp_dim
    kept = (4 * e * e * heads + 2 * e * dm * mlp) / (4 * e * e + 2 * e * dm)
    return {"heads": float(heads.mean()), "mlp": float(mlp.mean()), "kept": float(kept.mean())}


def flops_of_call(fn: Any, *args: Any) -> tuple[Any, int]:
    """Run ``fn(*args)`` under ``FlopCounterMode``; returns (result, total FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        result = fn(*args)
    return result, int(counter.get_total_flops())


# ---- evaluation -----------------------------------------------------------------------------------------------
def _test_loader(data: str | Dataset, cfg: ModelConfig, batch_size: int, split: str = "test") -> DataLoader:
    if isinstance(data, Dataset):
        ds = data
    else:
        from edgesc.data import load_dataset

        ds = load_dataset(data, split, cfg.image_size)
    from edgesc.data.load import check_task

    check_task(ds, cfg.task, cfg.num_classes, f"model '{cfg.name}'")
    return DataLoader(ds, batch_size=batch_size, shuffle=False, drop_last=False)


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    cfg: ModelConfig,
    *,
    data: str | Dataset,
    snrs: Sequence[float],
    channel: str = "awgn",
    batch_size: int = 64,
    max_batches: int | None = None,
    device: torch.device | str = "cpu",
    overrides: dict[str, Any] | None = None,
    baseline: Baseline | None = None,
    count_flops: bool = True,
    seed: int = 0,
    split: str = "test",
) -> dict[str, Any]:
    """Evaluate ``model`` per SNR with the inference form; returns the JSON-ready result dict."""
    from edgesc import metrics
    from edgesc.channels import make_channel
    from edgesc.models.flops import executed_flops

    device = torch.device(device)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    model = model.to(device).eval()
    model, cfg, overrides = baseline_model(model, cfg, baseline, overrides)
    enc = model.encoder.inference().to(device).eval()
    dec = model.decoder.inference().to(device).eval()
    loader = _test_loader(data, cfg, batch_size, split)
    quality = QUALITY_KEYS[cfg.task]
    rows: list[dict[str, Any]] = []
    for snr in snrs:
        ctl = {k: v.to(device) for k, v in control_tensors(cfg, snr, overrides).items()}
        chan = make_channel(channel, 0.0, generator=torch.Generator(device=device).manual_seed(seed))
        sums: dict[str, float] = {}
        n_images = 0
        flops_total = 0
        formula_total = 0

        def add(key: str, value: float, weight: int) -> None:
            sums[key] = sums.get(key, 0.0) + value * weight

        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            images = (batch[0] if isinstance(batch, (list, tuple)) else batch).to(device).float()
            labels = batch[1].to(device) if isinstance(batch, (list, tuple)) and len(batch) > 1 else None
            b = images.shape[0]
            enc_args = (images, ctl["budget"], ctl["depth"], ctl["width"], ctl["snr_db"], ctl["ratio"])
            if count_flops:
                (symbols, token_index, lt_enc, wu_enc), f_enc = flops_of_call(enc, *enc_args)
            else:
                symbols, token_index, lt_enc, wu_enc = enc(*enc_args)
                f_enc = 0
            received = chan(symbols, ctl["snr_db"].expand(b))
            dec_args = (received, token_index, ctl["depth"], ctl["width"], ctl["snr_db"], ctl["ratio"])
            if count_flops:
                (output, lt_dec, wu_dec), f_dec = flops_of_call(dec, *dec_args)
            else:
                output, lt_dec, wu_dec = dec(*dec_args)
                f_dec = 0
            flops_total += f_enc + f_dec
            symbols_per_token = cfg.coder.symbols[int(ctl["ratio"])]
            kk = int(token_index.shape[1])
            formula_total += sum(executed_flops(cfg, "encoder", lt_enc, wu_enc, kk, symbols_per_token))
            formula_total += sum(executed_flops(cfg, "decoder", lt_dec, wu_dec, kk, symbols_per_token))
            if cfg.task == "reconstruction":
                out = output.clamp(0, 1)
                add("psnr", float(metrics.psnr(out, images).mean()), b)
                add("ssim", float(metrics.ssim(out, images).mean()), b)
            else:
                add("accuracy", 100.0 * float(metrics.accuracy(output, labels)), b)
            for side, lt, wu in (("enc", lt_enc, wu_enc), ("dec", lt_dec, wu_dec)):
                mean_layers, any_layers = depth_stats(lt)
                add(f"{side}_layers", float(mean_layers.mean()), b)
                add(f"{side}_layers_any", float(any_layers.mean()), b)
                ws = width_stats(cfg, wu, lt)
                add(f"{side}_width", ws["kept"], b)
                add(f"{side}_width_heads", ws["heads"], b)
                add(f"{side}_width_mlp", ws["mlp"], b)
            add("tokens", float(token_index.shape[1]), b)
            n_images += b
        if n_images == 0:
            raise OptionError("evaluation saw no images (empty test set or --max-batches 0)")
        row: dict[str, Any] = {"snr_db": float(snr), "images": n_images}
        row.update({k: v / n_images for k, v in sums.items()})
        row["flops_formula_per_image"] = formula_total / n_images
        row["flops_per_image"] = flops_total / n_images if count_flops else row["flops_formula_per_image"]
        row["flops_source"] = "counted" if count_flops else "formula"
        rows.append(row)
    return {
        "model": cfg.name,
        "task": cfg.task,
        "channel": channel,
        "controls": {k: overrides.get(k) for k in ("budget", "depth", "width", "ratio")},
        "baseline": None if baseline is None else baseline.label,
        "quality_keys": list(quality),
        "results": rows,
    }


# ---- presentation ---------------------------------------------------------------------------------------------
def results_table(result: dict[str, Any]):
    """A rich table of an evaluation result."""
    from rich.table import Table

    title = f"{result['model']} on {result['channel']}"
    if result.get("baseline"):
        title += f" (baseline {result['baseline']})"
    table = Table(title=title)
    cols = ["snr_db", *result["quality_keys"], "enc_layers", "dec_layers", "enc_width", "dec_width", "tokens"]
    if result["results"] and "flops_per_image" in result["results"][0]:
        cols.append("flops_per_image")
    for c in cols:
        table.add_column(c, justify="right")
    for row in result["results"]:
        cells = []
        for c in cols:
            v = row.get(c)
            if v is None:
                cells.append("-")
            elif c == "flops_per_image":
                cells.append(f"{v / 1e6:.2f}M")
            elif c in ("ssim", "enc_width", "dec_width"):
                cells.append(f"{v:.4f}")
            else:
                cells.append(f"{v:.2f}")
        table.add_row(*cells)
    return table


def write_json(result: dict[str, Any], path: str | Path) -> Path:
    from edgesc.train.checkpoint import atomic_write_text

    return atomic_write_text(path, json.dumps(result, indent=2, allow_nan=False) + "\n")


def plot_results(result: dict[str, Any], path: str | Path) -> Path:
    """Quality vs SNR and FLOPs per image vs SNR, side by side (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["results"]
    snr = [r["snr_db"] for r in rows]
    key = result["quality_keys"][0]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    axes[0].plot(snr, [r[key] for r in rows], marker="o")
    axes[0].set_xlabel("SNR (dB)")
    axes[0].set_ylabel({"psnr": "PSNR (dB)", "accuracy": "accuracy (%)"}.get(key, key))
    axes[0].grid(alpha=0.3)
    if "flops_per_image" in rows[0]:
        axes[1].plot(snr, [r["flops_per_image"] / 1e6 for r in rows], marker="s", color="tab:orange")
        axes[1].set_ylabel("MFLOPs per image")
    else:
        axes[1].plot(snr, [r["enc_layers"] for r in rows], marker="s", color="tab:orange")
        axes[1].set_ylabel("encoder layers per token")
    axes[1].set_xlabel("SNR (dB)")
    axes[1].grid(alpha=0.3)
    title = f"{result['model']} ({result['channel']})"
    if result.get("baseline"):
        title += f" baseline {result['baseline']}"
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def mean_over_snr(result: dict[str, Any], key: str) -> float:
    vals = [r[key] for r in result["results"] if key in r and r[key] is not None]
    return sum(vals) / len(vals) if vals else math.nan
