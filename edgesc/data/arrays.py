"""In-memory image sets: a uint8 array of images and their labels, served as float tensors in [0, 1]."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from edgesc.errors import DataError


class ImageArrayDataset(Dataset):
    """Images ``uint8 [N, 3, H, W]`` and labels ``int64 [N]`` (−1 = unlabeled).

    Items are ``(image float32 [3, H, W] in [0, 1], label int)``. ``images``/``labels`` stay accessible for
    fast whole-set work (evaluation sweeps, statistics).
    """

    def __init__(self, images: Tensor, labels: Tensor, name: str, num_classes: int = 0) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise DataError(f"{name}: images must be uint8 [N, 3, H, W], got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise DataError(f"{name}: {labels.shape[0]} labels for {images.shape[0]} images")
        self.images = images.contiguous()
        self.labels = labels.to(torch.int64)
        self.name = name
        self.num_classes = num_classes

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index].float().div_(255.0), int(self.labels[index])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def __repr__(self) -> str:
        return f"ImageArrayDataset({self.name!r}, n={len(self)}, size={tuple(self.images.shape[1:])})"


def resize_uint8(images: Tensor, size: int) -> Tensor:
    """Resize ``uint8 [N, C, H, W]`` images to ``size × size`` (bilinear, antialiased when shrinking)."""
    if images.shape[-2:] == (size, size):
        return images
    out = []
    for chunk in images.split(2048):
        x = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out) if out else images.new_zeros((0, images.shape[1], size, size))
