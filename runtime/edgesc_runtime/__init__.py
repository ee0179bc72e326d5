"""edgesc_runtime: torch-free runtime for exported edgesc semantic-communication graphs.

Depends only on numpy and onnxruntime (TensorRT + pycuda/cuda-python optional). Never imports torch or edgesc.
"""
from __future__ import annotations

from .errors import (BackendUnavailable, ControlError, InputError, ManifestError, ModelMismatchError, PacketError,
                     RuntimeError_, RuntimeErrorBase)
from .manifest import ControlSpec, Manifest, ModelInfo, load_manifest
from .session import DecodeResult, Decoder, EncodeResult, Encoder

__version__ = "0.1.0"

__all__ = [
    "Encoder", "Decoder", "EncodeResult", "DecodeResult", "Manifest", "ModelInfo", "ControlSpec", "load_manifest",
    "RuntimeErrorBase", "RuntimeError_", "ManifestError", "ModelMismatchError", "InputError", "ControlError",
    "PacketError", "BackendUnavailable", "__version__",
]
