"""``edgesc bench --compare-torch``: PyTorch eager on the same model, inputs, controls and threads.

The PyTorch side runs ``model.encoder.inference()`` / ``model.decoder.inference()`` (the modules the graphs were
exported from) under ``torch.inference_mode`` with ``torch.set_num_threads`` equal to the runtime's thread
count, on exactly the images (encoder) and received symbols (decoder) the runtime was timed on. The largest
absolute difference of the outputs is recorded too: it shows that both sides ran the same model.

This is the only module of :mod:`edgesc.bench` that imports torch and :mod:`edgesc.models` (through the
checkpoint loader), lazily, as docs/contract.md allows.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgesc.bench import measure
from edgesc.bench.errors import BenchError


def checkpoint_of(manifest: Any, given: Path | None) -> Path:
    """``--checkpoint``, else the checkpoint path the exporter recorded in the manifest."""
    if given is not None:
        p = Path(given)
    else:
        raw = manifest.raw
        rec = None
        for block in ("source", "export", "model"):
            section = raw.get(block) or {}
            if isinstance(section, dict) and isinstance(section.get("checkpoint"), str):
                rec = section["checkpoint"]
                break
        if rec is None:
            raise BenchError("the manifest records no checkpoint; pass --checkpoint")
        p = Path(rec)
        if not p.is_absolute() and not p.exists():
            p = Path(manifest.directory) / p
    if not p.is_file():
        raise BenchError(f"checkpoint not found: {p} (pass --checkpoint)")
    return p


def load_torch_model(manifest: Any, checkpoint: Path) -> tuple[Any, Any, Any]:
    """(cfg, inference encoder, inference decoder) of ``checkpoint``; :class:`BenchError` if its weights are not
    the ones the export directory was made from (model hash)."""
    from edgesc.train.checkpoint import load_checkpoint, weights_sha256

    cfg, model, _meta = load_checkpoint(checkpoint)
    digest = weights_sha256(model.state_dict())
    if digest != manifest.model.hash:
        raise BenchError(f"checkpoint {checkpoint} has weights {digest[:12]}…, the export was made from "
                         f"{manifest.model.hash[:12]}…")
    enc = model.encoder.inference().eval()
    dec = model.decoder.inference().eval()
    return cfg, enc, dec


def _controls(names: Sequence[str], effective: dict[str, Any]) -> dict[str, Any]:
    import torch

    dtypes = {"budget": torch.float32, "depth": torch.int64, "width": torch.float32, "snr_db": torch.float32,
              "ratio": torch.int64}
    return {n: torch.tensor(effective[n], dtype=dtypes[n]) for n in names if effective.get(n) is not None}


def compare_torch(ctx: Any, grid: Sequence[Any], results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Time the PyTorch inference modules per setting; returns the ``compare_torch`` block of the report."""
    import torch

    from edgesc.bench.runner import _Stages

    o = ctx.options
    ckpt = checkpoint_of(ctx.manifest, o.checkpoint)
    _cfg, tenc, tdec = load_torch_model(ctx.manifest, ckpt)
    threads = o.threads or torch.get_num_threads() or (os.cpu_count() or 1)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    rows = []
    try:
        for s, res in zip(grid, results):
            st = _Stages(ctx, s)
            x = torch.from_numpy(np.ascontiguousarray(st.x))
            ec = _controls(tenc.control_names, st.enc_out.controls)
            dc = _controls(tdec.control_names, st.dec_out.controls)
            y = torch.from_numpy(np.ascontiguousarray(st.received))
            idx = torch.from_numpy(np.ascontiguousarray(st.enc_out.token_index))
            with torch.inference_mode():
                sym_t = tenc(x, **ec)[0].numpy()
                out_t = tdec(y, idx, **dc)[0].numpy()
                te = measure.time_calls(lambda: tenc(x, **ec), warmup=o.warmup, iters=o.iters,
                                        seconds=o.seconds if o.iters is None else None)
                td = measure.time_calls(lambda: tdec(y, idx, **dc), warmup=o.warmup, iters=o.iters,
                                        seconds=o.seconds if o.iters is None else None)
            diff_e = float(np.abs(sym_t - st.enc_out.symbols).max()) if sym_t.shape == st.enc_out.symbols.shape \
                else float("nan")
            diff_d = float(np.abs(out_t - st.dec_out.output).max())
            row = {"batch": s.batch, "controls": dict(res["controls"])}
            for side, timing, diff in (("encoder", te, diff_e), ("decoder", td, diff_d)):
                rt = res["stages"][side]["latency_ms"]["p50"]
                tp = timing.percentile_ms(50)
                row[side] = {"runtime_p50_ms": rt, "torch_p50_ms": tp, "speedup": tp / rt if rt > 0 else None,
                             "max_abs_diff": diff if np.isfinite(diff) else None}
            rows.append(row)
    finally:
        torch.set_num_threads(before)
    return {"checkpoint": str(ckpt), "torch_version": torch.__version__, "threads": threads, "rows": rows}
