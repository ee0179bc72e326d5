"""Inference form of the codec: the same maths as the training form, with skipped work really not computed,
exportable by ``torch.onnx.export(mod, args, kwargs=controls, dynamo=True, opset_version=20)`` with the controls
as 0-d tensor inputs and a dynamic batch (docs/contract.md "Encoder graph" / "Decoder graph").

How work is skipped without data-dependent control flow (no ONNX If / Loop in the graph):

* Token budget: ``k = clamp(ceil(α·M), 1, M)`` → ``.item()`` with ``torch._check`` bounds → ``topk`` + gather at
  layer ``select_at``; every later layer runs on ``k`` (+ specials) tokens. Kept indices are an output.
* Per-token depth (000 Alg. 1): per layer, the images with any active token are gathered (an image with none skips
  the layer); Q/K/V and attention run on every token of those images (halted tokens stay keys/values with frozen
  values, as in the masked training form); output projection, MLP and stop score run on the active rows only,
  which are scattered back.
* Width (000 Eq. 31): heads and MLP groups are reordered by importance when the inference module is built and
  every unit holds its own weight tensors (no duplication, no run-time weight slicing). Unit ``u`` runs on its
  rows only if ``u < keep``: ROW GATING, i.e. its input is ``x[:n]`` with ``n = rows`` when on and ``0`` when off,
  and its output is zero-padded back before the sum. Unit 0 is always on (keep ≥ 1).
* Ratio levels: the same row gating selects one channel-coder pair; outputs are padded to the largest ``S`` and
  sliced to the selected one.

Statistics outputs: ``layer_tokens`` [B, L] int64 (active tokens per layer and image, 0 = skipped) and
``width_units`` [L, 2] int64 (heads, MLP groups executed per layer). :func:`edgesc.models.flops.executed_flops`
computes the contract's executed-FLOP model from them; ``torch.utils.flop_counter`` agrees exactly.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgesc.config import ModelConfig
from edgesc.errors import ControlError

from .blocks import TransformerBlock, activation_fn
from .coder import normalize_power
from .depth import halting_step
from .tokens import budget_keep
from .width import keep_counts

__all__ = ["InferenceEncoder", "InferenceDecoder", "control_names"]


def control_names(cfg: ModelConfig, side: str) -> list[str]:
    """The control inputs of a side's graph, in order (contract: only the controls the preset has)."""
    names: list[str] = []
    if side == "encoder" and cfg.tokens.enabled:
        names.append("budget")
    if cfg.depth.enabled:
        names.append("depth")
    if cfg.width.enabled:
        names.append("width")
    if cfg.depth.enabled or cfg.width.enabled:
        names.append("snr_db")
    if len(cfg.coder.symbols) > 1:
        names.append("ratio")
    return names


def _unit_flags(keep: Tensor, units: int) -> list:
    """0/1 ints ``[u < keep]`` for u in [0, units) from a 0-d int64 keep count (export: unbacked ints)."""
    flags = [1]
    for u in range(1, units):
        f = (keep > u).to(torch.int64).item()
        torch._check(f >= 0)
        torch._check(f <= 1)
        flags.append(f)
    return flags


def _scaled(flag, size):
    """Row count of a gated unit: ``size`` when ``flag`` is 1, else 0."""
    n = flag * size
    torch._check(n >= 0)
    torch._check(n <= size)
    return n


def _gated(size, on: Tensor) -> int:
    """Row gate: ``size`` when ``on`` (0-d bool tensor) else 0, as an export-friendly unbacked int."""
    n = (on.to(torch.int64) * size).item()
    torch._check(n >= 0)
    torch._check(n <= size)
    return n


def _pad_rows(x: Tensor, rows) -> Tensor:
    """Zero-pad ``x`` [n, C] at the bottom to ``rows`` rows."""
    return F.pad(x, (0, 0, 0, rows - x.shape[0]))


def _param(t: Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().clone().contiguous(), requires_grad=False)


