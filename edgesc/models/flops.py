"""FLOP and parameter accounting (paper 000 Table I, Table III; docs/contract.md "Executed FLOPs").

Convention everywhere: FLOPs = 2·MACs over matmul-class ops (linear, matmul, conv, bmm, sdpa), which is what
``torch.utils.flop_counter.FlopCounterMode`` counts.

* :func:`table1_layer_macs` — Table I per layer: ``4ME² + 2M²E + 2MED``.
* :func:`layer_macs` — the executed per-layer model (tokens present ``T``, active ``n``, heads ``h``, groups ``g``).
* :func:`executed_flops` — per-image executed FLOPs of an inference module call from its statistics outputs.
* :func:`analytic_flops` — full-model FLOPs at full budget / depth / width for a config.
* :func:`counted_flops` — run a callable under ``FlopCounterMode``; :func:`param_counts` — Table III counts.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from edgesc.config import ModelConfig


def table1_layer_macs(tokens: int, embed_dim: int, mlp_dim: int) -> int:
    """Table I of paper 000: ``4ME² + 2M²E + 2MED`` MACs for one full transformer layer."""
    m, e, d = tokens, embed_dim, mlp_dim
    return 4 * m * e * e + 2 * m * m * e + 2 * m * e * d


def table1_layer_flops(tokens: int, embed_dim: int, mlp_dim: int) -> int:
    return 2 * table1_layer_macs(tokens, embed_dim, mlp_dim)


def layer_macs(cfg: ModelConfig, tokens: int, active: int, heads: int, groups: int, halting: bool) -> int:
    """Executed MACs of one layer for one image (contract formula); 0 when no token is active."""
    if active == 0:
        return 0
    e = cfg.embed_dim
    hd = heads * cfg.head_dim
    gd = groups * cfg.group_dim
    t, n = tokens, active
    return 3 * t * e * hd + 2 * t * t * hd + n * hd * e + 2 * n * e * gd + (n * e if halting else 0)


def coder_macs(cfg: ModelConfig, symbols: int, side: str) -> int:
    """Channel coder MACs per token: linear ``E·2S``; MLP ``E·h + h·h + h·2S`` (and mirrored on the decoder)."""
    e, h, s2 = cfg.embed_dim, cfg.coder.hidden, 2 * symbols
    if h == 0:
        return e * s2
    return e * h + h * h + h * s2 if side == "encoder" else s2 * h + h * h + h * e


def _as_list(x: Tensor | Any) -> list:
    return x.tolist() if isinstance(x, Tensor) else list(x)


def executed_flops(cfg: ModelConfig, side: str, layer_tokens: Tensor, width_units: Tensor, transmitted: int,
                   symbols: int) -> list[int]:
    """Per-image executed FLOPs of an inference-module call (contract formula) from its statistics.

    ``transmitted``: K, the tokens sent (incl. the class token); ``symbols``: S per token.
    """
    lt = _as_list(layer_tokens)
    wu = _as_list(width_units)
    m, e = cfg.num_patches, cfg.embed_dim
    cpp = cfg.channels * cfg.patch_size ** 2
    halting = cfg.depth.enabled
    out = []
    for counts in lt:
        L = len(counts)
        if side == "encoder":
            macs = m * cpp * e
            if cfg.tokens.enabled:
                macs += (m + 1) * e
            kept = transmitted - int(cfg.class_token)
            before, after = m + cfg.specials, kept + cfg.specials
            sel = cfg.tokens.select_at if cfg.tokens.enabled else L
            for layer in range(L):
                t = before if layer < sel else after
                macs += layer_macs(cfg, t, counts[layer], wu[layer][0], wu[layer][1], halting and layer < L - 1)
            macs += transmitted * coder_macs(cfg, symbols, "encoder")
        else:
            macs = transmitted * coder_macs(cfg, symbols, "decoder")
            t = m if cfg.task == "reconstruction" else transmitted
            for layer in range(L):
                macs += layer_macs(cfg, t, counts[layer], wu[layer][0], wu[layer][1], halting and layer < L - 1)
            macs += m * e * cpp if cfg.task == "reconstruction" else e * cfg.num_classes
        out.append(2 * macs)
    return out


def analytic_flops(cfg: ModelConfig, ratio: int = 0) -> dict[str, int]:
    """Per-image FLOPs of the full model (all tokens, every layer, full width), encoder / decoder / total."""
    m = cfg.num_patches
    k = m + int(cfg.class_token)
    s = cfg.coder.symbols[ratio]
    res = {}
    for side, t_all in (("encoder", m + cfg.specials), ("decoder", m if cfg.task == "reconstruction" else k)):
        layers = getattr(cfg, side).layers
        lt = [[t_all] * layers]
        wu = [[cfg.heads, cfg.mlp_groups]] * layers
        res[side] = executed_flops(cfg, side, lt, wu, k, s)[0]
    res["total"] = res["encoder"] + res["decoder"]
    return res


def counted_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, int]:
    """Call ``fn`` under ``torch.utils.flop_counter.FlopCounterMode``; returns (result, total FLOPs)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        result = fn(*args, **kwargs)
    return result, int(counter.get_total_flops())


def param_counts(model: nn.Module) -> dict[str, int]:
    """Parameter counts (Table III): total, encoder (device side), decoder (server side)."""
    def count(mod: nn.Module) -> int:
        return sum(p.numel() for p in mod.parameters())

    enc = count(model.encoder) if hasattr(model, "encoder") else 0
    dec = count(model.decoder) if hasattr(model, "decoder") else 0
    return {"total": count(model), "encoder": enc, "decoder": dec}
