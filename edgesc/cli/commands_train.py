"""``edgesc train``, ``edgesc eval`` and ``edgesc info`` (thin: parse, call :mod:`edgesc.train`, print)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from edgesc.cli.app import app, run

# tables are wide: without a terminal (pipes, CI logs) rich would squeeze them into 80 columns
out_console = Console() if sys.stdout.isatty() else Console(width=160)


@app.command("train")
def train_cmd(
    model: str = typer.Option(..., "--model", help="preset name (e.g. recvit) or a config .toml"),
    out: Path = typer.Option(..., "--out", help="output folder: checkpoints, log.jsonl (and pareto.json)"),
    data: Optional[str] = typer.Option(None, "--data", help="photos32 | digits32 | cifar10:PATH | folder:PATH; default: the preset's"),
    channel: Optional[str] = typer.Option(None, "--channel", help="awgn | rayleigh | rayleigh-nocsi"),
    snr_db: Optional[str] = typer.Option(None, "--snr-db", help="training SNR range LO:HI in dB, drawn per batch"),
    steps: Optional[int] = typer.Option(None, "--steps", help="optimizer steps (width stage steps for joint)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="global batch (split over DDP processes)"),
    lr: Optional[float] = typer.Option(None, "--lr", help="peak AdamW learning rate"),
    warmup_steps: Optional[int] = typer.Option(None, "--warmup-steps", help="linear warm-up steps before cosine"),
    stage: Optional[str] = typer.Option(None, "--stage", help="full | width | depth | joint (paper 000 Alg. 2)"),
    erasure: Optional[float] = typer.Option(None, "--erasure", help="token erasure probability in training"),
    resume: bool = typer.Option(False, "--resume", help="continue from OUT/last.pt exactly"),
    force: bool = typer.Option(False, "--force", help="start afresh in an OUT that holds an earlier run "
                               "(its files are moved to OUT/previous-N/, never deleted)"),
    seed: int = typer.Option(0, "--seed"),
    init: Optional[Path] = typer.Option(None, "--init", help="initial weights from a checkpoint (e.g. width stage)"),
    device: str = typer.Option("auto", "--device", help="cpu | cuda | auto"),
    log_every: int = typer.Option(10, "--log-every", help="log every N steps"),
    ckpt_every: int = typer.Option(500, "--ckpt-every", help="write OUT/last.pt every N steps"),
    stop_at: Optional[int] = typer.Option(None, "--stop-at", help="stop this invocation at step N (then --resume)"),
    depth_train: str = typer.Option("backbone", "--depth-train", help="depth stage trains: backbone | controller"),
    grid_rho: str = typer.Option("0.2,0.4", "--grid-rho", help="joint: target pruning ratios ρt"),
    grid_T: str = typer.Option("0.9,0.99", "--grid-T", help="joint: stopping thresholds T"),
    depth_steps: Optional[int] = typer.Option(None, "--depth-steps", help="joint: steps of each depth fine-tune"),
    eval_batches: int = typer.Option(4, "--eval-batches", help="test batches for the final validation / Pareto"),
    p_depth_cap: float = typer.Option(0.25, "--p-depth-cap", help="probability of a random depth cap per batch"),
    p_width_scale: float = typer.Option(0.25, "--p-width-scale", help="probability of a random width scale"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="rich progress bar"),
) -> None:
    """Train a model (stages full/width/depth/joint), with periodic atomic checkpoints and a JSON-lines log."""

    def body() -> None:
        from edgesc.train.options import TrainOptions, parse_float_list, parse_snr_range
        from edgesc.train.trainer import run_training

        opts = TrainOptions(
            model=model, out=out, data=data, channel=channel,
            snr_db=parse_snr_range(snr_db) if snr_db is not None else None,
            steps=steps, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps, stage=stage, erasure=erasure,
            resume=resume, seed=seed, init=init, device=device, log_every=log_every, ckpt_every=ckpt_every,
            stop_at=stop_at, depth_train=depth_train, grid_rho=parse_float_list(grid_rho, "--grid-rho"),
            grid_T=parse_float_list(grid_T, "--grid-T"), depth_steps=depth_steps, eval_batches=eval_batches,
            p_depth_cap=p_depth_cap, p_width_scale=p_width_scale, progress=progress,
            if_exists="keep" if force else "refuse",
        )
        result = run_training(opts)
        if not result.is_main:
            return
        if result.archived is not None:
            out_console.print(f"the earlier run in {out} was moved to {result.archived}")
        last = result.stages[-1]
        if result.checkpoint is None:
            out_console.print(f"stopped at step {last.step}; continue with --resume (checkpoint {last.out / 'last.pt'})")
            return
        out_console.print(f"checkpoint: {result.checkpoint}")
        if result.pareto is not None:
            out_console.print(f"pareto set: {out / 'pareto.json'} ({len(result.pareto)} configurations)")
        if last.metrics:
            out_console.print("metrics: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                      for k, v in last.metrics.items()))
        if last.seconds_per_step:
            out_console.print(f"seconds per step: {last.seconds_per_step:.3f}")

    run(body)


@app.command("eval")
def eval_cmd(
    checkpoint: Path = typer.Argument(..., help="checkpoint (.pt) written by edgesc train"),
    data: Optional[str] = typer.Option(None, "--data", help="data set (default: the preset's); test split"),
    snr_db: str = typer.Option("1,4,7,10,13", "--snr-db", help="comma-separated SNRs in dB"),
    channel: str = typer.Option("awgn", "--channel", help="awgn | rayleigh | rayleigh-nocsi"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the results as JSON"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="write quality/FLOPs vs SNR plot (.png)"),
    budget: Optional[float] = typer.Option(None, "--budget", help="token budget α in (0, 1]"),
    depth: Optional[int] = typer.Option(None, "--depth", help="layer cap"),
    width: Optional[float] = typer.Option(None, "--width", help="width scale in (0, 1]"),
    ratio: Optional[int] = typer.Option(None, "--ratio", help="compression-ratio level"),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="ee:D (early exit) or sp:R (static pruning)"),
    batch_size: int = typer.Option(64, "--batch-size"),
    max_batches: Optional[int] = typer.Option(None, "--max-batches", help="evaluate at most N batches per SNR"),
    device: str = typer.Option("auto", "--device", help="cpu | cuda | auto"),
    seed: int = typer.Option(0, "--seed", help="channel-noise seed"),
    flops: bool = typer.Option(True, "--flops/--no-flops", help="count FLOPs per image (FlopCounterMode)"),
) -> None:
    """Evaluate a checkpoint per SNR with the inference form: quality, executed depth, width and FLOPs."""

    def body() -> None:
        from edgesc.train.checkpoint import load_checkpoint
        from edgesc.train.distributed import pick_device
        from edgesc.train.evaluate import evaluate_model, plot_results, results_table, write_json
        from edgesc.train.options import (CHANNELS, DEVICES, PLOT_SUFFIXES, OptionError, check_choice,
                                          check_output_file, parse_baseline, parse_float_list)

        snrs = parse_float_list(snr_db, "--snr-db")
        check_choice(channel, CHANNELS, "--channel")
        check_choice(device, DEVICES, "--device")
        base = parse_baseline(baseline)
        if batch_size < 1:
            raise OptionError(f"--batch-size {batch_size}: must be a positive integer")
        if max_batches is not None and max_batches < 1:
            raise OptionError(f"--max-batches {max_batches}: must be >= 1")
        if json_out is not None:
            check_output_file(json_out, "--json")
        if plot is not None:
            check_output_file(plot, "--plot", PLOT_SUFFIXES)
        dev = pick_device(device)
        cfg, model, meta = load_checkpoint(checkpoint)
        result = evaluate_model(
            model, cfg, data=data or cfg.train.data, snrs=snrs, channel=channel, batch_size=batch_size,
            max_batches=max_batches, device=dev, overrides={"budget": budget, "depth": depth, "width": width,
                                                             "ratio": ratio},
            baseline=base, count_flops=flops, seed=seed,
        )
        result["checkpoint"] = str(checkpoint)
        result["step"] = meta.get("step")
        result["stage"] = meta.get("stage")
        out_console.print(results_table(result))
        if json_out is not None:
            write_json(result, json_out)
            out_console.print(f"wrote {json_out}")
        if plot is not None:
            plot_results(result, plot)
            out_console.print(f"wrote {plot}")

    run(body)


@app.command("info")
def info_cmd(
    preset: str = typer.Argument(..., help="preset name or config .toml"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Parameter counts, analytic (Table I) and counted FLOPs per image, layers, tokens, bandwidth ratio."""

    def body() -> None:
        from edgesc.config import load_preset
        from edgesc.train.info import info_table, model_info

        info = model_info(load_preset(preset))
        if as_json:
            typer.echo(json.dumps(info, indent=2))
        else:
            out_console.print(info_table(info))

    run(body)