class _InfBlock(nn.Module):
    """One transformer block with its heads / MLP groups as separate unit tensors, ordered by importance."""

    def __init__(self, blk: TransformerBlock, head_order: list[int] | None, group_order: list[int] | None) -> None:
        super().__init__()
        e, h, dh = blk.embed_dim, blk.heads, blk.head_dim
        g, dg = blk.mlp_groups, blk.group_dim
        self.embed_dim, self.head_dim, self.scale = e, dh, blk.scale
        self.activation = blk.activation
        self.ln1 = copy.deepcopy(blk.ln1).requires_grad_(False)
        self.ln2 = copy.deepcopy(blk.ln2).requires_grad_(False)
        head_units = [[i] for i in head_order] if head_order is not None else [list(range(h))]
        group_units = [[i] for i in group_order] if group_order is not None else [list(range(g))]
        self.heads_per_unit = len(head_units[0])
        qkv_w = blk.qkv.weight.detach().reshape(3, h, dh, e)
        qkv_b = blk.qkv.bias.detach().reshape(3, h, dh)
        proj_w = blk.proj.weight.detach().reshape(e, h, dh)
        self.qkv_w = nn.ParameterList(_param(qkv_w[:, u].reshape(-1, e).t()) for u in head_units)  # [E, 3·nh·dh]
        self.qkv_bs = _param(torch.stack([qkv_b[:, u].reshape(1, 1, -1) for u in head_units]))  # [U, 1, 1, 3·nh·dh]
        self.o_w = nn.ParameterList(_param(proj_w[:, u].reshape(e, -1).t()) for u in head_units)  # [nh·dh, E]
        self.o_b = _param(blk.proj.bias)
        fc1_w = blk.fc1.weight.detach().reshape(g, dg, e)
        fc1_b = blk.fc1.bias.detach().reshape(g, dg)
        fc2_w = blk.fc2.weight.detach().reshape(e, g, dg)
        self.fc1_w = nn.ParameterList(_param(fc1_w[u].reshape(-1, e).t()) for u in group_units)  # [E, ng·dg]
        self.fc1_bs = _param(torch.stack([fc1_b[u].reshape(1, -1) for u in group_units]))  # [U, 1, ng·dg]
        self.fc2_w = nn.ParameterList(_param(fc2_w[:, u].reshape(e, -1).t()) for u in group_units)  # [ng·dg, E]
        self.fc2_b = _param(blk.fc2.bias)

    def forward(self, xb: Tensor, act: Tensor | None, head_on: list | None, group_on: list | None) -> Tensor:
        """Update the active rows of ``xb`` [Bb, T, E].

        ``act``: local flat indices (into ``Bb·T``) of the active rows, ``None`` = all rows. Returns the updated
        active rows [n, E]. ``head_on`` / ``group_on``: per unit 0/1 ints (unit ``u`` runs iff 1; ``None``: one
        unit holding all heads / groups); unit 0 always runs.
        """
        bb, t, e = xb.shape
        x_rows = xb.reshape(bb * t, e)
        if act is not None:
            x_rows = x_rows.index_select(0, act)
        z = x_rows + (self._attention(self.ln1(xb), act, head_on) + self.o_b)
        return z + (self._mlp(self.ln2(z), group_on) + self.fc2_b)

    def _attention(self, hn: Tensor, act: Tensor | None, flags: list | None) -> Tensor:
        """MHSA output projection (without bias) for the active rows [n, E].

        Width-gated form: unit ``u`` computes its Q/K/V on ``hn[:f_u·Bb]`` (row gating, its own weight tensor);
        the results are concatenated unit-major, attention runs batched over (unit, image) pairs, and one Split
        routes each unit's active rows to its own output-projection tensor; the unit outputs are summed.
        """
        bb, t, e = hn.shape
        nh, dh = self.heads_per_unit, self.head_dim
        flags = [1] if flags is None else flags
        kh = sum(flags)  # units that run (a SymInt when exported)
        parts = [hn] + [hn[: _scaled(f, bb)] for f in flags[1:]]
        qkv = torch.cat([p @ w for p, w in zip(parts, self.qkv_w)], dim=0)  # [kh·Bb, T, 3·nh·dh]
        qkv = qkv.reshape(kh, bb, t, 3 * nh * dh) + self.qkv_bs[:kh]
        if nh == 1:
            q, k, v = qkv.split(dh, dim=-1)  # [kh, Bb, T, dh]
            att = torch.softmax((q * self.scale) @ k.transpose(-1, -2), dim=-1) @ v
        else:  # one unit holding all heads (width disabled)
            qkv = qkv.reshape(bb, t, 3, nh, dh).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]  # [Bb, nh, T, dh]
            att = (torch.softmax((q * self.scale) @ k.transpose(-1, -2), dim=-1) @ v).transpose(1, 2)
        o = att.reshape(kh, bb * t, nh * dh)
        if act is not None:
            o = o.index_select(1, act)
        n = o.shape[1]
        if len(flags) == 1:
            return o.reshape(n, nh * dh) @ self.o_w[0]
        pieces = torch.split(o.reshape(kh * n, nh * dh), [n] + [f * n for f in flags[1:]])
        return torch.cat([p @ w for p, w in zip(pieces, self.o_w)], dim=0).reshape(kh, n, e).sum(dim=0)

    def _mlp(self, hn2: Tensor, flags: list | None) -> Tensor:
        """MLP output (without the second bias) for rows ``hn2`` [n, E]; groups gated like the heads."""
        n, e = hn2.shape
        act_fn = activation_fn(self.activation)
        if flags is None:
            return act_fn(hn2 @ self.fc1_w[0] + self.fc1_bs[0]) @ self.fc2_w[0]
        kg = sum(flags)
        parts = [hn2] + [hn2[: _scaled(f, n)] for f in flags[1:]]
        hid = torch.cat([p @ w for p, w in zip(parts, self.fc1_w)], dim=0)  # [kg·n, dg]
        dg = self.fc1_bs.shape[-1]
        hid = act_fn(hid.reshape(kg, n, dg) + self.fc1_bs[:kg])
        pieces = torch.split(hid.reshape(kg * n, dg), [n] + [f * n for f in flags[1:]])
        return torch.cat([p @ w for p, w in zip(pieces, self.fc2_w)], dim=0).reshape(kg, n, e).sum(dim=0)


