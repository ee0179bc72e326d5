"""``edgesc export`` and ``edgesc compile`` (thin: parse options, call edgesc.export, print)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgesc.cli.app import app, console, fail, run


def _batch(value: str) -> str | int:
    if value == "dynamic":
        return "dynamic"
    try:
        b = int(value)
    except ValueError:
        fail(f"--batch must be 'dynamic' or a positive integer, got {value!r}")
    if b < 1:
        fail(f"--batch must be a positive integer, got {b}")
    return b


@app.command("export")
def export_cmd(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (edgesc-ckpt/1) to export."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (encoder.onnx, decoder.onnx, manifest.json)."),
    dynamic: bool = typer.Option(True, "--budget-dynamic/--static",
                                 help="Controls as graph inputs (default) or frozen into the graphs."),
    budget: Optional[float] = typer.Option(None, help="Freeze the token budget α ∈ (0, 1]."),
    depth: Optional[int] = typer.Option(None, help="Freeze the layer cap (encoder and decoder)."),
    width: Optional[float] = typer.Option(None, help="Freeze the width scale ∈ (0, 1]."),
    snr_db: Optional[float] = typer.Option(None, "--snr-db", help="Freeze the channel SNR (dB)."),
    ratio: Optional[int] = typer.Option(None, help="Freeze the compression-ratio level."),
    opset: int = typer.Option(20, help="ONNX opset."),
    precision: str = typer.Option("fp32", help="fp32 or fp16 (mixed: control arithmetic and I/O stay fp32)."),
    batch: str = typer.Option("dynamic", help="'dynamic' or a fixed batch size."),
    no_validate: bool = typer.Option(False, "--no-validate", help="Skip the PyTorch vs ONNX Runtime parity check."),
    targets: str = typer.Option("", help="Comma-separated deployment targets to audit for (default: every "
                                         "TensorRT target), e.g. jetson-orin-nano,server-gpu."),
) -> None:
    """Export a checkpoint to ONNX encoder/decoder graphs with a manifest, validated and audited for TensorRT."""
    if precision not in ("fp32", "fp16"):
        fail(f"--precision must be fp32 or fp16, got {precision!r}")
    b = _batch(batch)
    given = {"budget": budget, "depth": depth, "width": width, "snr_db": snr_db, "ratio": ratio}
    frozen = {k: v for k, v in given.items() if v is not None}

    target_list = [t.strip() for t in targets.split(",") if t.strip()]
    if targets.strip() and not target_list:
        fail(f"--targets {targets!r} names no target (give a comma-separated list, or omit it for every target)")

    def body() -> None:
        from edgesc.bench.inputs import check_output_dir
        from edgesc.export.onnx_export import export_model

        check_output_dir(out, "--out")  # before the (slow) export: a file in the way is bad input, exit 2
        res = export_model(checkpoint, out, dynamic=dynamic, frozen_controls=frozen, opset=opset, precision=precision,
                           batch=b, validate=not no_validate, targets=target_list or None)
        _print_export(res)
        if not res.valid:
            fail(f"validation failed: see {res.manifest_path} (use --no-validate to export anyway)", code=1)
        if not res.audit_ok:
            console.print("[yellow]audit: some targets' TensorRT parsers would refuse nodes (listed above)[/]")

    run(body)


def _print_export(res) -> None:  # noqa: ANN001 - ExportResult, imported lazily
    console.print(f"wrote {res.out_dir}/encoder.onnx, decoder.onnx, {res.manifest_path.name}")
    for g, size in res.sizes.items():
        console.print(f"  {g}: {size / 1e6:.2f} MB")
    if res.validation is not None:
        v = res.validation
        console.print(f"validation: {'PASS' if v.get('ok') else 'FAIL'} — {v.get('summary', '')}")
        for line in v.get("failures", [])[:20]:
            console.print(f"  [red]{line}[/]")
    for text in res.audit_reports:
        console.print(text, highlight=False)


@app.command("compile")
def compile_cmd(
    export_dir: Path = typer.Argument(..., help="Directory written by `edgesc export`."),
    target: str = typer.Option(..., "--target", "-t", help="Deployment target (see export/targets)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if a cached engine matches."),
) -> None:
    """Build TensorRT engines for the exported encoder and decoder on this machine's GPU."""
    from edgesc.export import compile as comp

    def body() -> None:
        try:
            rep = comp.compile_export(export_dir, target, force=force)
        except comp.CompileUnavailable as exc:
            fail(str(exc), code=1)
        for w in rep.warnings:
            console.print(f"[yellow]warning:[/] {w}")
        for g, e in rep.engines.items():
            state = "reused" if g in rep.reused else "built"
            console.print(f"{g}: {state} {e['file']} ({e['precision']}, TensorRT {e['tensorrt']}, {e['gpu']} "
                          f"sm{e['compute_capability']})")
        console.print("equivalent trtexec commands:")
        for g, cmd in rep.commands.items():
            console.print(f"  {g}: {cmd}", highlight=False, soft_wrap=True)

    run(body)
