"""control-sim on top of the runtime's Lyapunov controller: SNR process specs, proxy-file errors, bound errors,
long-term constraint met, and the comparison with the best static pair on a synthetic proxy table."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgesc.errors import ControlError, DataError
from edgesc.tokens import control_sim as cs


def synthetic_table() -> dict:
    """Accuracy rising with budget, symbols and SNR (saturating), γ = K·S / 3072 of a 16-patch model."""
    budgets = [0.1, 0.25, 0.5, 0.75, 1.0]
    symbols = [8, 2]
    snr = [-5.0, 0.0, 5.0, 10.0, 15.0, 20.0]
    acc, gam = [], []
    for a in budgets:
        k = int(np.ceil(a * 16)) + 1
        acc.append([[float(0.1 + 0.85 * (1 - np.exp(-3 * a)) * (1 - np.exp(-s / 4)) / (1 + np.exp(-(x + 2) / 4)))
                     for x in snr] for s in symbols])
        gam.append([k * s / 3072 for s in symbols])
    return {"budgets": budgets, "ratios": [0.5, 0.125], "snr_db": snr, "accuracy": acc, "symbol_ratio": gam,
            "metric": "accuracy"}


@pytest.fixture
def proxy(tmp_path):
    p = tmp_path / "proxy.json"
    p.write_text(json.dumps(synthetic_table()))
    return p


@pytest.mark.parametrize("spec,kind,params", [
    ("normal:10,2.5", "normal", (10.0, 2.5)), ("uniform:0,20", "uniform", (0.0, 20.0)),
    ("rayleigh:10", "rayleigh", (10.0,)), ("fixed:7", "fixed", (7.0,)), ("12.5", "fixed", (12.5,)),
])
def test_snr_specs(spec, kind, params) -> None:
    proc = cs.parse_snr_spec(spec)
    assert (proc.kind, proc.params) == (kind, params)
    trace = proc.sample(20000, seed=3)
    assert trace.shape == (20000,) and np.isfinite(trace).all()
    if kind == "normal":
        assert abs(trace.mean() - 10) < 0.1 and abs(trace.std() - 2.5) < 0.1
    if kind == "uniform":
        assert trace.min() >= 0 and trace.max() <= 20
    if kind == "rayleigh":  # mean of the linear SNR is the nominal one: E|g|^2 = 1
        assert abs(np.mean(10 ** (trace / 10)) / 10 ** 1.0 - 1) < 0.05


@pytest.mark.parametrize("spec", ["normal:10", "normal:10,-1", "gauss:1,2", "uniform:20,0", "normal:a,b",
                                  "", "fixed:inf", "normal:1,2,3"])
def test_malformed_snr_specs_are_clear_errors(spec) -> None:
    with pytest.raises(ControlError, match="--snr"):
        cs.parse_snr_spec(spec)


def test_missing_and_malformed_proxy_files(tmp_path) -> None:
    with pytest.raises(DataError, match="not found"):
        cs.load_proxy(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        cs.load_proxy(bad)
    t = synthetic_table()
    t["accuracy"] = t["accuracy"][:2]
    short = tmp_path / "short.json"
    short.write_text(json.dumps(t))
    with pytest.raises(DataError, match="accuracy has shape"):
        cs.load_proxy(short)


def test_bound_no_pair_can_meet(proxy) -> None:
    lowest = min(min(r) for r in synthetic_table()["symbol_ratio"])
    with pytest.raises(ControlError, match="no \\(budget, ratio\\) pair"):
        cs.simulate(proxy, "normal:10,2.5", bound=lowest / 2, slots=100)
    with pytest.raises(ControlError, match="--bound"):
        cs.simulate(proxy, "normal:10,2.5", bound=-1, slots=100)


def test_lyapunov_meets_the_bound_and_beats_the_static_pair(proxy) -> None:
    bound = 0.01
    res = cs.simulate(proxy, "normal:10,2.5", bound=bound, slots=2000, search=True)
    assert res["bound_met"] and res["long_term_ratio"] <= bound * 1.01
    assert res["static"]["symbol_ratio"] <= bound
    # time-varying choice of (α, ratio) is at least as good as the best fixed pair under the same average budget
    assert res["mean_accuracy"] >= res["static"]["mean_accuracy"] - 1e-3
    assert len(res["pairs_used"]) >= 2
    assert res["search"]["evaluated_on_seed"] != res["search"]["tuned_on_seed"]
    assert len(res["trace"]["queue"]) == 2001 and res["metric"] == "accuracy"


def test_a_large_V_ignores_the_bound_and_a_small_one_keeps_it(proxy) -> None:
    greedy = cs.simulate(proxy, "fixed:10", bound=0.005, slots=4000, V=1e6, mu=1e-3)
    strict = cs.simulate(proxy, "fixed:10", bound=0.005, slots=4000, V=0.01, mu=1.0)
    assert greedy["long_term_ratio"] > 0.005 * 1.5 and not greedy["bound_met"]
    assert strict["long_term_ratio"] <= 0.005 * 1.02 and strict["tail_ratio"] <= 0.005 * 1.01
    assert greedy["mean_accuracy"] > strict["mean_accuracy"]


def test_the_papers_tail_rule_can_overspend_over_the_run(proxy) -> None:
    tail = cs.simulate(proxy, "normal:10,2.5", bound=0.01, slots=2000, search=True, criterion="tail")
    strict = cs.simulate(proxy, "normal:10,2.5", bound=0.01, slots=2000, search=True)
    assert tail["tail_ratio"] <= 0.01 * 1.05
    assert strict["long_term_ratio"] <= tail["long_term_ratio"]
    assert tail["V"] / tail["mu"] >= strict["V"] / strict["mu"]
    with pytest.raises(ControlError, match="criterion"):
        cs.simulate(proxy, "fixed:10", bound=0.01, slots=10, criterion="best")


def test_plot_writes_a_png(proxy, tmp_path) -> None:
    res = cs.simulate(proxy, "uniform:0,20", bound=0.02, slots=500)
    out = cs.plot(res, tmp_path / "q.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_grid_parser() -> None:
    assert cs.parse_grid("0.1,1,10", "--V-grid") == (0.1, 1.0, 10.0)
    with pytest.raises(ControlError, match="--mu-grid"):
        cs.parse_grid("0,1", "--mu-grid")
