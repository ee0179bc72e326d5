"""User-facing errors of edgesc.

Every error a user can cause (bad files, configs, controls, shapes) is an :class:`EdgescError` with a one-line
message naming the offending thing. The CLI prints ``error: <message>`` and exits with code 2.
"""
from __future__ import annotations


class EdgescError(Exception):
    """Base class of every user-facing edgesc error.

    ``exit_code`` is what the CLI exits with: 2 for bad input (the default), 1 for a job that failed on valid
    input (:class:`JobFailed`).
    """

    exit_code: int = 2


class ConfigError(EdgescError):
    """A preset or config file is missing, malformed or inconsistent."""


class DataError(EdgescError):
    """A data set path is missing, an archive is corrupt, or an image has the wrong size."""


class CheckpointError(EdgescError):
    """A checkpoint is missing, truncated or not an edgesc checkpoint."""


class ControlError(EdgescError):
    """A run-time control (budget, depth, width, snr_db, ratio) is outside the model's range."""


class ExportError(EdgescError):
    """Export, validation, audit or compilation failed."""


class JobFailed(EdgescError):
    """A job failed on valid input (e.g. training diverged to a non-finite loss). The CLI exits with code 1."""

    exit_code = 1
