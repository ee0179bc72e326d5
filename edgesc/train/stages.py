"""Training stages of paper 000 (Alg. 2) as config transforms and parameter freezing.

* ``full``  — everything at once with the preset as written (depth and width controllers together).
* ``width`` — Alg. 2 lines 2-4: width pruning towards ρt with L_ρ and the adaptive λ_ρ (Eq. 34-39), backbone
  included; dynamic depth is switched off (``depth.enabled = false``: every layer runs, no halting) so the
  importance scores are judged on a stable structure (000 §III-C step 2).
* ``depth`` — Alg. 2 lines 5-7 / §III-C step 3: width-related parameters (importance scores a, thresholds ξ)
  are frozen and the stopping-score controller is trained with the ponder loss (Eq. 29); the channel term βσ²
  of Eq. 21 is removed (``depth.beta = 0``). By default the backbone is fine-tuned with it (``depth_train =
  "backbone"``); ``"controller"`` trains the stopping-score layers only (the paper's literal reading).
* ``joint`` — Alg. 2 over a (ρt, T) grid: ``width`` for every ρt, then ``depth`` for every T from that width
  checkpoint (orchestrated by :mod:`edgesc.train.trainer`).
"""
from __future__ import annotations

import re
from typing import Iterable

from torch import nn

from edgesc.config import ModelConfig
from edgesc.train.options import OptionError

#: name fragments of width-controller parameters (importance scores a and threshold ξ of Eq. 31-32)
WIDTH_PATTERNS = (r"(^|\.)width", r"importance", r"(^|\.|_)xi($|\.|_)", r"score")
#: name fragments of depth-controller parameters (stop-score w, b of Eq. 21)
DEPTH_PATTERNS = (r"(^|\.)depth", r"halt", r"stop")


def stage_config(cfg: ModelConfig, stage: str, *, target_prune: float | None = None,
                 threshold: float | None = None) -> ModelConfig:
    """The config a stage trains (see the module docstring); raises OptionError if the preset lacks the part."""
    d = cfg.to_dict()
    depth, width = dict(d["depth"]), dict(d["width"])
    if target_prune is not None:
        width["target_prune"] = float(target_prune)
    if threshold is not None:
        depth["threshold"] = float(threshold)
    if stage in ("width", "joint") and not cfg.width.enabled:
        raise OptionError(f"--stage {stage}: preset '{cfg.name}' has no dynamic width ([width] enabled = false)")
    if stage in ("depth", "joint") and not cfg.depth.enabled:
        raise OptionError(f"--stage {stage}: preset '{cfg.name}' has no dynamic depth ([depth] enabled = false)")
    if stage == "width":
        depth["enabled"] = False
    elif stage == "depth":
        depth["beta"] = 0.0
    return cfg.replace(depth=depth, width=width)


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(re.search(p, name) for p in patterns)


def width_parameter_names(model: nn.Module) -> list[str]:
    """Names of the width-controller parameters (model hook ``width_parameter_names()`` if it has one)."""
    hook = getattr(model, "width_parameter_names", None)
    if callable(hook):
        return list(hook())
    return [n for n, _ in model.named_parameters() if _matches(n, WIDTH_PATTERNS)]


def depth_parameter_names(model: nn.Module) -> list[str]:
    """Names of the depth-controller parameters (model hook ``depth_parameter_names()`` if it has one)."""
    hook = getattr(model, "depth_parameter_names", None)
    if callable(hook):
        return list(hook())
    return [n for n, _ in model.named_parameters() if _matches(n, DEPTH_PATTERNS)]


def apply_stage_freezing(model: nn.Module, stage: str, depth_train: str = "backbone") -> dict[str, int]:
    """Set ``requires_grad`` for ``stage``; returns counts of trainable and frozen parameters (elements)."""
    if depth_train not in ("backbone", "controller"):
        raise OptionError(f"--depth-train {depth_train!r}: must be backbone or controller")
    for p in model.parameters():
        p.requires_grad_(True)
    if stage == "depth":
        frozen = set(width_parameter_names(model))
        if depth_train == "controller":
            keep = set(depth_parameter_names(model))
            if not keep:
                raise OptionError("--depth-train controller: the model has no depth-controller parameters")
            frozen = {n for n, _ in model.named_parameters()} - keep
        for n, p in model.named_parameters():
            if n in frozen:
                p.requires_grad_(False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "frozen": total - trainable}
