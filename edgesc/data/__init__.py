"""Data sets: embedded demo sets (``photos32``, ``digits32``) and real ones (``cifar10:PATH``, ``folder:PATH``).

See docs/data.md. Every item is ``(image float32 [3, H, W] in [0, 1], label int)``, label −1 when unlabeled.
"""
from __future__ import annotations

from edgesc.data.arrays import ImageArrayDataset
from edgesc.data.cifar import CIFAR10_MD5, CIFAR10_URL, download_cifar10
from edgesc.data.folder import FolderDataset
from edgesc.data.load import KNOWN_SPECS, SPLITS, load_dataset, make_loader

__all__ = [
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "FolderDataset",
    "ImageArrayDataset",
    "KNOWN_SPECS",
    "SPLITS",
    "download_cifar10",
    "load_dataset",
    "make_loader",
]
