"""The semantic codec in its training form (differentiable, masks): encoder, channel layer, decoder.

Token sequence of the encoder: ``[patch_0 … patch_{M-1}, class token?, budget token?]``; the transmitted slots
are the first ``M (+1)`` (so the slot of a token is its contract ``token_index``: patches ``0..M-1``, class
token ``M``). The training form keeps every slot and carries a token mask ``keep`` [B, M(+1)] instead of
removing tokens; dropped tokens are excluded as attention keys (logit ``−1e9``), are never updated, and are
sent as zero symbols. With binary masks this is exactly the maths of the inference form
(:mod:`edgesc.models.inference`), which really removes them.

Equations: RTU 000 Eq. 16-19 (:mod:`.blocks`), halting 000 Eq. 20-29 (:mod:`.depth`), width 000 Eq. 30-39
(:mod:`.width`), tokens 001/003 (:mod:`.tokens`), channel coder 001 §IV-C (:mod:`.coder`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

from edgesc.config import ModelConfig
from edgesc.errors import ConfigError, ControlError

from .blocks import NEG_INF, BlockStack
from .coder import ChannelDecoder, ChannelEncoder, normalize_power
from .depth import DepthController, halting_step
from .embed import PatchEmbed, PatchUnembed
from .tokens import TokenSelector, budget_keep
from .width import WidthController, unit_ranks

#: ``(symbols [B, K, S, 2], snr_db [B]) -> received`` or ``(received, received_mask [B, K] bool)``; a channel
#: object with a ``last_keep`` tensor attribute (edgesc.channels.Channel) marks erased tokens there.
Channel = Callable[[Tensor, Tensor], "Tensor | tuple[Tensor, Tensor]"]


@dataclass
class Controls:
    """Run-time controls of the training form (docs/contract.md "Controls").

    ``budget``: token budget α per example ([B] tensor) or per batch; ``None`` samples U(0, 1] per example in
    training (001 §IV-B) and means 1.0 in evaluation. ``depth``: layer cap (``None`` = all layers);
    ``decoder_depth`` / ``decoder_width``: the decoder's own cap / width (``None`` = same as the encoder's,
    the depth clamped to the decoder's layer count). ``snr_db``: per example or per batch. ``ratio``: index into
    ``coder.symbols``.
    """

    budget: Tensor | float | None = None
    depth: int | None = None
    width: float = 1.0
    snr_db: Tensor | float = 10.0
    ratio: int = 0
    decoder_depth: int | None = None
    decoder_width: float | None = None


@dataclass
class CodecOutput:
    output: Tensor  # image [B, C, H, W] or logits [B, classes]
    losses: dict[str, Tensor] = field(default_factory=dict)  # auxiliary losses, already weighted
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Resolved:
    budget: Tensor  # [B]
    snr_db: Tensor  # [B]
    noise_var: Tensor  # σ² = 10^(-snr/10), [B]
    enc_depth: int
    dec_depth: int
    enc_width: Tensor  # [B]
    dec_width: Tensor  # [B]
    ratio: int
    hard_tokens: bool


@dataclass
class EncoderResult:
    symbols: Tensor  # [B, M(+1), S, 2], zero for dropped tokens, unit average power over the kept ones
    keep: Tensor  # [B, M(+1)] token mask of the transmitted slots
    losses: dict[str, Tensor]
    stats: dict[str, Any]
    kept_per_layer: Tensor  # [B, L_enc] fraction of patches present at each layer (global penalty)


def _per_example(value: Tensor | float, batch: int, name: str, ref: Tensor) -> Tensor:
    t = torch.as_tensor(value, dtype=torch.float32, device=ref.device)
    if t.dim() == 0:
        return t.expand(batch).clone()
    if t.shape != (batch,):
        raise ControlError(f"control '{name}' must be a number or a tensor of shape [{batch}], got {tuple(t.shape)}")
    return t


def _check_depth(value: int | None, layers: int, name: str) -> int:
    if value is None:
        return layers
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ControlError(f"control '{name}' must be an integer >= 1, got {value!r}")
    return min(value, layers)


def _check_width(value: float, name: str) -> float:
    if not (0.0 < float(value) <= 1.0):
        raise ControlError(f"control '{name}' must be in (0, 1], got {value!r}")
    return float(value)


def key_bias(present: Tensor) -> Tensor:
    """Attention-logit bias from a token mask: ``log(mask)`` for present tokens, ``−1e9`` for dropped ones."""
    safe = torch.where(present > 0, present, torch.ones_like(present))
    return torch.where(present > 0, torch.log(safe), torch.full_like(present, NEG_INF))


class TransformerSide(nn.Module):
    """One side's transformer: blocks (RTUs), optional depth and width controllers; training-form runner."""

    def __init__(self, cfg: ModelConfig, side: str) -> None:
        super().__init__()
        st = getattr(cfg, side)
        e, h, d, g = cfg.embed_dim, cfg.heads, cfg.mlp_dim, cfg.mlp_groups
        self.stack = BlockStack(st.units, st.recursions, e, h, d, g, cfg.activation)
        self.depth = DepthController(e, cfg.depth) if cfg.depth.enabled else None
        self.width = WidthController(st.units, h, g, e, d, cfg.width) if cfg.width.enabled else None

    @property
    def layers(self) -> int:
        return self.stack.layers

    def run(
        self,
        x: Tensor,
        present: Tensor | None,
        noise_var: Tensor,
        cap: int,
        width: Tensor,
        before_layer: Callable[[int, Tensor, Tensor], Tensor] | None = None,
    ) -> tuple[Tensor, dict[str, Any], Tensor, Tensor]:
        """Run all layers on ``x`` [B, T, E] (training form).

        ``present`` [B, T]: token mask (``None``: all tokens, no key bias); ``before_layer(l, x, present)`` may
        return a new mask (token selection). Returns the normalised output, stats, the final mask and the ponder
        loss (0 without halting).
        """
        b, t, _ = x.shape
        L = self.layers
        mask = torch.ones(b, t, device=x.device) if present is None else present
        bias = None if present is None else key_bias(mask)
        active = mask > 0
        head_masks = group_masks = None
        width_units = torch.full((b, L, 2), 0, dtype=torch.int64, device=x.device)
        if self.width is not None:
            head_masks, group_masks = self.width.masks(width, noise_var)
            keep = self.width.keep(width, noise_var)  # [B, units, 2]
            width_units = keep.repeat_interleave(self.stack.recursions, dim=1)
        else:
            width_units[..., 0] = self.stack.blocks[0].heads
            width_units[..., 1] = self.stack.blocks[0].mlp_groups
        hc = torch.zeros(b, t, device=x.device)
        zout = torch.zeros_like(x)
        count = torch.zeros(b, t, device=x.device)
        rem = torch.zeros(b, t, device=x.device)
        present0 = active.clone()
        layer_tokens = []
        kept = []
        for layer in range(L):
            if before_layer is not None:
                new = before_layer(layer, x, mask)
                if new is not mask:
                    mask = new
                    bias = key_bias(mask)
                    active = active & (mask > 0)
            layer_tokens.append(active.sum(dim=1))
            kept.append(mask)
            if not bool(active.any()):
                continue
            u = layer // self.stack.recursions
            blk = self.stack.blocks[u]
            hm = None if head_masks is None else head_masks[:, u]
            gm = None if group_masks is None else group_masks[:, u]
            z = blk(x, bias, hm, gm)
            x = torch.where(active[..., None], z, x)  # Eq. 20
            if self.depth is None:
                continue
            last = layer == L - 1
            h = torch.ones(b, t, device=x.device) if last else self.depth.score(x, noise_var[:, None])  # Eq. 21
            forced = torch.tensor(last or layer + 1 >= cap, device=x.device)
            step = halting_step(h, active, hc, forced, self.depth.threshold)  # Eq. 22-25
            zout = zout + step.weight[..., None] * x  # Eq. 26
            count = count + active.to(count.dtype)  # Eq. 27
            rem = torch.where(step.halted, step.remainder, rem)
            hc, active = step.cumulative, step.active
        out = x if self.depth is None else zout
        stats = {
            "layer_tokens": torch.stack(layer_tokens, dim=1),  # [B, L]
            "width_units": width_units,  # [B, L, 2]
            "kept_masks": torch.stack(kept, dim=1),  # [B, L, T]
        }
        ponder = torch.zeros((), device=x.device)
        if self.depth is not None:
            ponder = self.depth.ponder_loss(count, rem, present0)
            stats["layers_per_token"] = (count * present0).sum() / present0.sum().clamp_min(1)
        else:
            stats["layers_per_token"] = torch.tensor(float(L))
        return self.stack.norm(out), stats, mask, ponder


