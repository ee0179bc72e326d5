"""`edgesc export` from the command line: clear errors before any work, static export, failed validation."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import edgesc.cli  # noqa: F401 - registers every command
from edgesc.cli.app import app
from edgesc.config import load_preset
from edgesc.export.audit import audit_model
from edgesc.models import build_model
from edgesc.train.checkpoint import save_checkpoint

runner = CliRunner()


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for name in ("vit-tiny", "token-vit-tiny"):
        torch.manual_seed(0)
        cfg = load_preset(name)
        out[name] = save_checkpoint(root / f"{name}.pt", cfg=cfg, model=build_model(cfg).eval())
    return out


def _export(*args: str):
    return runner.invoke(app, ["export", *args])


def test_missing_checkpoint(tmp_path):
    r = _export(str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o"))
    assert r.exit_code == 2 and "checkpoint not found" in r.output and "Traceback" not in r.output


def test_control_out_of_range(ckpts, tmp_path):
    r = _export(str(ckpts["token-vit-tiny"]), "--out", str(tmp_path / "o"), "--budget", "1.5")
    assert r.exit_code == 2 and "'budget'" in r.output and "outside" in r.output
    r = _export(str(ckpts["token-vit-tiny"]), "--out", str(tmp_path / "o"), "--depth", "99")
    assert r.exit_code == 2 and "'depth'" in r.output


def test_control_the_model_lacks(ckpts, tmp_path):
    r = _export(str(ckpts["vit-tiny"]), "--out", str(tmp_path / "o"), "--budget", "0.5")
    assert r.exit_code == 2 and "does not exist" in r.output


def test_unknown_target(ckpts, tmp_path):
    r = _export(str(ckpts["vit-tiny"]), "--out", str(tmp_path / "o"), "--targets", "jetson-nano-2gb")
    assert r.exit_code == 2 and "unknown target" in r.output and "jetson-orin-nano" in r.output


def test_bad_options(ckpts, tmp_path):
    assert _export(str(ckpts["vit-tiny"]), "--out", str(tmp_path / "o"), "--precision", "int8").exit_code == 2
    assert _export(str(ckpts["vit-tiny"]), "--out", str(tmp_path / "o"), "--batch", "zero").exit_code == 2
    r = _export(str(ckpts["vit-tiny"]), "--out", str(tmp_path / "o"), "--opset", "11")
    assert r.exit_code == 2 and "opset 11" in r.output


@pytest.mark.slow
def test_static_export_freezes_budget_into_a_constant_k(ckpts, tmp_path):
    out = tmp_path / "static"
    r = _export(str(ckpts["token-vit-tiny"]), "--out", str(out), "--static", "--budget", "0.25",
                "--batch", "4", "--targets", "jetson-orin-nano")
    assert r.exit_code == 0, r.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["frozen"]["encoder"]["budget"] == 0.25 and m["controls"]["encoder"] == {}  # --static: all frozen
    assert m["export"]["dynamic"] is False and m["export"]["batch"] == 4
    enc_in = m["graphs"]["encoder"]["inputs"]
    assert [i["name"] for i in enc_in] == ["image"] and enc_in[0]["shape"][0] == 4
    k = 4 + int(load_preset("token-vit-tiny").class_token)  # ceil(0.25 * 16) patches (+ class token)
    assert m["graphs"]["encoder"]["outputs"][1]["shape"] == [4, k]
    assert m["validation"]["ok"] and m["validation"]["batches"] == [4]
    rep = audit_model(out / "encoder.onnx", "10.3")
    assert rep.ok and not any("budget" in w.reason for w in rep.warnings)  # K no longer comes from an input
    assert "validation: PASS" in r.output


@pytest.mark.slow
def test_failed_validation_writes_invalid_manifest_and_exits_1(ckpts, tmp_path, monkeypatch):
    import edgesc.export.validate as val

    monkeypatch.setattr(val, "FP32_TOL", 0.0)  # no export is bit-exact: every float output now "fails"
    out = tmp_path / "bad"
    r = _export(str(ckpts["vit-tiny"]), "--out", str(out), "--targets", "server-gpu")
    assert r.exit_code == 1, r.output
    assert (out / "manifest.invalid.json").is_file() and not (out / "manifest.json").exists()
    bad = json.loads((out / "manifest.invalid.json").read_text())
    assert bad["validation"]["ok"] is False and bad["validation"]["failures"]
    r = runner.invoke(app, ["compile", str(out), "--target", "server-gpu"])
    assert r.exit_code == 2 and "manifest.invalid.json" in r.output
