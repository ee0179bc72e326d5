"""Errors of ``edgesc bench`` / ``edgesc quickstart``; runtime errors are re-raised as :class:`BenchError`."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from edgesc.errors import EdgescError


class BenchError(EdgescError):
    """A benchmark cannot run as asked: absent device, bad option, unusable export directory."""


class DeviceNotPresent(BenchError):
    """The requested device (cuda, jetson) is not on this machine."""


@contextmanager
def runtime_errors_as_bench_errors(what: str = "") -> Iterator[None]:
    """Turn ``edgesc_runtime`` errors (their own hierarchy, the runtime never imports edgesc) into
    :class:`BenchError` so that the CLI prints one line and exits with code 2."""
    from edgesc_runtime.errors import RuntimeErrorBase

    try:
        yield
    except RuntimeErrorBase as exc:
        raise BenchError(f"{what}: {exc}" if what else str(exc)) from None
