"""``edgesc profile``, ``edgesc control-sim`` and ``edgesc viz`` (thin: parse, call :mod:`edgesc.tokens`, print)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from edgesc.cli.app import app, run

out_console = Console()


@app.command("profile")
def profile_cmd(
    checkpoint: Path = typer.Argument(..., help="checkpoint (.pt) of a token-selection model"),
    data: str = typer.Option(..., "--data", help="data set (digits32, photos32, cifar10:PATH, folder:PATH)"),
    out: Path = typer.Option(..., "--out", help="proxy table JSON to write"),
    budgets: str = typer.Option("0.1,0.25,0.5,0.75,1", "--budgets", help="token budgets α in (0, 1]"),
    snr_db: str = typer.Option("-5:20:5", "--snr-db", help="SNR grid in dB: LO:HI:STEP or a comma list"),
    images: int = typer.Option(512, "--images", help="validation images per grid point"),
    ratios: Optional[str] = typer.Option(None, "--ratios", help="ratio level indices (default: all levels)"),
    channel: Optional[str] = typer.Option(None, "--channel", help="awgn | rayleigh | rayleigh-nocsi | none "
                                          "(default: the preset's training channel)"),
    split: str = typer.Option("test", "--split", help="data split to measure on (test = held out)"),
    batch_size: int = typer.Option(128, "--batch-size"),
    seed: int = typer.Option(0, "--seed", help="channel-noise seed"),
) -> None:
    """Proxy table of paper 001 §V: accuracy (SSIM for reconstruction) per budget × ratio × SNR, hard top-k
    inference form, and the transmitted-symbol ratio γ = K·S/(C·H·W) of each (budget, ratio) pair."""

    def body() -> None:
        from edgesc.tokens.profile import run_profile

        table = run_profile(checkpoint, data, out, budgets=budgets, snr_db=snr_db, images=images, ratios=ratios,
                            channel=channel, split=split, batch_size=batch_size, seed=seed)
        t = Table(title=f"{table['metric']} ({table['images']} images, {table['channel']}), hard top-k")
        t.add_column("α")
        t.add_column("S")
        t.add_column("γ")
        for s in table["snr_db"]:
            t.add_column(f"{s:g} dB")
        for a, alpha in enumerate(table["budgets"]):
            for r, sym in enumerate(table["symbols"]):
                t.add_row(f"{alpha:g}", str(sym), f"{table['symbol_ratio'][a][r]:.4f}",
                          *(f"{v:.3f}" for v in table["accuracy"][a][r]))
        out_console.print(t)
        out_console.print(f"proxy table: {out}  (γ = complex symbols per real source value)")

    run(body)


@app.command("control-sim")
def control_sim_cmd(
    proxy: Path = typer.Option(..., "--proxy", help="proxy table JSON (edgesc profile)"),
    snr: str = typer.Option(..., "--snr", help="SNR process in dB: normal:MEAN,STD | uniform:LO,HI | "
                            "rayleigh:MEAN | fixed:X"),
    bound: float = typer.Option(..., "--bound", help="long-term bound on the symbol ratio γ̄"),
    slots: int = typer.Option(10000, "--slots", help="time slots to simulate"),
    V: float = typer.Option(1.0, "--V", help="accuracy weight V of the drift-plus-penalty (001 Eq. 13)"),
    mu: float = typer.Option(1.0, "--mu", help="virtual-queue step μ (001 Eq. 11)"),
    search: bool = typer.Option(False, "--search", help="tune V and μ on a grid (001 §V) instead of --V/--mu"),
    V_grid: Optional[str] = typer.Option(None, "--V-grid", help="V values for --search (comma list)"),
    mu_grid: Optional[str] = typer.Option(None, "--mu-grid", help="μ values for --search (comma list)"),
    criterion: str = typer.Option("long-term", "--criterion", help="--search rule: long-term (the bound holds over "
                                  "all slots) or tail (001 §V: over the final 20%)"),
    tolerance: float = typer.Option(0.01, "--tolerance", help="relative slack on the bound for 'met'"),
    seed: int = typer.Option(0, "--seed", help="SNR trace seed"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the full result (with traces) here"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="write the queue / ratio trace PNG here"),
) -> None:
    """Simulate the Lyapunov (budget, ratio) controller of paper 001 Alg. 2 against a long-term symbol bound."""

    def body() -> None:
        from edgesc.tokens import control_sim as cs
        from edgesc.tokens.profile import write_json
        from edgesc.train.options import PLOT_SUFFIXES, check_output_file

        if json_out is not None:
            check_output_file(json_out, "--json")
        if plot is not None:
            check_output_file(plot, "--plot", PLOT_SUFFIXES)
        vg = cs.parse_grid(V_grid, "--V-grid") if V_grid else cs.DEFAULT_V_GRID
        mg = cs.parse_grid(mu_grid, "--mu-grid") if mu_grid else cs.DEFAULT_MU_GRID
        res = cs.simulate(proxy, snr, bound, slots=slots, V=V, mu=mu, search=search, V_grid=vg, mu_grid=mg,
                          seed=seed, criterion=criterion, tolerance=tolerance)
        metric = res["metric"] or "accuracy"
        t = Table(title=f"Lyapunov control, SNR {res['snr']}, bound {res['bound']:g}, {res['slots']} slots")
        t.add_column("policy")
        t.add_column("long-term γ")
        t.add_column(f"mean proxy {metric}")
        t.add_column("final-20% γ")
        t.add_column(f"final-20% {metric}")
        t.add_row(f"Lyapunov V={res['V']:g} μ={res['mu']:g}", f"{res['long_term_ratio']:.4f}",
                  f"{res['mean_accuracy']:.4f}", f"{res['tail_ratio']:.4f}", f"{res['tail_accuracy']:.4f}")
        st = res["static"]
        if st is not None:
            t.add_row(f"static α={st['budget']:g} level {st['ratio_index']}", f"{st['symbol_ratio']:.4f}",
                      f"{st['mean_accuracy']:.4f}", f"{st['symbol_ratio']:.4f}", f"{st['mean_accuracy']:.4f}")
        out_console.print(t)
        out_console.print(f"Lyapunov: long-term γ {res['long_term_ratio']:.4f}, mean {metric} "
                          f"{res['mean_accuracy']:.4f}, {len(res['pairs_used'])} (α, ratio) pairs used", soft_wrap=True)
        if st is not None:
            out_console.print(f"best static pair: α={st['budget']:g}, ratio level {st['ratio_index']}: "
                              f"γ {st['symbol_ratio']:.4f}, mean {metric} {st['mean_accuracy']:.4f}", soft_wrap=True)
        if not res["bound_met"]:
            out_console.print(f"note: the long-term ratio {res['long_term_ratio']:.4f} exceeds the bound "
                              f"(tail ratio {res['tail_ratio']:.4f}); raise μ or lower V")
        if json_out is not None:
            write_json(res, json_out)
            out_console.print(f"result: {json_out}")
        if plot is not None:
            cs.plot(res, plot)
            out_console.print(f"plot: {plot}")

    run(body)


@app.command("viz")
def viz_cmd(
    checkpoint: Path = typer.Argument(..., help="checkpoint (.pt) of a token-selection model"),
    images: int = typer.Option(4, "--images", help="number of images"),
    budget: float = typer.Option(..., "--budget", help="token budget α in (0, 1]"),
    out: Path = typer.Option(..., "--out", help="output folder for the PNGs and masks.json"),
    data: Optional[str] = typer.Option(None, "--data", help="data set (default: the preset's)"),
    split: str = typer.Option("test", "--split"),
) -> None:
    """PNGs of the tokens kept at each adaptive block: soft masks (training form) and the hard top-k set."""

    def body() -> None:
        from edgesc.tokens.viz import run_viz

        res = run_viz(checkpoint, images, budget, out, data=data, split=split)
        soft = ", ".join(f"{v:.2f}" for v in res["soft_kept"])
        out_console.print(f"{len(res['pngs'])} PNGs in {out}; kept fraction: soft masks > 0 per adaptive block "
                          f"[{soft}], hard top-k {res['hard_kept']:.2f}")

    run(body)
