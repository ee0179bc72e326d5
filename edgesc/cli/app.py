"""The typer application every ``edgesc`` command registers on, and the one place errors become exit codes."""
from __future__ import annotations

import sys
from typing import Callable, NoReturn

import typer
from rich.console import Console

from edgesc.errors import EdgescError

app = typer.Typer(
    name="edgesc",
    help="Edge deployment toolkit for transformer-based semantic communication (deep JSCC).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code`` (2: bad input, 1: the job itself failed)."""
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def run(fn: Callable[[], object]) -> object:
    """Run a command body, turning :class:`EdgescError` into ``error: …`` and exit code 2 (no traceback)."""
    try:
        return fn()
    except EdgescError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
