"""Unit tests of the model mechanisms: halting bookkeeping (000 Alg. 1), width masks (000 Eq. 31-39),
token gates (001/003), control validation."""
from __future__ import annotations

import math

import pytest
import torch

from edgesc.config import from_dict, load_preset
from edgesc.errors import ConfigError, ControlError
from edgesc.models import Controls, build_model
from edgesc.models.depth import halting_step
from edgesc.models.tokens import budget_keep
from edgesc.models.width import WidthController, keep_counts


def _tiny(**over):
    d = dict(name="t", image_size=16, patch_size=4, embed_dim=16, heads=2, mlp_ratio=2, mlp_groups=2,
             encoder={"units": 2, "recursions": 2}, decoder={"units": 1, "recursions": 2}, coder={"symbols": [4]})
    d.update(over)
    return from_dict(d)


# ---- depth -------------------------------------------------------------------------------------------------
def test_halting_step_hand_set_scores_act_reading():
    """Alg. 1 with hand-set scores: cumulative scores, halting at T, remainder once, weights sum to one."""
    thr = 0.99
    active = torch.ones(1, 3, dtype=torch.bool)
    hc = torch.zeros(1, 3)
    scores = [torch.tensor([[0.5, 0.995, 0.2]]), torch.tensor([[0.6, 0.7, 0.3]]), torch.tensor([[0.1, 0.1, 0.1]])]
    weights, actives = [], []
    for layer, h in enumerate(scores):
        forced = torch.tensor(layer == 2)
        step = halting_step(h, active, hc, forced, thr)
        weights.append(step.weight)
        hc, active = step.cumulative, step.active
        actives.append(active.clone())
    w = torch.cat(weights)  # [layers, tokens]
    # token 0: 0.5 then halts at layer 2 with remainder 0.5; token 1 halts at layer 1 with remainder 1
    # token 2: 0.2, 0.3, then forced at layer 3 with remainder 0.5
    expected = torch.tensor([[0.5, 1.0, 0.2], [0.5, 0.0, 0.3], [0.0, 0.0, 0.5]])
    assert torch.allclose(w, expected, atol=1e-6)
    assert torch.allclose(w.sum(0), torch.ones(3))
    assert actives[0].tolist() == [[True, False, True]]
    assert actives[1].tolist() == [[False, False, True]]
    assert actives[2].tolist() == [[False, False, False]]


def test_side_halting_constant_score_output_and_counts():
    """With w = 0 and sigmoid(b) = 0.4: h = .4, .4, then halt at layer 3 with r = .2 (T = .99);
    Z_out = .4 Z1 + .4 Z2 + .2 Z3 (Eq. 26, ACT reading); layer 4 runs no token; a depth cap of 2 forces h = 1."""
    cfg = _tiny(depth={"enabled": True, "threshold": 0.99, "beta": 0.0})
    model = build_model(cfg).eval()
    side = model.encoder.side
    with torch.no_grad():
        side.depth.halt.weight.zero_()
        side.depth.halt.bias.fill_(math.log(0.4 / 0.6))
    x = torch.randn(2, 5, cfg.embed_dim)
    nv = torch.ones(2)
    with torch.no_grad():
        out, stats, _, ponder = side.run(x, None, nv, 4, torch.ones(2))
        z, zs = x, []
        for layer in range(3):
            z = side.stack.block_of(layer)(z)
            zs.append(z)
        ref = side.stack.norm(0.4 * zs[0] + 0.4 * zs[1] + 0.2 * zs[2])
    assert torch.allclose(out, ref, atol=1e-5)
    assert stats["layer_tokens"].tolist() == [[5, 5, 5, 0]] * 2
    # ponder (Eq. 28): q = 3 layers + remainder 0.2, times tau
    assert float(ponder) == pytest.approx(cfg.depth.tau * 3.2, rel=1e-5)
    with torch.no_grad():
        out2, stats2, _, _ = side.run(x, None, nv, 2, torch.ones(2))
        ref2 = side.stack.norm(0.4 * zs[0] + 0.6 * zs[1])
    assert torch.allclose(out2, ref2, atol=1e-5)
    assert stats2["layer_tokens"].tolist() == [[5, 5, 0, 0]] * 2


def test_channel_term_raises_stop_score_at_high_snr():
    cfg = _tiny(depth={"enabled": True, "beta": 0.5})
    dc = build_model(cfg).encoder.side.depth
    z = torch.randn(4, cfg.embed_dim)
    lo = dc.score(z, torch.tensor(10 ** (-0.0 / 10)))
    hi = dc.score(z, torch.tensor(10 ** (-20.0 / 10)))
    assert (hi > lo).all()  # less noise -> larger stop score -> earlier halting (Eq. 21)
    dc.channel_term = False
    assert torch.allclose(dc.score(z, torch.tensor(1.0)), dc.score(z, torch.tensor(0.01)))


