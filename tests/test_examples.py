"""examples/device_loop.py and examples/server_decode.py in subprocesses, on the session's tiny exported model
(tests/bench_tiny.py) with a proxy table measured by ``edgesc profile`` on its checkpoint. The device loop must
not import torch (nor edgesc): it is what a device runs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import bench_tiny  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
DEVICE = ROOT / "examples" / "device_loop.py"
SERVER = ROOT / "examples" / "server_decode.py"

# Runs a script as __main__ and reports which heavy modules it imported (after it finished).
_PROBE = """
import json, runpy, sys
sys.argv = [sys.argv[1]] + sys.argv[2:]
code = 0
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exc:
    code = exc.code or 0
mods = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "edgesc", "onnx"))
print("PROBE " + json.dumps({"code": code, "modules": mods}))
sys.exit(code)
"""


def _run(script: Path, *args: str | Path) -> tuple[subprocess.CompletedProcess, dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(script), *map(str, args)], capture_output=True,
                          text=True, timeout=300, env=env, cwd=ROOT)
    probe = next((json.loads(line[6:]) for line in proc.stdout.splitlines() if line.startswith("PROBE ")), {})
    return proc, probe


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    from PIL import Image

    from edgesc.data import load_dataset
    from edgesc.tokens.profile import run_profile

    export = bench_tiny.export_dir(tmp_path_factory)
    ckpt = bench_tiny.checkpoint(tmp_path_factory)
    root = tmp_path_factory.mktemp("examples")
    images = root / "images"
    images.mkdir()
    ds = load_dataset("photos32", split="test")
    for i in range(3):
        arr = (np.asarray(ds[i * 7][0]).transpose(1, 2, 0) * 255).round().astype(np.uint8)
        Image.fromarray(arr).save(images / f"img{i}.png")
    big = np.kron(np.asarray(ds[30][0]).transpose(1, 2, 0), np.ones((2, 2, 1)))  # 64x64: resized by the loop
    Image.fromarray((big * 255).round().astype(np.uint8)).save(images / "img3.jpg", quality=95)
    np.save(images / "img4.npy", np.asarray(ds[40][0], dtype=np.float32))
    proxy = root / "proxy.json"
    run_profile(ckpt, "photos32", proxy, budgets="0.25,0.5,1", snr_db="0,10,20", images=8, batch_size=8)
    (root / "trace.csv").write_text("snr_db\n" + "\n".join(str(v) for v in (2, 4, 6, 8, 10, 12, 14, 16)) + "\n")
    return {"export": export, "images": images, "proxy": proxy, "root": root, "trace": root / "trace.csv"}


def test_device_loop_is_torch_free_and_writes_packets(setup: dict[str, Path]) -> None:
    out = setup["root"] / "packets"
    proc, probe = _run(DEVICE, setup["export"], setup["images"], "--proxy", setup["proxy"], "--bound", "0.02",
                       "--snr-trace", setup["trace"], "--frames", "8", "--out", out, "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert probe["code"] == 0
    assert probe["modules"] == [], f"the device loop imported {probe['modules']}"
    packets = sorted(out.glob("frame_*.esc1"))
    assert len(packets) == 8
    log = [json.loads(line) for line in (out / "device_log.jsonl").read_text().splitlines()]
    assert [e["frame"] for e in log] == list(range(8))
    assert [e["snr_db"] for e in log] == [2, 4, 6, 8, 10, 12, 14, 16]
    table = json.loads(setup["proxy"].read_text())
    from edgesc_runtime.packet import packet_size

    for e, p in zip(log, packets):
        assert e["budget"] in table["budgets"]
        assert e["bytes"] == p.stat().st_size == packet_size(e["tokens"], e["symbols"] // e["tokens"])
    # The queue of 001 Eq. 11 evolves with the chosen pairs: Z(t+1) = max(0, Z(t) + mu (gamma(t) - bound)).
    for a, b in zip(log, log[1:]):
        assert b["queue"] == pytest.approx(max(0.0, a["queue"] + (a["gamma"] - 0.02)))


def test_server_decodes_the_packets_to_images(setup: dict[str, Path]) -> None:
    out = setup["root"] / "packets_srv"
    proc, _ = _run(DEVICE, setup["export"], setup["images"], "--proxy", setup["proxy"], "--bound", "0.05",
                   "--snr-trace", "normal:10,3", "--out", out, "--fragments")
    assert proc.returncode == 0, proc.stderr
    dec = setup["root"] / "decoded"
    proc, probe = _run(SERVER, setup["export"], out, "--out", dec, "--erasure", "0.25", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    assert "torch" not in {m.split(".")[0] for m in probe["modules"]}
    log = [json.loads(line) for line in (dec / "server_log.jsonl").read_text().splitlines()]
    dev = [json.loads(line) for line in (out / "device_log.jsonl").read_text().splitlines()]
    assert [e["frame"] for e in log] == [e["frame"] for e in dev] == list(range(5))  # one frame per image file
    from PIL import Image

    for e, d in zip(log, dev):
        assert e["tokens_sent"] == d["tokens"] and 0 <= e["tokens_received"] <= e["tokens_sent"]
        img = np.asarray(Image.open(dec / e["file"]))
        assert img.shape == (32, 32, 3)
    assert sum(e["tokens_received"] for e in log) < sum(e["tokens_sent"] for e in log)  # erasures happened


def test_bad_inputs_exit_2_with_one_line(setup: dict[str, Path], tmp_path: Path) -> None:
    proc, _ = _run(DEVICE, setup["export"], tmp_path / "none", "--proxy", setup["proxy"], "--bound", "0.1",
                   "--out", tmp_path / "o")
    assert proc.returncode == 2 and "image folder not found" in proc.stderr and "Traceback" not in proc.stderr
    proc, _ = _run(DEVICE, setup["export"], setup["images"], "--proxy", setup["proxy"], "--bound", "0.1",
                   "--snr-trace", "normal:10", "--out", tmp_path / "o")
    assert proc.returncode == 2 and "normal:MEAN,STD" in proc.stderr
    bad = tmp_path / "pk"
    bad.mkdir()
    (bad / "frame_000000.esc1").write_bytes(b"ESC1 not a packet")
    proc, _ = _run(SERVER, setup["export"], bad, "--out", tmp_path / "d")
    assert proc.returncode == 2 and "packet" in proc.stderr and "Traceback" not in proc.stderr
