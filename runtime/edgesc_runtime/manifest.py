"""Loading and validating ``manifest.json`` (docs/contract.md, "Manifest").

The manifest is the only thing the runtime reads besides the graphs. :func:`load_manifest` checks the format
tag, the required keys and their types, that every graph file exists and has the recorded sha256, and that the
control specs are consistent with the contract's control table. The ONNX metadata check (the graph's
``edgesc.model_hash`` equals the manifest's model hash) needs a loaded session and is done by
:func:`check_graph_metadata`, which the sessions call with ``InferenceSession.get_modelmeta()
.custom_metadata_map`` -- the runtime never imports ``onnx``.
"""
from __future__ import annotations

import hashlib
import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .errors import ControlError, ManifestError, ModelMismatchError

MANIFEST_FORMAT = "edgesc-manifest/1"
MANIFEST_NAME = "manifest.json"
ROLES = ("encoder", "decoder")

#: Controls each graph may take (contract table "Controls") and their dtype.
CONTROL_DTYPES: dict[str, str] = {
    "budget": "float32", "depth": "int64", "width": "float32", "snr_db": "float32", "ratio": "int64",
}
ROLE_CONTROLS: dict[str, tuple[str, ...]] = {
    "encoder": ("budget", "depth", "width", "snr_db", "ratio"),
    "decoder": ("depth", "width", "snr_db", "ratio"),
}
#: Graph data inputs (before the controls) and required outputs per role.
GRAPH_DATA_INPUTS: dict[str, tuple[str, ...]] = {"encoder": ("image",), "decoder": ("symbols", "token_index")}

_MODEL_KEYS: dict[str, type | tuple[type, ...]] = {
    "id": str, "hash": str, "task": str, "image_size": int, "channels": int, "patch_size": int,
    "num_patches": int, "embed_dim": int, "heads": int, "mlp_dim": int, "mlp_groups": int, "num_classes": int,
    "class_token": bool, "encoder_layers": int, "decoder_layers": int, "symbols_per_token": list,
}
_REQUIRED_TOP = ("format", "model", "graphs", "controls", "flops")
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class ModelInfo:
    """The ``model`` block of the manifest: geometry of the exported codec."""

    id: str
    hash: str
    task: str
    image_size: int
    channels: int
    patch_size: int
    num_patches: int
    embed_dim: int
    heads: int
    mlp_dim: int
    mlp_groups: int
    num_classes: int
    class_token: bool
    encoder_layers: int
    decoder_layers: int
    symbols_per_token: tuple[int, ...]
    preset: str | None = None

    @property
    def max_tokens(self) -> int:
        """Largest K a transmission can have: all patches (+ the class token)."""
        return self.num_patches + int(self.class_token)


@dataclass(frozen=True)
class GraphInfo:
    """One graph entry: absolute path, recorded sha256 and the declared I/O (as written by the exporter)."""

    role: str
    path: Path
    sha256: str
    inputs: tuple[dict, ...] = ()
    outputs: tuple[dict, ...] = ()


@dataclass(frozen=True)
class EngineInfo:
    """One ``engines`` entry written by ``edgesc compile`` (TensorRT)."""

    role: str
    path: Path
    sha256: str
    gpu: str
    compute_capability: str
    tensorrt: str
    precision: str
    profile: dict = field(default_factory=dict)
    version_compatible: bool = False          # built with TensorRT's version-compatible flag
    hardware_compatibility: str = "none"      # none | same_compute_capability | ampere_plus


@dataclass(frozen=True)
class ControlSpec:
    """A graph control: dtype, inclusive range (None = unbounded), default and the recommended levels."""

    name: str
    dtype: str
    default: float | int
    min: float | int | None = None
    max: float | int | None = None
    levels: tuple[float | int, ...] = ()

    def validate(self, value: Any) -> float | int:
        """Return ``value`` as a Python int/float after checking type and range; raise ControlError."""
        return coerce_control(self.name, self.dtype, value, self.min, self.max)


def coerce_control(name: str, dtype: str, value: Any, lo: float | int | None = None,
                   hi: float | int | None = None) -> float | int:
    """Check one control value against its contract dtype and optional inclusive range."""
    if isinstance(value, np.ndarray):
        if value.ndim != 0 and value.size != 1:
            raise ControlError(f"control {name} must be a scalar, got an array of shape {value.shape}")
        value = value.reshape(()).item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ControlError(f"control {name} must be a number, got {type(value).__name__} {value!r}")
    if dtype == "int64":
        if not isinstance(value, numbers.Integral):
            raise ControlError(f"control {name} must be an integer, got {value!r}")
        out: float | int = int(value)
    else:
        out = float(value)
        if not math.isfinite(out):
            raise ControlError(f"control {name} must be finite, got {value!r}")
        if abs(out) > _FLOAT32_MAX:
            raise ControlError(f"control {name}={out!r} does not fit float32")
    if lo is not None and out < lo:
        raise ControlError(f"control {name}={out!r} is below its minimum {lo!r}")
    if hi is not None and out > hi:
        raise ControlError(f"control {name}={out!r} is above its maximum {hi!r}")
    return out


