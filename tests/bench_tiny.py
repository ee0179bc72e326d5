"""One tiny trained-and-exported model per test session, shared by the bench, quickstart and example tests.

:func:`quickstart_run` runs ``edgesc quickstart`` once per pytest process (the result is cached in this module,
which every test file imports from the same ``sys.modules`` entry) on the test-sized ``unified-tiny`` preset
(every mechanism: depth, width, token budget, two ratio levels) for a few steps. Its checkpoint and export
directory are then what the other tests benchmark and stream; exporting is the slow part (~30-60 s on this
shared machine), so it happens once.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

PRESET = "unified-tiny"
STEPS = 3
_CACHE: dict[str, Any] = {}


def quickstart_run(tmp_path_factory: Any) -> Any:
    """The :class:`edgesc.bench.quickstart.QuickstartResult` of the session's tiny quickstart run."""
    if "result" not in _CACHE:
        import torch

        from edgesc.bench.quickstart import QuickstartOptions, run_quickstart

        torch.set_num_threads(1)
        out = Path(tmp_path_factory.mktemp("quickstart_tiny"))
        _CACHE["result"] = run_quickstart(QuickstartOptions(
            out=out, steps=STEPS, preset=PRESET, threads=1, bench_seconds=0.02, bench_batches=(1, 4),
            snrs=(0.0, 20.0), quality_images=8, map_images=2, validation_settings=4))
    return _CACHE["result"]


def export_dir(tmp_path_factory: Any) -> Path:
    return Path(quickstart_run(tmp_path_factory).report["files"]["export_dir"])


def checkpoint(tmp_path_factory: Any) -> Path:
    return Path(quickstart_run(tmp_path_factory).report["files"]["checkpoint"])
