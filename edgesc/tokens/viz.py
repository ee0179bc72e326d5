"""``edgesc viz``: which tokens a trained token-selection model keeps (paper 001 §VI-C, Fig. 9; paper 003
§III-B, Fig. 7-8: interpretability of token selection).

For every image: the input, the SOFT mask of the training form at each adaptive block (001 Eq. 6: the recursive
mask ``ReLU(σ(f_l(x)) − σ(f_h(t)))·mask_prev``, shown as the patch's brightness, value printed on it), and the
HARD top-k set of the inference form (the ``ceil(α·M)`` patches with the largest gate score at ``select_at``,
which are what the exported encoder transmits; dropped patches greyed out).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from edgesc.config import ModelConfig
from edgesc.errors import ConfigError, DataError
from edgesc.tokens.profile import check_budget, load_images, write_json


@torch.no_grad()
def token_masks(model: Any, images: Tensor, budget: float, snr_db: float = 10.0) -> dict[str, Any]:
    """Soft masks per adaptive block ``[B, n_adaptive, M]`` (training form, no channel needed: the masks are
    computed before the channel) and the hard top-k patch indices ``[B, k]`` (inference form)."""
    from edgesc.models import Controls

    cfg: ModelConfig = model.cfg
    sel = model.encoder.tokens
    if sel is None:
        raise ConfigError(f"{cfg.name} has no token selection ([tokens] enabled = false): nothing to show")
    check_budget(budget)
    model.eval()
    recorded: list[Tensor] = []
    original = sel.soft_mask

    def recording(i: int, patches: Tensor, budget_token: Tensor, prev: Tensor) -> Tensor:
        mask = original(i, patches, budget_token, prev)
        recorded.append(mask.detach())
        return mask

    sel.soft_mask = recording  # instance attribute: shadows the method for this call only
    try:
        ctl = model.resolve(Controls(budget=float(budget), snr_db=float(snr_db)), images.shape[0], images)
        ctl.hard_tokens = False
        model.encoder(images, ctl)
    finally:
        del sel.soft_mask
    soft = torch.stack(recorded, dim=1) if recorded else torch.ones(images.shape[0], 0, cfg.num_patches)
    enc = model.encoder.inference()
    _, index, _, _ = enc(images, budget=torch.tensor(float(budget)), snr_db=torch.tensor(float(snr_db)))
    hard = index[:, int(cfg.class_token):]  # drop the class token (index M), always first
    return {"soft": soft, "hard": hard, "layers": list(sel.adaptive_layers), "select_at": sel.select_at}


def _overlay(image: Tensor, weights: Tensor, patch: int) -> Tensor:
    """``image`` [C, H, W] with every patch blended towards grey by ``1 − weight`` (weights [M] in [0, 1])."""
    c, h, w = image.shape
    g = h // patch
    wmap = weights.reshape(g, g).repeat_interleave(patch, 0).repeat_interleave(patch, 1)
    img = image if c == 3 else image.expand(3, -1, -1)
    grey = torch.full_like(img, 0.5)
    return (wmap * img + (1 - wmap) * (0.25 * img + 0.75 * grey)).clamp(0, 1)


def render(images: Tensor, masks: dict[str, Any], budget: float, cfg: ModelConfig, out: str | Path,
           labels: Tensor | None = None) -> list[Path]:
    """Write one PNG per image into ``out`` (``tokens_000.png`` …) and return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    p, m = cfg.patch_size, cfg.num_patches
    g = cfg.image_size // p
    soft, hard = masks["soft"], masks["hard"]
    n_soft = soft.shape[1]
    paths = []
    for b in range(images.shape[0]):
        cols = 2 + n_soft
        fig, axes = plt.subplots(1, cols, figsize=(2.2 * cols, 2.5))
        img = images[b]
        axes[0].imshow(img.permute(1, 2, 0).numpy())
        title = "input" if labels is None or int(labels[b]) < 0 else f"input (label {int(labels[b])})"
        axes[0].set_title(title, fontsize=8)
        for j in range(n_soft):
            wj = soft[b, j].clamp(0, 1)
            ax = axes[1 + j]
            ax.imshow(_overlay(img, wj, p).permute(1, 2, 0).numpy())
            kept = int((wj > 0).sum())
            ax.set_title(f"soft, layer {masks['layers'][j]}\n{kept}/{m} > 0, mean {float(wj.mean()):.2f}", fontsize=7)
            if g <= 8:
                for i in range(m):
                    ax.text((i % g) * p + p / 2 - 0.5, (i // g) * p + p / 2 - 0.5, f"{float(wj[i]):.2f}",
                            ha="center", va="center", fontsize=5, color="yellow")
        hk = torch.zeros(m)
        hk[hard[b]] = 1.0
        ax = axes[-1]
        ax.imshow(_overlay(img, hk, p).permute(1, 2, 0).numpy())
        ax.set_title(f"hard top-k, layer {masks['select_at']}\nk={hard.shape[1]}/{m} (α={budget:g})", fontsize=7)
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.tight_layout()
        path = folder / f"tokens_{b:03d}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def run_viz(checkpoint: str | Path, images: int, budget: float, out: str | Path, data: str | None = None,
            split: str = "test", snr_db: float = 10.0) -> dict[str, Any]:
    """CLI body of ``edgesc viz``: PNGs plus ``masks.json`` (soft masks and hard sets) in ``out``."""
    from edgesc.bench.inputs import check_output_dir
    from edgesc.train.checkpoint import load_checkpoint

    check_output_dir(out, "--out")
    check_budget(budget)
    if images < 1:
        raise DataError(f"--images must be >= 1, got {images}")
    cfg, model, _ = load_checkpoint(checkpoint)
    if not cfg.tokens.enabled:
        raise ConfigError(f"{checkpoint}: preset {cfg.name} has no token selection: nothing to visualise")
    x, y = load_images(data or cfg.train.data, cfg, images, split)
    masks = token_masks(model, x, budget, snr_db)
    paths = render(x, masks, budget, cfg, out, y)
    index = {"checkpoint": str(checkpoint), "budget": budget, "adaptive_layers": masks["layers"],
             "select_at": masks["select_at"], "num_patches": cfg.num_patches,
             "images": [{"png": p.name, "soft": masks["soft"][i].tolist(), "hard": masks["hard"][i].tolist()}
                        for i, p in enumerate(paths)]}
    write_json(index, Path(out) / "masks.json")
    return {"pngs": [str(p) for p in paths], "masks": str(Path(out) / "masks.json"),
            "soft_kept": [int((masks["soft"][:, j] > 0).sum()) / (x.shape[0] * cfg.num_patches)
                          for j in range(masks["soft"].shape[1])],
            "hard_kept": masks["hard"].shape[1] / cfg.num_patches}


__all__ = ["token_masks", "render", "run_viz"]
