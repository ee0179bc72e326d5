"""Bad input to `edgesc export` is refused before any work: a file in the way of --out, an empty --targets list."""
from __future__ import annotations

from typer.testing import CliRunner

from edgesc.cli import app


def test_export_out_through_a_file_is_refused_first(tmp_path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    ckpt = tmp_path / "missing.pt"  # never reached: the --out check comes first
    res = CliRunner().invoke(app, ["export", str(ckpt), "--out", str(blocker / "x")])
    assert res.exit_code == 2, res.output
    assert "afile" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["export", str(ckpt), "--out", str(blocker)])
    assert res.exit_code == 2 and "not a folder" in res.output, res.output


def test_export_empty_target_list_is_refused(tmp_path) -> None:
    res = CliRunner().invoke(app, ["export", str(tmp_path / "c.pt"), "--out", str(tmp_path / "o"), "--targets", ","])
    assert res.exit_code == 2, res.output
    assert "names no target" in res.output
