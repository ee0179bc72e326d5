"""Execution backends. Each exposes ``name``, ``input_names``, ``output_names`` and
``run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]``.

- :mod:`.ort`: ONNX Runtime (always available; CPU here, any ORT execution provider elsewhere).
- :mod:`.tensorrt`: TensorRT 10/11 engines built by ``edgesc compile`` (needs ``tensorrt`` and pycuda or
  cuda-python, imported lazily so that the runtime stays importable without them).
"""
from __future__ import annotations

from typing import Protocol

import numpy as np


class Backend(Protocol):
    """What a session needs from an execution backend."""

    name: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph on host arrays and return host arrays keyed by output name."""
        ...


__all__ = ["Backend"]
