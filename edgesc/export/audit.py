"""Check an ONNX graph against the TensorRT ONNX parser's documented restrictions, before any GPU is involved.

The rules are data (``trt_onnx_rules.toml`` beside this file, every rule with its source). :func:`audit_model`
walks every node, including the nodes of ``If``/``Loop``/``Scan`` bodies and of model-local functions, and
reports for one TensorRT version:

- *offending* nodes (the parser would refuse them or the engine could not be built): unsupported or unknown
  ops, custom-domain ops without a local function, ops newer than the version, inputs that must be build-time
  constants, a constant TopK ``K`` above 3840, a run-time ``K`` before 8.6, attributes with refused values,
  used outputs the parser does not produce, ``If`` branches with equal output names or different ranks,
  unsupported data types, an opset outside the parser's range;
- *warnings* (the engine builds but the deployment must know): data-dependent shapes (``NonZero``, a
  run-time ``K`` that derives from a float input) which need an output allocator and rule out CUDA graphs,
  ``Loop`` restrictions that cannot be checked statically, DOUBLE, INT64 before 9.0, types outside the
  matrix's "Supported Types" column.

No paper equation is involved: this is the deployment side of the encoder/decoder graphs of docs/contract.md.
"""
from __future__ import annotations

import functools
import tomllib
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgesc.errors import ExportError

RULES_FILE = "trt_onnx_rules.toml"

_MATRIX_TYPES = {
    TensorProto.FLOAT: "FP32", TensorProto.FLOAT16: "FP16", TensorProto.BFLOAT16: "BF16",
    TensorProto.INT32: "INT32", TensorProto.INT64: "INT64", TensorProto.INT8: "INT8", TensorProto.UINT8: "UINT8",
    TensorProto.BOOL: "BOOL", TensorProto.DOUBLE: "DOUBLE", TensorProto.FLOAT8E4M3FN: "FP8",
    TensorProto.INT4: "INT4", TensorProto.STRING: "STRING", TensorProto.COMPLEX64: "COMPLEX64",
    TensorProto.COMPLEX128: "COMPLEX128", TensorProto.UINT16: "UINT16", TensorProto.UINT32: "UINT32",
    TensorProto.UINT64: "UINT64", TensorProto.INT16: "INT16",
}
if hasattr(TensorProto, "FLOAT4E2M1"):
    _MATRIX_TYPES[TensorProto.FLOAT4E2M1] = "FP4"

_FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}
_NONDETERMINISTIC = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
                     "Bernoulli"}


# ---- versions ----------------------------------------------------------------------------------------------
def parse_version(v: str | int | float) -> tuple[int, int]:
    """``"10.3"`` → (10, 3); ``"10"``/``"10.x"`` → (10, 0); raises :class:`ExportError` on anything else."""
    s = str(v).strip().lower().removesuffix(".x")
    parts = s.split(".")
    try:
        major = int(parts[0])
        minor = int(parts[1]) if len(parts) > 1 else 0
    except (ValueError, IndexError):
        raise ExportError(f"not a TensorRT version: {v!r} (expected MAJOR.MINOR, e.g. 10.3)") from None
    if major < 1 or minor < 0:
        raise ExportError(f"not a TensorRT version: {v!r}")
    return major, minor


def version_str(v: tuple[int, int]) -> str:
    return f"{v[0]}.{v[1]}"


# ---- rules -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rules:
    """The parsed rule file; see ``trt_onnx_rules.toml`` for the meaning of each part."""

    raw: dict[str, Any]

    @property
    def schema(self) -> str:
        return str(self.raw["schema"])

    @property
    def matrix_version(self) -> tuple[int, int]:
        return parse_version(self.raw["matrix_version"])

    @property
    def oldest_version(self) -> tuple[int, int]:
        return parse_version(self.raw["oldest_version"])

    @property
    def ops(self) -> dict[str, dict[str, Any]]:
        return self.raw["ops"]

    def source(self, key: str) -> str:
        return str(self.raw["sources"].get(key, key))

    def opset_range(self, v: tuple[int, int]) -> dict[str, Any]:
        entries = sorted(self.raw["opset"], key=lambda e: parse_version(e["since"]))
        chosen = entries[0]
        for e in entries:
            if parse_version(e["since"]) <= v:
                chosen = e
        return chosen

    def const_inputs(self) -> list[dict[str, Any]]:
        out = []
        for r in self.raw.get("const_inputs", []):
            for op in r.get("ops", [r.get("op")]):
                out.append({**r, "op": op})
        return out


