"""ONNX Runtime backend.

Session settings (measured on this project's CPU machine, see docs/runtime.md): sequential execution, all graph
optimisations, a configurable intra-op thread count, and intra-op thread spinning OFF by default -- with spinning
on, an encoder and a decoder session that alternate in one process keep each other's threads busy-waiting, which
a previous attempt measured to double the encode-to-decode time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import BackendUnavailable, InputError, ModelMismatchError

#: ONNX Runtime type strings of the contract's tensors.
ORT_DTYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(float16)": "float16"}


def session_options(threads: int | None = None, spinning: bool = False, optimize: bool = True):
    """ONNX Runtime SessionOptions with the runtime's defaults (see module docstring)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise BackendUnavailable(f"threads must be a non-negative int (0 = ONNX Runtime default), got {threads!r}")
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
    opts.log_severity_level = 4  # failures surface as exceptions
    return opts


class OnnxRuntimeBackend:
    """Runs one ONNX graph with ONNX Runtime."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None, spinning: bool = False,
                 providers: Sequence[str] | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self._threads, self._spinning = threads, spinning
        self._providers = list(providers) if providers else ["CPUExecutionProvider"]
        self._plain: object | None = None  # unoptimised session, built on demand for zero-size batches
        options = session_options(threads, spinning)  # BackendUnavailable for a bad thread count
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=self._providers)
        except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelMismatchError(f"ONNX Runtime cannot load {self.path.name}: {msg[:300]}") from None
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        self._output_list = list(self.output_names)  # built once: run() passes it on every call
        self.input_types = {i.name: ORT_DTYPES.get(i.type, i.type) for i in self.session.get_inputs()}
        self.output_types = {o.name: ORT_DTYPES.get(o.type, o.type) for o in self.session.get_outputs()}
        self.input_shapes = {i.name: list(i.shape) for i in self.session.get_inputs()}
        self.output_shapes = {o.name: list(o.shape) for o in self.session.get_outputs()}
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the session; returns every output keyed by name."""
        try:
            outs = self.session.run(self._output_list, feeds)
        except Exception as exc:  # a graph that fails on inputs the runtime already validated
            if any(0 in np.shape(v) for v in feeds.values()):
                # ONNX Runtime 1.32's graph optimisations (even BASIC) rewrite Reshape targets to use -1,
                # which cannot be resolved for a zero-size tensor (K = 0 after erasing every token). The
                # unoptimised graph runs; use it for such batches only.
                return self._run_plain(feeds)
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"ONNX Runtime failed running {self.path.name}: {msg[:300]}") from None
        return dict(zip(self.output_names, outs))

    def _run_plain(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import onnxruntime as ort

        if self._plain is None:
            self._plain = ort.InferenceSession(str(self.path), providers=self._providers,
                                               sess_options=session_options(self._threads, self._spinning, False))
        try:
            outs = self._plain.run(list(self.output_names), feeds)
        except Exception as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"ONNX Runtime failed running {self.path.name}: {msg[:300]}") from None
        return dict(zip(self.output_names, outs))
