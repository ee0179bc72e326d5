"""Token-communication tools of papers 001 and 003: the proxy table (:mod:`.profile`), the Lyapunov control
simulation on top of ``edgesc_runtime.controller`` (:mod:`.control_sim`) and the kept-token pictures (:mod:`.viz`).
See docs/tokens.md."""
from __future__ import annotations

__all__ = ["profile", "control_sim", "viz"]
