"""``edgesc bench`` mechanics: timing and statistics, device presence, Jetson tools, roofline, CLI errors.

Most tests run on the runtime's hand-built stand-in graphs (tests/test_runtime_graphs.py): they have the
contract's inputs, outputs and statistics but are tiny and need no export; the benchmark of a real exported
model is in tests/test_bench_model.py."""
from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

sys.path.insert(0, os.path.dirname(__file__))
from test_runtime_graphs import GEOMETRY, build_model_dir  # noqa: E402

from edgesc.bench import BenchError, BenchOptions, DeviceNotPresent, parse_list, run_bench  # noqa: E402
from edgesc.bench import device as bdevice  # noqa: E402
from edgesc.bench import measure, roofline  # noqa: E402
from edgesc.cli.app import app  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> Path:
    return build_model_dir(tmp_path_factory.mktemp("bench_stand_in"))


@pytest.fixture(scope="module")
def report(stand_in: Path) -> dict:
    return run_bench(BenchOptions(stand_in, batches=[1, 2], budgets=[1.0, 0.25], warmup=1, iters=7, threads=1))


# ---- measure ----------------------------------------------------------------------------------------------------
def test_time_calls_counts_iterations_and_measures_wall_time() -> None:
    calls = []
    t = measure.time_calls(lambda: (calls.append(1), time.sleep(0.002)), warmup=3, iters=5)
    assert len(calls) == 8 and t.iters == 5
    s = t.summary_ms()
    assert 2.0 <= s["min"] <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"]
    timed = measure.time_calls(lambda: time.sleep(0.001), warmup=0, seconds=0.05, min_iters=3)
    assert timed.iters >= 3 and timed.times_ns.sum() >= 0.04e9


