"""Helpers for tests of models and of everything built on them (export, runtime, training).

An untrained model halts nowhere, keeps units in index order and ranks tokens almost at random; equivalence
tests would then exercise little. :func:`randomize_controllers` gives the controllers random, varied settings
so that tokens halt at different layers, units are reordered, and the token ranking is informative.
"""
from __future__ import annotations

import torch
from torch import nn

from .depth import DepthController
from .tokens import TokenSelector
from .width import WidthController


@torch.no_grad()
def randomize_controllers(model: nn.Module, seed: int = 0, halt_bias: float = 0.0, halt_scale: float = 3.0) -> nn.Module:
    """Randomise halting heads, importance scores / thresholds ξ and token gates in place; returns ``model``."""
    g = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, DepthController):
            e = mod.halt.weight.shape[1]
            mod.halt.weight.copy_(torch.randn(mod.halt.weight.shape, generator=g) * halt_scale / e ** 0.5)
            mod.halt.bias.fill_(halt_bias)
        elif isinstance(mod, WidthController):
            mod.head_scores.copy_(torch.randn(mod.head_scores.shape, generator=g))
            mod.group_scores.copy_(torch.randn(mod.group_scores.shape, generator=g))
            mod.xi.copy_(torch.randn(mod.xi.shape, generator=g))
        elif isinstance(mod, TokenSelector):
            for lin in list(mod.gates) + list(mod.thresholds):
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=g))
    return model
