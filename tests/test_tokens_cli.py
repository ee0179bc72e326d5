"""``edgesc profile`` / ``control-sim`` / ``viz`` from the command line: outputs, and clear one-line errors (exit
2, no traceback) for bad input. An untrained token-vit-tiny checkpoint is enough for the plumbing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from edgesc.cli import app
from edgesc.config import load_preset
from edgesc.models import build_model
from edgesc.train.checkpoint import save_checkpoint

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _assert_error(result, *fragments: str) -> None:
    text = result.output
    assert result.exit_code == 2, text
    assert "error:" in text and "Traceback" not in text, text
    for f in fragments:
        assert f in " ".join(text.split()), (f, text)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = load_preset("token-vit-tiny")
    folder = tmp_path_factory.mktemp("tokcli")
    return save_checkpoint(folder / "tok.pt", cfg=cfg, model=build_model(cfg))


@pytest.fixture(scope="module")
def proxy(ckpt) -> Path:
    out = ckpt.parent / "proxy.json"
    res = _run("profile", ckpt, "--data", "digits32", "--out", out, "--budgets", "0.25,0.5,1", "--snr-db", "0:10:10",
               "--images", "24")
    assert res.exit_code == 0, res.output
    return out


def test_profile_writes_a_runtime_readable_table(proxy) -> None:
    from edgesc_runtime.controller import ProxyTable

    raw = json.loads(proxy.read_text())
    assert raw["metric"] == "accuracy" and raw["images"] == 24 and raw["snr_db"] == [0.0, 10.0]
    assert raw["budgets"] == [0.25, 0.5, 1.0] and raw["symbols"] == [8, 2]
    t = ProxyTable.load(proxy)
    assert t.accuracy.shape == (3, 2, 2) and ((t.accuracy >= 0) & (t.accuracy <= 1)).all()
    # γ = (ceil(α·16) + 1 class token) · S / 3072
    assert t.symbol_ratio[0, 0] == pytest.approx(5 * 8 / 3072) and t.symbol_ratio[2, 1] == pytest.approx(17 * 2 / 3072)


def test_profile_errors(ckpt, tmp_path) -> None:
    out = tmp_path / "p.json"
    _assert_error(_run("profile", tmp_path / "none.pt", "--data", "digits32", "--out", out), "none.pt")
    _assert_error(_run("profile", ckpt, "--data", "digits32", "--out", out, "--budgets", "0,0.5"), "budget")
    _assert_error(_run("profile", ckpt, "--data", "digits32", "--out", out, "--budgets", "1.5"), "(0, 1]")
    _assert_error(_run("profile", ckpt, "--data", "digits32", "--out", out, "--snr-db", "0:x:5"), "--snr-db")
    _assert_error(_run("profile", ckpt, "--data", "digits32", "--out", out, "--ratios", "3"), "unknown ratio level 3")
    _assert_error(_run("profile", ckpt, "--data", "nosuchdata", "--out", out), "nosuchdata")
    _assert_error(_run("profile", ckpt, "--data", "photos32", "--out", out, "--images", "4"), "unlabeled")
    assert not out.exists()


def test_control_sim(proxy, tmp_path) -> None:
    js, png = tmp_path / "sim.json", tmp_path / "q.png"
    res = _run("control-sim", "--proxy", proxy, "--snr", "normal:10,2.5", "--bound", "0.008", "--slots", "800",
               "--search", "--json", js, "--plot", png)
    assert res.exit_code == 0, res.output
    assert "best static pair" in res.output
    out = json.loads(js.read_text())
    assert out["long_term_ratio"] <= 0.008 * 1.01 and out["static"]["symbol_ratio"] <= 0.008
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_control_sim_errors(proxy, tmp_path) -> None:
    _assert_error(_run("control-sim", "--proxy", proxy, "--snr", "normal:10", "--bound", "0.01"), "--snr",
                  "normal takes 2 number(s)")
    _assert_error(_run("control-sim", "--proxy", proxy, "--snr", "lognormal:1,2", "--bound", "0.01"),
                  "unknown SNR process")
    _assert_error(_run("control-sim", "--proxy", tmp_path / "none.json", "--snr", "10", "--bound", "0.01"),
                  "not found")
    bad = tmp_path / "bad.json"
    bad.write_text('{"budgets": [0.5]}')
    _assert_error(_run("control-sim", "--proxy", bad, "--snr", "10", "--bound", "0.01"), "missing key")
    _assert_error(_run("control-sim", "--proxy", proxy, "--snr", "10", "--bound", "0.0001"),
                  "no (budget, ratio) pair of the proxy table can meet it")
    _assert_error(_run("control-sim", "--proxy", proxy, "--snr", "10", "--bound", "0.01", "--search",
                       "--V-grid", "a,b"), "--V-grid")


def test_viz(ckpt, tmp_path) -> None:
    out = tmp_path / "viz"
    res = _run("viz", ckpt, "--images", "2", "--budget", "0.25", "--out", out, "--data", "digits32")
    assert res.exit_code == 0, res.output
    pngs = sorted(out.glob("tokens_*.png"))
    assert len(pngs) == 2 and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    masks = json.loads((out / "masks.json").read_text())
    assert masks["adaptive_layers"] == [1] and masks["select_at"] == 1
    img = masks["images"][0]
    assert len(img["hard"]) == 4 and len(img["soft"]) == 1 and len(img["soft"][0]) == 16
    # the hard set is the top-4 gate scores; an untrained gate keeps everything in the soft form (bias +10)
    assert all(v > 0.9 for v in img["soft"][0])


def test_viz_errors(ckpt, tmp_path) -> None:
    out = tmp_path / "v"
    _assert_error(_run("viz", ckpt, "--images", "1", "--budget", "0", "--out", out), "budget")
    _assert_error(_run("viz", ckpt, "--images", "0", "--budget", "0.5", "--out", out), "--images")
    _assert_error(_run("viz", tmp_path / "x.pt", "--images", "1", "--budget", "0.5", "--out", out), "x.pt")
    cfg = load_preset("recvit-tiny")
    plain = save_checkpoint(tmp_path / "plain.pt", cfg=cfg, model=build_model(cfg))
    _assert_error(_run("viz", plain, "--images", "1", "--budget", "0.5", "--out", out), "no token selection")


def test_profile_of_a_reconstruction_model_reports_ssim(tmp_path) -> None:
    """unified-tiny (RecViT + depth + width + tokens, reconstruction): the table holds SSIM and says so."""
    from edgesc.tokens.profile import load_images, profile

    torch.manual_seed(0)
    cfg = load_preset("unified-tiny")
    model = build_model(cfg).eval()
    x, y = load_images("photos32", cfg, 6)
    table = profile(model, x, y, budgets=(0.25, 1.0), snr_db=(0.0, 20.0))
    assert table["metric"] == "ssim" and "SSIM" in table["metric_note"]
    acc = torch.tensor(table["accuracy"])
    assert acc.shape == (2, 2, 2) and bool(((acc > -1) & (acc < 1)).all())
