"""``edgesc bench`` and ``edgesc quickstart`` (thin: parse, call :mod:`edgesc.bench`, print)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from edgesc.cli.app import app, fail, run

# Piped output (CI logs, `| tee`) gets a wide console so that the bench table is not squeezed into 80 columns.
out_console = Console(width=None if sys.stdout.isatty() else 220)


@app.command("bench")
def bench_cmd(
    export_dir: Path = typer.Argument(..., help="export directory (manifest.json + graphs) from edgesc export"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda | jetson (must be present unless --estimate)"),
    backend: str = typer.Option("auto", "--backend", help="auto | onnxruntime | tensorrt"),
    batch: str = typer.Option("1,8", "--batch", help="batch sizes, comma separated"),
    budget: Optional[str] = typer.Option(None, "--budget", help="token budgets (default: the manifest's levels)"),
    depth: Optional[str] = typer.Option(None, "--depth", help="depth caps, encoder and decoder (default: model's)"),
    width: Optional[str] = typer.Option(None, "--width", help="width scales (default: model's)"),
    snr_db: float = typer.Option(10.0, "--snr-db", help="channel SNR in dB (AWGN between encoder and decoder)"),
    warmup: int = typer.Option(10, "--warmup", help="untimed calls before each timed stage"),
    iters: Optional[int] = typer.Option(None, "--iters", help="timed calls per stage and setting"),
    seconds: Optional[float] = typer.Option(None, "--seconds", help="time per stage and setting (default 0.5 s)"),
    threads: Optional[int] = typer.Option(None, "--threads", help="intra-op threads (default: ONNX Runtime's)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the report as JSON here"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="write a PNG of latency and FLOPs vs each control"),
    images: Optional[Path] = typer.Option(None, "--images", help=".npy [N,C,H,W] images in [0,1] (default: noise)"),
    compare_static: bool = typer.Option(False, "--compare-static", help="also export and time static graphs (slow)"),
    compare_torch: bool = typer.Option(False, "--compare-torch", help="also time PyTorch eager on the same model"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="checkpoint for --compare-torch/--compare-static"),
    estimate: bool = typer.Option(False, "--estimate", help="predict latency from the target's datasheet (roofline)"),
    target: Optional[str] = typer.Option(None, "--target", help="target profile for --estimate (default: by device)"),
    peak_gflops: Optional[float] = typer.Option(None, "--peak-gflops", help="--estimate: peak GFLOP/s override"),
    bandwidth_gbs: Optional[float] = typer.Option(None, "--bandwidth-gbs", help="--estimate: memory GB/s override"),
    seed: int = typer.Option(0, "--seed", help="seed of the noise images and the channel"),
) -> None:
    """Latency percentiles, throughput, executed FLOPs, achieved FLOP/s and peak memory through the runtime."""

    def body() -> None:
        from edgesc.bench import BenchOptions, parse_list, print_report, run_bench, write_json, plot_report
        from edgesc.bench.inputs import read_images_npy
        from edgesc.train.options import PLOT_SUFFIXES, check_output_file

        # Output paths first: a bad one must fail now, not after minutes of timing.
        if json_out is not None:
            check_output_file(json_out, "--json")
        if plot is not None:
            check_output_file(plot, "--plot", PLOT_SUFFIXES)
        imgs, images_source = read_images_npy(images) if images is not None else (None, "random")
        if images_source.endswith("scaled by 1/255)"):
            Console(stderr=True).print(f"note: --images {images}: uint8 values divided by 255", highlight=False,
                                        markup=False, soft_wrap=True)
        opts = BenchOptions(
            export_dir=export_dir, device=device, backend=backend,
            batches=parse_list(batch, int, "--batch"),
            budgets=parse_list(budget, float, "--budget") if budget else None,
            depths=parse_list(depth, int, "--depth") if depth else None,
            widths=parse_list(width, float, "--width") if width else None,
            snr_db=snr_db, warmup=warmup, iters=iters, seconds=seconds, threads=threads,
            images=imgs, images_source=images_source,
            seed=seed, estimate=estimate, target=target, peak_gflops=peak_gflops, bandwidth_gbs=bandwidth_gbs,
            compare_torch=compare_torch, checkpoint=checkpoint, compare_static=compare_static,
            command="edgesc " + " ".join(sys.argv[1:]),
            progress=lambda msg: Console(stderr=True).print(f"[dim]… {msg}[/]", highlight=False),
        )
        report = run_bench(opts)
        print_report(report, out_console)
        if json_out is not None:
            out_console.print(f"json: {write_json(report, json_out)}")
        if plot is not None:
            out_console.print(f"plot: {plot_report(report, plot)}")

    run(body)


@app.command("quickstart")
def quickstart_cmd(
    out: Path = typer.Option(Path("runs/quickstart"), "--out", help="output folder (report in OUT/report/)"),
    steps: Optional[int] = typer.Option(None, "--steps", help="training steps (default: the preset's)"),
    preset: str = typer.Option("quickstart", "--preset", help="model preset to train"),
    threads: Optional[int] = typer.Option(None, "--threads", help="threads for training and the runtime"),
    bench_seconds: float = typer.Option(0.3, "--bench-seconds", help="time per benchmark stage and setting"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train → export (dynamic budget) → validate → bench on CPU → OUT/report/ (JSON + plots), in minutes."""

    def body() -> None:
        from edgesc.bench.quickstart import QuickstartFailed, QuickstartOptions, print_summary, run_quickstart

        try:
            result = run_quickstart(QuickstartOptions(out=out, steps=steps, preset=preset, threads=threads,
                                                      bench_seconds=bench_seconds, seed=seed,
                                                      progress=sys.stdout.isatty(),  # training progress bar
                                                      log=lambda msg: out_console.print(msg, highlight=False)))
        except QuickstartFailed as exc:  # the job failed, not the input: exit code 1
            fail(str(exc), 1)
        print_summary(result, out_console)

    run(body)
