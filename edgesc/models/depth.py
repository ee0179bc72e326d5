"""Dynamic depth by cumulative stopping scores (paper 000 §III-A, Eq. 20-29, Alg. 1), per token.

At layer ``l`` every active token (``p = 1``) is updated (Eq. 20) and gets a stop score (Eq. 21)
``h = sigmoid(α(w·z + b) − βσ²)``; the cumulative score ``h̃ += h`` (Eq. 22) halts the token once ``h̃ ≥ T``
(Eq. 23). At the last layer and at the ``depth`` cap the score is forced to 1 (Alg. 1 line 13), so every token
halts there. The output is ``Z_out = Σ_l diag(w^(l)) Z^(l)`` (Eq. 26).

DEVIATION (documented in docs/methods.md): Eq. 25 gives a halted token its remainder ``r = 1 − h̃`` at *every*
later layer, so its weights sum to more than one and depend on how long *other* tokens run. edgesc uses the
ACT reading: the remainder is added once, at the halting layer (``w = r`` there, ``w = h`` before, ``0`` after),
and the weights of a token sum to exactly one. The ponder cost (Eq. 27-28) is ``q + r`` with ``q`` the number of
layers the token ran and ``r`` its remainder at the halting layer; halting decisions are discrete, gradients flow
through ``h`` and ``r``.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from edgesc.config import DepthConfig

HALT_BIAS_INIT = -3.0  # sigmoid(-3) ≈ 0.05: at initialisation tokens run (almost) every layer


class HaltStep(NamedTuple):
    weight: Tensor  # w^(l) [B, T] (Eq. 25, ACT reading)
    cumulative: Tensor  # h̃^(l) [B, T] (Eq. 22)
    active: Tensor  # p^(l) [B, T] bool (Eq. 23)
    halted: Tensor  # tokens that halt at this layer [B, T] bool
    remainder: Tensor  # r = 1 − h̃^(l-1) [B, T] (Eq. 24)


def halting_step(h: Tensor, active: Tensor, cumulative: Tensor, forced: Tensor, threshold: float) -> HaltStep:
    """One step of Alg. 1 lines 10-22 for all tokens. Shared verbatim by the training and inference forms.

    ``h``: stop scores of this layer (any value where ``active`` is false); ``forced``: bool tensor (0-d or
    broadcastable), true at the last layer / the depth cap, where ``h = 1``.
    """
    h = torch.where(forced, 1.0, h)
    h = torch.where(active, h, 0.0)
    remainder = 1.0 - cumulative
    halted = active & ((cumulative + h >= threshold) | forced)
    weight = torch.where(halted, remainder, h)
    return HaltStep(weight, cumulative + h, active & ~halted, halted, remainder)


class DepthController(nn.Module):
    """Stop-score head ``w ∈ R^E, b`` (000 Eq. 21, Table II "Dynamic Depth Module": 192 → 1, sigmoid).

    One head per side (encoder / decoder), shared by its layers as in Eq. 21 (``w`` carries no layer index).
    ``channel_term = False`` removes ``−βσ²`` (Alg. 2 step 3: depth fine-tuning after width pruning).
    """

    def __init__(self, embed_dim: int, cfg: DepthConfig) -> None:
        super().__init__()
        self.threshold = float(cfg.threshold)
        self.alpha = float(cfg.alpha)
        self.beta = float(cfg.beta)
        self.tau = float(cfg.tau)
        self.channel_term = True
        self.halt = nn.Linear(embed_dim, 1)
        nn.init.zeros_(self.halt.weight)
        nn.init.constant_(self.halt.bias, HALT_BIAS_INIT)

    @property
    def effective_beta(self) -> float:
        return self.beta if self.channel_term else 0.0

    def score(self, z: Tensor, noise_var: Tensor) -> Tensor:
        """Eq. 21: ``sigmoid(α(w·z + b) − βσ²)``; ``z`` [..., E], ``noise_var`` broadcastable to ``z[..., 0]``."""
        logit = self.halt(z).squeeze(-1)
        return torch.sigmoid(self.alpha * logit - self.effective_beta * noise_var)

    def ponder_loss(self, count: Tensor, remainder: Tensor, present: Tensor) -> Tensor:
        """Eq. 28-29: ``τ · mean_m (q_m + r_m)`` over the tokens present (``present`` [B, T] bool)."""
        per_token = (count + remainder) * present
        return self.tau * per_token.sum() / present.sum().clamp_min(1)
