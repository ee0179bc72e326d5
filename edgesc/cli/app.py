"""The typer application every ``edgesc`` command registers on, and the one place errors become exit codes."""
from __future__ import annotations

import sys
from typing import Callable, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

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
    """Print ``error: message`` on stderr and exit with ``code`` (2: bad input, 1: the job itself failed).

    The message is printed literally (``[train]`` or ``[low, high]`` in it are not rich markup) and on one line.
    """
    # soft_wrap: one line however long (rich would hard-wrap at 80 columns on a pipe)
    console.print(f"[bold red]error:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _os_message(exc: OSError) -> str:
    """``OSError`` → one line naming the file (``[Errno 28] No space left on device: 'x'`` → readable form)."""
    what = exc.strerror or type(exc).__name__
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    return f"{what}: {' -> '.join(names)}" if names else f"{what} ({exc})"


def run(fn: Callable[[], object]) -> object:
    """Run a command body, turning :class:`EdgescError` into ``error: …`` and its exit code (2 for bad input,
    1 for a failed job), and file-system failures (``OSError``: permissions, a full disk, a file where a folder
    should be) into ``error: …`` with exit code 1 -- never a traceback. Anything else is a bug and keeps its
    traceback."""
    try:
        return fn()
    except EdgescError as exc:
        fail(str(exc), getattr(exc, "exit_code", 2))
    except OSError as exc:
        fail(_os_message(exc), 1)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
