"""Patch embedding and un-embedding (paper 000 Eq. 1-3, paper 001 §III: non-overlapping patches, learned
positional embedding).

Both directions are plain ``Linear`` layers on flattened patches, so that ``torch.utils.flop_counter`` counts
exactly ``M·(C·P²)·E`` MACs for the embedding and ``M·E·(C·P²)`` for the reconstruction head (docs/contract.md).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def patchify(images: Tensor, patch: int) -> Tensor:
    """``[B, C, H, W]`` → ``[B, M, C·P²]`` in row-major patch order (patch index = row · (W/P) + col)."""
    b, c, h, w = images.shape
    gh, gw = h // patch, w // patch
    x = images.reshape(b, c, gh, patch, gw, patch)
    x = x.permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, gh * gw, c * patch * patch)


def unpatchify(patches: Tensor, patch: int, channels: int, size: int) -> Tensor:
    """Inverse of :func:`patchify`: ``[B, M, C·P²]`` → ``[B, C, H, W]``."""
    b = patches.shape[0]
    g = size // patch
    x = patches.reshape(b, g, g, channels, patch, patch)
    x = x.permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, channels, size, size)


class PatchEmbed(nn.Module):
    """Image → ``M`` patch tokens of width ``E`` plus a learned positional embedding (000 Eq. 1-3)."""

    def __init__(self, image_size: int, patch_size: int, channels: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.num_patches = (image_size // patch_size) ** 2
        self.proj = nn.Linear(channels * patch_size * patch_size, embed_dim)
        self.pos = nn.Parameter(torch.randn(1, self.num_patches, embed_dim) * 0.02)

    def forward(self, images: Tensor) -> Tensor:
        return self.proj(patchify(images, self.patch_size)) + self.pos


class PatchUnembed(nn.Module):
    """Reconstruction head: a linear map of each token to its ``C·P²`` pixels, folded back to the image.

    A sigmoid keeps the output in [0, 1] (images are in [0, 1] by contract).
    """

    def __init__(self, image_size: int, patch_size: int, channels: int, embed_dim: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.patch_size = patch_size
        self.channels = channels
        self.proj = nn.Linear(embed_dim, channels * patch_size * patch_size)

    def forward(self, tokens: Tensor) -> Tensor:
        return unpatchify(torch.sigmoid(self.proj(tokens)), self.patch_size, self.channels, self.image_size)
