"""``--precision fp16``: an fp32 → mixed fp16 pass over an exported ONNX graph.

Why our own pass: ``onnxconverter_common.float16.convert_float_to_float16`` (1.16.0, checked here) produces
an invalid model for graphs whose ``If`` branches read outer-scope values (the checker reports nodes out of
topological order), and every layer of these graphs is behind an ``If`` (dynamic depth).

What stays fp32 (TensorRT's strongly typed builds and ONNX Runtime execute exactly these types):
- graph inputs and outputs (the runtime contract is fp32: docs/contract.md);
- LayerNormalization, Softmax, reductions, Pow/Sqrt/Reciprocal/Exp/Log (numerically sensitive);
- decision arithmetic: the backward slice of every decision sink — TopK scores (token selection, 001), the
  comparisons of the cumulative halting scores with the threshold (000 Eq. 20-29; the slice covers the sums), Ceil/Floor/Round and casts to integers (k = ⌈α·M⌉,
  K(ξ) of Eq. 32), ``If`` conditions — down to and including the linear layer that produces the score;
- the tail of every float graph output down to (excluding) its last linear layer — this covers power
  normalisation (unit average power of the transmitted symbols);
- anything computed only from controls and constants (no activations involved), and Loop/Scan bodies.
Everything else with float tensors (linear layers, attention matmuls, activations, residual adds, reshapes,
gathers) runs in fp16. Casts are inserted at every boundary; weights read only by fp16 nodes are stored in fp16.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgesc.errors import ExportError

KEEP_OPS = {
    "LayerNormalization", "Softmax", "LogSoftmax", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd",
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "Pow", "Sqrt", "Reciprocal",
    "Exp", "Log", "TopK", "Ceil", "Floor", "Round", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
    "Equal", "ArgMax", "ArgMin", "NonZero", "Range", "CastLike", "RandomNormal", "RandomNormalLike", "RandomUniform",
    "RandomUniformLike", "Loop", "Scan", "GroupNormalization", "InstanceNormalization", "BatchNormalization",
}
HEAVY_OPS = {"MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum"}
# CumSum is not a sink by itself: the inference form also uses it to add width-chunk outputs; the halting
# cumulative sum is covered by the comparison with the threshold that reads it.
DECISION_SINKS = {"TopK", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Equal", "Ceil", "Floor",
                  "Round", "ArgMax", "ArgMin", "NonZero"}
FLEXIBLE_OPS = {"Constant", "ConstantOfShape"}  # float constants: fp16 when every reader is fp16
_FLOAT, _HALF = TensorProto.FLOAT, TensorProto.FLOAT16


@dataclass
class Fp16Report:
    """What the pass did (recorded in the manifest under ``export.fp16``)."""

    fp16_nodes: int = 0
    fp32_nodes: int = 0
    casts_inserted: int = 0
    weights_fp16: int = 0
    weights_fp32: int = 0
    kept_ops: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def _graphs(g: onnx.GraphProto) -> Iterable[onnx.GraphProto]:
    yield g
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for sg in a.graphs:
                    yield from _graphs(sg)


def _subgraph_nodes(n: onnx.NodeProto) -> Iterable[onnx.NodeProto]:
    for a in n.attribute:
        gs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs) if a.type == onnx.AttributeProto.GRAPHS else []
        for g in gs:
            for sub in _graphs(g):
                yield from sub.node


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    types: dict[str, int] = {}
    for g in _graphs(model.graph):
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
                types[vi.name] = vi.type.tensor_type.elem_type
        for init in g.initializer:
            types[init.name] = init.data_type
        for n in g.node:
            if n.op_type == "Constant":
                for a in n.attribute:
                    if a.name == "value":
                        types[n.output[0]] = a.t.data_type
                    elif a.name in ("value_float", "value_floats"):
                        types[n.output[0]] = _FLOAT
            if n.op_type == "Cast":
                to = next(a.i for a in n.attribute if a.name == "to")
                types[n.output[0]] = to
    return types


def convert_to_fp16(model: onnx.ModelProto) -> tuple[onnx.ModelProto, Fp16Report]:
    """Return a mixed-precision copy of ``model`` (fp32 I/O) and a report. See the module docstring."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(m, strict_mode=False)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"fp16 pass: ONNX shape inference failed ({type(exc).__name__}: {exc})") from None
    types = _elem_types(inferred)
    graphs = list(_graphs(m.graph))
    nodes = [n for g in graphs for n in g.node]
    producer: dict[str, onnx.NodeProto] = {}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    owner: dict[int, onnx.GraphProto] = {}
    for g in graphs:
        for n in g.node:
            owner[id(n)] = g
            for o in n.output:
                if o:
                    producer[o] = n
            for i in n.input:
                if i:
                    consumers[i].append(n)
    # a node that owns subgraphs also "consumes" the outer values its bodies read (for the flexible rule)
    inits = {i.name: i for g in graphs for i in g.initializer}

    def is_float(v: str) -> bool:
        return types.get(v) == _FLOAT

    def float_io(n: onnx.NodeProto) -> bool:
        return any(is_float(v) for v in list(n.input) + list(n.output) if v)

    keep: set[int] = set()
    for n in nodes:
        if n.op_type in KEEP_OPS:
            keep.add(id(n))
            if n.op_type in ("Loop", "Scan"):
                keep.update(id(s) for s in _subgraph_nodes(n))
        if n.op_type == "Cast" and any(is_float(i) for i in n.input) and not is_float(n.output[0]):
            keep.add(id(n))  # float → integer/bool: a decision

    # backward slices from decision sinks (include the scoring linear layer) and from float graph outputs
    # (exclude the last linear layer)
    def slice_from(values: Iterable[str], include_heavy: bool) -> None:
        stack = [v for v in values if v]
        seen: set[str] = set()
        while stack:
            v = stack.pop()
            if v in seen or not is_float(v):
                continue
            seen.add(v)
            p = producer.get(v)
            if p is None or p.op_type in ("If", "Loop", "Scan") or p.op_type in FLEXIBLE_OPS:
                continue
            if p.op_type in HEAVY_OPS:
                if include_heavy:
                    keep.add(id(p))
                continue
            keep.add(id(p))
            stack.extend(i for i in p.input if i)

    sinks = []
    for n in nodes:
        if n.op_type in DECISION_SINKS or (n.op_type == "Cast" and id(n) in keep):
            sinks.extend(i for i in n.input if i)
        if n.op_type == "If" and n.input:
            sinks.append(n.input[0])
    slice_from(sinks, include_heavy=True)
    slice_from([o.name for o in m.graph.output], include_heavy=False)

    # forward closure: arithmetic on controls and constants only (no activation involved) stays fp32.
    # A value is control-derived if it is a scalar graph input, an initializer/constant, or computed only
    # from control-derived values.
    ctrl: set[str] = {i.name for i in m.graph.input
                      if i.type.tensor_type.HasField("shape") and len(i.type.tensor_type.shape.dim) == 0}
    ctrl |= set(inits)
    for n in nodes:  # graphs are topologically sorted; subgraph nodes follow their owner in `nodes`
        ins = [i for i in n.input if i]
        if n.op_type in FLEXIBLE_OPS or (ins and all(i in ctrl for i in ins) and n.op_type not in ("If", "Loop", "Scan")):
            ctrl.update(o for o in n.output if o)
            if n.op_type not in FLEXIBLE_OPS and float_io(n) and not all(i in inits for i in ins):
                keep.add(id(n))

    # precision of every float value
    half_nodes = {id(n) for n in nodes if id(n) not in keep and n.op_type not in FLEXIBLE_OPS and float_io(n)}

    def reader_is_half(v: str) -> bool:
        rs = consumers.get(v, [])
        return bool(rs) and all(id(r) in half_nodes for r in rs) and v not in {o.name for o in m.graph.output}

    flex_half = {id(n) for n in nodes if n.op_type in FLEXIBLE_OPS and n.output and is_float(n.output[0])
                 and reader_is_half(n.output[0])}
    # Cast(int/bool → float) whose readers are all fp16 can cast straight to fp16
    cast_half = {id(n) for n in nodes if n.op_type == "Cast" and id(n) in half_nodes and is_float(n.output[0])}
    val_half: set[str] = set()
    for n in nodes:
        if id(n) in half_nodes or id(n) in flex_half:
            val_half.update(o for o in n.output if o and is_float(o))

    report = Fp16Report()
    cast_cache: dict[tuple[str, int, int], str] = {}  # (value, to, graph id) → cast output

    def cast_in(g: onnx.GraphProto, v: str, to: int, before: list[onnx.NodeProto]) -> str:
        key = (v, to, id(g))
        if key not in cast_cache:
            out = f"{v}__{'fp16' if to == _HALF else 'fp32'}"
            suffix = 0
            while out in producer or out in inits:
                suffix += 1
                out = f"{v}__{'fp16' if to == _HALF else 'fp32'}{suffix}"
            before.append(helper.make_node("Cast", [v], [out], to=to, name=f"{out}_cast"))
            producer[out] = before[-1]
            cast_cache[key] = out
            report.casts_inserted += 1
        return cast_cache[key]

    # weights: fp16 copy when read by fp16 nodes; keep fp32 for fp32 readers
    half_init: dict[str, str] = {}

    def half_weight(name: str) -> str:
        if name not in half_init:
            init = inits[name]
            arr = numpy_helper.to_array(init).astype(np.float16)
            readers = consumers.get(name, [])
            only_half = all(id(r) in half_nodes for r in readers)
            g = next(gr for gr in graphs if any(i.name == name for i in gr.initializer))
            if only_half:
                init.CopyFrom(numpy_helper.from_array(arr, name))
                half_init[name] = name
                report.weights_fp16 += 1
            else:
                new = f"{name}__fp16"
                g.initializer.append(numpy_helper.from_array(arr, new))
                half_init[name] = new
                report.weights_fp16 += 1
        return half_init[name]

    _fix_if_branch_mismatch(m, graphs, val_half, types, report)
    # innermost graphs first: rebuilding a node list copies its nodes (and their subgraphs) — the subgraphs
    # must be final by then
    for g in reversed(graphs):
        new_nodes: list[onnx.NodeProto] = []
        for n in g.node:
            want_half = id(n) in half_nodes
            for idx, v in enumerate(n.input):
                if not v or not is_float(v):
                    continue
                if want_half and v not in val_half:
                    if v in inits:
                        n.input[idx] = half_weight(v)
                    else:
                        n.input[idx] = cast_in(g, v, _HALF, new_nodes)
                elif not want_half and v in val_half:
                    n.input[idx] = cast_in(g, v, _FLOAT, new_nodes)
            if id(n) in flex_half:
                _flex_to_half(n)
            if id(n) in cast_half:
                for a in n.attribute:
                    if a.name == "to":
                        a.i = _HALF
            if want_half:
                report.fp16_nodes += 1
            elif float_io(n):
                report.fp32_nodes += 1
                if n.op_type not in FLEXIBLE_OPS:
                    report.kept_ops[n.op_type] = report.kept_ops.get(n.op_type, 0) + 1
            new_nodes.append(n)
        del g.node[:]
        g.node.extend(new_nodes)

    # subgraph outputs: declare their new types; main graph outputs must stay fp32
    graphs = list(_graphs(m.graph))  # the copies made above
    producer = {o: n for gr in graphs for n in gr.node for o in n.output if o}
    consumers = defaultdict(list)
    for gr in graphs:
        for n in gr.node:
            for i in n.input:
                if i:
                    consumers[i].append(n)
    for g in graphs[1:]:
        for o in g.output:
            if o.name in val_half:
                o.type.tensor_type.elem_type = _HALF
    main_out_fix: list[onnx.NodeProto] = []
    for o in m.graph.output:
        if o.name in val_half:
            # rename the fp16 producer's output and cast back to the original fp32 name
            p = producer[o.name]
            tmp = f"{o.name}__fp16out"
            for i, x in enumerate(p.output):
                if x == o.name:
                    p.output[i] = tmp
            for r in consumers.get(o.name, []):
                for i, x in enumerate(r.input):
                    if x == o.name:
                        r.input[i] = tmp
            main_out_fix.append(helper.make_node("Cast", [tmp], [o.name], to=_FLOAT, name=f"{o.name}_out_cast"))
            report.casts_inserted += 1
    m.graph.node.extend(main_out_fix)
    report.weights_fp32 = sum(1 for i in inits.values() if i.data_type == _FLOAT)
    for g in graphs:
        del g.value_info[:]
    try:
        onnx.checker.check_model(m)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"fp16 pass produced an invalid graph: {str(exc).splitlines()[0]}") from None
    return m, report


