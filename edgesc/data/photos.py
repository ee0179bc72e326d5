"""``photos32``: crops of scikit-image's public-domain / CC0 colour photographs (no download, works offline).

Sources and licences (from the ``skimage.data`` docstrings):

| split | image | licence |
|---|---|---|
| train | astronaut (Eileen Collins, NASA) | public domain |
| train | rocket (DSCOVR launch, SpaceX) | public domain |
| train | hubble_deep_field (NASA) | public domain |
| train | immunohistochemistry (CMMI) | no known copyright restrictions |
| train | retina (M. Häggström) | CC0 1.0 |
| test  | chelsea (the cat, S. van der Walt) | CC0 |
| test  | coffee (R. Michetti) | CC0 |

The split is by source image, so no test crop shares pixels with a training crop. Each source is first shrunk
(antialiased) so that its longer side is at most 512 px; then ``image_size`` crops are cut on a grid with stride
``image_size // 2`` (train) or ``image_size`` (test, non-overlapping); near-flat crops (pixel std < 0.02,
e.g. the black background of retina and the Hubble field) are dropped. Everything is deterministic and computed
at load (well under 2 s); nothing is cached on disk.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from edgesc.data.arrays import ImageArrayDataset
from edgesc.errors import DataError

TRAIN_SOURCES: tuple[str, ...] = ("astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
TEST_SOURCES: tuple[str, ...] = ("chelsea", "coffee")
MAX_SIDE = 512
FLAT_STD = 0.02


def _source(name: str) -> np.ndarray:
    """One source photo as uint8 [H, W, 3], longer side shrunk to at most MAX_SIDE."""
    try:
        import skimage.data
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - the data extra is part of setup.sh
        raise DataError(f"photos32 needs scikit-image and pillow (pip install 'edgesc[data]'): {exc}") from None
    img = np.asarray(getattr(skimage.data, name)())
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise DataError(f"photos32: skimage.data.{name} is not an RGB uint8 photo ({img.dtype}, {img.shape})")
    h, w = img.shape[:2]
    scale = MAX_SIDE / max(h, w)
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        img = np.asarray(Image.fromarray(img).resize(size, Image.Resampling.LANCZOS))
    return img


def _crops(img: np.ndarray, size: int, stride: int) -> np.ndarray:
    """All ``size``×``size`` crops on a regular grid (row-major), flat ones removed: uint8 [N, 3, size, size]."""
    h, w = img.shape[:2]
    if h < size or w < size:
        return np.zeros((0, 3, size, size), np.uint8)
    win = np.lib.stride_tricks.sliding_window_view(img, (size, size), axis=(0, 1))[::stride, ::stride]
    crops = win.reshape(-1, 3, size, size)  # sliding_window_view puts the window axes last: [..., 3, s, s]
    keep = crops.reshape(len(crops), -1).std(axis=1) / 255.0 >= FLAT_STD
    return np.ascontiguousarray(crops[keep])


@lru_cache(maxsize=8)
def _photos(split: str, image_size: int) -> tuple[torch.Tensor, tuple[tuple[str, int], ...]]:
    sources = TRAIN_SOURCES if split == "train" else TEST_SOURCES
    stride = max(1, image_size // 2) if split == "train" else image_size
    parts, counts = [], []
    for name in sources:
        c = _crops(_source(name), image_size, stride)
        parts.append(c)
        counts.append((name, len(c)))
    images = torch.from_numpy(np.concatenate(parts))
    if len(images) == 0:
        raise DataError(f"photos32: image_size {image_size} leaves no {split} crops")
    return images, tuple(counts)


def load_photos(split: str, image_size: int = 32) -> ImageArrayDataset:
    """The ``photos32`` set (unlabeled: every label is −1). ``image_size`` crops are cut directly."""
    if not (4 <= image_size <= 256):
        raise DataError(f"photos32: image_size must be in [4, 256], got {image_size}")
    images, counts = _photos(split, image_size)
    ds = ImageArrayDataset(images, torch.full((len(images),), -1, dtype=torch.int64), f"photos32/{split}")
    ds.sources = dict(counts)  # crops per source image, for the docs and tests
    return ds
