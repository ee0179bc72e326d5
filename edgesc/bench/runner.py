"""``edgesc bench``: time an exported model through ``edgesc_runtime`` over a grid of batches and controls.

For every setting (batch × budget × depth × width, at one SNR) three stages are timed, each after its own
warm-up: the **encoder** (``Encoder.encode``), the **decoder** (``Decoder.decode`` of the encoder's symbols
after a numpy AWGN channel) and **end to end** (encode → ``edgesc_runtime.channel.awgn`` → decode). Each call
is timed with :func:`time.perf_counter_ns`. Executed FLOPs per image come from the runtime's statistics
(``layer_tokens``, ``width_units``, K; docs/contract.md "Executed FLOPs"); achieved FLOP/s is
FLOPs per image × batch / median latency, and its fraction of a dense matmul of the model's size timed in the
same run (:mod:`edgesc.bench.reference`) says how close to the hardware limit the stage runs.

With ``estimate=True`` nothing is timed: the graphs run once per setting on this machine to get the executed
statistics, and the latency on the target is predicted from its datasheet (:mod:`edgesc.bench.roofline`); the
JSON says ``"kind": "estimate"``.
"""
from __future__ import annotations

import datetime as _dt
import itertools
import math
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgesc.bench import measure, reference, roofline
from edgesc.bench.device import DeviceInfo, TargetProfile, jetson_target_for, load_profile, profiles_for, \
    require_device
from edgesc.bench.errors import BenchError, runtime_errors_as_bench_errors

FORMAT = "edgesc-bench/1"
STAGES = ("encoder", "decoder", "end_to_end")
REFERENCE_SECONDS = 0.25  # per engine and batch: thousands of calls at the model's sizes


@dataclass
class BenchOptions:
    """Everything ``edgesc bench`` takes; ``None`` lists mean "the model's default"."""

    export_dir: Path
    device: str = "cpu"
    backend: str = "auto"
    batches: Sequence[int] = (1, 8)
    budgets: Sequence[float] | None = None  # None: the manifest's budget levels (or the fixed budget)
    depths: Sequence[int] | None = None  # None: the model's default depth
    widths: Sequence[float] | None = None  # None: the model's default width
    snr_db: float = 10.0
    warmup: int = 10
    iters: int | None = None
    seconds: float | None = None  # per stage and setting; 0.5 s when neither iters nor seconds is given
    threads: int | None = None
    images: np.ndarray | None = None  # [N, C, H, W] in [0, 1]; None: uniform random (seeded)
    images_source: str = "random"
    seed: int = 0
    estimate: bool = False
    target: str | None = None
    peak_gflops: float | None = None
    bandwidth_gbs: float | None = None
    compare_torch: bool = False
    checkpoint: Path | None = None
    compare_static: bool = False
    command: str = ""
    progress: Callable[[str], None] | None = None


@dataclass
class Setting:
    batch: int
    budget: float | None
    depth: int | None
    width: float | None

    def controls(self) -> dict[str, Any]:
        return {"budget": self.budget, "depth": self.depth, "width": self.width}


@dataclass
class BenchContext:
    """Sessions and inputs shared by the stages."""

    encoder: Any
    decoder: Any
    manifest: Any
    images: np.ndarray
    rng: np.random.Generator
    options: BenchOptions
    extra: dict[str, Any] = field(default_factory=dict)


# ---- helpers ------------------------------------------------------------------------------------------------
def _versions() -> dict[str, str | None]:
    import onnxruntime

    import edgesc
    import edgesc_runtime

    return {"python": platform.python_version(), "numpy": np.__version__, "onnxruntime": onnxruntime.__version__,
            "edgesc_runtime": getattr(edgesc_runtime, "__version__", None),
            "edgesc": getattr(edgesc, "__version__", None)}


def _model_json(manifest: Any) -> dict[str, Any]:
    m = manifest.model
    return {"id": m.id, "preset": m.preset, "hash": m.hash, "task": m.task, "image_size": m.image_size,
            "num_patches": m.num_patches, "embed_dim": m.embed_dim, "encoder_layers": m.encoder_layers,
            "decoder_layers": m.decoder_layers, "symbols_per_token": list(m.symbols_per_token)}


def default_grid(manifest: Any, options: BenchOptions) -> list[Setting]:
    """batch × budget × depth × width; absent lists take the model's default (budget: its levels)."""
    specs = manifest.controls["encoder"]
    if options.budgets is not None:
        budgets: list[float | None] = list(options.budgets)
    elif "budget" in specs and specs["budget"].levels:
        budgets = sorted({float(v) for v in specs["budget"].levels}, reverse=True)
    else:
        budgets = [None]
    depths: list[int | None] = list(options.depths) if options.depths is not None else [None]
    widths: list[float | None] = list(options.widths) if options.widths is not None else [None]
    for b in options.batches:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise BenchError(f"--batch values must be positive integers, got {b!r}")
    return [Setting(b, bu, d, w) for b, bu, d, w in itertools.product(options.batches, budgets, depths, widths)]


