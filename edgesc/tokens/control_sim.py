"""``edgesc control-sim``: simulate the Lyapunov (budget, ratio) controller of paper 001 §V on a profiled proxy
table under a random SNR process, and compare it with the best static pair that meets the bound.

The controller itself is :class:`edgesc_runtime.controller.LyapunovController` (001 Eq. 10-13, Alg. 2; the one
the device runs) — this module only draws the SNR trace, tunes (V, μ) through the controller's own ``search``
(001 §V, "Hyperparameter selection"), summarises and plots. Runtime errors (bad proxy file, bad control) are
re-raised as :class:`~edgesc.errors.EdgescError` subclasses with the same one-line message.

SNR processes (``--snr``), all in dB, one draw per time slot (block fading: constant within a slot):

``normal:MEAN,STD``   i.i.d. Gaussian in dB (paper 001 §VI-B evaluates Gaussian SNR distributions)
``uniform:LO,HI``     i.i.d. uniform in dB
``rayleigh:MEAN``     block Rayleigh fading around a mean SNR: 10·log10(10^(MEAN/10)·|g|²), g ~ CN(0, 1)
``fixed:X`` or ``X``  a constant SNR
"""
from __future__ import annotations

from edgesc.plots import save_figure

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgesc.errors import ControlError, DataError

#: default (V, μ) grids of ``--search``. Decisions depend on V/μ only (Z(t)/μ follows a μ-free recursion from
#: Z(0) = 0), so the two grids together span V/μ over 1e-3 .. 1e3.
DEFAULT_V_GRID: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
DEFAULT_MU_GRID: tuple[float, ...] = (0.1, 1.0, 10.0)

_SNR_FORMS = "normal:MEAN,STD | uniform:LO,HI | rayleigh:MEAN | fixed:X | X"


@dataclass(frozen=True)
class SnrProcess:
    """An i.i.d. per-slot SNR process in dB (see the module docstring for the forms)."""

    kind: str
    params: tuple[float, ...]

    def sample(self, slots: int, seed: int = 0) -> np.ndarray:
        """``slots`` SNR values in dB, reproducible from ``seed``."""
        if slots < 1:
            raise ControlError(f"--slots must be >= 1, got {slots}")
        rng = np.random.default_rng(seed)
        if self.kind == "fixed":
            return np.full(slots, self.params[0])
        if self.kind == "normal":
            return rng.normal(self.params[0], self.params[1], slots)
        if self.kind == "uniform":
            return rng.uniform(self.params[0], self.params[1], slots)
        # rayleigh: |g|^2 ~ Exp(1) for g ~ CN(0, 1); floor at 1e-12 so the dB value stays finite
        gain = np.maximum(rng.exponential(1.0, slots), 1e-12)
        return self.params[0] + 10.0 * np.log10(gain)

    def describe(self) -> str:
        return f"{self.kind}:" + ",".join(f"{p:g}" for p in self.params)


def parse_snr_spec(spec: str) -> SnrProcess:
    """Parse ``--snr``: ``normal:10,2.5``, ``uniform:0,20``, ``rayleigh:10``, ``fixed:10`` or ``10``.

    Raises :class:`ControlError` naming the spec on anything else (unknown kind, wrong count, not a number,
    negative standard deviation, LO > HI, non-finite values)."""
    text = str(spec).strip()
    kind, sep, rest = text.partition(":")
    if not sep:
        kind, rest = "fixed", text
    kind = kind.strip().lower()
    counts = {"normal": 2, "uniform": 2, "rayleigh": 1, "fixed": 1}
    if kind not in counts:
        raise ControlError(f"--snr {spec!r}: unknown SNR process {kind!r} (forms: {_SNR_FORMS})")
    parts = [p.strip() for p in rest.split(",")] if rest.strip() else []
    if len(parts) != counts[kind]:
        raise ControlError(f"--snr {spec!r}: {kind} takes {counts[kind]} number(s), got {len(parts)} "
                           f"(forms: {_SNR_FORMS})")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise ControlError(f"--snr {spec!r}: not a number in {rest!r} (forms: {_SNR_FORMS})") from None
    if not all(math.isfinite(v) for v in values):
        raise ControlError(f"--snr {spec!r}: values must be finite")
    if kind == "normal" and values[1] < 0:
        raise ControlError(f"--snr {spec!r}: the standard deviation must be >= 0")
    if kind == "uniform" and values[0] > values[1]:
        raise ControlError(f"--snr {spec!r}: uniform needs LO <= HI")
    return SnrProcess(kind, values)


def parse_grid(text: str, option: str) -> tuple[float, ...]:
    """A comma-separated list of positive numbers (``--V-grid``, ``--mu-grid``)."""
    try:
        values = tuple(float(p) for p in str(text).split(",") if p.strip())
    except ValueError:
        raise ControlError(f"{option} {text!r}: expected comma-separated numbers") from None
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise ControlError(f"{option} {text!r}: expected one or more positive numbers")
    return values