class _InfSide(nn.Module):
    """A side's transformer in inference form: blocks, halting head, width thresholds, final norm."""

    def __init__(self, side) -> None:  # side: codec.TransformerSide
        super().__init__()
        stack = side.stack
        self.recursions, self.layers = stack.recursions, stack.layers
        self.heads, self.groups = stack.blocks[0].heads, stack.blocks[0].mlp_groups
        wc = side.width
        blocks = []
        for u, blk in enumerate(stack.blocks):
            if wc is None:
                blocks.append(_InfBlock(blk, None, None))
            else:
                ho = torch.argsort(wc.head_scores[u].detach(), descending=True, stable=True).tolist()
                go = torch.argsort(wc.group_scores[u].detach(), descending=True, stable=True).tolist()
                blocks.append(_InfBlock(blk, ho, go))
        self.blocks = nn.ModuleList(blocks)
        self.norm = copy.deepcopy(stack.norm).requires_grad_(False)
        self.width_enabled = wc is not None
        if wc is not None:
            self.gamma, self.delta = wc.gamma, wc.delta
            self.xi = _param(wc.xi)
            self.register_buffer("units", wc.units.clone(), persistent=False)
        dc = side.depth
        self.depth_enabled = dc is not None
        if dc is not None:
            self.threshold, self.alpha, self.beta = dc.threshold, dc.alpha, dc.effective_beta
            self.halt_w = _param(dc.halt.weight.t())  # [E, 1]
            self.halt_b = _param(dc.halt.bias)

    def keep(self, width: Tensor | None, noise_var: Tensor | None) -> Tensor | None:
        """Units kept per block [units, 2] int64 (Eq. 32 + contract formula), ``None`` without width."""
        if not self.width_enabled:
            return None
        assert width is not None and noise_var is not None
        retention = torch.sigmoid(self.gamma * self.xi + self.delta * noise_var)
        return keep_counts(self.units, width, retention)

    def width_units(self, keep: Tensor | None, ref: Tensor) -> Tensor:
        if keep is None:
            base = torch.tensor([[self.heads, self.groups]], dtype=torch.int64, device=ref.device)
            # tie to an input so that the graph output is computed, not an initializer
            return base.expand(self.layers, 2) + torch.zeros_like(ref[:1, :1], dtype=torch.int64)
        return keep.repeat_interleave(self.recursions, dim=0)

    def start(self, x: Tensor) -> dict[str, Tensor]:
        b, t, _ = x.shape
        state = {"x": x}
        if self.depth_enabled:
            state["p"] = torch.ones(b, t, dtype=torch.bool, device=x.device)
            state["hc"] = torch.zeros(b, t, dtype=x.dtype, device=x.device)
            state["zout"] = torch.zeros_like(x)
        return state

    def run(self, state: dict[str, Tensor], start: int, stop: int, keep: Tensor | None, depth: Tensor | None,
            noise_var: Tensor | None, counts: list[Tensor], flags: dict | None = None) -> dict[str, Tensor]:
        flags = {} if flags is None else flags
        grid = None
        channel = None
        if self.depth_enabled:
            x0 = state["x"]
            grid = torch.arange(x0.shape[0] * x0.shape[1], device=x0.device).reshape(x0.shape[0], x0.shape[1])
            channel = self.beta * noise_var  # βσ² of Eq. 21, once per graph
        for layer in range(start, stop):
            u = layer // self.recursions
            blk = self.blocks[u]
            if keep is None:
                kh = kg = None
            else:
                if u not in flags:
                    flags[u] = (_unit_flags(keep[u, 0], len(blk.qkv_w)), _unit_flags(keep[u, 1], len(blk.fc1_w)))
                kh, kg = flags[u]
            x = state["x"]
            b, t, e = x.shape
            if not self.depth_enabled:
                counts.append(torch.full((b,), t, dtype=torch.int64, device=x.device))
                state["x"] = blk(x, None, kh, kg).reshape(b, t, e)
                continue
            p, hc = state["p"], state["hc"]
            count = p.sum(dim=1)
            counts.append(count)
            img_idx = torch.nonzero(count > 0).squeeze(1)  # images with any active token
            xb = x.index_select(0, img_idx)
            act = torch.nonzero(p.index_select(0, img_idx).reshape(-1)).squeeze(1)  # local active rows
            z = blk(xb, act, kh, kg)  # [n, E]
            last = layer == self.layers - 1
            if last:
                h = torch.ones(z.shape[0], dtype=x.dtype, device=x.device)
            else:
                logit = torch.addmm(self.halt_b, z, self.halt_w).squeeze(1)
                h = torch.sigmoid(self.alpha * logit - channel)  # Eq. 21
            assert grid is not None
            gidx = grid.index_select(0, img_idx).reshape(-1).index_select(0, act)  # global flat rows
            x_new = x.reshape(b * t, e).index_put((gidx,), z).reshape(b, t, e)
            h_full = torch.zeros(b * t, dtype=x.dtype, device=x.device).index_put((gidx,), h).reshape(b, t)
            forced = torch.ones((), dtype=torch.bool, device=x.device) if last else (depth <= layer + 1)
            step = halting_step(h_full, p, hc, forced, self.threshold)
            state = {"x": x_new, "p": step.active, "hc": step.cumulative,
                     "zout": state["zout"] + step.weight[..., None] * x_new}
        return state

    def finish(self, state: dict[str, Tensor]) -> Tensor:
        return self.norm(state["zout"] if self.depth_enabled else state["x"])


