"""Dynamic width by learnable importance scores and channel-aware retention (paper 000 §III-B, Eq. 30-39).

Per block (shared by the recursions of an RTU) and per component ``j`` ∈ {heads, MLP groups}: importance scores
``a`` (one per unit) and a threshold parameter ``ξ``. The retention ratio is ``K(ξ, σ²) = 100·sigmoid(γξ + δσ²)``
(Eq. 32); the run-time ``width`` control scales it, and the number of units kept is
``clamp(ceil(n · width · K/100), 1, n)`` (docs/contract.md). The kept units are the top ones by ``a`` (Eq. 31;
ties broken by unit index, stable). The binary mask is made trainable with a straight-through estimator: the
forward value is the hard mask, the backward pass sees the surrogate ``sigmoid(a_i) · K/100`` so that gradients
reach both ``a`` and ``ξ``. The pruning ratio ``ρ̄`` is the parameter-weighted mean of ``1 − K/100`` (Eq. 35-37),
the sparsity penalty ``L_ρ = (ρ̄ − ρ_t)²`` when ``ρ̄ < ρ_t`` (Eq. 34) with the adaptive weight
``λ = max(λ_max L_ρ/(1 − ρ_t)², λ_min)`` (Eq. 39, treated as a constant in the gradient).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from edgesc.config import WidthConfig


def keep_counts(units: Tensor, width: Tensor, retention: Tensor) -> Tensor:
    """``clamp(ceil(n · width · K/100), 1, n)`` as int64; one expression for both model forms."""
    kept = torch.ceil(units * (width * retention))
    return torch.minimum(torch.maximum(kept, torch.ones_like(kept)), units).to(torch.int64)


def unit_ranks(scores: Tensor) -> Tensor:
    """Rank of every unit by descending importance (0 = most important), stable in the unit index."""
    order = torch.argsort(scores, dim=-1, descending=True, stable=True)
    return torch.argsort(order, dim=-1, stable=True)


class WidthController(nn.Module):
    """Importance scores and retention thresholds of one side (encoder or decoder)."""

    def __init__(self, blocks: int, heads: int, groups: int, embed_dim: int, mlp_dim: int, cfg: WidthConfig) -> None:
        super().__init__()
        self.blocks, self.heads, self.groups = blocks, heads, groups
        self.gamma, self.delta = float(cfg.gamma), float(cfg.delta)
        self.target, self.lambda_max, self.lambda_min = float(cfg.target_prune), float(cfg.lambda_max), float(cfg.lambda_min)
        self.head_scores = nn.Parameter(torch.zeros(blocks, heads))  # a (heads), Eq. 31
        self.group_scores = nn.Parameter(torch.zeros(blocks, groups))  # a (MLP groups)
        self.xi = nn.Parameter(torch.full((blocks, 2), float(cfg.xi_init)))  # ξ per (block, component), Eq. 32
        e, d = embed_dim, mlp_dim
        # θ_{i,j}: parameters of each prunable component (Eq. 36): attention 4E²+4E, MLP 2ED+D+E
        self.register_buffer("theta", torch.tensor([4 * e * e + 4 * e, 2 * e * d + d + e], dtype=torch.float32),
                             persistent=False)
        self.register_buffer("units", torch.tensor([heads, groups], dtype=torch.float32), persistent=False)

    def retention(self, noise_var: Tensor) -> Tensor:
        """``K(ξ, σ²)/100`` (Eq. 32) of shape ``noise_var.shape + [blocks, 2]``."""
        return torch.sigmoid(self.gamma * self.xi + self.delta * noise_var[..., None, None])

    def keep(self, width: Tensor, noise_var: Tensor) -> Tensor:
        """Units kept per (block, component): int64 ``[..., blocks, 2]``."""
        return keep_counts(self.units, width[..., None, None], self.retention(noise_var))

    def masks(self, width: Tensor, noise_var: Tensor) -> tuple[Tensor, Tensor]:
        """STE masks (Eq. 31): head mask [B, blocks, H] and MLP-group mask [B, blocks, G]."""
        ret = self.retention(noise_var)  # [B, blocks, 2]
        keep = keep_counts(self.units, width[..., None, None], ret)
        out = []
        for j, scores in enumerate((self.head_scores, self.group_scores)):
            hard = (unit_ranks(scores)[None] < keep[..., j : j + 1]).to(scores.dtype)
            soft = torch.sigmoid(scores)[None] * ret[..., j : j + 1]
            out.append(hard + (soft - soft.detach()))
        return out[0], out[1]

    def prune_terms(self, noise_var: Tensor) -> tuple[Tensor, Tensor]:
        """Numerator and denominator of ρ̄ (Eq. 35-37) for this side: ``Σθρ`` [B] and ``Σθ``."""
        rho = 1.0 - self.retention(noise_var)  # Eq. 35
        return (rho * self.theta).sum(dim=(-1, -2)), self.theta.sum() * self.blocks

    def sparsity_loss(self, rho_bar: Tensor) -> tuple[Tensor, Tensor]:
        """Eq. 34 and 38-39: ``(λ_ρ · L_ρ, λ_ρ)`` for the overall pruning ratio ``ρ̄`` (per example, averaged)."""
        l_rho = torch.where(rho_bar < self.target, (rho_bar - self.target) ** 2, torch.zeros_like(rho_bar)).mean()
        lam = torch.clamp(self.lambda_max * l_rho.detach() / (1.0 - self.target) ** 2, min=self.lambda_min)
        return lam * l_rho, lam
