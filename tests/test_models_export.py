"""The inference modules export with the dynamo exporter (opset 20, dynamic batch, controls as 0-d inputs) and
the ONNX graphs run in onnxruntime with the same results as torch — the base the export layer builds on.
Two presets cover every mechanism: unified-tiny (RTU, per-token depth, width, budget, two ratio levels) and
token-vit-tiny (classification, class token, MLP coder, plain layers). Exporting takes tens of seconds."""
from __future__ import annotations

import contextlib
import io
import logging
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgesc.config import load_preset
from edgesc.models import build_model
from edgesc.models.testing import randomize_controllers

pytestmark = pytest.mark.slow

SETTINGS = [  # budget, depth, width, snr_db, ratio
    (1.0, 99, 1.0, 0.0, 0),
    (0.3, 2, 0.4, 20.0, 1),
    (0.7, 3, 0.8, 10.0, 0),
    (0.05, 1, 0.2, -5.0, 1),
]


def _export(module, args, kwargs, dynamic_shapes, path):
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(module, args, kwargs=kwargs, dynamo=True, opset_version=20,
                                 dynamic_shapes=dynamic_shapes, external_data=False, optimize=True)
    prog.save(str(path))
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"If", "Loop", "Scan"}, ops  # skipping is row gating, not control flow
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), len(model.graph.node)


def _controls(names, setting):
    full = dict(zip(["budget", "depth", "width", "snr_db", "ratio"], setting))
    dtypes = {"depth": torch.int64, "ratio": torch.int64}
    return {n: torch.tensor(full[n], dtype=dtypes.get(n, torch.float32)) for n in names}


@pytest.fixture(scope="module", params=["unified-tiny", "token-vit-tiny"])
def exported(request, tmp_path_factory):
    cfg = load_preset(request.param)
    torch.manual_seed(0)
    model = randomize_controllers(build_model(cfg), seed=0, halt_bias=2.0, halt_scale=8.0).eval()
    enc, dec = model.encoder.inference(), model.decoder.inference()
    tmp = tmp_path_factory.mktemp(request.param)
    b = torch.export.Dim("B", min=1, max=1024)
    image = torch.rand(2, cfg.channels, cfg.image_size, cfg.image_size)
    ctl_e = _controls(enc.control_names, SETTINGS[1])
    se, ne = _export(enc, (image,), ctl_e, {"image": {0: b}, **{k: None for k in ctl_e}}, tmp / "encoder.onnx")
    with torch.no_grad():
        sym, idx, _, _ = enc(image, **ctl_e)
    ctl_d = _controls(dec.control_names, SETTINGS[1])
    k = torch.export.Dim("K", min=0, max=cfg.num_patches + int(cfg.class_token))
    sym_dims = {0: b, 1: k}
    if len(cfg.coder.symbols) > 1:
        sym_dims[2] = torch.export.Dim("S", min=1, max=max(cfg.coder.symbols))
    sd, nd = _export(dec, (sym, idx), ctl_d, {"symbols": sym_dims, "token_index": {0: b, 1: k},
                                              **{k_: None for k_ in ctl_d}}, tmp / "decoder.onnx")
    print(f"\n{cfg.name}: encoder graph {ne} nodes, decoder graph {nd} nodes")
    return cfg, enc, dec, se, sd


@pytest.mark.parametrize("batch", [1, 4])
def test_onnxruntime_matches_torch(exported, batch):
    cfg, enc, dec, se, sd = exported
    gen = torch.Generator().manual_seed(batch)
    assert [i.name for i in se.get_inputs()] == ["image", *enc.control_names]
    assert [i.name for i in sd.get_inputs()] == ["symbols", "token_index", *dec.control_names]
    for setting in SETTINGS:
        image = torch.rand(batch, cfg.channels, cfg.image_size, cfg.image_size, generator=gen)
        ctl_e = _controls(enc.control_names, setting)
        with torch.no_grad():
            ref = enc(image, **ctl_e)
        got = se.run(None, {"image": image.numpy(), **{k: v.numpy() for k, v in ctl_e.items()}})
        assert got[1].dtype == np.int64 and got[2].dtype == np.int64 and got[3].dtype == np.int64
        np.testing.assert_array_equal(got[1], ref[1].numpy())  # token_index
        np.testing.assert_array_equal(got[2], ref[2].numpy())  # layer_tokens
        np.testing.assert_array_equal(got[3], ref[3].numpy())  # width_units
        np.testing.assert_allclose(got[0], ref[0].numpy(), atol=1e-5)
        ctl_d = _controls(dec.control_names, setting)
        with torch.no_grad():
            ref_d = dec(ref[0], ref[1], **ctl_d)
        feed = {"symbols": ref[0].numpy(), "token_index": ref[1].numpy(), **{k: v.numpy() for k, v in ctl_d.items()}}
        got_d = sd.run(None, feed)
        np.testing.assert_allclose(got_d[0], ref_d[0].numpy(), atol=1e-5)
        np.testing.assert_array_equal(got_d[1], ref_d[1].numpy())
        np.testing.assert_array_equal(got_d[2], ref_d[2].numpy())


def test_decoder_graph_takes_any_token_count(exported):
    """Erased tokens are absent: the decoder graph runs on a subset of the tokens, in ORT as in torch."""
    cfg, enc, dec, se, sd = exported
    image = torch.rand(2, cfg.channels, cfg.image_size, cfg.image_size)
    ctl_e = _controls(enc.control_names, SETTINGS[0])
    with torch.no_grad():
        sym, idx, _, _ = enc(image, **ctl_e)
    ctl_d = _controls(dec.control_names, SETTINGS[0])
    for keep in ([0, 2, 5], [1]):
        s, i = sym[:, keep].contiguous(), idx[:, keep].contiguous()
        with torch.no_grad():
            ref = dec(s, i, **ctl_d)
        got = sd.run(None, {"symbols": s.numpy(), "token_index": i.numpy(), **{k: v.numpy() for k, v in ctl_d.items()}})
        np.testing.assert_allclose(got[0], ref[0].numpy(), atol=1e-5)
