"""Bad input to ``edgesc bench``/``quickstart``/``profile``/``viz``/``control-sim`` and the two examples: one
line ``error: …``, exit code 2, before any long work (audit regressions). Runs on the runtime's hand-built
stand-in graphs (tests/test_runtime_graphs.py) and in-process: no training, no export, no subprocess."""
from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from typer.testing import CliRunner

sys.path.insert(0, os.path.dirname(__file__))
from test_runtime_graphs import MODEL_HASH, build_model_dir  # noqa: E402

from edgesc.bench.errors import BenchError  # noqa: E402
from edgesc.bench.inputs import read_images_npy  # noqa: E402
from edgesc.cli.app import app  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> Path:
    return build_model_dir(tmp_path_factory.mktemp("bad_inputs_stand_in"))


@pytest.fixture
def afile(tmp_path: Path) -> Path:
    f = tmp_path / "afile"
    f.write_text("not a folder\n")
    return f


def _one_line_exit_2(res, *needles: str) -> str:
    """The CLI result failed as bad input: exit 2, no traceback, one ``error:`` line naming the problem."""
    text = " ".join(res.output.split())
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and res.exception is None or isinstance(res.exception, SystemExit)
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.output
    for n in needles:
        assert n in text, res.output
    return text


# ---- 1. bench output paths are checked before the bench runs ----------------------------------------------------
def test_bench_output_paths_checked_first(stand_in: Path, afile: Path, tmp_path: Path) -> None:
    t0 = time.perf_counter()
    # --seconds 30 would take minutes if the bench ran before the check
    res = runner.invoke(app, ["bench", str(stand_in), "--seconds", "30", "--json", str(afile / "x.json")])
    _one_line_exit_2(res, "--json", "is a file, not a folder")
    res = runner.invoke(app, ["bench", str(stand_in), "--seconds", "30", "--plot", str(tmp_path)])
    _one_line_exit_2(res, "--plot", "is a folder")
    res = runner.invoke(app, ["bench", str(stand_in), "--seconds", "30", "--plot", str(tmp_path / "DIR")])
    _one_line_exit_2(res, "--plot", "unsupported file type")
    assert time.perf_counter() - t0 < 20
    assert not (tmp_path / "DIR.png").exists()