def _check_rules(raw: dict[str, Any], where: str) -> None:
    sources = raw.get("sources", {})
    for key in ("schema", "matrix_version", "oldest_version", "ops", "opset", "sources"):
        if key not in raw:
            raise ExportError(f"{where}: missing '{key}'")
    for section in ("opset", "const_inputs", "attributes", "unused_outputs"):
        for r in raw.get(section, []):
            if r.get("source") not in sources:
                raise ExportError(f"{where}: a [[{section}]] rule has no known source: {r}")
    for op, r in raw.get("since", {}).items():
        if r.get("source") not in sources:
            raise ExportError(f"{where}: [since] {op} has no known source")


@functools.lru_cache(maxsize=4)
def load_rules(path: str | None = None) -> Rules:
    """Load and check the rule file (the shipped one unless ``path`` is given)."""
    if path is None:
        text = resources.files("edgesc.export").joinpath(RULES_FILE).read_text()
        where = RULES_FILE
    else:
        p = Path(path)
        if not p.is_file():
            raise ExportError(f"audit rule file not found: {p}")
        text, where = p.read_text(), str(p)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ExportError(f"{where}: not valid TOML ({exc})") from None
    _check_rules(raw, where)
    return Rules(raw)


# ---- results -----------------------------------------------------------------------------------------------
@dataclass
class Finding:
    """One node (or the model, for opset findings) and why it matters."""

    op: str
    node: str
    reason: str
    source: str = ""
    scope: str = ""  # "" = main graph; else e.g. "If node_3/then_branch"

    def line(self) -> str:
        where = f" in {self.scope}" if self.scope else ""
        return f"{self.op} '{self.node}'{where}: {self.reason}"


@dataclass
class AuditResult:
    """Audit of one graph for one TensorRT version (recorded in the manifest under ``audit``)."""

    tensorrt: str
    ok: bool
    offending: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    nodes_checked: int = 0
    opset: int = 0
    rules: str = ""
    data_dependent_shapes: bool = False
    cuda_graphs: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AuditResult":
        return cls(**{**d, "offending": [Finding(**f) for f in d.get("offending", [])],
                      "warnings": [Finding(**f) for f in d.get("warnings", [])]})

    def report(self, title: str = "") -> str:
        """Human-readable lines: a headline, then every offending node, then every warning."""
        head = f"{title + ': ' if title else ''}TensorRT {self.tensorrt}: " + (
            "OK" if self.ok else f"{len(self.offending)} offending node(s)")
        head += f" ({self.nodes_checked} nodes, opset {self.opset}, {len(self.warnings)} warning(s))"
        lines = [head]
        lines += [f"  ERROR   {f.line()}" for f in self.offending]
        lines += [f"  warning {f.line()}" for f in self.warnings]
        return "\n".join(lines)


# ---- graph helpers -----------------------------------------------------------------------------------------
@dataclass
class _Scope:
    """Values visible in one graph: element types, ranks, constness, and which graph inputs they derive from."""

    types: dict[str, int] = field(default_factory=dict)
    ranks: dict[str, int | None] = field(default_factory=dict)
    static: dict[str, bool] = field(default_factory=dict)
    const: set[str] = field(default_factory=set)
    const_values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, frozenset[str]] = field(default_factory=dict)  # graph inputs a value depends on
    shape_origins: dict[str, frozenset[str]] = field(default_factory=dict)  # graph inputs whose *values* size it

    def child(self) -> "_Scope":
        return _Scope(dict(self.types), dict(self.ranks), dict(self.static), set(self.const),
                      dict(self.const_values), dict(self.origins), dict(self.shape_origins))


def _record_value_info(scope: _Scope, vis: Iterable[onnx.ValueInfoProto]) -> None:
    for vi in vis:
        t = vi.type
        if t.HasField("tensor_type"):
            tt = t.tensor_type
            if tt.elem_type:
                scope.types[vi.name] = tt.elem_type
            if tt.HasField("shape"):
                dims = tt.shape.dim
                scope.ranks[vi.name] = len(dims)
                scope.static[vi.name] = all(d.HasField("dim_value") for d in dims)


def _subgraphs(node: onnx.NodeProto) -> list[tuple[str, onnx.GraphProto]]:
    out = []
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            out.append((a.name, a.g))
        elif a.type == onnx.AttributeProto.GRAPHS:
            out += [(f"{a.name}[{i}]", g) for i, g in enumerate(a.graphs)]
    return out