class SemanticEncoder(nn.Module):
    """Device side: patch embedding, encoder transformer, token selector, channel encoder."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        e, m = cfg.embed_dim, cfg.num_patches
        self.num_patches = m
        self.embed = PatchEmbed(cfg.image_size, cfg.patch_size, cfg.channels, e)
        self.cls_token = nn.Parameter(torch.randn(1, 1, e) * 0.02) if cfg.class_token else None
        self.tokens = TokenSelector(e, m, cfg.tokens) if cfg.tokens.enabled else None
        self.side = TransformerSide(cfg, "encoder")
        self.coder = ChannelEncoder(e, cfg.coder.symbols, cfg.coder.hidden)

    @property
    def transmitted(self) -> int:
        return self.num_patches + int(self.cls_token is not None)

    def inference(self, width_chunks: int | None = None):
        """The exportable inference form (:class:`edgesc.models.inference.InferenceEncoder`), same weights;
        ``width_chunks``: width chunks per component (default ``inference.DEFAULT_WIDTH_CHUNKS``)."""
        from .inference import DEFAULT_WIDTH_CHUNKS, InferenceEncoder

        return InferenceEncoder(self, DEFAULT_WIDTH_CHUNKS if width_chunks is None else width_chunks)

    def forward(self, images: Tensor, ctl: _Resolved) -> EncoderResult:
        b = images.shape[0]
        m = self.num_patches
        x = self.embed(images)
        parts = [x]
        if self.cls_token is not None:
            parts.append(self.cls_token.expand(b, -1, -1))
        if self.tokens is not None:
            parts.append(self.tokens.budget_token(ctl.budget)[:, None, :])
        x = torch.cat(parts, dim=1)
        t = x.shape[1]
        losses: dict[str, Tensor] = {}
        fractions: list[Tensor] = []
        hook = None
        if self.tokens is not None:
            sel = self.tokens
            soft_mode = not ctl.hard_tokens

            def hook(layer: int, xs: Tensor, present: Tensor) -> Tensor:
                if soft_mode:
                    if layer not in sel.adaptive_layers:
                        return present
                    i = sel.index_of(layer)
                    pm = sel.soft_mask(i, xs[:, :m], xs[:, t - 1], present[:, :m])
                else:
                    if layer != sel.select_at:
                        return present
                    score = sel.selection_score(xs[:, :m], xs[:, t - 1])
                    k = budget_keep(ctl.budget, m)  # [B]
                    pm = (unit_ranks(score) < k[:, None]).to(xs.dtype)
                    if sel.train_selection == "topk" and self.training:
                        soft = sel.soft_mask(sel.index_of(layer), xs[:, :m], xs[:, t - 1], present[:, :m])
                        pm = pm + (soft - soft.detach())
                fractions.append(pm.mean(dim=1))
                return torch.cat([pm, present[:, m:]], dim=1)

        present = torch.ones(b, t, device=x.device) if self.tokens is not None else None
        z, stats, mask, ponder = self.side.run(x, present, ctl.noise_var, ctl.enc_depth, ctl.enc_width, hook)
        if self.side.depth is not None:
            losses["ponder_enc"] = ponder
        tx = z[:, : self.transmitted]
        keep = mask[:, : self.transmitted]
        symbols = self.coder(tx, ctl.ratio)
        if self.tokens is not None:
            symbols = normalize_power(symbols, keep)
            sel = self.tokens
            # Hard (top-k) selection keeps exactly ceil(α·M) tokens by construction, so the budget penalties have
            # nothing to enforce: all they would see is the rounding ceil(α·M)/M − α (up to 1/M, above the margin
            # for small M), and pushing on it drives every soft gate to zero and kills its gradient. They apply to
            # the papers' soft masks only (deviation documented in docs/methods.md, "Models").
            if fractions and not ctl.hard_tokens:
                out_pen = sel.penalty_of(fractions[-1], ctl.budget)
                inner = [sel.penalty_of(f, ctl.budget) for f in fractions[:-1]]
                if sel.penalty == "local":
                    losses["tokens_output"] = sel.output_weight * out_pen
                if inner:
                    losses["tokens_inner"] = sel.inner_weight * torch.stack(inner).mean()
            stats["kept_fraction"] = keep[:, :m].mean(dim=1)
        else:
            symbols = normalize_power(symbols)
        kept_per_layer = stats.pop("kept_masks")[:, :, :m].mean(dim=2)
        return EncoderResult(symbols, keep, losses, stats, kept_per_layer)


class SemanticDecoder(nn.Module):
    """Server side: channel decoder, decoder transformer, task head."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        e, m = cfg.embed_dim, cfg.num_patches
        self.num_patches = m
        self.task = cfg.task
        self.coder = ChannelDecoder(e, cfg.coder.symbols, cfg.coder.hidden)
        self.side = TransformerSide(cfg, "decoder")
        if cfg.task == "reconstruction":
            self.mask_token = nn.Parameter(torch.randn(1, 1, e) * 0.02)
            self.pos = nn.Parameter(torch.randn(1, m, e) * 0.02)
            self.head: nn.Module = PatchUnembed(cfg.image_size, cfg.patch_size, cfg.channels, e)
        else:
            self.mask_token = None
            self.pos = None
            self.head = nn.Linear(e, cfg.num_classes)

    def inference(self, width_chunks: int | None = None):
        """The exportable inference form (:class:`edgesc.models.inference.InferenceDecoder`), same weights;
        ``width_chunks``: width chunks per component (default ``inference.DEFAULT_WIDTH_CHUNKS``)."""
        from .inference import DEFAULT_WIDTH_CHUNKS, InferenceDecoder

        return InferenceDecoder(self, DEFAULT_WIDTH_CHUNKS if width_chunks is None else width_chunks)

    def forward(self, received: Tensor, keep: Tensor, ctl: _Resolved) -> tuple[Tensor, dict[str, Tensor], dict[str, Any], Tensor]:
        z = self.coder(received, ctl.ratio)  # [B, M(+1), E]
        m = self.num_patches
        losses: dict[str, Tensor] = {}
        if self.task == "reconstruction":
            k = keep[:, :m, None]
            x = k * z[:, :m] + (1.0 - k) * self.mask_token + self.pos
            present = None
        else:
            x = z
            present = keep
        out, stats, _, ponder = self.side.run(x, present, ctl.noise_var, ctl.dec_depth, ctl.dec_width)
        if self.side.depth is not None:
            losses["ponder_dec"] = ponder
        if self.task == "reconstruction":
            y = self.head(out)
            kept_frac = torch.ones(x.shape[0], self.side.layers, device=x.device)
        else:
            y = self.head(out[:, m] * keep[:, m, None])
            kept_frac = keep[:, :m].mean(dim=1, keepdim=True).expand(-1, self.side.layers)
        return y, losses, stats, kept_frac


