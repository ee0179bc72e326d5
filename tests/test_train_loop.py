"""The training loop on a tiny preset: the loss falls, resume is exact, Alg. 2 stages freeze the right parts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from edgesc.train.checkpoint import read_checkpoint
from edgesc.train.options import OptionError, TrainOptions
from edgesc.train.runlog import read_jsonl
from edgesc.train.trainer import run_training
from train_tiny import tiny_config


def _opts(cfg: Path, out: Path, **kw) -> TrainOptions:
    base = dict(model=str(cfg), out=out, progress=False, eval_batches=1, device="cpu", log_every=1)
    base.update(kw)
    return TrainOptions(**base)


def test_loss_falls_on_tiny_preset(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    res = run_training(_opts(cfg, tmp_path / "run", steps=50, log_every=5, snr_db=(10.0, 20.0)))
    recs = [r for r in read_jsonl(tmp_path / "run" / "log.jsonl") if "step" in r and "loss" in r]
    assert [r["step"] for r in recs] == list(range(5, 51, 5))
    first = sum(r["task_loss"] for r in recs[:2]) / 2
    last = sum(r["task_loss"] for r in recs[-2:]) / 2
    assert last < 0.75 * first, (first, last)
    assert recs[-1]["psnr"] > recs[0]["psnr"] + 1.0
    assert "loss_ponder_enc" in recs[0] and "loss_width" in recs[0]  # aux losses of Eq. 29 and Eq. 38 logged
    assert res.checkpoint == tmp_path / "run" / "final.pt"
    meta = read_checkpoint(res.checkpoint)
    assert meta["step"] == 50 and "val_psnr" in meta["metrics"] and "optimizer" not in meta
    assert "optimizer" in read_checkpoint(tmp_path / "run" / "last.pt")  # last.pt keeps the training state


def test_resume_reproduces_the_uninterrupted_run(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    full = run_training(_opts(cfg, tmp_path / "a", steps=6, seed=5, eval_batches=0))
    first = run_training(_opts(cfg, tmp_path / "b", steps=6, seed=5, eval_batches=0, stop_at=3))
    assert first.checkpoint is None and first.stages[0].step == 3
    assert read_checkpoint(tmp_path / "b" / "last.pt")["step"] == 3
    second = run_training(_opts(cfg, tmp_path / "b", steps=6, seed=5, eval_batches=0, resume=True))
    assert second.stages[0].step == 6
    a, b = read_checkpoint(full.checkpoint), read_checkpoint(second.checkpoint)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    la, lb = read_checkpoint(tmp_path / "a" / "last.pt"), read_checkpoint(tmp_path / "b" / "last.pt")
    sa, sb = la["optimizer"]["state"], lb["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        assert torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"])
    assert la["scheduler"]["last_epoch"] == lb["scheduler"]["last_epoch"] == 6
    # the logged losses of steps 4-6 agree too
    log_a = {r["step"]: r["loss"] for r in read_jsonl(tmp_path / "a" / "log.jsonl") if "loss" in r}
    log_b = {r["step"]: r["loss"] for r in read_jsonl(tmp_path / "b" / "log.jsonl") if "loss" in r}
    assert log_a == log_b


def test_resume_without_checkpoint_is_an_error(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    with pytest.raises(OptionError, match="nothing to resume"):
        run_training(_opts(cfg, tmp_path / "empty", steps=2, resume=True))


def test_width_then_depth_stage_follow_alg2(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    w = run_training(_opts(cfg, tmp_path / "w", steps=3, stage="width", eval_batches=0))
    wck = read_checkpoint(w.checkpoint)
    assert wck["stage"] == "width" and wck["config"]["depth"]["enabled"] is False
    assert not any(".depth." in k for k in wck["model"])  # no halting in the width stage
    d = run_training(_opts(cfg, tmp_path / "d", steps=4, stage="depth", init=w.checkpoint, eval_batches=0,
                           p_width_scale=0.0))
    dck = read_checkpoint(d.checkpoint)
    assert dck["config"]["depth"]["enabled"] is True and dck["config"]["depth"]["beta"] == 0.0  # Alg. 2 step 3
    start = [r for r in read_jsonl(tmp_path / "d" / "log.jsonl") if r.get("event") == "start"][0]
    assert sorted(start["init"]["missing"]) == sorted(k for k in dck["model"] if ".depth." in k)
    width_keys = [k for k in wck["model"] if ".width." in k]
    assert width_keys
    for k in width_keys:  # width-related parameters frozen
        assert torch.equal(wck["model"][k], dck["model"][k]), k
    halt = [k for k in dck["model"] if k.endswith("depth.halt.bias")]
    assert halt and any(float(dck["model"][k]) != -3.0 for k in halt)  # the depth controller trained


def test_depth_train_controller_freezes_the_backbone(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    w = run_training(_opts(cfg, tmp_path / "w", steps=2, stage="width", eval_batches=0))
    d = run_training(_opts(cfg, tmp_path / "d", steps=2, stage="depth", init=w.checkpoint, eval_batches=0,
                           depth_train="controller"))
    wm, dm = read_checkpoint(w.checkpoint)["model"], read_checkpoint(d.checkpoint)["model"]
    for k, v in wm.items():
        assert torch.equal(v, dm[k]), k
    assert any(not torch.equal(dm[k], torch.tensor([-3.0])) for k in dm if k.endswith("halt.bias"))


def test_joint_stage_writes_pareto(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    res = run_training(_opts(cfg, tmp_path / "j", steps=2, stage="joint", grid_rho=[0.2], grid_T=[0.5, 0.99],
                             depth_steps=2, eval_batches=1, log_every=2), eval_snrs=[5.0, 15.0])
    doc = json.loads((tmp_path / "j" / "pareto.json").read_text())
    assert len(doc["configs"]) == 2 and {c["T"] for c in doc["configs"]} == {0.5, 0.99}
    for c in doc["configs"]:
        assert Path(c["checkpoint"]).exists() and c["flops_per_image"] > 0 and c["quality_key"] == "psnr"
        assert [r["snr_db"] for r in c["per_snr"]] == [5.0, 15.0]
    assert 1 <= len(doc["pareto"]) <= 2
    assert res.checkpoint is not None and res.checkpoint.exists()
    assert (tmp_path / "j" / "width_rho0p2" / "final.pt").exists()


def test_erasure_and_rayleigh_train(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    res = run_training(_opts(cfg, tmp_path / "e", steps=4, channel="rayleigh", erasure=0.3, eval_batches=0,
                             log_every=4))
    assert res.checkpoint is not None and read_checkpoint(res.checkpoint)["train_options"]["erasure"] == 0.3
    rec = [r for r in read_jsonl(tmp_path / "e" / "log.jsonl") if "loss" in r][-1]
    assert 0.55 < rec["received_fraction"] < 0.85  # ~30 % of the tokens erased (4 x 8 images x 16 tokens)
    clean = run_training(_opts(cfg, tmp_path / "c", steps=1, eval_batches=0))
    assert clean.checkpoint is not None
    assert [r for r in read_jsonl(tmp_path / "c" / "log.jsonl") if "loss" in r][-1]["received_fraction"] == 1.0
