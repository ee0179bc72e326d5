"""Pieces of the training code that need no model: option parsing, sampler, schedules, Pareto selection."""
from __future__ import annotations

import math

import pytest
import torch

from edgesc.config import load_preset
from edgesc.train.options import Baseline, OptionError, TrainOptions, parse_baseline, parse_float_list, parse_snr_range
from edgesc.train.sampler import StepBatchSampler
from edgesc.train.schedule import ControlSchedule, warmup_cosine
from edgesc.train.stages import stage_config
from edgesc.train.trainer import pareto_set


def test_parse_snr_range() -> None:
    assert parse_snr_range("0:20") == (0.0, 20.0)
    assert parse_snr_range("-5:5") == (-5.0, 5.0)
    assert parse_snr_range("7") == (7.0, 7.0)
    with pytest.raises(OptionError, match="'x' is not a number"):
        parse_snr_range("3:x")
    with pytest.raises(OptionError, match="low end 5 is above high end 1"):
        parse_snr_range("5:1")
    with pytest.raises(OptionError, match="LO:HI"):
        parse_snr_range("1:2:3")
    with pytest.raises(OptionError, match="not finite"):
        parse_snr_range("0:inf")


def test_parse_lists_and_baselines() -> None:
    assert parse_float_list("1,4,7", "--snr-db") == [1.0, 4.0, 7.0]
    with pytest.raises(OptionError, match="--snr-db"):
        parse_float_list("1,a", "--snr-db")
    with pytest.raises(OptionError):
        parse_float_list(" , ", "--snr-db")
    assert parse_baseline("ee:4") == Baseline("ee", depth=4)
    assert parse_baseline("sp:0.3") == Baseline("sp", prune=0.3)
    assert parse_baseline("sdw:2:0.25") == Baseline("sdw", depth=2, prune=0.25)
    assert parse_baseline("sdw:2:0.25").label == "sdw:2:0.25"
    assert parse_baseline(None) is None
    for bad in ("ee:0", "ee:2.5", "sp:1.2", "xx:1", "ee", "sdw:2", "sp:0.1:3"):
        with pytest.raises(OptionError, match="--baseline"):
            parse_baseline(bad)


def test_options_validate_names_the_option(tmp_path) -> None:
    with pytest.raises(OptionError, match="--stage 'widht'"):
        TrainOptions(model="recvit", out=tmp_path, stage="widht").validate()
    with pytest.raises(OptionError, match="--channel 'rician'"):
        TrainOptions(model="recvit", out=tmp_path, channel="rician").validate()
    with pytest.raises(OptionError, match="--init"):
        TrainOptions(model="recvit", out=tmp_path, init=tmp_path / "missing.pt").validate()
    with pytest.raises(OptionError, match="--grid-T"):
        TrainOptions(model="recvit", out=tmp_path, grid_T=[1.5]).validate()


def test_sampler_is_a_function_of_seed_and_step_and_splits_over_ranks() -> None:
    full = StepBatchSampler(50, 8, seed=3, start=0, stop=20)
    batches = list(full)
    assert len(batches) == 20 and all(len(b) == 8 for b in batches)
    per_epoch = 50 // 8
    epoch0 = [i for b in batches[:per_epoch] for i in b]
    assert len(set(epoch0)) == len(epoch0)  # no repeats within an epoch
    assert batches[0] != batches[per_epoch]  # a new permutation each epoch
    resumed = list(StepBatchSampler(50, 8, seed=3, start=11, stop=20))
    assert resumed == batches[11:]
    r0 = list(StepBatchSampler(50, 8, seed=3, start=0, stop=20, rank=0, world=2))
    r1 = list(StepBatchSampler(50, 8, seed=3, start=0, stop=20, rank=1, world=2))
    for b, a0, a1 in zip(batches, r0, r1):
        assert sorted(a0 + a1) == sorted(b) and len(a0) == len(a1) == 4
    assert list(StepBatchSampler(50, 8, seed=4, start=0, stop=1))[0] != batches[0]


def test_warmup_cosine_shape() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = warmup_cosine(opt, warmup_steps=4, total_steps=20, final_fraction=0.0)
    lrs = []
    for _ in range(20):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[1] < lrs[2] < lrs[3] < lrs[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    assert lrs[-1] < 0.05


def test_control_schedule_ranges() -> None:
    cfg = load_preset("recvit")
    sch = ControlSchedule.for_config(cfg, (2.0, 9.0), p_depth_cap=0.5, p_width_scale=0.5, width_scale_min=0.4)
    torch.manual_seed(0)
    draws = [sch.sample(4) for _ in range(400)]
    snrs = [d["snr_db"] for d in draws]
    assert min(snrs) >= 2.0 and max(snrs) <= 9.0 and max(snrs) - min(snrs) > 6.0
    caps = [d["depth"] for d in draws if d["depth"] is not None]
    assert 0.35 < len(caps) / len(draws) < 0.65
    assert set(caps) == set(range(1, cfg.encoder.layers + 1))
    widths = [d["width"] for d in draws if d["width"] != 1.0]
    assert 0.35 < len(widths) / len(draws) < 0.65 and min(widths) >= 0.4
    assert all(d["budget"] == 1.0 and d["ratio"] == 0 for d in draws)  # recvit has no tokens, one ratio
    tok = ControlSchedule(snr_db=(0, 1), layers=4, tokens=True, num_patches=16, ratio_levels=3)
    d = tok.sample(64)
    assert d["budget"].shape == (64,) and float(d["budget"].min()) >= 1 / 16 and float(d["budget"].max()) <= 1
    assert {tok.sample(2)["ratio"] for _ in range(100)} == {0, 1, 2}


def test_stage_configs_follow_alg2() -> None:
    cfg = load_preset("recvit")
    w = stage_config(cfg, "width", target_prune=0.4)
    assert not w.depth.enabled and w.width.enabled and w.width.target_prune == 0.4
    d = stage_config(cfg, "depth", threshold=0.9)
    assert d.depth.enabled and d.depth.beta == 0.0 and d.depth.threshold == 0.9
    assert stage_config(cfg, "full") == cfg
    nodepth = cfg.replace(depth={**cfg.to_dict()["depth"], "enabled": False})
    with pytest.raises(OptionError, match="no dynamic depth"):
        stage_config(nodepth, "depth")


def test_pareto_set() -> None:
    cfgs = [
        {"quality": 20.0, "flops_per_image": 10.0, "name": "a"},
        {"quality": 22.0, "flops_per_image": 20.0, "name": "b"},
        {"quality": 19.0, "flops_per_image": 15.0, "name": "dominated"},
        {"quality": 22.0, "flops_per_image": 25.0, "name": "dominated too"},
        {"quality": 25.0, "flops_per_image": 40.0, "name": "c"},
    ]
    front = pareto_set(cfgs)
    assert [c["name"] for c in front] == ["a", "b", "c"]
    assert not math.isnan(front[0]["quality"])
