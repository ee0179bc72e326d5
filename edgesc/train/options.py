"""Options of ``edgesc train`` / ``edgesc eval`` and the parsers for their string forms.

Every malformed value raises :class:`OptionError` (an :class:`~edgesc.errors.EdgescError`) with a one-line
message naming the option and the value, so the CLI prints ``error: …`` and exits with code 2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from edgesc.errors import EdgescError

CHANNELS = ("awgn", "rayleigh", "rayleigh-nocsi")
STAGES = ("full", "width", "depth", "joint")
DEVICES = ("cpu", "cuda", "auto")


class OptionError(EdgescError):
    """A command-line option of train/eval has a malformed or out-of-range value."""


def _float(text: str, option: str, whole: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise OptionError(f"{option} {whole!r}: {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise OptionError(f"{option} {whole!r}: {text.strip()!r} is not finite")
    return value


def parse_snr_range(text: str | float | tuple[float, float], option: str = "--snr-db") -> tuple[float, float]:
    """``"LO:HI"`` (or a single ``"X"`` meaning X:X) → (lo, hi) with lo <= hi, in dB."""
    if isinstance(text, tuple):
        lo, hi = float(text[0]), float(text[1])
    elif isinstance(text, (int, float)):
        lo = hi = float(text)
    else:
        s = str(text).strip()
        parts = s.split(":")
        if len(parts) == 1:
            lo = hi = _float(parts[0], option, s)
        elif len(parts) == 2:
            lo, hi = _float(parts[0], option, s), _float(parts[1], option, s)
        else:
            raise OptionError(f"{option} {s!r}: expected LO:HI in dB, e.g. 0:20")
    if lo > hi:
        raise OptionError(f"{option} {text!r}: low end {lo:g} is above high end {hi:g}")
    return lo, hi


def parse_float_list(text: str, option: str) -> list[float]:
    """``"1,4,7"`` → [1.0, 4.0, 7.0] (non-empty; a trailing comma is allowed, an empty item in between not)."""
    s = str(text).strip()
    items = s.split(",")
    if items and not items[-1].strip():
        items = items[:-1]
    if not items or not any(t.strip() for t in items):
        raise OptionError(f"{option} {text!r}: expected a comma-separated list of numbers")
    if not all(t.strip() for t in items):
        raise OptionError(f"{option} {text!r}: empty item in the list")
    return [_float(t, option, s) for t in items]


#: file types ``--plot`` can write (matplotlib's raster and vector formats)
PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".eps", ".ps", ".tif", ".tiff", ".webp")


def check_output_file(path: Path, option: str, suffixes: tuple[str, ...] | None = None) -> None:
    """Fail before a long job when its output file cannot be written: a folder, a wrong suffix, a parent that
    is a file."""
    p = Path(path)
    if p.is_dir():
        raise OptionError(f"{option} {p}: is a folder; give a file name")
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise OptionError(f"{option} {p}: unsupported file type {p.suffix or '(none)'!r} "
                          f"(use {', '.join(suffixes)})")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OptionError(f"{option} {p}: {parent} is a file, not a folder")
            break


@dataclass(frozen=True)
class Baseline:
    """A paper-000 baseline as a configuration: RecViT-EE (``depth``), RecViT-SP (``prune``) or RecViT-SDW (both)."""

    kind: str  # "ee" | "sp" | "sdw"
    depth: int | None = None  # fixed number of layers per side (early exit)
    prune: float | None = None  # static pruning ratio R: width scale 1 - R, K(ξ, σ²) pinned to 100 %

    @property
    def label(self) -> str:
        parts = [str(self.depth)] if self.depth is not None else []
        parts += [f"{self.prune:g}"] if self.prune is not None else []
        return f"{self.kind}:{':'.join(parts)}"


def parse_baseline(text: str | None) -> Baseline | None:
    """``ee:D`` (fixed early exit after D layers, no halting), ``sp:R`` (static pruning ratio R in [0, 1)) or
    ``sdw:D:R`` (both: RecViT-SDW, fixed depth and width)."""
    if text is None or str(text).strip() == "":
        return None
    s = str(text).strip()
    kind, *args = s.split(":")
    kind = kind.lower()
    expected = {"ee": 1, "sp": 1, "sdw": 2}
    if kind not in expected or len(args) != expected[kind] or not all(a.strip() for a in args):
        raise OptionError(f"--baseline {s!r}: expected ee:DEPTH, sp:PRUNE_RATIO or sdw:DEPTH:PRUNE_RATIO")
    values = [_float(a, "--baseline", s) for a in args]
    depth = prune = None
    if kind in ("ee", "sdw"):
        d = values[0]
        if d != int(d) or d < 1:
            raise OptionError(f"--baseline {s!r}: the early-exit depth must be an integer >= 1")
        depth = int(d)
    if kind in ("sp", "sdw"):
        r = values[-1]
        if not (0.0 <= r < 1.0):
            raise OptionError(f"--baseline {s!r}: the static pruning ratio must be in [0, 1)")
        prune = r
    return Baseline(kind, depth, prune)


def check_choice(value: str, choices: tuple[str, ...], option: str) -> str:
    if value not in choices:
        raise OptionError(f"{option} {value!r}: must be one of {', '.join(choices)}")
    return value


@dataclass
class TrainOptions:
    """Everything one ``edgesc train`` run needs. ``None`` fields fall back to the preset's ``[train]`` table."""

    model: str
    out: Path
    data: str | None = None
    channel: str | None = None
    snr_db: tuple[float, float] | None = None
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    warmup_steps: int | None = None
    stage: str | None = None
    erasure: float | None = None
    resume: bool = False
    seed: int = 0
    init: Path | None = None
    device: str = "auto"
    log_every: int = 10
    ckpt_every: int = 500
    eval_batches: int = 4
    progress: bool = True
    num_workers: int = 0
    stop_at: int | None = None  # stop this invocation after global step N (checkpoint; continue with --resume)
    depth_train: str = "backbone"  # depth stage: "backbone" (+ controller) or "controller" only
    # joint stage (Alg. 2): width grid, depth grid, steps of each depth fine-tune
    grid_rho: list[float] = field(default_factory=lambda: [0.2, 0.4])
    grid_T: list[float] = field(default_factory=lambda: [0.9, 0.99])
    depth_steps: int | None = None
    # control-sampling schedule (see docs/training.md)
    p_depth_cap: float = 0.25
    p_width_scale: float = 0.25
    width_scale_min: float = 0.25
    budget_min: float | None = None
    # an OUT that already holds a run, without --resume: "refuse" (the CLI's default) or "keep" (the earlier
    # run's files are moved to OUT/previous-N/ first; the CLI's --force and the Python API's default)
    if_exists: str = "keep"

    def validate(self) -> None:
        if self.channel is not None:
            check_choice(self.channel, CHANNELS, "--channel")
        if self.stage is not None:
            check_choice(self.stage, STAGES, "--stage")
        check_choice(self.device, DEVICES, "--device")
        for name in ("steps", "batch_size", "warmup_steps", "depth_steps"):
            v = getattr(self, name)
            if v is not None and (v < (0 if name == "warmup_steps" else 1)):
                raise OptionError(f"--{name.replace('_', '-')} {v}: must be a positive integer")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise OptionError(f"--lr {self.lr}: must be a positive number")
        if self.erasure is not None and not (0.0 <= self.erasure < 1.0):
            raise OptionError(f"--erasure {self.erasure}: must be in [0, 1)")
        if self.log_every < 1 or self.ckpt_every < 1:
            raise OptionError("--log-every and --ckpt-every must be >= 1")
        for v in self.grid_rho:
            if not (0.0 <= v < 1.0):
                raise OptionError(f"--grid-rho {v:g}: target pruning ratios must be in [0, 1)")
        for v in self.grid_T:
            if not (0.0 < v <= 1.0):
                raise OptionError(f"--grid-T {v:g}: stopping thresholds must be in (0, 1]")
        if self.depth_train not in ("backbone", "controller"):
            raise OptionError(f"--depth-train {self.depth_train!r}: must be backbone or controller")
        for name in ("p_depth_cap", "p_width_scale"):
            v = getattr(self, name)
            if not (0.0 <= v <= 1.0):  # also rejects NaN
                raise OptionError(f"--{name.replace('_', '-')} {v}: must be a probability in [0, 1]")
        if not (0.0 < self.width_scale_min <= 1.0):
            raise OptionError(f"width_scale_min {self.width_scale_min}: must be in (0, 1]")
        if self.budget_min is not None and not (0.0 < self.budget_min <= 1.0):
            raise OptionError(f"budget_min {self.budget_min}: must be in (0, 1]")
        if self.eval_batches < 0:
            raise OptionError(f"--eval-batches {self.eval_batches}: must be >= 0 (0: no final validation)")
        if self.num_workers < 0:
            raise OptionError(f"num_workers {self.num_workers}: must be >= 0")
        if self.if_exists not in ("refuse", "keep"):
            raise OptionError(f"if_exists {self.if_exists!r}: must be 'refuse' or 'keep'")
        if self.stop_at is not None and self.stop_at < 1:
            raise OptionError(f"--stop-at {self.stop_at}: must be >= 1")
        if self.init is not None and not Path(self.init).exists():
            raise OptionError(f"--init {self.init}: file not found")
        if self.init is not None and Path(self.init).is_dir():
            raise OptionError(f"--init {self.init}: is a folder; pass a checkpoint file such as {Path(self.init) / 'final.pt'}")
