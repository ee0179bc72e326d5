"""User-facing errors of the edgesc runtime.

The runtime never imports edgesc, so it has its own hierarchy. Every error a caller can cause (a bad manifest,
a graph that does not belong to it, a bad image or control, a corrupt packet, a missing backend) is a
:class:`RuntimeErrorBase` with a one-line message naming the offending thing; on a mismatch the message names
both sides (``expected X, got Y``).
"""
from __future__ import annotations


class RuntimeErrorBase(Exception):
    """Base class of every user-facing edgesc_runtime error."""


# docs/contract.md calls the base class ``RuntimeError_``; both names refer to the same class.
RuntimeError_ = RuntimeErrorBase


class ManifestError(RuntimeErrorBase):
    """manifest.json is missing, malformed, of another format, or names files that are absent or altered."""


class ModelMismatchError(RuntimeErrorBase):
    """A graph or engine does not belong to the manifest (hash, I/O names, TensorRT version, GPU)."""


class InputError(RuntimeErrorBase):
    """An image, symbol or index array has the wrong dtype, shape or value range."""


class ControlError(RuntimeErrorBase):
    """A control (budget, depth, width, snr_db, ratio) is of the wrong type, out of range, or frozen."""


class PacketError(RuntimeErrorBase):
    """A transmission packet is truncated, oversized, corrupt or belongs to another model."""


class BackendUnavailable(RuntimeErrorBase):
    """The requested execution backend (TensorRT, CUDA binding, GPU) is not available here."""


__all__ = [
    "RuntimeErrorBase", "RuntimeError_", "ManifestError", "ModelMismatchError", "InputError", "ControlError",
    "PacketError", "BackendUnavailable",
]
