"""Checkpoints in the ``edgesc-ckpt/1`` format (docs/contract.md, "Checkpoints").

A checkpoint is a ``torch.save`` dict::

    {"format": "edgesc-ckpt/1", "config": <preset dict>, "model": state_dict, "step": int,
     "optimizer": ..., "scheduler": ..., "rng": ..., "stage": str, "metrics": {...}, "dtype": "float32"}

Writes are atomic: the bytes go to a temporary file in the same directory, are flushed and fsync'ed, and only
then ``os.replace`` puts them in place, so a crash mid-write leaves the previous checkpoint intact.
Reads use ``torch.load(weights_only=True)`` (no arbitrary pickles) and turn every failure into a
:class:`~edgesc.errors.CheckpointError` naming the file. Shipped checkpoints (:func:`export_weights`) drop the
optimizer, scheduler and RNG state and store float16 weights (``"dtype": "float16"``).
"""
from __future__ import annotations

import hashlib
import os
import random
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch

from edgesc.config import ModelConfig, from_dict
from edgesc.errors import CheckpointError, ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

FORMAT = "edgesc-ckpt/1"
SHIP_LIMIT_BYTES = 20 * 1024 * 1024
"""Shipped checkpoints must stay below this size (the submission is size-limited)."""

_TRAINING_STATE = ("optimizer", "scheduler", "rng")


# ---- RNG state --------------------------------------------------------------------------------------------
def capture_rng_state() -> dict[str, Any]:
    """The state of every generator training draws from (python, numpy, torch CPU and CUDA), as plain data.

    numpy's key array is stored as a tensor so that the checkpoint loads with ``weights_only=True``.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- writing ----------------------------------------------------------------------------------------------
def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically: temp file in the same directory, fsync, ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write a text file atomically (temp file in the same folder, fsync, ``os.replace``): readers see the old
    file or the new one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _config_dict(cfg: ModelConfig | Mapping[str, Any]) -> dict[str, Any]:
    return cfg.to_dict() if isinstance(cfg, ModelConfig) else dict(cfg)


def save_checkpoint(
    path: str | Path,
    *,
    cfg: ModelConfig | Mapping[str, Any],
    model: "nn.Module | Mapping[str, torch.Tensor]",
    step: int = 0,
    stage: str = "full",
    optimizer: Any = None,
    scheduler: Any = None,
    rng: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write an ``edgesc-ckpt/1`` checkpoint atomically and return its path.

    ``model`` is a module (its ``state_dict`` is stored, unwrapping DDP) or a state dict; ``optimizer`` and
    ``scheduler`` are objects with ``state_dict()`` or already state dicts; ``rng`` is
    :func:`capture_rng_state` output. ``extra`` adds further plain-data keys (e.g. the training options).
    """
    if hasattr(model, "module") and hasattr(model, "state_dict") and hasattr(model.module, "state_dict"):
        model = model.module  # DistributedDataParallel
    state = model.state_dict() if hasattr(model, "state_dict") else dict(model)
    state = {k: v.detach().cpu() for k, v in state.items()}
    obj: dict[str, Any] = {
        "format": FORMAT,
        "config": _config_dict(cfg),
        "model": state,
        "step": int(step),
        "stage": str(stage),
        "metrics": dict(metrics or {}),
        "dtype": "float32",
    }
    if optimizer is not None:
        obj["optimizer"] = optimizer.state_dict() if hasattr(optimizer, "state_dict") else optimizer
    if scheduler is not None:
        obj["scheduler"] = scheduler.state_dict() if hasattr(scheduler, "state_dict") else scheduler
    if rng is not None:
        obj["rng"] = dict(rng)
    for key, value in (extra or {}).items():
        if key in obj:
            raise ValueError(f"extra key {key!r} collides with a checkpoint field")
        obj[key] = value
    return atomic_torch_save(obj, path)