def _scalar(value: Tensor | float | int | None, name: str, default: float | int, dtype: torch.dtype) -> Tensor:
    if value is None:
        return torch.tensor(default, dtype=dtype)
    t = torch.as_tensor(value)
    if not torch.compiler.is_exporting() and t.dim() != 0:
        raise ControlError(f"control '{name}' must be a scalar (0-d tensor), got shape {tuple(t.shape)}")
    return t.to(dtype)


class InferenceEncoder(nn.Module):
    """Device graph: ``(image, budget?, depth?, width?, snr_db?, ratio?) -> (symbols, token_index, layer_tokens,
    width_units)``. Controls the preset lacks are ``None`` (and are not graph inputs)."""

    def __init__(self, encoder) -> None:  # encoder: codec.SemanticEncoder
        super().__init__()
        cfg: ModelConfig = encoder.cfg
        self.cfg = cfg
        self.control_names = control_names(cfg, "encoder")
        self.num_patches = cfg.num_patches
        self.has_cls = cfg.class_token
        self.embed = copy.deepcopy(encoder.embed).requires_grad_(False)
        self.cls_token = None if encoder.cls_token is None else _param(encoder.cls_token)
        self.tokens = None if encoder.tokens is None else copy.deepcopy(encoder.tokens).requires_grad_(False)
        self.side = _InfSide(encoder.side)
        self.coder = copy.deepcopy(encoder.coder).requires_grad_(False)
        self.symbols = tuple(cfg.coder.symbols)
        self.register_buffer("symbol_table", torch.tensor(self.symbols, dtype=torch.int64), persistent=False)
        self.eval()

    def forward(self, image: Tensor, budget: Tensor | None = None, depth: Tensor | None = None,
                width: Tensor | None = None, snr_db: Tensor | None = None, ratio: Tensor | None = None):
        m, cfg = self.num_patches, self.cfg
        b = image.shape[0]
        budget_t = _scalar(budget, "budget", 1.0, torch.float32)
        depth_t = _scalar(depth, "depth", self.side.layers, torch.int64)
        width_t = _scalar(width, "width", 1.0, torch.float32)
        snr_t = _scalar(snr_db, "snr_db", 10.0, torch.float32)
        ratio_t = _scalar(ratio, "ratio", 0, torch.int64)
        if not torch.compiler.is_exporting():
            _check_image(image, cfg)
            _check_controls(budget_t, depth_t, width_t, ratio_t, len(self.symbols))
        noise_var = torch.pow(10.0, -snr_t / 10.0)
        x = self.embed(image)
        parts = [x]
        if self.cls_token is not None:
            parts.append(self.cls_token.expand(b, -1, -1))
        if self.tokens is not None:
            parts.append(self.tokens.budget_token(budget_t).reshape(1, 1, -1).expand(b, -1, -1))
        x = torch.cat(parts, dim=1)
        t_all = x.shape[1]
        keep = self.side.keep(width_t, noise_var)
        counts: list[Tensor] = []
        flags: dict = {}
        state = self.side.start(x)
        index = None
        start = 0
        if self.tokens is not None:
            sel_at = self.tokens.select_at
            state = self.side.run(state, 0, sel_at, keep, depth_t, noise_var, counts, flags)
            xs = state["x"]
            score = self.tokens.selection_score(xs[:, :m], xs[:, t_all - 1])  # [B, M]
            k = budget_keep(budget_t, m).item()
            torch._check(k >= 1)
            torch._check(k <= m)
            index = torch.sort(torch.topk(score, k, dim=1).indices, dim=1).values  # [B, k]
            state = {name: _take_tokens(v, index, m) for name, v in state.items()}
            start = sel_at
        state = self.side.run(state, start, self.side.layers, keep, depth_t, noise_var, counts, flags)
        z = self.side.finish(state)
        kp = m if index is None else index.shape[1]
        tx = z[:, :kp]
        if index is None:
            index = torch.arange(m, device=image.device).expand(b, m)
        if self.has_cls:
            tx = torch.cat([z[:, kp : kp + 1], tx], dim=1)
            index = torch.cat([torch.full((b, 1), m, dtype=torch.int64, device=image.device), index], dim=1)
        symbols = normalize_power(self._code(tx, ratio_t))
        layer_tokens = torch.stack(counts, dim=1)
        return symbols, index, layer_tokens, self.side.width_units(keep, layer_tokens)

    def _code(self, tx: Tensor, ratio: Tensor) -> Tensor:
        b, kk, e = tx.shape
        if len(self.symbols) == 1:
            return self.coder(tx, 0)
        rows = b * kk
        flat = tx.reshape(rows, e)
        smax = max(self.symbols)
        out = None
        for r, s in enumerate(self.symbols):
            xs = flat[: _gated(rows, ratio == r)]
            y = F.pad(self.coder.levels[r](xs), (0, 2 * (smax - s)))
            y = _pad_rows(y, rows)
            out = y if out is None else out + y
        s_sel = self.symbol_table[ratio].item()
        torch._check(s_sel >= 1)
        torch._check(s_sel <= smax)
        return out[:, : 2 * s_sel].reshape(b, kk, s_sel, 2)


