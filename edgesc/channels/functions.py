"""The channel definitions of ``docs/contract.md`` in torch (the training form).

Symbols are real tensors ``[B, ..., 2]`` whose last axis holds (I, Q); a complex symbol's power is I² + Q².
SNR is defined once, per complex symbol at unit average transmit power: the noise is n ~ CN(0, σ²) with
σ² = 10^(-snr_db/10), i.e. I and Q each get variance σ²/2 (paper 000 Eq. 13, paper 001 §III, paper 003 §II-A).
``edgesc_runtime.channel`` implements the same definitions in numpy; the tests of both measure them.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from edgesc.errors import ConfigError

_EPS = 1e-12


def _check_symbols(x: Tensor) -> None:
    if x.dim() < 2 or x.shape[-1] != 2:
        raise ConfigError(f"channel symbols must have shape [B, ..., 2] (I, Q last), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ConfigError(f"channel symbols must be a floating-point tensor, got {x.dtype}")


def _per_image(value: Tensor | float, x: Tensor) -> Tensor:
    """A scalar or a ``[B]`` tensor as a ``[B, 1, ..., 1]`` tensor broadcastable against ``x``."""
    v = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if v.dim() == 0:
        v = v.expand(x.shape[0])
    if v.dim() != 1 or v.shape[0] != x.shape[0]:
        raise ConfigError(f"snr_db must be a scalar or a [B] tensor with B={x.shape[0]}, got shape {tuple(v.shape)}")
    return v.reshape((x.shape[0],) + (1,) * (x.dim() - 1))


def _randn(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


def _rand(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    device = generator.device if generator is not None else like.device
    return torch.rand(shape, generator=generator, device=device).to(like.device)


def _cmul(a: Tensor, b: Tensor) -> Tensor:
    """Complex product of two (I, Q) tensors (broadcasting)."""
    re = a[..., 0] * b[..., 0] - a[..., 1] * b[..., 1]
    im = a[..., 0] * b[..., 1] + a[..., 1] * b[..., 0]
    return torch.stack((re, im), dim=-1)


def _cdiv(a: Tensor, b: Tensor) -> Tensor:
    """Complex quotient a / b of two (I, Q) tensors (broadcasting)."""
    den = (b[..., 0] ** 2 + b[..., 1] ** 2).clamp_min(_EPS)
    re = (a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1]) / den
    im = (a[..., 1] * b[..., 0] - a[..., 0] * b[..., 1]) / den
    return torch.stack((re, im), dim=-1)


def symbol_power(x: Tensor) -> Tensor:
    """Average complex-symbol power I² + Q² of each image: ``[B]``."""
    _check_symbols(x)
    n = math.prod(x.shape[1:-1])
    return x.pow(2).flatten(1).sum(1) / n if n else x.new_zeros(x.shape[0])


def normalize_power(x: Tensor) -> Tensor:
    """Scale each image (all dims after batch) to unit average complex-symbol power.

    The power constraint of deep JSCC (paper 001 §IV-C; the transmit power behind 000 Eq. 13). An image with no
    symbols (K = 0) or all-zero symbols is returned unchanged.
    """
    _check_symbols(x)
    if math.prod(x.shape[1:-1]) == 0:
        return x
    power = symbol_power(x)
    scale = torch.where(power > _EPS, power.clamp_min(_EPS).rsqrt(), torch.ones_like(power))
    return x * scale.reshape((-1,) + (1,) * (x.dim() - 1))


def noise_variance(snr_db: Tensor | float) -> Tensor:
    """σ² = 10^(-snr_db/10): complex noise variance per symbol at unit average transmit power."""
    s = torch.as_tensor(snr_db, dtype=torch.float32) if not isinstance(snr_db, Tensor) else snr_db
    return torch.pow(10.0, -s / 10.0)


def complex_noise(x: Tensor, snr_db: Tensor | float, generator: torch.Generator | None = None) -> Tensor:
    """n ~ CN(0, σ²) shaped like ``x``: I and Q each N(0, σ²/2), σ² per image from ``snr_db``."""
    _check_symbols(x)
    sigma2 = noise_variance(_per_image(snr_db, x))
    return _randn(tuple(x.shape), x, generator) * torch.sqrt(sigma2 / 2.0)


def awgn(x: Tensor, snr_db: Tensor | float, generator: torch.Generator | None = None) -> Tensor:
    """AWGN channel y = x + n, n ~ CN(0, σ²) (000 Eq. 13 with g = 1). ``snr_db``: scalar or ``[B]``."""
    return x + complex_noise(x, snr_db, generator)


def rayleigh_gain(batch: int, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One block-fading coefficient g ~ CN(0, 1) per image: ``[B, 2]`` (I, Q), E|g|² = 1."""
    return _randn((batch, 2), like, generator) * (0.5 ** 0.5)


def rayleigh_block(
    x: Tensor,
    snr_db: Tensor | float,
    csi: str = "perfect",
    generator: torch.Generator | None = None,
    return_gain: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Block Rayleigh fading y = g·x + n with one g ~ CN(0, 1) per image (000 Eq. 13; 001 slow fading).

    ``csi="perfect"`` returns the zero-forcing estimate y/g = x + n/g (the receiver knows g exactly);
    ``csi="none"`` returns y as received. With ``return_gain`` also returns g as ``[B, 2]``.
    The average received SNR E|g|²/σ² equals the requested SNR because E|g|² = 1.
    """
    _check_symbols(x)
    if csi not in ("perfect", "none"):
        raise ConfigError(f"csi must be 'perfect' or 'none', got {csi!r}")
    g = rayleigh_gain(x.shape[0], x, generator)
    gb = g.reshape((x.shape[0],) + (1,) * (x.dim() - 2) + (2,))
    y = _cmul(gb, x) + complex_noise(x, snr_db, generator)
    if csi == "perfect":
        y = _cdiv(y, gb)
    return (y, g) if return_gain else y


def erasure(x: Tensor, p: float, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Token erasure (003 §II-A packet drops): each token ``x[b, k]`` (all its S symbols) is lost with
    probability ``p``. Returns (symbols with lost tokens zeroed, keep mask ``[B, K]`` bool, True = received)."""
    _check_symbols(x)
    if x.dim() < 3:
        raise ConfigError(f"erasure needs symbols [B, K, ..., 2], got {tuple(x.shape)}")
    if not (0.0 <= float(p) < 1.0):
        raise ConfigError(f"erasure probability must be in [0, 1), got {p}")
    if p == 0.0:
        return x, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    keep = _rand(tuple(x.shape[:2]), x, generator) >= p
    mask = keep.reshape(tuple(x.shape[:2]) + (1,) * (x.dim() - 2)).to(x.dtype)
    return x * mask, keep
