"""Model presets: TOML data in ``models/presets`` (shipped as the ``edgesc_zoo`` package) → typed configs.

A preset is data, not a code path: every model family (RecViT, ViT, token-ViT, unified) is a preset of the same
blocks. :func:`load_preset` validates a preset and returns a :class:`ModelConfig`; unknown keys, wrong types and
inconsistent values raise :class:`~edgesc.errors.ConfigError` naming the key.
"""
from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from edgesc.errors import ConfigError


@dataclass(frozen=True)
class StackConfig:
    """One side's transformer stack: ``units`` blocks, each applied ``recursions`` times (RTU: 2, Eq. 16-19)."""

    units: int = 4
    recursions: int = 2

    @property
    def layers(self) -> int:
        return self.units * self.recursions


@dataclass(frozen=True)
class DepthConfig:
    """Dynamic depth by cumulative stopping scores (paper 000, Eq. 20-29, Alg. 1)."""

    enabled: bool = False
    threshold: float = 0.99  # T in Eq. 23
    alpha: float = 1.0  # slope α in Eq. 21
    beta: float = 0.05  # channel term β in Eq. 21
    tau: float = 0.001  # ponder weight τ in Eq. 29


@dataclass(frozen=True)
class WidthConfig:
    """Dynamic width by importance scores and channel-aware retention K(ξ) (paper 000, Eq. 30-39)."""

    enabled: bool = False
    gamma: float = 1.0  # γ in Eq. 32
    delta: float = 0.1  # δ in Eq. 32
    xi_init: float = 1.0  # initial ξ
    target_prune: float = 0.3  # ρt in Eq. 34
    lambda_max: float = 10.0  # Eq. 39
    lambda_min: float = 0.01  # Eq. 39


@dataclass(frozen=True)
class TokenConfig:
    """Budget-token selection (papers 001 and 003)."""

    enabled: bool = False
    select_at: int = 0
    adaptive_layers: tuple[int, ...] = (0,)
    margin: float = 0.05
    penalty: str = "local"  # "local" (003 Eq. 8) or "global" (003 Eq. 7)
    train_selection: str = "soft"  # "soft" (papers' masks) or "topk" (hard, straight-through)
    inner_weight: float = 1.0
    output_weight: float = 1.0


@dataclass(frozen=True)
class CoderConfig:
    """Channel coder: one encoder/decoder pair per ratio level; ``symbols`` complex symbols per token."""

    symbols: tuple[int, ...] = (32,)
    hidden: int = 0  # 0: one linear layer each way (000 Table II), > 0: three-layer MLPs (001)


@dataclass(frozen=True)
class TrainConfig:
    """Defaults for ``edgesc train``; every field can be overridden on the command line."""

    data: str = "photos32"
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 100
    steps: int = 2000
    snr_db: tuple[float, float] = (0.0, 20.0)
    channel: str = "awgn"
    stage: str = "full"
    erasure: float = 0.0  # token erasure probability used in training