def _take_tokens(v: Tensor, index: Tensor, m: int) -> Tensor:
    """Keep the patches ``index`` [B, k] of a per-token state (dim 1) and all specials after the patches."""
    idx = index if v.dim() == 2 else index[..., None].expand(-1, -1, v.shape[-1])
    return torch.cat([torch.gather(v[:, :m], 1, idx), v[:, m:]], dim=1)


def _check_image(image: Tensor, cfg: ModelConfig) -> None:
    if image.dim() != 4 or tuple(image.shape[1:]) != (cfg.channels, cfg.image_size, cfg.image_size):
        raise ControlError(
            f"image must have shape [B, {cfg.channels}, {cfg.image_size}, {cfg.image_size}], got {tuple(image.shape)}"
        )


def _check_controls(budget: Tensor, depth: Tensor, width: Tensor, ratio: Tensor, levels: int) -> None:
    if not (0.0 < float(budget) <= 1.0):
        raise ControlError(f"control 'budget' must be in (0, 1], got {float(budget)}")
    if int(depth) < 1:
        raise ControlError(f"control 'depth' must be >= 1, got {int(depth)}")
    if not (0.0 < float(width) <= 1.0):
        raise ControlError(f"control 'width' must be in (0, 1], got {float(width)}")
    if not (0 <= int(ratio) < levels):
        raise ControlError(f"control 'ratio' must be in [0, {levels}), got {int(ratio)}")


