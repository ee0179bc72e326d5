"""``edgesc profile``: the proxy table of paper 001 §V ("Accuracy's proxy function"): task quality over the grid
budget α × compression ratio level × SNR, measured with the HARD TOP-K INFERENCE FORM (the exported graphs'
maths: :meth:`SemanticEncoder.inference` / :meth:`SemanticDecoder.inference`), plus the transmitted-symbol ratio
γ(α, ratio) of every pair.

γ(α, ratio) = K·S / (C·H·W): complex channel symbols sent per image over real source values per image, with
K = ceil(α·M) kept patch tokens (+1 for the class token, which is always sent) and S complex symbols per token at
that ratio level (001 §III, "compression ratio"; §V, γ(t)). For classification presets the table holds
accuracy; for reconstruction presets it holds SSIM (``"metric": "ssim"`` in the JSON).

The JSON is the proxy-table format of :class:`edgesc_runtime.controller.ProxyTable` (the controller that runs on
the device reads it unchanged) with descriptive extra keys. Also here: the soft-mask training form of the same
measurement (for the soft-vs-hard gap), token loss at the receiver, and the small parsers the CLI uses.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor

from edgesc.config import ModelConfig
from edgesc.errors import ConfigError, ControlError, DataError

FORMAT = "edgesc-proxy/1"
DEFAULT_BUDGETS: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 1.0)
DEFAULT_SNR = "-5:20:5"


# ---- parsers -----------------------------------------------------------------------------------------------
def parse_budgets(text: str | Sequence[float]) -> tuple[float, ...]:
    """``0.1,0.25,1`` → budgets, each in (0, 1]; :class:`ControlError` otherwise."""
    items: Iterable[Any] = text.split(",") if isinstance(text, str) else text
    out: list[float] = []
    for item in items:
        if isinstance(item, str) and not item.strip():
            continue
        try:
            v = float(item)
        except (TypeError, ValueError):
            raise ControlError(f"budget {item!r} is not a number (expected e.g. 0.1,0.25,0.5)") from None
        check_budget(v)
        out.append(v)
    if not out:
        raise ControlError("no budgets given (expected e.g. 0.1,0.25,0.5,0.75,1)")
    return tuple(sorted(set(out)))


def check_budget(value: float) -> float:
    """A budget α must lie in (0, 1] (docs/contract.md, Controls)."""
    v = float(value)
    if not (math.isfinite(v) and 0.0 < v <= 1.0):
        raise ControlError(f"budget must be in (0, 1], got {value!r}")
    return v


def check_batch_size(batch_size: int) -> int:
    """``--batch-size`` must be a positive integer."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"--batch-size must be a positive integer, got {batch_size!r}")
    return batch_size


def parse_snr_grid(text: str) -> tuple[float, ...]:
    """``LO:HI:STEP`` (inclusive, e.g. ``-5:20:5``), a comma list (``0,10,20``) or one value → SNR grid in dB."""
    s = str(text).strip()
    try:
        if ":" in s:
            parts = [float(p) for p in s.split(":")]
            if len(parts) != 3:
                raise ValueError
            lo, hi, step = parts
            if step <= 0 or hi < lo:
                raise ControlError(f"--snr-db {text!r}: need LO <= HI and STEP > 0")
            n = int(math.floor((hi - lo) / step + 1e-9)) + 1
            grid = [round(lo + i * step, 6) for i in range(n)]
        else:
            grid = [float(p) for p in s.split(",") if p.strip()]
    except ValueError:
        raise ControlError(f"--snr-db {text!r}: expected LO:HI:STEP (e.g. -5:20:5) or a comma list") from None
    if not grid or not all(math.isfinite(g) for g in grid):
        raise ControlError(f"--snr-db {text!r}: expected finite SNR values")
    return tuple(sorted(set(grid)))


def parse_ratios(text: str | None, cfg: ModelConfig) -> tuple[int, ...]:
    """Ratio-level indices (``0,2``); ``None`` = every level of ``coder.symbols``. Unknown index: ControlError."""
    levels = len(cfg.coder.symbols)
    if text is None:
        return tuple(range(levels))
    out = []
    for p in str(text).split(","):
        if not p.strip():
            continue
        try:
            r = int(p)
        except ValueError:
            raise ControlError(f"ratio {p.strip()!r} is not an integer level index") from None
        out.append(check_ratio(r, cfg))
    if not out:
        raise ControlError("no ratio levels given")
    return tuple(sorted(set(out)))


