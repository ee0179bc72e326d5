"""Budget behaviour of a briefly trained token-selection model: adherence of the kept fraction to α, the hard
top-k count, token loss at the receiver, and clear errors for bad budgets / ratio levels."""
from __future__ import annotations

import math

import pytest
import torch

from edgesc.errors import ControlError
from edgesc.tokens.profile import Evaluator, check_budget, kept_tokens, lose_tokens, parse_budgets, symbol_ratio
from tokens_trained import trained_tiny

ALPHAS = (0.1, 0.25, 0.5, 0.75, 1.0)


@pytest.fixture(scope="module")
def trained():
    return trained_tiny()


def test_the_model_learned_something(trained) -> None:
    cfg, model, x, y, _ = trained
    acc = Evaluator(model, channel="none").hard(x, y, 1.0, 0, 20.0)
    assert acc > 0.4  # chance is 0.1


def test_soft_kept_fraction_follows_alpha(trained) -> None:
    """001 Eq. 7: the mean soft mask at the last adaptive block (the quantity the budget penalty sees) must lie
    within ``margin`` of α, plus the slack a 500-step training leaves (0.1, needed at α = 0.1), and rise with α."""
    cfg, model, x, y, _ = trained
    ev = Evaluator(model)
    kept = [ev.soft(x, y, alpha, 0, 10.0)["mean_mask"] for alpha in ALPHAS]
    for alpha, k in zip(ALPHAS, kept):
        assert abs(k - alpha) <= cfg.tokens.margin + 0.1, (alpha, k)
    assert all(b > a for a, b in zip(kept, kept[1:])), kept


@pytest.mark.parametrize("alpha", ALPHAS)
def test_hard_top_k_sends_ceil_alpha_m_tokens(trained, alpha) -> None:
    cfg, model, x, _, _ = trained
    enc = model.encoder.inference()
    sym, idx, _, _ = enc(x[:8], budget=torch.tensor(alpha), ratio=torch.tensor(1))
    m = cfg.num_patches
    k = math.ceil(alpha * m - 1e-9)
    assert idx.shape == (8, k + 1) and sym.shape == (8, k + 1, cfg.coder.symbols[1], 2)
    assert bool((idx[:, 0] == m).all())  # the class token is sent first
    assert abs(k / m - alpha) <= cfg.tokens.margin  # the quantisation of ceil(α·M) stays inside the margin here
    assert kept_tokens(cfg, alpha) == k + 1
    assert symbol_ratio(cfg, alpha, 1) == (k + 1) * cfg.coder.symbols[1] / (3 * 32 * 32)
    # unit average power per image over what is sent
    assert torch.allclose(sym.pow(2).sum(-1).mean(dim=(1, 2)), torch.ones(8), atol=1e-4)


def test_token_loss_degrades_accuracy_monotonically(trained) -> None:
    cfg, model, x, y, _ = trained
    ev = Evaluator(model, channel="awgn", seed=1)
    acc = {loss: ev.hard(x, y, 0.75, 0, 15.0, loss=loss) for loss in (0.0, 0.5, 1.0)}
    assert acc[0.0] > acc[0.5] >= acc[1.0]
    # with every token lost the decoder sees nothing: one constant prediction, i.e. one class's frequency
    assert acc[1.0] <= max(float((y == c).float().mean()) for c in range(10)) + 1e-6


def test_lose_tokens_keeps_the_surviving_tokens_in_order() -> None:
    sym = torch.arange(2 * 6 * 3 * 2, dtype=torch.float32).reshape(2, 6, 3, 2)
    idx = torch.tensor([[16, 0, 3, 5, 9, 12], [16, 1, 2, 4, 8, 15]])
    s, i = lose_tokens(sym, idx, 0.5, torch.Generator().manual_seed(0))
    assert i.shape == (2, 3) and s.shape == (2, 3, 3, 2)
    for b in range(2):
        pos = [idx[b].tolist().index(v) for v in i[b].tolist()]
        assert pos == sorted(pos)
        assert torch.equal(s[b], sym[b, pos])
    s0, i0 = lose_tokens(sym, idx, 1.0)
    assert i0.shape == (2, 0) and s0.shape == (2, 0, 3, 2)
    with pytest.raises(ControlError):
        lose_tokens(sym, idx, 1.5)


@pytest.mark.parametrize("alpha", [0.0, -0.1, 1.01, float("nan"), 2])
def test_budget_outside_0_1_is_a_clear_error(trained, alpha) -> None:
    cfg, model, x, y, _ = trained
    with pytest.raises(ControlError, match="budget"):
        check_budget(alpha)
    with pytest.raises(ControlError, match="budget"):
        Evaluator(model).hard(x[:4], y[:4], alpha, 0, 10.0)
    with pytest.raises(ControlError, match="budget"):
        model.encoder.inference()(x[:2], budget=torch.tensor(float(alpha)))


def test_unknown_ratio_is_a_clear_error(trained) -> None:
    cfg, model, x, y, _ = trained
    with pytest.raises(ControlError, match="ratio level 2"):
        Evaluator(model).hard(x[:4], y[:4], 0.5, 2, 10.0)
    with pytest.raises(ControlError, match="ratio"):
        symbol_ratio(cfg, 0.5, -1)
    with pytest.raises(ControlError, match="ratio"):
        model.encoder.inference()(x[:2], budget=torch.tensor(0.5), ratio=torch.tensor(7))


def test_budget_list_parser() -> None:
    assert parse_budgets("1,0.1,0.25") == (0.1, 0.25, 1.0)
    for bad in ("0,0.5", "0.5,x", "", "1.5"):
        with pytest.raises(ControlError):
            parse_budgets(bad)
