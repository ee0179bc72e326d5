"""Every field of the ``edgesc bench`` JSON report is documented in docs/bench.md, and every documented field is
in the report (for the report's kind). The field table is parsed from the doc itself."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import bench_tiny  # noqa: E402
from test_runtime_graphs import build_model_dir  # noqa: E402

from edgesc.bench import BenchOptions, run_bench  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "bench.md"
STAGES = ("encoder", "decoder", "end_to_end")
_ROW = re.compile(r"^\| `([^`]+)` \| ([a-z-]+) \|")


def documented_fields() -> dict[str, str]:
    """{path: when} from the doc's field table, with STAGE expanded to the three stages."""
    fields: dict[str, str] = {}
    for line in DOC.read_text().splitlines():
        m = _ROW.match(line)
        if not m:
            continue
        path, when = m.groups()
        for p in ([path.replace("STAGE", s) for s in STAGES] if "STAGE" in path else [path]):
            fields[p] = when
    return fields


def report_paths(obj: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            p = f"{prefix}.{k}" if prefix else k
            yield p
            yield from report_paths(v, p)
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, dict):
                yield from report_paths(item, prefix + "[]")


def _resolve(obj: Any, path: str) -> list[Any]:
    """Values at ``path`` (``[]`` fans out over list items); a missing key raises KeyError naming it."""
    values = [obj]
    for part in path.split("."):
        many = part.endswith("[]")
        key = part[:-2] if many else part
        nxt = []
        for v in values:
            if v is None:  # a null parent (device.jetson, compare_torch, ...): nothing below to check
                continue
            if key not in v:
                raise KeyError(f"{path}: no '{key}' in {sorted(v)}")
            nxt.extend(v[key] if many else [v[key]])
        values = nxt
    return values


def check_against_doc(report: dict[str, Any], kinds: set[str]) -> None:
    doc = documented_fields()
    undocumented = sorted(set(report_paths(report)) - set(doc))
    assert not undocumented, f"fields missing from docs/bench.md: {undocumented}"
    for path, when in doc.items():
        if when in kinds:
            _resolve(report, path)  # KeyError when a documented field is absent


def test_the_doc_table_parses() -> None:
    doc = documented_fields()
    assert len(doc) > 150
    assert set(doc.values()) == {"always", "measurement", "estimate", "jetson", "compare-torch", "compare-static"}
    assert "results[].stages.end_to_end.latency_ms.p99" in doc


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> Path:
    return build_model_dir(tmp_path_factory.mktemp("doc_stand_in"))


def test_measurement_report_matches_the_doc(stand_in: Path) -> None:
    rep = run_bench(BenchOptions(stand_in, batches=[1], budgets=[1.0, 0.5], warmup=0, iters=2, threads=1))
    check_against_doc(rep, {"always", "measurement"})
    assert rep["device"]["jetson"] is None and rep["compare_torch"] is None and rep["compare_static"] is None


def test_estimate_report_matches_the_doc(stand_in: Path) -> None:
    rep = run_bench(BenchOptions(stand_in, batches=[1], device="jetson", estimate=True, target="jetson-orin-nano"))
    check_against_doc(rep, {"always", "estimate"})


def test_jetson_block_matches_the_doc(stand_in: Path, monkeypatch) -> None:
    from edgesc.bench import device

    monkeypatch.setenv("PATH", "/nonexistent")  # no Jetson tools: every value null, the keys still there
    rep = run_bench(BenchOptions(stand_in, batches=[1], budgets=[1.0], warmup=0, iters=1, threads=1))
    rep["device"]["jetson"] = device.jetson_power_state()
    check_against_doc(rep, {"always", "measurement", "jetson"})


@pytest.mark.slow
def test_compare_torch_report_matches_the_doc(tmp_path_factory) -> None:
    rep = run_bench(BenchOptions(bench_tiny.export_dir(tmp_path_factory), batches=[1], budgets=[1.0, 0.25],
                                 warmup=1, iters=3, threads=1, compare_torch=True,
                                 checkpoint=bench_tiny.checkpoint(tmp_path_factory)))
    check_against_doc(rep, {"always", "measurement", "compare-torch"})
