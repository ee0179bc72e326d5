"""``edgesc bench --compare-static``: what does a dynamic graph cost over graphs exported for one setting?

For every distinct (budget, depth, width) of the grid the checkpoint is exported again with ALL controls frozen
at that setting's effective values (``export_model(..., dynamic=False, frozen_controls=...)``: the exporter folds
them, e.g. TopK gets a constant K) into a temporary folder, and its encoder and decoder are timed through the
same runtime with the same threads, batches, warm-up and iterations as the dynamic graph. ``ratio`` in the
report is dynamic p50 / static p50 (1.0: being dynamic costs nothing).

Slow: one export per setting (tens of seconds each on a small CPU). This imports the exporter (and torch)
lazily; it is the only part of ``edgesc bench`` besides ``--compare-torch`` that does.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from edgesc.bench import measure
from edgesc.bench.errors import BenchError, runtime_errors_as_bench_errors
from edgesc.bench.torch_compare import checkpoint_of


def compare_static(ctx: Any, grid: Sequence[Any], results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Export and time a static graph per setting; returns the ``compare_static`` block of the report."""
    from edgesc.export.onnx_export import export_model
    from edgesc_runtime import Decoder, Encoder

    o = ctx.options
    ckpt = checkpoint_of(ctx.manifest, o.checkpoint)
    rows: list[dict[str, Any]] = []
    export_seconds = 0.0
    sessions: dict[tuple, tuple[Any, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="edgesc-static-") as tmp:
        for s, res in zip(grid, results):
            eff_e = res["effective_controls"]["encoder"]
            eff_d = res["effective_controls"]["decoder"]
            key = (eff_e.get("budget"), eff_e.get("depth"), eff_e.get("width"), eff_d.get("depth"), eff_d.get("width"))
            if key not in sessions:
                takes = set(ctx.encoder.control_names) | set(ctx.decoder.control_names)
                frozen = {k: v for k, v in {**eff_d, **eff_e}.items() if k in takes and v is not None}
                if eff_d.get("depth") != eff_e.get("depth") or eff_d.get("width") != eff_e.get("width"):
                    raise BenchError("--compare-static needs the same depth and width on encoder and decoder")
                out = Path(tmp) / f"static_{len(sessions)}"
                t0 = time.perf_counter()
                result = export_model(ckpt, out, dynamic=False, frozen_controls=frozen, validate=False, targets=[])
                export_seconds += time.perf_counter() - t0
                if not (out / "manifest.json").is_file():
                    raise BenchError(f"static export for {frozen} wrote no manifest ({result.manifest_path})")
                with runtime_errors_as_bench_errors(f"static graph {frozen}"):
                    enc = Encoder(out, backend="onnxruntime", threads=o.threads)
                    dec = Decoder(enc.manifest, backend="onnxruntime", threads=o.threads)
                sessions[key] = (enc, dec)
            enc, dec = sessions[key]
            x = ctx.images[: s.batch]
            with runtime_errors_as_bench_errors(f"static graph, batch {s.batch}"):
                r = enc.encode(x, snr_db=o.snr_db)
                y = r.symbols.copy()
                kw = dict(warmup=o.warmup, iters=o.iters, seconds=o.seconds if o.iters is None else None)
                te = measure.time_calls(lambda: enc.encode(x, snr_db=o.snr_db), **kw)
                td = measure.time_calls(lambda: dec.decode(y, r.token_index, snr_db=o.snr_db), **kw)
            row: dict[str, Any] = {"batch": s.batch, "controls": dict(res["controls"])}
            for side, timing in (("encoder", te), ("decoder", td)):
                dyn = res["stages"][side]["latency_ms"]["p50"]
                st = timing.percentile_ms(50)
                row[side] = {"dynamic_p50_ms": dyn, "static_p50_ms": st, "ratio": dyn / st if st > 0 else None}
            rows.append(row)
    return {"checkpoint": str(ckpt), "export_seconds": export_seconds, "rows": rows}
