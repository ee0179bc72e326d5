"""The training loop of one stage: data, controls, channel, loss, AdamW + warm-up/cosine, logs, checkpoints.

Loss (paper 000): L = L_task + Σ aux, where L_task is the MSE of Eq. 15 (reconstruction) or cross-entropy
(classification), and the model's ``out.losses`` already hold the weighted auxiliary terms: τ·L_ponder
(Eq. 28-29) when dynamic depth is on, λ_ρ·L_ρ with the adaptive λ_ρ (Eq. 34-39) when dynamic width is on, and
the token-budget penalties of papers 001/003 when token selection is on.

Reproducibility: the batches are a pure function of (seed, step) (:mod:`edgesc.train.sampler`), every other
random draw (operating points, channel noise, dropout) uses the global generators, whose states are saved in
each checkpoint together with the model, AdamW and scheduler states and the step. ``--resume`` therefore
continues bit-for-bit like the uninterrupted run on CPU.
"""
from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from edgesc.config import ModelConfig
from edgesc.errors import CheckpointError, JobFailed
from edgesc.train import distributed as dd
from edgesc.train.checkpoint import (
    capture_rng_state,
    checkpoint_config,
    describe_mismatch,
    is_edgesc_checkpoint,
    read_checkpoint,
    restore_rng_state,
    save_checkpoint,
    state_dict_mismatch,
)
from edgesc.train.options import OptionError
from edgesc.train.runlog import JsonlLog, TrainProgress
from edgesc.train.sampler import StepBatchSampler
from edgesc.train.schedule import ControlSchedule, warmup_cosine
from edgesc.train.stages import apply_stage_freezing

LAST = "last.pt"
FINAL = "final.pt"
LOG = "log.jsonl"


@dataclass
class StageRun:
    """Fully resolved settings of one training run (one stage, one output folder)."""

    cfg: ModelConfig
    stage: str
    out: Path
    data: str
    channel: str
    snr_db: tuple[float, float]
    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    erasure: float = 0.0
    seed: int = 0
    init: Path | None = None
    resume: bool = False
    log_every: int = 10
    ckpt_every: int = 500
    eval_batches: int = 4
    progress: bool = True
    num_workers: int = 0
    stop_at: int | None = None
    depth_train: str = "backbone"
    grad_clip: float = 1.0
    schedule: dict[str, Any] = field(default_factory=dict)

    def options_record(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "cfg"}
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


@dataclass
class StageResult:
    out: Path
    checkpoint: Path
    step: int
    finished: bool
    metrics: dict[str, Any]
    seconds_per_step: float | None


# ---- helpers -------------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _images_labels(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, (list, tuple)):
        images = batch[0]
        labels = batch[1] if len(batch) > 1 else None
    elif isinstance(batch, Mapping):
        images, labels = batch["image"], batch.get("label")
    else:
        images, labels = batch, None
    return images, labels


#: per-example statistics worth logging as batch means (the others are per-layer tensors)
_MEAN_STATS = ("enc_kept_fraction", "budget")


def _float(name: str, v: Any) -> float | None:
    """A loggable scalar from a model statistic: 0-d/1-element tensors and numbers, batch means of a few."""
    if isinstance(v, torch.Tensor):
        if v.numel() == 1 or (name in _MEAN_STATS and v.dim() == 1):
            return float(v.detach().float().mean().item())
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    return None


def task_metric(task: str, output: torch.Tensor, images: torch.Tensor, labels: torch.Tensor | None) -> float:
    """Mean per-image PSNR in dB (reconstruction, images in [0, 1]) or accuracy in % (classification)."""
    from edgesc import metrics

    with torch.no_grad():
        if task == "reconstruction":
            return float(metrics.psnr(output.detach().clamp(0, 1), images).mean())
        return 100.0 * float(metrics.accuracy(output.detach(), labels))


def training_channel(name: str, erasure: float) -> Callable[[torch.Tensor, torch.Tensor], Any]:
    """The channel layer of the training form (``edgesc.channels.make_channel``). With token erasure the model
    reads the channel's ``last_keep`` mask and treats erased tokens as dropped (contract: zeroed and marked)."""
    from edgesc.channels import make_channel

    return make_channel(name, erasure)