# ---- width -------------------------------------------------------------------------------------------------
def test_width_masks_keep_top_k_and_pass_gradients():
    cfg = _tiny(heads=4, mlp_groups=4, width={"enabled": True, "gamma": 1.0, "delta": 0.1})
    wc: WidthController = build_model(cfg).encoder.side.width
    with torch.no_grad():
        wc.head_scores.copy_(torch.tensor([[0.1, 0.9, -0.3, 0.5], [1.0, 2.0, 3.0, 4.0]]))
        wc.group_scores.copy_(torch.tensor([[4.0, 3.0, 2.0, 1.0], [0.0, 0.0, 0.0, 0.0]]))
        wc.xi.copy_(torch.tensor([[0.0, 2.0], [-1.0, 0.5]]))
    width = torch.tensor([1.0, 0.5])
    nv = torch.tensor([1.0, 0.1])
    mh, mg = wc.masks(width, nv)
    keep = wc.keep(width, nv)
    for b in range(2):
        for u in range(2):
            for j, (mask, scores) in enumerate(((mh, wc.head_scores), (mg, wc.group_scores))):
                k_pct = 100 * torch.sigmoid(wc.gamma * wc.xi[u, j].detach() + wc.delta * nv[b])
                n_keep = min(max(math.ceil(4 * float(width[b]) * float(k_pct) / 100), 1), 4)
                assert int(keep[b, u, j]) == n_keep
                top = torch.argsort(scores[u], descending=True, stable=True)[:n_keep]
                expect = torch.zeros(4)
                expect[top] = 1
                assert torch.equal(mask[b, u].detach(), expect)
    loss = (mh * torch.arange(4.0)).sum() + (mg * torch.arange(4.0)).sum()
    loss.backward()
    assert wc.head_scores.grad is not None and wc.head_scores.grad.abs().sum() > 0
    assert wc.group_scores.grad is not None and wc.group_scores.grad.abs().sum() > 0
    assert wc.xi.grad is not None and (wc.xi.grad != 0).all()


def test_width_sparsity_loss_adaptive_lambda():
    cfg = _tiny(width={"enabled": True, "target_prune": 0.5, "lambda_max": 10.0, "lambda_min": 0.01, "xi_init": 3.0})
    model = build_model(cfg).train()
    out = model(torch.rand(2, 3, 16, 16), Controls(snr_db=10.0))
    rho = float(out.stats["enc_prune_ratio"].detach())
    assert rho < 0.5  # K(ξ=3) ≈ 95 % retained
    l_rho = (rho - 0.5) ** 2  # Eq. 34
    lam = max(10.0 * l_rho / 0.25, 0.01)  # Eq. 39
    assert float(out.losses["width"].detach()) == pytest.approx(lam * l_rho, rel=1e-4)
    out.losses["width"].backward()
    xi_grad = model.encoder.side.width.xi.grad
    assert xi_grad is not None and (xi_grad > 0).all()  # descent lowers ξ: fewer units kept, ρ̄ rises to ρt


def test_keep_counts_clamped():
    units = torch.tensor([8.0, 8.0])
    assert keep_counts(units, torch.tensor(0.01), torch.tensor([0.5, 0.5])).tolist() == [1, 1]
    assert keep_counts(units, torch.tensor(1.0), torch.tensor([0.999, 0.3])).tolist() == [8, 3]


def test_model_output_gradients_reach_width_and_halting_parameters():
    cfg = load_preset("unified-tiny")
    model = build_model(cfg).train()
    out = model(torch.rand(2, 3, 32, 32), Controls(snr_db=5.0, budget=0.5))
    loss = (out.output - 0.5).pow(2).mean() + sum(out.losses.values())
    loss.backward()
    side = model.encoder.side
    assert side.width.head_scores.grad.abs().sum() > 0 and side.width.xi.grad.abs().sum() > 0
    assert side.depth.halt.weight.grad.abs().sum() > 0
    assert model.encoder.tokens.gates[0].weight.grad.abs().sum() > 0


# ---- tokens ------------------------------------------------------------------------------------------------
def test_token_gates_drop_nothing_at_init():
    cfg = load_preset("unified-tiny")  # soft gates
    model = build_model(cfg).train()
    out = model(torch.rand(3, 3, 32, 32), Controls(budget=torch.tensor([0.1, 0.5, 0.9])))
    keep = out.stats["keep"]
    assert (keep > 0.99).all()
    assert out.stats["enc_layer_tokens"][:, -1].tolist() == [cfg.num_patches + 1] * 3


