"""load_timm_vit: a timm-format ViT state dict (built here with timm's key names and shapes) lands in the right
edgesc places — checked numerically against a reference timm-style forward pass written out below."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from edgesc.config import load_preset
from edgesc.errors import CheckpointError
from edgesc.models import build_model
from edgesc.models.pretrained import IMAGENET_MEAN, IMAGENET_STD, load_timm_vit, read_state_dict


def timm_state_dict(e: int = 32, depth: int = 4, patch: int = 8, grid: int = 4, classes: int = 10,
                    mlp: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under timm's VisionTransformer key names and shapes (class token, no layer scale)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.2

    sd = {"cls_token": r(1, 1, e), "pos_embed": r(1, 1 + grid * grid, e),
          "patch_embed.proj.weight": r(e, 3, patch, patch), "patch_embed.proj.bias": r(e),
          "norm.weight": 1 + r(e), "norm.bias": r(e), "head.weight": r(classes, e), "head.bias": r(classes)}
    for i in range(depth):
        p = f"blocks.{i}."
        sd.update({p + "norm1.weight": 1 + r(e), p + "norm1.bias": r(e),
                   p + "attn.qkv.weight": r(3 * e, e), p + "attn.qkv.bias": r(3 * e),
                   p + "attn.proj.weight": r(e, e), p + "attn.proj.bias": r(e),
                   p + "norm2.weight": 1 + r(e), p + "norm2.bias": r(e),
                   p + "mlp.fc1.weight": r(mlp, e), p + "mlp.fc1.bias": r(mlp),
                   p + "mlp.fc2.weight": r(e, mlp), p + "mlp.fc2.bias": r(e)})
    return sd


def timm_forward(sd: dict[str, torch.Tensor], x: torch.Tensor, heads: int, upto: int | None = None):
    """timm's ViT forward (conv patch embed, [cls; patches] + pos, pre-LN blocks, GELU MLP, norm, head).
    Returns the tokens after ``upto`` blocks, or the logits when ``upto`` is None."""
    w = sd["patch_embed.proj.weight"]
    e, p = w.shape[0], w.shape[-1]
    t = F.conv2d(x, w, sd["patch_embed.proj.bias"], stride=p).flatten(2).transpose(1, 2)
    t = torch.cat([sd["cls_token"].expand(x.shape[0], -1, -1), t], dim=1) + sd["pos_embed"]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    b, n, _ = t.shape
    for i in range(depth if upto is None else upto):
        q = f"blocks.{i}."
        h = F.layer_norm(t, (e,), sd[q + "norm1.weight"], sd[q + "norm1.bias"], eps=1e-6)
        qkv = F.linear(h, sd[q + "attn.qkv.weight"], sd[q + "attn.qkv.bias"]).reshape(b, n, 3, heads, e // heads)
        qq, kk, vv = qkv.permute(2, 0, 3, 1, 4)
        a = torch.softmax(qq @ kk.transpose(-1, -2) * (e // heads) ** -0.5, dim=-1) @ vv
        t = t + F.linear(a.transpose(1, 2).reshape(b, n, e), sd[q + "attn.proj.weight"], sd[q + "attn.proj.bias"])
        h = F.layer_norm(t, (e,), sd[q + "norm2.weight"], sd[q + "norm2.bias"], eps=1e-6)
        h = F.linear(F.gelu(F.linear(h, sd[q + "mlp.fc1.weight"], sd[q + "mlp.fc1.bias"])),
                     sd[q + "mlp.fc2.weight"], sd[q + "mlp.fc2.bias"])
        t = t + h
    if upto is not None:
        return t
    t = F.layer_norm(t, (e,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)
    return F.linear(t[:, 0], sd["head.weight"], sd["head.bias"])


def normalised(images: torch.Tensor) -> torch.Tensor:
    m = torch.tensor(IMAGENET_MEAN)[None, :, None, None]
    s = torch.tensor(IMAGENET_STD)[None, :, None, None]
    return (images - m) / s


@pytest.fixture
def cfg():
    return load_preset("token-vit-tiny")  # E 32, 2 heads, 2 + 2 blocks, patch 8 on 32x32, class token, GELU


def _edgesc_blocks(model, images: torch.Tensor, upto: int) -> torch.Tensor:
    """Run edgesc's embedding + the first ``upto`` blocks (encoder then decoder) with no selection / coder; return
    tokens in timm's order [cls, patches]. LayerNorm eps differs (torch 1e-5 vs timm 1e-6): tolerance covers it."""
    enc, dec = model.encoder, model.decoder
    x = torch.cat([enc.embed(images), enc.cls_token.expand(images.shape[0], -1, -1)], dim=1)
    blocks = list(enc.side.stack.blocks) + list(dec.side.stack.blocks)
    for blk in blocks[:upto]:
        x = blk(x)
    return torch.cat([x[:, -1:], x[:, :-1]], dim=1)


