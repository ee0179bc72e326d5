"""Parity of the exported graphs with the PyTorch inference form, run with ONNX Runtime (CPU).

Over ≥ 20 control settings (every level of every dynamic control with the others at their defaults, the all-min
and all-max extremes, then seeded random combinations) at batch 1 and 8:

- **encoder**: every output; float outputs by max abs difference, integer outputs (kept-token indices,
  per-layer token counts, width units) must match exactly. Images whose top-k gate scores are near-tied at the
  k-th place (gap < ``tie_gap``) may legitimately select different tokens under different summation orders:
  they are counted, reported and set aside from the exact checks.
- **decoder**: on the *received* symbols (PyTorch encoder output, AWGN at the setting's SNR with the contract's
  definition σ² = 10^(-snr/10), each of I/Q with variance σ²/2, then token erasures: the same number of tokens
  dropped per image), both decoders get identical inputs.
- **end to end**: ONNX encoder → same channel → ONNX decoder vs. the PyTorch pair.

Tolerance: 1e-4 max abs for fp32 graphs. fp16 graphs are compared with the fp32 PyTorch model at 5e-2 on float
outputs (unit-power symbols, images in [0, 1]), and their integer outputs must agree on ≥ 90% of the images
(fp16 features move near-decisions); both figures are reported.
"""
from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from edgesc.config import ModelConfig

FP32_TOL = 1e-4
FP16_TOL = 5e-2
FP16_INT_AGREEMENT = 0.90
TIE_GAP = 1e-4


def control_settings(specs: dict[str, dict[str, Any]], n: int = 20, seed: int = 0) -> list[dict[str, Any]]:
    """Settings over the union of both sides' dynamic controls: levels one at a time, extremes, then random."""
    names = list(specs)
    default = {k: s["default"] for k, s in specs.items()}
    out: list[dict[str, Any]] = [dict(default)]
    for k in names:
        for level in specs[k]["levels"]:
            out.append({**default, k: level})
    def bound(k: str, which: int) -> Any:
        spec = specs[k]
        v = spec["min" if which == 0 else "max"]
        return v if v is not None else (spec.get("train_range") or [min(spec["levels"]), max(spec["levels"])])[which]

    if names:
        out.append({k: bound(k, 0) for k in names})
        out.append({k: bound(k, 1) for k in names})
    rng = random.Random(seed)
    grid = [specs[k]["levels"] for k in names]
    combos = list(itertools.product(*grid)) if names else []
    rng.shuffle(combos)
    for combo in combos:
        if len(out) >= n:
            break
        out.append(dict(zip(names, combo)))
    uniq, seen = [], set()
    for s in out:
        key = tuple(sorted(s.items()))
        if key not in seen:
            seen.add(key)
            uniq.append(s)
    tries = 0
    while names and len(uniq) < n and tries < 10 * n:  # the level grid is small: add random in-range values
        tries += 1
        s = {}
        for k in names:
            spec = specs[k]
            if spec["dtype"] == "int64":
                s[k] = rng.randint(int(bound(k, 0)), int(bound(k, 1)))
            else:
                s[k] = round(rng.uniform(float(bound(k, 0)), float(bound(k, 1))), 4)
        key = tuple(sorted(s.items()))
        if key not in seen:
            seen.add(key)
            uniq.append(s)
    return uniq


def _np(value: Any, dtype: str) -> np.ndarray:
    return np.array(value, dtype=np.int64 if dtype == "int64" else np.float32)


def awgn_and_erase(symbols: np.ndarray, index: np.ndarray, snr_db: float, erase: int, rng: np.random.Generator,
                   protect_first: bool) -> tuple[np.ndarray, np.ndarray]:
    """Contract channel: y = x + n, n ~ CN(0, σ²); then drop ``erase`` tokens per image (never the class token)."""
    sigma2 = 10.0 ** (-snr_db / 10.0)
    y = symbols + rng.normal(0.0, np.sqrt(sigma2 / 2.0), symbols.shape).astype(np.float32)
    b, k = index.shape
    start = 1 if protect_first else 0
    erase = max(0, min(erase, k - start - 1))
    if erase == 0:
        return y.astype(np.float32), index
    keep_rows = []
    for i in range(b):
        drop = set(rng.choice(np.arange(start, k), size=erase, replace=False).tolist())
        keep_rows.append([j for j in range(k) if j not in drop])
    keep = np.array(keep_rows)
    return (np.take_along_axis(y, keep[:, :, None, None], axis=1).astype(np.float32),
            np.take_along_axis(index, keep, axis=1))


