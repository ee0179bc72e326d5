"""The manifest (``manifest.json``): the only thing the runtime reads besides the graphs (docs/contract.md).

Helpers to hash files, describe graph I/O, and read/write the manifest atomically (temp file in the same
directory + ``os.replace``) so that a crash never leaves a half-written manifest next to valid graphs.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import onnx

from edgesc.errors import ExportError

FORMAT = "edgesc-manifest/1"
MANIFEST = "manifest.json"
INVALID_MANIFEST = "manifest.invalid.json"

_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.INT64: "int64",
           onnx.TensorProto.INT32: "int32", onnx.TensorProto.BOOL: "bool", onnx.TensorProto.DOUBLE: "float64",
           onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.INT8: "int8", onnx.TensorProto.BFLOAT16: "bfloat16"}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def describe_io(model: onnx.ModelProto) -> dict[str, list[dict[str, Any]]]:
    """Inputs/outputs as ``{"name", "dtype", "shape"}`` with symbolic dims as their names (``"B"``, ``"K"``)."""

    def one(vi: onnx.ValueInfoProto) -> dict[str, Any]:
        tt = vi.type.tensor_type
        shape: list[int | str] = []
        for i, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value"):
                shape.append(int(d.dim_value))
            else:
                shape.append(d.dim_param or f"{vi.name}_{i}")
        return {"name": vi.name, "dtype": _DTYPES.get(tt.elem_type, str(tt.elem_type)), "shape": shape}

    inits = {i.name for i in model.graph.initializer}
    return {"inputs": [one(v) for v in model.graph.input if v.name not in inits],
            "outputs": [one(v) for v in model.graph.output]}


def write_json_atomic(path: str | Path, data: dict[str, Any]) -> Path:
    """Write JSON through a temp file in the same directory and ``os.replace`` it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=False, default=_json_default)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_manifest(out_dir: str | Path, manifest: dict[str, Any], valid: bool = True) -> Path:
    """Write ``manifest.json`` (or ``manifest.invalid.json`` when validation failed; the other is removed)."""
    out = Path(out_dir)
    name, other = (MANIFEST, INVALID_MANIFEST) if valid else (INVALID_MANIFEST, MANIFEST)
    path = write_json_atomic(out / name, manifest)
    stale = out / other
    if stale.exists():
        stale.unlink()
    return path


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """Read and sanity-check ``DIR/manifest.json``; a clear :class:`ExportError` for anything wrong."""
    d = Path(out_dir)
    if not d.is_dir():
        raise ExportError(f"export directory not found: {d}")
    p = d / MANIFEST
    if not p.is_file():
        extra = " (validation failed: see manifest.invalid.json)" if (d / INVALID_MANIFEST).is_file() else ""
        raise ExportError(f"no manifest.json in {d}{extra}")
    try:
        m = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExportError(f"{p}: not valid JSON ({exc})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise ExportError(f"{p}: not an {FORMAT} manifest (format={m.get('format') if isinstance(m, dict) else None!r})")
    for key in ("model", "graphs", "controls"):
        if key not in m:
            raise ExportError(f"{p}: missing '{key}'")
    return m


def check_graph_files(out_dir: str | Path, manifest: dict[str, Any]) -> dict[str, Path]:
    """Paths of the manifest's graphs, after checking they exist and match their recorded sha256."""
    d = Path(out_dir)
    out: dict[str, Path] = {}
    for gname, g in manifest["graphs"].items():
        p = d / g["file"]
        if not p.is_file():
            raise ExportError(f"{gname} graph missing: {p}")
        if g.get("sha256") and sha256_file(p) != g["sha256"]:
            raise ExportError(f"{p}: sha256 does not match the manifest (file changed after export)")
        out[gname] = p
    return out
