"""Checkpoint format, atomic writes, error messages, RNG capture and fp16 export (edgesc.train.checkpoint)."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgesc.config import load_preset
from edgesc.errors import CheckpointError
from edgesc.train import checkpoint as ck


def _small() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


@pytest.fixture()
def cfg():
    return load_preset("recvit")


def test_roundtrip_keeps_weights_and_fields(tmp_path: Path, cfg) -> None:
    m = _small()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    m(torch.randn(2, 8)).sum().backward()
    opt.step()
    p = ck.save_checkpoint(tmp_path / "a.pt", cfg=cfg, model=m, step=7, stage="width", optimizer=opt,
                           rng=ck.capture_rng_state(), metrics={"psnr": 20.5})
    obj = ck.read_checkpoint(p)
    assert obj["format"] == "edgesc-ckpt/1" and obj["step"] == 7 and obj["stage"] == "width"
    assert obj["metrics"] == {"psnr": 20.5}
    assert ck.checkpoint_config(obj) == cfg
    for k, v in m.state_dict().items():
        assert torch.equal(obj["model"][k], v)
    opt2 = torch.optim.AdamW(_small().parameters(), lr=1e-3)
    opt2.load_state_dict(obj["optimizer"])
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    # no temp files left behind
    assert [q.name for q in tmp_path.iterdir()] == ["a.pt"]


def test_abort_mid_write_keeps_previous_checkpoint(tmp_path: Path, cfg, monkeypatch) -> None:
    m = _small()
    path = tmp_path / "last.pt"
    ck.save_checkpoint(path, cfg=cfg, model=m, step=1)
    before = path.read_bytes()

    real_save = torch.save

    def broken_save(obj, f, *a, **kw):  # write part of the bytes, then die like a killed process
        import io
        buf = io.BytesIO()
        real_save(obj, buf, *a, **kw)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", broken_save)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(path, cfg=cfg, model=m, step=2)
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == before
    assert ck.read_checkpoint(path)["step"] == 1
    assert [q.name for q in tmp_path.iterdir()] == ["last.pt"]  # the partial temp file is gone


def test_missing_truncated_foreign_files_raise_naming_the_file(tmp_path: Path, cfg) -> None:
    with pytest.raises(CheckpointError, match="not found.*nope.pt"):
        ck.read_checkpoint(tmp_path / "nope.pt")
    good = ck.save_checkpoint(tmp_path / "good.pt", cfg=cfg, model=_small())
    data = good.read_bytes()
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="trunc.pt"):
        ck.read_checkpoint(trunc)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt"):
        ck.read_checkpoint(empty)
    text = tmp_path / "notes.pt"
    text.write_text("hello, not a checkpoint\n")
    with pytest.raises(CheckpointError, match="notes.pt"):
        ck.read_checkpoint(text)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": _small().state_dict()}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt is not an edgesc checkpoint"):
        ck.read_checkpoint(foreign)
    raw_sd = tmp_path / "raw.pt"
    torch.save(_small().state_dict(), raw_sd)
    with pytest.raises(CheckpointError, match="raw.pt"):
        ck.read_checkpoint(raw_sd)


def test_rng_state_roundtrip_through_checkpoint(tmp_path: Path, cfg) -> None:
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    ck.save_checkpoint(tmp_path / "r.pt", cfg=cfg, model=_small(), rng=ck.capture_rng_state())
    expected = (random.random(), float(np.random.rand()), torch.rand(3))
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    ck.restore_rng_state(ck.read_checkpoint(tmp_path / "r.pt")["rng"])
    got = (random.random(), float(np.random.rand()), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_export_weights_fp16_drops_training_state(tmp_path: Path, cfg) -> None:
    m = nn.Linear(256, 256)
    opt = torch.optim.AdamW(m.parameters())
    m(torch.randn(1, 256)).sum().backward()
    opt.step()
    src = ck.save_checkpoint(tmp_path / "full.pt", cfg=cfg, model=m, optimizer=opt, rng=ck.capture_rng_state())
    dst = ck.export_weights(src, tmp_path / "ship.pt")
    raw = torch.load(dst, weights_only=True)
    assert raw["dtype"] == "float16" and "optimizer" not in raw and "rng" not in raw
    assert raw["model"]["weight"].dtype == torch.float16
    assert dst.stat().st_size < src.stat().st_size / 2  # fp16 weights and no Adam moments
    back = ck.read_checkpoint(dst)
    assert back["model"]["weight"].dtype == torch.float32
    assert torch.allclose(back["model"]["weight"], m.weight.detach(), atol=1e-3)
    with pytest.raises(CheckpointError, match="over the"):
        ck.export_weights(src, tmp_path / "big.pt", limit_bytes=1000)
    assert not (tmp_path / "big.pt").exists()


def test_weights_hash_changes_with_values() -> None:
    a = _small().state_dict()
    h = ck.weights_sha256(a)
    assert h == ck.weights_sha256({k: v.clone() for k, v in a.items()})
    b = {k: v.clone() for k, v in a.items()}
    b["0.bias"][0] += 1e-3
    assert ck.weights_sha256(b) != h
