"""Export benchmark: does the dynamic graph cost what a static graph of the same setting costs, and does the
cost really fall with the budget? ONNX Runtime CPU, encoder (device) graph.

For each control setting, the *dynamic* encoder (controls as inputs) and a *static* encoder exported with that
setting frozen in (budget → constant TopK K) are timed at batch 1 and 8 with interleaved runs (dynamic, static,
dynamic, ...; ``--rounds`` rounds of ``--iters`` calls each, single-threaded sessions) and compared by medians.

Grid (one control varied at a time around the default, since every setting needs its own static export):
``--grid subset`` (default) = budget ∈ {1, .5, .25, .125} at full depth and width, depth ∈ {1, L/2} and width ∈
{0.5, minimum} at budget 1; ``--grid full`` = every depth and width level. Targets (checked and written with the
results):
- dynamic ≤ 1.10× static at every measured point;
- the 64-token preset's encoder at budget 0.25 ≤ 0.40× its budget-1 latency;
- exported weight bytes ≤ 1.05× parameter bytes (encoder graph vs the encoder's parameters; the whole-model
  figure of every tiny preset is checked in tests/test_export_families.py).

The model is the ``unified`` preset (64 tokens) with random initial weights: latency does not depend on training,
but halting does. At initialisation the stop-score bias is −3 (h ≈ 0.05 per layer), so no token halts before
the cap: the depth control alone sets depth (checked from ``layer_tokens`` and recorded).

    .venv/bin/python benchmarks/export_bench.py            # → benchmarks/results/export_bench.{json,png}
    .venv/bin/python benchmarks/export_bench.py --quick    # budget sweep only, fewer runs (smoke test)
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgesc.config import load_preset  # noqa: E402
from edgesc.export.controls import all_specs  # noqa: E402
from edgesc.export.onnx_export import export_encoder, param_bytes, weight_bytes  # noqa: E402
from edgesc.models import build_model  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _time(sess: ort.InferenceSession, feeds: dict[str, np.ndarray], iters: int) -> float:
    t = time.perf_counter()
    for _ in range(iters):
        sess.run(None, feeds)
    return (time.perf_counter() - t) / iters * 1e3  # ms per call


def settings_grid(cfg, mode: str) -> list[dict[str, Any]]:
    """``budget``: budget levels only; ``subset``: + the shallowest and half depth, + width 0.5 and the minimum
    width; ``full``: + every depth level and every width level. One static export per setting."""
    specs = all_specs(cfg)["encoder"]
    default = {k: s["default"] for k, s in specs.items()}
    grid = [{**default, "budget": b} for b in specs["budget"]["levels"]]
    if mode == "budget":
        return grid
    depths = [d for d in specs["depth"]["levels"] if d != default["depth"]]
    widths = [w for w in specs["width"]["levels"] if w != default["width"]]
    if mode == "subset":
        depths = sorted({depths[0], default["depth"] // 2} & set(depths))
        widths = sorted({0.5, min(widths)} & set(widths), reverse=True)
    grid += [{**default, "depth": d} for d in depths]
    grid += [{**default, "width": w} for w in widths]
    return grid


def _cached(path: Path | None, make) -> onnx.ModelProto:  # noqa: ANN001
    if path is not None and path.is_file():
        return onnx.load(str(path))
    proto = make()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(proto, str(path))
    return proto


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="unified")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="budget levels only, 3 rounds of 3 calls")
    ap.add_argument("--grid", choices=("budget", "subset", "full"), default="subset",
                    help="settings measured (each needs one static export; 'full' = every level)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="keep exported graphs here and reuse them (keyed by preset, seed and setting only: "
                         "empty it after any change to edgesc/models or edgesc/export)")
    ap.add_argument("--out", type=Path, default=RESULTS / "export_bench.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.iters = min(args.rounds, 3), min(args.iters, 3)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = load_preset(args.preset)
    model = build_model(cfg).eval()
    specs = all_specs(cfg)["encoder"]
    t0 = time.time()

    def cache_path(tag: str) -> Path | None:
        return None if args.cache is None else args.cache / f"{args.preset}-seed0-{tag}.onnx"

    print(f"[{args.preset}] dynamic encoder ...", flush=True)
    enc_dyn = _cached(cache_path("dynamic"), lambda: export_encoder(cfg, model, {}, 20, "dynamic")[0])
    dyn_names = [i.name for i in enc_dyn.graph.input][1:]
    pbytes = param_bytes(model.encoder)
    wbytes = weight_bytes(enc_dyn)
    dyn_sess = _session(enc_dyn)
    grid = settings_grid(cfg, "budget" if args.quick else args.grid)
    static_sess = []
    for i, setting in enumerate(grid):  # phase 1: one static export per setting
        tag = "static-" + "-".join(f"{k}{setting[k]}" for k in sorted(setting))
        print(f"[{i + 1}/{len(grid)}] static encoder at {setting} ...", flush=True)
        static_sess.append(_session(_cached(cache_path(tag), lambda s=setting: export_encoder(cfg, model, dict(s), 20,
                                                                                              "dynamic")[0])))
    # phase 2: every (setting, graph) timed round-robin in the same time window, so that load changes on this
    # shared machine hit all of them alike; per-point statistic = median over rounds
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    for b in (1, 8):
        image = rng.random((b, cfg.channels, cfg.image_size, cfg.image_size), dtype=np.float32)
        feeds = []
        for setting, st in zip(grid, static_sess):
            dfeeds = {"image": image, **{k: np.array(setting[k], dtype=np.int64 if specs[k]["dtype"] == "int64"
                                                       else np.float32) for k in dyn_names}}
            out_d, out_s = dyn_sess.run(None, dfeeds), st.run(None, {"image": image})  # warm-up + agreement
            same = bool(np.array_equal(out_d[1], out_s[1]) and np.allclose(out_d[0], out_s[0], atol=1e-4))
            feeds.append((dfeeds, {"image": image}, same, out_d))
        td: list[list[float]] = [[] for _ in grid]
        ts: list[list[float]] = [[] for _ in grid]
        for _ in range(args.rounds):
            for j, st in enumerate(static_sess):
                td[j].append(_time(dyn_sess, feeds[j][0], args.iters))
                ts[j].append(_time(st, feeds[j][1], args.iters))
        for j, setting in enumerate(grid):
            md, ms = statistics.median(td[j]), statistics.median(ts[j])
            out_d = feeds[j][3]
            rows.append({"setting": setting, "batch": b, "dynamic_ms": md, "static_ms": ms, "ratio": md / ms,
                         "dynamic_runs_ms": td[j], "static_runs_ms": ts[j], "outputs_agree": feeds[j][2],
                         "tokens_kept": int(out_d[1].shape[1]),
                         "layers_run": out_d[2].astype(bool).sum(axis=1).tolist()})
            print(f"    batch {b} {setting}: dynamic {md:.2f} ms, static {ms:.2f} ms, ratio {md / ms:.3f}, "
                  f"agree {feeds[j][2]}", flush=True)

    def lat(budget: float, b: int, key: str = "dynamic_ms") -> float | None:
        for r in rows:
            s = r["setting"]
            if r["batch"] == b and s["budget"] == budget and s.get("depth") == specs["depth"]["default"] \
                    and s.get("width") == specs["width"]["default"]:
                return r[key]
        return None

    budget_ratio = {b: (lat(0.25, b) / lat(1.0, b)) if lat(0.25, b) and lat(1.0, b) else None for b in (1, 8)}
    static_ratio = {b: (lat(0.25, b, "static_ms") / lat(1.0, b, "static_ms")) if lat(1.0, b, "static_ms") else None
                    for b in (1, 8)}
    flops = _flop_ratio(model, cfg)
    worst = max(r["ratio"] for r in rows)
    targets = {
        "dynamic_vs_static": {"target": "<= 1.10", "worst": worst,
                              "by_batch": {b: max(r["ratio"] for r in rows if r["batch"] == b) for b in (1, 8)},
                              "met": worst <= 1.10},
        "budget_0.25_vs_1": {"target": "<= 0.40", "batch1": budget_ratio[1], "batch8": budget_ratio[8],
                             "static_batch1": static_ratio[1], "static_batch8": static_ratio[8],
                             "flop_ratio": flops,
                             "met": all(v is not None and v <= 0.40 for v in budget_ratio.values())},
        "weight_bytes_vs_parameters": {"target": "<= 1.05", "scope": "encoder graph vs encoder parameters",
                                       "parameter_bytes": pbytes, "graph_bytes": wbytes, "ratio": wbytes / pbytes,
                                       "met": wbytes / pbytes <= 1.05},
    }
    result = {
        "benchmark": "export_bench", "preset": args.preset, "model": "random initial weights (seed 0)",
        "graph": "encoder (device)", "runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider, 1 thread",
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "note": "2 CPU cores shared with other jobs: absolute times are noisy, ratios less so"},
        "method": {"rounds": args.rounds, "iters_per_round": args.iters,
                   "interleaved": "all settings and both graphs round-robin per round (per batch size)",
                   "statistic": "median over rounds",
                   "grid": ("budget" if args.quick else args.grid) + ": one control varied at a time around the "
                           "default; 'subset' = every budget level, depth 1 and L/2, width 0.5 and the minimum "
                           "(a static export per setting takes minutes on this shared machine; --grid full "
                           "measures every depth and width level)",
                   "halting": "untrained stop scores (bias -3) never halt before the cap: depth = the depth control"},
        "targets": targets, "rows": rows, "seconds": time.time() - t0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    _plot(result, args.out.with_suffix(".png"), specs)
    _print_table(result)
    return 0


def _flop_ratio(model, cfg) -> float:  # noqa: ANN001
    """Executed matmul FLOPs of the PyTorch encoder at budget 0.25 over budget 1 (torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    enc = model.encoder.inference().eval()
    x = torch.rand(1, cfg.channels, cfg.image_size, cfg.image_size)
    out = {}
    for b in (1.0, 0.25):
        fc = FlopCounterMode(display=False)
        with torch.no_grad(), fc:
            enc(x, budget=torch.tensor(b))
        out[b] = fc.get_total_flops()
    return out[0.25] / out[1.0]


def _plot(result: dict[str, Any], path: Path, specs: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    controls = [c for c in ("budget", "depth", "width") if c in specs]
    fig, axes = plt.subplots(1, len(controls), figsize=(4.2 * len(controls), 3.4), squeeze=False)
    default = {k: s["default"] for k, s in specs.items()}
    for ax, c in zip(axes[0], controls):
        for b, style in ((1, "-"), (8, "--")):
            pts = sorted((r["setting"][c], r["dynamic_ms"], r["static_ms"]) for r in result["rows"]
                         if r["batch"] == b and all(r["setting"][k] == default[k] for k in controls if k != c))
            if not pts:
                continue
            x = [p[0] for p in pts]
            ax.plot(x, [p[1] for p in pts], "o" + style, label=f"dynamic, batch {b}")
            ax.plot(x, [p[2] for p in pts], "s" + style, label=f"static, batch {b}", alpha=0.7)
        ax.set_xlabel(c)
        ax.set_ylabel("encoder latency (ms, median)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{result['preset']} encoder, ONNX Runtime CPU: dynamic vs static graphs", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _print_table(result: dict[str, Any]) -> None:
    print(f"\n{'setting':<52} {'B':>2} {'dynamic':>9} {'static':>9} {'ratio':>6}")
    for r in result["rows"]:
        s = ", ".join(f"{k}={v}" for k, v in r["setting"].items() if k in ("budget", "depth", "width"))
        print(f"{s:<52} {r['batch']:>2} {r['dynamic_ms']:>8.2f}  {r['static_ms']:>8.2f}  {r['ratio']:>5.2f}")
    for name, t in result["targets"].items():
        print(f"target {name}: {'MET' if t['met'] else 'NOT MET'} {json.dumps({k: v for k, v in t.items() if k != 'met'})}")


if __name__ == "__main__":
    sys.exit(main())
