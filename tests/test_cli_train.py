"""``edgesc train`` / ``eval`` / ``info`` from the command line: clear errors (exit 2, no traceback), eval JSON."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from edgesc.cli import app
from edgesc.train.checkpoint import read_checkpoint
from train_tiny import tiny_config

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _assert_error(result, *fragments: str) -> None:
    text = result.output
    assert result.exit_code == 2, text
    assert "error:" in text and "Traceback" not in text, text
    for f in fragments:
        assert f in text, (f, text)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny checkpoint trained for two steps through the CLI."""
    folder = tmp_path_factory.mktemp("cli")
    cfg = tiny_config(folder)
    res = _run("train", "--model", cfg, "--out", folder / "run", "--steps", "2", "--batch-size", "4",
               "--no-progress", "--eval-batches", "1", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert "checkpoint:" in res.output
    return folder / "run" / "final.pt"


def test_train_errors_are_one_line(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    out = tmp_path / "out"
    _assert_error(_run("train", "--model", "no-such-preset", "--out", out), "unknown preset 'no-such-preset'")
    _assert_error(_run("train", "--model", cfg, "--out", out, "--snr-db", "3:x"), "--snr-db", "'x' is not a number")
    _assert_error(_run("train", "--model", cfg, "--out", out, "--snr-db", "5:1"), "low end 5 is above high end 1")
    _assert_error(_run("train", "--model", cfg, "--out", out, "--stage", "sideways"), "--stage 'sideways'")
    _assert_error(_run("train", "--model", cfg, "--out", out, "--channel", "rician"), "--channel 'rician'")
    _assert_error(_run("train", "--model", cfg, "--out", out, "--data", "folder:/no/such/dir", "--steps", "1",
                       "--no-progress"), "/no/such/dir")
    _assert_error(_run("train", "--model", cfg, "--out", out, "--resume", "--no-progress"), "nothing to resume")
    _assert_error(_run("train", "--model", cfg, "--out", out, "--stage", "depth"), "pass --init")
    _assert_error(_run("train", "--model", cfg, "--out", out, "--init", tmp_path / "nope.pt"), "nope.pt")
    _assert_error(_run("train", "--model", cfg, "--out", out, "--device", "cuda" if not torch.cuda.is_available()
                       else "tpu", "--steps", "1"), "--device")
    assert not (out / "final.pt").exists()


def test_eval_errors(tmp_path: Path, trained: Path) -> None:
    _assert_error(_run("eval", tmp_path / "missing.pt"), "checkpoint not found", "missing.pt")
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(trained.read_bytes()[:200])
    _assert_error(_run("eval", bad), "corrupt.pt")
    _assert_error(_run("eval", trained, "--snr-db", "1,x"), "--snr-db")
    _assert_error(_run("eval", trained, "--channel", "rician"), "--channel 'rician'")
    _assert_error(_run("eval", trained, "--baseline", "ee:99", "--max-batches", "1"), "only 2 layers")
    _assert_error(_run("eval", trained, "--width", "1.5", "--max-batches", "1"), "--width 1.5")
    _assert_error(_run("eval", trained, "--data", "folder:/no/such/dir"), "/no/such/dir")


def test_eval_json_fields_and_plot(tmp_path: Path, trained: Path) -> None:
    out = tmp_path / "eval.json"
    png = tmp_path / "eval.png"
    res = _run("eval", trained, "--snr-db", "1,13", "--json", out, "--plot", png, "--max-batches", "1",
               "--batch-size", "8", "--device", "cpu")
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["model"] == "tiny" and doc["task"] == "reconstruction" and doc["channel"] == "awgn"
    assert doc["checkpoint"] == str(trained) and doc["step"] == 2
    assert [r["snr_db"] for r in doc["results"]] == [1.0, 13.0]
    for row in doc["results"]:
        for key in ("psnr", "ssim", "enc_layers", "dec_layers", "enc_width", "dec_width", "flops_per_image",
                    "images", "tokens"):
            assert key in row, key
        assert row["images"] == 8 and 0 < row["enc_layers"] <= 2 and 0 < row["enc_width"] <= 1
        assert row["flops_per_image"] > 0 and -1 <= row["ssim"] <= 1
        # counted (FlopCounterMode) and the contract's executed formula agree exactly
        assert row["flops_per_image"] == row["flops_formula_per_image"] and row["flops_source"] == "counted"
    assert png.stat().st_size > 1000
    # the same checkpoint at half width executes fewer FLOPs
    out2 = tmp_path / "half.json"
    assert _run("eval", trained, "--snr-db", "13", "--json", out2, "--max-batches", "1", "--batch-size", "8",
                "--width", "0.5").exit_code == 0
    half = json.loads(out2.read_text())["results"][0]
    assert half["enc_width"] < doc["results"][1]["enc_width"]
    assert half["flops_per_image"] < doc["results"][1]["flops_per_image"]


def test_eval_baselines(tmp_path: Path, trained: Path) -> None:
    ee = tmp_path / "ee.json"
    assert _run("eval", trained, "--snr-db", "5", "--json", ee, "--max-batches", "1", "--batch-size", "8",
                "--baseline", "ee:1").exit_code == 0
    row = json.loads(ee.read_text())["results"][0]
    assert row["enc_layers"] == pytest.approx(1.0) and row["dec_layers"] == pytest.approx(1.0)
    assert json.loads(ee.read_text())["baseline"] == "ee:1"
    sp = tmp_path / "sp.json"
    assert _run("eval", trained, "--snr-db", "5", "--json", sp, "--max-batches", "1", "--batch-size", "8",
                "--baseline", "sp:0.5").exit_code == 0
    row = json.loads(sp.read_text())["results"][0]
    assert row["enc_width"] == pytest.approx(0.5) and row["dec_width"] == pytest.approx(0.5)
    # the static pruning ratio does not move with the SNR
    sp2 = tmp_path / "sp2.json"
    assert _run("eval", trained, "--snr-db", "-10,30", "--json", sp2, "--max-batches", "1", "--batch-size", "8",
                "--baseline", "sp:0.5").exit_code == 0
    rows = json.loads(sp2.read_text())["results"]
    assert rows[0]["enc_width"] == rows[1]["enc_width"] == pytest.approx(0.5)
    sdw = tmp_path / "sdw.json"
    assert _run("eval", trained, "--snr-db", "5", "--json", sdw, "--max-batches", "1", "--batch-size", "8",
                "--baseline", "sdw:1:0.5").exit_code == 0
    row = json.loads(sdw.read_text())["results"][0]
    assert row["enc_layers"] == pytest.approx(1.0) and row["enc_width"] == pytest.approx(0.5)
    _assert_error(_run("eval", trained, "--baseline", "sp:0.5", "--width", "0.5"), "do not pass --width")


def test_info_json(tmp_path: Path) -> None:
    res = _run("info", "recvit", "--json")
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    p = info["params"]
    assert p["total"] == p["encoder"] + p["decoder"] and 3.0e6 < p["total"] < 4.5e6  # Table III: 3.70M
    assert info["layers"] == {"encoder": 8, "decoder": 8}
    assert info["tokens"] == 16 and info["symbols_per_token"] == [32]
    assert info["bandwidth_ratio"] == [pytest.approx(1 / 6)]
    assert info["flops"]["counted"]["total"] > 0 and info["flops"]["analytic"]["total"] > 0
    table = _run("info", "recvit")
    assert table.exit_code == 0 and "bandwidth" in table.output
    _assert_error(_run("info", "nope"), "unknown preset 'nope'")


def test_train_cli_writes_log_and_checkpoint(trained: Path) -> None:
    obj = read_checkpoint(trained)
    assert obj["step"] == 2 and obj["stage"] == "full"
    log = (trained.parent / "log.jsonl").read_text().splitlines()
    assert json.loads(log[0])["event"] == "start" and json.loads(log[-1])["event"] == "end"