class _ScoreSpy:
    """Capture the encoder's top-k gate scores (to find near-tied images) without changing the model."""

    def __init__(self, enc: nn.Module) -> None:
        self.scores: torch.Tensor | None = None
        self.tokens = getattr(enc, "tokens", None)
        self.orig = getattr(self.tokens, "selection_score", None) if self.tokens is not None else None

    def __enter__(self) -> "_ScoreSpy":
        if self.orig is not None:
            def spy(*a: Any, **k: Any) -> torch.Tensor:
                s = self.orig(*a, **k)
                self.scores = s.detach().clone()
                return s
            self.tokens.selection_score = spy  # type: ignore[union-attr]
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.orig is not None:
            del self.tokens.selection_score  # type: ignore[union-attr]


def near_tied(scores: torch.Tensor | None, k: int, gap: float = TIE_GAP) -> np.ndarray:
    """Per image: is the k-th best score within ``gap`` of the (k+1)-th (selection could flip)?"""
    if scores is None or k >= scores.shape[1]:
        return np.zeros(0 if scores is None else scores.shape[0], dtype=bool)
    top = torch.topk(scores.float(), k + 1, dim=1).values
    return ((top[:, k - 1] - top[:, k]).abs() < gap).numpy()


def _session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class _Stat:
    def __init__(self) -> None:
        self.max_abs: dict[str, float] = {}
        self.mismatch: dict[str, int] = {}
        self.compared: dict[str, int] = {}

    def float_(self, name: str, a: np.ndarray, b: np.ndarray) -> float:
        d = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0
        if a.shape != b.shape:
            d = float("inf")
        self.max_abs[name] = max(self.max_abs.get(name, 0.0), d)
        self.compared[name] = self.compared.get(name, 0) + (a.shape[0] if a.ndim else 1)
        return d

    def int_(self, name: str, a: np.ndarray, b: np.ndarray, per_image: bool = True) -> np.ndarray:
        """Exact comparison; returns a per-image agreement mask (all True/False for non-batched outputs)."""
        if a.shape != b.shape:
            bad = np.ones(a.shape[0] if per_image and a.ndim else 1, dtype=bool)
        elif per_image and a.ndim >= 1:
            bad = (a.reshape(a.shape[0], -1) != b.reshape(b.shape[0], -1)).any(axis=1)
        else:
            bad = np.array([bool((a != b).any())])
        self.mismatch[name] = self.mismatch.get(name, 0) + int(bad.sum())
        self.compared[name] = self.compared.get(name, 0) + bad.size
        return ~bad


