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

    def _layers(self, T: np.ndarray, layer_tokens: np.ndarray, width_units: np.ndarray, halting: bool) -> np.ndarray:
        L = layer_tokens.shape[1]
        total = np.zeros(layer_tokens.shape[0], dtype=np.int64)
        for layer in range(L):
            t = T[:, layer] if T.ndim == 2 else T
            h, g = (int(v) for v in width_units[layer])
            if not (0 <= h <= self.heads and 0 <= g <= self.mlp_groups):
                raise InputError(f"width_units[{layer}] = ({h}, {g}) outside [0, {self.heads}] x [0, {self.mlp_groups}]")
            total += layer_macs(t, layer_tokens[:, layer], h, g, self.embed_dim, self.heads, self.mlp_dim,
                                self.mlp_groups, halting and layer < L - 1)
        return total

    @staticmethod
    def _stats(K: Any, layer_tokens: Any, width_units: Any, layers: int, role: str) -> tuple[np.ndarray, ...]:
        lt = np.asarray(layer_tokens, dtype=np.int64)
        wu = np.asarray(width_units, dtype=np.int64)
        if lt.ndim != 2 or lt.shape[1] != layers:
            raise InputError(f"{role} layer_tokens must have shape [B, {layers}], got {list(lt.shape)}")
        if wu.shape != (layers, 2):
            raise InputError(f"{role} width_units must have shape [{layers}, 2], got {list(wu.shape)}")
        if (lt < 0).any():
            raise InputError(f"{role} layer_tokens must be >= 0")
        k = np.broadcast_to(np.asarray(K, dtype=np.int64), (lt.shape[0],)).copy()
        return k, lt, wu

    # --- totals -------------------------------------------------------------------------------------------
    def encoder_flops(self, K: Any, S: int, layer_tokens: Any, width_units: Any) -> np.ndarray:
        """Executed encoder FLOPs per image, int64 [B]. ``K``: transmitted tokens (scalar or [B])."""
        k, lt, wu = self._stats(K, layer_tokens, width_units, self.encoder_layers, "encoder")
        M, E, cpp = self.num_patches, self.embed_dim, self.channels * self.patch_size ** 2
        macs = np.full(lt.shape[0], M * cpp * E, dtype=np.int64)              # patch embedding
        if self.enc_tokens:
            macs += (M + 1) * E                                                 # gate f_l on M patches + f_h
        kept = k - int(self.class_token)                                        # patch tokens kept
        before = np.full_like(k, M + self.enc_specials)
        after = kept + self.enc_specials
        T = np.stack([before if layer < self.enc_select_at else after for layer in range(self.encoder_layers)], 1)
        macs += self._layers(T, lt, wu, self.enc_halting)
        macs += k * self.coder_enc_macs(S)
        return 2 * macs

    def decoder_flops(self, K: Any, S: int, layer_tokens: Any, width_units: Any) -> np.ndarray:
        """Executed decoder FLOPs per image, int64 [B]. ``K``: received tokens (scalar or [B])."""
        k, lt, wu = self._stats(K, layer_tokens, width_units, self.decoder_layers, "decoder")
        M, E, cpp = self.num_patches, self.embed_dim, self.channels * self.patch_size ** 2
        macs = k * self.coder_dec_macs(S)
        if self.dec_head == "reconstruction":
            T = np.full_like(k, M)                                              # mask tokens fill the gaps
            head = M * E * cpp
        else:
            T = k
            head = E * self.num_classes
        macs = macs + self._layers(T, lt, wu, self.dec_halting) + head
        return 2 * macs


def encoder_flops(manifest: "Manifest", K: Any, S: int, layer_tokens: Any, width_units: Any) -> np.ndarray:
    """Executed encoder FLOPs per image for the model of ``manifest`` (see :class:`FlopModel`)."""
    return FlopModel.from_manifest(manifest).encoder_flops(K, S, layer_tokens, width_units)


def decoder_flops(manifest: "Manifest", K: Any, S: int, layer_tokens: Any, width_units: Any) -> np.ndarray:
    """Executed decoder FLOPs per image for the model of ``manifest`` (see :class:`FlopModel`)."""
    return FlopModel.from_manifest(manifest).decoder_flops(K, S, layer_tokens, width_units)
