"""``edgesc bench`` on a real exported model (the session's tiny quickstart run, tests/bench_tiny.py): controls
change the executed FLOPs, and ``--compare-torch`` runs the same model in PyTorch eager."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, os.path.dirname(__file__))
import bench_tiny  # noqa: E402

from edgesc.bench import BenchError, BenchOptions, run_bench  # noqa: E402
from edgesc.cli.app import app  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    return bench_tiny.export_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return bench_tiny.checkpoint(tmp_path_factory)


def test_depth_and_width_cut_executed_flops(export: Path) -> None:
    rep = run_bench(BenchOptions(export, batches=[1], budgets=[1.0], depths=[1, 2], widths=[0.5, 1.0], warmup=0,
                                 iters=2, threads=1))
    f = {(r["controls"]["depth"], r["controls"]["width"]): r for r in rep["results"]}
    for stage in ("encoder", "decoder"):
        full = f[(2, 1.0)]["stages"][stage]["flops_per_image"]
        assert f[(1, 1.0)]["stages"][stage]["flops_per_image"] < full
        assert f[(2, 0.5)]["stages"][stage]["flops_per_image"] <= full
    assert f[(1, 1.0)]["encoder_layers_executed"] <= 1.0  # the depth cap holds
    assert f[(1, 1.0)]["decoder_layers_executed"] <= 1.0


def test_compare_torch_runs_the_same_model(export: Path, ckpt: Path) -> None:
    rep = run_bench(BenchOptions(export, batches=[1, 4], budgets=[1.0, 0.25], warmup=1, iters=3, threads=1,
                                 compare_torch=True, checkpoint=ckpt))
    ct = rep["compare_torch"]
    assert ct["threads"] == 1 and Path(ct["checkpoint"]) == ckpt
    assert [(r["batch"], r["controls"]["budget"]) for r in ct["rows"]] == [(1, 1.0), (1, 0.25), (4, 1.0), (4, 0.25)]
    for row, res in zip(ct["rows"], rep["results"]):
        for side in ("encoder", "decoder"):
            s = row[side]
            assert s["max_abs_diff"] is not None and s["max_abs_diff"] < 1e-4
            assert s["runtime_p50_ms"] == res["stages"][side]["latency_ms"]["p50"]
            assert s["speedup"] == pytest.approx(s["torch_p50_ms"] / s["runtime_p50_ms"])


def test_compare_torch_refuses_another_models_checkpoint(export: Path, tmp_path: Path) -> None:
    from edgesc.config import load_preset
    from edgesc.models import build_model
    from edgesc.train.checkpoint import save_checkpoint

    cfg = load_preset(bench_tiny.PRESET)
    other = save_checkpoint(tmp_path / "other.pt", cfg=cfg, model=build_model(cfg))
    with pytest.raises(BenchError, match="the export was made from"):
        run_bench(BenchOptions(export, batches=[1], budgets=[1.0], iters=1, warmup=0, compare_torch=True,
                               checkpoint=other))
    res = CliRunner().invoke(app, ["bench", str(export), "--batch", "1", "--budget", "1", "--iters", "1",
                                   "--compare-torch", "--checkpoint", str(tmp_path / "missing.pt")])
    assert res.exit_code == 2 and "checkpoint not found" in res.output
