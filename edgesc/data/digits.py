"""``digits32``: scikit-learn's handwritten digits (1797 images, 8×8 gray, 10 classes) as 32×32 RGB.

A demo set for classification presets: tiny, offline, learnable in minutes on a CPU, and far easier than
CIFAR-10 or Imagenette — numbers on it say that the pipeline works, not how good a model is.
Pixel values 0..16 are scaled to [0, 1], upsampled bilinearly to ``image_size`` and repeated over 3 channels.
Split: a stratified 80/20 split drawn once with ``numpy.random.RandomState(0)`` (stable across numpy versions).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from edgesc.data.arrays import ImageArrayDataset
from edgesc.errors import DataError

TEST_FRACTION = 0.2


@lru_cache(maxsize=4)
def _digits(image_size: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - the data extra is part of setup.sh
        raise DataError(f"digits32 needs scikit-learn (pip install 'edgesc[data]'): {exc}") from None
    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)  # [N, 1, 8, 8]
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False,
                      antialias=image_size < 8)
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(d.target.astype(np.int64))
    order = np.random.RandomState(0).permutation(len(labels))
    is_test = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        members = order[d.target[order] == c]
        is_test[members[: int(round(TEST_FRACTION * len(members)))]] = True
    return images, labels, is_test


def load_digits32(split: str, image_size: int = 32) -> ImageArrayDataset:
    if not (8 <= image_size <= 512):
        raise DataError(f"digits32: image_size must be in [8, 512], got {image_size}")
    images, labels, is_test = _digits(image_size)
    sel = torch.from_numpy(is_test if split == "test" else ~is_test)
    return ImageArrayDataset(images[sel], labels[sel], f"digits32/{split}", num_classes=10)