# ---- reading ----------------------------------------------------------------------------------------------
def is_edgesc_checkpoint(path: str | Path) -> bool:
    """True unless ``path`` is readable weights that are not an edgesc checkpoint (a timm-format ViT/DeiT state
    dict, ``.safetensors`` or torch). Unreadable files count as edgesc checkpoints, so that
    :func:`read_checkpoint` reports the precise problem."""
    p = Path(path)
    if p.suffix == ".safetensors":
        return False
    if not p.is_file():
        return True
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any failure is reported by read_checkpoint
        return True
    return not isinstance(obj, dict) or "format" in obj


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate the raw checkpoint dict; float16 weights are returned as float32.

    Raises :class:`CheckpointError` naming ``path`` when it is missing, truncated, corrupt or not an edgesc
    checkpoint.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}")
    if not p.is_file():
        raise CheckpointError(f"checkpoint is not a file: {p}")
    if p.stat().st_size == 0:
        raise CheckpointError(f"checkpoint is empty (truncated?): {p}")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles before failing on them
            warnings.simplefilter("ignore")
            obj = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # zip errors, EOF, unpickling of foreign objects, ...
        raise CheckpointError(f"cannot read checkpoint {p}: {_load_failure(p, exc)}") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{p} is not an edgesc checkpoint (expected format {FORMAT!r}, found {found!r})")
    for key, kind in (("config", dict), ("model", dict)):
        if not isinstance(obj.get(key), kind):
            raise CheckpointError(f"{p}: checkpoint has no valid {key!r} entry")
    bad = [k for k, v in obj["model"].items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{p}: checkpoint weights {_keys(bad)} are not tensors")
    if isinstance(obj.get("step", 0), bool) or not isinstance(obj.get("step", 0), int):
        raise CheckpointError(f"{p}: checkpoint step must be an integer, got {obj.get('step')!r}")
    if obj.get("dtype", "float32") == "float16":
        obj["model"] = {k: (v.float() if torch.is_floating_point(v) else v) for k, v in obj["model"].items()}
        obj["dtype"] = "float32"
        obj["stored_dtype"] = "float16"
    obj["path"] = str(p)
    return obj


_ZIP_MAGIC = b"PK\x03\x04"


def _load_failure(p: Path, exc: BaseException) -> str:
    """Why ``torch.load`` failed, in a few words a user can act on (torch's own messages run to paragraphs)."""
    import zipfile

    try:
        with open(p, "rb") as fh:
            head = fh.read(4)
    except OSError as os_exc:
        return os_exc.strerror or str(os_exc)
    text = str(exc).strip()
    first = text.splitlines()[0][:120] if text else type(exc).__name__
    if head == _ZIP_MAGIC:
        if not zipfile.is_zipfile(p):
            return "the file is truncated (its zip archive has no end; an interrupted write or copy?)"
        if "weights only load failed" in text.lower():
            return "it holds Python objects other than tensors and plain data (refused: weights_only loading)"
        return f"corrupt zip archive ({first})"
    return f"not a PyTorch checkpoint (a .pt file is a zip archive; this one starts with {head!r})"


def _keys(keys: list[str] | tuple[str, ...], limit: int = 4) -> str:
    """``a, b, c, d (+3 more)``: enough names to find the problem, one line."""
    keys = list(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def state_dict_mismatch(state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]) -> dict[str, list[str]]:
    """Compare checkpoint weights ``state`` with a model's ``own`` state dict: names the checkpoint lacks
    (``missing``), names the model does not have (``unexpected``) and ``shape`` mismatches
    (``"name (stored) vs (model)"``)."""
    return {
        "missing": [k for k in own if k not in state],
        "unexpected": [k for k in state if k not in own],
        "shape": [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in state
                  if k in own and tuple(state[k].shape) != tuple(own[k].shape)],
    }


def describe_mismatch(diff: Mapping[str, list[str]]) -> str:
    """One line for :func:`state_dict_mismatch`'s result, e.g. ``shape: a (2,) vs (3,); missing: b``."""
    parts = []
    if diff.get("shape"):
        parts.append(f"{len(diff['shape'])} with another shape (stored vs model): {_keys(diff['shape'])}")
    if diff.get("missing"):
        parts.append(f"{len(diff['missing'])} missing: {_keys(diff['missing'])}")
    if diff.get("unexpected"):
        parts.append(f"{len(diff['unexpected'])} unexpected: {_keys(diff['unexpected'])}")
    return "; ".join(parts)


def non_finite_parameters(model: "nn.Module") -> list[str]:
    """Names of parameters holding NaN or infinite values (a diverged or corrupted checkpoint)."""
    return [n for n, p in model.named_parameters() if torch.is_floating_point(p) and not torch.isfinite(p).all()]


def checkpoint_config(obj: Mapping[str, Any]) -> ModelConfig:
    """The :class:`ModelConfig` stored in a raw checkpoint dict (CheckpointError if it no longer validates)."""
    try:
        return from_dict(dict(obj["config"]))
    except ConfigError as exc:
        raise CheckpointError(f"{obj.get('path', 'checkpoint')}: stored config is invalid: {exc}") from None


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[ModelConfig, "nn.Module", dict[str, Any]]:
    """Load a checkpoint → ``(cfg, model, meta)``.

    ``model`` is ``edgesc.models.build_model(cfg)`` with the stored weights (float32, eval mode, on
    ``map_location``); ``meta`` is the rest of the checkpoint dict (step, stage, metrics, optimizer, ...).
    """
    obj = read_checkpoint(path, map_location)
    cfg = checkpoint_config(obj)
    from edgesc.models import build_model  # late import: models may import heavier things

    model = build_model(cfg)
    diff = state_dict_mismatch(obj["model"], model.state_dict())
    if any(diff.values()):
        raise CheckpointError(f"{path}: weights do not match the stored config '{cfg.name}': {describe_mismatch(diff)}")
    try:
        model.load_state_dict(obj["model"], strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{path}: weights do not match the stored config '{cfg.name}': {first[:200]}") from None
    bad = non_finite_parameters(model)
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} weight tensor(s) hold NaN or inf ({_keys(bad)}): the run that "
                              f"wrote it diverged or the file is corrupt")
    model.to(map_location).eval()
    meta = {k: v for k, v in obj.items() if k not in ("model", "config")}
    return cfg, model, meta


