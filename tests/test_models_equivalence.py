"""Training form == inference form (the deployed maths) and the executed-FLOP formula == flop_counter.

Controllers are randomised (edgesc.models.testing) so that tokens halt at different layers, units are
reordered by importance and tokens are ranked; every tiny preset runs over a grid of controls at batch 1 and 3.
"""
from __future__ import annotations

import itertools

import pytest
import torch

from edgesc.config import load_preset
from edgesc.models import Controls, build_model
from edgesc.models.flops import counted_flops, executed_flops
from edgesc.models.testing import randomize_controllers

TINY = ["recvit-tiny", "vit-tiny", "token-vit-tiny", "unified-tiny"]


def _model(name: str, seed: int = 0):
    cfg = load_preset(name)
    torch.manual_seed(seed)
    model = randomize_controllers(build_model(cfg), seed=seed, halt_bias=2.0, halt_scale=8.0).eval()
    return cfg, model


def _grid(cfg):
    budgets = [1.0, 0.4] if cfg.tokens.enabled else [1.0]
    depths = [None, 1, 3] if cfg.depth.enabled else [None]
    widths = [1.0, 0.3] if cfg.width.enabled else [1.0]
    snrs = [0.0, 20.0]
    ratios = list(range(len(cfg.coder.symbols)))
    return list(itertools.product(budgets, depths, widths, snrs, ratios))


def _inputs(cfg, budget, depth, width, snr, ratio, side):
    full = {"budget": torch.tensor(budget), "depth": torch.tensor(depth or 99), "width": torch.tensor(width),
            "snr_db": torch.tensor(snr), "ratio": torch.tensor(ratio)}
    names = ["budget", "depth", "width", "snr_db", "ratio"] if side == "encoder" else ["depth", "width", "snr_db", "ratio"]
    return [full[n] for n in names]


def _partial_halt(lt: torch.Tensor, select_at: int) -> bool:
    """Some image has a layer where fewer (but not zero) tokens ran than at the previous layer, not caused by
    token selection: per-token halting was exercised."""
    for layer in range(1, lt.shape[1]):
        if layer == select_at:
            continue
        if bool(((lt[:, layer] > 0) & (lt[:, layer] < lt[:, layer - 1])).any()):
            return True
    return False


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("batch", [1, 3])
def test_training_form_equals_inference_form(name, batch):
    cfg, model = _model(name)
    enc, dec = model.encoder.inference(), model.decoder.inference()
    images = torch.rand(batch, cfg.channels, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(1))
    worst = 0.0
    halted_early = False
    for budget, depth, width, snr, ratio in _grid(cfg):
        ctl = Controls(budget=budget, depth=depth, width=width, snr_db=snr, ratio=ratio)
        with torch.no_grad():
            ref = model(images, ctl)
            sym, idx, lt, wu = enc(images, *_inputs(cfg, budget, depth, width, snr, ratio, "encoder"))
            out, dlt, dwu = dec(sym, idx, *_inputs(cfg, budget, depth, width, snr, ratio, "decoder"))
        worst = max(worst, float((out - ref.output).abs().max()))
        # statistics: identical integers
        assert torch.equal(lt, ref.stats["enc_layer_tokens"])
        assert torch.equal(dlt, ref.stats["dec_layer_tokens"])
        assert torch.equal(wu, ref.stats["enc_width_units"][0])
        assert torch.equal(dwu, ref.stats["dec_width_units"][0])
        # transmitted tokens and symbols: the inference form sends exactly the kept slots of the training form
        m = cfg.num_patches
        slots = ref.stats["keep"]
        assert torch.equal(slots.sum(1).long(), torch.full((batch,), idx.shape[1]))
        assert torch.equal(torch.gather(slots, 1, idx), torch.ones_like(idx, dtype=slots.dtype))
        with torch.no_grad():
            train_sym = model.encoder(images, model.resolve(ctl, batch, images)).symbols
        picked = torch.gather(train_sym, 1, idx[..., None, None].expand(-1, -1, *train_sym.shape[2:]))
        assert (picked - sym).abs().max() < 1e-5
        if cfg.class_token:
            assert (idx[:, 0] == m).all()
        halted_early |= _partial_halt(lt, cfg.tokens.select_at if cfg.tokens.enabled else -1) or _partial_halt(dlt, -1)
    assert worst < 1e-5, worst
    if cfg.depth.enabled:
        assert halted_early, "the grid never exercised per-token halting"


@pytest.mark.parametrize("name", TINY)
def test_executed_flops_formula_equals_flop_counter(name):
    cfg, model = _model(name, seed=3)
    enc, dec = model.encoder.inference(), model.decoder.inference()
    grid = _grid(cfg)
    for i, (budget, depth, width, snr, ratio) in enumerate(grid[:: max(1, len(grid) // 6)]):
        batch = 1 + i % 3
        images = torch.rand(batch, cfg.channels, cfg.image_size, cfg.image_size)
        (sym, idx, lt, wu), f_enc = counted_flops(enc, images, *_inputs(cfg, budget, depth, width, snr, ratio, "encoder"))
        (out, dlt, dwu), f_dec = counted_flops(dec, sym, idx, *_inputs(cfg, budget, depth, width, snr, ratio, "decoder"))
        k, s = idx.shape[1], sym.shape[2]
        assert sum(executed_flops(cfg, "encoder", lt, wu, k, s)) == f_enc
        assert sum(executed_flops(cfg, "decoder", dlt, dwu, k, s)) == f_dec


def test_decoder_handles_erased_tokens_like_training_form():
    """Erasure: the runtime drops lost tokens; the training form masks them. Same output."""
    cfg, model = _model("token-vit-tiny", seed=5)
    enc, dec = model.encoder.inference(), model.decoder.inference()
    images = torch.rand(2, 3, 32, 32)
    lost = torch.zeros(2, cfg.num_patches + 1, dtype=torch.bool)
    lost[:, [1, 4, 7]] = True

    def channel(symbols, snr):
        return symbols, ~lost

    with torch.no_grad():
        ref = model(images, Controls(budget=1.0, snr_db=10.0), channel)
        sym, idx, _, _ = enc(images, budget=torch.tensor(1.0), ratio=torch.tensor(0))
        keep_cols = [j for j in range(idx.shape[1]) if not lost[0, int(idx[0, j])]]
        out, _, _ = dec(sym[:, keep_cols], idx[:, keep_cols], ratio=torch.tensor(0))
    assert (out - ref.output).abs().max() < 1e-5
