"""``make_channel``: the differentiable channel layer used in training (``docs/contract.md``, Model API).

A :class:`Channel` is a callable ``(symbols [B, K, S, 2], snr_db Tensor[B]) -> received symbols``. Token
erasure (optional) is applied after the noise: a lost token is received as all zeros and marked lost in
``Channel.last_keep`` (``[B, K]`` bool, True = received); :meth:`Channel.transmit` returns both.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from edgesc.channels.functions import awgn, erasure as erase_tokens, rayleigh_block
from edgesc.errors import ConfigError

#: channel names accepted by :func:`make_channel` (``train.channel`` in presets uses the first three)
CHANNELS: tuple[str, ...] = ("awgn", "rayleigh", "rayleigh-nocsi", "none")


@dataclass
class Channel:
    """A named channel with optional token erasure. ``none`` is the noiseless identity."""

    name: str
    erasure: float = 0.0
    generator: torch.Generator | None = None
    last_keep: Tensor | None = field(default=None, repr=False)

    def transmit(self, symbols: Tensor, snr_db: Tensor | float) -> tuple[Tensor, Tensor]:
        """Send ``symbols`` [B, K, S, 2] at ``snr_db`` (scalar or [B]); returns (received, keep [B, K] bool)."""
        if self.name == "awgn":
            y = awgn(symbols, snr_db, self.generator)
        elif self.name == "rayleigh":
            y = rayleigh_block(symbols, snr_db, csi="perfect", generator=self.generator)
        elif self.name == "rayleigh-nocsi":
            y = rayleigh_block(symbols, snr_db, csi="none", generator=self.generator)
        else:
            y = symbols
        y, keep = erase_tokens(y, self.erasure, self.generator)
        return y, keep

    def __call__(self, symbols: Tensor, snr_db: Tensor | float) -> Tensor:
        y, keep = self.transmit(symbols, snr_db)
        self.last_keep = keep
        return y


def make_channel(name: str, erasure: float = 0.0, generator: torch.Generator | None = None) -> Channel:
    """Build the training channel ``name`` (awgn | rayleigh | rayleigh-nocsi | none) with token erasure
    probability ``erasure`` in [0, 1). Raises :class:`~edgesc.errors.ConfigError` on an unknown name."""
    if name not in CHANNELS:
        raise ConfigError(f"unknown channel '{name}' (known: {', '.join(CHANNELS)})")
    if not (0.0 <= float(erasure) < 1.0):
        raise ConfigError(f"channel erasure probability must be in [0, 1), got {erasure}")
    return Channel(name=name, erasure=float(erasure), generator=generator)
