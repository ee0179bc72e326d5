"""Transformer block and recursive stack (paper 000 Eq. 4-10 and Eq. 16-19).

``TransformerBlock`` is a pre-LN block: ``Z' = Z + MHSA(LN1(Z))``, ``Z = Z' + MLP(LN2(Z'))`` with a ReLU MLP
(000 Table II; Eq. 10 writes sigmoid, Table II and the RecViT code path use ReLU — the preset chooses).

Width units (000 §III-B): the attention heads of MHSA, and the MLP's ``D`` hidden neurons split into
``mlp_groups`` equal groups. DEVIATION: the paper prunes single MLP neurons; edgesc prunes groups of
``D/mlp_groups`` neurons so that a skipped unit is a whole matrix product in the exported graph (with
``mlp_groups = D`` it is the paper's per-neuron pruning). Masks enter the training form multiplicatively
(Eq. 30: ``W_pruned = M ⊙ W`` is the same as zeroing the unit's output).

A recursive transformer unit (RTU, Eq. 16-19) is one block applied ``recursions`` times; a "layer" is one
application. :class:`BlockStack` maps layer ``l`` to block ``l // recursions``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NEG_INF = -1e9  # finite "minus infinity" for masked keys: exp underflows to exactly 0, never NaN


def activation_fn(name: str):
    return F.relu if name == "relu" else F.gelu


class TransformerBlock(nn.Module):
    """Pre-LN MHSA + MLP block (000 Eq. 8-10) with optional head / MLP-group masks and key weights."""

    def __init__(self, embed_dim: int, heads: int, mlp_dim: int, mlp_groups: int, activation: str = "relu") -> None:
        super().__init__()
        self.embed_dim, self.heads, self.mlp_dim, self.mlp_groups = embed_dim, heads, mlp_dim, mlp_groups
        self.head_dim = embed_dim // heads
        self.group_dim = mlp_dim // mlp_groups
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.activation = activation
        self.ln1 = nn.LayerNorm(embed_dim)
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)  # output layout (3, heads, head_dim)
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.ln2 = nn.LayerNorm(embed_dim)
        self.fc1 = nn.Linear(embed_dim, mlp_dim)  # output layout (groups, group_dim)
        self.fc2 = nn.Linear(mlp_dim, embed_dim)

    def forward(
        self,
        x: Tensor,
        key_bias: Tensor | None = None,
        head_mask: Tensor | None = None,
        group_mask: Tensor | None = None,
    ) -> Tensor:
        """Apply the block to every token of ``x`` [B, T, E].

        ``key_bias`` [B, T]: added to the attention logits of each key (``log`` of the token mask; ``NEG_INF``
        for dropped tokens, which then have exactly zero attention weight). ``head_mask`` [B, H] and
        ``group_mask`` [B, G] multiply the outputs of heads / MLP groups (Eq. 30-31).
        """
        b, t, e = x.shape
        h, dh = self.heads, self.head_dim
        qkv = self.qkv(self.ln1(x)).reshape(b, t, 3, h, dh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [B, H, T, dh]
        scores = (q * self.scale) @ k.transpose(-1, -2)  # Eq. 6
        if key_bias is not None:
            scores = scores + key_bias[:, None, None, :]
        att = torch.softmax(scores, dim=-1) @ v
        if head_mask is not None:
            att = att * head_mask[:, :, None, None].to(att.dtype)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, e))  # Eq. 7-8
        hid = activation_fn(self.activation)(self.fc1(self.ln2(x)))
        if group_mask is not None:
            g = self.mlp_groups
            hid = (hid.reshape(b, t, g, self.group_dim) * group_mask[:, None, :, None].to(hid.dtype)).reshape(b, t, -1)
        return x + self.fc2(hid)  # Eq. 9-10


class BlockStack(nn.Module):
    """``units`` blocks, each applied ``recursions`` times (RTU, 000 Eq. 16-19); a final LayerNorm."""

    def __init__(self, units: int, recursions: int, embed_dim: int, heads: int, mlp_dim: int, mlp_groups: int,
                 activation: str) -> None:
        super().__init__()
        self.units, self.recursions = units, recursions
        self.blocks = nn.ModuleList(
            TransformerBlock(embed_dim, heads, mlp_dim, mlp_groups, activation) for _ in range(units)
        )
        self.norm = nn.LayerNorm(embed_dim)

    @property
    def layers(self) -> int:
        return self.units * self.recursions

    def block_of(self, layer: int) -> TransformerBlock:
        return self.blocks[layer // self.recursions]
