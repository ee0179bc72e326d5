"""Lyapunov drift-plus-penalty selection of (token budget α, compression ratio) per time slot
(paper 001 §V, Eq. 10-13, Alg. 2; equations as recovered in /work/shared/papers/README.md).

Problem (001 Eq. 10): maximise the long-term average proxy accuracy subject to the long-term average
transmitted-symbol ratio E[γ(t)] <= γ̄, choosing each slot a pair (α, ratio) from a small discrete set.
Virtual queue (Eq. 11): Z(t+1) = max(0, Z(t) + μ(γ(t) − γ̄)). Per slot (Eq. 13) the controller picks

    argmin over pairs  −V · acc(α, ratio, snr(t)) + Z(t) · γ(α, ratio)

by exhaustive search, then updates Z with the chosen pair's γ. ``acc`` is the proxy table measured offline
(accuracy per budget x ratio x SNR grid point), linearly interpolated in SNR and clamped at the grid's ends.
γ(α, ratio) = K·S / N is the table's ``symbol_ratio`` (symbols sent over input size, 001 §V).

Proxy table JSON::

    {"budgets": [A floats], "ratios": [R values] (or "symbols": [R ints]), "snr_db": [N increasing floats],
     "accuracy": [[[...N...] x R] x A], "symbol_ratio": [[...R...] x A]}

Hyper-parameters V and μ are chosen as in 001 §V ("Hyperparameter selection"): :meth:`LyapunovController.search`
simulates every (V, μ) on an SNR trace and keeps the most accurate pair whose ratio over the final slots meets
the bound. numpy only.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from .errors import ControlError, InputError


@dataclass(frozen=True)
class ProxyTable:
    """accuracy [A, R, N] over budgets [A] x ratio levels [R] x SNR grid [N]; symbol_ratio [A, R]."""

    budgets: np.ndarray
    ratios: np.ndarray
    snr_db: np.ndarray
    accuracy: np.ndarray
    symbol_ratio: np.ndarray

    @classmethod
    def load(cls, source: str | Path | Mapping[str, Any]) -> "ProxyTable":
        """From a JSON file path or an already-parsed dict; InputError names the first problem."""
        if isinstance(source, Mapping):
            raw: Any = source
            where = "proxy table"
        else:
            where = f"proxy table {source}"
            try:
                raw = json.loads(Path(source).read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise InputError(f"{where} not found") from None
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise InputError(f"{where} is not valid JSON: {str(exc).splitlines()[0]}") from None
        if not isinstance(raw, Mapping):
            raise InputError(f"{where} must be a JSON object")
        ratios_key = "ratios" if "ratios" in raw else "symbols"
        for key in ("budgets", ratios_key, "snr_db", "accuracy", "symbol_ratio"):
            if key not in raw:
                raise InputError(f"{where}: missing key {key!r}")
        try:
            budgets = np.asarray(raw["budgets"], dtype=np.float64)
            ratios = np.asarray(raw[ratios_key], dtype=np.float64)
            snr = np.asarray(raw["snr_db"], dtype=np.float64)
            acc = np.asarray(raw["accuracy"], dtype=np.float64)
            gam = np.asarray(raw["symbol_ratio"], dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"{where}: every entry must be a (nested) list of numbers") from None
        A, R, N = budgets.size, ratios.size, snr.size
        if budgets.ndim != 1 or ratios.ndim != 1 or snr.ndim != 1 or min(A, R, N) == 0:
            raise InputError(f"{where}: budgets, {ratios_key} and snr_db must be non-empty lists")
        if acc.shape != (A, R, N):
            raise InputError(f"{where}: accuracy has shape {list(acc.shape)}, expected [{A}, {R}, {N}]")
        if gam.shape != (A, R):
            raise InputError(f"{where}: symbol_ratio has shape {list(gam.shape)}, expected [{A}, {R}]")
        if N > 1 and not (np.diff(snr) > 0).all():
            raise InputError(f"{where}: snr_db must be strictly increasing")
        if not (np.isfinite(acc).all() and np.isfinite(gam).all() and np.isfinite(snr).all()):
            raise InputError(f"{where}: values must be finite")
        if (gam <= 0).any():
            raise InputError(f"{where}: symbol_ratio entries must be positive")
        return cls(budgets=budgets, ratios=ratios, snr_db=snr, accuracy=acc, symbol_ratio=gam)

    def to_dict(self) -> dict[str, Any]:
        return {"budgets": self.budgets.tolist(), "ratios": self.ratios.tolist(), "snr_db": self.snr_db.tolist(),
                "accuracy": self.accuracy.tolist(), "symbol_ratio": self.symbol_ratio.tolist()}

    def accuracy_at(self, snr_db: float) -> np.ndarray:
        """Proxy accuracy [A, R] at one SNR, linear in SNR between grid points, clamped outside the grid."""
        s = float(snr_db)
        grid = self.snr_db
        if grid.size == 1 or s <= grid[0]:
            return self.accuracy[..., 0]
        if s >= grid[-1]:
            return self.accuracy[..., -1]
        j = int(np.searchsorted(grid, s, side="right")) - 1
        w = (s - grid[j]) / (grid[j + 1] - grid[j])
        return (1.0 - w) * self.accuracy[..., j] + w * self.accuracy[..., j + 1]


@dataclass(frozen=True)
class Choice:
    """One slot's decision: indices into the table, their values, γ, proxy accuracy, queue before the update."""

    budget_index: int
    ratio_index: int
    budget: float
    ratio: float
    gamma: float
    accuracy: float
    queue: float


