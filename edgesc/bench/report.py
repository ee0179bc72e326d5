"""Presenting a bench report: a rich table on screen, the JSON file, and a PNG of latency and FLOPs vs each
control that was swept (docs/bench.md explains every field)."""
from __future__ import annotations

from edgesc.plots import save_figure

import json
import math
from pathlib import Path
from typing import Any, Iterable

from rich.console import Console
from rich.table import Table

CONTROLS = ("budget", "depth", "width")
STAGE_LABEL = {"encoder": "encoder", "decoder": "decoder", "end_to_end": "end-to-end"}


def model_label(model: dict[str, Any]) -> str:
    """``preset (id)``, or the id alone when they agree or there is no preset."""
    preset, mid = model.get("preset"), model.get("id")
    return mid if not preset or preset == mid else f"{preset} ({mid})"


def _fmt(v: Any, spec: str = ".3g") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not math.isfinite(v):
        return "-"
    return format(v, spec) if isinstance(v, (int, float)) else str(v)


def _ctl(row: dict[str, Any], name: str) -> str:
    given = row["controls"].get(name)
    eff = row["effective_controls"]["encoder"].get(name)
    return _fmt(given if given is not None else eff, "g")


def bench_table(report: dict[str, Any]) -> Table:
    """One line per setting and stage."""
    est = report["kind"] == "estimate"
    title = (f"edgesc bench — {model_label(report['model'])} on {report['device']['kind']} "
             f"({'ESTIMATE from datasheet, not measured' if est else report['device']['name']})")
    t = Table(title=title, show_lines=False, header_style="bold")
    if est:
        t.add_column("target")
    for col in ("batch", "budget", "depth", "width", "K", "stage"):
        t.add_column(col, justify="right" if col != "stage" else "left")
    if est:
        for col in ("MFLOP/img", "pred. ms", "pred. img/s", "bound"):
            t.add_column(col, justify="right")
    else:
        for col in ("p50 ms", "p90 ms", "p99 ms", "img/s", "MFLOP/img", "GFLOP/s", "% matmul", "RSS MB"):
            t.add_column(col, justify="right")
    prev = None
    for row in report["results"]:
        key = (row.get("target"), row["batch"], tuple(sorted(row["controls"].items())))
        for stage in ("encoder", "decoder", "end_to_end"):
            s = row["stages"][stage]
            head = [row["target"]] if est else []
            first = stage == "encoder"
            head += [str(row["batch"]), _ctl(row, "budget"), _ctl(row, "depth"), _ctl(row, "width"),
                     str(row["tokens"])] if first else ["", "", "", "", ""]
            if est and not first:
                head[0] = ""
            head.append(STAGE_LABEL[stage])
            if est:
                cells = [_fmt(s["flops_per_image"] / 1e6, ".3f"), _fmt(s["predicted_latency_ms"], ".4f"),
                         _fmt(s["predicted_throughput_img_s"], ".4g"), s["bound"]]
            else:
                lat = s["latency_ms"]
                frac = s["fraction_of_reference"]
                cells = [_fmt(lat["p50"], ".3f"), _fmt(lat["p90"], ".3f"), _fmt(lat["p99"], ".3f"),
                         _fmt(s["throughput_img_s"], ".4g"), _fmt(s["flops_per_image"] / 1e6, ".3f"),
                         _fmt(None if s["flops_per_s"] is None else s["flops_per_s"] / 1e9, ".3g"),
                         _fmt(None if frac is None else 100 * frac, ".1f"), _fmt(s["peak_rss_mb"], ".0f")]
            t.add_row(*head, *cells, end_section=(stage == "end_to_end" and key != prev))
        prev = key
    return t