def test_mapping_matches_a_timm_forward(cfg) -> None:
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    sd = timm_state_dict()
    report = load_timm_vit(model, sd)
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        for upto in (0, 2, 4):  # embedding, the split point (encoder output), the whole ViT
            ref = timm_forward(sd, normalised(images), heads=cfg.heads, upto=upto)
            got = _edgesc_blocks(model, images, upto)
            assert torch.allclose(got, ref, atol=2e-3, rtol=1e-3), upto
        feats = _edgesc_blocks(model, images, 4)[:, 0]
        logits = model.decoder.head(model.decoder.side.stack.norm(feats))
        assert torch.allclose(logits, timm_forward(sd, normalised(images), heads=cfg.heads), atol=5e-3, rtol=1e-3)
    assert "encoder.side.stack.blocks.1.qkv.weight" in report.loaded
    assert "decoder.side.stack.blocks.0.fc2.bias" in report.loaded  # timm block 2 → decoder block 0
    assert "decoder.head.weight" in report.loaded
    assert "encoder.tokens.low" in report.initialised and "encoder.coder.levels.0.0.weight" in report.initialised


def test_without_normalisation_folding_the_raw_weights_are_copied(cfg) -> None:
    model = build_model(cfg)
    sd = timm_state_dict()
    load_timm_vit(model, sd, mean=None, std=None)
    assert torch.equal(model.encoder.embed.proj.weight, sd["patch_embed.proj.weight"].reshape(32, -1))
    assert torch.equal(model.encoder.cls_token, sd["cls_token"] + sd["pos_embed"][:, :1])
    assert torch.equal(model.encoder.embed.pos, sd["pos_embed"][:, 1:])


def test_file_with_deit_wrapper_and_head_policy(cfg, tmp_path) -> None:
    sd = timm_state_dict(classes=1000)
    path = tmp_path / "deit.pth"
    torch.save({"model": sd}, path)
    model = build_model(cfg)
    before = model.decoder.head.weight.detach().clone()
    report = load_timm_vit(model, path)  # head="auto": ImageNet head does not fit 10 classes → fresh head
    assert "head.weight" in report.skipped and torch.equal(model.decoder.head.weight, before)
    with pytest.raises(CheckpointError, match="head"):
        load_timm_vit(build_model(cfg), path, head="load")


def test_pos_embed_is_resampled_to_the_patch_grid(cfg) -> None:
    sd = timm_state_dict(grid=7)  # e.g. a model trained at 56x56 with patch 8
    model = build_model(cfg)
    report = load_timm_vit(model, sd)
    assert any("resampled from 49 to 16" in n for n in report.notes)
    assert model.encoder.embed.pos.shape == (1, 16, 32)


def test_mismatches_are_one_error_listing_the_keys(cfg) -> None:
    sd = timm_state_dict()
    del sd["blocks.1.mlp.fc2.bias"]
    sd["blocks.0.ls1.gamma"] = torch.ones(32)  # layer scale: no edgesc place
    sd["blocks.3.attn.qkv.weight"] = torch.zeros(96, 48)
    with pytest.raises(CheckpointError) as info:
        load_timm_vit(build_model(cfg), sd)
    msg = str(info.value)
    assert "\n" not in msg
    for needle in ("missing blocks.1.mlp.fc2.bias", "blocks.0.ls1.gamma", "blocks.3.attn.qkv.weight (96, 48)"):
        assert needle in msg


def test_block_count_patch_size_and_rtu_presets_are_refused(cfg) -> None:
    with pytest.raises(CheckpointError, match="6 blocks"):
        load_timm_vit(build_model(cfg), timm_state_dict(depth=6))
    with pytest.raises(CheckpointError, match="patch size"):
        load_timm_vit(build_model(cfg), timm_state_dict(patch=16, grid=2))
    rtu = load_preset("recvit-tiny")  # RTU: one block applied twice
    with pytest.raises(CheckpointError, match="recursions"):
        load_timm_vit(build_model(rtu), timm_state_dict(depth=2))


def test_bad_files(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="bad.pth"):
        read_state_dict(bad)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="not a state dict"):
        read_state_dict(tmp_path / "list.pth")


def test_train_init_accepts_a_timm_file(tmp_path) -> None:
    """`edgesc train --init deit.pth` starts from timm weights (papers 001/003 fine-tune a pretrained DeiT)."""
    from edgesc.train.checkpoint import is_edgesc_checkpoint, load_checkpoint
    from edgesc.train.options import TrainOptions
    from edgesc.train.trainer import run_training

    sd = timm_state_dict(e=32, depth=4, patch=8, grid=4, classes=10, mlp=64)
    src = tmp_path / "deit.pth"
    torch.save({"model": sd}, src)  # DeiT releases wrap the weights in "model"
    assert not is_edgesc_checkpoint(src)
    out = tmp_path / "run"
    res = run_training(TrainOptions(model="token-vit-tiny", data="digits32", out=out, steps=1, batch_size=4,
                                    init=src, log_every=1, eval_batches=1))
    assert res.checkpoint is not None and is_edgesc_checkpoint(res.checkpoint)
    _, model, _ = load_checkpoint(res.checkpoint)
    w = model.state_dict()
    # one AdamW step at a small learning rate moves the weights only a little from the timm ones
    blk = [k for k in w if k.endswith("qkv.weight")][0]
    assert torch.allclose(w[blk].float(), sd["blocks.0.attn.qkv.weight"], atol=0.05), blk