def _flex_to_half(n: onnx.NodeProto) -> None:
    for a in n.attribute:
        if a.name == "value" and a.t.data_type == _FLOAT:
            arr = numpy_helper.to_array(a.t).astype(np.float16)
            a.t.CopyFrom(numpy_helper.from_array(arr, a.t.name))
        elif a.name in ("value_float", "value_floats"):
            val = np.asarray(helper.get_attribute_value(a), dtype=np.float16)
            n.ClearField("attribute")
            n.attribute.append(helper.make_attribute("value", numpy_helper.from_array(val)))
            return


def _fix_if_branch_mismatch(m: onnx.ModelProto, graphs: list[onnx.GraphProto], val_half: set[str],
                            types: dict[str, int], report: Fp16Report) -> None:
    """Both branches of an If must return the same types: cast the fp32 side of a mixed pair to fp16.

    Runs before the rewrite so that readers of If outputs know their precision; inner Ifs first.
    """
    for g in reversed(graphs):
        for n in g.node:
            if n.op_type != "If":
                continue
            br = {a.name: a.g for a in n.attribute if a.type == onnx.AttributeProto.GRAPH}
            t, e = br.get("then_branch"), br.get("else_branch")
            if t is None or e is None:
                continue
            for i, (to, eo) in enumerate(zip(t.output, e.output)):
                th, eh = to.name in val_half, eo.name in val_half
                if th == eh:
                    if th and n.output[i]:
                        val_half.add(n.output[i])
                    continue
                lo = eo if th else to
                sub = e if th else t
                new = f"{lo.name}__fp16br"
                sub.node.append(helper.make_node("Cast", [lo.name], [new], to=_HALF, name=f"{new}_cast"))
                lo.name = new
                lo.type.tensor_type.elem_type = _HALF
                val_half.add(new)
                report.casts_inserted += 1
                if n.output[i]:
                    val_half.add(n.output[i])
