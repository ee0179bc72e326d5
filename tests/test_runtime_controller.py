"""edgesc_runtime.controller: Lyapunov drift-plus-penalty (paper 001 §V, Alg. 2) on a synthetic proxy table.

The table is synthetic (a smooth, saturating accuracy model), not a measured one: it tests the controller's
mechanics -- constraint tracking, feasibility, per-slot argmin, queue update, (V, μ) search."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from edgesc_runtime import ControlError, InputError
from edgesc_runtime.controller import LyapunovController, ProxyTable

BUDGETS = [0.125, 0.25, 0.5, 0.75, 1.0]
SYMBOLS = [4, 8, 16, 32]
SNR_GRID = [-5.0, 0.0, 5.0, 10.0, 15.0, 20.0, 25.0]
M, N_INPUT = 64, 3 * 32 * 32 // 2  # patches; complex symbols of the raw image


def synthetic_table() -> dict:
    acc = np.empty((len(BUDGETS), len(SYMBOLS), len(SNR_GRID)))
    for (a, alpha), (r, s), (n, snr) in itertools.product(enumerate(BUDGETS), enumerate(SYMBOLS), enumerate(SNR_GRID)):
        quality = 1 - np.exp(-s * 10 ** (snr / 10) / 60)
        acc[a, r, n] = 0.1 + 0.85 * (1 - np.exp(-3 * alpha)) * quality
    gamma = [[alpha * M * s / N_INPUT for s in SYMBOLS] for alpha in BUDGETS]
    return {"budgets": BUDGETS, "symbols": SYMBOLS, "snr_db": SNR_GRID, "accuracy": acc.tolist(),
            "symbol_ratio": gamma}


@pytest.fixture(scope="module")
def table() -> ProxyTable:
    return ProxyTable.load(synthetic_table())


@pytest.fixture(scope="module")
def trace() -> np.ndarray:
    return np.random.default_rng(2024).normal(10.0, 2.5, 10_000)


@pytest.mark.parametrize("bound", [0.08, 0.15, 0.3])
def test_long_term_ratio_tracks_the_bound_and_choices_are_feasible(table: ProxyTable, trace: np.ndarray,
                                                                  bound: float) -> None:
    max_ratio = 0.6
    ctl = LyapunovController(table, bound=bound, V=1.0, mu=1.0, max_ratio=max_ratio)
    sim = ctl.simulate(trace)
    assert abs(sim.long_term_ratio - bound) <= 0.02 * bound
    # feasible: a pair of the table (indices in range, γ equal to the table's) with γ <= the largest allowed
    assert ((0 <= sim.budget_index) & (sim.budget_index < len(BUDGETS))).all()
    assert ((0 <= sim.ratio_index) & (sim.ratio_index < len(SYMBOLS))).all()
    np.testing.assert_array_equal(sim.gamma, table.symbol_ratio[sim.budget_index, sim.ratio_index])
    assert (sim.gamma <= max_ratio).all()
    assert len(set(zip(sim.budget_index.tolist(), sim.ratio_index.tolist()))) > 1  # it adapts
    # the adaptive policy is at least as good as the best single pair that meets the bound
    static = ctl.best_static_pair(bound, trace)
    assert static is not None and static.gamma <= bound
    assert sim.mean_accuracy >= static.accuracy - 1e-9


def test_queue_update_and_per_slot_argmin_by_hand(table: ProxyTable) -> None:
    ctl = LyapunovController(table, bound=0.1, V=2.0, mu=0.5)
    rng = np.random.default_rng(0)
    z = 0.0
    for _ in range(200):
        snr = float(rng.uniform(-8, 30))
        c = ctl.step(snr)
        acc = table.accuracy_at(snr)
        costs = {(a, r): -2.0 * acc[a, r] + z * table.symbol_ratio[a, r]
                 for a in range(len(BUDGETS)) for r in range(len(SYMBOLS))}
        assert costs[(c.budget_index, c.ratio_index)] == pytest.approx(min(costs.values()), abs=1e-12)
        assert c.queue == pytest.approx(z)
        z = max(0.0, z + 0.5 * (c.gamma - 0.1))
        assert ctl.queue == pytest.approx(z)


def test_interpolation_in_snr(table: ProxyTable) -> None:
    acc = np.asarray(synthetic_table()["accuracy"])
    np.testing.assert_allclose(table.accuracy_at(7.5), (acc[..., 2] + acc[..., 3]) / 2)
    np.testing.assert_allclose(table.accuracy_at(-40), acc[..., 0])
    np.testing.assert_allclose(table.accuracy_at(99), acc[..., -1])


def test_search_picks_the_most_accurate_feasible_setting(table: ProxyTable, trace: np.ndarray) -> None:
    res = LyapunovController.search(table, 0.15, V_grid=[0.1, 1.0, 10.0], mu_grid=[0.1, 1.0], snr_trace=trace[:3000],
                                    tolerance=0.02)
    assert len(res.rows) == 6 and res.best is not None
    feasible = [r for r in res.rows if r["feasible"]]
    assert res.best.mean_accuracy == max(r["mean_accuracy"] for r in feasible)
    assert (res.best_V, res.best_mu) in {(r["V"], r["mu"]) for r in feasible}
    none = LyapunovController.search(table, 0.001, V_grid=[1.0], mu_grid=[1.0], snr_trace=trace[:200])
    assert none.best is None and not none.rows[0]["feasible"]


def test_json_file_round_trip_and_bad_tables(tmp_path: Path, table: ProxyTable) -> None:
    f = tmp_path / "proxy.json"
    f.write_text(json.dumps(synthetic_table()))
    np.testing.assert_array_equal(ProxyTable.load(f).accuracy, table.accuracy)
    bad = synthetic_table()
    bad["accuracy"] = bad["accuracy"][:-1]
    with pytest.raises(InputError, match="accuracy has shape"):
        ProxyTable.load(bad)
    with pytest.raises(InputError, match="not found"):
        ProxyTable.load(tmp_path / "missing.json")
    with pytest.raises(InputError, match="increasing"):
        ProxyTable.load({**synthetic_table(), "snr_db": SNR_GRID[::-1]})
    with pytest.raises(ControlError, match="V must be positive"):
        LyapunovController(table, bound=0.1, V=0)
    with pytest.raises(ControlError, match="no .* pair"):
        LyapunovController(table, bound=0.1, max_ratio=0.001)
