"""edgesc_runtime.channel: the contract's channel definitions, measured; and cross-checked against the torch
implementation edgesc.channels (statistics, since the two use different random generators)."""
from __future__ import annotations

import numpy as np
import pytest

from edgesc_runtime import ControlError, InputError
from edgesc_runtime import channel as ch


def _symbols(B: int = 64, K: int = 16, S: int = 32, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((B, K, S, 2)).astype(np.float32) * 3.0 + 0.5
    return ch.normalize_power(x)


def test_normalize_power_gives_unit_power_per_image() -> None:
    x = np.random.default_rng(1).standard_normal((5, 7, 3, 2)) * np.arange(1, 6)[:, None, None, None]
    np.testing.assert_allclose(ch.symbol_power(ch.normalize_power(x)), 1.0, rtol=1e-12)


@pytest.mark.parametrize("snr", [-5.0, 0.0, 10.0, 25.0])
def test_awgn_delivers_the_requested_snr(snr: float) -> None:
    x = _symbols()
    y = ch.awgn(x, snr, rng=np.random.default_rng(2))
    assert y.dtype == np.float32 and y.shape == x.shape
    assert abs(ch.measured_snr_db(x, y) - snr) < 0.1  # 4 sigma for 32768 symbols
    n = (y - x).astype(np.float64)
    sigma2 = 10 ** (-snr / 10)
    np.testing.assert_allclose([n[..., 0].var(), n[..., 1].var()], sigma2 / 2, rtol=0.02)  # σ²/2 per axis


def test_awgn_per_image_snr_and_seeding() -> None:
    x = _symbols(B=2, K=64, S=64)
    snr = np.array([0.0, 20.0])
    y = ch.awgn(x, snr, rng=7)
    for b in range(2):
        assert abs(ch.measured_snr_db(x[b:b + 1], y[b:b + 1]) - snr[b]) < 0.25  # ~3.5 sigma, 4096 symbols
    np.testing.assert_array_equal(y, ch.awgn(x, snr, rng=7))
    assert not np.array_equal(y, ch.awgn(x, snr, rng=8))
    with pytest.raises(ControlError, match="B=2"):
        ch.awgn(x, np.zeros(3))


def test_rayleigh_block_perfect_and_no_csi() -> None:
    x = _symbols(B=4000, K=4, S=8)
    snr = 10.0
    sigma2 = 10 ** (-snr / 10)
    y, g = ch.rayleigh_block(x, snr, csi="none", rng=3, return_gain=True)
    g2 = (g ** 2).sum(1)
    assert abs(g2.mean() - 1.0) < 0.05                               # E|g|² = 1
    assert abs(np.mean(g2 < 1.0) - (1 - np.exp(-1.0))) < 0.03        # |g|² ~ Exp(1)
    gx = np.stack([g[:, None, None, 0] * x[..., 0] - g[:, None, None, 1] * x[..., 1],
                   g[:, None, None, 0] * x[..., 1] + g[:, None, None, 1] * x[..., 0]], -1)
    assert abs(((y - gx) ** 2).sum(-1).mean() / sigma2 - 1) < 0.03  # y = g·x + n
    # same seed: same g and n; zero-forcing estimate y/g, whose noise power per image is σ²/|g|²
    y_zf, g_zf = ch.rayleigh_block(x, snr, csi="perfect", rng=3, return_gain=True)
    np.testing.assert_array_equal(g, g_zf)
    per_img = ((y_zf - x).astype(np.float64) ** 2).sum(-1).mean(axis=(1, 2)) * g2
    assert abs(per_img.mean() / sigma2 - 1) < 0.03
    with pytest.raises(ControlError, match="csi"):
        ch.rayleigh_block(x, snr, csi="partial")


def test_erasure_drops_tokens_and_their_indices() -> None:
    x = _symbols(B=200, K=16, S=4)
    idx = np.tile(np.arange(16), (200, 1))
    syms, kept, keep = ch.erasure(x, idx, 0.25, rng=5, return_keep=True)
    assert len(syms) == len(kept) == 200
    assert abs(1 - keep.mean() - 0.25) < 0.02
    for b in (0, 17, 199):
        np.testing.assert_array_equal(kept[b], np.arange(16)[keep[b]])
        np.testing.assert_array_equal(syms[b], x[b][keep[b]])
        assert syms[b].shape == (int(keep[b].sum()), 4, 2)
    s1, i1 = ch.erasure(x[0], idx[0], 0.0, rng=1)
    assert s1.shape == x[0].shape and i1.tolist() == list(range(16))
    s2, i2 = ch.erasure(x[0], idx[0], 1.0, rng=1)
    assert s2.shape == (0, 4, 2) and i2.shape == (0,)
    with pytest.raises(ControlError, match="probability"):
        ch.erasure(x, idx, 1.5)
    with pytest.raises(InputError, match="token_index"):
        ch.erasure(x, idx[:, :3], 0.1)


def test_bad_symbols_raise_input_error() -> None:
    with pytest.raises(InputError, match="I, Q"):
        ch.awgn(np.zeros((2, 3)), 0.0)
    with pytest.raises(InputError, match="floating"):
        ch.awgn(np.zeros((2, 3, 2), np.int32), 0.0)


# --- cross-check against the torch implementation (edgesc.channels) ------------------------------------

def test_statistics_match_torch_edgesc_channels() -> None:
    torch = pytest.importorskip("torch", reason="torch is needed for the cross-check with edgesc.channels")
    tch = pytest.importorskip("edgesc.channels", reason="edgesc.channels (torch channel) not written yet")
    torch.set_num_threads(1)
    x = _symbols(B=512, K=8, S=16, seed=11)
    xt = torch.from_numpy(x)
    # deterministic part: identical power normalisation
    raw = np.random.default_rng(3).standard_normal((4, 5, 6, 2)).astype(np.float32) * 2
    np.testing.assert_allclose(tch.normalize_power(torch.from_numpy(raw)).numpy(), ch.normalize_power(raw),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(tch.noise_variance(7.0)), ch.noise_variance(7.0), rtol=1e-6)
    gen = torch.Generator().manual_seed(0)
    for snr in (0.0, 12.0):
        y_t = tch.awgn(xt, snr, generator=gen).numpy()
        y_n = ch.awgn(x, snr, rng=1)
        assert abs(ch.measured_snr_db(x, y_t) - ch.measured_snr_db(x, y_n)) < 0.1
        for axis in (0, 1):
            assert abs((y_t - x)[..., axis].var() / (y_n - x)[..., axis].var() - 1) < 0.05
        # Rayleigh, perfect CSI: the received noise power after zero forcing, sigma²·E[1/|g|²] (heavy-tailed),
        # compared through its median per image; no CSI: total power E|g|²·1 + σ²
        yz_t = tch.rayleigh_block(xt, snr, csi="perfect", generator=gen).numpy()
        yz_n = ch.rayleigh_block(x, snr, csi="perfect", rng=2)
        med_t = np.median(((yz_t - x) ** 2).sum(-1).mean(axis=(1, 2)))
        med_n = np.median(((yz_n - x) ** 2).sum(-1).mean(axis=(1, 2)))
        assert abs(np.log(med_t / med_n)) < 0.2
        yn_t = tch.rayleigh_block(xt, snr, csi="none", generator=gen).numpy()
        yn_n = ch.rayleigh_block(x, snr, csi="none", rng=3)
        sigma2 = 10 ** (-snr / 10)
        assert abs(ch.symbol_power(yn_t).mean() / (1 + sigma2) - 1) < 0.1
        assert abs(ch.symbol_power(yn_n).mean() / (1 + sigma2) - 1) < 0.1
    # erasure: the same loss rate; torch zeroes lost tokens, the runtime drops them
    zt, keep_t = tch.erasure(xt, 0.3, generator=gen)
    syms, kept, keep_n = ch.erasure(x, np.tile(np.arange(8), (512, 1)), 0.3, rng=4, return_keep=True)
    assert abs(keep_t.float().mean().item() - keep_n.mean()) < 0.03
    assert sum(s.shape[0] for s in syms) == int(keep_n.sum())
    assert (zt.numpy()[~keep_t.numpy()] == 0).all()
