"""Training log: JSON lines on disk (one object per logged step) and a rich progress bar on the terminal."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "numel", lambda: 2)() == 1:
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (int, str, bool)) or value is None:
        return value
    return str(value)


class JsonlLog:
    """Appends one JSON object per line to ``path`` (created with its folder; appended on resume)."""

    def __init__(self, path: str | Path, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as fh:
            fh.write(json.dumps(_plain(record), sort_keys=False) + "\n")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All records of a JSON-lines log."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class TrainProgress:
    """A rich progress bar showing step, loss and the task metric; a no-op when disabled (other ranks, tests)."""

    def __init__(self, total: int, start: int, description: str, metric_name: str, enabled: bool = True,
                 console: Console | None = None) -> None:
        self.enabled = enabled
        self.metric_name = metric_name
        self._progress: Progress | None = None
        if enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), TextColumn(f"{metric_name} {{task.fields[metric]}}"),
                TimeElapsedColumn(), TimeRemainingColumn(), console=console or Console(stderr=True),
                transient=False,
            )
            self._task = self._progress.add_task(description, total=total, completed=start, loss="-", metric="-")

    def __enter__(self) -> "TrainProgress":
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, step: int, loss: float | None = None, metric: float | None = None) -> None:
        if self._progress is None:
            return
        fields: dict[str, Any] = {}
        if loss is not None:
            fields["loss"] = f"{loss:.4f}"
        if metric is not None:
            fields["metric"] = f"{metric:.2f}"
        self._progress.update(self._task, completed=step, **fields)
