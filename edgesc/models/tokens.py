"""Budget-token selection (papers 001 §IV-A/B and 003 §II-B/C; equations lost in the text copy, see
/work/shared/papers/README.md notes).

* Budget token: two learnable tokens (low, high) mixed by the budget α ∈ (0, 1]: ``t = low + α·(high − low)``,
  appended after the positional embedding; it and the class token are never dropped.
* Gate of adaptive layer ``l`` (at its input): ``mask_i = ReLU(sigmoid(f_l(x_i)) − sigmoid(f_h(t))) · mask_i^prev``
  (001 Eq. 6) with scalar linear maps ``f_l`` (bias +10) and ``f_h`` (bias −10): nothing is dropped at the start.
* Losses: output (bandwidth) loss ``ReLU(|mean_i mask_i − α| − margin)`` at the last adaptive layer (001 Eq. 7,
  the local penalty of 003 Eq. 8); inner (sparsity) loss: the same penalty averaged over the earlier adaptive
  layers (001 Eq. 8); global penalty (003 Eq. 7): the same penalty on the kept fraction averaged over all layers.
* Hard selection (inference, evaluation, and ``train_selection = "topk"``): at layer ``select_at`` keep the
  ``k = clamp(ceil(α·M), 1, M)`` patches with the largest gate score ``f_l(x_i) − f_h(t)`` (a per-image shift of
  the gate logit, so the same ranking as the logit without sigmoid saturation); ``"topk"`` training passes
  gradients straight through the soft mask.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgesc.config import TokenConfig

GATE_BIAS_INIT = 10.0


def budget_keep(budget: Tensor, num_patches: int) -> Tensor:
    """``k = clamp(ceil(α·M), 1, M)`` as int64 (same expression in both model forms)."""
    k = torch.ceil(budget * num_patches)
    return torch.clamp(k, 1, num_patches).to(torch.int64)


class TokenSelector(nn.Module):
    def __init__(self, embed_dim: int, num_patches: int, cfg: TokenConfig) -> None:
        super().__init__()
        self.num_patches = num_patches
        self.select_at = int(cfg.select_at)
        self.adaptive_layers = tuple(int(a) for a in cfg.adaptive_layers)
        self.margin = float(cfg.margin)
        self.penalty = cfg.penalty
        self.train_selection = cfg.train_selection
        self.inner_weight, self.output_weight = float(cfg.inner_weight), float(cfg.output_weight)
        self.low = nn.Parameter(torch.randn(embed_dim) * 0.02)
        self.high = nn.Parameter(torch.randn(embed_dim) * 0.02)
        self.gates = nn.ModuleList(nn.Linear(embed_dim, 1) for _ in self.adaptive_layers)  # f_l
        self.thresholds = nn.ModuleList(nn.Linear(embed_dim, 1) for _ in self.adaptive_layers)  # f_h
        for g in self.gates:
            nn.init.constant_(g.bias, GATE_BIAS_INIT)
        for t in self.thresholds:
            nn.init.constant_(t.bias, -GATE_BIAS_INIT)

    def budget_token(self, budget: Tensor) -> Tensor:
        """``low + α (high − low)``: [..., E] for a budget of shape [...]."""
        return self.low + budget[..., None] * (self.high - self.low)

    def index_of(self, layer: int) -> int:
        return self.adaptive_layers.index(layer)

    def gate_logit(self, i: int, patches: Tensor) -> Tensor:
        return self.gates[i](patches).squeeze(-1)

    def threshold_logit(self, i: int, budget_token: Tensor) -> Tensor:
        return self.thresholds[i](budget_token).squeeze(-1)

    def soft_mask(self, i: int, patches: Tensor, budget_token: Tensor, prev: Tensor) -> Tensor:
        """001 Eq. 6: ``ReLU(σ(f_l(x)) − σ(f_h(t))) · prev`` for patches [B, M, E], budget token [B, E]."""
        gate = torch.sigmoid(self.gate_logit(i, patches))
        thr = torch.sigmoid(self.threshold_logit(i, budget_token))
        return F.relu(gate - thr[:, None]) * prev

    def selection_score(self, patches: Tensor, budget_token: Tensor) -> Tensor:
        """Hard-selection score at ``select_at``: ``f_l(x_i) − f_h(t)`` [B, M]."""
        i = self.index_of(self.select_at)
        return self.gate_logit(i, patches) - self.threshold_logit(i, budget_token)[..., None]

    def penalty_of(self, kept_fraction: Tensor, budget: Tensor) -> Tensor:
        """``ReLU(|kept − α| − margin)`` averaged over the batch (001 Eq. 7 / 003 Eq. 7-8)."""
        return F.relu((kept_fraction - budget).abs() - self.margin).mean()
