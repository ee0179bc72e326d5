"""Initialise an edgesc codec from a timm-format ViT / DeiT state dict (paper 001 §IV: "both the transmitter
and receiver are constructed based on a pre-trained ViT ... we partition the model by selecting a splitting
point": the first blocks become the encoder, the rest the decoder; paper 003 §III starts from a pre-trained
DeiT).

Mapping (timm key → edgesc key), ``B = encoder.units`` being the split point::

    patch_embed.proj.weight [E, C, P, P]  → encoder.embed.proj.weight [E, C·P·P]  (same (c, row, col) order)
    patch_embed.proj.bias                 → encoder.embed.proj.bias
    pos_embed [1, n_prefix + G², E]       → encoder.embed.pos [1, M, E]  (patch part; bicubic resize if G² ≠ M)
    cls_token + pos_embed[:, 0]           → encoder.cls_token             (the class position folded in: exact)
    blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}
                                          → encoder.side.stack.blocks.i.{ln1, qkv, proj, ln2, fc1, fc2}  (i < B)
                                          → decoder.side.stack.blocks.(i−B).{…}                         (i ≥ B)
    norm                                  → decoder.side.stack.norm       (the norm before the head)
    head                                  → decoder.head                  (classification, see ``head``)

The qkv output layout (3, heads, head_dim) and the MLP layout are timm's, so heads / MLP groups of the model
core (:mod:`edgesc.models.blocks`) line up without permutation. Every other edgesc parameter (budget tokens and
gates, channel coder, encoder output norm, halting and width controllers, reconstruction mask token / decoder
positions) keeps its fresh initialisation and is listed in the report. Input normalisation: timm models expect
``(x − mean) / std`` inputs; edgesc images are in [0, 1], so the normalisation is folded exactly into the patch
embedding (``W' = W / std_c``, ``b' = b − Σ W·mean_c / std_c``); pass ``mean=None`` to skip it.

The number of heads is not recorded in a state dict: the preset must state it (DeiT-Tiny: 3, ViT-S: 6).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgesc.errors import CheckpointError

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # DeiT / most timm ViTs
IMAGENET_STD = (0.229, 0.224, 0.225)

_BLOCK_MAP = {
    "norm1.weight": "ln1.weight", "norm1.bias": "ln1.bias",
    "attn.qkv.weight": "qkv.weight", "attn.qkv.bias": "qkv.bias",
    "attn.proj.weight": "proj.weight", "attn.proj.bias": "proj.bias",
    "norm2.weight": "ln2.weight", "norm2.bias": "ln2.bias",
    "mlp.fc1.weight": "fc1.weight", "mlp.fc1.bias": "fc1.bias",
    "mlp.fc2.weight": "fc2.weight", "mlp.fc2.bias": "fc2.bias",
}


@dataclass
class LoadReport:
    """What :func:`load_timm_vit` did: edgesc keys loaded, edgesc keys left at their initialisation, timm keys
    not used (only the head when ``head`` allows it), and notes (resampled positions, folded normalisation)."""

    loaded: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def read_state_dict(source: str | Path | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A timm state dict from a mapping or a file (``.pth``/``.pt``/``.bin`` via ``torch.load(weights_only=True)``,
    ``.safetensors`` when the ``safetensors`` package is installed). DeiT's ``{"model": …}`` and Lightning-style
    ``{"state_dict": …}`` wrappers are unwrapped. :class:`CheckpointError` names the file on any failure."""
    if isinstance(source, Mapping):
        sd: Any = source
        where = "state dict"
    else:
        p = Path(source)
        where = str(p)
        if not p.is_file():
            raise CheckpointError(f"pretrained weights not found: {p}")
        if p.suffix == ".safetensors":
            try:
                from safetensors.torch import load_file
            except ImportError:
                raise CheckpointError(f"{p}: reading .safetensors needs the safetensors package "
                                      "(pip install safetensors), or convert it to .pth") from None
            try:
                sd = load_file(str(p))
            except Exception as exc:  # corrupt header etc.
                raise CheckpointError(f"{p}: not a readable safetensors file ({str(exc).splitlines()[0][:120]})") from None
        else:
            try:
                sd = torch.load(p, map_location="cpu", weights_only=True)
            except Exception as exc:
                reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
                raise CheckpointError(f"cannot read pretrained weights {p}: {reason}") from None
    for wrapper in ("model", "state_dict", "model_state"):
        if isinstance(sd, Mapping) and wrapper in sd and isinstance(sd[wrapper], Mapping):
            sd = sd[wrapper]
            break
    if not isinstance(sd, Mapping) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise CheckpointError(f"{where}: not a state dict of tensors")
    out = {}
    for k, v in sd.items():
        key = k[len("module."):] if k.startswith("module.") else k  # DDP-saved
        out[key] = v
    return out


