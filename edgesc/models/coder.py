"""Channel coder (paper 001 §IV-C; 000 Table II "Linear 64"): per-token maps between ``E`` features and ``S``
complex symbols, one encoder/decoder pair per ratio level (``coder.symbols``; index = ``ratio`` control).

``hidden = 0``: one linear layer each way (000); ``hidden > 0``: three-layer MLPs with ReLU between layers
(001). Symbols are laid out ``[..., S, 2]`` (I, Q); :func:`normalize_power` scales each image to unit average
complex-symbol power over the symbols it transmits (docs/contract.md).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def _mlp(inp: int, out: int, hidden: int) -> nn.Module:
    if hidden <= 0:
        return nn.Linear(inp, out)
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out))


def normalize_power(symbols: Tensor, weight: Tensor | None = None, eps: float = 1e-12) -> Tensor:
    """Scale each image of ``symbols`` [B, K, S, 2] to unit average power per complex symbol.

    ``weight`` [B, K] (training form): the token mask; symbols are multiplied by it and the average is taken
    over ``S · Σ weight`` symbols, which is exactly the transmitted set when the mask is binary.
    """
    if weight is None:
        power = symbols.pow(2).sum(dim=-1).mean(dim=(1, 2))
    else:
        symbols = symbols * weight[..., None, None]
        count = weight.sum(dim=1) * symbols.shape[-2]
        power = symbols.pow(2).sum(dim=(1, 2, 3)) / count.clamp_min(1.0)
    return symbols * torch.rsqrt(power.clamp_min(eps))[:, None, None, None]


class ChannelEncoder(nn.Module):
    """Device side: tokens [B, K, E] → raw symbols [B, K, S_r, 2] with the pair of ratio level ``r``."""

    def __init__(self, embed_dim: int, symbols: tuple[int, ...], hidden: int) -> None:
        super().__init__()
        self.symbols = tuple(symbols)
        self.hidden = hidden
        self.levels = nn.ModuleList(_mlp(embed_dim, 2 * s, hidden) for s in symbols)

    def forward(self, tokens: Tensor, level: int) -> Tensor:
        s = self.symbols[level]
        return self.levels[level](tokens).reshape(*tokens.shape[:-1], s, 2)


class ChannelDecoder(nn.Module):
    """Server side: received symbols [B, K, S_r, 2] → token features [B, K, E]."""

    def __init__(self, embed_dim: int, symbols: tuple[int, ...], hidden: int) -> None:
        super().__init__()
        self.symbols = tuple(symbols)
        self.hidden = hidden
        self.levels = nn.ModuleList(_mlp(2 * s, embed_dim, hidden) for s in symbols)

    def forward(self, symbols: Tensor, level: int) -> Tensor:
        return self.levels[level](symbols.reshape(*symbols.shape[:-2], symbols.shape[-2] * 2))