def weights_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """A content hash of a state dict: sha256 over sorted names, dtypes, shapes and float32 bytes.

    Float tensors are hashed as float32 so that an fp16-shipped checkpoint and the run that produced it hash
    differently only when their values differ after rounding.
    """
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu()
        if torch.is_floating_point(t):
            t = t.float()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def export_weights(src: str | Path, dst: str | Path, fp16: bool = True,
                   limit_bytes: int = SHIP_LIMIT_BYTES) -> Path:
    """Write a shippable copy of checkpoint ``src`` to ``dst``: no optimizer/scheduler/RNG, fp16 weights.

    Raises :class:`CheckpointError` if the result exceeds ``limit_bytes`` (20 MB by default).
    """
    obj = read_checkpoint(src)
    out = {k: v for k, v in obj.items() if k not in (*_TRAINING_STATE, "path", "stored_dtype")}
    if fp16:
        out["model"] = {k: (v.half() if torch.is_floating_point(v) else v) for k, v in obj["model"].items()}
        out["dtype"] = "float16"
    else:
        out["dtype"] = "float32"
    dst = Path(dst)
    atomic_torch_save(out, dst)
    size = dst.stat().st_size
    if size > limit_bytes:
        dst.unlink()
        raise CheckpointError(f"{dst}: shipped checkpoint would be {size / 2**20:.1f} MB, over the "
                              f"{limit_bytes / 2**20:.0f} MB limit")
    return dst