def test_dropped_tokens_stay_dropped():
    sel = build_model(load_preset("token-vit-tiny")).encoder.tokens
    patches = torch.randn(2, 16, 32)
    bt = torch.randn(2, 32)
    prev = torch.ones(2, 16)
    prev[:, ::3] = 0.0
    m = sel.soft_mask(0, patches, bt, prev)
    assert (m[:, ::3] == 0).all()
    with torch.no_grad():
        sel.gates[0].weight.zero_()
        sel.gates[0].bias.fill_(-10.0)  # gate sigmoid ≈ 0 < threshold sigmoid 0.5: everything drops
        sel.thresholds[0].weight.zero_()
        sel.thresholds[0].bias.fill_(0.0)
    assert (sel.soft_mask(0, patches, bt, prev) == 0).all()


@pytest.mark.parametrize("budget", [0.01, 0.3, 0.5, 0.77, 1.0])
def test_hard_topk_keeps_ceil_budget(budget):
    cfg = load_preset("unified-tiny")
    model = build_model(cfg).eval()
    m = cfg.num_patches
    k = min(max(math.ceil(budget * m), 1), m)
    assert int(budget_keep(torch.tensor(budget), m)) == k
    out = model(torch.rand(2, 3, 32, 32), Controls(budget=budget))
    assert out.stats["keep"].sum(1).tolist() == [k, k]
    enc = model.encoder.inference()
    sym, idx, lt, _ = enc(torch.rand(2, 3, 32, 32), torch.tensor(budget), torch.tensor(4), torch.tensor(1.0),
                          torch.tensor(10.0), torch.tensor(0))
    assert idx.shape == (2, k) and sym.shape[:2] == (2, k)
    assert (idx.diff(dim=1) > 0).all()  # sorted, distinct
    assert lt[:, cfg.tokens.select_at:].max() <= k + 1


def test_topk_training_is_straight_through():
    cfg = load_preset("quickstart")  # train_selection = "topk"
    model = build_model(cfg).train()
    out = model(torch.rand(2, 3, 32, 32), Controls(budget=0.25))
    keep = out.stats["keep"]
    assert keep.sum(1).tolist() == [16.0, 16.0]  # exactly ceil(0.25·64) in the forward pass
    (out.output.mean() + sum(out.losses.values())).backward()
    assert model.encoder.tokens.gates[0].weight.grad.abs().sum() > 0


def test_topk_training_has_no_budget_penalty_but_soft_training_does():
    """Top-k meets the budget exactly; a penalty would only see rounding (1/M = 0.0625 > margin here) and push the
    soft gates to zero (found by the token-budget experiment). Soft training keeps the papers' penalties."""
    tokens = {"enabled": True, "select_at": 0, "adaptive_layers": [0, 1], "margin": 0.05}
    for selection, penalty in [("topk", "local"), ("topk", "global"), ("soft", "local"), ("soft", "global")]:
        cfg = _tiny(tokens={**tokens, "train_selection": selection, "penalty": penalty})
        assert cfg.num_patches == 16
        model = build_model(cfg).train()
        out = model(torch.rand(3, 3, 16, 16), Controls(budget=0.2))  # ceil(0.2·16)/16 − 0.2 = 0.05 + 0.0125
        names = {k for k in out.losses if k.startswith("tokens_")}
        if selection == "topk":
            assert names == set(), (selection, penalty, names)
        else:
            assert names == {"tokens_inner", "tokens_output" if penalty == "local" else "tokens_global"}


def test_budget_sampled_per_example_in_training():
    model = build_model(load_preset("unified-tiny")).train()
    out = model(torch.rand(4, 3, 32, 32), Controls(budget=None))
    b = out.stats["budget"]
    assert b.shape == (4,) and ((b > 0) & (b <= 1)).all() and len(set(b.tolist())) == 4


# ---- controls and errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize("ctl", [Controls(budget=0.0), Controls(budget=1.5), Controls(depth=0), Controls(width=0.0),
                                 Controls(width=1.2), Controls(ratio=2), Controls(snr_db=float("nan")),
                                 Controls(snr_db=torch.zeros(3))])
def test_bad_controls_raise_control_error(ctl):
    model = build_model(load_preset("unified-tiny")).eval()
    with pytest.raises(ControlError):
        model(torch.rand(2, 3, 32, 32), ctl)


def test_bad_image_shape_and_config():
    model = build_model(load_preset("recvit-tiny"))
    with pytest.raises(ControlError, match="images must have shape"):
        model(torch.rand(2, 3, 16, 16))
    enc = model.encoder.inference()
    with pytest.raises(ControlError, match="image must have shape"):
        enc(torch.rand(2, 1, 32, 32))
    dec = model.decoder.inference()
    with pytest.raises(ControlError, match="token_index"):
        dec(torch.rand(1, 2, 8, 2), torch.tensor([[0, 99]]))
    with pytest.raises(ControlError, match="ratio 0 expects 8"):
        dec(torch.rand(1, 2, 4, 2), torch.tensor([[0, 1]]))
    with pytest.raises(ConfigError, match="class_token"):
        build_model(_tiny(class_token=True))
