"""Parsing command-line lists and loading user-supplied bench images."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from edgesc.bench.errors import BenchError

T = TypeVar("T", int, float)


def parse_list(text: str | None, kind: Callable[[str], T], option: str) -> list[T]:
    """``"1,0.5, 0.25"`` → ``[1.0, 0.5, 0.25]``; :class:`BenchError` naming the option on a bad item."""
    if text is None:
        return []
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise BenchError(f"{option} needs at least one value")
    out: list[T] = []
    for item in items:
        try:
            out.append(kind(item))
        except ValueError:
            name = "an integer" if kind is int else "a number"
            raise BenchError(f"{option}: {item!r} is not {name}") from None
    return out


def load_images_npy(path: str | Path) -> np.ndarray:
    """A .npy file of images [N, C, H, W] (float in [0, 1], or uint8 0..255)."""
    p = Path(path)
    if not p.is_file():
        raise BenchError(f"images file not found: {p}")
    try:
        x = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BenchError(f"{p}: not a readable .npy array ({exc})") from None
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    if x.dtype.kind != "f" or x.ndim != 4:
        raise BenchError(f"{p}: images must be a float [N, C, H, W] array in [0, 1], got {x.dtype}{list(x.shape)}")
    if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise BenchError(f"{p}: image values must be finite and lie in [0, 1]")
    return x.astype(np.float32)