def check_ratio(ratio: int, cfg: ModelConfig) -> int:
    levels = len(cfg.coder.symbols)
    if isinstance(ratio, bool) or not isinstance(ratio, int) or not (0 <= ratio < levels):
        raise ControlError(f"unknown ratio level {ratio!r}: {cfg.name} has {levels} level(s) "
                           f"(index 0..{levels - 1} into coder.symbols {list(cfg.coder.symbols)})")
    return ratio


# ---- sizes ---------------------------------------------------------------------------------------------------
def kept_tokens(cfg: ModelConfig, budget: float) -> int:
    """Transmitted tokens K at budget α: ceil(α·M) patches (clamped to [1, M]), +1 for the class token."""
    check_budget(budget)
    m = cfg.num_patches
    k = m if not cfg.tokens.enabled else min(max(math.ceil(budget * m - 1e-9), 1), m)
    return k + int(cfg.class_token)


def symbol_ratio(cfg: ModelConfig, budget: float, ratio: int) -> float:
    """γ(α, ratio) = K·S / (C·H·W): complex symbols sent per real source value (001 §III and §V)."""
    check_ratio(ratio, cfg)
    return kept_tokens(cfg, budget) * cfg.coder.symbols[ratio] / (cfg.channels * cfg.image_size ** 2)


def metric_name(cfg: ModelConfig) -> str:
    return "accuracy" if cfg.task == "classification" else "ssim"


# ---- data ----------------------------------------------------------------------------------------------------
def load_images(data: str, cfg: ModelConfig, images: int | None, split: str = "test") -> tuple[Tensor, Tensor]:
    """The first ``images`` items (all when None) of ``data``'s ``split`` as tensors ``[N, C, H, W]``, ``[N]``."""
    from edgesc.data import load_dataset

    ds = load_dataset(data, split, cfg.image_size)
    n = len(ds)  # type: ignore[arg-type]
    if images is not None:
        if images < 1:
            raise DataError(f"--images must be >= 1, got {images}")
        n = min(n, images)
    if n == 0:
        raise DataError(f"data set {data} ({split}) is empty")
    xs, ys = zip(*(ds[i] for i in range(n)))
    x = torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in xs])
    y = torch.as_tensor([int(v) for v in ys], dtype=torch.int64)
    if x.shape[1] != cfg.channels:
        raise DataError(f"data set {data} has {x.shape[1]} channels, the model expects {cfg.channels}")
    if cfg.task == "classification":
        if bool((y < 0).any()):
            raise DataError(f"data set {data} is unlabeled; {cfg.name} is a classification model")
        if int(y.max()) >= cfg.num_classes:
            raise DataError(f"data set {data} has labels up to {int(y.max())}; {cfg.name} has {cfg.num_classes} classes")
    return x, y


# ---- measurement ---------------------------------------------------------------------------------------------
def lose_tokens(symbols: Tensor, index: Tensor, fraction: float, generator: torch.Generator | None = None
                ) -> tuple[Tensor, Tensor]:
    """Drop ``round(fraction·K)`` random tokens of every image (the runtime form of token erasure: lost tokens are
    absent, not zero). ``fraction`` in [0, 1]; 1 drops everything (K = 0)."""
    if not (0.0 <= fraction <= 1.0):
        raise ControlError(f"token loss fraction must be in [0, 1], got {fraction}")
    b, k = index.shape
    keep = k - int(round(fraction * k))
    if keep == k:
        return symbols, index
    order = torch.rand(b, k, generator=generator).argsort(dim=1)[:, :keep].sort(dim=1).values
    idx4 = order[..., None, None].expand(-1, -1, symbols.shape[2], 2)
    return torch.gather(symbols, 1, idx4), torch.gather(index, 1, order)


def _score(cfg: ModelConfig, out: Tensor, images: Tensor, labels: Tensor) -> Tensor:
    if cfg.task == "classification":
        return (out.argmax(dim=1) == labels).to(torch.float32)
    from edgesc.metrics import ssim

    return ssim(out.clamp(0, 1), images)