def validate_export(model: nn.Module, cfg: ModelConfig, out_dir: str | Path, manifest: dict[str, Any],
                    settings: int = 20, batches: tuple[int, ...] = (1, 8), seed: int = 0) -> dict[str, Any]:
    """Run the parity checks; return the manifest's ``validation`` report (``ok`` decides the exit code)."""
    out = Path(out_dir)
    precision = manifest["export"]["precision"]
    tol = FP32_TOL if precision == "fp32" else FP16_TOL
    static_batch = manifest["export"]["batch"]
    if static_batch != "dynamic":
        batches = (int(static_batch),)
    enc_t, dec_t = model.encoder.inference().eval(), model.decoder.inference().eval()
    enc_s, dec_s = _session(out / "encoder.onnx"), _session(out / "decoder.onnx")
    specs = {**manifest["controls"]["decoder"], **manifest["controls"]["encoder"]}
    frozen = {**manifest["frozen"]["decoder"], **manifest["frozen"]["encoder"]}
    enc_ctrl, dec_ctrl = list(manifest["controls"]["encoder"]), list(manifest["controls"]["decoder"])
    all_settings = control_settings(specs, settings, seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    stat = _Stat()
    ties = images = int_agree = int_total = 0
    failures: list[str] = []
    m = cfg.num_patches
    out_name = manifest["graphs"]["decoder"]["outputs"][0]["name"]
    for s_i, setting in enumerate(all_settings):
        full = {**frozen, **setting}
        for b in batches:
            image = torch.rand(b, cfg.channels, cfg.image_size, cfg.image_size, generator=gen)
            kw = {k: torch.tensor(v, dtype=torch.int64 if isinstance(v, int) and not isinstance(v, bool) else torch.float32)
                  for k, v in full.items() if k in enc_ctrl or k in manifest["frozen"]["encoder"]}
            with torch.no_grad(), _ScoreSpy(enc_t) as spy:
                te = [t.numpy() for t in enc_t(image, **kw)]
            feeds = {"image": image.numpy(), **{k: _np(full[k], specs[k]["dtype"]) for k in enc_ctrl}}
            oe = enc_s.run(None, feeds)
            k_sel = te[1].shape[1] - int(cfg.class_token)
            tied = near_tied(spy.scores, k_sel) if spy.scores is not None else np.zeros(b, dtype=bool)
            if tied.size == 0:
                tied = np.zeros(b, dtype=bool)
            ties += int(tied.sum())
            images += b
            ok_rows = ~tied
            int_ok = np.ones(b, dtype=bool)
            if ok_rows.any():
                for name, a, o in zip(("token_index", "layer_tokens"), te[1:3], oe[1:3]):
                    int_ok[ok_rows] &= stat.int_(f"encoder.{name}", a[ok_rows], o[ok_rows], per_image=True)
            wu_ok = bool(stat.int_("encoder.width_units", te[3], oe[3], per_image=False).all())
            rows = ok_rows & int_ok & wu_ok
            int_total += int(ok_rows.sum())
            int_agree += int(rows.sum())
            if te[0].shape != oe[0].shape:
                failures.append(f"setting {s_i} {setting} batch {b}: encoder symbols shape {oe[0].shape} != "
                                f"{te[0].shape}")
            elif rows.any():
                d = stat.float_("encoder.symbols", te[0][rows], oe[0][rows])
                if d > tol:
                    failures.append(f"setting {s_i} {setting} batch {b}: encoder symbols differ by {d:.2e}")
            # decoder on received symbols (same input for both)
            snr = float(full.get("snr_db", 10.0))
            erase = max(0, te[1].shape[1] // 4)
            rx, ridx = awgn_and_erase(te[0], te[1], snr, erase, rng, protect_first=cfg.class_token)
            dkw = {k: torch.tensor(v, dtype=torch.int64 if isinstance(v, int) and not isinstance(v, bool) else torch.float32)
                   for k, v in full.items() if k in dec_ctrl or k in manifest["frozen"]["decoder"]}
            with torch.no_grad():
                td = [t.numpy() for t in dec_t(torch.from_numpy(rx), torch.from_numpy(ridx), **dkw)]
            dfeeds = {"symbols": rx, "token_index": ridx, **{k: _np(full[k], specs[k]["dtype"]) for k in dec_ctrl}}
            od = dec_s.run(None, dfeeds)
            d = stat.float_(f"decoder.{out_name}", td[0], od[0])
            if d > tol:
                failures.append(f"setting {s_i} {setting} batch {b}: decoder {out_name} differs by {d:.2e}")
            dl = stat.int_("decoder.layer_tokens", td[1], od[1], True)
            dw = stat.int_("decoder.width_units", td[2], od[2], per_image=False)
            if precision == "fp32" and (not dl.all() or not dw.all()):
                failures.append(f"setting {s_i} {setting} batch {b}: decoder integer outputs differ")
            # end to end: ONNX pair vs PyTorch pair through the same channel draw
            e2e_rng = np.random.default_rng(seed + 1000 + s_i)
            rx_t, ri_t = awgn_and_erase(te[0], te[1], snr, erase, e2e_rng, protect_first=cfg.class_token)
            e2e_rng = np.random.default_rng(seed + 1000 + s_i)
            rx_o, ri_o = awgn_and_erase(oe[0], oe[1], snr, erase, e2e_rng, protect_first=cfg.class_token)
            with torch.no_grad():
                t_end = dec_t(torch.from_numpy(rx_t), torch.from_numpy(ri_t), **dkw)[0].numpy()
            o_end = dec_s.run(None, {**dfeeds, "symbols": rx_o, "token_index": ri_o})[0]
            e_rows = rows
            if e_rows.any() and t_end.shape == o_end.shape:
                d = stat.float_(f"end_to_end.{out_name}", t_end[e_rows], o_end[e_rows])
                if d > tol:
                    failures.append(f"setting {s_i} {setting} batch {b}: end-to-end {out_name} differs by {d:.2e}")
    mism = {k: v for k, v in stat.mismatch.items() if v}
    agreement = int_agree / int_total if int_total else 1.0
    if precision == "fp32":
        for k, v in mism.items():
            failures.append(f"{k}: {v} of {stat.compared[k]} image(s)/runs differ (integer outputs must match exactly)")
        ok = not failures
    else:
        float_fail = [f for f in failures if "differ by" in f]
        ok = not float_fail and agreement >= FP16_INT_AGREEMENT
        if agreement < FP16_INT_AGREEMENT:
            failures.append(f"fp16: integer outputs agree on {agreement:.1%} of images (< {FP16_INT_AGREEMENT:.0%})")
    summary = (f"{len(all_settings)} control settings x batch {list(batches)}, {images} images; max abs diff "
               + ", ".join(f"{k} {v:.1e}" for k, v in sorted(stat.max_abs.items()))
               + f"; tolerance {tol:g} ({precision}); {ties} near-tied image(s) set aside"
               + (f"; integer agreement {agreement:.1%}" if precision == "fp16" else ""))
    return {"ok": ok, "precision": precision, "tolerance": tol, "settings": len(all_settings),
            "control_settings": all_settings, "batches": list(batches), "images": images, "near_tied_images": ties,
            "tie_gap": TIE_GAP, "max_abs_diff": stat.max_abs, "integer_mismatches": stat.mismatch,
            "integer_agreement": agreement, "failures": failures[:50], "summary": summary}