class InferenceDecoder(nn.Module):
    """Server graph: ``(symbols, token_index, depth?, width?, snr_db?, ratio?) -> (image | logits, layer_tokens,
    width_units)``. Missing (erased or unselected) patches are filled with the learned mask token."""

    def __init__(self, decoder) -> None:  # decoder: codec.SemanticDecoder
        super().__init__()
        cfg: ModelConfig = decoder.cfg
        self.cfg = cfg
        self.control_names = control_names(cfg, "decoder")
        self.num_patches = cfg.num_patches
        self.task = cfg.task
        self.coder = copy.deepcopy(decoder.coder).requires_grad_(False)
        self.symbols = tuple(cfg.coder.symbols)
        self.register_buffer("symbol_table", torch.tensor(self.symbols, dtype=torch.int64), persistent=False)
        self.side = _InfSide(decoder.side)
        self.mask_token = None if decoder.mask_token is None else _param(decoder.mask_token)
        self.pos = None if decoder.pos is None else _param(decoder.pos)
        self.head = copy.deepcopy(decoder.head).requires_grad_(False)
        self.eval()

    def forward(self, symbols: Tensor, token_index: Tensor, depth: Tensor | None = None, width: Tensor | None = None,
                snr_db: Tensor | None = None, ratio: Tensor | None = None):
        m = self.num_patches
        b, kk = token_index.shape
        depth_t = _scalar(depth, "depth", self.side.layers, torch.int64)
        width_t = _scalar(width, "width", 1.0, torch.float32)
        snr_t = _scalar(snr_db, "snr_db", 10.0, torch.float32)
        ratio_t = _scalar(ratio, "ratio", 0, torch.int64)
        if not torch.compiler.is_exporting():
            self._check(symbols, token_index, depth_t, width_t, ratio_t)
        noise_var = torch.pow(10.0, -snr_t / 10.0)
        z = self._decode(symbols, ratio_t)  # [B, K, E]
        if self.task == "reconstruction":
            assert self.mask_token is not None and self.pos is not None
            canvas = self.mask_token.expand(b, m, -1)
            x = torch.scatter(canvas, 1, token_index[..., None].expand(-1, -1, z.shape[-1]), z) + self.pos
        else:
            x = z
        keep = self.side.keep(width_t, noise_var)
        counts: list[Tensor] = []
        state = self.side.run(self.side.start(x), 0, self.side.layers, keep, depth_t, noise_var, counts)
        out = self.side.finish(state)
        if self.task == "reconstruction":
            y = self.head(out)
        else:
            sel = (token_index == m).to(out.dtype)
            y = self.head((out * sel[..., None]).sum(dim=1))
        layer_tokens = torch.stack(counts, dim=1)
        return y, layer_tokens, self.side.width_units(keep, layer_tokens)

    def _decode(self, symbols: Tensor, ratio: Tensor) -> Tensor:
        b, kk, s, _ = symbols.shape
        if len(self.symbols) == 1:
            return self.coder(symbols, 0)
        rows = b * kk
        smax = max(self.symbols)
        flat = F.pad(symbols.reshape(rows, 2 * s), (0, 2 * smax - 2 * s))
        out = None
        for r, sr in enumerate(self.symbols):
            xs = flat[: _gated(rows, ratio == r), : 2 * sr]
            y = _pad_rows(self.coder.levels[r](xs), rows)
            out = y if out is None else out + y
        assert out is not None
        return out.reshape(b, kk, out.shape[-1])  # explicit E: K may be 0 (all tokens lost)

    def _check(self, symbols: Tensor, token_index: Tensor, depth: Tensor, width: Tensor, ratio: Tensor) -> None:
        m = self.num_patches
        if symbols.dim() != 4 or symbols.shape[-1] != 2 or symbols.shape[:2] != token_index.shape:
            raise ControlError(f"symbols must be [B, K, S, 2] matching token_index [B, K], got {tuple(symbols.shape)} "
                               f"and {tuple(token_index.shape)}")
        _check_controls(torch.tensor(1.0), depth, width, ratio, len(self.symbols))
        if symbols.shape[2] != self.symbols[int(ratio)]:
            raise ControlError(f"symbols carry {symbols.shape[2]} symbols per token but ratio {int(ratio)} "
                               f"expects {self.symbols[int(ratio)]}")
        hi = m + 1 if self.task == "classification" else m
        if token_index.numel() and (int(token_index.min()) < 0 or int(token_index.max()) >= hi):
            raise ControlError(f"token_index values must be in [0, {hi})")