def load_proxy(path: str | Path) -> Any:
    """Load a proxy table (the format of ``edgesc_runtime.controller.ProxyTable``) as that class.

    A missing or malformed file raises :class:`~edgesc.errors.DataError` naming the file and the problem."""
    from edgesc_runtime.controller import ProxyTable
    from edgesc_runtime.errors import RuntimeErrorBase

    p = Path(path)
    if not p.is_file():
        raise DataError(f"proxy table {p} not found (write one with `edgesc profile`)")
    try:
        return ProxyTable.load(p)
    except RuntimeErrorBase as exc:
        raise DataError(str(exc)) from None


def _proxy_metric(proxy: Any) -> str | None:
    """The ``metric`` entry (accuracy or ssim) that ``edgesc profile`` writes beside the table, if any."""
    if not isinstance(proxy, (str, Path)):
        return None
    try:
        raw = json.loads(Path(proxy).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    m = raw.get("metric") if isinstance(raw, dict) else None
    return m if isinstance(m, str) else None


def _check_bound(table: Any, bound: float) -> float:
    try:
        b = float(bound)
    except (TypeError, ValueError):
        raise ControlError(f"--bound must be a number, got {bound!r}") from None
    if not (math.isfinite(b) and b > 0):
        raise ControlError(f"--bound must be positive, got {bound!r}")
    lowest = float(np.min(table.symbol_ratio))
    if b < lowest:
        raise ControlError(f"--bound {b:g}: no (budget, ratio) pair of the proxy table can meet it "
                           f"(smallest symbol ratio is {lowest:.4g}, largest {float(np.max(table.symbol_ratio)):.4g})")
    return b


def _select(found: Any, bound: float, criterion: str, tolerance: float) -> tuple[float, float]:
    """(V, μ) from a ``LyapunovController.search`` result under ``criterion`` (see :func:`simulate`)."""
    if criterion == "tail":
        if found.best_V is None:
            raise ControlError(f"--search: no (V, mu) in the grid keeps the tail symbol ratio under the bound {bound:g}")
        return float(found.best_V), float(found.best_mu)
    ok = [r for r in found.rows if r["feasible"] and r["long_term_ratio"] <= bound * (1.0 + tolerance)]
    if not ok:
        raise ControlError(f"--search: no (V, mu) in the grid keeps the long-term symbol ratio under the bound "
                           f"{bound:g} (try a wider --mu-grid or smaller --V-grid)")
    best = max(ok, key=lambda r: r["mean_accuracy"])
    return float(best["V"]), float(best["mu"])


def _pair(table: Any, a: int, r: int) -> dict[str, Any]:
    return {"budget": float(table.budgets[a]), "ratio": float(table.ratios[r]), "ratio_index": int(r),
            "symbol_ratio": float(table.symbol_ratio[a, r])}


def simulate(
    proxy: str | Path | Any,
    snr: str | SnrProcess,
    bound: float,
    slots: int = 10000,
    V: float = 1.0,
    mu: float = 1.0,
    search: bool = False,
    V_grid: Sequence[float] = DEFAULT_V_GRID,
    mu_grid: Sequence[float] = DEFAULT_MU_GRID,
    tail: float = 0.2,
    seed: int = 0,
    criterion: str = "long-term",
    tolerance: float = 0.01,
) -> dict[str, Any]:
    """Run Alg. 2 of paper 001 for ``slots`` slots and return a JSON-ready summary.

    With ``search`` the (V, μ) pair is tuned by :meth:`LyapunovController.search` on an SNR trace drawn with
    ``seed`` and then evaluated on a fresh trace (``seed + 1``), so that the reported figures are not the ones
    the tuning selected on. The best static pair is the fixed (α, ratio) with γ <= bound of highest mean proxy
    accuracy over the evaluation trace. ``trace`` holds the per-slot queue Z(t), γ(t) and chosen indices.

    ``criterion`` (with ``search``): ``"tail"`` is 001 §V's rule (the ratio over the final ``tail`` fraction of
    the slots must meet the bound, the most accurate such (V, μ) wins — ``LyapunovController.search``'s own
    choice); ``"long-term"`` (default) also requires the ratio averaged over ALL slots to meet the bound within
    ``tolerance`` (relative). The tail rule favours large V/μ, whose long transient (the queue building up)
    overspends symbols and inflates the mean accuracy; over a finite run that breaks the constraint of 001
    Eq. 10, so edgesc's default excludes it (docs/tokens.md).
    """
    from edgesc_runtime.controller import LyapunovController, ProxyTable
    from edgesc_runtime.errors import RuntimeErrorBase

    table = proxy if isinstance(proxy, ProxyTable) else load_proxy(proxy)
    metric = _proxy_metric(proxy)
    process = parse_snr_spec(snr) if isinstance(snr, str) else snr
    b = _check_bound(table, bound)
    if not (0.0 < tail <= 1.0):
        raise ControlError(f"tail fraction must be in (0, 1], got {tail}")
    if criterion not in ("long-term", "tail"):
        raise ControlError(f"--criterion must be 'long-term' or 'tail', got {criterion!r}")
    trace = process.sample(slots, seed=seed + 1 if search else seed)
    result: dict[str, Any] = {"snr": process.describe(), "bound": b, "slots": int(slots), "seed": int(seed),
                              "metric": metric}
    try:
        if search:
            tune = process.sample(slots, seed=seed)
            found = LyapunovController.search(table, b, V_grid, mu_grid, tune, tail=tail, tolerance=tolerance)
            V, mu = _select(found, b, criterion, tolerance)
            result["search"] = {"V_grid": [float(v) for v in V_grid], "mu_grid": [float(m) for m in mu_grid],
                                "criterion": criterion, "tolerance": tolerance, "rows": found.rows,
                                "tuned_on_seed": int(seed), "evaluated_on_seed": int(seed + 1)}
        ctl = LyapunovController(table, b, V=V, mu=mu)
        sim = ctl.simulate(trace)
        static = ctl.best_static_pair(b, snr_trace=trace)
    except RuntimeErrorBase as exc:
        raise ControlError(str(exc)) from None
    counts = np.zeros(table.symbol_ratio.shape, dtype=np.int64)
    np.add.at(counts, (sim.budget_index, sim.ratio_index), 1)
    used = [{**_pair(table, int(a), int(r)), "slots": int(counts[a, r])}
            for a, r in zip(*np.nonzero(counts))]
    result.update({
        "V": float(V), "mu": float(mu),
        "long_term_ratio": sim.long_term_ratio,
        "tail_ratio": sim.tail_ratio(tail),
        "tail_fraction": float(tail),
        "mean_accuracy": sim.mean_accuracy,
        "tail_accuracy": float(sim.accuracy[-max(1, int(round(slots * tail))):].mean()),
        "bound_met": bool(sim.long_term_ratio <= b * (1.0 + tolerance)),
        "tolerance": float(tolerance),
        "final_queue": float(sim.queue[-1]),
        "pairs_used": sorted(used, key=lambda u: -u["slots"]),
        "static": None if static is None else {**_pair(table, static.budget_index, static.ratio_index),
                                               "mean_accuracy": float(static.accuracy)},
        "trace": {"snr_db": trace.tolist(), "queue": sim.queue.tolist(), "gamma": sim.gamma.tolist(),
                  "accuracy": sim.accuracy.tolist(), "budget_index": sim.budget_index.tolist(),
                  "ratio_index": sim.ratio_index.tolist()},
    })
    return result


def plot(result: dict[str, Any], path: str | Path) -> Path:
    """Queue trace Z(t), running mean of γ(t) against the bound, and the chosen budget per slot (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = result["trace"]
    gamma = np.asarray(tr["gamma"])
    t = np.arange(1, gamma.size + 1)
    fig, ax = plt.subplots(3, 1, figsize=(7, 7), sharex=True)
    ax[0].plot(np.arange(len(tr["queue"])), tr["queue"], lw=0.8)
    ax[0].set_ylabel("virtual queue Z(t)")
    ax[0].set_title(f"Lyapunov control (001 Alg. 2): SNR {result['snr']}, V={result['V']:g}, mu={result['mu']:g}")
    ax[1].plot(t, np.cumsum(gamma) / t, lw=1.0, label="running mean of γ(t)")
    ax[1].axhline(result["bound"], color="k", ls="--", lw=0.8, label=f"bound {result['bound']:g}")
    if result.get("static"):
        ax[1].axhline(result["static"]["symbol_ratio"], color="tab:red", ls=":", lw=0.8,
                      label=f"best static pair γ={result['static']['symbol_ratio']:.3g}")
    ax[1].set_ylabel("symbol ratio")
    ax[1].legend(fontsize=7, loc="upper right")
    ax[2].plot(t, tr["snr_db"], lw=0.3, color="0.6", label="SNR (dB)")
    ax2 = ax[2].twinx()
    ax2.plot(t, gamma, lw=0.3, color="tab:green")
    ax2.set_ylabel("γ(t) chosen", color="tab:green")
    ax[2].set_ylabel("SNR (dB)")
    ax[2].set_xlabel("slot t")
    fig.tight_layout()
    return save_figure(fig, path)


__all__ = ["SnrProcess", "parse_snr_spec", "parse_grid", "load_proxy", "simulate", "plot",
           "DEFAULT_V_GRID", "DEFAULT_MU_GRID"]
