"""Metrics against independent references: scikit-image SSIM, a hand PSNR, torchmetrics' own border mode."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity
from torchmetrics.functional.image import structural_similarity_index_measure

from edgesc.errors import DataError
from edgesc.metrics import accuracy, psnr, ssim


def _pair(gen: torch.Generator, b: int = 4, c: int = 3, h: int = 32, w: int = 32, noise: float = 0.1):
    x = torch.rand(b, c, h, w, generator=gen)
    # smooth-ish content so that SSIM is far from both 0 and 1
    x = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1)
    y = (x + noise * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    return x, y


def _skimage_ssim(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    return np.array([
        structural_similarity(
            x[i].permute(1, 2, 0).double().numpy(), y[i].permute(1, 2, 0).double().numpy(),
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1,
        )
        for i in range(x.shape[0])
    ])


@pytest.mark.parametrize("shape", [(3, 32, 32), (3, 48, 40), (1, 64, 64)])
@pytest.mark.parametrize("noise", [0.02, 0.2])
def test_ssim_matches_skimage(shape: tuple[int, int, int], noise: float, gen: torch.Generator) -> None:
    x, y = _pair(gen, 3, *shape, noise=noise)
    ours = ssim(x, y).numpy()
    ref = _skimage_ssim(x, y)
    assert ours.shape == (3,)
    assert np.abs(ours - ref).max() < 1e-3, (ours, ref)
    assert 0.05 < ref.min() and ref.max() < 0.999  # the comparison is not between trivial values


def test_ssim_full_map_is_torchmetrics_and_differs_at_the_border(gen: torch.Generator) -> None:
    x, y = _pair(gen, noise=0.1)
    full = ssim(x, y, crop_border=False)
    tm = structural_similarity_index_measure(y.double(), x.double(), sigma=1.5, data_range=1.0, reduction="none")
    assert torch.allclose(full, tm.float(), atol=1e-6)
    # the documented difference between the conventions is real at 32×32 (border = 53 % of the map)
    assert float((full - ssim(x, y)).abs().max()) > 1e-4


def test_ssim_identity_and_order(gen: torch.Generator) -> None:
    x, y = _pair(gen, noise=0.05)
    assert torch.allclose(ssim(x, x), torch.ones(4), atol=1e-6)
    assert bool((ssim(x, y) > ssim(x, (x + 0.3 * torch.randn(x.shape, generator=gen)).clamp(0, 1))).all())


def test_psnr_per_image(gen: torch.Generator) -> None:
    x = torch.rand(3, 3, 8, 8, generator=gen)
    y = x.clone()
    y[0] += 0.1  # MSE 0.01 → 20 dB
    y[1] += 0.01  # MSE 1e-4 → 40 dB
    p = psnr(x, y)
    assert p.shape == (3,)
    assert float(p[0]) == pytest.approx(20.0, abs=1e-3)
    assert float(p[1]) == pytest.approx(40.0, abs=1e-3)
    assert math.isinf(float(p[2]))
    # against a per-image numpy computation on random noise
    z = (x + 0.07 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    ref = [10 * np.log10(1 / np.mean((x[i].numpy().astype(np.float64) - z[i].numpy()) ** 2)) for i in range(3)]
    assert np.allclose(psnr(x, z).numpy(), ref, atol=1e-4)


def test_accuracy() -> None:
    logits = torch.tensor([[2.0, 0.1, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [5.0, 0.0, 0.0]])
    assert accuracy(logits, torch.tensor([0, 1, 0, 0])) == pytest.approx(0.75)
    assert accuracy(logits, torch.tensor([0, 1, -1, -1])) == pytest.approx(1.0)  # unlabeled ignored
    with pytest.raises(DataError, match="no labelled"):
        accuracy(logits, torch.full((4,), -1))
    with pytest.raises(DataError, match="accuracy"):
        accuracy(logits, torch.tensor([0, 1]))


def test_metric_shape_errors() -> None:
    with pytest.raises(DataError, match="shapes differ"):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
    with pytest.raises(DataError, match="larger than 10"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(DataError, match=r"\[B, C, H, W\]"):
        ssim(torch.zeros(3, 32, 32), torch.zeros(3, 32, 32))
