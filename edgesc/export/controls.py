"""Control specifications (ranges, defaults, levels) for the manifest, and checks of user-given values.

The controls and their meaning are the contract's table ("Controls"): budget α (001/003: k = ⌈α·M⌉ tokens
kept), depth (000 Alg. 1 line 13: layer cap), width (000 Eq. 31-32: units kept), snr_db (σ² = 10^(-snr/10)
feeds Eq. 21 and Eq. 32) and ratio (index into ``coder.symbols``).
"""
from __future__ import annotations

import math
from typing import Any

from edgesc.config import ModelConfig
from edgesc.errors import ControlError

SIDES = ("encoder", "decoder")


def control_names(cfg: ModelConfig, side: str) -> list[str]:
    """The controls of one side's graph, in graph-input order (mirrors ``edgesc.models.control_names``)."""
    try:
        from edgesc.models import control_names as model_names

        return list(model_names(cfg, side))
    except ImportError:  # pragma: no cover - the model core is the source of truth when present
        names = ["budget"] if side == "encoder" and cfg.tokens.enabled else []
        names += ["depth"] if cfg.depth.enabled else []
        names += ["width"] if cfg.width.enabled else []
        names += ["snr_db"] if (cfg.depth.enabled or cfg.width.enabled) else []
        names += ["ratio"] if len(cfg.coder.symbols) > 1 else []
        return names


def _layers(cfg: ModelConfig, side: str) -> int:
    return (cfg.encoder if side == "encoder" else cfg.decoder).layers


def control_spec(cfg: ModelConfig, side: str, name: str) -> dict[str, Any]:
    """dtype, min, max, default and levels of one control of one side."""
    m = cfg.num_patches
    if name == "budget":
        lo = 1.0 / m
        levels = [v for v in (1.0, 0.5, 0.25, 0.125) if v >= lo - 1e-12]
        return {"dtype": "float32", "min": lo, "max": 1.0, "default": 1.0, "levels": levels}
    if name == "depth":
        n = _layers(cfg, side)
        return {"dtype": "int64", "min": 1, "max": n, "default": n, "levels": list(range(1, n + 1))}
    if name == "width":
        units = max(cfg.heads, cfg.mlp_groups)
        lo = 1.0 / units
        levels = sorted({1.0, 0.75, 0.5, 0.25, lo}, reverse=True)
        return {"dtype": "float32", "min": lo, "max": 1.0, "default": 1.0, "levels": [v for v in levels if v >= lo]}
    if name == "snr_db":
        lo, hi = cfg.train.snr_db
        default = 10.0 if lo <= 10.0 <= hi else (lo + hi) / 2
        return {"dtype": "float32", "min": None, "max": None, "default": float(default),
                "levels": sorted({float(lo), float(default), float(hi)}), "train_range": [float(lo), float(hi)]}
    if name == "ratio":
        r = len(cfg.coder.symbols)
        return {"dtype": "int64", "min": 0, "max": r - 1, "default": 0, "levels": list(range(r)),
                "symbols": list(cfg.coder.symbols)}
    raise ControlError(f"unknown control '{name}' (controls: budget, depth, width, snr_db, ratio)")


def all_specs(cfg: ModelConfig) -> dict[str, dict[str, dict[str, Any]]]:
    return {side: {n: control_spec(cfg, side, n) for n in control_names(cfg, side)} for side in SIDES}


def check_frozen(cfg: ModelConfig, frozen: dict[str, float | int]) -> dict[str, float | int]:
    """Validate user-given control values against the model; one-line :class:`ControlError` per problem."""
    present = set(control_names(cfg, "encoder")) | set(control_names(cfg, "decoder"))
    out: dict[str, float | int] = {}
    for name, value in frozen.items():
        if name not in present:
            have = ", ".join(sorted(present)) or "none"
            raise ControlError(f"control '{name}' does not exist for model '{cfg.name}' (its controls: {have})")
        side = "encoder" if name in control_names(cfg, "encoder") else "decoder"
        spec = control_spec(cfg, side, name)
        if spec["dtype"] == "int64":
            if isinstance(value, bool) or float(value) != int(value):
                raise ControlError(f"control '{name}' must be an integer, got {value!r}")
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise ControlError(f"control '{name}' must be finite, got {value}")
        if name == "snr_db":
            out[name] = value
            continue
        lo, hi = spec["min"], spec["max"]
        if name in ("budget", "width"):
            ok = 0.0 < value <= 1.0
            rng = "(0, 1]"
        else:
            ok = lo <= value <= hi
            rng = f"[{lo}, {hi}]"
        if name == "depth":  # both sides take depth; it must fit both stacks
            hi = min(_layers(cfg, s) for s in SIDES if "depth" in control_names(cfg, s))
            ok, rng = 1 <= value <= hi, f"[1, {hi}]"
        if not ok:
            raise ControlError(f"control '{name}' = {value} is outside the model's range {rng}")
        out[name] = value
    return out
