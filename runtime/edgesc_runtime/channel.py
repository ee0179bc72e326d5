"""The channel definitions of docs/contract.md in numpy (the run-time twin of ``edgesc.channels``).

Symbols are real arrays ``[B, ..., 2]`` whose last axis holds (I, Q); a complex symbol's power is I² + Q².
SNR is defined once, per complex symbol at unit average transmit power: the noise is n ~ CN(0, σ²) with
σ² = 10^(-snr_db/10), i.e. I and Q each get variance σ²/2 (paper 000 Eq. 13, paper 001 §III, paper 003 §II-A).

- :func:`awgn`: y = x + n.
- :func:`rayleigh_block`: one g ~ CN(0, 1) per image, y = g·x + n; ``csi="perfect"`` returns the zero-forcing
  estimate y/g, ``csi="none"`` returns y.
- :func:`erasure`: each token (all its S symbols) is lost with probability p and DROPPED together with its
  index (the torch training form zeroes it and marks it lost instead); the result feeds ``Decoder.decode``.

Randomness comes from a ``numpy.random.Generator`` (pass one, or an int seed; None = fresh entropy).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import ControlError, InputError

_EPS = 1e-12
CSI_MODES = ("perfect", "none")


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise ControlError(f"rng must be a numpy.random.Generator, an int seed or None, got {type(rng).__name__}")


def _check_symbols(x: Any) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim < 2 or x.shape[-1] != 2:
        raise InputError(f"channel symbols must have shape [B, ..., 2] (I, Q last), got {list(x.shape)}")
    if x.dtype.kind != "f":
        raise InputError(f"channel symbols must be floating point, got dtype {x.dtype}")
    return x


def _per_image(value: Any, x: np.ndarray, name: str = "snr_db") -> np.ndarray:
    """A scalar or a [B] array as [B, 1, ..., 1] float64, broadcastable against ``x``."""
    v = np.asarray(value, dtype=np.float64)
    if v.ndim == 0:
        v = np.full(x.shape[0], float(v))
    if v.ndim != 1 or v.shape[0] != x.shape[0]:
        raise ControlError(f"{name} must be a scalar or a [B] array with B={x.shape[0]}, got shape {list(v.shape)}")
    if not np.isfinite(v).all():
        raise ControlError(f"{name} must be finite")
    return v.reshape((x.shape[0],) + (1,) * (x.ndim - 1))


def symbol_power(x: Any) -> np.ndarray:
    """Average complex-symbol power per image, [B] (mean of I² + Q² over all symbols of the image)."""
    x = _check_symbols(x)
    p = (x.astype(np.float64) ** 2).sum(-1)
    return p.reshape(x.shape[0], -1).mean(axis=1) if p.size else np.zeros(x.shape[0])


def normalize_power(x: Any) -> np.ndarray:
    """Scale each image (all dims after batch) to unit average complex-symbol power (contract)."""
    x = _check_symbols(x)
    scale = 1.0 / np.sqrt(np.maximum(symbol_power(x), _EPS))
    return (x * scale.reshape((-1,) + (1,) * (x.ndim - 1))).astype(x.dtype, copy=False)


def noise_variance(snr_db: Any) -> np.ndarray | float:
    """σ² = 10^(-snr_db/10): complex noise variance per symbol at unit average transmit power."""
    v = np.power(10.0, -np.asarray(snr_db, dtype=np.float64) / 10.0)
    return float(v) if v.ndim == 0 else v


def complex_noise(x: Any, snr_db: Any, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """n ~ CN(0, σ²) shaped like ``x``: I and Q each N(0, σ²/2), σ² per image from ``snr_db``."""
    x = _check_symbols(x)
    sigma2 = noise_variance(_per_image(snr_db, x))
    return (_rng(rng).standard_normal(x.shape) * np.sqrt(sigma2 / 2.0)).astype(x.dtype, copy=False)


def awgn(x: Any, snr_db: Any, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """AWGN channel y = x + n, n ~ CN(0, σ²) (000 Eq. 13 with g = 1). ``snr_db``: scalar or [B]."""
    x = _check_symbols(x)
    return x + complex_noise(x, snr_db, rng)


def rayleigh_gain(batch: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """One block-fading coefficient g ~ CN(0, 1) per image: [B, 2] (I, Q), E|g|² = 1."""
    return _rng(rng).standard_normal((batch, 2)) * math.sqrt(0.5)


def _cmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    re = a[..., 0] * b[..., 0] - a[..., 1] * b[..., 1]
    im = a[..., 0] * b[..., 1] + a[..., 1] * b[..., 0]
    return np.stack((re, im), axis=-1)


def _cdiv(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    den = np.maximum(b[..., 0] ** 2 + b[..., 1] ** 2, _EPS)
    re = (a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1]) / den
    im = (a[..., 1] * b[..., 0] - a[..., 0] * b[..., 1]) / den
    return np.stack((re, im), axis=-1)


def rayleigh_block(x: Any, snr_db: Any, csi: str = "perfect", rng: np.random.Generator | int | None = None,
                   return_gain: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Block Rayleigh fading y = g·x + n, one g ~ CN(0, 1) per image (000 Eq. 13; 001 slow fading).

    ``csi="perfect"``: zero-forcing estimate y/g = x + n/g; ``csi="none"``: y as received. With
    ``return_gain`` also returns g as [B, 2]. The gain is drawn before the noise from the same generator.
    """
    x = _check_symbols(x)
    if csi not in CSI_MODES:
        raise ControlError(f"csi must be 'perfect' or 'none', got {csi!r}")
    gen = _rng(rng)
    g = rayleigh_gain(x.shape[0], gen)
    gb = g.reshape((x.shape[0],) + (1,) * (x.ndim - 2) + (2,))
    y = _cmul(gb, x.astype(np.float64)) + complex_noise(x.astype(np.float64), snr_db, gen)
    if csi == "perfect":
        y = _cdiv(y, gb)
    y = y.astype(x.dtype, copy=False)
    return (y, g) if return_gain else y


