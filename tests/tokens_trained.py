"""A briefly trained token-selection classifier shared by the token tests (trained once per test process).

token-vit-tiny (16 patches, class token, select_at 1, 2 ratio levels) with a linear channel coder
(``coder.hidden = 0``: the preset's 3-layer MLP coder learns several times slower, too slow for a test) on
digits32, α sampled per example, soft masks in training (the papers' form), budget-penalty weight λ = 5
(001 Eq. 9 leaves λ free; 5 makes a 500-step training meet the budget).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from edgesc.config import load_preset

STEPS = 500


@lru_cache(maxsize=1)
def trained_tiny():
    """(cfg, model, test images, test labels, train seconds)."""
    from edgesc.tokens.budget_train import train_budget_model
    from edgesc.tokens.profile import load_images

    torch.set_num_threads(1)
    base = load_preset("token-vit-tiny")
    cfg = base.replace(coder={"symbols": [8, 2], "hidden": 0},
                       tokens={**base.to_dict()["tokens"], "output_weight": 5.0},
                       train={**base.to_dict()["train"], "lr": 2e-3, "batch_size": 32, "warmup_steps": 20})
    x, y = load_images("digits32", cfg, None, "train")
    xt, yt = load_images("digits32", cfg, 200, "test")
    model, log = train_budget_model(cfg, x, y, STEPS, budget="sampled", seed=0)
    return cfg, model, xt, yt, log.seconds


def trained_checkpoint(folder: Path) -> Path:
    """The shared model written as an edgesc checkpoint in ``folder``."""
    from edgesc.train.checkpoint import save_checkpoint

    cfg, model, *_ = trained_tiny()
    return save_checkpoint(Path(folder) / "tiny-tokens.pt", cfg=cfg, model=model, step=STEPS)
