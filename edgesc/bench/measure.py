"""Timing and memory measurement: warm-up + timed calls, latency percentiles, peak resident memory.

Every timed call is bracketed by :func:`time.perf_counter_ns`; nothing is averaged before the percentiles are
taken. Peak RSS is the kernel's high-water mark (``VmHWM`` in ``/proc/self/status``), reset per stage through
``/proc/self/clear_refs`` where the kernel allows it, else ``resource.getrusage`` (never reset).
"""
from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass(frozen=True)
class Timing:
    """Per-call wall times of one stage, in nanoseconds, and the derived statistics."""

    times_ns: np.ndarray  # int64 [iters]

    @property
    def iters(self) -> int:
        return int(self.times_ns.size)

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.times_ns, q)) / 1e6

    def summary_ms(self) -> dict[str, float]:
        """p50/p90/p99, mean, min and max latency in milliseconds."""
        t = self.times_ns.astype(np.float64) / 1e6
        return {
            "p50": float(np.percentile(t, 50)),
            "p90": float(np.percentile(t, 90)),
            "p99": float(np.percentile(t, 99)),
            "mean": float(t.mean()),
            "min": float(t.min()),
            "max": float(t.max()),
        }


def time_calls(
    fn: Callable[[], object],
    *,
    warmup: int,
    iters: int | None = None,
    seconds: float | None = None,
    min_iters: int = 5,
) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then time each call: ``iters`` calls, or as many as fit in
    ``seconds`` (at least ``min_iters``). Exactly one of ``iters``/``seconds`` is used (``iters`` wins)."""
    for _ in range(max(0, warmup)):
        fn()
    times: list[int] = []
    clock = time.perf_counter_ns
    if iters is not None:
        for _ in range(max(1, iters)):
            t0 = clock()
            fn()
            times.append(clock() - t0)
    else:
        budget_ns = int(float(seconds if seconds is not None else 1.0) * 1e9)
        start = clock()
        while True:
            t0 = clock()
            fn()
            t1 = clock()
            times.append(t1 - t0)
            if t1 - start >= budget_ns and len(times) >= min_iters:
                break
    return Timing(np.asarray(times, dtype=np.int64))


def _status_kb(key: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_rss_mb() -> tuple[float, str]:
    """The process's peak resident set size in MiB and where it came from (``VmHWM`` or ``getrusage``)."""
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb / 1024.0, "VmHWM"
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return (ru / (1024.0 * 1024.0) if sys.platform == "darwin" else ru / 1024.0), "getrusage"


def current_rss_mb() -> float | None:
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024.0


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS (Linux >= 4.0). True when it worked."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True
