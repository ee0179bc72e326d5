"""Shapes of every preset family at tiny size, Table I / Table III reference numbers, analytic FLOPs."""
from __future__ import annotations

import pytest
import torch

from edgesc.config import list_presets, load_preset
from edgesc.models import Controls, build_model, control_names
from edgesc.models.blocks import TransformerBlock
from edgesc.models.flops import analytic_flops, counted_flops, param_counts, table1_layer_flops, table1_layer_macs

TINY = ["recvit-tiny", "vit-tiny", "token-vit-tiny", "unified-tiny", "quickstart"]


@pytest.mark.parametrize("name", TINY)
def test_training_form_shapes_and_losses(name):
    cfg = load_preset(name)
    model = build_model(cfg).train()
    images = torch.rand(3, cfg.channels, cfg.image_size, cfg.image_size)
    out = model(images, Controls(snr_db=torch.tensor([0.0, 10.0, 20.0])))
    if cfg.task == "reconstruction":
        assert out.output.shape == images.shape
        assert (out.output >= 0).all() and (out.output <= 1).all()
    else:
        assert out.output.shape == (3, cfg.num_classes)
    expected = set()
    if cfg.depth.enabled:
        expected |= {"ponder_enc", "ponder_dec"}
    if cfg.width.enabled:
        expected.add("width")
    if cfg.tokens.enabled and cfg.tokens.penalty == "local" and cfg.tokens.train_selection == "soft":  # top-k: exact budget, no penalty
        expected.add("tokens_output")
    assert expected <= set(out.losses)
    assert all(torch.isfinite(v) and v.dim() == 0 for v in out.losses.values())
    (out.output.float().mean() + sum(out.losses.values())).backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "decoder.head" in n)


@pytest.mark.parametrize("name", TINY)
def test_inference_form_shapes(name):
    cfg = load_preset(name)
    model = build_model(cfg).eval()
    enc, dec = model.encoder.inference(), model.decoder.inference()
    assert enc.control_names == control_names(cfg, "encoder")
    assert dec.control_names == control_names(cfg, "decoder")
    images = torch.rand(2, cfg.channels, cfg.image_size, cfg.image_size)
    ctl = {"budget": torch.tensor(0.5), "depth": torch.tensor(2), "width": torch.tensor(0.5),
           "snr_db": torch.tensor(5.0), "ratio": torch.tensor(len(cfg.coder.symbols) - 1)}
    sym, idx, lt, wu = enc(images, **{k: ctl[k] for k in enc.control_names})
    m = cfg.num_patches
    k = (m + 1) // 2 if cfg.tokens.enabled else m
    kk = k + int(cfg.class_token)
    s = cfg.coder.symbols[-1]
    assert sym.shape == (2, kk, s, 2) and sym.dtype == torch.float32
    assert torch.allclose(sym.pow(2).sum(-1).mean(dim=(1, 2)), torch.ones(2), atol=1e-5)  # unit average power
    assert idx.shape == (2, kk) and idx.dtype == torch.int64
    assert lt.shape == (2, cfg.encoder.layers) and lt.dtype == torch.int64
    assert wu.shape == (cfg.encoder.layers, 2) and wu.dtype == torch.int64
    y, dlt, dwu = dec(sym, idx, **{k: ctl[k] for k in dec.control_names})
    if cfg.task == "reconstruction":
        assert y.shape == images.shape
    else:
        assert y.shape == (2, cfg.num_classes)
    assert dlt.shape == (2, cfg.decoder.layers) and dwu.shape == (cfg.decoder.layers, 2)
    # the decoder accepts any K, including every token erased
    y0, _, _ = dec(sym[:, :0], idx[:, :0], **{k: ctl[k] for k in dec.control_names})
    assert torch.isfinite(y0).all()


def test_every_shipped_preset_builds_with_description():
    names = list_presets()
    for required in ["recvit", "vit", "recvit-tiny", "vit-tiny", "token-vit-tiny", "token-vit", "token-deit-tiny",
                     "unified", "unified-tiny", "quickstart"]:
        assert required in names
    for name in names:
        cfg = load_preset(name)
        assert cfg.description, name
        if cfg.embed_dim <= 96:  # build the small ones; the big ones are checked below / by params
            build_model(cfg)


def test_table3_parameter_counts():
    """000 Table III: Standard ViT 7.23M, RecViT 3.70M parameters."""
    vit = param_counts(build_model(load_preset("vit")))
    rec = param_counts(build_model(load_preset("recvit")))
    print(f"\nvit    {vit}\nrecvit {rec}")
    assert vit["total"] == pytest.approx(7.23e6, rel=0.01)
    assert rec["total"] == pytest.approx(3.70e6, rel=0.02)
    assert vit["total"] == vit["encoder"] + vit["decoder"]
    assert 1 - rec["total"] / vit["total"] == pytest.approx(0.487, abs=0.01)  # "reduces parameters by 48.7 %"


@pytest.mark.parametrize("m,e,h,d", [(16, 192, 8, 768), (17, 32, 2, 64), (64, 64, 4, 128)])
def test_table1_per_layer_equals_counter(m, e, h, d):
    blk = TransformerBlock(e, h, d, 4, "relu")
    _, flops = counted_flops(blk, torch.rand(1, m, e))
    assert flops == table1_layer_flops(m, e, d) == 2 * (4 * m * e * e + 2 * m * m * e + 2 * m * e * d)


def test_table1_reference_numbers():
    # M = 16 tokens (32x32, patch 8), E = 192, D = 768: the recvit layer of 000 Table II
    assert table1_layer_macs(16, 192, 768) == 7_176_192
    cfg = load_preset("recvit")
    a = analytic_flops(cfg)
    per_layer = table1_layer_flops(16, 192, 768) + 2 * 16 * 192  # + stop score of Eq. 21
    assert a["encoder"] == 2 * 16 * 192 * 192 + 7 * per_layer + table1_layer_flops(16, 192, 768) + 2 * 16 * 192 * 64


def test_analytic_flops_equal_counter_at_full_settings():
    cfg = load_preset("unified-tiny")
    model = build_model(cfg).eval()
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        model.encoder.side.depth.halt.bias.fill_(-30.0)  # no token halts before the last layer
        model.decoder.side.depth.halt.bias.fill_(-30.0)
    enc, dec = model.encoder.inference(), model.decoder.inference()
    (sym, idx, lt, _), f_enc = counted_flops(enc, images, torch.tensor(1.0), torch.tensor(99), torch.tensor(1.0),
                                             torch.tensor(-30.0), torch.tensor(0))
    _, f_dec = counted_flops(dec, sym, idx, torch.tensor(99), torch.tensor(1.0), torch.tensor(-30.0), torch.tensor(0))
    a = analytic_flops(cfg)
    assert (f_enc, f_dec) == (a["encoder"], a["decoder"])