def _all_consumed(graph: onnx.GraphProto, acc: set[str]) -> set[str]:
    for n in graph.node:
        acc.update(i for i in n.input if i)
        for _, g in _subgraphs(n):
            _all_consumed(g, acc)
    acc.update(o.name for o in graph.output)
    return acc


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _constant_value(node: onnx.NodeProto) -> Any:
    try:
        for a in node.attribute:
            if a.name == "value":
                return onnx.numpy_helper.to_array(a.t)
            if a.name in ("value_int", "value_float"):
                return helper.get_attribute_value(a)
            if a.name in ("value_ints", "value_floats"):
                return list(helper.get_attribute_value(a))
    except Exception:  # noqa: BLE001 - an unreadable constant is simply not a known value
        return None
    return None


# ---- the audit ---------------------------------------------------------------------------------------------
class _Auditor:
    def __init__(self, model: onnx.ModelProto, version: tuple[int, int], rules: Rules) -> None:
        self.model = model
        self.v = version
        self.rules = rules
        self.offending: list[Finding] = []
        self.warnings: list[Finding] = []
        self.count = 0
        self.data_dependent = False
        self.functions = {(f.domain, f.name): f for f in model.functions}
        self.consumed = _all_consumed(model.graph, set())
        for f in model.functions:
            for n in f.node:
                self.consumed.update(i for i in n.input if i)
            self.consumed.update(f.output)
        self.const_rules: dict[str, list[dict[str, Any]]] = {}
        for r in rules.const_inputs():
            self.const_rules.setdefault(r["op"], []).append(r)

    # -- reporting
    def bad(self, node: onnx.NodeProto, scope: str, reason: str, source: str) -> None:
        self.offending.append(Finding(node.op_type, node.name or "(unnamed)", reason, self.rules.source(source), scope))

    def warn(self, node: onnx.NodeProto, scope: str, reason: str, source: str) -> None:
        self.warnings.append(Finding(node.op_type, node.name or "(unnamed)", reason, self.rules.source(source), scope))

    # -- model level
    def run(self) -> None:
        r = self.rules
        opset = self.opset()
        rng = r.opset_range(self.v)
        if not (rng["min"] <= opset <= rng["max"]):
            self.offending.append(Finding(
                "(model)", "opset_import",
                f"opset {opset} is outside the range TensorRT {version_str(self.v)} parses ({rng['min']}-{rng['max']})",
                r.source(rng["source"])))
        for imp in self.model.opset_import:
            if imp.domain not in ("", "ai.onnx") and not any(f.domain == imp.domain for f in self.model.functions):
                self.warnings.append(Finding("(model)", "opset_import",
                                             f"imports domain '{imp.domain}': its ops need TensorRT plugins",
                                             r.source("matrix_10_15")))
        if self.v > r.matrix_version:
            self.warnings.append(Finding(
                "(model)", "rules",
                f"audited with the TensorRT {version_str(r.matrix_version)} operator matrix; "
                f"{version_str(self.v)} may accept more", r.source("matrix_10_15")))
        scope = _Scope()
        g = self.model.graph
        for init in g.initializer:
            scope.types[init.name] = init.data_type
            scope.ranks[init.name] = len(init.dims)
            scope.static[init.name] = True
            scope.const.add(init.name)
            scope.origins[init.name] = frozenset()
            if len(init.dims) <= 1 and (not init.dims or init.dims[0] <= 8):
                try:
                    scope.const_values[init.name] = onnx.numpy_helper.to_array(init)
                except Exception:  # noqa: BLE001
                    pass
        _record_value_info(scope, g.input)
        _record_value_info(scope, g.value_info)
        _record_value_info(scope, g.output)
        for i in g.input:
            if i.name not in scope.const:
                scope.origins[i.name] = frozenset([i.name])
        self.graph_inputs = {i.name: scope.types.get(i.name, 0) for i in g.input if i.name not in scope.const}
        self.check_io_types(g, scope, "")
        self.walk(g, scope, "")

    def opset(self) -> int:
        for imp in self.model.opset_import:
            if imp.domain in ("", "ai.onnx"):
                return int(imp.version)
        return 0

    def check_io_types(self, g: onnx.GraphProto, scope: _Scope, where: str) -> None:
        int64_native = parse_version(self.rules.raw["types"]["int64_native_since"])
        for vi in list(g.input) + list(g.output):
            t = scope.types.get(vi.name)
            if t == TensorProto.INT64 and self.v < int64_native:
                self.warnings.append(Finding("(graph I/O)", vi.name, self.rules.raw["types"]["int64_before"],
                                             self.rules.source("changelog"), where))

    # -- graph walk
    def walk(self, g: onnx.GraphProto, scope: _Scope, where: str) -> None:
        for node in g.node:
            self.count += 1
            self.check_node(node, scope, where)
            self.propagate(node, scope)
            for name, sub in _subgraphs(node):
                child = scope.child()
                for init in sub.initializer:
                    child.types[init.name] = init.data_type
                    child.const.add(init.name)
                    child.origins[init.name] = frozenset()
                _record_value_info(child, sub.input)
                _record_value_info(child, sub.value_info)
                _record_value_info(child, sub.output)
                for i in sub.input:
                    child.origins.setdefault(i.name, frozenset([f"{node.name}/{name}:{i.name}"]))
                self.walk(sub, child, f"{node.op_type} '{node.name}'/{name}" + (f" in {where}" if where else ""))

    def propagate(self, node: onnx.NodeProto, scope: _Scope) -> None:
        ins = [i for i in node.input if i]
        origins: frozenset[str] = frozenset().union(*(scope.origins.get(i, frozenset()) for i in ins)) if ins else frozenset()
        shape_o: frozenset[str] = frozenset().union(*(scope.shape_origins.get(i, frozenset()) for i in ins)) if ins else frozenset()
        if node.op_type in ("Shape", "Size"):  # a shape depends on values only where sizes were data-dependent
            origins = scope.shape_origins.get(ins[0], frozenset()) if ins else frozenset()
        if node.op_type == "TopK" and len(node.input) > 1 and node.input[1]:
            shape_o = shape_o | scope.origins.get(node.input[1], frozenset())
        if node.op_type in self.rules.raw["data_dependent"]["ops"]:
            shape_o = shape_o | origins
        is_const = False
        if node.op_type == "Constant":
            is_const = True
            val = _constant_value(node)
            if val is not None:
                scope.const_values[node.output[0]] = val
        elif node.op_type in ("Shape", "Size") and ins and scope.static.get(ins[0], False):
            is_const = True
        elif node.op_type not in _NONDETERMINISTIC and not _subgraphs(node) and ins and all(i in scope.const for i in ins):
            is_const = True
        for o in node.output:
            if not o:
                continue
            scope.origins[o] = frozenset() if is_const else origins
            scope.shape_origins[o] = frozenset() if is_const else shape_o
            if is_const:
                scope.const.add(o)

    # -- node checks
    def check_node(self, node: onnx.NodeProto, scope: _Scope, where: str) -> None:
        r = self.rules
        domain = node.domain
        if (domain, node.op_type) in self.functions:
            if self.v < (9, 0):
                self.bad(node, where, "model-local function: the parser imports local functions from TensorRT 9.0",
                         "changelog")
            fn = self.functions[(domain, node.op_type)]
            child = scope.child()
            for formal, actual in zip(fn.input, node.input):
                if actual in scope.types:
                    child.types[formal] = scope.types[actual]
                if actual in scope.const:
                    child.const.add(formal)
                child.origins[formal] = scope.origins.get(actual, frozenset())
            fake = onnx.GraphProto()
            fake.node.extend(fn.node)
            self.walk(fake, child, f"function {fn.domain}::{fn.name} (called by '{node.name}')")
            return
        if domain not in ("", "ai.onnx"):
            self.bad(node, where, f"custom-domain op '{domain}::{node.op_type}': the ONNX parser has no importer "
                                  "for it (it needs a TensorRT plugin)", "matrix_10_15")
            return
        info = r.ops.get(node.op_type)
        if info is None:
            self.bad(node, where, f"'{node.op_type}' is not in the TensorRT ONNX operator matrix", "matrix_10_15")
            return
        if not info.get("supported", True):
            self.bad(node, where, f"'{node.op_type}' is listed as unsupported by the TensorRT ONNX parser",
                     "matrix_10_15")
            return
        since = r.raw.get("since", {}).get(node.op_type)
        if since and self.v < parse_version(since["version"]):
            self.bad(node, where, f"'{node.op_type}' is supported from TensorRT {since['version']}, "
                                  f"not {version_str(self.v)}", since["source"])
        self.check_types(node, scope, where, info)
        self.check_const_inputs(node, scope, where)
        self.check_attributes(node, where)
        self.check_unused_outputs(node, where)
        if node.op_type == "TopK":
            self.check_topk(node, scope, where)
        if node.op_type in r.raw["data_dependent"]["ops"]:
            self.data_dependent = True
            self.warn(node, where, f"data-dependent output shape: {r.raw['data_dependent']['consequence']}",
                      "glossary_dds")
        if node.op_type == "If":
            self.check_if(node, scope, where)
        if node.op_type in ("Loop", "Scan"):
            self.warn(node, where, f"{node.op_type}: {r.raw['control_flow']['loop_rule']} (not checkable here)",
                      r.raw["control_flow"]["loop_source"])

    def check_types(self, node: onnx.NodeProto, scope: _Scope, where: str, info: dict[str, Any]) -> None:
        tr = self.rules.raw["types"]
        vals = [i for i in node.input if i] + [o for o in node.output if o]
        seen: set[int] = {scope.types[v] for v in vals if v in scope.types}
        for t in seen:
            name = _MATRIX_TYPES.get(t, str(t))
            if name in tr["unsupported"]:
                self.bad(node, where, f"type {name} is not a TensorRT type", tr["unsupported_source"])
            elif t == TensorProto.DOUBLE:
                self.warn(node, where, tr["double"], tr["double_source"])
        allowed = info.get("types")
        where_input = info.get("type_input", 0)
        if not allowed or where_input == "none":
            return
        allowed_set = set(allowed.split())
        if where_input == "output":
            checked = [node.output[0]] if node.output else []
        else:
            idx = int(where_input)
            checked = [node.input[idx]] if len(node.input) > idx and node.input[idx] else []
        if info.get("check_output") and node.output:
            checked.append(node.output[0])
        for v in checked:
            t = scope.types.get(v)
            if t is None:
                continue
            name = _MATRIX_TYPES.get(t, str(t))
            if name not in allowed_set and name not in tr["unsupported"] and name != "DOUBLE":
                self.warn(node, where, f"'{v}' is {name}; the matrix lists {', '.join(sorted(allowed_set))} for "
                                       f"{node.op_type} (the parser may insert casts or refuse it)", "matrix_10_15")

    def check_const_inputs(self, node: onnx.NodeProto, scope: _Scope, where: str) -> None:
        for rule in self.const_rules.get(node.op_type, []):
            idx = int(rule["input"])
            if len(node.input) <= idx or not node.input[idx]:
                continue
            until = rule.get("until")
            if until and self.v >= parse_version(until):
                continue
            name = node.input[idx]
            if name not in scope.const:
                tail = f" before TensorRT {until}" if until else ""
                self.bad(node, where, f"input '{rule['name']}' ('{name}') must be a build-time constant{tail}; "
                                      f"here it is computed at run time", rule["source"])

    def check_attributes(self, node: onnx.NodeProto, where: str) -> None:
        for rule in self.rules.raw.get("attributes", []):
            if rule["op"] != node.op_type:
                continue
            value = _attr(node, rule["attr"], rule.get("default"))
            if isinstance(value, bytes):
                value = value.decode()
            if value not in rule["allowed"]:
                self.bad(node, where, f"attribute {rule['attr']}={value!r} is not accepted (allowed: {rule['allowed']})",
                         rule["source"])

    def check_unused_outputs(self, node: onnx.NodeProto, where: str) -> None:
        for rule in self.rules.raw.get("unused_outputs", []):
            if rule["op"] != node.op_type:
                continue
            for idx in rule["outputs"]:
                if len(node.output) > idx and node.output[idx] and node.output[idx] in self.consumed:
                    self.bad(node, where, f"output {idx} ('{node.output[idx]}') is used but the parser does not "
                                          f"produce it ({rule.get('note', '')})", rule["source"])

    def check_topk(self, node: onnx.NodeProto, scope: _Scope, where: str) -> None:
        tk = self.rules.raw["topk"]
        max_k = int(tk["max_k"])
        if len(node.input) < 2 or not node.input[1]:
            k = _attr(node, "k")  # opset < 10 form
            if k is not None and int(k) > max_k:
                self.bad(node, where, f"K = {k} exceeds the TopK limit of {max_k}", "topk_api")
            return
        kname = node.input[1]
        if kname in scope.const:
            val = scope.const_values.get(kname)
            if val is not None:
                try:
                    k: int | None = int(np.asarray(val).reshape(-1)[0])
                except (ValueError, IndexError, TypeError):
                    k = None
                if k is not None and k > max_k:
                    self.bad(node, where, f"K = {k} exceeds the TopK limit of {max_k}", "topk_api")
            return
        if self.v < (8, 6):
            return  # the const_inputs rule already reported it
        origins = sorted(scope.origins.get(kname, frozenset()))
        float_inputs = [o for o in origins if self.graph_inputs.get(o) in _FLOAT_TYPES]
        msg = f"run-time K ('{kname}'): accepted since TensorRT 8.6; its value must stay <= {max_k} at run time"
        if origins:
            msg += f"; K derives from graph input(s) {', '.join(origins)}"
        if float_inputs:
            self.data_dependent = True
            msg += (f" — {', '.join(float_inputs)} is floating point, so K cannot be a shape tensor: the outputs "
                    f"sized by K have data-dependent shapes (IOutputAllocator needed, no CUDA graphs)")
        self.warn(node, where, msg, "changelog")

    def check_if(self, node: onnx.NodeProto, scope: _Scope, where: str) -> None:
        cf = self.rules.raw["control_flow"]
        branches = {name: g for name, g in _subgraphs(node)}
        then_g, else_g = branches.get("then_branch"), branches.get("else_branch")
        if then_g is None or else_g is None:
            return
        tn = [o.name for o in then_g.output]
        en = [o.name for o in else_g.output]
        same = sorted(set(tn) & set(en))
        if same:
            self.bad(node, where, f"both branches name outputs {same}: {cf['if_rule']}", cf["if_source"])
        for i, (a, b) in enumerate(zip(then_g.output, else_g.output)):
            ra = len(a.type.tensor_type.shape.dim) if a.type.tensor_type.HasField("shape") else None
            rb = len(b.type.tensor_type.shape.dim) if b.type.tensor_type.HasField("shape") else None
            if ra is not None and rb is not None and ra != rb:
                self.bad(node, where, f"branch output {i} has rank {ra} in then_branch and {rb} in else_branch: "
                                      f"{cf['if_rule']}", cf["if_source"])
        cond = node.input[0] if node.input else ""
        if scope.ranks.get(cond) not in (None, 0) and scope.ranks.get(cond) != 1:
            self.bad(node, where, f"condition '{cond}' must be a scalar boolean", cf["if_source"])