class SemanticCodec(nn.Module):
    """Encoder (device) + channel layer + decoder (server), the training form of docs/contract.md."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.task == "reconstruction" and cfg.class_token:
            raise ConfigError(f"{cfg.name}: reconstruction presets must have class_token = false")
        self.cfg = cfg
        self.encoder = SemanticEncoder(cfg)
        self.decoder = SemanticDecoder(cfg)

    def resolve(self, controls: Controls | None, batch: int, ref: Tensor) -> _Resolved:
        c = controls if controls is not None else Controls()
        cfg = self.cfg
        if c.budget is None:
            budget = (1.0 - torch.rand(batch, device=ref.device)) if self.training else torch.ones(batch, device=ref.device)
        else:
            budget = _per_example(c.budget, batch, "budget", ref)
        if cfg.tokens.enabled and bool(((budget <= 0) | (budget > 1)).any()):
            raise ControlError("control 'budget' must be in (0, 1]")
        snr = _per_example(c.snr_db, batch, "snr_db", ref)
        if not bool(torch.isfinite(snr).all()):
            raise ControlError("control 'snr_db' must be finite")
        ratio = c.ratio
        if isinstance(ratio, bool) or not isinstance(ratio, int) or not (0 <= ratio < len(cfg.coder.symbols)):
            raise ControlError(f"control 'ratio' must be an integer in [0, {len(cfg.coder.symbols)}), got {ratio!r}")
        enc_depth = _check_depth(c.depth, cfg.encoder.layers, "depth")
        dec_depth = _check_depth(c.decoder_depth if c.decoder_depth is not None else c.depth, cfg.decoder.layers,
                                 "decoder_depth")
        w = _check_width(c.width, "width")
        dw = _check_width(c.decoder_width if c.decoder_width is not None else c.width, "decoder_width")
        hard = not (self.training and cfg.tokens.train_selection == "soft")
        return _Resolved(
            budget=budget, snr_db=snr, noise_var=torch.pow(10.0, -snr / 10.0), enc_depth=enc_depth,
            dec_depth=dec_depth, enc_width=torch.full((batch,), w, device=ref.device),
            dec_width=torch.full((batch,), dw, device=ref.device), ratio=ratio, hard_tokens=hard,
        )

    def forward(self, images: Tensor, controls: Controls | None = None, channel: Channel | None = None) -> CodecOutput:
        cfg = self.cfg
        if images.dim() != 4 or tuple(images.shape[1:]) != (cfg.channels, cfg.image_size, cfg.image_size):
            raise ControlError(
                f"images must have shape [B, {cfg.channels}, {cfg.image_size}, {cfg.image_size}], got {tuple(images.shape)}"
            )
        ctl = self.resolve(controls, images.shape[0], images)
        enc = self.encoder(images, ctl)
        keep = enc.keep
        received: Any = enc.symbols if channel is None else channel(enc.symbols, ctl.snr_db)
        received_mask = None
        if isinstance(received, tuple):  # (symbols, received mask [B, K] bool, True = received)
            received, received_mask = received
        elif channel is not None and isinstance(getattr(channel, "last_keep", None), Tensor):
            received_mask = channel.last_keep  # edgesc.channels.Channel marks erased tokens there
        if received_mask is not None:
            keep = keep * received_mask.to(keep.dtype)  # erased tokens are treated as dropped
        output, dec_losses, dec_stats, dec_kept = self.decoder(received, keep, ctl)
        losses = {**enc.losses, **dec_losses}
        if self.encoder.side.width is not None:
            num_e, den_e = self.encoder.side.width.prune_terms(ctl.noise_var)
            num_d, den_d = self.decoder.side.width.prune_terms(ctl.noise_var)
            rho_bar = (num_e + num_d) / (den_e + den_d)  # Eq. 37 over encoder and decoder layers
            losses["width"], lam = self.encoder.side.width.sparsity_loss(rho_bar)
            enc.stats["prune_ratio"] = rho_bar.mean()
            enc.stats["lambda_rho"] = lam
        sel = self.encoder.tokens
        if sel is not None and sel.penalty == "global" and not ctl.hard_tokens:
            frac = torch.cat([enc.kept_per_layer, dec_kept], dim=1).mean(dim=1)  # 003 Eq. 6-7
            losses["tokens_global"] = sel.output_weight * sel.penalty_of(frac, ctl.budget)
        stats: dict[str, Any] = {f"enc_{k}": v for k, v in enc.stats.items()}
        stats.update({f"dec_{k}": v for k, v in dec_stats.items()})
        stats["budget"] = ctl.budget
        stats["keep"] = keep
        return CodecOutput(output, losses, stats)
