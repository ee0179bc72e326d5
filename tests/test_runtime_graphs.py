"""Tiny stand-in graphs for the runtime's interface tests (and the tests that they are well formed).

These graphs are NOT the edgesc model: they are small hand-built ONNX graphs (onnx.helper) that have exactly
the contract's input/output names, dtypes and shape behaviour (docs/contract.md, "Encoder graph" / "Decoder
graph"), so that the runtime can be tested before and independently of the exporter:

- encoder: patch embedding (Conv, stride P) -> per-token score (mean) -> k = ceil(budget*M) -> TopK -> gather ->
  linear coder to 2*S(ratio) features (weights sliced by the ratio's S) -> unit average power per image;
  layer_tokens[b, l] = k for l < depth else 0; width_units from the contract's width rule with
  K(xi, sigma^2) = 100*sigmoid(1 + 0.1*sigma^2) (paper 000 Eq. 32 form) and sigma^2 = 10^(-snr_db/10).
- decoder: linear coder back to C*P^2 features per token -> scattered to their patch positions (zeros where a
  token is absent) -> un-patchify -> sigmoid; layer_tokens = M for l < depth; same width rule.

Controls absent from a variant become Constants holding the frozen (or implicit) value.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

GEOMETRY = dict(image_size=32, channels=3, patch_size=8, num_patches=16, embed_dim=16, heads=2, mlp_dim=32,
                mlp_groups=4, encoder_layers=4, decoder_layers=4)
MODEL_HASH = hashlib.sha256(b"edgesc runtime interface-test weights").hexdigest()
ALL_ENC = ("budget", "depth", "width", "snr_db", "ratio")
ALL_DEC = ("depth", "width", "snr_db", "ratio")
_DTYPE = {"budget": TensorProto.FLOAT, "depth": TensorProto.INT64, "width": TensorProto.FLOAT,
          "snr_db": TensorProto.FLOAT, "ratio": TensorProto.INT64}
_NP = {TensorProto.FLOAT: np.float32, TensorProto.INT64: np.int64}


def _c(name: str, value: Any, dtype=np.int64) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _controls(nodes: list, inputs: list, names: tuple[str, ...], wanted: tuple[str, ...],
              fixed: dict[str, Any]) -> None:
    for name in names:
        if name in wanted:
            inputs.append(helper.make_tensor_value_info(name, _DTYPE[name], []))
        else:
            nodes.append(helper.make_node("Constant", [], [name],
                                          value=_c(name + "_const", fixed[name], _NP[_DTYPE[name]])))


def _width_nodes(L: int, H: int, G: int) -> tuple[list, list]:
    """width_units [L, 2] from width and snr_db (contract width rule, K = 100*sigmoid(1 + 0.1*sigma^2))."""
    inits = [_c("ten", 10.0, np.float32), _c("m_tenth", -0.1, np.float32), _c("tenth", 0.1, np.float32),
             _c("one_f", 1.0, np.float32), _c("H_f", float(H), np.float32), _c("G_f", float(G), np.float32),
             _c("shape_1", [1]), _c("shape_L2", [L, 2])]
    n = helper.make_node
    nodes = [
        n("Mul", ["snr_db", "m_tenth"], ["snr_exp"]), n("Pow", ["ten", "snr_exp"], ["sigma2"]),
        n("Mul", ["sigma2", "tenth"], ["s_term"]), n("Add", ["s_term", "one_f"], ["logit"]),
        n("Sigmoid", ["logit"], ["keep"]), n("Mul", ["width", "keep"], ["frac"]),
        n("Mul", ["frac", "H_f"], ["h_raw"]), n("Ceil", ["h_raw"], ["h_ceil"]), n("Clip", ["h_ceil", "one_f", "H_f"], ["h_f"]),
        n("Mul", ["frac", "G_f"], ["g_raw"]), n("Ceil", ["g_raw"], ["g_ceil"]), n("Clip", ["g_ceil", "one_f", "G_f"], ["g_f"]),
        n("Cast", ["h_f"], ["h_i"], to=TensorProto.INT64), n("Cast", ["g_f"], ["g_i"], to=TensorProto.INT64),
        n("Reshape", ["h_i", "shape_1"], ["h_1"]), n("Reshape", ["g_i", "shape_1"], ["g_1"]),
        n("Concat", ["h_1", "g_1"], ["hg"], axis=0), n("Expand", ["hg", "shape_L2"], ["width_units"]),
    ]
    return nodes, inits


def _layer_tokens_nodes(L: int, per_layer: str, batch_src: str) -> tuple[list, list]:
    """layer_tokens [B, L] = per_layer (int64 scalar) where l < depth else 0."""
    inits = [_c("zero_i", 0), _c("one_i", 1), _c("L_i", L), _c("shape_L", [L]), _c("axes0", [0]),
             _c("s0", [0]), _c("s1", [1])]
    n = helper.make_node
    nodes = [
        n("Range", ["zero_i", "L_i", "one_i"], ["layer_ids"]), n("Less", ["layer_ids", "depth"], ["active_b"]),
        n("Cast", ["active_b"], ["active"], to=TensorProto.INT64), n("Mul", ["active", per_layer], ["lt_row"]),
        n("Unsqueeze", ["lt_row", "axes0"], ["lt_row2"]), n("Shape", [batch_src], ["lt_bshape"]),
        n("Slice", ["lt_bshape", "s0", "s1"], ["lt_B_1"]), n("Concat", ["lt_B_1", "shape_L"], ["shape_BL"], axis=0),
        n("Expand", ["lt_row2", "shape_BL"], ["layer_tokens"]),
    ]
    return nodes, inits


def _finish(nodes, inputs, outputs, inits, name: str, meta: dict[str, str]) -> onnx.ModelProto:
    unique: dict[str, onnx.TensorProto] = {}
    for init in inits:  # helpers share small constants (s0, s1, ...): keep one copy of each
        if init.name in unique:
            assert unique[init.name] == init, f"clashing initializer {init.name}"
        unique[init.name] = init
    graph = helper.make_graph(nodes, name, inputs, outputs, list(unique.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=9)
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    return model


def build_encoder(symbols: tuple[int, ...], controls: tuple[str, ...], fixed: dict[str, Any],
                  meta: dict[str, str], seed: int = 0) -> onnx.ModelProto:
    g = GEOMETRY
    C, P, E, M, L = g["channels"], g["patch_size"], g["embed_dim"], g["num_patches"], g["encoder_layers"]
    rng = np.random.default_rng(seed)
    smax = max(symbols)
    n = helper.make_node
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["B", C, g["image_size"], g["image_size"]])]
    nodes: list = []
    _controls(nodes, inputs, ALL_ENC, controls, fixed)
    inits = [
        _c("W_pe", rng.normal(0, 0.2, (E, C, P, P)), np.float32), _c("b_pe", rng.normal(0, 0.1, E), np.float32),
        _c("W_cod", rng.normal(0, 0.3, (E, 2 * smax)), np.float32), _c("S_table", list(symbols)),
        _c("M_f", float(M), np.float32), _c("two_i", 2), _c("shape_BEM", [0, E, -1]), _c("axes2", [2]),
        _c("shape_sym", [0, 0, -1, 2]), _c("axes123", [1, 2, 3]), _c("two_f", 2.0, np.float32),
        _c("eps", 1e-12, np.float32), _c("shape_1e", [1]), _c("zero_1", [0]),
    ]
    nodes += [
        n("Conv", ["image", "W_pe", "b_pe"], ["pe"], kernel_shape=[P, P], strides=[P, P]),
        n("Reshape", ["pe", "shape_BEM"], ["pe_flat"]), n("Transpose", ["pe_flat"], ["tokens"], perm=[0, 2, 1]),
        n("ReduceMean", ["tokens", "axes2"], ["score"], keepdims=0),
        n("Mul", ["budget", "M_f"], ["k_raw"]), n("Ceil", ["k_raw"], ["k_ceil"]),
        n("Cast", ["k_ceil"], ["k"], to=TensorProto.INT64), n("Reshape", ["k", "shape_1e"], ["k_1"]),
        n("TopK", ["score", "k_1"], ["top_vals", "token_index"], axis=1),
        n("Unsqueeze", ["token_index", "axes2"], ["idx3"]),
        n("GatherND", ["tokens", "idx3"], ["kept"], batch_dims=1),
        n("Gather", ["S_table", "ratio"], ["S"], axis=0), n("Mul", ["S", "two_i"], ["twoS"]),
        n("Reshape", ["twoS", "shape_1e"], ["twoS_1"]),
        n("Slice", ["W_cod", "zero_1", "twoS_1", "shape_1e"], ["W_s"]),
        n("MatMul", ["kept", "W_s"], ["z"]), n("Reshape", ["z", "shape_sym"], ["z4"]),
        n("Mul", ["z4", "z4"], ["z_sq"]), n("ReduceMean", ["z_sq", "axes123"], ["p_half"], keepdims=1),
        n("Mul", ["p_half", "two_f"], ["p"]), n("Add", ["p", "eps"], ["p_eps"]), n("Sqrt", ["p_eps"], ["rms"]),
        n("Div", ["z4", "rms"], ["symbols"]),
    ]
    lt_nodes, lt_inits = _layer_tokens_nodes(L, "k", "image")
    w_nodes, w_inits = _width_nodes(L, g["heads"], g["mlp_groups"])
    nodes += lt_nodes + w_nodes
    inits += lt_inits + w_inits
    outputs = [helper.make_tensor_value_info("symbols", TensorProto.FLOAT, ["B", "K", "S", 2]),
               helper.make_tensor_value_info("token_index", TensorProto.INT64, ["B", "K"]),
               helper.make_tensor_value_info("layer_tokens", TensorProto.INT64, ["B", L]),
               helper.make_tensor_value_info("width_units", TensorProto.INT64, [L, 2])]
    return _finish(nodes, inputs, outputs, inits, "edgesc_test_encoder", meta)


def build_decoder(symbols: tuple[int, ...], controls: tuple[str, ...], fixed: dict[str, Any],
                  meta: dict[str, str], seed: int = 1) -> onnx.ModelProto:
    g = GEOMETRY
    C, P, M, L, I = g["channels"], g["patch_size"], g["num_patches"], g["decoder_layers"], g["image_size"]
    side, cpp = I // P, C * P * P
    rng = np.random.default_rng(seed)
    smax = max(symbols)
    n = helper.make_node
    inputs = [helper.make_tensor_value_info("symbols", TensorProto.FLOAT, ["B", "K", "S", 2]),
              helper.make_tensor_value_info("token_index", TensorProto.INT64, ["B", "K"])]
    nodes: list = []
    _controls(nodes, inputs, ALL_DEC, controls, fixed)
    inits = [
        _c("W_dec", rng.normal(0, 0.3, (2 * smax, cpp)), np.float32), _c("S_table", list(symbols)),
        _c("two_i", 2), _c("shape_00", [0, 0]), _c("shape_1e", [1]), _c("zero_1", [0]), _c("axes2", [2]),
        _c("M_cpp", [M, cpp]), _c("shape_K_cpp", [cpp]), _c("M_i", M),
        _c("shape_patch", [0, side, side, C, P, P]), _c("shape_img", [0, C, I, I]), _c("s0", [0]), _c("s1", [1]),
        _c("s2", [2]),
    ]
    nodes += [
        n("Gather", ["S_table", "ratio"], ["S"], axis=0), n("Mul", ["S", "two_i"], ["twoS"]),
        n("Reshape", ["twoS", "shape_1e"], ["twoS_1"]),
        # explicit 2S (not -1): ONNX Runtime cannot infer -1 when K = 0 (every token erased)
        n("Concat", ["shape_00", "twoS_1"], ["shape_BK"], axis=0), n("Reshape", ["symbols", "shape_BK"], ["z"]),
        n("Slice", ["W_dec", "zero_1", "twoS_1", "zero_1"], ["W_s"]),
        n("MatMul", ["z", "W_s"], ["feat"]),
        n("Shape", ["token_index"], ["bk"]), n("Slice", ["bk", "s0", "s1"], ["B_1"]),
        n("Concat", ["B_1", "M_cpp"], ["canvas_shape"], axis=0),
        n("ConstantOfShape", ["canvas_shape"], ["canvas"], value=_c("zero_f", [0.0], np.float32)),
        n("Concat", ["bk", "shape_K_cpp"], ["idx_shape"], axis=0),
        n("Unsqueeze", ["token_index", "axes2"], ["idx3"]), n("Expand", ["idx3", "idx_shape"], ["idx_full"]),
        n("ScatterElements", ["canvas", "idx_full", "feat"], ["patches"], axis=1),
        n("Reshape", ["patches", "shape_patch"], ["p6"]),
        n("Transpose", ["p6"], ["p6t"], perm=[0, 3, 1, 4, 2, 5]),
        n("Reshape", ["p6t", "shape_img"], ["pre"]), n("Sigmoid", ["pre"], ["image"]),
    ]
    lt_nodes, lt_inits = _layer_tokens_nodes(L, "M_i", "token_index")
    w_nodes, w_inits = _width_nodes(L, g["heads"], g["mlp_groups"])
    nodes += lt_nodes + w_nodes
    inits += lt_inits + w_inits
    outputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["B", C, I, I]),
               helper.make_tensor_value_info("layer_tokens", TensorProto.INT64, ["B", L]),
               helper.make_tensor_value_info("width_units", TensorProto.INT64, [L, 2])]
    return _finish(nodes, inputs, outputs, inits, "edgesc_test_decoder", meta)


def _spec(name: str, symbols: tuple[int, ...], layers: int) -> dict[str, Any]:
    return {
        "budget": {"dtype": "float32", "min": 0.0625, "max": 1.0, "default": 1.0, "levels": [1.0, 0.5, 0.25, 0.125]},
        "depth": {"dtype": "int64", "min": 1, "max": layers, "default": layers, "levels": list(range(1, layers + 1))},
        "width": {"dtype": "float32", "min": 0.125, "max": 1.0, "default": 1.0, "levels": [1.0, 0.75, 0.5, 0.25]},
        "snr_db": {"dtype": "float32", "min": -20.0, "max": 40.0, "default": 10.0, "levels": [0.0, 10.0, 20.0]},
        "ratio": {"dtype": "int64", "min": 0, "max": len(symbols) - 1, "default": 0,
                  "levels": list(range(len(symbols)))},
    }[name]


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_model_dir(path: Path, *, enc_controls: tuple[str, ...] = ALL_ENC, dec_controls: tuple[str, ...] = ALL_DEC,
                    frozen_enc: dict[str, Any] | None = None, frozen_dec: dict[str, Any] | None = None,
                    symbols: tuple[int, ...] = (8, 4), model_hash: str = MODEL_HASH,
                    graph_hash: str | None = None) -> Path:
    """Write encoder.onnx, decoder.onnx and manifest.json into ``path``; return ``path``.

    Controls not in ``enc_controls``/``dec_controls`` are baked in as constants: the frozen value when given
    (and recorded under manifest ``frozen``), else the implicit one (budget 1, depth L, width 1, snr 10, ratio 0).
    ``graph_hash`` writes a different edgesc.model_hash into the graphs than the manifest's (mismatch tests).
    """
    g = GEOMETRY
    path.mkdir(parents=True, exist_ok=True)
    frozen_enc, frozen_dec = dict(frozen_enc or {}), dict(frozen_dec or {})
    implicit = {"budget": 1.0, "depth": g["encoder_layers"], "width": 1.0, "snr_db": 10.0, "ratio": 0}
    meta = {"edgesc.model_hash": graph_hash or model_hash, "edgesc.model_id": "tinytest"}
    enc = build_encoder(symbols, enc_controls, {**implicit, **frozen_enc}, meta)
    dec = build_decoder(symbols, dec_controls, {**implicit, "depth": g["decoder_layers"], **frozen_dec}, meta)
    onnx.save(enc, path / "encoder.onnx")
    onnx.save(dec, path / "decoder.onnx")
    manifest = {
        "format": "edgesc-manifest/1",
        "model": {"id": "tinytest", "preset": "tinytest", "hash": model_hash, "task": "reconstruction",
                  **g, "num_classes": 0, "class_token": False, "symbols_per_token": list(symbols)},
        "graphs": {
            "encoder": {"file": "encoder.onnx", "sha256": sha256_file(path / "encoder.onnx"),
                        "inputs": [{"name": "image", "dtype": "float32", "shape": ["B", 3, 32, 32]}],
                        "outputs": [{"name": "symbols"}, {"name": "token_index"}, {"name": "layer_tokens"},
                                    {"name": "width_units"}]},
            "decoder": {"file": "decoder.onnx", "sha256": sha256_file(path / "decoder.onnx"),
                        "inputs": [{"name": "symbols"}, {"name": "token_index"}],
                        "outputs": [{"name": "image"}, {"name": "layer_tokens"}, {"name": "width_units"}]},
        },
        "controls": {"encoder": {c: _spec(c, symbols, g["encoder_layers"]) for c in enc_controls},
                     "decoder": {c: _spec(c, symbols, g["decoder_layers"]) for c in dec_controls}},
        "frozen": {"encoder": frozen_enc, "decoder": frozen_dec},
        "flops": {"convention": "FLOPs = 2*MACs, matmul-class ops",
                  "encoder": {"halting": True, "tokens": True, "coder_hidden": 0, "specials": 1, "select_at": 0},
                  "decoder": {"halting": True, "coder_hidden": 0, "head": "reconstruction"}},
        "export": {"dynamic": True, "opset": 20, "precision": "fp32", "batch": "dynamic",
                   "versions": {"note": "hand-built interface-test graphs (tests/test_runtime_graphs.py)"}},
        "validation": {}, "audit": {}, "engines": {},
    }
    (path / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return path


def rewrite_manifest(path: Path, edit) -> Path:
    """Load manifest.json in ``path``, apply ``edit(dict)`` in place, write it back."""
    file = path / "manifest.json"
    data = json.loads(file.read_text())
    edit(data)
    file.write_text(json.dumps(data))
    return path


# --- the stand-in graphs themselves are well formed and behave as the contract says ----------------------

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_model_dir(tmp_path_factory.mktemp("tiny"))


def test_graphs_pass_checker_and_carry_metadata(model_dir: Path) -> None:
    for name in ("encoder.onnx", "decoder.onnx"):
        model = onnx.load(model_dir / name)
        onnx.checker.check_model(model, full_check=True)
        props = {p.key: p.value for p in model.metadata_props}
        assert props["edgesc.model_hash"] == MODEL_HASH


def test_encoder_graph_budget_sets_k_and_power_is_unit(model_dir: Path) -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_dir / "encoder.onnx"), providers=["CPUExecutionProvider"])
    img = np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)
    for budget, k in ((1.0, 16), (0.5, 8), (0.125, 2)):
        sym, idx, lt, wu = sess.run(None, {"image": img, "budget": np.array(budget, np.float32),
                                           "depth": np.array(3), "width": np.array(1.0, np.float32),
                                           "snr_db": np.array(10.0, np.float32), "ratio": np.array(1)})
        assert sym.shape == (3, k, 4, 2) and idx.shape == (3, k)
        np.testing.assert_allclose((sym ** 2).sum(-1).mean(axis=(1, 2)), 1.0, rtol=1e-5)
        assert lt.tolist() == [[k, k, k, 0]] * 3
        assert wu.shape == (4, 2)
