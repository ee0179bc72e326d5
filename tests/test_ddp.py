"""DDP smoke test: two CPU processes (gloo) under ``python -m torch.distributed.run`` train a tiny preset."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import torch

from edgesc.train.checkpoint import read_checkpoint
from edgesc.train.runlog import read_jsonl
from train_tiny import tiny_config


def _edgesc_script() -> str:
    exe = Path(sys.executable).with_name("edgesc")
    return str(exe) if exe.exists() else shutil.which("edgesc") or "edgesc"


def test_two_cpu_processes_train_and_stay_in_sync(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           _edgesc_script(), "train", "--model", str(cfg), "--out", str(out), "--steps", "2", "--batch-size", "8",
           "--device", "cpu", "--no-progress", "--log-every", "1", "--eval-batches", "0"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers
        proc.communicate()
        raise
    assert proc.returncode == 0, stdout[-2000:] + stderr[-4000:]
    assert stdout.count("checkpoint:") == 1  # only rank 0 prints
    start = [r for r in read_jsonl(out / "log.jsonl") if r.get("event") == "start"]
    assert len(start) == 1 and start[0]["world"] == 2  # only rank 0 writes the log
    steps = [r["step"] for r in read_jsonl(out / "log.jsonl") if "loss" in r and "step" in r]
    assert steps == [1, 2]
    final = read_checkpoint(out / "final.pt")
    assert final["step"] == 2
    last = read_checkpoint(out / "last.pt")
    assert len(last["rng"]["ranks"]) == 2  # both ranks' generators saved for an exact DDP resume
    assert not torch.equal(last["rng"]["ranks"][0]["torch"], last["rng"]["ranks"][1]["torch"])