def test_peak_rss_rises_with_an_allocation_and_resets() -> None:
    measure.reset_peak_rss()
    before, source = measure.peak_rss_mb()
    block = np.ones(40 * 1024 * 1024 // 8)  # 40 MiB, touched
    during, _ = measure.peak_rss_mb()
    del block
    assert source in ("VmHWM", "getrusage")
    assert during - before > 30
    if measure.reset_peak_rss():
        after, _ = measure.peak_rss_mb()
        assert after < during - 30


# ---- the report's numbers ---------------------------------------------------------------------------------------
def test_report_settings_and_statistics(report: dict) -> None:
    assert report["kind"] == "measurement" and report["format"] == "edgesc-bench/1"
    assert [(r["batch"], r["controls"]["budget"]) for r in report["results"]] == [(1, 1.0), (1, 0.25), (2, 1.0), (2, 0.25)]
    M = GEOMETRY["num_patches"]
    for r in report["results"]:
        assert r["tokens"] == int(np.ceil(r["controls"]["budget"] * M))
        for stage in ("encoder", "decoder", "end_to_end"):
            s = r["stages"][stage]
            lat = s["latency_ms"]
            assert s["iters"] == 7
            assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
            assert s["throughput_img_s"] == pytest.approx(r["batch"] / (lat["p50"] / 1e3))
            assert s["flops_per_s"] == pytest.approx(s["flops_per_image"] * r["batch"] / (lat["p50"] / 1e3))
            ref = next(x for x in report["reference"] if x["batch"] == r["batch"] and x["engine"] == "onnxruntime")
            assert s["fraction_of_reference"] == pytest.approx(s["flops_per_s"] / ref["flops_per_s"])
            assert s["peak_rss_mb"] > 10
        st = r["stages"]
        assert st["end_to_end"]["flops_per_image"] == st["encoder"]["flops_per_image"] + st["decoder"]["flops_per_image"]


def test_encoder_flops_follow_the_budget(report: dict) -> None:
    by_budget = {r["controls"]["budget"]: r["stages"]["encoder"]["flops_per_image"] for r in report["results"]
                 if r["batch"] == 1}
    assert by_budget[0.25] < by_budget[1.0]


def test_reference_matmul_has_the_models_size(report: dict) -> None:
    g = GEOMETRY
    for r in report["reference"]:
        assert r["shape"] == [r["batch"] * (g["num_patches"] + 1), g["embed_dim"], g["mlp_dim"]]
        m, k, n = r["shape"]
        assert r["flops_per_s"] == pytest.approx(2 * m * k * n / (r["median_ms"] / 1e3))


def test_defaults_sweep_the_manifest_budget_levels(stand_in: Path) -> None:
    from edgesc_runtime import load_manifest

    rep = run_bench(BenchOptions(stand_in, batches=[1], warmup=0, iters=2, threads=1))
    levels = sorted(load_manifest(stand_in).controls["encoder"]["budget"].levels, reverse=True)
    assert rep["settings"]["budgets"] == levels
    assert [r["controls"]["budget"] for r in rep["results"]] == levels


# ---- devices ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["cuda", "jetson"])
def test_absent_device_is_a_clear_error_exit_2(stand_in: Path, kind: str) -> None:
    if kind == "cuda" and bdevice.nvidia_gpus():
        pytest.skip("this machine has an NVIDIA GPU")
    if kind == "jetson" and bdevice.jetson_model():
        pytest.skip("this machine is a Jetson")
    with pytest.raises(DeviceNotPresent, match=f"device '{kind}' is not present"):
        bdevice.require_device(kind)
    res = runner.invoke(app, ["bench", str(stand_in), "--device", kind, "--iters", "1"])
    assert res.exit_code == 2
    assert f"device '{kind}' is not present" in res.output and "--estimate" in res.output
    assert "Traceback" not in res.output


def _fake_tool(folder: Path, name: str, script: str) -> None:
    p = folder / name
    p.write_text("#!/bin/sh\n" + script)
    p.chmod(p.stat().st_mode | stat.S_IEXEC)


def test_jetson_power_state_reads_the_tools_only_when_present(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no tools at all
    state = bdevice.jetson_power_state()
    assert state == {"tools": {"nvpmodel": None, "jetson_clocks": None, "tegrastats": None}, "nvpmodel_mode": None,
                     "jetson_clocks": None, "tegrastats_line": None, "power_mw": None}
    _fake_tool(tmp_path, "nvpmodel", 'echo "NV Power Mode: MAXN"\necho 0\n')
    _fake_tool(tmp_path, "tegrastats", 'while true; do echo "RAM 2000/7620MB VDD_IN 5123mW/5000mW '
                                       'VDD_CPU_GPU_CV 1234mW/1200mW"; sleep 0.1; done\n')
    state = bdevice.jetson_power_state()
    assert state["nvpmodel_mode"] == "MAXN"
    assert state["jetson_clocks"] is None and state["tools"]["jetson_clocks"] is None
    assert state["power_mw"] == {"VDD_IN": 5123, "VDD_CPU_GPU_CV": 1234}


def test_targets_are_read_from_the_target_files() -> None:
    profiles = bdevice.load_profiles()
    assert {"cpu", "jetson-orin-nano"} <= set(profiles)
    assert {p.name for p in bdevice.profiles_for("jetson")} == {n for n in profiles if n.startswith("jetson")}
    assert bdevice.jetson_target_for("NVIDIA Jetson Orin Nano Engineering Reference Developer Kit").name == \
        "jetson-orin-nano"


# ---- roofline estimate --------------------------------------------------------------------------------------------
def test_roofline_picks_the_binding_roof() -> None:
    peak = roofline.Peak(flops_per_s=1e12, bytes_per_s=1e11, precision="fp16", source="test")
    ms, bound = roofline.roofline_ms(2e9, 1e6, peak)  # 2 ms of compute, 0.01 ms of traffic
    assert bound == "compute" and ms == pytest.approx(2.0)
    ms, bound = roofline.roofline_ms(1e6, 1e9, peak)  # 10 ms of traffic
    assert bound == "memory" and ms == pytest.approx(10.0)


def test_target_peak_from_datasheet_and_override() -> None:
    nano = bdevice.load_profile("jetson-orin-nano")
    p = roofline.target_peak(nano)
    assert p.flops_per_s == nano.datasheet["peak_tflops_fp16"] * 1e12
    assert p.bytes_per_s == nano.datasheet["memory_bandwidth_gbs"] * 1e9
    with pytest.raises(BenchError, match="--peak-gflops and --bandwidth-gbs"):
        roofline.target_peak(bdevice.load_profile("cpu"))
    q = roofline.target_peak(bdevice.load_profile("cpu"), peak_gflops=100, bandwidth_gbs=20)
    assert (q.flops_per_s, q.bytes_per_s, q.source) == (1e11, 2e10, "command line")


def test_estimate_is_labelled_and_never_has_measured_latency(stand_in: Path) -> None:
    rep = run_bench(BenchOptions(stand_in, device="jetson", estimate=True, batches=[1, 4], budgets=[1.0, 0.5]))
    assert rep["kind"] == "estimate" and rep["reference"] == []
    assert {r["target"] for r in rep["results"]} == {n for n in bdevice.load_profiles() if n.startswith("jetson")}
    for r in rep["results"]:
        peak = next(t["peak"] for t in rep["targets"] if t["name"] == r["target"])
        for stage, s in r["stages"].items():
            assert "latency_ms" not in s and "iters" not in s
            flops = s["flops_per_image"] * r["batch"]
            expect = max(flops / peak["flops_per_s"], s["bytes"] / peak["bytes_per_s"]) * 1e3
            assert s["predicted_latency_ms"] == pytest.approx(expect)
    one = {(r["target"], r["controls"]["budget"]): r for r in rep["results"] if r["batch"] == 1}
    four = {(r["target"], r["controls"]["budget"]): r for r in rep["results"] if r["batch"] == 4}
    for key in one:  # weights are read once per call: 4 images cost less than 4 single calls
        assert one[key]["stages"]["encoder"]["bytes"] < four[key]["stages"]["encoder"]["bytes"] \
            < 4 * one[key]["stages"]["encoder"]["bytes"]


def test_estimate_cli_prints_estimate_not_measurement(stand_in: Path, tmp_path: Path) -> None:
    out = tmp_path / "e.json"
    res = runner.invoke(app, ["bench", str(stand_in), "--device", "jetson", "--estimate", "--target",
                              "jetson-orin-nx", "--batch", "1", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "ESTIMATE" in res.output and "not a measurement" in res.output
    assert json.loads(out.read_text())["kind"] == "estimate"
    res = runner.invoke(app, ["bench", str(stand_in), "--device", "cpu", "--estimate", "--batch", "1"])
    assert res.exit_code == 2 and "--peak-gflops" in res.output


# ---- CLI errors ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, msg", [
    (["--budget", "2"], "budget=2.0 is above its maximum"),
    (["--depth", "0"], "depth=0 is below its minimum"),
    (["--batch", "1,x"], "--batch: 'x' is not an integer"),
    (["--batch", "0"], "--batch values must be positive"),
    (["--backend", "tpu"], "--backend must be auto, onnxruntime or tensorrt"),
    (["--iters", "0"], "--iters must be >= 1"),
    (["--device", "fpga"], "unknown device 'fpga'"),
    (["--images", "/nonexistent/x.npy"], "images file not found"),
])
def test_bad_options_exit_2_with_one_line(stand_in: Path, args: list[str], msg: str) -> None:
    res = runner.invoke(app, ["bench", str(stand_in), "--iters", "1", *args])
    assert res.exit_code == 2, res.output
    assert msg in " ".join(res.output.split())
    assert "Traceback" not in res.output


def test_missing_or_broken_export_dir_exit_2(tmp_path: Path) -> None:
    res = runner.invoke(app, ["bench", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "export directory not found" in res.output
    (tmp_path / "manifest.json").write_text("{not json")
    res = runner.invoke(app, ["bench", str(tmp_path)])
    assert res.exit_code == 2 and "not valid JSON" in res.output


def test_parse_list() -> None:
    assert parse_list("1, 0.5,0.25", float, "--budget") == [1.0, 0.5, 0.25]
    with pytest.raises(BenchError, match="--depth: '1.5' is not an integer"):
        parse_list("1.5", int, "--depth")


def test_cli_writes_json_and_plot(stand_in: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["bench", str(stand_in), "--batch", "1", "--budget", "1,0.5", "--width", "1,0.5",
                              "--iters", "2", "--warmup", "0", "--threads", "1", "--json", str(tmp_path / "b.json"),
                              "--plot", str(tmp_path / "b.png")])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "b.json").read_text())
    assert len(rep["results"]) == 4 and rep["settings"]["widths"] == [1.0, 0.5]
    png = (tmp_path / "b.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "p50 ms" in res.output and "end-to-end" in res.output
