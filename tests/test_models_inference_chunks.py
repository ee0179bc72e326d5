"""Width chunks of the inference form (edgesc.models.inference): units are grouped into at most
``width_chunks`` chunks per component, a chunk runs when any of its units is kept and the non-kept units inside it
are masked — same maths as the training form, ``width_units`` = executed (chunk-rounded) units, and the
executed-FLOP formula still equals ``torch.utils.flop_counter`` exactly."""
from __future__ import annotations

import itertools

import pytest
import torch

from edgesc.config import load_preset
from edgesc.errors import ControlError
from edgesc.models import Controls, build_model
from edgesc.models.flops import counted_flops, executed_flops
from edgesc.models.inference import chunk_size
from edgesc.models.testing import randomize_controllers


def _model(name: str = "unified-tiny", seed: int = 0):
    # 4 heads of 8 and 6 MLP groups: chunk sizes 1, 2 or 4 (heads) and 1, 2, 3 or 6 (groups)
    cfg = load_preset(name).replace(heads=4, mlp_groups=6, mlp_ratio=3)
    torch.manual_seed(seed)
    return cfg, randomize_controllers(build_model(cfg), seed=seed, halt_bias=2.0, halt_scale=8.0).eval()


def _ctl(names, budget, depth, width, snr, ratio):
    full = {"budget": torch.tensor(budget), "depth": torch.tensor(depth), "width": torch.tensor(width),
            "snr_db": torch.tensor(snr), "ratio": torch.tensor(ratio)}
    return {n: full[n] for n in names}


def test_chunk_size_is_smallest_divisor_within_the_chunk_count():
    assert [chunk_size(8, c) for c in (1, 2, 3, 4, 8, 16)] == [8, 4, 4, 2, 1, 1]
    assert [chunk_size(6, c) for c in (1, 2, 3, 4, 5, 6)] == [6, 3, 2, 2, 2, 1]
    assert chunk_size(3, 4) == 1 and chunk_size(3, 2) == 3 and chunk_size(7, 3) == 7


@pytest.mark.parametrize("chunks", [1, 2, 3, 4])
def test_chunked_inference_equals_training_form(chunks):
    cfg, model = _model()
    enc, dec = model.encoder.inference(width_chunks=chunks), model.decoder.inference(width_chunks=chunks)
    sh, sg = chunk_size(cfg.heads, chunks), chunk_size(cfg.mlp_groups, chunks)
    assert enc.width_chunks == dec.width_chunks == chunks and enc.chunk_units == dec.chunk_units == (sh, sg)
    images = torch.rand(3, cfg.channels, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(1))
    rounded_seen = False
    for budget, depth, width, snr in itertools.product([1.0, 0.4], [99, 2], [1.0, 0.55, 0.2], [0.0, 20.0]):
        ctl = Controls(budget=budget, depth=None if depth == 99 else depth, width=width, snr_db=snr, ratio=0)
        with torch.no_grad():
            ref = model(images, ctl)
            sym, idx, lt, wu = enc(images, **_ctl(enc.control_names, budget, depth, width, snr, 0))
            out, dlt, dwu = dec(sym, idx, **_ctl(dec.control_names, budget, depth, width, snr, 0))
        assert (out - ref.output).abs().max() < 1e-5
        assert torch.equal(lt, ref.stats["enc_layer_tokens"]) and torch.equal(dlt, ref.stats["dec_layer_tokens"])
        for got, kept in ((wu, ref.stats["enc_width_units"][0]), (dwu, ref.stats["dec_width_units"][0])):
            s = torch.tensor([sh, sg])
            assert torch.equal(got, (kept + s - 1) // s * s)  # executed = kept rounded up to whole chunks
            assert bool((got >= kept).all()) and bool((got <= torch.tensor([cfg.heads, cfg.mlp_groups])).all())
            rounded_seen |= bool((got > kept).any())
    assert rounded_seen == (sh > 1 or sg > 1)  # masks inside a partial chunk were exercised


@pytest.mark.parametrize("chunks", [2, 3])
def test_chunked_executed_flops_equal_flop_counter(chunks):
    cfg, model = _model(seed=3)
    enc, dec = model.encoder.inference(width_chunks=chunks), model.decoder.inference(width_chunks=chunks)
    for i, (budget, depth, width) in enumerate([(1.0, 99, 1.0), (0.4, 2, 0.55), (0.7, 3, 0.2)]):
        images = torch.rand(1 + i, cfg.channels, cfg.image_size, cfg.image_size)
        (sym, idx, lt, wu), f_enc = counted_flops(enc, images, **_ctl(enc.control_names, budget, depth, width, 5.0, 1))
        (out, dlt, dwu), f_dec = counted_flops(dec, sym, idx, **_ctl(dec.control_names, budget, depth, width, 5.0, 1))
        k, s = idx.shape[1], sym.shape[2]
        assert sum(executed_flops(cfg, "encoder", lt, wu, k, s)) == f_enc
        assert sum(executed_flops(cfg, "decoder", dlt, dwu, k, s)) == f_dec


def test_bad_width_chunks_is_a_control_error():
    _, model = _model()
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ControlError, match="width_chunks"):
            model.encoder.inference(width_chunks=bad)
