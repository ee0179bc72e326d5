"""``edgesc`` command line. Thin: each ``commands_*`` module parses options and calls into the library.

Command modules (one per area, each registering on :data:`edgesc.cli.app.app`):
``commands_train`` (train, eval, info), ``commands_export`` (export, compile), ``commands_bench`` (bench,
quickstart), ``commands_tokens`` (profile, control-sim, viz).
"""
from __future__ import annotations

import importlib
import importlib.util

from edgesc.cli.app import app

COMMAND_MODULES = ("commands_train", "commands_export", "commands_bench", "commands_tokens")

for _name in COMMAND_MODULES:
    if importlib.util.find_spec(f"edgesc.cli.{_name}") is not None:
        importlib.import_module(f"edgesc.cli.{_name}")


def main() -> None:
    """Entry point of the ``edgesc`` console script."""
    app()