@dataclass(frozen=True)
class ModelConfig:
    """A complete model preset. See ``docs/contract.md`` for the meaning of every field."""

    name: str
    task: str = "reconstruction"
    image_size: int = 32
    channels: int = 3
    patch_size: int = 8
    embed_dim: int = 192
    heads: int = 8
    mlp_ratio: int = 4
    mlp_groups: int = 8
    activation: str = "relu"
    num_classes: int = 0
    class_token: bool = False
    description: str = ""
    encoder: StackConfig = field(default_factory=StackConfig)
    decoder: StackConfig = field(default_factory=StackConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)
    width: WidthConfig = field(default_factory=WidthConfig)
    tokens: TokenConfig = field(default_factory=TokenConfig)
    coder: CoderConfig = field(default_factory=CoderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    # ---- derived sizes -------------------------------------------------------------------------------------
    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def mlp_dim(self) -> int:
        return self.mlp_ratio * self.embed_dim

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.heads

    @property
    def group_dim(self) -> int:
        return self.mlp_dim // self.mlp_groups

    @property
    def specials(self) -> int:
        """Tokens besides the patches in the encoder: class token and budget token."""
        return int(self.class_token) + int(self.tokens.enabled)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    def replace(self, **changes: Any) -> "ModelConfig":
        return from_dict({**self.to_dict(), **changes})


_SECTIONS: dict[str, type] = {
    "encoder": StackConfig,
    "decoder": StackConfig,
    "depth": DepthConfig,
    "width": WidthConfig,
    "tokens": TokenConfig,
    "coder": CoderConfig,
    "train": TrainConfig,
}


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def _coerce(section: str, cls: type, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"[{section}] must be a table, got {type(raw).__name__}")
    names = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ConfigError(f"unknown key(s) in [{section}]: {', '.join(unknown)} (known: {', '.join(names)})")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        default = names[key].default
        values[key] = _check_type(f"{section}.{key}" if section else key, default, value)
    return cls(**values)


def _check_type(key: str, default: Any, value: Any) -> Any:
    if default is dataclasses.MISSING or isinstance(default, type(dataclasses.MISSING)):
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        kind = type(default[0]) if default else None
        out = []
        for v in value:
            if kind is float and isinstance(v, (int, float)) and not isinstance(v, bool):
                out.append(float(v))
            elif kind is int and isinstance(v, int) and not isinstance(v, bool):
                out.append(v)
            elif kind is None:
                out.append(v)
            else:
                raise ConfigError(f"{key} must be a list of {kind.__name__}, got {value!r}")
        return tuple(out)
    return value


def from_dict(raw: dict[str, Any]) -> ModelConfig:
    """Build and validate a :class:`ModelConfig` from plain data (a parsed TOML file or a checkpoint's config)."""
    if not isinstance(raw, dict):
        raise ConfigError("a model config must be a table")
    if "name" not in raw or not isinstance(raw["name"], str):
        raise ConfigError("a model config needs a string 'name'")
    top = {f.name: f for f in fields(ModelConfig)}
    unknown = sorted(set(raw) - set(top))
    if unknown:
        raise ConfigError(f"unknown top-level key(s) in config '{raw['name']}': {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _SECTIONS:
            values[key] = _coerce(key, _SECTIONS[key], value)
        else:
            default = top[key].default
            values[key] = _check_type(key, default, value)
    cfg = ModelConfig(**values)
    validate(cfg)
    return cfg


def validate(cfg: ModelConfig) -> None:
    """Check cross-field consistency; raise :class:`ConfigError` naming the problem."""
    n = cfg.name
    for key in ("image_size", "channels", "patch_size", "embed_dim", "heads", "mlp_ratio", "mlp_groups"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{n}: {key} must be a positive integer, got {getattr(cfg, key)}")
    if cfg.num_classes < 0:
        raise ConfigError(f"{n}: num_classes must be >= 0, got {cfg.num_classes}")
    _check_finite(cfg)
    if cfg.task not in ("reconstruction", "classification"):
        raise ConfigError(f"{n}: task must be 'reconstruction' or 'classification', got {cfg.task!r}")
    if cfg.image_size <= 0 or cfg.patch_size <= 0 or cfg.image_size % cfg.patch_size:
        raise ConfigError(f"{n}: image_size {cfg.image_size} must be a positive multiple of patch_size {cfg.patch_size}")
    if cfg.embed_dim % cfg.heads:
        raise ConfigError(f"{n}: embed_dim {cfg.embed_dim} must be divisible by heads {cfg.heads}")
    if cfg.mlp_groups <= 0 or cfg.mlp_dim % cfg.mlp_groups:
        raise ConfigError(f"{n}: mlp_dim {cfg.mlp_dim} must be divisible by mlp_groups {cfg.mlp_groups}")
    if cfg.activation not in ("relu", "gelu"):
        raise ConfigError(f"{n}: activation must be 'relu' or 'gelu', got {cfg.activation!r}")
    if cfg.task == "classification":
        if cfg.num_classes < 2:
            raise ConfigError(f"{n}: classification needs num_classes >= 2")
        if not cfg.class_token:
            raise ConfigError(f"{n}: classification presets need class_token = true")
    for side in ("encoder", "decoder"):
        s: StackConfig = getattr(cfg, side)
        if s.units < 1 or s.recursions < 1:
            raise ConfigError(f"{n}: [{side}] units and recursions must be >= 1")
    if cfg.depth.enabled and not (0.0 < cfg.depth.threshold <= 1.0):
        raise ConfigError(f"{n}: depth.threshold must be in (0, 1], got {cfg.depth.threshold}")
    if cfg.depth.enabled and (cfg.depth.alpha <= 0 or cfg.depth.beta < 0 or cfg.depth.tau < 0):
        raise ConfigError(f"{n}: depth.alpha must be > 0 and depth.beta, depth.tau >= 0, got alpha "
                          f"{cfg.depth.alpha}, beta {cfg.depth.beta}, tau {cfg.depth.tau}")
    if cfg.width.enabled and not (0.0 <= cfg.width.target_prune < 1.0):
        raise ConfigError(f"{n}: width.target_prune must be in [0, 1), got {cfg.width.target_prune}")
    w = cfg.width
    if w.enabled and (w.gamma <= 0 or w.lambda_min < 0 or w.lambda_max < w.lambda_min):
        raise ConfigError(f"{n}: width needs gamma > 0 and 0 <= lambda_min <= lambda_max, got gamma {w.gamma}, "
                          f"lambda_min {w.lambda_min}, lambda_max {w.lambda_max}")
    t = cfg.tokens
    if t.enabled:
        if t.penalty not in ("local", "global"):
            raise ConfigError(f"{n}: tokens.penalty must be 'local' or 'global', got {t.penalty!r}")
        if t.train_selection not in ("soft", "topk"):
            raise ConfigError(f"{n}: tokens.train_selection must be 'soft' or 'topk', got {t.train_selection!r}")
        if not t.adaptive_layers or t.adaptive_layers[0] != t.select_at:
            raise ConfigError(f"{n}: tokens.adaptive_layers must start with select_at ({t.select_at})")
        if any(not (0 <= a < cfg.encoder.layers) for a in t.adaptive_layers):
            raise ConfigError(f"{n}: tokens.adaptive_layers must lie in [0, {cfg.encoder.layers})")
        if list(t.adaptive_layers) != sorted(set(t.adaptive_layers)):
            raise ConfigError(f"{n}: tokens.adaptive_layers must be strictly increasing")
        if t.margin < 0 or t.inner_weight < 0 or t.output_weight < 0:
            raise ConfigError(f"{n}: tokens.margin, tokens.inner_weight and tokens.output_weight must be >= 0")
    if not cfg.coder.symbols or any(s < 1 for s in cfg.coder.symbols):
        raise ConfigError(f"{n}: coder.symbols must be a non-empty list of positive integers")
    if cfg.coder.hidden < 0:
        raise ConfigError(f"{n}: coder.hidden must be >= 0 (0: linear coder), got {cfg.coder.hidden}")
    tr = cfg.train
    if len(tr.snr_db) != 2 or tr.snr_db[0] > tr.snr_db[1]:
        raise ConfigError(f"{n}: train.snr_db must be [low, high] with low <= high, got {list(tr.snr_db)}")
    for key, low in (("batch_size", 1), ("steps", 1), ("warmup_steps", 0)):
        if getattr(tr, key) < low:
            raise ConfigError(f"{n}: train.{key} must be >= {low}, got {getattr(tr, key)}")
    if tr.weight_decay < 0:
        raise ConfigError(f"{n}: train.weight_decay must be >= 0, got {tr.weight_decay}")
    if tr.channel not in ("awgn", "rayleigh", "rayleigh-nocsi"):
        raise ConfigError(f"{n}: train.channel must be awgn, rayleigh or rayleigh-nocsi, got {tr.channel!r}")
    if tr.stage not in ("full", "width", "depth", "joint"):
        raise ConfigError(f"{n}: train.stage must be full, width, depth or joint, got {tr.stage!r}")
    if not (0.0 <= tr.erasure < 1.0):
        raise ConfigError(f"{n}: train.erasure must be in [0, 1), got {tr.erasure}")
    if tr.lr <= 0:
        raise ConfigError(f"{n}: train.lr must be positive, got {tr.lr}")


def _check_finite(cfg: ModelConfig) -> None:
    """Every float of the config (top level and sections, lists included) must be finite: TOML allows nan/inf."""
    for key, value in cfg.to_dict().items():
        items = value.items() if isinstance(value, dict) else [("", value)]
        for sub, v in items:
            for x in (v if isinstance(v, list) else [v]):
                if isinstance(x, float) and not math.isfinite(x):
                    name = f"{key}.{sub}" if sub else key
                    raise ConfigError(f"{cfg.name}: {name} must be a finite number, got {x}")


def presets_dir() -> Path:
    """The folder holding the shipped presets (``models/presets`` in a checkout, ``edgesc_zoo/presets`` installed)."""
    return Path(str(resources.files("edgesc_zoo"))) / "presets"


def zoo_dir() -> Path:
    """The model zoo folder (``models/``): presets, model cards and shipped checkpoints."""
    return Path(str(resources.files("edgesc_zoo")))


def list_presets() -> list[str]:
    return sorted(p.stem for p in presets_dir().glob("*.toml"))


def load_config(path: str | Path) -> ModelConfig:
    """Load a config from a TOML file."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config path is a directory, not a .toml file: {p}")
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from None
    if not raw:
        raise ConfigError(f"config file {p} is empty (a config needs at least the model sizes; see "
                          f"models/presets/*.toml)")
    raw.setdefault("name", p.stem)
    try:
        return from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def load_preset(name_or_path: str | Path) -> ModelConfig:
    """Load a shipped preset by name (``recvit``), or a TOML file by path."""
    s = str(name_or_path)
    if s.endswith(".toml") or "/" in s:
        return load_config(s)
    path = presets_dir() / f"{s}.toml"
    if not path.is_file():
        known = ", ".join(list_presets()) or "(none)"
        raise ConfigError(f"unknown preset '{s}' (known: {known})")
    return load_config(path)