def erasure(symbols: Any, token_index: Any, p: float, rng: np.random.Generator | int | None = None,
            return_keep: bool = False):
    """Token erasure (003 §II-A packet drops): each token (all its S symbols) is lost with probability ``p``
    and dropped with its index.

    ``symbols`` [B, K, S, 2] with ``token_index`` [B, K] -> (list of B arrays [K_b, S, 2], list of B index
    arrays [K_b]) -- ragged, as ``Decoder.decode`` accepts. One image ``[K, S, 2]`` / ``[K]`` -> two arrays.
    With ``return_keep`` also returns the keep mask ([B, K] or [K] bool, True = received).
    """
    x = _check_symbols(symbols)
    idx = np.asarray(token_index)
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, float, np.floating, np.integer)) \
            or not 0.0 <= float(p) <= 1.0:
        raise ControlError(f"erasure probability must be in [0, 1], got {p!r}")
    single = x.ndim == 3
    if single:
        x, idx = x[None], idx[None]
    if x.ndim != 4 or idx.shape != x.shape[:2]:
        raise InputError(f"erasure needs symbols [B, K, S, 2] and token_index [B, K], got {list(np.shape(symbols))} "
                         f"and {list(np.shape(token_index))}")
    keep = _rng(rng).random(x.shape[:2]) >= float(p)
    syms = [x[b][keep[b]] for b in range(x.shape[0])]
    kept = [idx[b][keep[b]] for b in range(x.shape[0])]
    out = (syms[0], kept[0]) if single else (syms, kept)
    if return_keep:
        return (*out, keep[0] if single else keep)
    return out


def measured_snr_db(x: Any, y: Any) -> float:
    """10·log10(E|x|² / E|y − x|²) over all symbols: the SNR a channel actually delivered."""
    x = _check_symbols(x).astype(np.float64)
    y = _check_symbols(y).astype(np.float64)
    signal = float((x ** 2).sum(-1).mean())
    noise = float(((y - x) ** 2).sum(-1).mean())
    return 10.0 * math.log10(signal / max(noise, 1e-300))


__all__ = ["normalize_power", "symbol_power", "noise_variance", "complex_noise", "awgn", "rayleigh_gain",
           "rayleigh_block", "erasure", "measured_snr_db", "CSI_MODES"]
