"""Learning-rate schedule and the sampling of operating points (controls) during training.

One trained model must serve every operating point the exported graphs expose, so training draws the controls
at random (the schedule is documented in docs/training.md):

* ``snr_db``: one value per batch, uniform in ``[lo, hi]`` (the channel SNR also feeds Eq. 21 and Eq. 32 of
  paper 000).
* ``budget`` (token presets only): one α per example, uniform in ``[budget_min, 1]`` (paper 001 draws
  α ~ U(0, 1) per example; ``budget_min`` defaults to 1/M because k = ceil(α·M) >= 1 anyway).
* ``depth``: with probability ``p_depth_cap`` a layer cap uniform in ``{1, …, L}`` for the batch (this is what
  the RecViT-EE early-exit baseline and the ``depth`` control of the graphs use); otherwise no cap.
* ``width``: with probability ``p_width_scale`` a width scale uniform in ``[width_scale_min, 1]`` for the batch
  (static pruning on top of K(ξ, σ²), the RecViT-SP baseline); otherwise 1.
* ``ratio``: uniform over the coder's ratio levels.

All draws come from the global torch generator, whose state is checkpointed, so a resumed run draws the same
operating points as an uninterrupted one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from edgesc.config import ModelConfig


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                  final_fraction: float = 0.01) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_steps`` then cosine decay to ``final_fraction`` of the peak at ``total_steps``."""
    warmup_steps = max(0, min(warmup_steps, total_steps - 1))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass(frozen=True)
class ControlSchedule:
    """Draws one operating point per training batch (see the module docstring)."""

    snr_db: tuple[float, float]
    layers: int
    tokens: bool
    num_patches: int
    ratio_levels: int = 1
    p_depth_cap: float = 0.25
    p_width_scale: float = 0.25
    width_scale_min: float = 0.25
    budget_min: float | None = None

    @classmethod
    def for_config(cls, cfg: ModelConfig, snr_db: tuple[float, float], **kw: Any) -> "ControlSchedule":
        kw = {k: v for k, v in kw.items() if v is not None}
        return cls(snr_db=snr_db, layers=min(cfg.encoder.layers, cfg.decoder.layers), tokens=cfg.tokens.enabled,
                   num_patches=cfg.num_patches, ratio_levels=len(cfg.coder.symbols), **kw)

    def sample(self, batch: int, device: torch.device | str = "cpu") -> dict[str, Any]:
        """A dict with the fields of :class:`edgesc.models.Controls` for one batch of ``batch`` examples."""
        lo, hi = self.snr_db
        snr = lo + (hi - lo) * float(torch.rand(()))
        depth: int | None = None
        if self.p_depth_cap > 0 and float(torch.rand(())) < self.p_depth_cap:
            depth = int(torch.randint(1, self.layers + 1, ()))
        width = 1.0
        if self.p_width_scale > 0 and float(torch.rand(())) < self.p_width_scale:
            width = self.width_scale_min + (1.0 - self.width_scale_min) * float(torch.rand(()))
        budget: torch.Tensor | float = 1.0
        if self.tokens:
            bmin = self.budget_min if self.budget_min is not None else 1.0 / self.num_patches
            budget = (bmin + (1.0 - bmin) * torch.rand(batch)).to(device)
        ratio = int(torch.randint(0, self.ratio_levels, ())) if self.ratio_levels > 1 else 0
        return {"budget": budget, "depth": depth, "width": width, "snr_db": snr, "ratio": ratio}
