"""``edgesc quickstart``: train → export (dynamic budget) → validate → bench on CPU → ``OUT/report/``.

The one orchestrator above the layers (it calls :mod:`edgesc.train` and :mod:`edgesc.export`, then measures the
result only through ``edgesc_runtime``):

1. **train** the ``quickstart`` preset on the embedded ``photos32`` crops (``OUT/train/``);
2. **export** encoder and decoder with every control of the preset as a graph input, the budget included
   (``--budget-dynamic``), validated against PyTorch and audited for TensorRT by the exporter (``OUT/export/``);
3. **validate** through the runtime: both sessions load with hash checks, and an encode → AWGN → decode round
   trip of the test images reproduces the PyTorch inference form's PSNR at every budget;
4. **bench** on the CPU (:func:`edgesc.bench.run_bench`, batch 1 and 8 over the budget levels);
5. **quality vs SNR** of the deployed graphs (runtime + numpy channel) on the held-out test photos, per budget
   and ratio level: mean per-image PSNR and SSIM (``edgesc.metrics``);
6. **kept-token maps**: which patches the encoder transmits at each budget, on a few test images.

``OUT/report/`` holds ``report.json`` (every number above and the wall time of each step), ``bench.json``,
``quality.png``, ``bench.png`` and ``tokens.png``.
"""
from __future__ import annotations

import datetime as _dt
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgesc.bench.errors import BenchError, runtime_errors_as_bench_errors

FORMAT = "edgesc-quickstart/1"


class QuickstartFailed(BenchError):
    """A step of the quickstart failed (training diverged, validation failed): the job, not the input."""


@dataclass
class QuickstartOptions:
    out: Path = Path("runs/quickstart")
    steps: int | None = None
    preset: str = "quickstart"
    threads: int | None = None
    bench_seconds: float = 0.3
    bench_batches: Sequence[int] = (1, 8)
    seed: int = 0
    snrs: Sequence[float] = (0.0, 5.0, 10.0, 15.0, 20.0)
    quality_images: int = 64
    map_images: int = 4
    validation_settings: int = 20
    progress: bool = False
    log: Callable[[str], None] = field(default=lambda _m: None)


@dataclass
class QuickstartResult:
    report: dict[str, Any]
    report_dir: Path


