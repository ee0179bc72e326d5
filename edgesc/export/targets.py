"""Deployment targets as data: ``export/targets/*.toml`` (shipped as the package ``edgesc_targets``).

A target names the runtime (TensorRT or ONNX Runtime), the precision, the TensorRT versions it is expected
to run, the builder workspace, the optimisation-profile ranges for every named dynamic dimension of the
graphs (as integers or expressions over the manifest, e.g. ``K in [0, M_tx]``) and peak figures quoted from
the device's datasheet for rough estimates. :func:`load_target` validates a file; :func:`resolve_profile`
turns the ranges into integers for one exported model.
"""
from __future__ import annotations

import ast
import math
import operator
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from edgesc.errors import ExportError


class TargetError(ExportError):
    """A target name or target file is unknown or malformed."""


RUNTIMES = ("tensorrt", "onnxruntime")
PRECISIONS = ("fp32", "fp16")


@dataclass(frozen=True)
class DimRange:
    """min/opt/max of one dynamic dimension; each an int or an expression over manifest variables."""

    min: int | str
    opt: int | str
    max: int | str


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    runtime: str
    precision: str
    workspace_mb: int
    tensorrt: tuple[str, ...]
    dims: dict[str, DimRange]
    datasheet: dict[str, Any] = field(default_factory=dict)
    jetpack: str | None = None
    path: str = ""

    @property
    def tensorrt_majors(self) -> tuple[int, ...]:
        from edgesc.export.audit import parse_version

        return tuple(sorted({parse_version(v)[0] for v in self.tensorrt}))


def targets_dir() -> Path:
    """The folder holding the shipped targets (``export/targets`` in a checkout)."""
    return Path(str(resources.files("edgesc_targets"))) / "targets"


def list_targets() -> list[str]:
    return sorted(p.stem for p in targets_dir().glob("*.toml"))


_KNOWN_KEYS = {"name", "description", "runtime", "precision", "workspace_mb", "tensorrt", "jetpack", "profile",
               "datasheet"}


def _parse(raw: dict[str, Any], where: str) -> Target:
    unknown = sorted(set(raw) - _KNOWN_KEYS)
    if unknown:
        raise TargetError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_KNOWN_KEYS))})")
    for key in ("name", "runtime", "precision", "workspace_mb", "tensorrt", "profile"):
        if key not in raw:
            raise TargetError(f"{where}: missing '{key}'")
    if raw["runtime"] not in RUNTIMES:
        raise TargetError(f"{where}: runtime must be one of {', '.join(RUNTIMES)}, got {raw['runtime']!r}")
    if raw["precision"] not in PRECISIONS:
        raise TargetError(f"{where}: precision must be one of {', '.join(PRECISIONS)}, got {raw['precision']!r}")
    ws = raw["workspace_mb"]
    if isinstance(ws, bool) or not isinstance(ws, int) or ws < 0:
        raise TargetError(f"{where}: workspace_mb must be a non-negative integer, got {ws!r}")
    trt = raw["tensorrt"]
    if not isinstance(trt, list) or not all(isinstance(v, str) for v in trt):
        raise TargetError(f"{where}: tensorrt must be a list of \"MAJOR.MINOR\" strings")
    from edgesc.export.audit import parse_version

    for v in trt:
        parse_version(v)
    if raw["runtime"] == "tensorrt" and not trt:
        raise TargetError(f"{where}: a TensorRT target needs at least one expected TensorRT version")
    dims_raw = raw["profile"].get("dims") if isinstance(raw["profile"], dict) else None
    if not isinstance(dims_raw, dict) or not dims_raw:
        raise TargetError(f"{where}: [profile.dims] must map dimension names to {{min, opt, max}}")
    dims: dict[str, DimRange] = {}
    for dname, r in dims_raw.items():
        if not isinstance(r, dict) or set(r) != {"min", "opt", "max"}:
            raise TargetError(f"{where}: profile.dims.{dname} needs exactly min, opt and max")
        for k in ("min", "opt", "max"):
            if isinstance(r[k], bool) or not isinstance(r[k], (int, str)):
                raise TargetError(f"{where}: profile.dims.{dname}.{k} must be an integer or an expression")
            if isinstance(r[k], str):
                _compile_expr(r[k], f"{where}: profile.dims.{dname}.{k}")
        dims[dname] = DimRange(r["min"], r["opt"], r["max"])
    ds = raw.get("datasheet", {})
    if not isinstance(ds, dict):
        raise TargetError(f"{where}: [datasheet] must be a table")
    return Target(name=raw["name"], description=raw.get("description", ""), runtime=raw["runtime"],
                  precision=raw["precision"], workspace_mb=ws, tensorrt=tuple(trt), dims=dims, datasheet=ds,
                  jetpack=raw.get("jetpack"), path=where)


