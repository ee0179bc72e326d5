"""``edgesc bench --estimate``: predicted latency from a target's datasheet (roofline), never a measurement.

For one stage run on a batch of B images the roofline time is

    t = max(FLOPs / peak_flops, bytes / bandwidth)

with FLOPs the executed FLOPs (docs/contract.md "Executed FLOPs", from the runtime's statistics of a real run of
the graphs on this machine: they depend on the controls and the images, not on the device) and bytes the
minimum memory traffic of the executed work (:func:`stage_bytes`). ``peak_flops`` is the datasheet's dense
peak at the target's precision, ``bandwidth`` its DRAM bandwidth. The result is a lower bound on latency: it
ignores kernel-launch and framework overheads, which dominate tiny models on GPUs, and assumes perfect overlap
of compute and memory traffic.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from edgesc.bench.device import TargetProfile
from edgesc.bench.errors import BenchError

BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2, "int8": 1}


@dataclass(frozen=True)
class Peak:
    """Datasheet peak compute (FLOP/s) and memory bandwidth (byte/s) at one precision."""

    flops_per_s: float
    bytes_per_s: float
    precision: str
    source: str

    def to_json(self) -> dict[str, Any]:
        return {"flops_per_s": self.flops_per_s, "bytes_per_s": self.bytes_per_s, "precision": self.precision,
                "source": self.source}


def target_peak(target: TargetProfile, *, peak_gflops: float | None = None,
                bandwidth_gbs: float | None = None, precision: str | None = None) -> Peak:
    """Peak compute/bandwidth of ``target`` at ``precision`` (default: the target's); command-line values
    (``--peak-gflops``, ``--bandwidth-gbs``) override the datasheet. :class:`BenchError` when a number is
    missing (e.g. the host-dependent ``cpu`` target)."""
    prec = precision or target.precision
    ds = target.datasheet
    flops = peak_gflops * 1e9 if peak_gflops else None
    if flops is None:
        key = f"peak_tflops_{prec}"
        if isinstance(ds.get(key), (int, float)):
            flops = float(ds[key]) * 1e12
    bw = bandwidth_gbs * 1e9 if bandwidth_gbs else None
    if bw is None and isinstance(ds.get("memory_bandwidth_gbs"), (int, float)):
        bw = float(ds["memory_bandwidth_gbs"]) * 1e9
    if flops is None or bw is None:
        missing = [n for n, v in (("--peak-gflops", flops), ("--bandwidth-gbs", bw)) if v is None]
        raise BenchError(f"target {target.name} has no datasheet peak for {prec} "
                         f"({ds.get('source', 'no [datasheet]')}); give {' and '.join(missing)}")
    src = "command line" if (peak_gflops or bandwidth_gbs) else str(ds.get("source", target.path))
    return Peak(flops, bw, prec, src)


def _layer_weight_elems(h: int, g: int, embed_dim: int, heads: int, mlp_dim: int, mlp_groups: int,
                        halting: bool) -> int:
    """Weights one executed layer reads: Q, K, V, output projection on h heads, MLP on g groups, stop score."""
    hd = h * (embed_dim // heads)
    gd = g * (mlp_dim // mlp_groups)
    return 4 * embed_dim * hd + 2 * embed_dim * gd + (embed_dim if halting else 0)


def stage_bytes(role: str, flop_model: Any, *, K: int, S: int, layer_tokens: np.ndarray,
                width_units: np.ndarray, batch: int, precision: str) -> float:
    """Minimum DRAM traffic (bytes) of one ``role`` call on ``batch`` images.

    Weights of every layer that runs for at least one image are read once per call; per image and executed
    layer the token features are read and written once (2·T·E), the attention scores once each way
    (2·h·T²) and the MLP hidden activations once each way (2·n·g·dg); plus the graph's inputs and outputs.
    ``flop_model`` is the runtime's :class:`edgesc_runtime.flops.FlopModel` (geometry and switches)."""
    fm = flop_model
    b = BYTES_PER_ELEMENT[precision]
    E, H, D, G = fm.embed_dim, fm.heads, fm.mlp_dim, fm.mlp_groups
    M, cpp = fm.num_patches, fm.channels * fm.patch_size ** 2
    lt = np.asarray(layer_tokens, dtype=np.int64).reshape(-1, np.shape(layer_tokens)[-1])
    wu = np.asarray(width_units, dtype=np.int64)
    L = lt.shape[1]
    weights = 0
    acts = 0.0
    if role == "encoder":
        halting = fm.enc_halting
        kept = K - int(fm.class_token)
        T_l = [M + fm.enc_specials if layer < fm.enc_select_at else kept + fm.enc_specials for layer in range(L)]
        hid = fm.enc_coder_hidden
        weights += cpp * E + (2 * E if fm.enc_tokens else 0)
        weights += E * 2 * S if hid == 0 else E * hid + hid * hid + hid * 2 * S
        io = batch * (fm.channels * (fm.patch_size ** 2) * M + K * S * 2 + K)  # image in, symbols + indices out
    else:
        halting = fm.dec_halting
        T = M if fm.dec_head == "reconstruction" else K
        T_l = [T] * L
        hid = fm.dec_coder_hidden
        weights += 2 * S * E if hid == 0 else 2 * S * hid + hid * hid + hid * E
        weights += M * E * cpp if fm.dec_head == "reconstruction" else E * fm.num_classes
        out = M * cpp if fm.dec_head == "reconstruction" else fm.num_classes
        io = batch * (K * S * 2 + K + out)
    for layer in range(L):
        n = lt[:, layer]
        if not (n > 0).any():
            continue
        h, g = (int(v) for v in wu[layer])
        weights += _layer_weight_elems(h, g, E, H, D, G, halting and layer < L - 1)
        T = T_l[layer]
        active = n[n > 0]
        per_image = 2 * T * E + 2 * h * T * T + 2 * active * g * (D // G)
        acts += float(np.sum(per_image)) * (batch / lt.shape[0])
    return float(b * (weights + acts) + 4 * io)


def roofline_ms(flops: float, nbytes: float, peak: Peak) -> tuple[float, str]:
    """Roofline latency in ms and what bounds it (``compute`` or ``memory``)."""
    tc = flops / peak.flops_per_s
    tm = nbytes / peak.bytes_per_s
    return max(tc, tm) * 1e3, ("compute" if tc >= tm else "memory")


def estimate_stage(flops_per_image: float, nbytes: float, batch: int, peak: Peak) -> dict[str, Any]:
    """The ``estimate`` block of one stage: predicted latency, throughput and the bound."""
    ms, bound = roofline_ms(flops_per_image * batch, nbytes, peak)
    return {"predicted_latency_ms": ms, "predicted_throughput_img_s": batch / (ms / 1e3) if ms > 0 else None,
            "bound": bound,
            "bytes": nbytes, "arithmetic_intensity": (flops_per_image * batch) / nbytes if nbytes else None}


def stage_names() -> Sequence[str]:
    return ("encoder", "decoder", "end_to_end")
