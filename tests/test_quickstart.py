"""``edgesc quickstart`` end to end on the test-sized preset (a few training steps): train → export → validate →
bench → quality → plots, and the report it writes. The run is shared with the other bench tests
(tests/bench_tiny.py) because exporting is the slow part."""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

sys.path.insert(0, os.path.dirname(__file__))
import bench_tiny  # noqa: E402

from edgesc.cli.app import app  # noqa: E402
from edgesc.config import load_preset  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def qs(tmp_path_factory):
    return bench_tiny.quickstart_run(tmp_path_factory)


def test_report_files_exist(qs) -> None:
    d = qs.report_dir
    for name in ("report.json", "bench.json", "bench.png", "quality.png", "tokens.png"):
        assert (d / name).is_file(), name
    for name in ("bench.png", "quality.png", "tokens.png"):
        assert (d / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads((d / "report.json").read_text())
    assert on_disk["format"] == "edgesc-quickstart/1" and on_disk["preset"] == bench_tiny.PRESET
    assert Path(on_disk["files"]["checkpoint"]).is_file()
    assert (Path(on_disk["files"]["export_dir"]) / "manifest.json").is_file()


def test_every_step_is_timed(qs) -> None:
    secs = qs.report["seconds"]
    steps = ("train", "export", "validate", "bench", "quality", "plots")
    assert set(secs) == {*steps, "total"}
    assert all(secs[s] > 0 for s in steps)
    assert sum(secs[s] for s in steps) <= secs["total"] + 1e-6


def test_training_ran_the_requested_steps_and_export_validated(qs) -> None:
    rep = qs.report
    assert rep["train"]["steps"] == bench_tiny.STEPS
    assert rep["export"]["validation_ok"] is True
    assert "budget" in rep["export"]["controls"]["encoder"]  # --budget-dynamic: the budget is a graph input
    v = rep["validation"]
    assert v["ok"] and v["max_psnr_gap_db"] < 0.05
    for row in v["rows"]:
        assert row["image_max_abs_diff"] < 1e-3


def test_quality_grid_is_consistent_with_the_model(qs) -> None:
    cfg = load_preset(bench_tiny.PRESET)
    rows = qs.report["quality"]
    budgets = {r["budget"] for r in rows}
    assert len(budgets) >= 2 and {r["ratio"] for r in rows} == set(range(len(cfg.coder.symbols)))
    assert {r["snr_db"] for r in rows} == {0.0, 20.0}
    pixels = cfg.channels * cfg.image_size ** 2
    for r in rows:
        S = cfg.coder.symbols[r["ratio"]]
        assert r["tokens"] == math.ceil(r["budget"] * cfg.num_patches - 1e-9)
        assert r["symbols_per_image"] == r["tokens"] * S
        assert r["bandwidth_ratio"] == pytest.approx(r["tokens"] * S / pixels)
        assert math.isfinite(r["psnr"]) and -1.0 <= r["ssim"] <= 1.0
    enc = {r["budget"]: r["encoder_flops"] for r in rows if r["ratio"] == 0 and r["snr_db"] == 20.0}
    ordered = [enc[b] for b in sorted(enc)]
    assert ordered == sorted(ordered) and ordered[0] < ordered[-1]  # fewer tokens, fewer executed FLOPs


def test_kept_token_maps_hold_the_budgeted_patches(qs) -> None:
    cfg = load_preset(bench_tiny.PRESET)
    kept = qs.report["kept_tokens"]
    assert kept
    for budget, per_image in kept.items():
        k = math.ceil(float(budget) * cfg.num_patches - 1e-9)
        for patches in per_image:
            assert len(patches) == len(set(patches)) == k
            assert all(0 <= p < cfg.num_patches for p in patches)


def test_bench_summary_matches_the_bench_report(qs) -> None:
    bench = json.loads((qs.report_dir / "bench.json").read_text())
    assert bench["kind"] == "measurement"
    assert len(qs.report["bench_summary"]) == len(bench["results"])
    for s, r in zip(qs.report["bench_summary"], bench["results"]):
        assert s["encoder_p50_ms"] == r["stages"]["encoder"]["latency_ms"]["p50"]
        assert s["encoder_mflops"] == pytest.approx(r["stages"]["encoder"]["flops_per_image"] / 1e6)


def test_summary_table_prints(qs) -> None:
    from edgesc.bench.quickstart import print_summary

    con = Console(record=True, width=160)
    print_summary(qs, con)
    text = con.export_text()
    assert "PSNR @10 dB" in text and "wall time: train" in text and "runtime vs PyTorch" in text


@pytest.mark.parametrize("args, msg", [(["--steps", "0"], "--steps must be >= 1"),
                                       (["--preset", "no-such-preset"], "unknown preset 'no-such-preset'")])
def test_bad_quickstart_options_exit_2(tmp_path: Path, args: list[str], msg: str) -> None:
    res = CliRunner().invoke(app, ["quickstart", "--out", str(tmp_path / "q"), *args])
    assert res.exit_code == 2, res.output
    assert msg in res.output and "Traceback" not in res.output