def load_target(name_or_path: str | Path) -> Target:
    """Load a shipped target by name (``jetson-orin-nano``) or a target TOML file by path."""
    s = str(name_or_path)
    if s.endswith(".toml") or "/" in s:
        path = Path(s)
        if not path.is_file():
            raise TargetError(f"target file not found: {path}")
    else:
        path = targets_dir() / f"{s}.toml"
        if not path.is_file():
            raise TargetError(f"unknown target '{s}' (known: {', '.join(list_targets()) or '(none)'})")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TargetError(f"{path}: not valid TOML ({exc})") from None
    return _parse(raw, str(path))


def load_targets(names: list[str] | str | None) -> list[Target]:
    """Comma-separated or list form; empty → no targets."""
    if names is None:
        return []
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    return [load_target(n) for n in names]


# ---- expressions over the manifest ----------------------------------------------------------------------------
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
           ast.Div: operator.truediv}
_FUNCS = {"ceil": math.ceil, "floor": math.floor, "min": min, "max": max}


def _compile_expr(text: str, where: str) -> ast.Expression:
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise TargetError(f"{where}: cannot parse expression {text!r}") from None
    for n in ast.walk(tree):
        ok = isinstance(n, (ast.Expression, ast.BinOp, ast.UnaryOp, ast.USub, ast.Constant, ast.Name, ast.Load,
                            ast.Call)) or type(n) in _BINOPS
        if not ok or (isinstance(n, ast.Constant) and not isinstance(n.value, (int, float))):
            raise TargetError(f"{where}: expression {text!r} may only use numbers, names, + - * / // and "
                              f"{', '.join(_FUNCS)}")
        if isinstance(n, ast.Call) and not (isinstance(n.func, ast.Name) and n.func.id in _FUNCS):
            raise TargetError(f"{where}: unknown function in {text!r} (allowed: {', '.join(_FUNCS)})")
    return tree


def eval_expr(value: int | str, variables: dict[str, int], where: str = "expression") -> int:
    """Evaluate a profile value (an int or an expression like ``"M_tx"``, ``"ceil(M/2)+CLS"``) to an int."""
    if isinstance(value, int):
        return value
    tree = _compile_expr(value, where)

    def ev(n: ast.AST) -> float:
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Constant):
            return n.value
        if isinstance(n, ast.Name):
            if n.id not in variables:
                raise TargetError(f"{where}: unknown name '{n.id}' in {value!r} (known: {', '.join(sorted(variables))})")
            return variables[n.id]
        if isinstance(n, ast.UnaryOp):
            return -ev(n.operand)
        if isinstance(n, ast.BinOp):
            return _BINOPS[type(n.op)](ev(n.left), ev(n.right))
        if isinstance(n, ast.Call):
            return _FUNCS[n.func.id](*[ev(a) for a in n.args])  # type: ignore[union-attr]
        raise TargetError(f"{where}: cannot evaluate {value!r}")

    out = ev(tree)
    if out != int(out):
        raise TargetError(f"{where}: {value!r} evaluates to {out}, not an integer")
    return int(out)


def manifest_variables(manifest: dict[str, Any]) -> dict[str, int]:
    """Names usable in target expressions, from a manifest's ``model`` section."""
    m = manifest["model"]
    cls = int(bool(m.get("class_token", False)))
    syms = list(m.get("symbols_per_token", [1]))
    return {"M": int(m["num_patches"]), "CLS": cls, "M_tx": int(m["num_patches"]) + cls, "S_min": int(min(syms)),
            "S_max": int(max(syms)), "L_enc": int(m.get("encoder_layers", 0)), "L_dec": int(m.get("decoder_layers", 0)),
            "C": int(m.get("channels", 3)), "H": int(m.get("image_size", 0)), "W": int(m.get("image_size", 0))}


def resolve_profile(target: Target, manifest: dict[str, Any], batch: int | None = None) -> dict[str, tuple[int, int, int]]:
    """Integer (min, opt, max) per dimension name. A static-batch export (``batch``) pins ``B``."""
    var = manifest_variables(manifest)
    out: dict[str, tuple[int, int, int]] = {}
    for dname, r in target.dims.items():
        where = f"target {target.name}: profile.dims.{dname}"
        lo, opt, hi = (eval_expr(getattr(r, k), var, f"{where}.{k}") for k in ("min", "opt", "max"))
        if not (0 <= lo <= opt <= hi):
            raise TargetError(f"{where}: need 0 <= min <= opt <= max, got {lo}, {opt}, {hi}")
        out[dname] = (lo, opt, hi)
    if batch is not None and "B" in out:
        out["B"] = (batch, batch, batch)
    return out
