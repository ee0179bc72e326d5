"""``edgesc bench`` and ``edgesc quickstart``: measure exported models through the torch-free runtime.

Layering (docs/contract.md): this package uses ``edgesc_runtime``; it imports ``edgesc.models`` only for
``--compare-torch`` / ``--compare-static``, lazily. :mod:`edgesc.bench.quickstart` is the one orchestrator that
also calls training and export (it is what ``edgesc quickstart`` runs).

Public API::

    report = run_bench(BenchOptions(export_dir, device="cpu", batches=[1, 8], iters=50))
    print_report(report); write_json(report, "bench.json"); plot_report(report, "bench.png")

Every field of the report is documented in docs/bench.md.
"""
from __future__ import annotations

from edgesc.bench.errors import BenchError, DeviceNotPresent
from edgesc.bench.inputs import load_images_npy, parse_list
from edgesc.bench.report import plot_report, print_report, write_json
from edgesc.bench.runner import FORMAT, BenchOptions, run_bench

__all__ = ["BenchOptions", "run_bench", "print_report", "write_json", "plot_report", "parse_list",
           "load_images_npy", "BenchError", "DeviceNotPresent", "FORMAT"]
