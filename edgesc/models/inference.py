"""Inference form of the codec: the same maths as the training form, with skipped work really not computed,
exportable by ``torch.onnx.export(mod, args, kwargs=controls, dynamo=True, opset_version=20)`` with the controls
as 0-d tensor inputs and a dynamic batch (docs/contract.md "Encoder graph" / "Decoder graph").

How work is skipped without data-dependent control flow (no ONNX If / Loop in the graph):

* Token budget: ``k = clamp(ceil(α·M), 1, M)`` → ``.item()`` with ``torch._check`` bounds → ``topk`` + gather at
  layer ``select_at``; every later layer runs on ``k`` (+ specials) tokens. Kept indices are an output.
* Per-token depth (000 Alg. 1): per layer, the images with any active token are gathered (an image with none skips
  the layer); Q/K/V and attention run on every token of those images (halted tokens stay keys/values with frozen
  values, as in the masked training form); output projection, MLP and stop score run on the active rows only,
  which are scattered back. The state (tokens, halting flags, cumulative scores, output sum) is kept flat
  ``[B·T, ·]`` so that gathers and scatters need no reshapes, and the halting step (Eq. 22-25) is a short
  closed form of :func:`edgesc.models.depth.halting_step` (same values).
* Width (000 Eq. 31): heads and MLP groups are reordered by importance when the inference module is built and
  grouped into at most ``width_chunks`` equal CHUNKS per component (``s`` units each, ``s`` the smallest divisor
  of the unit count giving at most ``width_chunks`` chunks); every chunk holds its own weight tensors (no
  duplication, no run-time weight slicing). Chunk ``c`` runs iff ``c < kc = ceil(keep / s)`` by ROW GATING: its
  input is ``x[None][:g_c]`` with ``g_c = [c < kc]`` ∈ {0, 1}, so a skipped chunk is a matrix product over zero
  rows. Chunk products are concatenated chunk-major, attention runs batched over (chunk, image), one Split routes
  each chunk to its own output tensor and one ReduceSum adds the chunks. Inside the last run chunk the units past
  ``keep`` are zeroed by a 0/1 mask (exact maths: their head output / MLP hidden is multiplied by 0), so compute is
  rounded up to whole chunks: ``width_units`` reports the EXECUTED units ``kc·s`` (docs/contract.md). With
  ``width_chunks >= units`` every chunk is one unit and nothing is masked.
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
from .tokens import budget_keep
from .width import keep_counts

__all__ = ["InferenceEncoder", "InferenceDecoder", "control_names", "chunk_size", "DEFAULT_WIDTH_CHUNKS"]

DEFAULT_WIDTH_CHUNKS = 4  # chunks per width component (heads; MLP groups) in the inference form


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


def chunk_size(units: int, chunks: int) -> int:
    """Units per width chunk: the smallest divisor ``s`` of ``units`` with ``units / s <= chunks``.

    Chunks are equal so that attention can run batched over them. A prime unit count above ``chunks`` (e.g. 7 heads
    with ``chunks = 4``) therefore gets ONE chunk: that component's compute no longer falls with ``width`` (its
    units are only masked); pass ``width_chunks >= units`` for such presets (no shipped preset has one)."""
    return next(s for s in range(1, units + 1) if units % s == 0 and units // s <= chunks)


def _check_chunks(width_chunks: int) -> int:
    if isinstance(width_chunks, bool) or not isinstance(width_chunks, int) or width_chunks < 1:
        raise ControlError(f"width_chunks must be a positive integer, got {width_chunks!r}")
    return width_chunks


def _level_gates(ratio: Tensor, levels: int) -> list:
    """``[ratio == r]`` for every ratio level as export-friendly unbacked 0/1 ints (one comparison, one Split)."""
    on = (ratio == torch.arange(levels, device=ratio.device)).to(torch.int64)
    gates = [g.item() for g in torch.split(on, 1)]
    for g in gates:
        torch._check(g >= 0)
        torch._check(g <= 1)
    return gates


def _param(t: Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().clone().contiguous(), requires_grad=False)


def _gated_products(x: Tensor, weights: nn.ParameterList, gates: list) -> Tensor:
    """``cat_c (x[None][:g_c] @ W_c)`` over the chunks, chunk-major: ``[kc, *x.shape[:-1], F]`` (chunk 0 always)."""
    x1 = x.unsqueeze(0)
    parts = [x1] + [x1[:g] for g in gates]
    return torch.cat([p @ w for p, w in zip(parts, weights)], dim=0)


def _chunk_sum(y: Tensor, weights: nn.ParameterList, gates: list) -> Tensor:
    """``Σ_c y[c] @ W_c`` for ``y`` [kc, n, d]: one Split to the chunks' own tensors, then the chunk outputs are
    added by CumSum + last row (ONNX Runtime's ReduceSum over the chunk axis is ~6× slower on CPU)."""
    pieces = torch.split(y, [1] + list(gates), dim=0)
    return torch.cat([p @ w for p, w in zip(pieces, weights)], dim=0).cumsum(dim=0)[-1]


class _InfBlock(nn.Module):
    """One transformer block with its heads / MLP groups as chunk tensors of ``s`` units, ordered by importance."""

    def __init__(self, blk: TransformerBlock, head_order: list[int] | None, group_order: list[int] | None,
                 chunks: int) -> None:
        super().__init__()
        e, h, dh = blk.embed_dim, blk.heads, blk.head_dim
        g, dg = blk.mlp_groups, blk.group_dim
        self.embed_dim, self.head_dim, self.group_dim, self.scale = e, dh, dg, blk.scale
        self.activation = blk.activation
        self.ln1 = copy.deepcopy(blk.ln1).requires_grad_(False)
        self.ln2 = copy.deepcopy(blk.ln2).requires_grad_(False)
        self.head_chunk = chunk_size(h, chunks) if head_order is not None else h
        self.group_chunk = chunk_size(g, chunks) if group_order is not None else g
        ho = head_order if head_order is not None else list(range(h))
        go = group_order if group_order is not None else list(range(g))
        sh, sg = self.head_chunk, self.group_chunk
        head_units = [ho[i : i + sh] for i in range(0, h, sh)]
        group_units = [go[i : i + sg] for i in range(0, g, sg)]
        # the attention scale 1/sqrt(dh) (Eq. 6) is folded into the query weights and bias
        fold = torch.tensor([blk.scale, 1.0, 1.0]).reshape(3, 1, 1)
        qkv_w = blk.qkv.weight.detach().reshape(3, h, dh, e) * fold[..., None]
        qkv_b = blk.qkv.bias.detach().reshape(3, h, dh) * fold
        proj_w = blk.proj.weight.detach().reshape(e, h, dh)
        # per chunk: columns (q | k | v) × (its s heads) × dh
        self.qkv_w = nn.ParameterList(_param(qkv_w[:, u].reshape(-1, e).t()) for u in head_units)  # [E, 3·s·dh]
        self.qkv_bs = _param(torch.stack([qkv_b[:, u].reshape(1, 1, -1) for u in head_units]))  # [C, 1, 1, 3·s·dh]
        self.o_w = nn.ParameterList(_param(proj_w[:, u].reshape(e, -1).t()) for u in head_units)  # [s·dh, E]
        self.o_b = _param(blk.proj.bias)
        fc1_w = blk.fc1.weight.detach().reshape(g, dg, e)
        fc1_b = blk.fc1.bias.detach().reshape(g, dg)
        fc2_w = blk.fc2.weight.detach().reshape(e, g, dg)
        self.fc1_w = nn.ParameterList(_param(fc1_w[u].reshape(-1, e).t()) for u in group_units)  # [E, s·dg]
        self.fc1_bs = _param(torch.stack([fc1_b[u].reshape(1, -1) for u in group_units]))  # [C, 1, s·dg]
        self.fc2_w = nn.ParameterList(_param(fc2_w[:, u].reshape(e, -1).t()) for u in group_units)  # [s·dg, E]
        self.fc2_b = _param(blk.fc2.bias)

    def forward(self, xb: Tensor, x_rows: Tensor, act: Tensor | None, hg: tuple | None, gg: tuple | None) -> Tensor:
        """Update the active rows of ``xb`` [Bb, T, E]: returns the new rows [n, E].

        ``x_rows`` [n, E]: the active rows themselves; ``act``: their local flat indices into ``Bb·T`` (``None`` =
        all rows). ``hg`` / ``gg``: ``(gates, mask)`` of the heads / MLP groups (``None``: one chunk, all units).
        """
        z = x_rows + (self._attention(self.ln1(xb), act, hg) + self.o_b)
        return z + (self._mlp(self.ln2(z), gg) + self.fc2_b)

    def _attention(self, hn: Tensor, act: Tensor | None, gating: tuple | None) -> Tensor:
        """MHSA output projection (without bias) for the active rows [n, E], chunk-gated (module docstring)."""
        bb, t, e = hn.shape
        s, dh = self.head_chunk, self.head_dim
        if gating is None:  # width disabled: one dense chunk holding every head
            qkv = (hn @ self.qkv_w[0] + self.qkv_bs[0, 0]).reshape(bb, t, 3 * s, dh).transpose(1, 2)
            q, k, v = qkv.split(s, dim=1)  # [Bb, H, T, dh]
            att = (torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v).transpose(1, 2)
            o = att.reshape(-1, s * dh)
            if act is not None:
                o = o.index_select(0, act)
            return o @ self.o_w[0]
        gates, mask = gating
        kc = 1 + sum(gates)
        qkv = _gated_products(hn, self.qkv_w, gates) + self.qkv_bs[:kc]  # [kc, Bb, T, 3·s·dh]
        if s == 1:
            q, k, v = qkv.split(dh, dim=-1)  # [kc, Bb, T, dh]
            att = torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v
        else:
            q, k, v = qkv.reshape(kc, -1, t, 3 * s, dh).transpose(2, 3).split(s, dim=2)  # [kc, Bb, s, T, dh]
            att = (torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v).transpose(2, 3)
        o = att.reshape(kc, -1, s * dh)
        if act is not None:
            o = o.index_select(1, act)
        if mask is not None:
            o = o * mask
        return _chunk_sum(o, self.o_w, gates)

    def _mlp(self, hn2: Tensor, gating: tuple | None) -> Tensor:
        """MLP output (without the second bias) for rows ``hn2`` [n, E]; groups chunk-gated like the heads."""
        act_fn = activation_fn(self.activation)
        if gating is None:
            return act_fn(hn2 @ self.fc1_w[0] + self.fc1_bs[0]) @ self.fc2_w[0]
        gates, mask = gating
        kc = 1 + sum(gates)
        hid = act_fn(_gated_products(hn2, self.fc1_w, gates) + self.fc1_bs[:kc])  # [kc, n, s·dg]
        if mask is not None:
            hid = hid * mask
        return _chunk_sum(hid, self.fc2_w, gates)


class _InfSide(nn.Module):
    """A side's transformer in inference form: blocks, halting head, width thresholds, final norm."""

    def __init__(self, side, width_chunks: int) -> None:  # side: codec.TransformerSide
        super().__init__()
        stack = side.stack
        self.recursions, self.layers = stack.recursions, stack.layers
        self.heads, self.groups = stack.blocks[0].heads, stack.blocks[0].mlp_groups
        wc = side.width
        self.width_chunks = width_chunks
        blocks = []
        for u, blk in enumerate(stack.blocks):
            if wc is None:
                blocks.append(_InfBlock(blk, None, None, width_chunks))
            else:
                ho = torch.argsort(wc.head_scores[u].detach(), descending=True, stable=True).tolist()
                go = torch.argsort(wc.group_scores[u].detach(), descending=True, stable=True).tolist()
                blocks.append(_InfBlock(blk, ho, go, width_chunks))
        self.blocks = nn.ModuleList(blocks)
        self.chunk = (blocks[0].head_chunk, blocks[0].group_chunk)  # units per chunk (heads, MLP groups)
        self.norm = copy.deepcopy(stack.norm).requires_grad_(False)
        self.width_enabled = wc is not None
        if wc is not None:
            self.gamma, self.delta = wc.gamma, wc.delta
            self.xi = _param(wc.xi)
            self.register_buffer("units", wc.units.clone(), persistent=False)
            self.register_buffer("chunk_t", torch.tensor(self.chunk, dtype=torch.int64), persistent=False)
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

    def plan(self, keep: Tensor | None) -> tuple[list, Tensor | None]:
        """Width plan of a forward pass from ``keep`` [units, 2]: per block ``(head gating, group gating)``, each
        ``(gates, mask)`` (see :class:`_InfBlock`; ``None`` without width), and the executed units [units, 2].

        Chunk ``c`` of a component with ``s`` units per chunk runs iff ``keep > c·s``; the executed units are
        ``s·(1 + Σ_c [keep > c·s]) = s·ceil(keep / s)``. One vectorised comparison for every block and component,
        then one ``.item()`` per gate, computed once and shared by the recursions of a block."""
        if keep is None:
            return [(None, None)] * len(self.blocks), None
        blk0 = self.blocks[0]
        comps = ((self.heads, self.chunk[0], blk0.head_dim), (self.groups, self.chunk[1], blk0.group_dim))
        cmax = max(n // sc for n, sc, _ in comps)
        big = max(self.heads, self.groups)  # threshold of a missing chunk: never exceeded
        thr = torch.tensor([[c * sc if c < n // sc else big for c in range(1, cmax)] for n, sc, _ in comps],
                           dtype=torch.int64, device=keep.device).reshape(2, cmax - 1)
        on = (keep[:, :, None] > thr).to(torch.int64)  # [units, 2, cmax - 1]
        executed = (on.sum(dim=-1) + 1) * self.chunk_t
        flat = [] if cmax == 1 else [f.item() for f in torch.split(on.reshape(-1), 1)]
        for f in flat:
            torch._check(f >= 0)
            torch._check(f <= 1)
        masks = []
        for j, (n, sc, d) in enumerate(comps):
            if sc == 1:
                masks.append(None)
                continue  # one unit per chunk: a run chunk is a kept unit
            unit_on = (torch.arange(n, device=keep.device)[None] < keep[:, j : j + 1]).to(blk0.o_b.dtype)
            masks.append(unit_on.reshape(-1, n // sc, 1, sc, 1).expand(-1, -1, 1, sc, d).reshape(-1, n // sc, 1, sc * d))
        out = []
        for u in range(len(self.blocks)):
            pair = []
            for j, (n, sc, _) in enumerate(comps):
                base = (u * 2 + j) * (cmax - 1)
                gates = flat[base : base + n // sc - 1]
                pair.append((gates, None if masks[j] is None else masks[j][u, : 1 + sum(gates)]))
            out.append(tuple(pair))
        return out, executed

    def width_units(self, executed: Tensor | None, ref: Tensor) -> Tensor:
        """``width_units`` [L, 2]: units executed per layer (all of them without width)."""
        if executed is None:
            base = torch.tensor([[self.heads, self.groups]], dtype=torch.int64, device=ref.device)
            # tie to an input so that the graph output is computed, not an initializer
            return base.expand(self.layers, 2) + torch.zeros_like(ref[:1, :1], dtype=torch.int64)
        return executed.repeat_interleave(self.recursions, dim=0)

    def start(self, x: Tensor) -> dict[str, Tensor]:
        """Initial state from tokens ``x`` [B, T, E]; with halting the state is flat ``[B·T, ·]``."""
        if not self.depth_enabled:
            return {"x": x}
        b, t, e = x.shape
        rows = x.reshape(b * t, e)
        return {"x": rows, "p": torch.ones(b * t, 1, dtype=torch.bool, device=x.device),
                "hc": torch.zeros(b * t, 1, dtype=x.dtype, device=x.device), "zout": torch.zeros_like(rows)}

    def run(self, state: dict[str, Tensor], tokens: int, start: int, stop: int, gating: list, depth: Tensor | None,
            noise_var: Tensor | None, counts: list[Tensor]) -> dict[str, Tensor]:
        """Layers ``start``..``stop-1`` on a state with ``tokens`` tokens per image (see :meth:`start`)."""
        channel = zeros = limit = None
        if self.depth_enabled:
            channel = self.beta * noise_var  # βσ² of Eq. 21, once per graph
            zeros = torch.zeros_like(state["hc"])
            # per layer: a token goes on iff h̃ < T, and never past the cap (Alg. 1 line 13): threshold -inf there
            limit = torch.where(depth > torch.arange(1, self.layers + 1, device=zeros.device), self.threshold,
                                float("-inf")).to(zeros.dtype)
        for layer in range(start, stop):
            u = layer // self.recursions
            blk = self.blocks[u]
            hg, gg = gating[u]
            if not self.depth_enabled:
                x = state["x"]
                b, t, e = x.shape
                counts.append(torch.full((b,), t, dtype=torch.int64, device=x.device))
                z = blk(x, x.reshape(b * t, e), None, hg, gg)
                state = {"x": z.reshape(b, t, e)}
                continue
            x, p, hc, zout = state["x"], state["p"], state["hc"], state["zout"]  # flat [B·T, ·]; p bool
            e = x.shape[1]
            p2 = p.reshape(-1, tokens)
            count = p2.sum(dim=1)
            counts.append(count)
            if layer == 0:  # every token is active at the first layer: no gathers, no scatters
                z = blk(x.reshape(-1, tokens, e), x, None, hg, gg)
                x_new = z
            else:
                img_idx = torch.nonzero(count > 0).reshape(-1)  # images with any active token
                xb = x.reshape(-1, tokens, e).index_select(0, img_idx)
                act = torch.nonzero(p2.index_select(0, img_idx).reshape(-1)).reshape(-1)  # local active rows
                gidx = torch.nonzero(p.reshape(-1)).reshape(-1)  # the same rows, global (same order)
                z = blk(xb, F.embedding(gidx, x), act, hg, gg)  # [n, E] (embedding: a Gather without a Reshape)
                x_new = x.index_put((gidx,), z)
            if layer == self.layers - 1:  # Alg. 1 line 13: h = 1, every active token halts with its remainder
                weight = torch.where(p, 1.0 - hc, 0.0)
                p_new, hn = torch.zeros_like(p), hc
            else:
                logit = torch.addmm(self.halt_b, z, self.halt_w)  # [n, 1]
                if self.alpha != 1.0:
                    logit = self.alpha * logit
                h = torch.sigmoid(logit - channel)  # Eq. 21
                if layer > 0:
                    h = zeros.index_put((gidx,), h)  # 0 where inactive
                # halting_step (Eq. 22-25, ACT reading) in closed form: a token goes on iff h̃ < T and not capped
                hn = hc + h
                p_new = p & (hn < limit[layer : layer + 1])
                weight = torch.where(p ^ p_new, 1.0 - hc, h)
            state = {"x": x_new, "p": p_new, "hc": hn, "zout": zout + weight * x_new}  # Eq. 26
        return state

    def finish(self, state: dict[str, Tensor], b: int, tokens: int) -> Tensor:
        if not self.depth_enabled:
            return self.norm(state["x"])
        return self.norm(state["zout"].reshape(b, tokens, -1))
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

    def __init__(self, encoder, width_chunks: int = DEFAULT_WIDTH_CHUNKS) -> None:  # encoder: codec.SemanticEncoder
        super().__init__()
        cfg: ModelConfig = encoder.cfg
        self.width_chunks = _check_chunks(width_chunks)
        self.cfg = cfg
        self.control_names = control_names(cfg, "encoder")
        self.num_patches = cfg.num_patches
        self.has_cls = cfg.class_token
        self.embed = copy.deepcopy(encoder.embed).requires_grad_(False)
        self.cls_token = None if encoder.cls_token is None else _param(encoder.cls_token)
        self.tokens = None if encoder.tokens is None else copy.deepcopy(encoder.tokens).requires_grad_(False)
        self.side = _InfSide(encoder.side, self.width_chunks)
        self.chunk_units = self.side.chunk  # units per width chunk (heads, MLP groups): for the manifest
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
        gating, executed = self.side.plan(self.side.keep(width_t, noise_var))
        counts: list[Tensor] = []
        state = self.side.start(x)
        index = None
        start, tokens = 0, t_all
        if self.tokens is not None:
            sel_at = self.tokens.select_at
            state = self.side.run(state, tokens, 0, sel_at, gating, depth_t, noise_var, counts)
            state = {name: v.reshape(b, tokens, -1) for name, v in state.items()}
            xs = state["x"]
            score = self.tokens.selection_score(xs[:, :m], xs[:, t_all - 1])  # [B, M]
            k = budget_keep(budget_t, m).item()
            torch._check(k >= 1)
            torch._check(k <= m)
            index = torch.sort(torch.topk(score, k, dim=1).indices, dim=1).values  # [B, k]
            tokens = k + t_all - m
            state = {name: _take_tokens(v, index, m) for name, v in state.items()}
            if self.side.depth_enabled:
                state = {name: v.reshape(b * tokens, v.shape[-1]) for name, v in state.items()}
            start = sel_at
        state = self.side.run(state, tokens, start, self.side.layers, gating, depth_t, noise_var, counts)
        z = self.side.finish(state, b, tokens)
        kp = m if index is None else index.shape[1]
        tx = z[:, :kp]
        if index is None:
            index = torch.arange(m, device=image.device).expand(b, m)
        if self.has_cls:
            tx = torch.cat([z[:, kp : kp + 1], tx], dim=1)
            index = torch.cat([torch.full((b, 1), m, dtype=torch.int64, device=image.device), index], dim=1)
        symbols = normalize_power(self._code(tx, ratio_t))
        layer_tokens = torch.stack(counts, dim=1)
        return symbols, index, layer_tokens, self.side.width_units(executed, layer_tokens)

    def _code(self, tx: Tensor, ratio: Tensor) -> Tensor:
        b, kk, e = tx.shape
        if len(self.symbols) == 1:
            return self.coder(tx, 0)
        flat = tx.reshape(b * kk, e)[None]
        smax = max(self.symbols)
        # row gating over a leading axis of size [ratio == r]: only the selected level's coder runs
        pieces = [F.pad(self.coder.levels[r](flat[:g]), (0, 2 * (smax - s)))
                  for r, (g, s) in enumerate(zip(_level_gates(ratio, len(self.symbols)), self.symbols))]
        out = torch.cat(pieces, dim=0).sum(dim=0)  # [B·K, 2·S_max], the one selected level
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

    def __init__(self, decoder, width_chunks: int = DEFAULT_WIDTH_CHUNKS) -> None:  # decoder: codec.SemanticDecoder
        super().__init__()
        cfg: ModelConfig = decoder.cfg
        self.width_chunks = _check_chunks(width_chunks)
        self.cfg = cfg
        self.control_names = control_names(cfg, "decoder")
        self.num_patches = cfg.num_patches
        self.task = cfg.task
        self.coder = copy.deepcopy(decoder.coder).requires_grad_(False)
        self.symbols = tuple(cfg.coder.symbols)
        self.register_buffer("symbol_table", torch.tensor(self.symbols, dtype=torch.int64), persistent=False)
        self.side = _InfSide(decoder.side, self.width_chunks)
        self.chunk_units = self.side.chunk  # units per width chunk (heads, MLP groups): for the manifest
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
        gating, executed = self.side.plan(self.side.keep(width_t, noise_var))
        counts: list[Tensor] = []
        t = x.shape[1]
        state = self.side.run(self.side.start(x), t, 0, self.side.layers, gating, depth_t, noise_var, counts)
        out = self.side.finish(state, b, t)
        if self.task == "reconstruction":
            y = self.head(out)
        else:
            sel = (token_index == m).to(out.dtype)
            y = self.head((out * sel[..., None]).sum(dim=1))
        layer_tokens = torch.stack(counts, dim=1)
        return y, layer_tokens, self.side.width_units(executed, layer_tokens)

    def _decode(self, symbols: Tensor, ratio: Tensor) -> Tensor:
        b, kk, s, _ = symbols.shape
        if len(self.symbols) == 1:
            return self.coder(symbols, 0)
        smax = max(self.symbols)
        flat = F.pad(symbols.reshape(b * kk, 2 * s), (0, 2 * smax - 2 * s))[None]
        pieces = [self.coder.levels[r](flat[:g, :, : 2 * sr])
                  for r, (g, sr) in enumerate(zip(_level_gates(ratio, len(self.symbols)), self.symbols))]
        out = torch.cat(pieces, dim=0).sum(dim=0)  # [B·K, E], the one selected level
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
