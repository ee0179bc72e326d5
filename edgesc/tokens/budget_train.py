"""A compact trainer for token-budget experiments (paper 001 §IV-B, Eq. 9; paper 003 Eq. 5).

``edgesc train`` (``edgesc.train``) is the product's trainer and always draws α per example. The budget
experiment (benchmarks/token_budget.py) also needs models trained at ONE fixed α (the fixed-budget baselines of
001 §VI / 003 Fig. 3-4), and the tests need a model trained in seconds; this module does exactly that and
nothing more: AdamW with linear warm-up and cosine decay (``edgesc.train.schedule.warmup_cosine``), task loss
(cross-entropy or MSE) + the model's auxiliary losses (budget / sparsity penalties, 001 Eq. 7-9), one SNR per
batch uniform in the preset's ``train.snr_db``, one ratio level per batch, the preset's channel.

``budget="sampled"``: α ~ U(1/M, 1] per example (001 §IV-B, as ``edgesc train``); a float: that α for all.

``tokens.train_selection = "topk"``: the forward pass keeps exactly ``ceil(α·M)`` tokens, so the budget is met by
construction and the output penalty (001 Eq. 7) only sees the ceil quantisation, ``ceil(α·M)/M − α ∈ [0, 1/M)``.
With 16 patches that exceeds the 0.05 margin for a fifth of the sampled α, always upwards, and its straight-through
gradient then pushes every soft mask towards 0 until ``ReLU(σ(f_l) − σ(f_h))`` is 0 everywhere and the gates stop
learning (measured: mean soft mask 0.01 after 3000 steps). ``topk_penalty=False`` (default) therefore drops the
token penalties in top-k training.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgesc.config import ModelConfig
from edgesc.errors import ConfigError
from edgesc.tokens.profile import check_budget


@dataclass
class TrainLog:
    steps: int
    seconds: float
    loss: list[float] = field(default_factory=list)  # mean per logging window
    budget_penalty: list[float] = field(default_factory=list)


def train_budget_model(
    cfg: ModelConfig,
    images: Tensor,
    labels: Tensor,
    steps: int,
    budget: str | float = "sampled",
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    log_every: int = 50,
    topk_penalty: bool = False,
) -> tuple[nn.Module, TrainLog]:
    """Train ``edgesc.models.build_model(cfg)`` on in-memory ``images`` / ``labels`` for ``steps`` steps."""
    from edgesc.channels import make_channel
    from edgesc.models import Controls, build_model
    from edgesc.train.schedule import warmup_cosine

    if not cfg.tokens.enabled:
        raise ConfigError(f"{cfg.name}: token-budget training needs [tokens] enabled = true")
    fixed = None if budget == "sampled" else check_budget(float(budget))
    torch.manual_seed(seed)
    model = build_model(cfg)
    model.train()
    bs = batch_size or cfg.train.batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=lr or cfg.train.lr, weight_decay=cfg.train.weight_decay)
    sched = warmup_cosine(opt, min(cfg.train.warmup_steps, max(1, steps // 10)), steps)
    gen = torch.Generator().manual_seed(seed)
    channel = make_channel(cfg.train.channel, generator=torch.Generator().manual_seed(seed + 1))
    lo, hi = cfg.train.snr_db
    levels = len(cfg.coder.symbols)
    bmin = 1.0 / cfg.num_patches
    n = images.shape[0]
    log = TrainLog(steps=steps, seconds=0.0)
    window: list[float] = []
    pen: list[float] = []
    t0 = time.perf_counter()
    perm = torch.randperm(n, generator=gen)
    pos = 0
    for step in range(steps):
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos:pos + bs]
        pos += bs
        x, y = images[idx], labels[idx]
        if fixed is None:
            alpha: Tensor | float = bmin + (1.0 - bmin) * torch.rand(x.shape[0], generator=gen)
        else:
            alpha = fixed
        snr = lo + (hi - lo) * float(torch.rand((), generator=gen))
        ratio = int(torch.randint(0, levels, (), generator=gen))
        out = model(x, Controls(budget=alpha, snr_db=snr, ratio=ratio), channel)
        task = F.cross_entropy(out.output, y) if cfg.task == "classification" else F.mse_loss(out.output, x)
        losses = dict(out.losses)
        if cfg.tokens.train_selection == "topk" and not topk_penalty:
            losses = {k: v for k, v in losses.items() if not k.startswith("tokens")}
        aux = sum(losses.values()) if losses else torch.zeros(())
        loss = task + aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        window.append(float(loss.detach()))
        pen.append(float(sum(v.detach() for k, v in out.losses.items() if k.startswith("tokens"))) if out.losses else 0.0)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            log.loss.append(sum(window) / len(window))
            log.budget_penalty.append(sum(pen) / len(pen))
            window, pen = [], []
    log.seconds = time.perf_counter() - t0
    model.eval()
    return model, log


__all__ = ["train_budget_model", "TrainLog"]