def reference_table(report: dict[str, Any]) -> Table | None:
    if not report.get("reference"):
        return None
    t = Table(title="reference: dense matmul of the model's largest size, same run", header_style="bold")
    for col in ("batch", "engine", "m×k×n", "median ms", "GFLOP/s"):
        t.add_column(col, justify="right")
    for r in report["reference"]:
        t.add_row(str(r["batch"]), r["engine"], "×".join(map(str, r["shape"])), _fmt(r["median_ms"], ".4f"),
                  _fmt(r["flops_per_s"] / 1e9, ".4g"))
    return t


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    con = console or Console()
    con.print(bench_table(report))
    ref = reference_table(report)
    if ref is not None:
        con.print(ref)
    if report["kind"] == "estimate":
        for t in report["targets"]:
            p = t["peak"]
            con.print(f"[yellow]estimate[/] {t['name']}: roofline from {p['source']} "
                      f"({p['flops_per_s'] / 1e12:.3g} TFLOP/s {p['precision']}, {p['bytes_per_s'] / 1e9:.4g} GB/s); "
                      "a lower bound on latency, not a measurement", highlight=False)
    ct = report.get("compare_torch")
    if ct:
        t = Table(title=f"runtime vs PyTorch eager ({ct['threads']} threads)", header_style="bold")
        for col in ("batch", "budget", "stage", "runtime p50 ms", "torch p50 ms", "speed-up"):
            t.add_column(col, justify="right")
        for r in ct["rows"]:
            for stage in ("encoder", "decoder"):
                s = r[stage]
                t.add_row(str(r["batch"]), _fmt(r["controls"].get("budget"), "g"), stage,
                          _fmt(s["runtime_p50_ms"], ".3f"), _fmt(s["torch_p50_ms"], ".3f"), _fmt(s["speedup"], ".2f"))
        con.print(t)
    cs = report.get("compare_static")
    if cs:
        t = Table(title="dynamic graph vs static graphs exported at each setting", header_style="bold")
        for col in ("batch", "budget", "depth", "width", "stage", "dynamic p50 ms", "static p50 ms", "dyn/static"):
            t.add_column(col, justify="right")
        for r in cs["rows"]:
            for stage in ("encoder", "decoder"):
                s = r[stage]
                c = r["controls"]
                t.add_row(str(r["batch"]), _fmt(c.get("budget"), "g"), _fmt(c.get("depth"), "g"),
                          _fmt(c.get("width"), "g"), stage, _fmt(s["dynamic_p50_ms"], ".3f"),
                          _fmt(s["static_p50_ms"], ".3f"), _fmt(s["ratio"], ".2f"))
        con.print(t)


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    return p


# ---- plot -----------------------------------------------------------------------------------------------------
def _effective(row: dict[str, Any], name: str) -> float | None:
    v = row["effective_controls"]["encoder"].get(name)
    return None if v is None else float(v)


def swept_controls(rows: Iterable[dict[str, Any]]) -> list[str]:
    rows = list(rows)
    return [c for c in CONTROLS if len({_effective(r, c) for r in rows}) > 1]


def plot_report(report: dict[str, Any], path: str | Path) -> Path:
    """PNG: per swept control, latency (p50, or predicted for estimates) and FLOPs per image vs the control,
    one line per stage and batch (other controls held at their first value). Batch is the x axis when no
    control was swept."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    est = report["kind"] == "estimate"
    axes_names = swept_controls(rows) or ["batch"]
    fig, axs = plt.subplots(2, len(axes_names), figsize=(5.2 * len(axes_names), 7.5), squeeze=False)
    groups = sorted({(r.get("target") or "", r["batch"]) for r in rows})
    for j, xname in enumerate(axes_names):
        others = [c for c in CONTROLS if c != xname]
        first = {c: _effective(rows[0], c) for c in others}
        sel = [r for r in rows if all(_effective(r, c) == first[c] for c in others)]
        ax_lat, ax_fl = axs[0, j], axs[1, j]
        for tgt, b in groups if xname != "batch" else sorted({(r.get("target") or "", 0) for r in rows}):
            pts = [r for r in sel if (r.get("target") or "") == tgt and (xname == "batch" or r["batch"] == b)]
            if not pts:
                continue
            xs_of = (lambda r: r["batch"]) if xname == "batch" else (lambda r: _effective(r, xname))
            pts.sort(key=xs_of)
            xs = [xs_of(r) for r in pts]
            for stage, style in (("encoder", "o-"), ("decoder", "s--"), ("end_to_end", "^:")):
                ys = [r["stages"][stage]["predicted_latency_ms" if est else "latency_ms"] for r in pts]
                ys = ys if est else [y["p50"] for y in ys]
                label = f"{STAGE_LABEL[stage]}" + (f", B={b}" if xname != "batch" else "") + (f", {tgt}" if tgt else "")
                ax_lat.plot(xs, ys, style, label=label)
            if (xname == "batch" or b == groups[0][1]) and tgt == groups[0][0]:
                for stage, style in (("encoder", "o-"), ("decoder", "s--")):
                    ax_fl.plot(xs, [r["stages"][stage]["flops_per_image"] / 1e6 for r in pts], style,
                               label=STAGE_LABEL[stage])
        ax_lat.set_xlabel(xname)
        ax_lat.set_ylabel("predicted latency, ms (roofline)" if est else "latency p50, ms")
        ax_lat.grid(alpha=0.3)
        ax_lat.legend(fontsize=7)
        ax_fl.set_xlabel(xname)
        ax_fl.set_ylabel("executed MFLOP per image")
        ax_fl.grid(alpha=0.3)
        ax_fl.legend(fontsize=7)
    kind = "ESTIMATE (datasheet roofline)" if est else f"measured on {report['device']['name']}"
    fig.suptitle(f"{model_label(report['model'])}: latency and executed FLOPs vs control — {kind}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
