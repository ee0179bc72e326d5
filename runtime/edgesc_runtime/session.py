"""Encoder (device) and decoder (server) sessions over exported graphs (docs/contract.md, "Encoder graph",
"Decoder graph", "Controls").

``Encoder(dir).encode(images, budget=..., depth=..., width=..., snr_db=..., ratio=...)`` validates the images
and controls, runs the graph, checks that the outputs follow the contract and adds the executed FLOPs per image
(:mod:`edgesc_runtime.flops`). ``Decoder(dir).decode(symbols, token_index, ...)`` does the same on the server
side; it also takes ragged per-image lists (after an erasure channel dropped different tokens per image) and
runs them in groups of equal K.

Controls: a control the graph takes is validated against its manifest spec (default when None). A control the
graph does not take is either frozen (manifest ``frozen``: passing a different value raises ControlError) or
absent from the model; absent controls have the implicit values budget = 1, depth = L, width = 1, ratio = 0
and passing any other value raises ControlError. ``snr_db`` has no implicit value: a graph without an SNR input
accepts and ignores it (the SNR belongs to the link, not to the model).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import BackendUnavailable, ControlError, InputError, ModelMismatchError
from .flops import FlopModel
from .manifest import (CONTROL_DTYPES, GRAPH_DATA_INPUTS, ROLE_CONTROLS, Manifest, check_graph_metadata,
                       coerce_control, load_manifest)

BACKENDS = ("auto", "onnxruntime", "tensorrt")
_OUTPUTS = {"encoder": ("symbols", "token_index", "layer_tokens", "width_units"),
            "decoder": ("layer_tokens", "width_units")}
_F32, _I64, _U32 = np.dtype(np.float32), np.dtype(np.int64), np.dtype(np.uint32)
# dtype tests on the per-call path are ``dtype in _F32S`` / ``in _I64S``: identity first (ONNX Runtime returns
# int64 outputs with numpy's long-long descriptor, a distinct object equal to int64), equality as the fallback.
_F32S, _I64S = (_F32,), (np.dtype(np.longlong), _I64)
#: float32 bit patterns, read as uint32, of the values in [0, 1] are exactly 0 ... 0x3F800000 (1.0): negative
#: numbers (sign bit), NaN and inf all read larger.
_ONE_BITS = 0x3F800000
#: Resolved control settings kept per session (a caller sweeping a continuous control, e.g. a measured SNR,
#: would otherwise grow the cache without bound): cleared when full.
_CONTROL_CACHE_SIZE = 512


@dataclass
class EncodeResult:
    """Encoder outputs for a batch (contract "Encoder graph") plus executed FLOPs per image.

    symbols float32 [B, K, S, 2]; token_index int64 [B, K]; layer_tokens int64 [B, L_enc];
    width_units int64 [L_enc, 2]; flops int64 [B]; controls: the effective control values (frozen included).
    """

    symbols: np.ndarray
    token_index: np.ndarray
    layer_tokens: np.ndarray
    width_units: np.ndarray
    flops: np.ndarray
    controls: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        """K, tokens transmitted per image."""
        return int(self.symbols.shape[1])

    @property
    def symbols_per_token(self) -> int:
        """S, complex symbols per token."""
        return int(self.symbols.shape[2])

    @property
    def symbols_per_image(self) -> int:
        """K * S complex channel uses per image."""
        return self.tokens * self.symbols_per_token


@dataclass
class DecodeResult:
    """Decoder outputs: output float32 [B, C, H, W] (image) or [B, classes] (logits); layer_tokens int64
    [B, L_dec]; width_units int64 [L_dec, 2]; flops int64 [B]; controls: the effective control values."""

    output: np.ndarray
    layer_tokens: np.ndarray
    width_units: np.ndarray
    flops: np.ndarray
    controls: dict[str, Any] = field(default_factory=dict)


def _as_array(value: Any, what: str) -> np.ndarray:
    """``np.asarray`` that turns ragged nested lists and other non-arrays into an InputError."""
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{what} is not a rectangular array ({str(exc).splitlines()[0][:120]})") from None


def tensorrt_available() -> bool:
    """True when the tensorrt module and a CUDA binding import and a GPU is visible."""
    try:
        from .backends import tensorrt as trt_backend

        return trt_backend.available()
    except BackendUnavailable:
        return False


def make_backend(manifest: Manifest, role: str, backend: str = "auto", threads: int | None = None,
                 spinning: bool = False, providers: Sequence[str] | None = None):
    """Create the execution backend for ``role`` ("auto": TensorRT when an engine is recorded and usable here,
    else ONNX Runtime; an unusable engine in "auto" mode gives a warning and falls back)."""
    if backend not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend in ("auto", "tensorrt"):
        engine = manifest.engines.get(role)
        if engine is None:
            if backend == "tensorrt":
                raise BackendUnavailable(f"manifest in {manifest.directory} records no TensorRT {role} engine "
                                         f"(run `edgesc compile` on the target)")
        else:
            try:
                from .backends.tensorrt import TensorRTBackend

                return TensorRTBackend(engine)
            except (BackendUnavailable, ModelMismatchError) as exc:
                if backend == "tensorrt":
                    raise
                if not isinstance(exc, BackendUnavailable):
                    warnings.warn(f"{exc}; falling back to ONNX Runtime", RuntimeWarning, stacklevel=3)
    from .backends.ort import OnnxRuntimeBackend

    return OnnxRuntimeBackend(manifest.graph(role).path, threads=threads, spinning=spinning, providers=providers)


class _Session:
    role = ""

    def __init__(self, path: str | Path | Manifest, backend: str = "auto", threads: int | None = None, *,
                 spinning: bool = False, verify_hashes: bool = True, providers: Sequence[str] | None = None) -> None:
        self.manifest = path if isinstance(path, Manifest) else load_manifest(path, verify_hashes=verify_hashes)
        self.manifest.graph(self.role)  # ManifestError when the manifest ships no graph for this side
        self.backend = make_backend(self.manifest, self.role, backend, threads, spinning, providers)
        self.flop_model = FlopModel.from_manifest(self.manifest)
        self.control_names = tuple(n for n in ROLE_CONTROLS[self.role] if n in self.manifest.controls[self.role])
        self._check_graph()
        # Per-call constants, built once (the per-call path only compares against them).
        m = self.model
        self._L = self.layers
        self._image_shape = (m.channels, m.image_size, m.image_size)
        self._controls: dict[tuple, tuple[dict[str, np.ndarray], dict[str, Any], int]] = {}
        self._max_tokens = m.max_tokens
        self._head = self._head_name()
        self._head_shape = self._image_shape if self._head == "image" else (m.num_classes,)

    @property
    def model(self):
        """The manifest's :class:`~edgesc_runtime.manifest.ModelInfo`."""
        return self.manifest.model

    @property
    def layers(self) -> int:
        return self.model.encoder_layers if self.role == "encoder" else self.model.decoder_layers

    def _check_graph(self) -> None:
        b = self.backend
        metadata = getattr(b, "metadata", None)
        if metadata is not None:
            check_graph_metadata(self.manifest, self.role, metadata)
        expected_in = set(GRAPH_DATA_INPUTS[self.role]) | set(self.control_names)
        got_in = set(b.input_names)
        if got_in != expected_in:
            raise ModelMismatchError(f"{self.role} graph inputs {sorted(got_in)} do not match the manifest's "
                                     f"{sorted(expected_in)}")
        needed = set(_OUTPUTS[self.role]) | ({self._head_name()} if self.role == "decoder" else set())
        missing = needed - set(b.output_names)
        if missing:
            raise ModelMismatchError(f"{self.role} graph lacks outputs {sorted(missing)} (has {list(b.output_names)})")
        self._check_static_shapes()
        types = getattr(b, "input_types", None)
        if types:
            want = {"image": "float32", "symbols": "float32", "token_index": "int64", **CONTROL_DTYPES}
            for name in b.input_names:
                if types[name] != want[name]:
                    raise ModelMismatchError(f"{self.role} graph input {name} is {types[name]}, the contract "
                                             f"says {want[name]}")

    def _check_static_shapes(self) -> None:
        """The manifest's geometry (image C/H/W, layers, classes) must match the graph's static dimensions, so a
        manifest edited or paired with the wrong graphs fails at load time, not on the first batch."""
        m = self.model
        want_in = {"image": [None, m.channels, m.image_size, m.image_size], "symbols": [None, None, None, 2],
                   "token_index": [None, None]}
        L = self.layers
        want_out = {"layer_tokens": [None, L], "width_units": [L, 2]}
        if self.role == "decoder":
            want_out[self._head_name()] = ([None, m.channels, m.image_size, m.image_size]
                                           if m.task == "reconstruction" else [None, m.num_classes])
        for kind, want_all in (("input", want_in), ("output", want_out)):
            shapes = getattr(self.backend, f"{kind}_shapes", None) or {}
            for name, want in want_all.items():
                got = shapes.get(name)
                if got is None:
                    continue
                static = [d if isinstance(d, int) and not isinstance(d, bool) and d >= 0 else None for d in got]
                if len(static) != len(want) or any(w is not None and g is not None and w != g
                                                   for w, g in zip(want, static)):
                    show = ["?" if d is None else d for d in static]
                    need = ["?" if d is None else d for d in want]
                    raise ModelMismatchError(f"{self.role} graph {kind} {name} has shape {show}, the manifest's model "
                                             f"needs {need}")

    def _head_name(self) -> str:
        return "image" if self.model.task == "reconstruction" else "logits"

    def implicit(self, name: str) -> float | int | None:
        """Value a control has when the graph neither takes it nor freezes it (None for snr_db)."""
        return {"budget": 1.0, "depth": self.layers, "width": 1.0, "ratio": 0, "snr_db": None}[name]

    def resolve_controls(self, given: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Validate controls; return (graph feeds as rank-0 arrays, effective values of every control)."""
        feeds, effective, _S = self._resolve(tuple(given.get(name) for name in ROLE_CONTROLS[self.role]))
        return dict(feeds), dict(effective)

    def _resolve(self, values: tuple) -> tuple[dict[str, np.ndarray], dict[str, Any], int]:
        """(feeds, effective controls, S) for control values in ROLE_CONTROLS order. A setting that validated
        once is cached, keyed by each value's type and value (so True is not taken for 1, nor 1 for 1.0), and
        returned without re-validation; the rank-0 feed arrays are shared and read-only, callers copy the
        dicts. Values that fail, or cannot be hashed (arrays), are validated on every call."""
        key = (*map(type, values), *values)
        try:
            hit = self._controls.get(key)
        except TypeError:  # an unhashable value (e.g. an ndarray): validate without caching
            return self._validate_controls(values)
        if hit is None:
            hit = self._validate_controls(values)
            if len(self._controls) >= _CONTROL_CACHE_SIZE:
                self._controls.clear()
            self._controls[key] = hit
        return hit

    def _validate_controls(self, values: tuple) -> tuple[dict[str, np.ndarray], dict[str, Any], int]:
        specs, frozen = self.manifest.controls[self.role], self.manifest.frozen[self.role]
        feeds: dict[str, np.ndarray] = {}
        effective: dict[str, Any] = {}
        for name, value in zip(ROLE_CONTROLS[self.role], values):
            dtype = CONTROL_DTYPES[name]
            if name in specs:
                spec = specs[name]
                v = spec.validate(spec.default if value is None else value)
                feed = np.asarray(v, dtype=dtype)
                feed.flags.writeable = False
                feeds[name] = feed
                effective[name] = v
                continue
            fixed = frozen.get(name, self.implicit(name))
            if value is not None:
                v = coerce_control(name, dtype, value)
                if name == "snr_db" and fixed is None:
                    effective[name] = v
                    continue
                if abs(float(v) - float(fixed)) > 1e-6:
                    how = "frozen at" if name in frozen else "fixed (no such control in this model) at"
                    raise ControlError(f"{self.role} control {name} is {how} {fixed!r}; got {v!r}")
            effective[name] = fixed
        S = self.manifest.symbols_for_ratio(int(effective["ratio"]))
        return feeds, effective, S

    def _expect(self, name: str, arr: np.ndarray, shape: Sequence[int | None], dtype: str) -> np.ndarray:
        shape_ok = arr.ndim == len(shape) and all(s is None or s == a for s, a in zip(shape, arr.shape))
        if not shape_ok or arr.dtype != np.dtype(dtype):
            want = "[" + ", ".join("?" if s is None else str(s) for s in shape) + "]"
            raise ModelMismatchError(f"{self.role} graph returned {name} {arr.dtype}{list(arr.shape)}, the "
                                     f"contract expects {dtype}{want}")
        return arr


class Encoder(_Session):
    """Device side: image -> symbols, token indices, statistics (docs/contract.md, "Encoder graph").

    ``Encoder(dir, backend="auto"|"onnxruntime"|"tensorrt", threads=None)``; ``dir`` holds manifest.json.
    """

    role = "encoder"

    def validate_images(self, images: Any) -> np.ndarray:
        """Float images in [0, 1], shape [B, C, H, W] or one [C, H, W] -> contiguous float32 [B, C, H, W]."""
        if type(images) is np.ndarray and images.dtype in _F32S:
            # The usual call, a contiguous float32 batch, accepted with the fewest numpy calls: each costs
            # microseconds on the CPU caches a graph run leaves behind. Anything else takes the full path below.
            shape = images.shape
            if shape[1:] == self._image_shape and shape[0] and images.flags.c_contiguous:
                bits = images.view(_U32)
                if bits.item(bits.argmax()) <= _ONE_BITS:
                    return images
        x = images if isinstance(images, np.ndarray) else _as_array(images, "images")
        if x.dtype.kind != "f":
            raise InputError(f"images must be floating point in [0, 1], got dtype {x.dtype}"
                             + (" (divide uint8 images by 255)" if x.dtype == np.uint8 else ""))
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1:] != self._image_shape:
            want = self._image_shape
            raise InputError(f"images must have shape [B, {want[0]}, {want[1]}, {want[2]}] (NCHW) or "
                             f"[{want[0]}, {want[1]}, {want[2]}], got {list(np.shape(images))}")
        if x.shape[0] == 0:
            raise InputError("images: empty batch")
        x = np.ascontiguousarray(x, dtype=np.float32)
        # float32 bit patterns read as uint32: one pass (argmax, a lighter code path than a ufunc reduction)
        # accepts a batch in [0, 1]; one it rejects (values outside [0, 1], NaN, inf, or a -0.0, which lies in
        # range) gets the exact float checks that name the problem.
        bits = x.view(_U32)
        if bits.item(bits.argmax()) > _ONE_BITS:
            lo, hi = np.minimum.reduce(x, axis=None), np.maximum.reduce(x, axis=None)
            if not (lo >= 0.0 and hi <= 1.0):
                if not np.isfinite(x).all():
                    raise InputError("images contain NaN or infinite values")
                raise InputError(f"image values must lie in [0, 1], got [{float(lo):.4g}, {float(hi):.4g}]")
        return x

    def encode(self, images: Any, budget: float | None = None, depth: int | None = None,
               width: float | None = None, snr_db: float | None = None, ratio: int | None = None) -> EncodeResult:
        """Encode a batch; None controls take the manifest default (or their frozen/implicit value)."""
        x = self.validate_images(images)
        try:  # the control cache of _resolve, looked up inline (the common call costs one dict lookup)
            hit = self._controls.get((type(budget), type(depth), type(width), type(snr_db), type(ratio),
                                      budget, depth, width, snr_db, ratio))
        except TypeError:
            hit = None
        feeds, eff, S = hit or self._resolve((budget, depth, width, snr_db, ratio))
        out = self.backend.run({"image": x, **feeds})
        B, L = x.shape[0], self._L
        sym, idx, lt, wu = out["symbols"], out["token_index"], out["layer_tokens"], out["width_units"]
        # the contract's shapes and dtypes, compared inline; _expect builds the error message
        if not (type(sym) is np.ndarray and sym.dtype in _F32S and sym.ndim == 4 and sym.shape[0] == B
                and sym.shape[2] == S and sym.shape[3] == 2):
            sym = self._expect("symbols", np.asarray(sym), (B, None, S, 2), "float32")
        K = sym.shape[1]
        if K > self._max_tokens:
            raise ModelMismatchError(f"encoder graph returned K={K} tokens, more than the model's "
                                     f"{self.model.max_tokens}")
        if not (type(idx) is np.ndarray and idx.dtype in _I64S and idx.shape == (B, K)):
            idx = self._expect("token_index", np.asarray(idx), (B, K), "int64")
        if not (type(lt) is np.ndarray and lt.dtype in _I64S and lt.shape == (B, L)):
            lt = self._expect("layer_tokens", np.asarray(lt), (B, L), "int64")
        if not (type(wu) is np.ndarray and wu.dtype in _I64S and wu.shape == (L, 2)):
            wu = self._expect("width_units", np.asarray(wu), (L, 2), "int64")
        flops = self.flop_model._per_call("encoder", K, S, lt, wu)
        return EncodeResult(symbols=sym, token_index=idx, layer_tokens=lt, width_units=wu, flops=flops,
                            controls=dict(eff))


class Decoder(_Session):
    """Server side: received symbols + token indices -> image or logits (docs/contract.md, "Decoder graph").

    ``Decoder(dir, backend="auto"|"onnxruntime"|"tensorrt", threads=None)``.
    """

    role = "decoder"

    def validate_tokens(self, symbols: Any, token_index: Any, S: int) -> tuple[np.ndarray, np.ndarray]:
        """One batch with a common K: float [B, K, S, 2] + int [B, K] (or one image [K, S, 2] + [K])."""
        m = self.model
        sym = symbols if isinstance(symbols, np.ndarray) else _as_array(symbols, "symbols")
        idx = token_index if isinstance(token_index, np.ndarray) else _as_array(token_index, "token_index")
        if sym.ndim == 3:
            sym, idx = sym[None], idx[None] if idx.ndim == 1 else idx
        if sym.dtype.kind != "f":
            raise InputError(f"symbols must be floating point, got dtype {sym.dtype}")
        if sym.ndim != 4 or sym.shape[2:] != (S, 2):
            raise InputError(f"symbols must have shape [B, K, {S}, 2] for this ratio (S={S}), got {list(sym.shape)}")
        B, K = sym.shape[:2]
        if B == 0:
            raise InputError("symbols: empty batch")
        if K > m.max_tokens:
            raise InputError(f"symbols carry K={K} tokens, the model has at most {m.max_tokens}")
        if idx.dtype.kind not in "iu":
            raise InputError(f"token_index must be an integer array, got dtype {idx.dtype}")
        if idx.shape != (B, K):
            raise InputError(f"token_index must have shape [{B}, {K}] to match symbols, got {list(idx.shape)}")
        if type(sym) is not np.ndarray or sym.dtype not in _F32S or not sym.flags.c_contiguous:
            sym = np.ascontiguousarray(sym, dtype=np.float32)
        # a sum is finite iff every term is, unless finite terms overflow it: only then (or for a bad batch)
        # the element-wise pass runs, to decide and name the problem.
        if sym.size and not math.isfinite(np.add.reduce(sym, axis=None)) and not np.isfinite(sym).all():
            raise InputError("symbols contain NaN or infinite values (or values beyond float32)")
        if idx.size:
            hi = m.max_tokens
            lo_i, hi_i = np.minimum.reduce(idx, axis=None), np.maximum.reduce(idx, axis=None)
            if lo_i < 0 or hi_i >= hi:  # before the int64 cast: uint64 would wrap
                raise InputError(f"token_index values must lie in [0, {hi}), got [{lo_i}, {hi_i}]")
        if type(idx) is not np.ndarray or idx.dtype not in _I64S or not idx.flags.c_contiguous:
            idx = np.ascontiguousarray(idx, dtype=np.int64)
        if K > 1:
            srt = np.sort(idx, axis=1)
            same = srt[:, 1:] == srt[:, :-1]
            if same.any():
                dup = np.nonzero(same.any(axis=1))[0]
                raise InputError(f"token_index of image {int(dup[0])} has duplicate indices")
        return sym, idx

    def decode(self, symbols: Any, token_index: Any, depth: int | None = None, width: float | None = None,
               snr_db: float | None = None, ratio: int | None = None) -> DecodeResult:
        """Decode a batch. ``symbols``/``token_index``: arrays [B, K, S, 2] / [B, K], one image [K, S, 2] / [K],
        or equal-length lists of per-image arrays with different K (after erasures); lists run in groups of
        equal K and come back in input order."""
        feeds, eff, S = self._resolve((depth, width, snr_db, ratio))
        if not isinstance(symbols, (list, tuple)):
            sym, idx = self.validate_tokens(symbols, token_index, S)
            out, lt, wu = self._run(sym, idx, feeds)
            return DecodeResult(output=out, layer_tokens=lt, width_units=wu,
                                flops=self.flop_model._per_call("decoder", sym.shape[1], S, lt, wu),
                                controls=dict(eff))
        if not isinstance(token_index, (list, tuple)) or len(token_index) != len(symbols):
            raise InputError("ragged symbols need a list of token_index arrays of the same length")
        if not symbols:
            raise InputError("symbols: empty batch")
        items = [self.validate_tokens(_as_array(s, f"symbols[{n}]")[None], _as_array(i, f"token_index[{n}]")[None], S)
                 for n, (s, i) in enumerate(zip(symbols, token_index))]
        groups: dict[int, list[int]] = {}
        for n, (s, _) in enumerate(items):
            groups.setdefault(s.shape[1], []).append(n)
        batches = [(order, np.concatenate([items[n][0] for n in order]),
                    np.concatenate([items[n][1] for n in order])) for order in groups.values()]
        total = len(items)
        outputs: list[np.ndarray | None] = [None] * total
        lts: list[np.ndarray | None] = [None] * total
        flops = np.zeros(total, dtype=np.int64)
        width_units: np.ndarray | None = None
        for order, sym, idx in batches:
            out, lt, wu = self._run(sym, idx, feeds)
            f = self.flop_model._per_call("decoder", sym.shape[1], S, lt, wu)
            width_units = wu if width_units is None else width_units
            for j, n in enumerate(order):
                outputs[n], lts[n], flops[n] = out[j], lt[j], f[j]
        return DecodeResult(output=np.stack(outputs), layer_tokens=np.stack(lts), width_units=width_units,
                            flops=flops, controls=dict(eff))

    def _run(self, sym: np.ndarray, idx: np.ndarray, feeds: dict[str, np.ndarray]):
        out = self.backend.run({"symbols": sym, "token_index": idx, **feeds})
        B, L = sym.shape[0], self._L
        head = self._head
        y, lt, wu = out[head], out["layer_tokens"], out["width_units"]
        if not (type(y) is np.ndarray and y.dtype in _F32S and y.shape[1:] == self._head_shape and y.shape[0] == B):
            y = self._expect(head, np.asarray(y), (B, *self._head_shape), "float32")
        if not (type(lt) is np.ndarray and lt.dtype in _I64S and lt.shape == (B, L)):
            lt = self._expect("layer_tokens", np.asarray(lt), (B, L), "int64")
        if not (type(wu) is np.ndarray and wu.dtype in _I64S and wu.shape == (L, 2)):
            wu = self._expect("width_units", np.asarray(wu), (L, 2), "int64")
        return y, lt, wu
