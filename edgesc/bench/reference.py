"""The device's dense matmul rate, measured in the same run: the yardstick for "how close to the limit".

A stage's achieved FLOP/s (executed FLOPs / median latency) is divided by the rate of one dense matmul of a
size like the model's largest one (rows = batch × tokens, inner = embed dim, cols = MLP dim), timed with the
same engine and thread count. The matmul is the best case for the hardware at that size; a transformer layer
(attention, layer norms, gathers, control flow) cannot beat it, so the fraction is an efficiency in (0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgesc.bench.measure import time_calls


@dataclass(frozen=True)
class MatmulRate:
    engine: str  # "numpy" or "onnxruntime"
    shape: tuple[int, int, int]  # (m, k, n)
    flops_per_s: float  # 2·m·k·n / median time
    median_ms: float
    iters: int

    def to_json(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "shape": list(self.shape),
            "flops_per_s": self.flops_per_s,
            "median_ms": self.median_ms,
            "iters": self.iters,
        }


def _rate(engine: str, shape: tuple[int, int, int], fn: Any, warmup: int, seconds: float) -> MatmulRate:
    timing = time_calls(fn, warmup=warmup, seconds=seconds, min_iters=10)
    med = timing.percentile_ms(50)
    m, k, n = shape
    return MatmulRate(engine, shape, 2.0 * m * k * n / (med / 1e3), med, timing.iters)


def numpy_matmul_rate(shape: tuple[int, int, int], *, warmup: int = 5, seconds: float = 0.5) -> MatmulRate:
    """FLOP/s of ``numpy.matmul`` (float32) at ``shape`` = (m, k, n); numpy's BLAS picks its own threads."""
    m, k, n = shape
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    out = np.empty((m, n), dtype=np.float32)
    return _rate("numpy", shape, lambda: np.matmul(a, b, out=out), warmup, seconds)


def onnxruntime_matmul_rate(
    shape: tuple[int, int, int],
    *,
    threads: int | None,
    providers: list[str] | None = None,
    warmup: int = 5,
    seconds: float = 0.5,
) -> MatmulRate:
    """FLOP/s of one ONNX ``MatMul`` node run by an ``InferenceSession`` with ``threads`` intra-op threads.

    The weight is a graph initializer and the input a graph input, as in the exported models."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    m, k, n = shape
    rng = np.random.default_rng(0)
    w = rng.standard_normal((k, n), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "edgesc_reference_matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    sess = ort.InferenceSession(
        model.SerializeToString(), so, providers=providers or ["CPUExecutionProvider"]
    )
    x = rng.standard_normal((m, k), dtype=np.float32)
    feed = {"x": x}
    return _rate("onnxruntime", shape, lambda: sess.run(None, feed), warmup, seconds)


def model_matmul_shape(batch: int, tokens: int, embed_dim: int, mlp_dim: int) -> tuple[int, int, int]:
    """The shape of the model's largest matmul (MLP up-projection) at ``batch`` images of ``tokens`` tokens."""
    return (max(1, batch * tokens), embed_dim, mlp_dim)
