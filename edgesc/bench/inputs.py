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


def check_output_dir(path: str | Path, option: str) -> None:
    """Fail before a long job when its output *folder* cannot be made: the path is a file, or a parent is a file.

    The parent walk is :func:`edgesc.train.options.check_output_file`'s (one rule for every output path)."""
    from edgesc.train.options import OptionError, check_output_file

    p = Path(path)
    if p.exists():
        if not p.is_dir():
            raise OptionError(f"{option} {p}: exists and is not a folder")
        return
    check_output_file(p, option)  # a path that does not exist yet: only its parents are checked


def read_images_npy(path: str | Path) -> tuple[np.ndarray, str]:
    """A .npy file of images [N, C, H, W] with N >= 1: float in [0, 1], or uint8 0..255 (divided by 255).

    Returns the float32 images and a description of what was done (``"x.npy (uint8, scaled by 1/255)"``)."""
    p = Path(path)
    if not p.is_file():
        raise BenchError(f"images file not found: {p}")
    try:
        x = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BenchError(f"{p}: not a readable .npy array ({exc})") from None
    if x.ndim != 4 or (x.dtype != np.uint8 and x.dtype.kind != "f"):
        raise BenchError(f"{p}: images must be a float [N, C, H, W] array in [0, 1] (or uint8 0..255), "
                         f"got {x.dtype}{list(x.shape)}")
    if x.shape[0] == 0:
        raise BenchError(f"{p}: holds no images (N = 0 in shape {list(x.shape)})")
    source = str(p)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
        source += " (uint8, scaled by 1/255)"
    elif not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise BenchError(f"{p}: float image values must be finite and lie in [0, 1] "
                         f"(got [{np.nanmin(x):g}, {np.nanmax(x):g}]); give uint8 for 0..255")
    return x.astype(np.float32), source


def load_images_npy(path: str | Path) -> np.ndarray:
    """The images of :func:`read_images_npy` (float32 [N, C, H, W] in [0, 1], N >= 1)."""
    return read_images_npy(path)[0]
