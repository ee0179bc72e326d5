"""Channel definitions measured on >= 1e6 complex symbols (docs/contract.md "Channel definitions").

What is measured (see docs/methods.md, Channels):
- AWGN: SNR_meas = 10·log10(mean|x|² / mean|y − x|²) over all symbols.
- Rayleigh, perfect CSI: the average received SNR 10·log10(mean|g·x|² / mean|y_rx − g·x|²) and the
  gain-normalised post-equalisation SNR −10·log10(mean_i |g_i|²·mean_k|ŷ_ik − x_ik|²), both = requested SNR;
  plus the fading law itself (E|g|² = 1, P(|g|² < t) = 1 − e^(−t), circular, E[10·log10|g|²] = −2.51 dB).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edgesc.channels import (
    CHANNELS,
    awgn,
    erasure,
    make_channel,
    noise_variance,
    normalize_power,
    rayleigh_block,
    symbol_power,
)
from edgesc.errors import ConfigError

SNRS = [-10.0, 0.0, 7.0, 20.0, 35.0]


def _db(v: torch.Tensor) -> float:
    return 10.0 * math.log10(float(v))


def _unit_symbols(b: int, k: int, s: int, gen: torch.Generator) -> torch.Tensor:
    return normalize_power(torch.randn(b, k, s, 2, generator=gen, dtype=torch.float64))


def test_noise_variance_definition() -> None:
    assert float(noise_variance(0.0)) == pytest.approx(1.0)
    assert float(noise_variance(10.0)) == pytest.approx(0.1)
    assert torch.allclose(noise_variance(torch.tensor([-10.0, 20.0])), torch.tensor([10.0, 0.01]))


@pytest.mark.parametrize("scale", [1e-3, 1.0, 250.0])
def test_normalize_power_unit_per_image(scale: float, gen: torch.Generator) -> None:
    # images of very different power, uneven I/Q: each comes out at unit average complex-symbol power
    x = torch.randn(8, 13, 7, 2, generator=gen) * scale
    x = x * torch.linspace(0.1, 10.0, 8).reshape(8, 1, 1, 1)
    x[..., 1] *= 3.0
    p = symbol_power(normalize_power(x))
    assert torch.allclose(p, torch.ones(8), atol=1e-5), p
    # the definition: mean over the K·S complex symbols of I² + Q²
    y = normalize_power(x)
    assert torch.allclose((y[..., 0] ** 2 + y[..., 1] ** 2).mean(dim=(1, 2)), torch.ones(8), atol=1e-5)


def test_normalize_power_edge_cases() -> None:
    zero = torch.zeros(2, 4, 3, 2)
    assert torch.equal(normalize_power(zero), zero)  # no division by zero
    empty = torch.zeros(2, 0, 3, 2)
    assert normalize_power(empty).shape == (2, 0, 3, 2)
    with pytest.raises(ConfigError, match="I, Q"):
        normalize_power(torch.zeros(2, 4, 3))


@pytest.mark.parametrize("snr_db", SNRS)
def test_awgn_measured_snr(snr_db: float, gen: torch.Generator) -> None:
    x = _unit_symbols(100, 100, 100, gen)  # 1e6 complex symbols
    y = awgn(x, torch.full((100,), snr_db, dtype=torch.float64), generator=gen)
    n = y - x
    measured = _db(symbol_power(x).mean() / symbol_power(n).mean())
    assert abs(measured - snr_db) < 0.1, (snr_db, measured)
    # I and Q each carry half of σ², uncorrelated with each other
    sigma2 = 10 ** (-snr_db / 10)
    assert float(n[..., 0].var()) == pytest.approx(sigma2 / 2, rel=0.01)
    assert float(n[..., 1].var()) == pytest.approx(sigma2 / 2, rel=0.01)
    assert abs(float((n[..., 0] * n[..., 1]).mean())) < 0.01 * sigma2


def test_awgn_per_image_snr(gen: torch.Generator) -> None:
    snr = torch.tensor([-5.0, 0.0, 10.0, 25.0], dtype=torch.float64)
    x = _unit_symbols(4, 500, 500, gen)  # 250k symbols per image
    n = awgn(x, snr, generator=gen) - x
    measured = 10 * torch.log10(symbol_power(x) / symbol_power(n))
    assert torch.allclose(measured, snr, atol=0.1), measured


@pytest.mark.parametrize("snr_db", SNRS)
def test_rayleigh_perfect_csi_measured_snr(snr_db: float, gen: torch.Generator) -> None:
    b = 100_000  # images: one fade each, enough to average E|g|² to ~0.3 %
    x = _unit_symbols(b, 4, 4, gen)  # 1.6e6 complex symbols
    y_eq, g = rayleigh_block(x, torch.full((b,), snr_db, dtype=torch.float64), csi="perfect",
                             generator=gen, return_gain=True)
    gb = g.reshape(b, 1, 1, 2)
    gx = torch.stack((gb[..., 0] * x[..., 0] - gb[..., 1] * x[..., 1],
                      gb[..., 0] * x[..., 1] + gb[..., 1] * x[..., 0]), dim=-1)
    g2 = g.pow(2).sum(-1)
    # reconstruct the received signal from the equalised one: y_rx = g·ŷ; noise = y_rx − g·x = g·(ŷ − x)
    err = y_eq - x
    noise_rx_power = g2 * symbol_power(err)  # |g|²·|ŷ − x|² = |n|² per image
    avg_received = _db(symbol_power(gx).mean() / noise_rx_power.mean())
    assert abs(avg_received - snr_db) < 0.1, (snr_db, avg_received)
    # gain-normalised post-equalisation SNR: the noise left after zero-forcing is n/g
    post_eq = -_db((g2 * symbol_power(err)).mean())
    assert abs(post_eq - snr_db) < 0.1, (snr_db, post_eq)
    # conditional on g the equalised noise is n/g with power σ²/|g|²: the same on weak and strong fades
    for part in (g2 < g2.quantile(0.25), g2 > g2.quantile(0.75)):
        cond = -_db((g2[part] * symbol_power(err)[part]).mean())
        assert abs(cond - snr_db) < 0.1, (snr_db, cond)


def test_rayleigh_fading_law(gen: torch.Generator) -> None:
    b = 200_000
    x = _unit_symbols(b, 1, 1, gen)
    _, g = rayleigh_block(x, 100.0, generator=gen, return_gain=True)
    g2 = g.pow(2).sum(-1)
    assert float(g2.mean()) == pytest.approx(1.0, abs=0.01)  # E|g|² = 1
    for t in (0.1, 1.0, 3.0):  # |g|² ~ Exp(1)
        assert float((g2 < t).double().mean()) == pytest.approx(1 - math.exp(-t), abs=0.005)
    assert abs(float(g[:, 0].mean())) < 0.01 and abs(float(g[:, 1].mean())) < 0.01
    assert abs(float((g[:, 0] * g[:, 1]).mean())) < 0.01  # circular: E[g²] = 0
    # average of the per-image SNR in dB lies γ·10/ln10 = 2.507 dB below the requested SNR
    assert float((10 * torch.log10(g2)).mean()) == pytest.approx(-2.507, abs=0.06)


def test_rayleigh_no_csi_returns_faded_symbols(gen: torch.Generator) -> None:
    x = _unit_symbols(1000, 8, 16, gen)
    y, g = rayleigh_block(x, 60.0, csi="none", generator=gen, return_gain=True)
    # y = g·x + n with tiny noise: dividing by x recovers the one gain of each image
    xc = torch.view_as_complex(x.contiguous())
    yc = torch.view_as_complex(y.contiguous())
    ratio = yc / xc
    gc = torch.view_as_complex(g.contiguous()).reshape(1000, 1, 1)
    assert float((ratio - gc).abs().median()) < 1e-2
    assert float(symbol_power(y).mean()) == pytest.approx(1.0, abs=0.05)  # E|g|²·1 + σ²
    with pytest.raises(ConfigError, match="csi"):
        rayleigh_block(x, 10.0, csi="partial")


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_erasure_rate_and_zeroing(p: float, gen: torch.Generator) -> None:
    x = _unit_symbols(1000, 1000, 2, gen)  # 1e6 tokens
    y, keep = erasure(x, p, generator=gen)
    assert keep.shape == (1000, 1000) and keep.dtype == torch.bool
    rate = 1.0 - float(keep.double().mean())
    assert abs(rate - p) < 0.003, (p, rate)  # binomial std is 5e-4 at p = 0.5
    assert torch.all(y[~keep] == 0)  # every symbol of a lost token is zero
    assert torch.equal(y[keep], x[keep])  # received tokens untouched


def test_erasure_zero_and_invalid() -> None:
    x = torch.randn(2, 5, 3, 2)
    y, keep = erasure(x, 0.0)
    assert torch.equal(y, x) and bool(keep.all())
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ConfigError, match="erasure"):
            erasure(x, bad)


def test_make_channel_names_and_errors() -> None:
    assert set(CHANNELS) == {"awgn", "rayleigh", "rayleigh-nocsi", "none"}
    with pytest.raises(ConfigError, match="unknown channel 'bsc'.*awgn"):
        make_channel("bsc")
    with pytest.raises(ConfigError, match="erasure"):
        make_channel("awgn", erasure=1.0)
    x = torch.randn(3, 4, 5, 2)
    assert torch.equal(make_channel("none")(x, torch.zeros(3)), x)  # noiseless identity
    with pytest.raises(ConfigError, match="snr_db"):
        make_channel("awgn")(x, torch.zeros(2))


@pytest.mark.parametrize("name", ["awgn", "rayleigh", "rayleigh-nocsi"])
def test_make_channel_measures_and_reproduces(name: str) -> None:
    x = normalize_power(torch.randn(5_000, 10, 8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    snr = torch.full((5_000,), 5.0, dtype=torch.float64)
    y1 = make_channel(name, generator=torch.Generator().manual_seed(7))(x, snr)
    y2 = make_channel(name, generator=torch.Generator().manual_seed(7))(x, snr)
    assert torch.equal(y1, y2)  # seeded generator → same draw
    if name == "awgn":
        assert abs(_db(1.0 / symbol_power(y1 - x).mean()) - 5.0) < 0.1
    if name == "rayleigh-nocsi":  # received power E|g|² + σ² = 1 + 10^-0.5
        assert float(symbol_power(y1).mean()) == pytest.approx(1 + 10 ** -0.5, rel=0.03)


def test_make_channel_erasure_marks_lost_tokens() -> None:
    ch = make_channel("awgn", erasure=0.25, generator=torch.Generator().manual_seed(3))
    x = normalize_power(torch.randn(400, 64, 4, 2))
    y, keep = ch.transmit(x, torch.full((400,), 10.0))
    assert abs((1 - keep.float().mean().item()) - 0.25) < 0.01
    assert torch.all(y[~keep] == 0)  # noise is added before erasure: lost tokens are exactly zero
    assert not torch.equal(y[keep], x[keep])  # received tokens carry noise
    y_call = ch(x, torch.full((400,), 10.0))
    assert ch.last_keep is not None and ch.last_keep.shape == (400, 64)
    assert torch.all(y_call[~ch.last_keep] == 0)


def test_channel_is_differentiable(gen: torch.Generator) -> None:
    for name in ("awgn", "rayleigh", "rayleigh-nocsi"):
        z = torch.randn(4, 6, 8, 2, generator=gen, requires_grad=True)
        y = make_channel(name, generator=gen)(normalize_power(z), torch.tensor([0.0, 5.0, 10.0, 20.0]))
        y.pow(2).sum().backward()
        assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_torch_and_runtime_numpy_share_one_definition(gen: torch.Generator) -> None:
    """docs/contract.md: one channel definition, two implementations (this package and edgesc_runtime)."""
    rt = pytest.importorskip("edgesc_runtime.channel")
    x = torch.randn(6, 9, 5, 2, generator=gen, dtype=torch.float64) * 3.0
    assert np.allclose(rt.normalize_power(x.numpy()), normalize_power(x).numpy(), atol=1e-12)
    assert np.allclose(rt.symbol_power(x.numpy()), symbol_power(x).numpy(), atol=1e-12)
    snr = np.array([-3.0, 0.0, 12.5])
    assert np.allclose(rt.noise_variance(snr), noise_variance(torch.from_numpy(snr)).numpy())
    # same noise law: the numpy channel's measured SNR on 1e6 symbols matches the torch one within 0.05 dB
    xu = _unit_symbols(100, 100, 100, gen)
    n_torch = awgn(xu, 4.0, generator=gen) - xu
    n_np = rt.awgn(xu.numpy(), 4.0, rng=0) - xu.numpy()
    p_torch = float(symbol_power(n_torch).mean())
    p_np = float(rt.symbol_power(n_np).mean())
    assert abs(10 * math.log10(p_torch / p_np)) < 0.05
