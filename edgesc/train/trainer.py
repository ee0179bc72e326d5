"""``edgesc train`` end to end: resolve options against the preset, set up DDP, run the stage(s).

The preset's ``[train]`` table gives the defaults (data, batch size, lr, steps, SNR range, channel, stage);
command-line options override them. ``--stage joint`` runs paper 000's Alg. 2: for every target pruning ratio
ρt of ``--grid-rho`` a width stage (``--steps`` steps) and, from its checkpoint, for every stopping threshold T
of ``--grid-T`` a depth stage (``--depth-steps`` steps); every configuration is saved in its own folder,
evaluated on the test split (quality and counted FLOPs per image, averaged over the evaluation SNRs) and the
Pareto set of quality vs FLOPs is written to ``OUT/pareto.json`` (000 §III-C step 4, Fig. 5).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from torch import nn
from torch.utils.data import Dataset

from edgesc.config import ModelConfig, load_preset
from edgesc.errors import DataError
from edgesc.train import distributed as dd
from edgesc.train.loop import FINAL, StageResult, StageRun, train_stage
from edgesc.train.options import TrainOptions, check_choice, CHANNELS, OptionError, STAGES
from edgesc.train.stages import stage_config


@dataclass
class TrainResult:
    stage: str
    out: Path
    checkpoint: Path | None
    stages: list[StageResult]
    pareto: list[dict[str, Any]] | None = None
    is_main: bool = True  # rank 0 (the process that logs, checkpoints and prints)
    archived: Path | None = None  # where an earlier run found in OUT was moved (``if_exists="keep"``)


def _check_data(spec: str) -> None:
    """Fail early with a clear message when ``--data`` is malformed or names a path that does not exist."""
    from edgesc.data.load import check_spec

    try:
        _, path = check_spec(spec)
    except DataError as exc:
        raise DataError(f"--data: {exc}") from None
    if path and not Path(path).expanduser().exists():
        raise DataError(f"--data {spec}: path not found")


def base_run(opts: TrainOptions, cfg: ModelConfig) -> StageRun:
    """A :class:`StageRun` from the options, with the preset's ``[train]`` defaults filled in."""
    t = cfg.train
    stage = opts.stage or t.stage
    check_choice(stage, STAGES, "--stage")
    channel = opts.channel or t.channel
    check_choice(channel, CHANNELS, "--channel")
    data = opts.data or t.data
    _check_data(data)
    sched = {"p_depth_cap": opts.p_depth_cap, "p_width_scale": opts.p_width_scale,
             "width_scale_min": opts.width_scale_min, "budget_min": opts.budget_min}
    steps = opts.steps or t.steps
    return StageRun(
        cfg=cfg, stage=stage, out=Path(opts.out), data=data, channel=channel,
        snr_db=tuple(opts.snr_db) if opts.snr_db is not None else tuple(t.snr_db),
        steps=steps, batch_size=opts.batch_size or t.batch_size, lr=opts.lr or t.lr,
        weight_decay=t.weight_decay if opts.weight_decay is None else opts.weight_decay,
        warmup_steps=min(t.warmup_steps if opts.warmup_steps is None else opts.warmup_steps, max(0, steps // 10)),
        erasure=t.erasure if opts.erasure is None else opts.erasure,
        seed=opts.seed, init=Path(opts.init) if opts.init else None, resume=opts.resume,
        log_every=opts.log_every, ckpt_every=opts.ckpt_every, eval_batches=opts.eval_batches,
        progress=opts.progress, num_workers=opts.num_workers, stop_at=opts.stop_at,
        depth_train=opts.depth_train, schedule=sched,
    )


def run_training(opts: TrainOptions, *, model_factory: Callable[[ModelConfig], nn.Module] | None = None,
                 dataset: Dataset | None = None, eval_snrs: Sequence[float] | None = None) -> TrainResult:
    """Run ``edgesc train`` (one stage, or Alg. 2 for ``joint``); returns the checkpoints and the Pareto set."""
    opts.validate()
    cfg = load_preset(opts.model)
    run = base_run(opts, cfg)
    if run.stage != "joint":
        run.cfg = stage_config(cfg, run.stage)
        if run.stage == "depth" and run.init is None and not run.resume:
            raise OptionError("--stage depth fine-tunes the depth controller of a width-stage checkpoint "
                              "(paper 000 Alg. 2): pass --init WIDTH_CHECKPOINT")
    else:
        stage_config(cfg, "joint")  # both controllers must exist
        if opts.eval_batches < 1:
            raise OptionError(f"--eval-batches {opts.eval_batches}: --stage joint evaluates every configuration "
                              f"for the Pareto set and needs at least 1")
    if run.init is not None:
        from edgesc.models.pretrained import read_state_dict
        from edgesc.train.checkpoint import is_edgesc_checkpoint, read_checkpoint

        # a corrupt or foreign --init fails before anything is written
        read_checkpoint(run.init) if is_edgesc_checkpoint(run.init) else read_state_dict(run.init)
    dd.pick_device(opts.device, int(os.environ.get("LOCAL_RANK", "0")))  # --device cuda without a GPU: fail now
    archived = prepare_out(run.out, resume=run.resume, if_exists=opts.if_exists,
                           is_main=int(os.environ.get("RANK", "0")) == 0)
    info = dd.setup(opts.device)
    try:
        if run.stage != "joint":
            res = train_stage(run, dist=info, model_factory=model_factory, dataset=dataset)
            return TrainResult(run.stage, run.out, res.checkpoint if res.finished else None, [res],
                               is_main=info.is_main, archived=archived)
        result = _run_joint(run, opts, info, model_factory, dataset, eval_snrs)
        result.is_main = info.is_main
        result.archived = archived
        return result
    finally:
        dd.teardown(info)


#: files that make a folder hold a training run (in OUT itself, or in a joint-stage sub-folder of OUT)
RUN_FILES = ("last.pt", "final.pt", "log.jsonl", "pareto.json")
ARCHIVE_PREFIX = "previous-"


def earlier_run(out: Path) -> list[Path]:
    """The entries of ``out`` that belong to an earlier training run: :data:`RUN_FILES` and sub-folders (joint
    stage) holding any of them. Archived runs (``previous-N``) are not counted."""
    if not out.is_dir():
        return []
    found: list[Path] = []
    for entry in sorted(out.iterdir()):
        if entry.name.startswith(ARCHIVE_PREFIX):
            continue
        if entry.is_file() and entry.name in RUN_FILES:
            found.append(entry)
        elif entry.is_dir() and any((entry / f).is_file() for f in RUN_FILES):
            found.append(entry)
    return found


def prepare_out(out: Path, *, resume: bool, if_exists: str = "keep", is_main: bool = True) -> Path | None:
    """Check that ``out`` can be the run's folder and make sure a fresh run never destroys an earlier one.

    ``out`` must be a folder or creatable (a path through a file is an :class:`OptionError`). Without
    ``resume``, an ``out`` that already holds a run (:func:`earlier_run`) is refused (``if_exists="refuse"``,
    the CLI without ``--force``) or the earlier run's files are moved to ``out/previous-N/`` (``"keep"``), whose
    path is returned. A run that left only ``log.jsonl`` (it stopped before its first checkpoint, so there is
    nothing to resume) is moved aside in both modes. Only the main process (rank 0) creates or moves anything.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OptionError(f"--out {out}: exists and is not a folder")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OptionError(f"--out {out}: {parent} is a file, not a folder")
            break
    if resume:
        return None
    found = earlier_run(out)
    if not found:
        if is_main:
            try:
                out.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OptionError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from None
            if not os.access(out, os.W_OK):
                raise OptionError(f"--out {out}: the folder is not writable")
        return None
    names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in found[:5])
    checkpointed = any((p / f).is_file() if p.is_dir() else p.name == f for p in found for f in RUN_FILES
                       if f != "log.jsonl")
    if if_exists == "refuse" and checkpointed:  # only a log (a run that died before its first checkpoint): keep it aside
        raise OptionError(f"--out {out} already holds a training run ({names}): pass --resume to continue it, "
                          f"--force to start afresh (the earlier run is moved to {out}/{ARCHIVE_PREFIX}N/), "
                          f"or another --out")
    taken = [int(p.name[len(ARCHIVE_PREFIX):]) for p in out.iterdir()
             if p.name.startswith(ARCHIVE_PREFIX) and p.name[len(ARCHIVE_PREFIX):].isdigit()]
    dest = out / f"{ARCHIVE_PREFIX}{max(taken, default=0) + 1}"
    if is_main:
        try:
            dest.mkdir()
            for p in found:
                os.replace(p, dest / p.name)
        except OSError as exc:
            raise OptionError(f"--out {out}: cannot move the earlier run to {dest} ({exc.strerror or exc})") from None
    return dest


def _tag(x: float) -> str:
    return f"{x:g}".replace(".", "p").replace("-", "m")


def _run_joint(run: StageRun, opts: TrainOptions, info: dd.DistInfo, model_factory: Any, dataset: Any,
               eval_snrs: Sequence[float] | None) -> TrainResult:
    """Alg. 2 of paper 000 over the (ρt, T) grid, then the Pareto set of quality vs FLOPs."""
    cfg = run.cfg
    results: list[StageResult] = []
    configs: list[dict[str, Any]] = []
    depth_steps = opts.depth_steps or max(1, run.steps // 2)
    snrs = list(eval_snrs) if eval_snrs is not None else _default_eval_snrs(run.snr_db)
    for rho in opts.grid_rho:
        w_out = run.out / f"width_rho{_tag(rho)}"
        w_run = _sub_run(run, stage="width", out=w_out, cfg=stage_config(cfg, "width", target_prune=rho))
        w_res = _train_or_skip(w_run, info, model_factory, dataset)
        results.append(w_res)
        if not w_res.finished:
            return TrainResult("joint", run.out, None, results)
        for T in opts.grid_T:
            d_out = run.out / f"rho{_tag(rho)}_T{_tag(T)}"
            d_run = _sub_run(run, stage="depth", out=d_out, steps=depth_steps, init=w_res.checkpoint,
                             cfg=stage_config(cfg, "depth", target_prune=rho, threshold=T))
            d_res = _train_or_skip(d_run, info, model_factory, dataset)
            results.append(d_res)
            if not d_res.finished:
                return TrainResult("joint", run.out, None, results)
            if info.is_main:
                configs.append(_evaluate_config(d_res.checkpoint, rho, T, run, snrs, dataset))
    pareto = None
    if info.is_main:
        pareto = pareto_set(configs)
        doc = {"quality_key": configs[0]["quality_key"] if configs else None, "eval_snr_db": snrs,
               "channel": run.channel, "configs": configs, "pareto": pareto}
        from edgesc.train.checkpoint import atomic_write_text

        atomic_write_text(run.out / "pareto.json", json.dumps(doc, indent=2) + "\n")
    best = Path(pareto[-1]["checkpoint"]) if pareto else None
    return TrainResult("joint", run.out, best, results, pareto)


def _default_eval_snrs(snr: tuple[float, float]) -> list[float]:
    lo, hi = snr
    if hi - lo < 1e-9:
        return [lo]
    return [lo + (hi - lo) * f for f in (0.1, 0.5, 0.9)]


def _sub_run(run: StageRun, **changes: Any) -> StageRun:
    from dataclasses import replace

    sub = replace(run, **changes)
    if "init" not in changes:
        sub.init = run.init
    return sub


def _train_or_skip(run: StageRun, info: dd.DistInfo, model_factory: Any, dataset: Any) -> StageResult:
    """Train a sub-run; with ``--resume`` a finished sub-run is reused and an interrupted one resumed."""
    final = run.out / FINAL
    if run.resume and final.exists():
        from edgesc.train.checkpoint import read_checkpoint

        obj = read_checkpoint(final)
        return StageResult(run.out, final, int(obj["step"]), True, dict(obj.get("metrics", {})), None)
    if run.resume and not (run.out / "last.pt").exists():
        run.resume = False  # this sub-run had not started yet
    return train_stage(run, dist=info, model_factory=model_factory, dataset=dataset)


def _evaluate_config(ckpt: Path, rho: float, T: float, run: StageRun, snrs: Sequence[float],
                     dataset: Any) -> dict[str, Any]:
    from edgesc.train.checkpoint import load_checkpoint
    from edgesc.train.evaluate import evaluate_model, mean_over_snr

    cfg, model, _ = load_checkpoint(ckpt)
    res = evaluate_model(model, cfg, data=run.data if dataset is None else dataset, snrs=snrs,
                         channel=run.channel, batch_size=run.batch_size, max_batches=run.eval_batches,
                         seed=run.seed)
    key = res["quality_keys"][0]
    return {"rho_t": rho, "T": T, "checkpoint": str(ckpt), "quality_key": key,
            "quality": mean_over_snr(res, key), "flops_per_image": mean_over_snr(res, "flops_per_image"),
            "enc_layers": mean_over_snr(res, "enc_layers"), "enc_width": mean_over_snr(res, "enc_width"),
            "per_snr": res["results"]}


def pareto_set(configs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Configurations not dominated in (higher quality, lower FLOPs), sorted by FLOPs (cheapest first)."""
    front = []
    for c in configs:
        dominated = any(
            o is not c and o["quality"] >= c["quality"] and o["flops_per_image"] <= c["flops_per_image"]
            and (o["quality"] > c["quality"] or o["flops_per_image"] < c["flops_per_image"])
            for o in configs
        )
        if not dominated:
            front.append({k: v for k, v in c.items() if k != "per_snr"})
    return sorted(front, key=lambda c: (c["flops_per_image"], -c["quality"]))


def options_from_cli(**kw: Any) -> TrainOptions:
    """Build :class:`TrainOptions` from CLI keyword arguments (unknown names are a programming error)."""
    return TrainOptions(**kw)


__all__ = ["TrainResult", "run_training", "pareto_set", "base_run", "prepare_out", "earlier_run", "OptionError"]
