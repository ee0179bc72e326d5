"""TensorRT ONNX audit: planted unsupported ops are caught, version boundaries follow the rule file."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesc.errors import ExportError
from edgesc.export.audit import audit_for_targets, audit_model, load_rules, parse_version


def _model(nodes, inputs, outputs, inits=(), opset=20, functions=(), extra_opsets=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in extra_opsets]
    m = helper.make_model(g, opset_imports=imports, functions=list(functions))
    m.ir_version = 10
    return m


def _vi(name, t=TensorProto.FLOAT, shape=(2, 8)):
    return helper.make_tensor_value_info(name, t, None if shape is None else list(shape))


def _topk_model(k_const: int | None, k_from_float: bool = True, opset: int = 20):
    """x [2, 8] → TopK along axis 1 with K either an initializer or ceil(budget * 8) from a float input."""
    nodes, inputs, inits = [], [_vi("x")], []
    if k_const is not None:
        inits.append(numpy_helper.from_array(np.array([k_const], dtype=np.int64), "k"))
    elif k_from_float:
        inputs.append(helper.make_tensor_value_info("budget", TensorProto.FLOAT, []))
        inits += [numpy_helper.from_array(np.array(8.0, dtype=np.float32), "m"),
                  numpy_helper.from_array(np.array([1], dtype=np.int64), "one")]
        nodes += [helper.make_node("Mul", ["budget", "m"], ["bm"], name="mul"),
                  helper.make_node("Ceil", ["bm"], ["c"], name="ceil"),
                  helper.make_node("Cast", ["c"], ["ci"], to=TensorProto.INT64, name="cast"),
                  helper.make_node("Reshape", ["ci", "one"], ["k"], name="reshape")]
    else:
        inputs.append(helper.make_tensor_value_info("k", TensorProto.INT64, [1]))
    nodes.append(helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=1, name="topk"))
    return _model(nodes, inputs, [_vi("v", shape=(2, None)), _vi("i", TensorProto.INT64, (2, None))], inits, opset)


def test_rules_have_a_source_for_every_rule():
    r = load_rules()
    assert r.ops["TopK"]["types"]
    for section in ("opset", "const_inputs", "attributes", "unused_outputs"):
        for rule in r.raw[section]:
            assert rule["source"] in r.raw["sources"]
    for op, rule in r.raw["since"].items():
        assert rule["source"] in r.raw["sources"], op


def test_clean_graph_passes():
    m = _model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [_vi("x")], [_vi("y")])
    res = audit_model(m, "10.3")
    assert res.ok and res.offending == [] and res.nodes_checked == 1 and res.opset == 20


def test_planted_custom_domain_op_is_caught():
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("FancyGate", ["a"], ["y"], domain="com.example", name="planted")]
    m = _model(nodes, [_vi("x")], [_vi("y")], extra_opsets=["com.example"])
    res = audit_model(m, "10.3")
    assert not res.ok
    assert [f.node for f in res.offending] == ["planted"]
    assert "com.example::FancyGate" in res.offending[0].reason
    assert "planted" in res.report()


@pytest.mark.parametrize("op", ["Unique", "Det"])
def test_planted_matrix_unsupported_op_is_caught(op):
    m = _model([helper.make_node(op, ["x"], ["y"], name="bad")], [_vi("x", shape=(2, 2))], [_vi("y", shape=(None,))])
    res = audit_model(m, "10.15")
    assert not res.ok and res.offending[0].op == op and "unsupported" in res.offending[0].reason


def test_unsupported_op_inside_if_branch_is_caught():
    then_g = helper.make_graph([helper.make_node("Unique", ["x"], ["t"], name="deep")], "then", [], [_vi("t", shape=(None,))])
    else_g = helper.make_graph([helper.make_node("Identity", ["x"], ["e"], name="ok")], "else", [], [_vi("e", shape=(None,))])
    node = helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g, name="cond")
    m = _model([node], [_vi("x", shape=(4,)), helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
               [_vi("y", shape=(None,))])
    res = audit_model(m, "10.3")
    assert [f.node for f in res.offending] == ["deep"]
    assert "cond" in res.offending[0].scope


def test_if_branches_with_same_output_name_or_rank_are_caught():
    then_g = helper.make_graph([helper.make_node("Identity", ["x"], ["o"])], "t", [], [_vi("o", shape=(4,))])
    else_g = helper.make_graph([helper.make_node("Unsqueeze", ["x", "ax"], ["o"])], "e", [], [_vi("o", shape=(1, 4))])
    node = helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g, name="cond")
    ax = numpy_helper.from_array(np.array([0], dtype=np.int64), "ax")
    m = _model([node], [_vi("x", shape=(4,)), helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
               [_vi("y", shape=None)], inits=[ax])
    reasons = " ".join(f.reason for f in audit_model(m, "10.3").offending)
    assert "both branches name outputs" in reasons and "rank 1 in then_branch and 2" in reasons


def test_topk_constant_k_limit():
    assert audit_model(_topk_model(3), "10.3").ok
    big = _topk_model(4000)
    res = audit_model(big, "10.3")
    assert not res.ok and "3840" in res.offending[0].reason


def test_topk_runtime_k_depends_on_version():
    m = _topk_model(None, k_from_float=True, opset=17)
    old = audit_model(m, "8.5")
    assert not old.ok and "before TensorRT 8.6" in old.offending[0].reason
    new = audit_model(m, "8.6")
    assert new.ok
    [w] = [w for w in new.warnings if w.op == "TopK"]
    assert "budget" in w.reason and "data-dependent" in w.reason
    assert new.data_dependent_shapes and not new.cuda_graphs


def test_topk_runtime_k_from_int_input_is_not_flagged_data_dependent():
    res = audit_model(_topk_model(None, k_from_float=False), "10.3")
    assert res.ok and not res.data_dependent_shapes


def test_nonzero_version_and_warning():
    m = _model([helper.make_node("NonZero", ["x"], ["y"], name="nz")], [_vi("x", TensorProto.BOOL, (4,))],
               [_vi("y", TensorProto.INT64, (1, None))], opset=17)
    assert audit_model(m, "8.5").ok
    res = audit_model(m, "10.3")
    assert res.ok and res.data_dependent_shapes and any("IOutputAllocator" in w.reason for w in res.warnings)


def test_op_newer_than_version_is_caught():
    inits = [numpy_helper.from_array(np.ones(8, np.float32), "s")]
    m = _model([helper.make_node("RMSNormalization", ["x", "s"], ["y"], name="rms")], [_vi("x")], [_vi("y")],
               inits, opset=23)
    assert not audit_model(m, "10.15").offending or all(f.node != "rms" for f in audit_model(m, "10.15").offending)
    res = audit_model(m, "10.3")
    assert any(f.node == "rms" and "from TensorRT 10.15" in f.reason for f in res.offending)
    assert any("opset 23" in f.reason for f in res.offending)  # 10.3 parses opset 9-20


def test_build_time_constant_inputs():
    m = _model([helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="rs")],
               [_vi("x"), helper.make_tensor_value_info("axes", TensorProto.INT64, [1])], [_vi("y", shape=(None,))])
    res = audit_model(m, "10.3")
    assert not res.ok and "build-time constant" in res.offending[0].reason
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    m2 = _model([helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="rs")], [_vi("x")], [_vi("y", shape=(None,))],
                [axes])
    assert audit_model(m2, "10.3").ok


def test_types_double_and_int64():
    m = _model([helper.make_node("Relu", ["x"], ["y"], name="r")], [_vi("x", TensorProto.DOUBLE)],
               [_vi("y", TensorProto.DOUBLE)])
    assert any("DOUBLE" in w.reason for w in audit_model(m, "10.3").warnings)
    m = _model([helper.make_node("Abs", ["x"], ["y"], name="r")], [_vi("x", TensorProto.INT64)],
               [_vi("y", TensorProto.INT64)], opset=17)
    assert any("INT32" in w.reason for w in audit_model(m, "8.6").warnings)
    assert not any("INT32" in w.reason for w in audit_model(m, "10.3").warnings)
    m = _model([helper.make_node("Identity", ["x"], ["y"], name="s")], [_vi("x", TensorProto.STRING)],
               [_vi("y", TensorProto.STRING)])
    assert not audit_model(m, "10.3").ok


def test_layernorm_extra_outputs_refused_when_used():
    inits = [numpy_helper.from_array(np.ones(8, np.float32), "s")]
    ok = _model([helper.make_node("LayerNormalization", ["x", "s"], ["y"], name="ln")], [_vi("x")], [_vi("y")], inits)
    assert audit_model(ok, "10.3").ok
    bad = _model([helper.make_node("LayerNormalization", ["x", "s"], ["y", "mean"], name="ln")], [_vi("x")],
                 [_vi("y"), _vi("mean", shape=(2, 1))], inits)
    assert not audit_model(bad, "10.3").ok


def test_version_parsing_and_refusals():
    assert parse_version("10.3") == (10, 3) and parse_version("11") == (11, 0) and parse_version("10.x") == (10, 0)
    with pytest.raises(ExportError):
        parse_version("ten")
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x")], [_vi("y")])
    with pytest.raises(ExportError, match="older than"):
        audit_model(m, "7.1")
    with pytest.raises(ExportError, match="not found"):
        audit_model("/nonexistent/x.onnx", "10.3")


def test_audit_for_targets_shape():
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x")], [_vi("y")])
    out = audit_for_targets({"encoder": m}, {"jetson-orin-nano": ["10.3"], "server-gpu": ["10.0", "11.0"]})
    assert out["ok"] and set(out["encoder"]) == {"10.0", "10.3", "11.0"}
    assert any("may accept more" in w["reason"] for w in out["encoder"]["11.0"]["warnings"])


def test_dynamo_exported_topk_with_runtime_budget():
    """The pattern the encoder uses: k = ceil(budget * M) from a 0-d float input, through the dynamo exporter."""
    import torch

    class Sel(torch.nn.Module):
        def forward(self, x: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
            k = torch.ceil(budget * x.shape[1]).to(torch.int64).item()
            torch._check(k >= 1)
            torch._check(k <= x.shape[1])
            return torch.topk(x, k, dim=1).indices

    prog = torch.onnx.export(Sel().eval(), (torch.randn(2, 16), torch.tensor(0.5)), dynamo=True, opset_version=20,
                             verbose=False)
    res = audit_model(prog.model_proto, "10.3")
    assert res.ok, res.report()
    assert any(w.op == "TopK" and "budget" in w.reason for w in res.warnings)