# ---- 2. bench images: N >= 1, float in [0, 1], uint8 scaled explicitly ------------------------------------------
def test_bench_images_empty_rejected_and_uint8_scaled(stand_in: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.npy"
    np.save(empty, np.zeros((0, 3, 32, 32), np.float32))
    res = runner.invoke(app, ["bench", str(stand_in), "--iters", "1", "--images", str(empty)])
    _one_line_exit_2(res, "holds no images", "N = 0")
    u8 = tmp_path / "u8.npy"
    np.save(u8, np.full((2, 3, 32, 32), 255, np.uint8))
    x, source = read_images_npy(u8)
    assert x.dtype == np.float32 and float(x.max()) == 1.0 and "uint8" in source and "1/255" in source
    wide = tmp_path / "wide.npy"
    np.save(wide, np.full((1, 3, 32, 32), 200.0, np.float32))
    with pytest.raises(BenchError, match=r"\[0, 1\]"):
        read_images_npy(wide)
    res = runner.invoke(app, ["bench", str(stand_in), "--batch", "1", "--iters", "1", "--warmup", "0",
                              "--images", str(u8), "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    assert "uint8 values divided by 255" in res.output
    import json

    assert "uint8" in json.loads((tmp_path / "r.json").read_text())["settings"]["images"]


# ---- 3. estimate overrides must be positive; a bad SNR is named as --snr-db -------------------------------------
@pytest.mark.parametrize("args, msg", [
    (["--estimate", "--device", "jetson", "--target", "jetson-orin-nx", "--peak-gflops", "-1"],
     "--peak-gflops must be a positive number, got -1"),
    (["--estimate", "--device", "jetson", "--target", "jetson-orin-nx", "--bandwidth-gbs", "0"],
     "--bandwidth-gbs must be a positive number, got 0"),
    (["--snr-db", "1000"], "--snr-db: control snr_db=1000.0 is above its maximum"),
])
def test_bench_bad_numbers_named(stand_in: Path, args: list[str], msg: str) -> None:
    res = runner.invoke(app, ["bench", str(stand_in), "--batch", "1", "--iters", "1", *args])
    text = _one_line_exit_2(res, msg)
    assert "--budget/--depth/--width" not in text and "TFLOP/s" not in text


# ---- 4. quickstart --out is checked before training -------------------------------------------------------------
def test_quickstart_out_file_exit_2_before_training(afile: Path) -> None:
    t0 = time.perf_counter()
    res = runner.invoke(app, ["quickstart", "--out", str(afile)])
    _one_line_exit_2(res, "--out", "exists and is not a folder")
    res = runner.invoke(app, ["quickstart", "--out", str(afile / "sub")])
    _one_line_exit_2(res, "--out", "is a file, not a folder")
    assert time.perf_counter() - t0 < 30
    assert afile.read_text() == "not a folder\n"


# ---- 5. profile / viz / control-sim validate up front -----------------------------------------------------------
def test_tokens_commands_validate_up_front(afile: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "never_loaded.pt"  # the checks come before the checkpoint is read
    res = runner.invoke(app, ["profile", str(ckpt), "--data", "photos32", "--out", str(tmp_path / "p.json"),
                              "--batch-size", "0"])
    _one_line_exit_2(res, "--batch-size must be a positive integer, got 0")
    res = runner.invoke(app, ["profile", str(ckpt), "--data", "photos32", "--out", str(afile / "p.json")])
    _one_line_exit_2(res, "--out", "is a file, not a folder")
    res = runner.invoke(app, ["viz", str(ckpt), "--budget", "0.5", "--out", str(afile)])
    _one_line_exit_2(res, "--out", "exists and is not a folder")
    proxy = tmp_path / "never_read.json"
    res = runner.invoke(app, ["control-sim", "--proxy", str(proxy), "--snr", "fixed:10", "--bound", "0.1",
                              "--plot", str(tmp_path)])
    _one_line_exit_2(res, "--plot", "is a folder")
    res = runner.invoke(app, ["control-sim", "--proxy", str(proxy), "--snr", "fixed:10", "--bound", "0.1",
                              "--json", str(afile / "r.json")])
    _one_line_exit_2(res, "--json", "is a file, not a folder")
    from edgesc.errors import EdgescError
    from edgesc.tokens.profile import check_batch_size

    with pytest.raises(EdgescError, match="--batch-size"):
        check_batch_size(-3)


# ---- 6. the examples: --out a file, and a corrupt packet on a lossy link -----------------------------------------
def _example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_example_{name}", ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def test_examples_out_file_exit_2(stand_in: Path, afile: Path, tmp_path: Path, capsys) -> None:
    device, server = _example("device_loop"), _example("server_decode")
    (tmp_path / "pk").mkdir()
    (tmp_path / "pk" / "frame_000000.esc1").write_bytes(b"x")
    for mod, args in ((device, [str(stand_in), str(tmp_path), "--proxy", "p.json", "--bound", "0.1"]),
                      (server, [str(stand_in), str(tmp_path / "pk")])):
        for out, msg in ((afile, "exists and is not a folder"), (afile / "o", "is a file, not a folder")):
            assert mod.main([*args, "--out", str(out)]) == 2
            err = capsys.readouterr().err
            assert err.startswith("error: --out") and msg in err and len(err.strip().splitlines()) == 1


def test_server_skips_a_corrupt_packet_and_names_it(stand_in: Path, tmp_path: Path, capsys) -> None:
    from edgesc_runtime import Encoder
    from edgesc_runtime.packet import encode_frames

    enc = Encoder(stand_in, backend="onnxruntime", threads=1)
    res = enc.encode(np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32), budget=0.5)
    pk = tmp_path / "packets"
    pk.mkdir()
    for t, data in enumerate(encode_frames(res, MODEL_HASH)):
        if t == 1:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])  # a bit error: CRC mismatch
        (pk / f"frame_{t:06d}.esc1").write_bytes(data)
    server = _example("server_decode")
    out = tmp_path / "decoded"
    assert server.main([str(stand_in), str(pk), "--out", str(out), "--channel", "none"]) == 0
    cap = capsys.readouterr()
    assert "skipped frame_000001.esc1: packet CRC mismatch" in cap.err
    assert "2 frames decoded" in cap.out and "skipped 1 of 3" in cap.out
    import json

    log = [json.loads(line) for line in (out / "server_log.jsonl").read_text().splitlines()]
    assert [e["frame"] for e in log] == [0, 2]
    # nothing usable at all: non-zero, one error line naming a file and the reason
    (pk / "frame_000000.esc1").write_bytes(b"ESC1 junk")
    (pk / "frame_000002.esc1").unlink()
    assert server.main([str(stand_in), str(pk), "--out", str(out), "--channel", "none"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "no frame decoded" in err[0] and "frame_000000.esc1" in err[0]
