"""edgesc: edge deployment toolkit for transformer-based semantic communication (deep JSCC)."""
from __future__ import annotations

__version__ = "0.1.0"

