"""Quality metrics: PSNR and SSIM per image (data range 1), classification accuracy.

SSIM is paper 000's quality measure (Fig. 4-7). It is computed with torchmetrics' Gaussian SSIM (σ = 1.5,
11×11 window, K1 = 0.01, K2 = 0.03, population covariance) and, by default, averaged over the interior of the
SSIM map only — the border of (window − 1)/2 = 5 pixels is cropped, as in scikit-image's
``structural_similarity`` and Wang et al.'s reference code (valid filtering). torchmetrics itself averages over
the whole map, border included, computed on reflect-padded images; at 32×32 the border is 53 % of the map and
the two differed by up to 0.04 in the tests (``crop_border=False`` gives torchmetrics' number).
See docs/methods.md, "Data" → "Metrics".
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure

from edgesc.errors import DataError

SSIM_SIGMA = 1.5
#: window of the Gaussian SSIM: 2·int(3.5·σ + 0.5) + 1 = 11 taps (scikit-image and torchmetrics agree)
SSIM_WINDOW = 2 * int(3.5 * SSIM_SIGMA + 0.5) + 1


def _check_pair(name: str, x: Tensor, y: Tensor) -> None:
    if x.shape != y.shape:
        raise DataError(f"{name}: image shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.dim() != 4:
        raise DataError(f"{name}: images must be [B, C, H, W], got {tuple(x.shape)}")


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """PSNR in dB of each image pair, data range 1: 10·log10(1 / MSE). ``[B, C, H, W]`` → ``[B]``.
    Identical images give +inf."""
    _check_pair("psnr", x, y)
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1)
    return (10.0 * torch.log10(1.0 / mse)).to(torch.float32)


def ssim(x: Tensor, y: Tensor, crop_border: bool = True) -> Tensor:
    """Gaussian SSIM of each image pair (data range 1), mean over channels and pixels: ``[B]``.

    ``crop_border=True`` (default) averages the SSIM map without its 5-pixel border, like scikit-image;
    ``False`` averages the full map as torchmetrics does (border computed on reflect-padded images).
    """
    _check_pair("ssim", x, y)
    if min(x.shape[-2:]) <= SSIM_WINDOW - 1:
        raise DataError(f"ssim: images must be larger than {SSIM_WINDOW - 1} pixels per side, got {tuple(x.shape[-2:])}")
    # float32: 3x faster than float64 on CPU and within 1e-5 of scikit-image (tests/test_metrics.py)
    x = x.float()
    y = y.float()
    if not crop_border:
        return structural_similarity_index_measure(
            y, x, gaussian_kernel=True, sigma=SSIM_SIGMA, kernel_size=SSIM_WINDOW, data_range=1.0,
            reduction="none",
        ).to(torch.float32)
    _, full = structural_similarity_index_measure(
        y, x, gaussian_kernel=True, sigma=SSIM_SIGMA, kernel_size=SSIM_WINDOW, data_range=1.0,
        reduction="none", return_full_image=True,
    )
    pad = (SSIM_WINDOW - 1) // 2
    return full[..., pad:-pad, pad:-pad].flatten(1).mean(1).to(torch.float32)


def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy of ``logits [B, classes]`` against ``labels [B]``; unlabeled entries (−1) are ignored."""
    if logits.dim() != 2 or labels.dim() != 1 or logits.shape[0] != labels.shape[0]:
        raise DataError(f"accuracy: need logits [B, classes] and labels [B], got {tuple(logits.shape)} and {tuple(labels.shape)}")
    labelled = labels >= 0
    if not bool(labelled.any()):
        raise DataError("accuracy: no labelled examples (all labels are -1)")
    correct = logits.argmax(dim=1)[labelled] == labels[labelled]
    return float(correct.double().mean())