@dataclass(frozen=True)
class Manifest:
    """A validated manifest. ``directory`` is where the graph and engine files live."""

    directory: Path
    model: ModelInfo
    graphs: dict[str, GraphInfo]
    controls: dict[str, dict[str, ControlSpec]]
    frozen: dict[str, dict[str, float | int]]
    flops: dict[str, dict]
    engines: dict[str, EngineInfo]
    raw: dict

    def graph(self, role: str) -> GraphInfo:
        """The graph entry for ``role``; ManifestError if the manifest ships none."""
        if role not in self.graphs:
            raise ManifestError(f"manifest in {self.directory} has no {role} graph")
        return self.graphs[role]

    def symbols_for_ratio(self, ratio: int) -> int:
        """S, the complex symbols per token of ratio level ``ratio``."""
        spt = self.model.symbols_per_token
        if not 0 <= ratio < len(spt):
            raise ControlError(f"control ratio={ratio} is outside [0, {len(spt)})")
        return spt[ratio]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _require(mapping: Mapping, key: str, where: str) -> Any:
    if not isinstance(mapping, Mapping) or key not in mapping:
        raise ManifestError(f"manifest: missing key {where}.{key}" if where else f"manifest: missing key {key}")
    return mapping[key]


def _model_info(raw: Any) -> ModelInfo:
    if not isinstance(raw, Mapping):
        raise ManifestError("manifest: 'model' must be an object")
    vals: dict[str, Any] = {}
    for key, typ in _MODEL_KEYS.items():
        val = _require(raw, key, "model")
        if typ is int and (isinstance(val, bool) or not isinstance(val, int)):
            raise ManifestError(f"manifest: model.{key} must be an integer, got {val!r}")
        if typ is not int and not isinstance(val, typ):
            raise ManifestError(f"manifest: model.{key} must be {typ.__name__}, got {val!r}")
        vals[key] = val
    spt = vals["symbols_per_token"]
    if not spt or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in spt):
        raise ManifestError(f"manifest: model.symbols_per_token must be a non-empty list of positive ints, got {spt!r}")
    vals["symbols_per_token"] = tuple(spt)
    if vals["task"] not in ("reconstruction", "classification"):
        raise ManifestError(f"manifest: model.task must be reconstruction or classification, got {vals['task']!r}")
    for key in ("image_size", "channels", "patch_size", "embed_dim", "heads", "mlp_dim", "mlp_groups",
                "encoder_layers", "decoder_layers"):
        if vals[key] <= 0:
            raise ManifestError(f"manifest: model.{key} must be positive, got {vals[key]}")
    if vals["image_size"] % vals["patch_size"]:
        raise ManifestError(f"manifest: model.image_size {vals['image_size']} is not a multiple of "
                            f"patch_size {vals['patch_size']}")
    expected_m = (vals["image_size"] // vals["patch_size"]) ** 2
    if vals["num_patches"] != expected_m:
        raise ManifestError(f"manifest: model.num_patches is {vals['num_patches']}, expected {expected_m} "
                            f"from image_size/patch_size")
    if vals["embed_dim"] % vals["heads"]:
        raise ManifestError(f"manifest: model.embed_dim {vals['embed_dim']} is not divisible by heads {vals['heads']}")
    if vals["mlp_dim"] % vals["mlp_groups"]:
        raise ManifestError(f"manifest: model.mlp_dim {vals['mlp_dim']} is not divisible by mlp_groups "
                            f"{vals['mlp_groups']}")
    if vals["task"] == "classification" and vals["num_classes"] <= 0:
        raise ManifestError("manifest: a classification model needs model.num_classes > 0")
    preset = raw.get("preset")
    return ModelInfo(**vals, preset=preset if isinstance(preset, str) else None)


def _control_specs(role: str, raw: Any, model: ModelInfo) -> dict[str, ControlSpec]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ManifestError(f"manifest: controls.{role} must be an object")
    specs: dict[str, ControlSpec] = {}
    for name, spec in raw.items():
        if name not in ROLE_CONTROLS[role]:
            raise ManifestError(f"manifest: controls.{role}.{name} is not a {role} control "
                                f"(allowed: {', '.join(ROLE_CONTROLS[role])})")
        if not isinstance(spec, Mapping):
            raise ManifestError(f"manifest: controls.{role}.{name} must be an object")
        dtype = spec.get("dtype", CONTROL_DTYPES[name])
        if dtype != CONTROL_DTYPES[name]:
            raise ManifestError(f"manifest: controls.{role}.{name}.dtype is {dtype!r}, the contract says "
                                f"{CONTROL_DTYPES[name]!r}")
        lo, hi = spec.get("min"), spec.get("max")
        for bound, label in ((lo, "min"), (hi, "max")):
            if bound is not None and (isinstance(bound, bool) or not isinstance(bound, (int, float))
                                      or not math.isfinite(bound)):
                raise ManifestError(f"manifest: controls.{role}.{name}.{label} must be a finite number or null, "
                                    f"got {bound!r}")
        levels_raw = spec.get("levels", []) or []
        if not isinstance(levels_raw, list):
            raise ManifestError(f"manifest: controls.{role}.{name}.levels must be a list, got {levels_raw!r}")
        if lo is not None and hi is not None and lo > hi:
            raise ManifestError(f"manifest: controls.{role}.{name} has min {lo} > max {hi}")
        try:
            default = coerce_control(name, dtype, _require(spec, "default", f"controls.{role}.{name}"), lo, hi)
            levels = tuple(coerce_control(name, dtype, v, lo, hi) for v in levels_raw)
        except ControlError as exc:
            raise ManifestError(f"manifest: controls.{role}.{name}: {exc}") from None
        specs[name] = ControlSpec(name=name, dtype=dtype, default=default, min=lo, max=hi, levels=levels)
    if "ratio" in specs:
        r = specs["ratio"]
        n = len(model.symbols_per_token)
        if (r.min is not None and r.min < 0) or (r.max is not None and r.max >= n):
            raise ManifestError(f"manifest: controls.{role}.ratio range [{r.min}, {r.max}] exceeds the "
                                f"{n} levels of model.symbols_per_token")
    if "depth" in specs:
        d = specs["depth"]
        layers = model.encoder_layers if role == "encoder" else model.decoder_layers
        if (d.min is not None and d.min < 1) or (d.max is not None and d.max > layers):
            raise ManifestError(f"manifest: controls.{role}.depth range [{d.min}, {d.max}] exceeds [1, {layers}]")
    return specs


def _frozen(role: str, raw: Any, specs: Mapping[str, ControlSpec]) -> dict[str, float | int]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ManifestError(f"manifest: frozen.{role} must be an object")
    out: dict[str, float | int] = {}
    for name, value in raw.items():
        if name not in ROLE_CONTROLS[role]:
            raise ManifestError(f"manifest: frozen.{role}.{name} is not a {role} control")
        if name in specs:
            raise ManifestError(f"manifest: {role} control {name} is both a graph input and frozen")
        try:
            out[name] = coerce_control(name, CONTROL_DTYPES[name], value)
        except ControlError as exc:
            raise ManifestError(f"manifest: frozen.{role}.{name}: {exc}") from None
    return out


def _file_entry(directory: Path, role: str, raw: Any, where: str, verify: bool) -> tuple[Path, str]:
    if not isinstance(raw, Mapping):
        raise ManifestError(f"manifest: {where}.{role} must be an object")
    name = _require(raw, "file", f"{where}.{role}")
    digest = _require(raw, "sha256", f"{where}.{role}")
    if not isinstance(name, str) or not name:
        raise ManifestError(f"manifest: {where}.{role}.file must be a file name, got {name!r}")
    if Path(name).name != name or name in (".", ".."):
        raise ManifestError(f"manifest: {where}.{role}.file must name a file in the manifest's folder, got {name!r}")
    if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
        raise ManifestError(f"manifest: {where}.{role}.sha256 is not a sha256 hex digest: {digest!r}")
    path = (directory / name).resolve()
    if not path.is_file():
        raise ManifestError(f"manifest: {where}.{role} file {path} does not exist")
    if verify:
        actual = _sha256(path)
        if actual != digest.lower():
            raise ModelMismatchError(f"{where}.{role} file {path.name} has sha256 {actual[:16]}..., "
                                     f"manifest records {digest.lower()[:16]}...")
    return path, digest.lower()


def load_manifest(path: str | Path, verify_hashes: bool = True) -> Manifest:
    """Load and validate a manifest from a directory (``<dir>/manifest.json``) or the file itself.

    Raises :class:`ManifestError` for a missing/malformed file, a wrong format tag, missing keys or bad values,
    absent graph files; :class:`ModelMismatchError` when a file's sha256 differs from the recorded one.
    """
    p = Path(path)
    file = p / MANIFEST_NAME if p.is_dir() else p
    if not file.is_file():
        raise ManifestError(f"manifest not found: {file}")
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"manifest {file} is not valid JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"manifest {file} must hold a JSON object")
    for key in _REQUIRED_TOP:
        _require(raw, key, "")
    if raw["format"] != MANIFEST_FORMAT:
        raise ManifestError(f"manifest {file} has format {raw['format']!r}, expected {MANIFEST_FORMAT!r}")
    directory = file.parent.resolve()
    model = _model_info(raw["model"])

    graphs_raw = raw["graphs"]
    if not isinstance(graphs_raw, Mapping) or not any(r in graphs_raw for r in ROLES):
        raise ManifestError("manifest: 'graphs' must hold an encoder and/or a decoder entry")
    graphs: dict[str, GraphInfo] = {}
    for role in ROLES:
        if role in graphs_raw:
            gpath, digest = _file_entry(directory, role, graphs_raw[role], "graphs", verify_hashes)
            entry = graphs_raw[role]
            graphs[role] = GraphInfo(role=role, path=gpath, sha256=digest,
                                     inputs=tuple(entry.get("inputs", []) or []),
                                     outputs=tuple(entry.get("outputs", []) or []))

    controls_raw = raw["controls"]
    frozen_raw = raw.get("frozen", {}) or {}
    if not isinstance(controls_raw, Mapping) or not isinstance(frozen_raw, Mapping):
        raise ManifestError("manifest: 'controls' and 'frozen' must be objects")
    controls = {role: _control_specs(role, controls_raw.get(role), model) for role in ROLES}
    frozen = {role: _frozen(role, frozen_raw.get(role), controls[role]) for role in ROLES}

    flops_raw = raw["flops"]
    if not isinstance(flops_raw, Mapping):
        raise ManifestError("manifest: 'flops' must be an object")
    flops: dict[str, dict] = {}
    for role in graphs:
        block = _require(flops_raw, role, "flops")
        if not isinstance(block, Mapping):
            raise ManifestError(f"manifest: flops.{role} must be an object")
        flops[role] = dict(block)

    engines: dict[str, EngineInfo] = {}
    engines_raw = raw.get("engines", {}) or {}
    if not isinstance(engines_raw, Mapping):
        raise ManifestError("manifest: 'engines' must be an object")
    for role, entry in engines_raw.items():
        if role not in ROLES:
            raise ManifestError(f"manifest: engines.{role} is not encoder or decoder")
        epath, digest = _file_entry(directory, role, entry, "engines", verify_hashes)
        vals = {}
        for key in ("gpu", "compute_capability", "tensorrt", "precision"):
            val = _require(entry, key, f"engines.{role}")
            vals[key] = str(val)
        profile = entry.get("profile", {}) or {}
        if not isinstance(profile, Mapping):
            raise ManifestError(f"manifest: engines.{role}.profile must be an object")
        # compatibility flags: top-level keys of the entry (older manifests kept them inside "profile")
        vc = entry.get("version_compatible", profile.get("version_compatible", False))
        hc = entry.get("hardware_compatibility", profile.get("hardware_compatibility", "none"))
        engines[role] = EngineInfo(role=role, path=epath, sha256=digest, profile=dict(profile),
                                   version_compatible=bool(vc), hardware_compatibility=str(hc).lower(), **vals)

    return Manifest(directory=directory, model=model, graphs=graphs, controls=controls, frozen=frozen,
                    flops=flops, engines=engines, raw=raw)


def check_graph_metadata(manifest: Manifest, role: str, metadata: Mapping[str, str]) -> None:
    """Check a graph's ONNX ``metadata_props`` against the manifest (model hash, and model id if present)."""
    got = metadata.get("edgesc.model_hash")
    if got is None:
        raise ModelMismatchError(f"{role} graph {manifest.graph(role).path.name} carries no edgesc.model_hash "
                                 f"metadata; expected {manifest.model.hash[:16]}...")
    if got != manifest.model.hash:
        raise ModelMismatchError(f"{role} graph model hash {got[:16]}... does not match the manifest's "
                                 f"{manifest.model.hash[:16]}...")
    got_id = metadata.get("edgesc.model_id")
    if got_id is not None and got_id != manifest.model.id:
        raise ModelMismatchError(f"{role} graph model id {got_id!r} does not match the manifest's "
                                 f"{manifest.model.id!r}")
