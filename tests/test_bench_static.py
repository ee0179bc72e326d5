"""``edgesc bench --compare-static`` exports one static graph per setting: tens of seconds each here, so this
test runs only with EDGESC_SLOW_TESTS=1 (it is skipped, with that reason, otherwise)."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import bench_tiny  # noqa: E402
from test_bench_report import check_against_doc  # noqa: E402

from edgesc.bench import BenchOptions, run_bench  # noqa: E402

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.environ.get("EDGESC_SLOW_TESTS") != "1",
                                 reason="exports a static graph per setting (slow); set EDGESC_SLOW_TESTS=1")]


def test_compare_static_times_static_graphs(tmp_path_factory) -> None:
    rep = run_bench(BenchOptions(bench_tiny.export_dir(tmp_path_factory), batches=[1], budgets=[1.0, 0.25],
                                 warmup=1, iters=5, threads=1, compare_static=True,
                                 checkpoint=bench_tiny.checkpoint(tmp_path_factory)))
    cs = rep["compare_static"]
    assert cs["export_seconds"] > 0 and len(cs["rows"]) == 2
    for row, res in zip(cs["rows"], rep["results"]):
        assert row["controls"] == res["controls"]
        for side in ("encoder", "decoder"):
            s = row[side]
            assert s["static_p50_ms"] > 0
            assert s["ratio"] == pytest.approx(s["dynamic_p50_ms"] / s["static_p50_ms"])
    check_against_doc(rep, {"always", "measurement", "compare-static"})