class TrainStep(nn.Module):
    """Model + task loss in one module, so DDP sees the loss graph (and the unused parameters) of each step."""

    def __init__(self, model: nn.Module, task: str) -> None:
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None, controls: Any, channel: Any):
        out = self.model(images, controls, channel)
        if self.task == "reconstruction":
            task_loss = F.mse_loss(out.output, images)  # Eq. 15
        else:
            task_loss = F.cross_entropy(out.output, labels)
        aux = dict(out.losses or {})
        loss = task_loss + sum(aux.values()) if aux else task_loss
        return loss, task_loss, out.output, aux, dict(out.stats or {})


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def load_init_weights(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Initialise ``model`` from checkpoint ``path`` (e.g. the width stage for the depth stage), or from a
    timm-format ViT/DeiT state dict (:func:`edgesc.models.pretrained.load_timm_vit`).

    Parameters the checkpoint lacks (a newly enabled controller) keep their fresh initialisation and parameters
    only the checkpoint has (a disabled controller) are ignored; both are reported. Shape mismatches and
    checkpoints sharing no parameter with the model raise :class:`CheckpointError`.
    """
    if not is_edgesc_checkpoint(path):
        from edgesc.models.pretrained import load_timm_vit  # timm ViT/DeiT weights (papers 001/003 start there)

        rep = load_timm_vit(model, path)
        return {"missing": rep.initialised, "unexpected": rep.skipped, "timm": rep.notes}
    obj = read_checkpoint(path)
    state = obj["model"]
    own = model.state_dict()
    stored = checkpoint_config(obj).name
    shared = [k for k in state if k in own]
    if not shared:
        raise CheckpointError(f"--init {path}: the checkpoint (model '{stored}') shares no weights with this model")
    diff = state_dict_mismatch(state, own)
    if diff["shape"]:
        raise CheckpointError(f"--init {path}: the checkpoint holds model '{stored}', whose weights do not fit this "
                              f"model: {describe_mismatch({'shape': diff['shape']})}")
    bad = [k for k in shared if torch.is_floating_point(state[k]) and not torch.isfinite(state[k]).all()]
    if bad:
        raise CheckpointError(f"--init {path}: weights {', '.join(bad[:4])} hold NaN or inf")
    result = model.load_state_dict({k: state[k] for k in shared}, strict=False)
    return {"missing": list(result.missing_keys), "unexpected": diff["unexpected"]}


# ---- the loop -------------------------------------------------------------------------------------------------
def train_stage(
    run: StageRun,
    *,
    dist: dd.DistInfo | None = None,
    model_factory: Callable[[ModelConfig], nn.Module] | None = None,
    dataset: Dataset | None = None,
) -> StageResult:
    """Train one stage as described by ``run``; returns where the checkpoint is and the final metrics."""
    dist = dist or dd.DistInfo()
    out = Path(run.out)
    device = dist.device
    if model_factory is None:
        from edgesc.models import build_model as model_factory  # noqa: N813
    cfg = run.cfg
    start_step = 0
    resume_obj: dict[str, Any] | None = None
    if run.resume:
        last = out / LAST
        if not last.exists():
            raise OptionError(f"--resume: nothing to resume, {last} does not exist")
        resume_obj = read_checkpoint(last)
        stored = checkpoint_config(resume_obj)
        if stored.name != cfg.name:
            raise OptionError(f"--resume: {last} holds model '{stored.name}', not '{cfg.name}'")
        stored_stage = resume_obj.get("stage")
        if stored_stage is not None and stored_stage != run.stage:
            raise OptionError(f"--resume: {last} is a {stored_stage!r} stage run, not {run.stage!r} "
                              f"(pass --stage {stored_stage})")
        cfg = stored
        start_step = int(resume_obj["step"])

    seed_everything(run.seed)
    model = model_factory(cfg).to(device)
    init_report: dict[str, list[str]] = {}
    if run.init is not None and resume_obj is None:
        init_report = load_init_weights(model, run.init)
    counts = apply_stage_freezing(model, run.stage, run.depth_train)
    model.train()

    optimizer = torch.optim.AdamW(_param_groups(model, run.weight_decay), lr=run.lr, betas=(0.9, 0.999))
    scheduler = warmup_cosine(optimizer, run.warmup_steps, run.steps)
    if resume_obj is not None:
        diff = state_dict_mismatch(resume_obj["model"], model.state_dict())
        if any(diff.values()):
            raise CheckpointError(f"--resume: the weights in {out / LAST} do not fit model '{cfg.name}': "
                                  f"{describe_mismatch(diff)}")
        model.load_state_dict(resume_obj["model"])
        try:
            if "optimizer" in resume_obj:
                optimizer.load_state_dict(resume_obj["optimizer"])
            if "scheduler" in resume_obj:
                scheduler.load_state_dict(resume_obj["scheduler"])
        except (ValueError, KeyError, RuntimeError, TypeError) as exc:
            raise CheckpointError(f"--resume: the optimizer state in {out / LAST} does not fit this run "
                                  f"({str(exc).strip().splitlines()[0][:120]}); was it written with other "
                                  f"--stage/--depth-train options?") from None
    # distinct noise per process, same data order on all (the sampler has its own generator)
    seed_everything(run.seed * 7919 + dist.rank)
    if resume_obj is not None and "rng" in resume_obj:
        rng = resume_obj["rng"]
        per_rank = rng.get("ranks")
        restore_rng_state(per_rank[dist.rank] if per_rank and dist.rank < len(per_rank) else rng)

    if dataset is None:
        from edgesc.data import load_dataset

        dataset = load_dataset(run.data, "train", cfg.image_size)
    from edgesc.data.load import check_task

    check_task(dataset, cfg.task, cfg.num_classes, f"model '{cfg.name}'")
    stop = run.steps if run.stop_at is None else max(start_step, min(run.steps, run.stop_at))
    sampler = StepBatchSampler(len(dataset), run.batch_size, run.seed, start_step, stop, dist.rank, dist.world)
    # own generator: creating the iterator must not consume the global stream (exact resume)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=run.num_workers,
                        generator=torch.Generator().manual_seed(run.seed))

    from edgesc.models import Controls

    channel = training_channel(run.channel, run.erasure)
    controls_schedule = ControlSchedule.for_config(cfg, run.snr_db, **run.schedule)
    step_module: nn.Module = TrainStep(model, cfg.task)
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        step_module = DDP(step_module, device_ids=[device.index] if device.type == "cuda" else None,
                          find_unused_parameters=True)

    log = JsonlLog(out / LOG, enabled=dist.is_main)
    metric_name = "psnr" if cfg.task == "reconstruction" else "acc"
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        log.write({"event": "start", "stage": run.stage, "model": cfg.name, "step": start_step,
                   "world": dist.world, "device": str(device), "params": counts, "init": init_report,
                   "options": run.options_record()})

    def checkpoint(step: int, path: Path, metrics: Mapping[str, Any]) -> None:
        # every rank's RNG state goes into the checkpoint so that a resumed DDP run is exact too
        rng = capture_rng_state()
        if dist.enabled:
            gathered: list[Any] = [None] * dist.world
            torch.distributed.all_gather_object(gathered, rng)
            rng = {**rng, "ranks": gathered}
        if dist.is_main:
            save_checkpoint(path, cfg=cfg, model=model, step=step, stage=run.stage, optimizer=optimizer,
                            scheduler=scheduler, rng=rng, metrics=metrics,
                            extra={"train_options": run.options_record()})
        dd.barrier(dist)

    window: dict[str, list[float]] = {}
    step = start_step
    t_window = time.perf_counter()
    n_window = 0
    step_times: list[float] = []
    last_metrics: dict[str, Any] = {}
    with TrainProgress(run.steps, start_step, f"{cfg.name}/{run.stage}", metric_name,
                       enabled=run.progress and dist.is_main) as bar:
        for batch in loader:
            t0 = time.perf_counter()
            images, labels = _images_labels(batch)
            images = images.to(device, non_blocking=True).float()
            labels = labels.to(device) if labels is not None else None
            ctl = controls_schedule.sample(images.shape[0], device)
            loss, task_loss, output, aux, stats = step_module(images, labels, Controls(**ctl), channel)
            if not torch.isfinite(loss):
                kept = f"{out / LAST} (step {_ckpt_step(out / LAST)})" if (out / LAST).exists() else "none"
                raise JobFailed(f"training diverged: the loss became {loss.item()} at step {step + 1} "
                                f"({run.stage} stage, lr {run.lr:g}); last checkpoint: {kept}. Try a lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = None
            if run.grad_clip > 0:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(
                    [p for p in model.parameters() if p.requires_grad], run.grad_clip))
            optimizer.step()
            scheduler.step()
            step += 1
            n_window += 1
            step_times.append(time.perf_counter() - t0)

            values = {"loss": float(loss.detach()), "task_loss": float(task_loss.detach()),
                      metric_name: task_metric(cfg.task, output, images, labels)}
            values.update({f"loss_{k}": float(v.detach()) for k, v in aux.items()})
            values.update({k: f for k, v in stats.items() if (f := _float(k, v)) is not None})
            if isinstance(stats.get("keep"), torch.Tensor):  # tokens that reached the decoder (budget, erasure)
                values["received_fraction"] = float(stats["keep"].detach().float().mean())
            for k, v in values.items():
                window.setdefault(k, []).append(v)
            if step % run.log_every == 0 or step == stop:
                now = time.perf_counter()
                record: dict[str, Any] = {"step": step, "stage": run.stage, "lr": scheduler.get_last_lr()[0],
                                          "snr_db": ctl["snr_db"], "depth_cap": ctl["depth"],
                                          "width_scale": ctl["width"],
                                          "sec_per_step": (now - t_window) / max(1, n_window)}
                if grad_norm is not None:
                    record["grad_norm"] = grad_norm
                for k, vs in window.items():
                    record[k] = dd.all_mean(sum(vs) / len(vs), dist)
                log.write(record)
                bar.update(step, record["loss"], record[metric_name])
                last_metrics = {k: record[k] for k in ("loss", "task_loss", metric_name)}
                window.clear()
                t_window, n_window = now, 0
            else:
                bar.update(step)
            if step % run.ckpt_every == 0 and step < stop:
                checkpoint(step, out / LAST, last_metrics)

    finished = step >= run.steps
    metrics = dict(last_metrics)
    if finished and run.eval_batches > 0 and dist.is_main:
        metrics.update(quick_validation(model, cfg, run, device))
    checkpoint(step, out / LAST, metrics)
    ckpt = out / LAST
    if finished:
        if dist.is_main:
            save_checkpoint(out / FINAL, cfg=cfg, model=model, step=step, stage=run.stage, metrics=metrics,
                            extra={"train_options": run.options_record()})
        ckpt = out / FINAL
        dd.barrier(dist)
    sps = None
    if len(step_times) > 1:
        tail = step_times[1:]  # the first step pays for lazy initialisation
        sps = sum(tail) / len(tail)
    log.write({"event": "end", "step": step, "finished": finished, "metrics": metrics,
               "sec_per_step_mean": sps})
    return StageResult(out=out, checkpoint=ckpt, step=step, finished=finished, metrics=metrics,
                       seconds_per_step=sps)


def _ckpt_step(path: Path) -> int | str:
    try:
        return int(read_checkpoint(path)["step"])
    except CheckpointError:
        return "unreadable"


def quick_validation(model: nn.Module, cfg: ModelConfig, run: StageRun, device: torch.device) -> dict[str, Any]:
    """A few test batches through the inference form at the middle of the training SNR range.

    Uses a forked RNG so that validating never changes the training random stream.
    """
    from edgesc.train.evaluate import evaluate_model

    snr = 0.5 * (run.snr_db[0] + run.snr_db[1])
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(run.seed + 12345)
        res = evaluate_model(model, cfg, data=run.data, snrs=[snr], channel=run.channel, batch_size=run.batch_size,
                             max_batches=run.eval_batches, device=device, count_flops=False)
    row = res["results"][0]
    was = {k: row[k] for k in ("psnr", "ssim", "accuracy", "enc_layers", "dec_layers") if k in row}
    model.train()
    return {f"val_{k}": v for k, v in was.items()} | {"val_snr_db": snr}