@dataclass
class Evaluator:
    """Evaluate a trained codec at fixed controls, in the hard top-k inference form or the soft training form.

    ``channel``: awgn | rayleigh | rayleigh-nocsi | none (``edgesc.channels.make_channel``). Noise is drawn from
    a generator re-seeded per call with ``seed``, so every grid point sees the same noise realisation pattern.
    """

    model: Any
    channel: str = "awgn"
    batch_size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        from edgesc.channels import make_channel

        check_batch_size(self.batch_size)
        make_channel(self.channel)  # validates the name
        self.cfg: ModelConfig = self.model.cfg
        self.model.eval()
        self._enc = self.model.encoder.inference()
        self._dec = self.model.decoder.inference()

    def _channel(self, gen: torch.Generator):
        from edgesc.channels import make_channel

        return make_channel(self.channel, generator=gen)

    @torch.no_grad()
    def hard(self, images: Tensor, labels: Tensor, budget: float, ratio: int, snr_db: float,
             loss: float = 0.0) -> float:
        """Mean metric with the inference form: top-k selection, the kept tokens sent, ``loss`` of them lost."""
        check_budget(budget)
        check_ratio(ratio, self.cfg)
        gen = torch.Generator().manual_seed(self.seed)
        ch = self._channel(gen)
        b_t, s_t, r_t = torch.tensor(float(budget)), torch.tensor(float(snr_db)), torch.tensor(int(ratio))
        scores = []
        for i in range(0, images.shape[0], self.batch_size):
            x, y = images[i:i + self.batch_size], labels[i:i + self.batch_size]
            sym, idx, _, _ = self._enc(x, budget=b_t, snr_db=s_t, ratio=r_t)
            rx, _ = ch.transmit(sym, s_t)
            rx, idx = lose_tokens(rx, idx, loss, gen)
            out, _, _ = self._dec(rx, idx, snr_db=s_t, ratio=r_t)
            scores.append(_score(self.cfg, out, x, y))
        return float(torch.cat(scores).mean())

    @torch.no_grad()
    def soft(self, images: Tensor, labels: Tensor, budget: float, ratio: int, snr_db: float) -> dict[str, float]:
        """The soft-mask training form (001 Eq. 6 masks, every slot carried, dropped = zero mask) at fixed α.

        Returns the metric and two kept fractions at the transmitted slots: ``mean_mask`` (what the budget
        penalty of 001 Eq. 7 sees) and ``nonzero`` (tokens with a non-zero mask, i.e. those 001 §IV-B keeps
        when it discretises at inference)."""
        from edgesc.models import Controls

        check_budget(budget)
        check_ratio(ratio, self.cfg)
        gen = torch.Generator().manual_seed(self.seed)
        ch = self._channel(gen)
        m = self.cfg.num_patches
        scores, means, nonzero = [], [], []
        for i in range(0, images.shape[0], self.batch_size):
            x, y = images[i:i + self.batch_size], labels[i:i + self.batch_size]
            ctl = self.model.resolve(Controls(budget=float(budget), snr_db=float(snr_db), ratio=int(ratio)),
                                     x.shape[0], x)
            ctl.hard_tokens = False
            enc = self.model.encoder(x, ctl)
            rx = ch(enc.symbols, ctl.snr_db)
            out, _, _, _ = self.model.decoder(rx, enc.keep, ctl)
            scores.append(_score(self.cfg, out, x, y))
            means.append(enc.keep[:, :m].mean(dim=1))
            nonzero.append((enc.keep[:, :m] > 0).to(torch.float32).mean(dim=1))
        return {"metric": float(torch.cat(scores).mean()), "mean_mask": float(torch.cat(means).mean()),
                "nonzero": float(torch.cat(nonzero).mean())}