def _load(model: onnx.ModelProto | str | Path) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    p = Path(model)
    if not p.is_file():
        raise ExportError(f"ONNX file not found: {p}")
    try:
        return onnx.load(str(p))
    except Exception as exc:  # noqa: BLE001 - any decode failure is a bad file
        raise ExportError(f"{p}: not a readable ONNX model ({type(exc).__name__})") from None


def audit_model(model: onnx.ModelProto | str | Path, tensorrt: str = "10.3", rules: Rules | None = None) -> AuditResult:
    """Audit one ONNX model (object or path) for TensorRT ``tensorrt`` (``"MAJOR.MINOR"``)."""
    rules = rules or load_rules()
    v = parse_version(tensorrt)
    if v < rules.oldest_version:
        raise ExportError(f"TensorRT {tensorrt} is older than the audit rules cover "
                          f"({version_str(rules.oldest_version)} and newer)")
    m = _load(model)
    try:
        m = onnx.shape_inference.infer_shapes(m, strict_mode=False)
    except Exception:  # noqa: BLE001 - shape inference is best effort; types from the graph itself remain
        pass
    a = _Auditor(m, v, rules)
    a.run()
    return AuditResult(
        tensorrt=version_str(v), ok=not a.offending, offending=a.offending, warnings=a.warnings,
        nodes_checked=a.count, opset=a.opset(), rules=f"{rules.schema} (matrix {version_str(rules.matrix_version)})",
        data_dependent_shapes=a.data_dependent, cuda_graphs=not a.data_dependent)


def audit_for_targets(graphs: dict[str, onnx.ModelProto | str | Path], versions: dict[str, list[str]]) -> dict[str, Any]:
    """Audit every graph for every TensorRT version the targets expect.

    ``versions`` maps a target name to its TensorRT versions. Returns the manifest's ``audit`` section:
    ``{"targets": {target: [versions]}, "ok": bool, "<graph>": {"<version>": AuditResult dict}}``.
    """
    wanted = sorted({v for vs in versions.values() for v in vs}, key=parse_version)
    out: dict[str, Any] = {"targets": versions, "rules": ""}
    ok = True
    for gname, model in graphs.items():
        m = _load(model)
        out[gname] = {}
        for v in wanted:
            res = audit_model(m, v)
            out["rules"] = res.rules
            out[gname][res.tensorrt] = res.to_dict()
            ok = ok and res.ok
    out["ok"] = ok
    return out
