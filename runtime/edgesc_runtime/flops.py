"""Executed FLOPs per image from the graphs' statistics (docs/contract.md, "Executed FLOPs").

Convention: FLOPs = 2 * MACs over matmul-class ops only (linear, matmul, conv, bmm, sdpa) -- what
``torch.utils.flop_counter.FlopCounterMode`` counts. With dh = E/H and dg = D/G, one transformer layer applied
to T tokens of which n are active (updated), with h heads and g MLP groups kept, costs (MACs)::

    layer(T, n, h, g) = 0                                    if n == 0 (layer skipped for this image)
                      = 3*T*E*(h*dh) + 2*T*T*(h*dh)          # Q/K/V of every present token; scores + values
                      + n*(h*dh)*E + 2*n*E*(g*dg)            # output projection and MLP on active rows
                      + n*E*[halting and not the last layer] # stop score of paper 000 Eq. 21

This refines paper 000's Table I per-layer count 4ME^2 + 2M^2E + 2MED (all tokens active, full width) to the
tokens, heads and MLP groups that actually ran; with T = n = M, h = H, g = G and no halting term the layer
formula reduces to exactly Table I: 3ME^2 + 2M^2E + ME^2 + 2MED.

Evaluation (per call, on the sessions' path): once K, S and ``width_units`` are fixed, T and (h, g) are fixed
per layer, so layer(T, n, h, g) = [n > 0] * on_l + n * slope_l with on_l = 3*T*E*hd + 2*T*T*hd and slope_l =
hd*E + 2*E*gd (+ E for halting). These per-layer constants (and the K/S-dependent fixed part) are cached per
(K, S, width_units), and a batch costs a few exact integer operations per image and layer (Python integers for
small batches, two int64 mat-vec products for large ones). ``tests/test_runtime_fastpath.py`` checks every path
against the per-layer :func:`layer_macs` loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from .errors import InputError, ManifestError

if TYPE_CHECKING:  # pragma: no cover
    from .manifest import Manifest

_ENC_KEYS = ("halting", "tokens", "coder_hidden", "specials", "select_at")
_DEC_KEYS = ("halting", "coder_hidden", "head")
_CACHE_SIZE = 1024  # (role, K, S, width_units) entries of FlopModel's per-call constants; cleared when full
_PYTHON_MAX = 256   # layer_tokens entries up to which the per-call sum runs in Python integers


def layer_macs(T: Any, n: Any, h: int, g: int, embed_dim: int, heads: int, mlp_dim: int, mlp_groups: int,
               halting: bool) -> np.ndarray:
    """MACs of one layer per image (vectorised over T and n); 0 where n == 0. See the module docstring."""
    T = np.asarray(T, dtype=np.int64)
    n = np.asarray(n, dtype=np.int64)
    dh = embed_dim // heads
    dg = mlp_dim // mlp_groups
    hd = int(h) * dh
    macs = (3 * T * embed_dim * hd + 2 * T * T * hd + n * hd * embed_dim + 2 * n * embed_dim * (int(g) * dg)
            + (n * embed_dim if halting else 0))
    return np.where(n > 0, macs, 0).astype(np.int64)


@dataclass(frozen=True)
class FlopModel:
    """Geometry and FLOP-model switches read from a manifest (``model`` and ``flops`` blocks)."""

    task: str
    channels: int
    patch_size: int
    num_patches: int
    embed_dim: int
    heads: int
    mlp_dim: int
    mlp_groups: int
    num_classes: int
    class_token: bool
    encoder_layers: int
    decoder_layers: int
    enc_halting: bool
    enc_tokens: bool
    enc_coder_hidden: int
    enc_specials: int
    enc_select_at: int
    dec_halting: bool
    dec_coder_hidden: int
    dec_head: str

    @classmethod
    def from_manifest(cls, manifest: "Manifest") -> "FlopModel":
        """Build from a loaded manifest; ManifestError if a FLOP-model key is missing."""
        return cls.from_dicts(manifest.raw["model"], manifest.flops.get("encoder"), manifest.flops.get("decoder"))

    @classmethod
    def from_dicts(cls, model: Mapping[str, Any], enc: Mapping[str, Any] | None,
                   dec: Mapping[str, Any] | None) -> "FlopModel":
        """Build from the raw ``model`` block and the ``flops.encoder`` / ``flops.decoder`` blocks."""
        for block, keys, role in ((enc, _ENC_KEYS, "encoder"), (dec, _DEC_KEYS, "decoder")):
            for key in keys if block is not None else ():
                if key not in block:
                    raise ManifestError(f"manifest: missing key flops.{role}.{key}")
        enc = dict(enc or {})
        dec = dict(dec or {})
        for role, block in (("encoder", enc), ("decoder", dec)):
            for key in ("halting", "tokens"):
                if key in block and not isinstance(block[key], bool):
                    raise ManifestError(f"manifest: flops.{role}.{key} must be true or false, got {block[key]!r}")
            for key in ("coder_hidden", "specials", "select_at"):
                v = block.get(key, 0)
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    raise ManifestError(f"manifest: flops.{role}.{key} must be a non-negative integer, got {v!r}")
        head = str(dec.get("head", model["task"]))
        if head not in ("reconstruction", "classification"):
            raise ManifestError(f"manifest: flops.decoder.head must be reconstruction or classification, got {head!r}")
        return cls(
            task=str(model["task"]), channels=int(model["channels"]), patch_size=int(model["patch_size"]),
            num_patches=int(model["num_patches"]), embed_dim=int(model["embed_dim"]), heads=int(model["heads"]),
            mlp_dim=int(model["mlp_dim"]), mlp_groups=int(model["mlp_groups"]),
            num_classes=int(model["num_classes"]), class_token=bool(model["class_token"]),
            encoder_layers=int(model["encoder_layers"]), decoder_layers=int(model["decoder_layers"]),
            enc_halting=bool(enc.get("halting", False)), enc_tokens=bool(enc.get("tokens", False)),
            enc_coder_hidden=int(enc.get("coder_hidden", 0)),
            enc_specials=int(enc.get("specials", int(bool(model["class_token"])))),
            enc_select_at=int(enc.get("select_at", 0)),
            dec_halting=bool(dec.get("halting", False)), dec_coder_hidden=int(dec.get("coder_hidden", 0)),
            dec_head=head,
        )

    # --- pieces -------------------------------------------------------------------------------------------
    def coder_enc_macs(self, S: int) -> int:
        """Channel encoder per token: linear E*2S, or MLP E*h + h*h + h*2S (001 §IV-C)."""
        h, e = self.enc_coder_hidden, self.embed_dim
        return e * 2 * S if h == 0 else e * h + h * h + h * 2 * S

    def coder_dec_macs(self, S: int) -> int:
        """Channel decoder per token: linear 2S*E, or MLP 2S*h + h*h + h*E."""
        h, e = self.dec_coder_hidden, self.embed_dim
        return 2 * S * e if h == 0 else 2 * S * h + h * h + h * e

    def __post_init__(self) -> None:
        # Per-call constants keyed by (role, K, S, width_units bytes), see _terms (not a dataclass field:
        # equality and hashing of the model ignore it).
        object.__setattr__(self, "_cache", {})

    def _width(self, width_units: np.ndarray) -> tuple[list[int], list[int]]:
        """Per layer: kept head dims h*dh and kept MLP dims g*dg; InputError for a (h, g) outside the model."""
        dh, dg = self.embed_dim // self.heads, self.mlp_dim // self.mlp_groups
        hd, gd = [], []
        for layer, (h, g) in enumerate(width_units.tolist()):
            if not (0 <= h <= self.heads and 0 <= g <= self.mlp_groups):
                raise InputError(f"width_units[{layer}] = ({h}, {g}) outside [0, {self.heads}] x [0, {self.mlp_groups}]")
            hd.append(h * dh)
            gd.append(g * dg)
        return hd, gd

    def _slope(self, hd: list[int], gd: list[int], halting: bool) -> list[int]:
        """Per layer, the MACs per active token: output projection + MLP (+ stop score, not on the last layer)."""
        E, L = self.embed_dim, len(hd)
        return [hd[l] * E + 2 * E * gd[l] + (E if halting and l < L - 1 else 0) for l in range(L)]

    def _tokens_present(self, role: str, k: int) -> list[int]:
        """T per layer for a scalar K: encoder M + specials before ``select_at`` and K - cls + specials after;
        decoder M (reconstruction: mask tokens fill the gaps) or K (classification)."""
        if role == "encoder":
            before, after = self.num_patches + self.enc_specials, k - int(self.class_token) + self.enc_specials
            return [before if layer < self.enc_select_at else after for layer in range(self.encoder_layers)]
        t = self.num_patches if self.dec_head == "reconstruction" else k
        return [t] * self.decoder_layers

    def _fixed(self, role: str, k: Any, S: int) -> Any:
        """MACs that do not depend on layer_tokens: patch embedding + gates + channel encoder (encoder);
        channel decoder + head (decoder). ``k`` may be an int or an int64 array [B]."""
        M, E, cpp = self.num_patches, self.embed_dim, self.channels * self.patch_size ** 2
        if role == "encoder":
            return M * cpp * E + ((M + 1) * E if self.enc_tokens else 0) + k * self.coder_enc_macs(S)
        head = M * E * cpp if self.dec_head == "reconstruction" else E * self.num_classes
        return k * self.coder_dec_macs(S) + head

    def _terms(self, role: str, k: int, S: int, wu: np.ndarray) -> tuple[int, list[int], list[int], np.ndarray]:
        """For a scalar K: (fixed MACs, per-layer MACs of a layer that runs at all, per-layer MACs per active
        token, the two per-layer lists stacked as int64 [2, L]); layer(T, n, h, g) = [n > 0] * (3*T*E*hd +
        2*T*T*hd) + n * slope (module docstring). Cached per (role, K, S, width_units)."""
        key = (role, k, S, wu.tobytes())
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        hd, gd = self._width(wu)
        E = self.embed_dim
        T = self._tokens_present(role, k)
        on = [3 * t * E * h + 2 * t * t * h for t, h in zip(T, hd)]
        slope = self._slope(hd, gd, self.enc_halting if role == "encoder" else self.dec_halting)
        terms = (int(self._fixed(role, k, S)), on, slope, np.array([on, slope], dtype=np.int64).reshape(2, -1))
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = terms
        return terms

    def _per_call(self, role: str, k: int, S: int, lt: np.ndarray, wu: np.ndarray) -> np.ndarray:
        """Executed FLOPs per image, int64 [B], for one K shared by the batch. The callers (the public methods
        and the sessions) have checked that ``lt`` is int64 [B, L] and ``wu`` int64 [L, 2]. InputError for
        negative token counts or an (h, g) outside the model."""
        hit = self._cache.get((role, k, S, wu.tobytes()))
        if hit is None:
            if lt.size and lt.min() < 0:  # this error before the width check, as the public methods order them
                raise InputError(f"{role} layer_tokens must be >= 0")
            hit = self._terms(role, k, S, wu)
        fixed, on, slope, per_layer = hit
        if lt.size > _PYTHON_MAX:
            if lt.min() < 0:
                raise InputError(f"{role} layer_tokens must be >= 0")
            return 2 * (fixed + (lt > 0) @ per_layer[0] + lt @ per_layer[1])
        # Small batches (the usual per-call case) in exact Python integers: the few numpy calls of the
        # vectorised form cost more than this arithmetic right after a graph run has evicted numpy's code and
        # data from the CPU caches (measured: docs/methods.md, "Runtime per-call overhead").
        out = []
        for row in lt.tolist():
            macs = fixed
            for n, a, c in zip(row, on, slope):
                if n > 0:
                    macs += a + n * c
                elif n < 0:
                    raise InputError(f"{role} layer_tokens must be >= 0")
            out.append(2 * macs)
        return np.array(out, dtype=np.int64)

    def _executed(self, role: str, K: Any, S: int, layer_tokens: Any, width_units: Any) -> np.ndarray:
        layers = self.encoder_layers if role == "encoder" else self.decoder_layers
        lt = np.asarray(layer_tokens, dtype=np.int64)
        wu = np.asarray(width_units, dtype=np.int64)
        if lt.ndim != 2 or lt.shape[1] != layers:
            raise InputError(f"{role} layer_tokens must have shape [B, {layers}], got {list(lt.shape)}")
        if wu.shape != (layers, 2):
            raise InputError(f"{role} width_units must have shape [{layers}, 2], got {list(wu.shape)}")
        if isinstance(K, (int, np.integer)) and not isinstance(K, (bool, np.bool_)):
            return self._per_call(role, int(K), int(S), lt, wu)
        if lt.size and lt.min() < 0:
            raise InputError(f"{role} layer_tokens must be >= 0")
        S = int(S)
        # per-image K ([B], a ragged batch): the same formula with T [B, L]
        k = np.broadcast_to(np.asarray(K, dtype=np.int64), (lt.shape[0],)).copy()
        hd, gd = self._width(wu)
        halting = self.enc_halting if role == "encoder" else self.dec_halting
        hd_a = np.asarray(hd, dtype=np.int64)
        if role == "encoder":
            before, after = self.num_patches + self.enc_specials, k - int(self.class_token) + self.enc_specials
            T = np.stack([np.full_like(k, before) if layer < self.enc_select_at else after
                          for layer in range(layers)], 1)
        else:
            T = np.repeat((np.full_like(k, self.num_patches) if self.dec_head == "reconstruction" else k)[:, None],
                          layers, 1)
        on = 3 * T * self.embed_dim * hd_a + 2 * T * T * hd_a
        per_layer = (lt > 0) * on + lt * np.asarray(self._slope(hd, gd, halting), dtype=np.int64)
        return 2 * (self._fixed(role, k, S) + per_layer.sum(axis=1))

    # --- totals -------------------------------------------------------------------------------------------
    def encoder_flops(self, K: Any, S: int, layer_tokens: Any, width_units: Any) -> np.ndarray:
        """Executed encoder FLOPs per image, int64 [B]. ``K``: transmitted tokens (scalar or [B])."""
        return self._executed("encoder", K, S, layer_tokens, width_units)

    def decoder_flops(self, K: Any, S: int, layer_tokens: Any, width_units: Any) -> np.ndarray:
        """Executed decoder FLOPs per image, int64 [B]. ``K``: received tokens (scalar or [B])."""
        return self._executed("decoder", K, S, layer_tokens, width_units)


def encoder_flops(manifest: "Manifest", K: Any, S: int, layer_tokens: Any, width_units: Any) -> np.ndarray:
    """Executed encoder FLOPs per image for the model of ``manifest`` (see :class:`FlopModel`)."""
    return FlopModel.from_manifest(manifest).encoder_flops(K, S, layer_tokens, width_units)


def decoder_flops(manifest: "Manifest", K: Any, S: int, layer_tokens: Any, width_units: Any) -> np.ndarray:
    """Executed decoder FLOPs per image for the model of ``manifest`` (see :class:`FlopModel`)."""
    return FlopModel.from_manifest(manifest).decoder_flops(K, S, layer_tokens, width_units)