@dataclass
class Simulation:
    """Per-slot trace of a run (arrays of length T; ``queue`` holds Z(t) before slot t's update, T + 1 long)."""

    budget_index: np.ndarray
    ratio_index: np.ndarray
    gamma: np.ndarray
    accuracy: np.ndarray
    queue: np.ndarray
    bound: float
    V: float
    mu: float

    @property
    def long_term_ratio(self) -> float:
        return float(self.gamma.mean())

    @property
    def mean_accuracy(self) -> float:
        return float(self.accuracy.mean())

    def tail_ratio(self, fraction: float = 0.2) -> float:
        """Mean γ over the final ``fraction`` of the slots (001 §V: ratio achieved over the final steps)."""
        n = max(1, int(round(len(self.gamma) * fraction)))
        return float(self.gamma[-n:].mean())


@dataclass
class SearchResult:
    """Outcome of the (V, μ) grid search: the best feasible setting (None if none met the bound) and all rows
    (V, μ, long-term ratio, tail ratio, mean accuracy, feasible)."""

    best_V: float | None
    best_mu: float | None
    best: Simulation | None
    rows: list[dict[str, Any]] = field(default_factory=list)


def _positive(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ControlError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ControlError(f"{name} must be positive and finite, got {value!r}")
    return v


class LyapunovController:
    """Drift-plus-penalty controller over a proxy table (paper 001 Alg. 2).

    ``bound``: long-term average symbol ratio γ̄; ``V``: accuracy weight; ``mu``: queue step size;
    ``max_ratio``: optional per-slot cap on γ (pairs above it are infeasible and never chosen).
    """

    def __init__(self, table: ProxyTable | str | Path | Mapping[str, Any], bound: float, V: float = 1.0,
                 mu: float = 1.0, max_ratio: float | None = None, queue: float = 0.0) -> None:
        self.table = table if isinstance(table, ProxyTable) else ProxyTable.load(table)
        self.bound = _positive("bound", bound)
        self.V = _positive("V", V)
        self.mu = _positive("mu", mu)
        self.max_ratio = math.inf if max_ratio is None else _positive("max_ratio", max_ratio)
        if not (float(queue) >= 0 and math.isfinite(float(queue))):
            raise ControlError(f"initial queue must be >= 0, got {queue!r}")
        self.queue = float(queue)
        self.feasible = self.table.symbol_ratio <= self.max_ratio  # [A, R]
        if not self.feasible.any():
            raise ControlError(f"no (budget, ratio) pair has symbol ratio <= max_ratio {self.max_ratio}")
        # exhaustive search order: ties go to the pair with the smaller γ (then the smaller indices)
        flat = np.argsort(self.table.symbol_ratio, axis=None, kind="stable")
        self._order = flat[self.feasible.ravel()[flat]]

    def decide(self, snr_db: float, queue: float | None = None) -> Choice:
        """The per-slot argmin of −V·acc + Z·γ (001 Eq. 13) at ``snr_db``, without updating the queue."""
        s = float(snr_db)
        if not math.isfinite(s):
            raise ControlError(f"snr_db must be finite, got {snr_db!r}")
        z = self.queue if queue is None else float(queue)
        acc = self.table.accuracy_at(s)
        cost = (-self.V * acc + z * self.table.symbol_ratio).ravel()[self._order]
        flat = int(self._order[int(np.argmin(cost))])
        a, r = np.unravel_index(flat, self.table.symbol_ratio.shape)
        return Choice(budget_index=int(a), ratio_index=int(r), budget=float(self.table.budgets[a]),
                      ratio=float(self.table.ratios[r]), gamma=float(self.table.symbol_ratio[a, r]),
                      accuracy=float(acc[a, r]), queue=z)

    def step(self, snr_db: float) -> Choice:
        """Decide for this slot and update Z(t+1) = max(0, Z(t) + μ(γ(t) − γ̄)) (001 Eq. 11)."""
        choice = self.decide(snr_db)
        self.queue = max(0.0, self.queue + self.mu * (choice.gamma - self.bound))
        return choice

    def simulate(self, snr_trace: Iterable[float], queue: float = 0.0) -> Simulation:
        """Run Alg. 2 over an SNR trace from queue ``queue`` (the controller's own queue is left untouched)."""
        snr = np.asarray(list(snr_trace) if not isinstance(snr_trace, np.ndarray) else snr_trace, dtype=np.float64)
        if snr.ndim != 1 or snr.size == 0 or not np.isfinite(snr).all():
            raise ControlError("snr_trace must be a non-empty 1-D sequence of finite SNRs in dB")
        T = snr.size
        a_idx, r_idx = np.empty(T, np.int64), np.empty(T, np.int64)
        gamma, acc, q = np.empty(T), np.empty(T), np.empty(T + 1)
        z = float(queue)
        for t in range(T):
            c = self.decide(snr[t], queue=z)
            a_idx[t], r_idx[t], gamma[t], acc[t], q[t] = c.budget_index, c.ratio_index, c.gamma, c.accuracy, z
            z = max(0.0, z + self.mu * (c.gamma - self.bound))
        q[T] = z
        return Simulation(budget_index=a_idx, ratio_index=r_idx, gamma=gamma, accuracy=acc, queue=q,
                          bound=self.bound, V=self.V, mu=self.mu)

    def best_static_pair(self, bound: float | None = None, snr_trace: Iterable[float] | None = None) -> Choice | None:
        """The single fixed pair with γ <= bound (and <= max_ratio) of highest mean proxy accuracy over
        ``snr_trace`` (default: the table's SNR grid, uniformly). None if no pair fits the bound."""
        b = self.bound if bound is None else _positive("bound", bound)
        snrs = self.table.snr_db if snr_trace is None else np.asarray(list(snr_trace), dtype=np.float64)
        mean_acc = np.mean([self.table.accuracy_at(s) for s in snrs], axis=0)
        ok = self.feasible & (self.table.symbol_ratio <= b)
        if not ok.any():
            return None
        masked = np.where(ok, mean_acc, -np.inf)
        a, r = np.unravel_index(int(np.argmax(masked)), masked.shape)
        return Choice(budget_index=int(a), ratio_index=int(r), budget=float(self.table.budgets[a]),
                      ratio=float(self.table.ratios[r]), gamma=float(self.table.symbol_ratio[a, r]),
                      accuracy=float(mean_acc[a, r]), queue=0.0)

    @classmethod
    def search(cls, table: ProxyTable | str | Path | Mapping[str, Any], bound: float, V_grid: Iterable[float],
               mu_grid: Iterable[float], snr_trace: Iterable[float], tail: float = 0.2, tolerance: float = 0.0,
               max_ratio: float | None = None) -> SearchResult:
        """Grid search of (V, μ) (001 §V): simulate each, keep those whose tail ratio <= bound·(1 + tolerance),
        return the most accurate of them."""
        tbl = table if isinstance(table, ProxyTable) else ProxyTable.load(table)
        snr = np.asarray(list(snr_trace), dtype=np.float64)
        rows: list[dict[str, Any]] = []
        best: tuple[float, float, Simulation] | None = None
        for V in V_grid:
            for mu in mu_grid:
                sim = cls(tbl, bound, V=V, mu=mu, max_ratio=max_ratio).simulate(snr)
                ok = sim.tail_ratio(tail) <= bound * (1.0 + tolerance)
                rows.append({"V": float(V), "mu": float(mu), "long_term_ratio": sim.long_term_ratio,
                             "tail_ratio": sim.tail_ratio(tail), "mean_accuracy": sim.mean_accuracy, "feasible": ok})
                if ok and (best is None or sim.mean_accuracy > best[2].mean_accuracy):
                    best = (float(V), float(mu), sim)
        if best is None:
            return SearchResult(best_V=None, best_mu=None, best=None, rows=rows)
        return SearchResult(best_V=best[0], best_mu=best[1], best=best[2], rows=rows)


__all__ = ["ProxyTable", "Choice", "Simulation", "SearchResult", "LyapunovController"]