def _resample_pos(pos: Tensor, grid: int) -> Tensor:
    """Patch positional embeddings ``[1, g·g, E]`` → ``[1, grid·grid, E]`` (bicubic, as timm's resampling)."""
    n = pos.shape[1]
    g = int(round(math.sqrt(n)))
    if g * g != n:
        raise CheckpointError(f"pos_embed has {n} patch positions, not a square grid")
    x = pos.reshape(1, g, g, -1).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(grid, grid), mode="bicubic", align_corners=False, antialias=grid < g)
    return x.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).to(pos.dtype)


def load_timm_vit(
    model: nn.Module,
    path: str | Path | Mapping[str, Tensor],
    *,
    head: str = "auto",
    mean: tuple[float, ...] | None = IMAGENET_MEAN,
    std: tuple[float, ...] | None = IMAGENET_STD,
) -> LoadReport:
    """Copy a timm ViT/DeiT state dict into ``model`` (an :class:`edgesc.models.SemanticCodec`) in place.

    ``head``: ``"load"`` (the head must match ``num_classes``), ``"skip"`` (keep the fresh head), ``"auto"``
    (load it when the shapes match, else keep the fresh head and say so: the usual fine-tuning case, e.g. an
    ImageNet-1k head into a 10-class model). Every other key or shape mismatch — timm keys without an edgesc
    place (layer scale, distillation token, register tokens, …), missing timm keys, block count ≠
    ``encoder.units + decoder.units``, RTU presets (``recursions > 1`` shares weights a ViT does not), patch size,
    embed dim — raises ONE :class:`CheckpointError` listing all of them.
    """
    if head not in ("auto", "load", "skip"):
        raise CheckpointError(f"head must be 'auto', 'load' or 'skip', got {head!r}")
    cfg = model.cfg
    sd = read_state_dict(path)
    where = "state dict" if isinstance(path, Mapping) else str(path)
    own = model.state_dict()
    problems: list[str] = []
    target: dict[str, Tensor] = {}
    used: set[str] = set()
    report = LoadReport()

    def need(key: str) -> Tensor | None:
        if key not in sd:
            problems.append(f"missing {key}")
            return None
        used.add(key)
        return sd[key]

    def put(dst: str, value: Tensor, src: str) -> None:
        if dst not in own:
            problems.append(f"{src}: the model has no {dst}")
            return
        if tuple(value.shape) != tuple(own[dst].shape):
            problems.append(f"{src} {tuple(value.shape)} → {dst} {tuple(own[dst].shape)}: shape mismatch")
            return
        target[dst] = value.to(own[dst].dtype)

    for side in ("encoder", "decoder"):
        if getattr(cfg, side).recursions != 1:
            problems.append(f"preset {cfg.name}: [{side}] recursions = {getattr(cfg, side).recursions}; a ViT has "
                            "one weight set per layer (use recursions = 1)")
    depth = 1 + max((int(k.split(".")[1]) for k in sd if k.startswith("blocks.") and k.split(".")[1].isdigit()),
                    default=-1)
    units_enc, units_dec = cfg.encoder.units, cfg.decoder.units
    if depth != units_enc + units_dec:
        problems.append(f"the state dict has {depth} blocks, preset {cfg.name} has {units_enc} + {units_dec} "
                        "(encoder + decoder units)")

    # patch embedding (+ folded input normalisation)
    w = need("patch_embed.proj.weight")
    b = need("patch_embed.proj.bias")
    if w is not None:
        if w.dim() != 4 or w.shape[1] != cfg.channels or w.shape[2] != cfg.patch_size or w.shape[3] != cfg.patch_size:
            problems.append(f"patch_embed.proj.weight {tuple(w.shape)}: preset {cfg.name} needs "
                            f"[{cfg.embed_dim}, {cfg.channels}, {cfg.patch_size}, {cfg.patch_size}] (patch size "
                            "and channels must match; kernels are not resampled)")
        else:
            w = w.float()
            bias = b.float() if b is not None else torch.zeros(w.shape[0])
            if mean is not None and std is not None:
                if len(mean) != cfg.channels or len(std) != cfg.channels:
                    problems.append(f"mean/std need {cfg.channels} entries")
                else:
                    m_t = torch.tensor(mean, dtype=torch.float32)[None, :, None, None]
                    s_t = torch.tensor(std, dtype=torch.float32)[None, :, None, None]
                    bias = bias - (w * m_t / s_t).sum(dim=(1, 2, 3))
                    w = w / s_t
                    report.notes.append(f"input normalisation mean={tuple(mean)} std={tuple(std)} folded into the "
                                        "patch embedding")
            put("encoder.embed.proj.weight", w.reshape(w.shape[0], -1), "patch_embed.proj.weight")
            put("encoder.embed.proj.bias", bias, "patch_embed.proj.bias")

    # positions and class token
    pos = need("pos_embed")
    prefix = 1 if "cls_token" in sd else 0
    if pos is not None and pos.dim() == 3:
        patch_pos = pos[:, prefix:]
        grid = cfg.image_size // cfg.patch_size
        if patch_pos.shape[1] != grid * grid:
            try:
                patch_pos = _resample_pos(patch_pos, grid)
                report.notes.append(f"pos_embed resampled from {pos.shape[1] - prefix} to {grid * grid} patch positions")
            except CheckpointError as exc:
                problems.append(str(exc))
        put("encoder.embed.pos", patch_pos, "pos_embed")
        if prefix:
            cls = need("cls_token")
            if cfg.class_token and cls is not None:
                put("encoder.cls_token", cls + pos[:, :1], "cls_token")
            elif not cfg.class_token:
                report.skipped.append("cls_token")
    elif pos is not None:
        problems.append(f"pos_embed {tuple(pos.shape)}: expected [1, N, E]")

    # transformer blocks, split at encoder.units
    for i in range(depth):
        side, j = ("encoder", i) if i < units_enc else ("decoder", i - units_enc)
        for src_suffix, dst_suffix in _BLOCK_MAP.items():
            src = f"blocks.{i}.{src_suffix}"
            v = need(src)
            if v is not None:
                put(f"{side}.side.stack.blocks.{j}.{dst_suffix}", v, src)

    # final norm and head
    for suffix in ("weight", "bias"):
        v = need(f"norm.{suffix}")
        if v is not None:
            put(f"decoder.side.stack.norm.{suffix}", v, f"norm.{suffix}")
    head_keys = [k for k in ("head.weight", "head.bias") if k in sd]
    if head_keys:
        used.update(head_keys)
        matches = (cfg.task == "classification" and "decoder.head.weight" in own
                   and all(tuple(sd[k].shape) == tuple(own[f"decoder.{k}"].shape) for k in head_keys))
        if head == "load" and not matches:
            problems.append(f"head {tuple(sd['head.weight'].shape) if 'head.weight' in sd else ''} does not fit "
                            f"{cfg.name} ({cfg.task}, {cfg.num_classes} classes); use head='auto' or 'skip'")
        elif head != "skip" and matches:
            for k in head_keys:
                put(f"decoder.{k}", sd[k], k)
        else:
            report.skipped.extend(head_keys)
            if head == "auto":
                report.notes.append("head not loaded (shape or task differs): fresh head")
    elif head == "load":
        problems.append("missing head.weight (head='load')")

    unknown = sorted(k for k in sd if k not in used and k not in report.skipped)
    if unknown:
        shown = ", ".join(unknown[:12]) + (f", … ({len(unknown)} in all)" if len(unknown) > 12 else "")
        problems.append(f"timm keys with no edgesc place: {shown}")
    if problems:
        raise CheckpointError(f"{where} does not fit preset {cfg.name}: " + "; ".join(problems))
    result = model.load_state_dict(target, strict=False)
    if result.unexpected_keys:  # cannot happen: every target key was checked against model.state_dict()
        raise CheckpointError(f"internal: unexpected keys {result.unexpected_keys}")
    report.loaded = sorted(target)
    report.initialised = sorted(k for k in own if k not in target)
    return report


__all__ = ["load_timm_vit", "read_state_dict", "LoadReport", "IMAGENET_MEAN", "IMAGENET_STD"]