def make_images(manifest: Any, count: int, images: np.ndarray | None, seed: int) -> np.ndarray:
    """``count`` images [count, C, H, W] float32: the given ones tiled, or seeded uniform noise."""
    m = manifest.model
    shape = (m.channels, m.image_size, m.image_size)
    if images is None:
        return np.random.default_rng(seed).random((count, *shape), dtype=np.float32)
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4 or tuple(x.shape[1:]) != shape or x.shape[0] == 0:
        raise BenchError(f"bench images must have shape [N, {shape[0]}, {shape[1]}, {shape[2]}], got {list(x.shape)}")
    reps = -(-count // x.shape[0])
    return np.ascontiguousarray(np.concatenate([x] * reps)[:count])


def _mean_layers(layer_tokens: np.ndarray) -> float:
    return float((np.asarray(layer_tokens) > 0).sum(axis=1).mean())


class _Stages:
    """The three timed callables of one setting, and the statistics of one untimed run."""

    def __init__(self, ctx: BenchContext, s: Setting) -> None:
        self.ctx, self.s = ctx, s
        o = ctx.options
        self.x = ctx.images[: s.batch]
        self.enc_kw = dict(budget=s.budget, depth=s.depth, width=s.width, snr_db=o.snr_db)
        self.dec_kw = dict(depth=s.depth, width=s.width, snr_db=o.snr_db)
        with runtime_errors_as_bench_errors(f"batch {s.batch}, controls {s.controls()}"):
            self.enc_out = ctx.encoder.encode(self.x, **self.enc_kw)
            self.dec_kw["ratio"] = self.enc_out.controls.get("ratio")
            if "ratio" not in ctx.decoder.control_names:
                self.dec_kw.pop("ratio")
            self.received = self.channel(self.enc_out.symbols)
            self.dec_out = ctx.decoder.decode(self.received, self.enc_out.token_index, **self.dec_kw)

    def channel(self, symbols: np.ndarray) -> np.ndarray:
        from edgesc_runtime.channel import awgn

        return awgn(symbols, self.ctx.options.snr_db, self.ctx.rng)

    def encoder(self) -> object:
        return self.ctx.encoder.encode(self.x, **self.enc_kw)

    def decoder(self) -> object:
        return self.ctx.decoder.decode(self.received, self.enc_out.token_index, **self.dec_kw)

    def end_to_end(self) -> object:
        r = self.ctx.encoder.encode(self.x, **self.enc_kw)
        return self.ctx.decoder.decode(self.channel(r.symbols), r.token_index, **self.dec_kw)

    def flops_per_image(self) -> dict[str, float]:
        fe = float(np.mean(self.enc_out.flops))
        fd = float(np.mean(self.dec_out.flops))
        return {"encoder": fe, "decoder": fd, "end_to_end": fe + fd}

    def row_base(self) -> dict[str, Any]:
        e, d = self.enc_out, self.dec_out
        return {
            "batch": self.s.batch,
            "controls": {**self.s.controls(), "snr_db": self.ctx.options.snr_db},
            "effective_controls": {"encoder": dict(e.controls), "decoder": dict(d.controls)},
            "tokens": e.tokens,
            "symbols_per_image": e.symbols_per_image,
            "encoder_layers_executed": _mean_layers(e.layer_tokens),
            "decoder_layers_executed": _mean_layers(d.layer_tokens),
        }


# ---- measurement --------------------------------------------------------------------------------------------
def _reference_rates(ctx: BenchContext, batches: Sequence[int]) -> list[dict[str, Any]]:
    m = ctx.manifest.model
    fm = ctx.encoder.flop_model
    tokens = m.num_patches + fm.enc_specials
    out = []
    for b in sorted(set(batches)):
        shape = reference.model_matmul_shape(b, tokens, m.embed_dim, m.mlp_dim)
        providers = ctx.extra.get("providers")
        r = reference.onnxruntime_matmul_rate(shape, threads=ctx.options.threads, providers=providers,
                                              seconds=REFERENCE_SECONDS)
        out.append({"batch": b, **r.to_json()})
        out.append({"batch": b, **reference.numpy_matmul_rate(shape, seconds=REFERENCE_SECONDS).to_json()})
    return out


def _measure_setting(ctx: BenchContext, s: Setting, ref: dict[int, float]) -> dict[str, Any]:
    o = ctx.options
    st = _Stages(ctx, s)
    flops = st.flops_per_image()
    row = st.row_base()
    row["target"] = None
    stages: dict[str, Any] = {}
    for name in STAGES:
        fn = getattr(st, name)
        reset = measure.reset_peak_rss()
        with runtime_errors_as_bench_errors(f"{name}, batch {s.batch}"):
            timing = measure.time_calls(fn, warmup=o.warmup, iters=o.iters,
                                        seconds=o.seconds if o.iters is None else None)
        lat = timing.summary_ms()
        p50_s = lat["p50"] / 1e3
        achieved = flops[name] * s.batch / p50_s if p50_s > 0 else None
        peak_mb, _ = measure.peak_rss_mb()
        stages[name] = {
            "iters": timing.iters,
            "latency_ms": lat,
            "throughput_img_s": s.batch / p50_s if p50_s > 0 else None,
            "flops_per_image": flops[name],
            "flops_per_s": achieved,
            "fraction_of_reference": (achieved / ref[s.batch]) if achieved and ref.get(s.batch) else None,
            "peak_rss_mb": peak_mb,
            "peak_rss_reset": reset,
        }
    row["stages"] = stages
    return row


# ---- estimate -----------------------------------------------------------------------------------------------
def _estimate_targets(options: BenchOptions) -> list[TargetProfile]:
    if options.target:
        return [load_profile(options.target)]
    if options.device == "jetson":
        from edgesc.bench.device import jetson_model

        here = jetson_target_for(jetson_model())
        if here is not None:
            return [here]
    found = profiles_for(options.device)
    if not found:
        raise BenchError(f"no target file describes device {options.device!r}; name one with --target")
    return found


def _estimate_setting(ctx: BenchContext, s: Setting, target: TargetProfile, peak: roofline.Peak) -> dict[str, Any]:
    st = _Stages(ctx, s)
    flops = st.flops_per_image()
    row = st.row_base()
    row["target"] = target.name
    e, d = st.enc_out, st.dec_out
    S = e.symbols_per_token
    nb = {
        "encoder": roofline.stage_bytes("encoder", ctx.encoder.flop_model, K=e.tokens, S=S, layer_tokens=e.layer_tokens,
                                        width_units=e.width_units, batch=s.batch, precision=peak.precision),
        "decoder": roofline.stage_bytes("decoder", ctx.decoder.flop_model, K=e.tokens, S=S, layer_tokens=d.layer_tokens,
                                        width_units=d.width_units, batch=s.batch, precision=peak.precision),
    }
    nb["end_to_end"] = nb["encoder"] + nb["decoder"]
    stages = {}
    for name in STAGES:
        est = roofline.estimate_stage(flops[name], nb[name], s.batch, peak)
        stages[name] = {"flops_per_image": flops[name], **est}
    row["stages"] = stages
    return row


# ---- entry point --------------------------------------------------------------------------------------------
def open_sessions(export_dir: Path, backend: str, threads: int | None) -> tuple[Any, Any]:
    """Encoder and decoder sessions for ``export_dir`` (runtime errors become :class:`BenchError`)."""
    from edgesc_runtime import Decoder, Encoder

    d = Path(export_dir)
    if not d.exists():
        raise BenchError(f"export directory not found: {d}")
    with runtime_errors_as_bench_errors(str(d)):
        enc = Encoder(d, backend=backend, threads=threads)
        dec = Decoder(enc.manifest, backend=backend, threads=threads)
    return enc, dec


def check_controls(enc: Any, dec: Any, grid: Sequence[Setting], snr_db: float) -> None:
    """Validate every setting's controls against the manifest before anything is timed (the SNR on its own,
    so that a bad value is reported under the option that set it)."""
    with runtime_errors_as_bench_errors("--snr-db"):
        enc.resolve_controls(dict(snr_db=snr_db))
        dec.resolve_controls(dict(snr_db=snr_db))
    seen = set()
    for s in grid:
        key = (s.budget, s.depth, s.width)
        if key in seen:
            continue
        seen.add(key)
        with runtime_errors_as_bench_errors("--budget/--depth/--width"):
            enc.resolve_controls(dict(budget=s.budget, depth=s.depth, width=s.width, snr_db=None, ratio=None))
            dec.resolve_controls(dict(depth=s.depth, width=s.width, snr_db=None, ratio=None))


def _check_options(o: BenchOptions) -> None:
    if o.backend not in ("auto", "onnxruntime", "tensorrt"):
        raise BenchError(f"--backend must be auto, onnxruntime or tensorrt, got {o.backend!r}")
    if o.iters is not None and o.iters < 1:
        raise BenchError(f"--iters must be >= 1, got {o.iters}")
    if o.seconds is not None and not o.seconds > 0:
        raise BenchError(f"--seconds must be > 0, got {o.seconds}")
    if o.warmup < 0:
        raise BenchError(f"--warmup must be >= 0, got {o.warmup}")
    if o.threads is not None and o.threads < 1:
        raise BenchError(f"--threads must be >= 1, got {o.threads}")
    if not math.isfinite(o.snr_db):
        raise BenchError(f"--snr-db must be a finite number, got {o.snr_db}")
    for name, v in (("--peak-gflops", o.peak_gflops), ("--bandwidth-gbs", o.bandwidth_gbs)):
        if v is not None and not (math.isfinite(v) and v > 0):
            raise BenchError(f"{name} must be a positive number, got {v:g}")
    if o.device == "cpu" and o.backend == "tensorrt" and not o.estimate:
        raise BenchError("--backend tensorrt needs --device cuda or jetson")


def run_bench(options: BenchOptions) -> dict[str, Any]:
    """Run the benchmark described by ``options`` and return the JSON-ready report (see docs/bench.md)."""
    o = options
    _check_options(o)
    if o.iters is None and o.seconds is None:
        o.seconds = 0.5
    say = o.progress or (lambda _msg: None)
    if o.estimate:
        device = DeviceInfo(o.device, "(estimate: not measured)", "", os.cpu_count() or 1,
                            f"{platform.system()} {platform.machine()}")
        targets = _estimate_targets(o)
        peaks = [roofline.target_peak(t, peak_gflops=o.peak_gflops, bandwidth_gbs=o.bandwidth_gbs) for t in targets]
        # The statistics come from running the graphs here, on ONNX Runtime's CPU provider.
        backend = "onnxruntime"
    else:
        device = require_device(o.device)
        targets, peaks = [], []
        backend = o.backend
        if o.device == "cpu" and backend == "auto":
            backend = "onnxruntime"
    hwm_reset = measure.reset_peak_rss()
    enc, dec = open_sessions(o.export_dir, backend, o.threads)
    after_load_mb, rss_source = measure.peak_rss_mb()
    grid = default_grid(enc.manifest, o)
    check_controls(enc, dec, grid, o.snr_db)
    images = make_images(enc.manifest, max(s.batch for s in grid), o.images, o.seed)
    ctx = BenchContext(enc, dec, enc.manifest, images, np.random.default_rng(o.seed), o)
    if o.device != "cpu" and not o.estimate:
        ctx.extra["providers"] = ["CUDAExecutionProvider", "CPUExecutionProvider"] \
            if "onnxruntime-cuda" in device.cuda_backends else None

    report: dict[str, Any] = {
        "format": FORMAT,
        "kind": "estimate" if o.estimate else "measurement",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": o.command or " ".join(sys.argv),
        "export_dir": str(Path(o.export_dir).resolve()),
        "model": _model_json(enc.manifest),
        "device": device.to_json(),
        "backend": {"requested": o.backend, "encoder": enc.backend.name, "decoder": dec.backend.name},
        "versions": _versions(),
        "settings": {
            "batches": sorted({s.batch for s in grid}),
            "budgets": sorted({s.budget for s in grid if s.budget is not None}, reverse=True),
            "depths": sorted({s.depth for s in grid if s.depth is not None}),
            "widths": sorted({s.width for s in grid if s.width is not None}, reverse=True),
            "snr_db": o.snr_db, "channel": "awgn", "warmup": o.warmup, "iters": o.iters,
            "seconds": o.seconds if o.iters is None else None, "threads": o.threads, "seed": o.seed,
            "images": o.images_source,
        },
        "reference": [],
        "memory": {"source": rss_source, "reset_per_stage": hwm_reset, "after_load_peak_mb": after_load_mb,
                   "final_peak_mb": None},
        "targets": [{"name": t.name, "description": t.description, "peak": p.to_json()}
                    for t, p in zip(targets, peaks)],
        "results": [],
        "compare_torch": None,
        "compare_static": None,
    }
    if o.estimate:
        for t, p in zip(targets, peaks):
            for s in grid:
                say(f"estimate {t.name} batch {s.batch} {s.controls()}")
                report["results"].append(_estimate_setting(ctx, s, t, p))
    else:
        say("reference matmul")
        report["reference"] = _reference_rates(ctx, [s.batch for s in grid])
        ref = {r["batch"]: r["flops_per_s"] for r in report["reference"] if r["engine"] == "onnxruntime"}
        for s in grid:
            say(f"batch {s.batch} {s.controls()}")
            report["results"].append(_measure_setting(ctx, s, ref))
        if o.compare_torch:
            from edgesc.bench.torch_compare import compare_torch

            say("PyTorch eager")
            report["compare_torch"] = compare_torch(ctx, grid, report["results"])
        if o.compare_static:
            from edgesc.bench.static_compare import compare_static

            say("static graphs")
            report["compare_static"] = compare_static(ctx, grid, report["results"])
    report["memory"]["final_peak_mb"] = measure.peak_rss_mb()[0]
    return report