# ---- steps ----------------------------------------------------------------------------------------------------
def _train(o: QuickstartOptions) -> tuple[Path, dict[str, Any]]:
    from edgesc.train.options import TrainOptions
    from edgesc.train.trainer import run_training

    res = run_training(TrainOptions(model=o.preset, out=o.out / "train", steps=o.steps, seed=o.seed, device="cpu",
                                    progress=o.progress, log_every=max(1, (o.steps or 100) // 10)))
    if res.checkpoint is None:
        raise QuickstartFailed(f"training stopped before its last step (see {o.out / 'train'})")
    last = res.stages[-1]
    metrics = {k: v for k, v in (last.metrics or {}).items() if isinstance(v, (int, float))}
    info = {"checkpoint": str(Path(res.checkpoint).resolve()), "steps": last.step, "metrics": metrics,
            "seconds_per_step": last.seconds_per_step}
    return Path(res.checkpoint).resolve(), info


def _export(o: QuickstartOptions, ckpt: Path) -> tuple[Path, dict[str, Any]]:
    from edgesc.export.onnx_export import export_model

    res = export_model(ckpt, o.out / "export", dynamic=True, validation_settings=o.validation_settings)
    val = res.validation or {}
    if not res.valid:
        raise QuickstartFailed(f"the exported graphs do not match PyTorch: {val.get('summary', 'validation failed')} "
                               f"(see {res.out_dir / 'manifest.invalid.json'})")
    info = {"dir": str(Path(res.out_dir).resolve()), "sizes_bytes": dict(res.sizes), "validation_ok": bool(val.get("ok")),
            "validation_summary": val.get("summary"), "audit_ok": res.audit_ok,
            "controls": {side: sorted(c) for side, c in res.manifest["controls"].items()}}
    return Path(res.out_dir).resolve(), info


def _test_images(cfg: Any, count: int) -> np.ndarray:
    from edgesc.data import load_dataset

    ds = load_dataset(cfg.train.data, split="test", image_size=cfg.image_size)
    n = min(count, len(ds))
    if n == 0:
        raise QuickstartFailed(f"the {cfg.train.data} test split is empty")
    step = max(1, len(ds) // n)  # spread over the held-out photos, not the first crops of one
    return np.stack([np.asarray(ds[i * step][0], dtype=np.float32) for i in range(n)])


def _metrics(out: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image PSNR (``edgesc.metrics.psnr``) and Gaussian SSIM with ``edgesc.metrics``' parameters and border
    convention, computed by scikit-image in float32 (``edgesc.metrics.ssim`` runs in float64, ~2 s per 64 images
    on this machine; its tests check it against the same scikit-image function)."""
    import torch
    from skimage.metrics import structural_similarity

    from edgesc import metrics

    out = np.clip(out, 0.0, 1.0).astype(np.float32)
    p = metrics.psnr(torch.from_numpy(out), torch.from_numpy(ref)).numpy()
    s = np.array([structural_similarity(ref[i], out[i], channel_axis=0, data_range=1.0, gaussian_weights=True,
                                        sigma=metrics.SSIM_SIGMA, win_size=metrics.SSIM_WINDOW,
                                        use_sample_covariance=False) for i in range(out.shape[0])])
    return p, s.astype(np.float32)


def _levels(manifest: Any, name: str, fallback: Sequence[Any]) -> list[Any]:
    spec = manifest.controls["encoder"].get(name)
    return list(spec.levels) if spec is not None and spec.levels else list(fallback)


def _validate(o: QuickstartOptions, export_dir: Path, ckpt: Path, images: np.ndarray) -> dict[str, Any]:
    """Runtime round trip vs the PyTorch inference form, per budget, at 10 dB with identical noise."""
    import torch

    from edgesc.train.checkpoint import load_checkpoint
    from edgesc_runtime import Decoder, Encoder
    from edgesc_runtime.channel import awgn

    with runtime_errors_as_bench_errors(str(export_dir)):
        enc = Encoder(export_dir, backend="onnxruntime", threads=o.threads)
        dec = Decoder(enc.manifest, backend="onnxruntime", threads=o.threads)
    _cfg, model, _ = load_checkpoint(ckpt)
    tenc, tdec = model.encoder.inference().eval(), model.decoder.inference().eval()
    rows = []
    x = images[:16]
    for budget in _levels(enc.manifest, "budget", [None]):
        r = enc.encode(x, budget=budget, snr_db=10.0)
        y = awgn(r.symbols, 10.0, np.random.default_rng(o.seed))
        d = dec.decode(y, r.token_index, snr_db=10.0)
        ctl_e = {k: torch.tensor(v) for k, v in r.controls.items() if k in tenc.control_names}
        ctl_d = {k: torch.tensor(v) for k, v in d.controls.items() if k in tdec.control_names}
        with torch.inference_mode():
            sym_t, idx_t, _, _ = tenc(torch.from_numpy(x), **ctl_e)
            out_t = tdec(torch.from_numpy(y), torch.from_numpy(r.token_index), **ctl_d)[0].numpy()
        same_tokens = float((idx_t.numpy() == r.token_index).all(axis=1).mean()) if idx_t.shape == r.token_index.shape \
            else 0.0
        p_rt, _ = _metrics(d.output, x)
        p_t, _ = _metrics(out_t, x)
        rows.append({"budget": budget, "tokens": r.tokens, "same_token_fraction": same_tokens,
                     "symbols_max_abs_diff": float(np.abs(sym_t.numpy() - r.symbols).max())
                     if sym_t.shape == r.symbols.shape else None,
                     "image_max_abs_diff": float(np.abs(out_t - d.output).max()),
                     "psnr_runtime": float(np.mean(p_rt)), "psnr_torch": float(np.mean(p_t))})
    worst = max(abs(r["psnr_runtime"] - r["psnr_torch"]) for r in rows)
    ok = worst < 0.05 and all(r["image_max_abs_diff"] < 1e-3 for r in rows)
    if not ok:
        raise QuickstartFailed(f"runtime round trip differs from PyTorch (PSNR gap {worst:.3g} dB): {rows}")
    return {"ok": ok, "images": int(x.shape[0]), "snr_db": 10.0, "max_psnr_gap_db": worst, "rows": rows}


def _quality(o: QuickstartOptions, export_dir: Path, images: np.ndarray) -> list[dict[str, Any]]:
    """PSNR/SSIM of the deployed graphs per budget × ratio × SNR (AWGN, numpy channel, seeded)."""
    from edgesc_runtime import Decoder, Encoder
    from edgesc_runtime.channel import awgn

    enc = Encoder(export_dir, backend="onnxruntime", threads=o.threads)
    dec = Decoder(enc.manifest, backend="onnxruntime", threads=o.threads)
    budgets = _levels(enc.manifest, "budget", [None])
    ratios = list(range(len(enc.manifest.model.symbols_per_token))) if "ratio" in enc.control_names else [None]
    rows = []
    rng = np.random.default_rng(o.seed)
    for ratio in ratios:
        for budget in budgets:
            for snr in o.snrs:
                r = enc.encode(images, budget=budget, snr_db=snr, ratio=ratio)
                d = dec.decode(awgn(r.symbols, snr, rng), r.token_index, snr_db=snr,
                               ratio=ratio if "ratio" in dec.control_names else None)
                p, s = _metrics(d.output, images)
                rows.append({"budget": r.controls.get("budget"), "ratio": r.controls.get("ratio"),
                             "snr_db": float(snr), "psnr": float(np.mean(p)), "ssim": float(np.mean(s)),
                             "tokens": r.tokens, "symbols_per_image": r.symbols_per_image,
                             "bandwidth_ratio": r.symbols_per_image / float(images[0].size),
                             "encoder_flops": float(np.mean(r.flops)), "decoder_flops": float(np.mean(d.flops)),
                             "images": int(images.shape[0])})
    return rows


# ---- plots ----------------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_quality(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    plt = _plt()
    fig, axs = plt.subplots(1, 2, figsize=(11, 4.2))
    ratios = sorted({r["ratio"] for r in rows}, key=lambda v: -1 if v is None else v)
    budgets = sorted({r["budget"] for r in rows}, reverse=True)
    styles = ["-", "--", ":", "-."]
    for j, ratio in enumerate(ratios):
        for i, budget in enumerate(budgets):
            pts = sorted((r for r in rows if r["ratio"] == ratio and r["budget"] == budget), key=lambda r: r["snr_db"])
            if not pts:
                continue
            bw = pts[0]["bandwidth_ratio"]
            label = f"budget {budget:g}, ratio {ratio} (k/n={bw:.3f})"
            for ax, key in zip(axs, ("psnr", "ssim")):
                ax.plot([p["snr_db"] for p in pts], [p[key] for p in pts], styles[j % 4], marker="o", ms=3,
                        color=f"C{i}", label=label)
    for ax, name in zip(axs, ("PSNR (dB)", "SSIM")):
        ax.set_xlabel("channel SNR (dB), AWGN")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axs[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_token_maps(o: QuickstartOptions, export_dir: Path, images: np.ndarray, path: Path) -> dict[str, Any]:
    """Rows: test images; columns: the image, then per budget the kept patches (dropped ones greyed) and the
    reconstruction at 10 dB from those tokens. Returns the kept indices per budget and image."""
    from edgesc_runtime import Decoder, Encoder
    from edgesc_runtime.channel import awgn

    enc = Encoder(export_dir, backend="onnxruntime", threads=o.threads)
    dec = Decoder(enc.manifest, backend="onnxruntime", threads=o.threads)
    m = enc.model
    grid = m.image_size // m.patch_size
    budgets = _levels(enc.manifest, "budget", [None])
    x = images[: o.map_images]
    kept: dict[str, list[list[int]]] = {}
    panels = []
    rng = np.random.default_rng(o.seed)
    for budget in budgets:
        r = enc.encode(x, budget=budget, snr_db=10.0)
        d = dec.decode(awgn(r.symbols, 10.0, rng), r.token_index, snr_db=10.0)
        patches = [[int(i) for i in row if i < m.num_patches] for row in r.token_index]
        kept[f"{r.controls.get('budget'):g}" if r.controls.get("budget") is not None else "fixed"] = patches
        panels.append((r.controls.get("budget"), patches, np.clip(d.output, 0, 1)))
    plt = _plt()
    cols = 1 + 2 * len(panels)
    fig, axs = plt.subplots(len(x), cols, figsize=(1.6 * cols, 1.7 * len(x)), squeeze=False)
    for i in range(len(x)):
        img = x[i].transpose(1, 2, 0)
        axs[i, 0].imshow(img)
        axs[i, 0].set_title("input" if i == 0 else "", fontsize=8)
        for j, (budget, patches, rec) in enumerate(panels):
            mask = np.zeros(m.num_patches, dtype=bool)
            mask[patches[i]] = True
            mask_img = np.kron(mask.reshape(grid, grid), np.ones((m.patch_size, m.patch_size), dtype=bool))
            shown = np.where(mask_img[..., None], img, 0.25 * img + 0.5)
            axs[i, 1 + 2 * j].imshow(shown)
            axs[i, 2 + 2 * j].imshow(rec[i].transpose(1, 2, 0))
            if i == 0:
                axs[i, 1 + 2 * j].set_title(f"kept, budget {budget:g}" if budget is not None else "kept", fontsize=8)
                axs[i, 2 + 2 * j].set_title("decoded @10 dB", fontsize=8)
    for ax in axs.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("transmitted patches per budget (greyed: not sent) and the decoded images", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return kept


# ---- entry point ----------------------------------------------------------------------------------------------
def run_quickstart(o: QuickstartOptions) -> QuickstartResult:
    """Run every step; return the report (also written to ``OUT/report/report.json``)."""
    import torch

    from edgesc.bench.report import plot_report, write_json
    from edgesc.bench.runner import BenchOptions, run_bench
    from edgesc.config import load_preset

    from edgesc.bench.inputs import check_output_dir

    check_output_dir(o.out, "--out")  # before training: a file in the way must not cost the whole run
    if o.steps is not None and o.steps < 1:
        raise BenchError(f"--steps must be >= 1, got {o.steps}")
    if o.threads is not None and o.threads < 1:
        raise BenchError(f"--threads must be >= 1, got {o.threads}")
    if not o.bench_seconds > 0:
        raise BenchError(f"--bench-seconds must be > 0, got {o.bench_seconds}")
    cfg = load_preset(o.preset)
    if cfg.task != "reconstruction":
        raise BenchError(f"quickstart reports reconstruction quality; preset {o.preset} is {cfg.task}")
    o.out = Path(o.out)
    report_dir = o.out / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    if o.threads:
        torch.set_num_threads(o.threads)
    times: dict[str, float] = {}
    t_all = time.perf_counter()

    def step(name: str, fn: Callable[[], Any]) -> Any:
        o.log(f"[bold]{name}[/] …")
        t0 = time.perf_counter()
        out = fn()
        times[name] = time.perf_counter() - t0
        o.log(f"  {name}: {times[name]:.1f} s")
        return out

    ckpt, train_info = step("train", lambda: _train(o))
    export_dir, export_info = step("export", lambda: _export(o, ckpt))
    images = _test_images(cfg, max(o.quality_images, 8 * max(o.bench_batches), 16))
    validation = step("validate", lambda: _validate(o, export_dir, ckpt, images))
    bench = step("bench", lambda: run_bench(BenchOptions(
        export_dir, device="cpu", backend="onnxruntime", batches=list(o.bench_batches), warmup=5,
        seconds=o.bench_seconds, threads=o.threads, images=images, images_source=f"{cfg.train.data} test split",
        seed=o.seed, command="edgesc quickstart (bench step)")))
    quality = step("quality", lambda: _quality(o, export_dir, images[: o.quality_images]))

    def plots() -> dict[str, Any]:
        write_json(bench, report_dir / "bench.json")
        plot_report(bench, report_dir / "bench.png")
        plot_quality(quality, report_dir / "quality.png",
                     f"{cfg.name}: deployed graphs (runtime) on {len(images[: o.quality_images])} held-out "
                     f"{cfg.train.data} test crops")
        return plot_token_maps(o, export_dir, images, report_dir / "tokens.png")

    kept = step("plots", plots)
    times["total"] = time.perf_counter() - t_all
    report = {
        "format": FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "preset": cfg.name,
        "host": {"platform": f"{platform.system()} {platform.machine()}", "threads": o.threads,
                 "torch_threads": torch.get_num_threads()},
        "seconds": times,
        "train": train_info,
        "export": export_info,
        "validation": validation,
        "quality": quality,
        "bench_summary": bench_summary(bench),
        "kept_tokens": kept,
        "files": {"bench": "bench.json", "bench_plot": "bench.png", "quality_plot": "quality.png",
                  "token_maps": "tokens.png", "checkpoint": str(ckpt), "export_dir": str(export_dir)},
    }
    (report_dir / "report.json").write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    return QuickstartResult(report, report_dir)


def bench_summary(bench: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (batch, budget): p50 latencies and executed FLOPs of the three stages."""
    out = []
    for r in bench["results"]:
        s = r["stages"]
        out.append({"batch": r["batch"], "budget": r["effective_controls"]["encoder"].get("budget"),
                    "tokens": r["tokens"],
                    **{f"{k}_p50_ms": s[k]["latency_ms"]["p50"] for k in ("encoder", "decoder", "end_to_end")},
                    "encoder_mflops": s["encoder"]["flops_per_image"] / 1e6,
                    "decoder_mflops": s["decoder"]["flops_per_image"] / 1e6,
                    "encoder_fraction_of_reference": s["encoder"]["fraction_of_reference"]})
    return out


def print_summary(result: QuickstartResult, console: Any) -> None:
    from rich.table import Table

    rep = result.report
    t = Table(title=f"edgesc quickstart — {rep['preset']} (report: {result.report_dir})", header_style="bold")
    for col in ("budget", "K", "PSNR @10 dB", "SSIM @10 dB", "enc MFLOP", "enc p50 ms (B=1)", "e2e p50 ms (B=1)"):
        t.add_column(col, justify="right")
    q10 = {r["budget"]: r for r in rep["quality"] if r["snr_db"] == 10.0 and r["ratio"] in (0, None)}
    b1 = {r["budget"]: r for r in rep["bench_summary"] if r["batch"] == 1}
    for budget in sorted(b1, key=lambda v: -(v or 0)):
        q = q10.get(budget, {})
        b = b1[budget]
        t.add_row(f"{budget:g}" if budget is not None else "-", str(b["tokens"]),
                  f"{q['psnr']:.2f}" if q else "-", f"{q['ssim']:.3f}" if q else "-",
                  f"{b['encoder_mflops']:.2f}", f"{b['encoder_p50_ms']:.3f}", f"{b['end_to_end_p50_ms']:.3f}")
    console.print(t)
    secs = rep["seconds"]
    console.print("wall time: " + ", ".join(f"{k} {v:.1f} s" for k, v in secs.items()), highlight=False)
    v = rep["validation"]
    console.print(f"runtime vs PyTorch: max PSNR gap {v['max_psnr_gap_db']:.2g} dB over {v['images']} images; "
                  f"export validation: {rep['export']['validation_summary']}", highlight=False)