def profile(
    model: Any,
    images: Tensor,
    labels: Tensor,
    budgets: Sequence[float] = DEFAULT_BUDGETS,
    ratios: Sequence[int] | None = None,
    snr_db: Sequence[float] = (-5.0, 0.0, 5.0, 10.0, 15.0, 20.0),
    channel: str = "awgn",
    batch_size: int = 128,
    seed: int = 0,
    progress: Any = None,
) -> dict[str, Any]:
    """Measure the proxy table (hard top-k inference form) and return it as JSON-ready data.

    ``accuracy[a][r][s]`` is the mean metric (accuracy or SSIM) at ``budgets[a]``, ratio level ``ratios[r]``,
    ``snr_db[s]``; ``symbol_ratio[a][r]`` is γ. ``progress(done, total)`` is called after every grid point.
    """
    cfg: ModelConfig = model.cfg
    budgets = [check_budget(b) for b in budgets]
    if not cfg.tokens.enabled and budgets != [1.0]:
        raise ControlError(f"{cfg.name} has no token selection: the only budget is 1 (got {budgets})")
    levels = list(range(len(cfg.coder.symbols))) if ratios is None else [check_ratio(r, cfg) for r in ratios]
    snrs = sorted(float(s) for s in snr_db)
    if not snrs or len(set(snrs)) != len(snrs):
        raise ControlError("the SNR grid must hold distinct values")
    ev = Evaluator(model, channel=channel, batch_size=batch_size, seed=seed)
    total = len(budgets) * len(levels) * len(snrs)
    done = 0
    acc: list[list[list[float]]] = []
    for a in budgets:
        row = []
        for r in levels:
            cell = []
            for s in snrs:
                cell.append(ev.hard(images, labels, a, r, s))
                done += 1
                if progress is not None:
                    progress(done, total)
            row.append(cell)
        acc.append(row)
    e = cfg.embed_dim
    return {
        "format": FORMAT,
        "metric": metric_name(cfg),
        "metric_note": ("classification accuracy (top-1)" if cfg.task == "classification"
                        else "SSIM of the reconstruction (Gaussian, data range 1), not accuracy"),
        "form": "hard top-k inference form (the exported graphs' maths)",
        "budgets": budgets,
        "ratios": [2.0 * cfg.coder.symbols[r] / e for r in levels],
        "ratio_index": levels,
        "symbols": [cfg.coder.symbols[r] for r in levels],
        "ratios_note": "per-token compression: 2·S real values out of E = embed_dim features",
        "snr_db": snrs,
        "accuracy": acc,
        "symbol_ratio": [[symbol_ratio(cfg, a, r) for r in levels] for a in budgets],
        "symbol_ratio_note": ("γ = K·S / (C·H·W): complex channel symbols per real source value; K = ceil(α·M) "
                              "kept patch tokens (+1 class token), S complex symbols per token"),
        "kept_tokens": [kept_tokens(cfg, a) for a in budgets],
        "channel": channel,
        "images": int(images.shape[0]),
        "model": {"preset": cfg.name, "task": cfg.task, "num_patches": cfg.num_patches,
                  "class_token": cfg.class_token},
    }


def write_json(obj: Any, path: str | Path) -> Path:
    """Write JSON atomically (temp file in the same folder + ``os.replace``)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a result file is an ordinary file
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=1)
            fh.write("\n")
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def run_profile(checkpoint: str | Path, data: str, out: str | Path, budgets: str = "0.1,0.25,0.5,0.75,1",
                snr_db: str = DEFAULT_SNR, images: int | None = 512, ratios: str | None = None,
                channel: str | None = None, split: str = "test", batch_size: int = 128, seed: int = 0,
                progress: Any = None) -> dict[str, Any]:
    """CLI body of ``edgesc profile``: load the checkpoint and data, measure, write ``out``."""
    from edgesc.train.checkpoint import load_checkpoint
    from edgesc.train.options import check_output_file

    check_output_file(Path(out), "--out")  # before profiling: a bad path must not cost the whole grid
    check_batch_size(batch_size)
    grid_b = parse_budgets(budgets)
    grid_s = parse_snr_grid(snr_db)
    cfg, model, _ = load_checkpoint(checkpoint)
    if not cfg.tokens.enabled:
        if grid_b != (1.0,):
            raise ConfigError(f"{checkpoint}: preset {cfg.name} has no token selection; use --budgets 1")
    levels = parse_ratios(ratios, cfg)
    x, y = load_images(data, cfg, images, split)
    table = profile(model, x, y, grid_b, levels, grid_s, channel or cfg.train.channel, batch_size, seed, progress)
    table["checkpoint"] = str(checkpoint)
    table["data"] = {"spec": data, "split": split}
    write_json(table, out)
    return table


__all__ = ["FORMAT", "parse_budgets", "parse_snr_grid", "parse_ratios", "check_budget", "check_ratio",
           "kept_tokens", "symbol_ratio", "metric_name", "load_images", "lose_tokens", "Evaluator", "profile",
           "write_json", "run_profile", "check_batch_size"]
