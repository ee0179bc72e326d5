"""Interface tests of edgesc_runtime's Encoder/Decoder and manifest checks on hand-built stand-in graphs
(tests/test_runtime_graphs.py): they test the runtime's contract handling, not a trained model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from test_runtime_graphs import GEOMETRY, build_model_dir, rewrite_manifest  # noqa: E402

from edgesc_runtime import (BackendUnavailable, ControlError, Decoder, Encoder, InputError, ManifestError,  # noqa: E402
                            ModelMismatchError, RuntimeErrorBase, load_manifest)
from edgesc_runtime.flops import FlopModel  # noqa: E402

M = GEOMETRY["num_patches"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_model_dir(tmp_path_factory.mktemp("full"))


@pytest.fixture(scope="module")
def enc(model_dir: Path) -> Encoder:
    return Encoder(model_dir, backend="onnxruntime", threads=1)


@pytest.fixture(scope="module")
def dec(model_dir: Path) -> Decoder:
    return Decoder(model_dir, backend="onnxruntime", threads=1)


@pytest.fixture()
def images() -> np.ndarray:
    return np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)


def test_runtime_imports_neither_torch_nor_edgesc_nor_onnx() -> None:
    code = ("import sys, edgesc_runtime, edgesc_runtime.channel, edgesc_runtime.packet, edgesc_runtime.controller, "
            "edgesc_runtime.flops, edgesc_runtime.backends.ort, edgesc_runtime.backends.tensorrt;"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'edgesc', 'onnx'));"
            "print(','.join(bad))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1] / "runtime")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "", f"runtime pulled in: {res.stdout.strip()}"


def test_encode_defaults_shapes_and_flops(enc: Encoder, images: np.ndarray) -> None:
    res = enc.encode(images)
    assert res.controls == {"budget": 1.0, "depth": 4, "width": 1.0, "snr_db": 10.0, "ratio": 0}
    assert res.symbols.shape == (3, M, 8, 2) and res.symbols.dtype == np.float32
    assert res.token_index.shape == (3, M) and res.layer_tokens.shape == (3, 4) and res.width_units.shape == (4, 2)
    np.testing.assert_allclose((res.symbols ** 2).sum(-1).mean(axis=(1, 2)), 1.0, rtol=1e-5)
    expected = FlopModel.from_manifest(enc.manifest).encoder_flops(M, 8, res.layer_tokens, res.width_units)
    np.testing.assert_array_equal(res.flops, expected)
    assert res.symbols_per_image == M * 8


def test_encode_controls_change_k_s_and_flops(enc: Encoder, images: np.ndarray) -> None:
    full = enc.encode(images)
    half = enc.encode(images, budget=0.5, ratio=1)
    shallow = enc.encode(images, depth=1)
    assert half.symbols.shape == (3, 8, 4, 2)
    assert (half.flops < full.flops).all() and (shallow.flops < full.flops).all()
    assert shallow.layer_tokens.tolist() == [[M, 0, 0, 0]] * 3
    # the top-k indices are a subset of all patch indices, unique per image
    assert all(len(set(row)) == 8 for row in half.token_index.tolist())


def test_single_chw_image_is_accepted(enc: Encoder, images: np.ndarray) -> None:
    res = enc.encode(images[0], budget=0.25)
    assert res.symbols.shape == (1, 4, 8, 2)


@pytest.mark.parametrize("bad, msg", [
    (np.zeros((2, 3, 32, 32), np.uint8), "divide uint8"),
    (np.zeros((2, 32, 32, 3), np.float32), "NCHW"),
    (np.full((1, 3, 32, 32), 1.5, np.float32), "[0, 1]"),
    (np.full((1, 3, 32, 32), np.nan, np.float32), "NaN"),
    (np.zeros((0, 3, 32, 32), np.float32), "empty"),
])
def test_bad_images_raise_input_error(enc: Encoder, bad: np.ndarray, msg: str) -> None:
    with pytest.raises(InputError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        enc.encode(bad)


@pytest.mark.parametrize("kwargs, msg", [
    ({"budget": 0.0}, "below its minimum"), ({"budget": 1.5}, "above its maximum"),
    ({"depth": 0}, "below"), ({"depth": 5}, "above"), ({"depth": 2.5}, "integer"), ({"depth": True}, "number"),
    ({"width": float("nan")}, "finite"), ({"ratio": 2}, "above"), ({"snr_db": "high"}, "number"),
    ({"budget": np.ones(2)}, "scalar"),
])
def test_bad_controls_raise_control_error(enc: Encoder, images: np.ndarray, kwargs: dict, msg: str) -> None:
    with pytest.raises(ControlError, match=msg):
        enc.encode(images, **kwargs)


def test_numpy_scalar_controls_are_accepted(enc: Encoder, images: np.ndarray) -> None:
    res = enc.encode(images, budget=np.float64(0.5), depth=np.int32(2), ratio=np.array(1))
    assert res.controls["depth"] == 2 and res.symbols.shape[1:] == (8, 4, 2)


def test_decode_round_trip_and_flops(enc: Encoder, dec: Decoder, images: np.ndarray) -> None:
    e = enc.encode(images, budget=0.5, ratio=1)
    d = dec.decode(e.symbols, e.token_index, ratio=1, depth=2)
    assert d.output.shape == (3, 3, 32, 32) and d.output.dtype == np.float32
    assert ((d.output >= 0) & (d.output <= 1)).all()
    assert d.layer_tokens.tolist() == [[M, M, 0, 0]] * 3
    expected = FlopModel.from_manifest(dec.manifest).decoder_flops(8, 4, d.layer_tokens, d.width_units)
    np.testing.assert_array_equal(d.flops, expected)


def test_decode_ragged_lists_match_per_image_runs(enc: Encoder, dec: Decoder, images: np.ndarray) -> None:
    e = enc.encode(images)
    keep = [np.arange(M) % 2 == 0, np.ones(M, bool), np.arange(M) < 3]
    syms = [e.symbols[b][k] for b, k in enumerate(keep)]
    idxs = [e.token_index[b][k] for b, k in enumerate(keep)]
    ragged = dec.decode(syms, idxs)
    for b in range(3):
        single = dec.decode(syms[b], idxs[b])
        np.testing.assert_allclose(ragged.output[b], single.output[0], atol=1e-6)
        assert ragged.flops[b] == single.flops[0]
    assert ragged.flops[1] > ragged.flops[0] > ragged.flops[2]  # fewer received tokens, cheaper channel decoder


def test_encode_packets_parse_decode_matches_direct_decode(enc: Encoder, dec: Decoder, images: np.ndarray) -> None:
    from edgesc_runtime.packet import encode_frames, parse_packet

    e = enc.encode(images, budget=0.5, ratio=1, snr_db=5.0)
    packets = [parse_packet(b, expected_model_hash=enc.model.hash, max_index=M) for b in encode_frames(e, enc.model.hash)]
    assert [p.frame for p in packets] == [0, 1, 2] and packets[0].controls["ratio"] == 1
    via_packets = dec.decode([p.symbols for p in packets], [p.token_index for p in packets],
                             ratio=packets[0].controls["ratio"])
    direct = dec.decode(e.symbols, e.token_index, ratio=1)
    np.testing.assert_allclose(via_packets.output, direct.output, atol=2e-3)  # float16 on the wire
    np.testing.assert_array_equal(via_packets.flops, direct.flops)


def test_decode_with_every_token_erased(dec: Decoder) -> None:
    d = dec.decode(np.zeros((2, 0, 8, 2), np.float32), np.zeros((2, 0), np.int64))
    np.testing.assert_allclose(d.output, 0.5)  # sigmoid(0): nothing received


@pytest.mark.parametrize("sym_shape, idx, msg", [
    ((1, 4, 4, 2), [[0, 1, 2, 3]], "S=8"),
    ((1, 4, 8, 2), [[0, 1, 2, 16]], r"\[0, 16\)"),
    ((1, 4, 8, 2), [[0, 1, 1, 3]], "duplicate"),
    ((1, 4, 8, 2), [[0, 1, 2]], "shape"),
    ((1, 17, 8, 2), [list(range(17))], "at most 16"),
])
def test_bad_decoder_inputs_raise_input_error(dec: Decoder, sym_shape, idx, msg: str) -> None:
    with pytest.raises(InputError, match=msg):
        dec.decode(np.zeros(sym_shape, np.float32), np.asarray(idx))


def test_session_options_disable_spinning(enc: Encoder) -> None:
    opts = enc.backend.session.get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.intra_op_num_threads == 1


# --- frozen and absent controls ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def frozen_dir(tmp_path_factory) -> Path:
    return build_model_dir(tmp_path_factory.mktemp("frozen"), enc_controls=("depth", "width", "snr_db"),
                           dec_controls=("depth", "width", "snr_db"), frozen_enc={"budget": 0.5},
                           symbols=(8,))


def test_frozen_control_accepts_its_value_and_rejects_others(frozen_dir: Path, images: np.ndarray) -> None:
    enc = Encoder(frozen_dir, backend="onnxruntime", threads=1)
    assert enc.control_names == ("depth", "width", "snr_db")
    assert enc.encode(images).symbols.shape == (3, 8, 8, 2)
    assert enc.encode(images, budget=0.5).controls["budget"] == 0.5
    with pytest.raises(ControlError, match="frozen at 0.5; got 0.25"):
        enc.encode(images, budget=0.25)
    assert enc.encode(images, ratio=0).controls["ratio"] == 0  # single ratio level: 0 is implicit
    with pytest.raises(ControlError, match="ratio is fixed"):
        enc.encode(images, ratio=1)


# --- manifest and graph mismatches ---------------------------------------------------------------------

def test_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not found"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(tmp_path)
    d = build_model_dir(tmp_path / "m")
    rewrite_manifest(d, lambda m: m.update(format="edgesc-manifest/0"))
    with pytest.raises(ManifestError, match="edgesc-manifest/0"):
        load_manifest(d)
    rewrite_manifest(d, lambda m: (m.update(format="edgesc-manifest/1"), m["model"].pop("embed_dim")))
    with pytest.raises(ManifestError, match="model.embed_dim"):
        load_manifest(d)


@pytest.mark.parametrize("edit, err, msg", [
    (lambda m: m["graphs"]["encoder"].update(file="missing.onnx"), ManifestError, "does not exist"),
    (lambda m: m["graphs"]["decoder"].update(sha256="0" * 64), ModelMismatchError, "sha256"),
    (lambda m: m["model"].update(num_patches=15), ManifestError, "num_patches"),
    (lambda m: m["controls"]["encoder"]["depth"].update(max=9), ManifestError, "depth range"),
    (lambda m: m["controls"]["encoder"]["budget"].update(default=2.0), ManifestError, "budget"),
    (lambda m: m["controls"]["encoder"].update(foo={"default": 1}), ManifestError, "not a encoder control"),
    (lambda m: m["frozen"]["encoder"].update(depth=2), ManifestError, "both a graph input and frozen"),
    (lambda m: m["flops"]["encoder"].pop("select_at"), ManifestError, "flops.encoder.select_at"),
])
def test_manifest_validation(tmp_path: Path, edit, err, msg: str) -> None:
    d = rewrite_manifest(build_model_dir(tmp_path), edit)
    with pytest.raises(err, match=msg):
        Encoder(d, backend="onnxruntime")


def test_graph_model_hash_must_match(tmp_path: Path) -> None:
    d = build_model_dir(tmp_path, graph_hash="f" * 64)
    with pytest.raises(ModelMismatchError, match="does not match the manifest"):
        Encoder(d, backend="onnxruntime")


def test_graph_inputs_must_match_manifest_controls(tmp_path: Path) -> None:
    d = build_model_dir(tmp_path, enc_controls=("depth", "width", "snr_db", "ratio"))
    d = rewrite_manifest(d, lambda m: m["controls"]["encoder"].update(
        budget={"dtype": "float32", "min": 0.0625, "max": 1.0, "default": 1.0}))
    with pytest.raises(ModelMismatchError, match="inputs"):
        Encoder(d, backend="onnxruntime")


def test_backend_selection_errors(model_dir: Path) -> None:
    with pytest.raises(BackendUnavailable, match="no TensorRT encoder engine"):
        Encoder(model_dir, backend="tensorrt")
    with pytest.raises(BackendUnavailable, match="unknown backend"):
        Decoder(model_dir, backend="cuda")
    assert Encoder(model_dir).backend.name == "onnxruntime"  # auto without an engine


def test_every_error_is_one_line_and_shares_the_base(tmp_path: Path) -> None:
    d = build_model_dir(tmp_path)
    (d / "manifest.json").write_text(json.dumps({"format": "edgesc-manifest/1"}))
    with pytest.raises(RuntimeErrorBase) as info:
        load_manifest(d)
    assert "\n" not in str(info.value)
