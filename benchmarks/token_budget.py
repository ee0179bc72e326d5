"""Token-budget experiment (papers 001 §IV-B/§VI and 003 §III) on ``token-vit-tiny`` + ``digits32``.

(a) one model trained with α ~ U(1/M, 1] per example vs models trained at one fixed α (0.25, 0.5): accuracy at
    α ∈ {0.1, 0.25, 0.5, 0.75, 1} with the hard top-k inference form (what the exported graphs run);
(b) the soft-mask (training form, 001 Eq. 6) vs hard top-k accuracy gap per α;
(c) budget adherence: kept fraction vs α — the soft masks' mean (what the 001 Eq. 7 penalty sees), the fraction
    of non-zero soft masks (what 001 §IV-B keeps when it discretises), and the hard k/M;
each for the papers' soft-mask training (``tokens.train_selection = "soft"``) and for straight-through top-k
training (``"topk"``). Then the proxy table of each α-sampled model (``edgesc profile``'s measurement) and a
Lyapunov control-sim table (``edgesc control-sim``'s simulation) for a few bounds and SNR processes.

Run: ``.venv/bin/python benchmarks/token_budget.py`` (≈ 30-40 min on one shared core), then
``… --ablation`` (≈ 10 min: α-sampled top-k training with / without the budget penalty). Writes
``benchmarks/results/token_budget.json`` and ``token_budget.png``; trained checkpoints go to ``runs/token_budget``
(not committed). ``--reuse`` skips training for checkpoints that exist.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from edgesc.config import load_preset
from edgesc.tokens import control_sim as cs
from edgesc.tokens.budget_train import train_budget_model
from edgesc.tokens.profile import Evaluator, kept_tokens, load_images, profile, write_json

ALPHAS = (0.1, 0.25, 0.5, 0.75, 1.0)
VARIANTS: tuple[tuple[str, str | float, str], ...] = (
    ("sampled-soft", "sampled", "soft"),
    ("fixed0.25-soft", 0.25, "soft"),
    ("fixed0.5-soft", 0.5, "soft"),
    ("sampled-topk", "sampled", "topk"),
    ("fixed0.25-topk", 0.25, "topk"),
    ("fixed0.5-topk", 0.5, "topk"),
)
EVAL_SNR = 10.0
BOUNDS = (0.005, 0.01, 0.02)
SNR_PROCESSES = ("normal:10,2.5", "uniform:-5,20", "rayleigh:10")
ROOT = Path(__file__).resolve().parent


def _cfg(selection: str):
    cfg = load_preset("token-vit-tiny")
    return cfg.replace(tokens={**cfg.to_dict()["tokens"], "train_selection": selection})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000, help="steps of each fixed-α model")
    ap.add_argument("--sampled-steps", type=int, default=None,
                    help="steps of each α-sampled model (default 2 × --steps: the compute of the two fixed models)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--slots", type=int, default=10000)
    ap.add_argument("--reuse", action="store_true", help="reuse checkpoints in runs/token_budget")
    ap.add_argument("--only", default=None, help="comma list of variant names")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "token_budget.json")
    ap.add_argument("--tag", default="", help="suffix of the checkpoint folder (runs/token_budget<tag>)")
    ap.add_argument("--ablation", action="store_true",
                    help="only run the top-k penalty ablation (α sampled, --steps steps, with and without the "
                         "budget penalty) and merge it into --out")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.ablation:
        ablation(args)
        return
    runs = ROOT.parent / "runs" / f"token_budget{args.tag}"
    runs.mkdir(parents=True, exist_ok=True)
    base = load_preset("token-vit-tiny")
    x_tr, y_tr = load_images("digits32", base, None, "train")
    x_te, y_te = load_images("digits32", base, None, "test")
    m = base.num_patches
    result: dict[str, Any] = {
        "experiment": "token budget: sampled vs fixed α, soft vs hard, adherence, Lyapunov control",
        "preset": "token-vit-tiny", "data": "digits32", "train_images": int(x_tr.shape[0]),
        "test_images": int(x_te.shape[0]), "num_patches": m, "eval_snr_db": EVAL_SNR, "channel": base.train.channel,
        "train": {"steps_fixed": args.steps, "steps_sampled": args.sampled_steps or 2 * args.steps,
                  "batch_size": args.batch_size, "lr": args.lr,
                  "topk_penalty": "dropped in top-k training (budget met by construction; see budget_train.py)",
                  "snr_db": list(base.train.snr_db), "schedule": "AdamW, warm-up + cosine, grad clip 1"},
        "host": {"machine": platform.machine(), "torch": torch.__version__, "threads": 1},
        "models": {},
    }
    wanted = set(args.only.split(",")) if args.only else None
    trained: dict[str, Any] = {}
    for name, budget, selection in VARIANTS:
        if wanted and name not in wanted:
            continue
        cfg = _cfg(selection)
        ckpt = runs / f"{name}.pt"
        t0 = time.perf_counter()
        if args.reuse and ckpt.exists():
            from edgesc.train.checkpoint import load_checkpoint

            _, model, meta = load_checkpoint(ckpt)
            log = dict(meta.get("metrics", {}))
            log.setdefault("steps", meta.get("step"))
            seconds = log.get("train_seconds")
        else:
            steps = (args.sampled_steps or 2 * args.steps) if budget == "sampled" else args.steps
            model, tl = train_budget_model(cfg, x_tr, y_tr, steps, budget=budget, batch_size=args.batch_size,
                                           lr=args.lr, seed=0, log_every=100)
            seconds = tl.seconds
            log = {"loss_curve": tl.loss, "budget_penalty_curve": tl.budget_penalty, "train_seconds": tl.seconds}
            from edgesc.train.checkpoint import save_checkpoint

            log["steps"] = steps
            save_checkpoint(ckpt, cfg=cfg, model=model, step=steps, metrics=log)
        print(f"{name}: trained in {seconds or 0:.0f} s", flush=True)
        ev = Evaluator(model, channel=cfg.train.channel, batch_size=256, seed=0)
        clean = Evaluator(model, channel="none", batch_size=256)
        rows = []
        for a in ALPHAS:
            soft = ev.soft(x_te, y_te, a, 0, EVAL_SNR)
            rows.append({"alpha": a,
                         "hard_acc": ev.hard(x_te, y_te, a, 0, EVAL_SNR),
                         "hard_acc_ratio1": ev.hard(x_te, y_te, a, 1, EVAL_SNR),
                         "hard_acc_noiseless": clean.hard(x_te, y_te, a, 0, EVAL_SNR),
                         "soft_acc": soft["metric"], "soft_mean_mask": soft["mean_mask"],
                         "soft_nonzero": soft["nonzero"], "hard_kept": (kept_tokens(cfg, a) - int(cfg.class_token)) / m})
            print(f"  α={a:g}: hard {rows[-1]['hard_acc']:.3f} soft {soft['metric']:.3f} "
                  f"mean-mask {soft['mean_mask']:.3f} nonzero {soft['nonzero']:.3f}", flush=True)
        result["models"][name] = {"train_budget": budget, "train_selection": selection, "steps": log.get("steps"),
                                  "train_seconds": seconds, "final_loss": (log.get("loss_curve") or [None])[-1],
                                  "eval": rows}
        trained[name] = model

    # proxy tables and control simulation for the α-sampled models
    result["proxy"] = {}
    result["control"] = []
    for name in ("sampled-soft", "sampled-topk"):
        if name not in trained:
            continue
        table = profile(trained[name], x_te, y_te, ALPHAS, None, (-5.0, 0.0, 5.0, 10.0, 15.0, 20.0),
                        channel=base.train.channel, batch_size=256, seed=0)
        table["checkpoint"] = f"runs/token_budget{args.tag}/{name}.pt"
        write_json(table, runs / f"proxy-{name}.json")
        result["proxy"][name] = {k: table[k] for k in ("budgets", "symbols", "snr_db", "accuracy", "symbol_ratio")}
        from edgesc_runtime.controller import ProxyTable

        tbl = ProxyTable.load(table)
        for snr in SNR_PROCESSES:
            for bound in BOUNDS:
                row: dict[str, Any] = {"model": name, "snr": snr, "bound": bound}
                for crit in ("long-term", "tail"):
                    try:
                        r = cs.simulate(tbl, snr, bound, slots=args.slots, search=True, criterion=crit, seed=0)
                    except Exception as exc:  # report, do not abort the table
                        row[crit] = {"error": str(exc)}
                        continue
                    row[crit] = {"V": r["V"], "mu": r["mu"], "long_term_ratio": r["long_term_ratio"],
                                 "mean_accuracy": r["mean_accuracy"], "tail_ratio": r["tail_ratio"],
                                 "tail_accuracy": r["tail_accuracy"], "pairs_used": len(r["pairs_used"])}
                    row["static"] = r["static"]
                result["control"].append(row)
                lt, st = row.get("long-term", {}), row.get("static") or {}
                print(f"  control {name} {snr} γ̄={bound}: lyapunov γ={lt.get('long_term_ratio', float('nan')):.4f} "
                      f"acc={lt.get('mean_accuracy', float('nan')):.3f}; static γ={st.get('symbol_ratio', float('nan')):.4f} "
                      f"acc={st.get('mean_accuracy', float('nan')):.3f}", flush=True)
    write_json(result, args.out)
    plot(result, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


def ablation(args: argparse.Namespace) -> None:
    """α-sampled top-k training with vs without the output penalty (001 Eq. 7), same seed and steps: the penalty
    only sees the ceil(α·M) quantisation in top-k training and kills the straight-through gates (budget_train.py)."""
    base = load_preset("token-vit-tiny")
    x_tr, y_tr = load_images("digits32", base, None, "train")
    x_te, y_te = load_images("digits32", base, None, "test")
    out: dict[str, Any] = {"steps": args.steps, "train_selection": "topk", "train_budget": "sampled"}
    for penalty in (True, False):
        model, tl = train_budget_model(_cfg("topk"), x_tr, y_tr, args.steps, budget="sampled",
                                       batch_size=args.batch_size, lr=args.lr, seed=0, log_every=100,
                                       topk_penalty=penalty)
        ev = Evaluator(model, batch_size=256, seed=0)
        rows = []
        for a in ALPHAS:
            soft = ev.soft(x_te, y_te, a, 0, EVAL_SNR)
            rows.append({"alpha": a, "hard_acc": ev.hard(x_te, y_te, a, 0, EVAL_SNR), "soft_acc": soft["metric"],
                         "soft_mean_mask": soft["mean_mask"], "soft_nonzero": soft["nonzero"]})
        key = "with_penalty" if penalty else "without_penalty"
        out[key] = {"final_loss": tl.loss[-1], "train_seconds": tl.seconds, "eval": rows}
        print(key, [(r["alpha"], round(r["hard_acc"], 3), round(r["soft_mean_mask"], 3)) for r in rows], flush=True)
    result = json.loads(args.out.read_text()) if args.out.exists() else {}
    result["ablation_topk_penalty"] = out
    write_json(result, args.out)
    print(f"merged into {args.out}")


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    styles = {"soft": "-", "topk": "--"}
    for name, mres in result["models"].items():
        a = [r["alpha"] for r in mres["eval"]]
        ls = styles[mres["train_selection"]]
        ax[0].plot(a, [r["hard_acc"] for r in mres["eval"]], ls, marker="o", label=name)
        if str(mres["train_budget"]) == "sampled":
            ax[1].plot(a, [r["hard_acc"] for r in mres["eval"]], ls, marker="o", label=f"{name}: hard top-k")
            ax[1].plot(a, [r["soft_acc"] for r in mres["eval"]], ls, marker="x", label=f"{name}: soft masks")
            ax[2].plot(a, [r["soft_mean_mask"] for r in mres["eval"]], ls, marker="o", label=f"{name}: mean soft mask")
            ax[2].plot(a, [r["soft_nonzero"] for r in mres["eval"]], ls, marker="x", label=f"{name}: soft mask > 0")
    a = [r["alpha"] for r in next(iter(result["models"].values()))["eval"]]
    ax[2].plot(a, [r["hard_kept"] for r in next(iter(result["models"].values()))["eval"]], "k:", label="hard k/M")
    ax[2].plot([0, 1], [0, 1], color="0.7", lw=0.8)
    ax[0].set_title(f"(a) hard top-k accuracy, {result['eval_snr_db']:g} dB AWGN")
    ax[1].set_title("(b) soft masks vs hard top-k (α-sampled models)")
    ax[2].set_title("(c) kept fraction vs budget α")
    for axis in ax:
        axis.set_xlabel("budget α")
        axis.legend(fontsize=6)
        axis.grid(alpha=0.3)
    ax[0].set_ylabel("accuracy (digits32 test)")
    ax[2].set_ylabel("kept fraction of patch tokens")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
