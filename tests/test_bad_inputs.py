"""Bad input everywhere a user can give it: configs, training options, checkpoints, eval options, data, runtime
manifests/graphs/controls/arrays, packets, output folders. Each must end in the project's error class (the CLI:
``error: …`` on one line, exit 2; exit 1 for a job that failed on valid input), never a traceback from deep
inside, and never lost data (an earlier run in ``--out`` survives a new run).

Mostly in-process (typer's CliRunner, the Python APIs); three real subprocesses check what a shell user sees.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

sys.path.insert(0, os.path.dirname(__file__))
from test_runtime_graphs import build_model_dir, rewrite_manifest  # noqa: E402
from train_tiny import TINY, tiny_config  # noqa: E402

from edgesc.cli import app  # noqa: E402
from edgesc.config import load_config, load_preset  # noqa: E402
from edgesc.errors import CheckpointError, ConfigError, DataError, EdgescError, JobFailed  # noqa: E402
from edgesc.train.checkpoint import load_checkpoint, read_checkpoint  # noqa: E402
from edgesc.train.options import OptionError, TrainOptions  # noqa: E402
from edgesc.train.trainer import prepare_out, run_training  # noqa: E402
from edgesc_runtime import (BackendUnavailable, ControlError, Decoder, Encoder, InputError,  # noqa: E402
                            ManifestError, ModelMismatchError)
from edgesc_runtime import packet as pk  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _cli(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def _assert_error(result, *fragments: str, code: int = 2) -> str:
    """Exit ``code``, ``error:`` on ONE line naming the problem, no traceback, no uncaught exception."""
    text = result.output
    assert result.exit_code == code, text
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in text, text
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def _opts(cfg: Path, out: Path, **kw) -> TrainOptions:
    base = dict(model=str(cfg), out=out, steps=2, batch_size=2, device="cpu", progress=False, eval_batches=0)
    base.update(kw)
    return TrainOptions(**base)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_config(tmp_path_factory.mktemp("cfg"))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny: Path) -> Path:
    """A real tiny checkpoint (two steps)."""
    res = run_training(_opts(tiny, tmp_path_factory.mktemp("run") / "run"))
    return Path(res.checkpoint)


# ---- configs / presets ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("edit, fragment", [
    (lambda t: t.replace("heads = 2", "heads = 0"), "heads must be a positive integer, got 0"),
    (lambda t: t.replace("heads = 2", "heads = -2"), "heads must be a positive integer"),
    (lambda t: t.replace("embed_dim = 32", "embed_dim = 0"), "embed_dim must be a positive integer"),
    (lambda t: t.replace("mlp_ratio = 2", "mlp_ratio = 0"), "mlp_ratio must be a positive integer"),
    (lambda t: t.replace("heads = 2", "heads = 3"), "embed_dim 32 must be divisible by heads 3"),
    (lambda t: t.replace("image_size = 32", "image_size = 30"), "image_size 30 must be a positive multiple of patch_size 8"),
    (lambda t: t.replace("snr_db = [0.0, 20.0]", "snr_db = [nan, 20.0]"), "train.snr_db must be a finite number"),
    (lambda t: t.replace("threshold = 0.99", "threshold = inf"), "depth.threshold must be a finite number"),
    (lambda t: t.replace("batch_size = 8", "batch_size = 0"), "train.batch_size must be >= 1"),
    (lambda t: t.replace("steps = 40", "steps = -1"), "train.steps must be >= 1"),
    (lambda t: t.replace("warmup_steps = 4", "warmup_steps = -4"), "train.warmup_steps must be >= 0"),
    (lambda t: t.replace("[coder]", "[coder]\nhidden = -1"), "coder.hidden must be >= 0"),
    (lambda t: t.replace("threshold = 0.99", "threshold = 0.99\ntau = -1.0"), "depth.tau >= 0"),
    (lambda t: t.replace("lr = 2e-3", "lr = 2e-3\nweight_decay = -1.0"), "train.weight_decay must be >= 0"),
    (lambda t: t.replace("lr = 2e-3", "lr = 0.0"), "train.lr must be positive"),
    (lambda t: t + "\nerasure = 1.0\n", "train.erasure must be in [0, 1)"),
    (lambda t: t.replace("embed_dim = 32", 'embed_dim = "32"'), "embed_dim must be an integer"),
    (lambda t: t + "\nfoo = 1\n", "unknown key(s) in [train]: foo"),
    (lambda t: "name = \n[x", "not valid TOML"),
    (lambda t: "", "is empty"),
])
def test_bad_config_files_raise_config_error_naming_file_and_key(tmp_path: Path, edit, fragment: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(edit(TINY))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert fragment in msg and str(path) in msg and "\n" not in msg, msg


def test_config_paths_that_are_not_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_preset(tmp_path)
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        load_preset("nope")


def test_cli_prints_brackets_literally_and_on_one_line(tmp_path: Path) -> None:
    """rich markup used to swallow ``[train]`` and ``[low, high]``, and wrap long messages at 80 columns."""
    path = tmp_path / "bad.toml"
    path.write_text(TINY + "\nfoo = 1\n")
    line = _assert_error(_cli("info", path), "unknown key(s) in [train]: foo", "known: data, batch_size")
    assert len(line) > 80  # long, and still one line
    path.write_text(TINY.replace("snr_db = [0.0, 20.0]", "snr_db = [0.0, 1.0, 2.0]"))
    _assert_error(_cli("info", path), "train.snr_db must be [low, high] with low <= high, got [0.0, 1.0, 2.0]")


# ---- training options and output folders -------------------------------------------------------------------
@pytest.mark.parametrize("args, fragment", [
    (["--snr-db", "3:x"], "'x' is not a number"),
    (["--snr-db", "5:1"], "low end 5 is above high end 1"),
    (["--snr-db", ""], "--snr-db ''"),
    (["--snr-db", "1:2:3"], "expected LO:HI"),
    (["--steps", "0"], "--steps 0"),
    (["--batch-size", "-3"], "--batch-size -3"),
    (["--lr", "0"], "--lr 0.0"),
    (["--lr", "nan"], "--lr nan"),
    (["--stage", "sideways"], "--stage 'sideways'"),
    (["--channel", "rician"], "--channel 'rician'"),
    (["--device", "tpu"], "--device 'tpu'"),
    (["--p-depth-cap", "2"], "--p-depth-cap 2.0: must be a probability"),
    (["--p-width-scale", "nan"], "--p-width-scale nan"),
    (["--eval-batches", "-1"], "--eval-batches -1"),
    (["--stage", "joint", "--eval-batches", "0"], "--stage joint evaluates every configuration"),
    (["--data", "photos32:x"], "unknown data spec 'photos32:x'"),
    (["--data", "folder:"], "needs a path"),
    (["--data", "folder:/no/such/dir"], "/no/such/dir"),
])
def test_train_rejects_bad_options_before_writing(tmp_path: Path, tiny: Path, args: list[str], fragment: str) -> None:
    out = tmp_path / "out"
    _assert_error(_cli("train", "--model", tiny, "--out", out, "--no-progress", *args), fragment)
    assert not out.exists() or not any(out.iterdir())


def test_train_cuda_without_gpu(tmp_path: Path, tiny: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    _assert_error(_cli("train", "--model", tiny, "--out", tmp_path / "o", "--device", "cuda"), "no CUDA device")
    assert not (tmp_path / "o").exists()


def test_out_folder_through_a_file_or_a_file(tmp_path: Path, tiny: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    _assert_error(_cli("train", "--model", tiny, "--out", afile / "sub", "--steps", "1"), f"{afile} is a file")
    _assert_error(_cli("train", "--model", tiny, "--out", afile, "--steps", "1"), "exists and is not a folder")
    assert afile.read_text() == "x"


def test_init_bad_files(tmp_path: Path, tiny: Path, ckpt: Path) -> None:
    out = tmp_path / "o"
    base = ["train", "--model", tiny, "--out", out, "--steps", "1", "--no-progress"]
    _assert_error(_cli(*base, "--init", tmp_path / "nope.pt"), "file not found")
    _assert_error(_cli(*base, "--init", tmp_path), "is a folder")
    (tmp_path / "rand.pt").write_bytes(np.random.default_rng(0).bytes(3000))
    _assert_error(_cli(*base, "--init", tmp_path / "rand.pt"), "not a PyTorch checkpoint", "rand.pt")
    data = ckpt.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    _assert_error(_cli(*base, "--init", tmp_path / "trunc.pt"), "truncated", "trunc.pt")
    # a checkpoint of another preset: one error listing the mismatched weights
    big = tmp_path / "big.toml"
    big.write_text(TINY.replace('name = "tiny"', 'name = "big"').replace("embed_dim = 32", "embed_dim = 64"))
    line = _assert_error(_cli("train", "--model", big, "--out", out, "--steps", "1", "--init", ckpt),
                         "holds model 'tiny'", "with another shape (stored vs model)",
                         "encoder.embed.pos (1, 16, 32) vs (1, 16, 64)", "more)")
    assert line.count(" vs ") >= 4
    assert not out.exists() or not any(out.iterdir())


def test_earlier_run_is_refused_kept_or_resumed_never_destroyed(tmp_path: Path, tiny: Path) -> None:
    out = tmp_path / "run"
    base = ["train", "--model", tiny, "--out", out, "--steps", "2", "--batch-size", "2", "--no-progress",
            "--eval-batches", "0", "--device", "cpu"]
    assert _cli(*base).exit_code == 0
    digest = hashlib.sha256((out / "final.pt").read_bytes()).hexdigest()
    _assert_error(_cli(*base, "--seed", "3"), "already holds a training run", "final.pt", "--resume", "--force")
    assert hashlib.sha256((out / "final.pt").read_bytes()).hexdigest() == digest
    res = _cli(*base, "--seed", "3", "--force")
    assert res.exit_code == 0 and "previous-1" in res.output, res.output
    assert hashlib.sha256((out / "previous-1" / "final.pt").read_bytes()).hexdigest() == digest
    assert {p.name for p in (out / "previous-1").iterdir()} == {"final.pt", "last.pt", "log.jsonl"}
    assert (out / "final.pt").exists() and read_checkpoint(out / "final.pt")["step"] == 2
    _assert_error(_cli(*base, "--resume", "--stage", "width"), "is a 'full' stage run", "--stage full")
    assert _cli(*base, "--resume").exit_code == 0  # a finished run resumes to itself


def test_prepare_out_keeps_joint_subfolders_and_numbers_archives(tmp_path: Path) -> None:
    out = tmp_path / "j"
    (out / "width_rho0p2").mkdir(parents=True)
    (out / "width_rho0p2" / "last.pt").write_bytes(b"w")
    (out / "pareto.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OptionError, match=r"width_rho0p2/"):
        prepare_out(out, resume=False, if_exists="refuse")
    assert prepare_out(out, resume=False) == out / "previous-1"
    assert (out / "previous-1" / "width_rho0p2" / "last.pt").read_bytes() == b"w"
    assert (out / "notes.txt").exists() and not (out / "pareto.json").exists()  # only run files move
    (out / "log.jsonl").write_text("")  # a run that died before its first checkpoint: moved aside, not refused
    assert prepare_out(out, resume=False, if_exists="refuse") == out / "previous-2"
    assert (out / "previous-2" / "log.jsonl").exists()
    assert prepare_out(out, resume=True) is None


class _Diverging(nn.Module):
    """A real model whose output turns to NaN: training must stop with JobFailed (exit 1), not a traceback."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args):
        out = self.inner(*args)
        out.output = out.output * float("nan")
        return out


def test_diverging_training_is_a_failed_job(tmp_path: Path, tiny: Path) -> None:
    from edgesc.models import build_model

    with pytest.raises(JobFailed, match=r"loss became nan at step 1 .*lower --lr") as info:
        run_training(_opts(tiny, tmp_path / "d"), model_factory=lambda cfg: _Diverging(build_model(cfg)))
    assert info.value.exit_code == 1


def test_classifier_on_unlabeled_data(tmp_path: Path) -> None:
    _assert_error(_cli("train", "--model", "token-vit-tiny", "--data", "photos32", "--out", tmp_path / "o",
                       "--steps", "1", "--batch-size", "2", "--no-progress", "--device", "cpu"),
                  "is a classifier", "photos32/train is unlabeled")


# ---- checkpoints -----------------------------------------------------------------------------------------------
def _mutated(ckpt: Path, path: Path, edit) -> Path:
    obj = torch.load(ckpt, weights_only=True)
    edit(obj)
    torch.save(obj, path)
    return path


def test_bad_checkpoints_raise_checkpoint_error(tmp_path: Path, ckpt: Path) -> None:
    data = ckpt.read_bytes()
    cases: dict[str, tuple[Path, str]] = {}

    def case(name: str, fragment: str, content: bytes | None = None, edit=None) -> None:
        p = tmp_path / f"{name}.pt"
        if edit is not None:
            _mutated(ckpt, p, edit)
        else:
            p.write_bytes(content)
        cases[name] = (p, fragment)

    case("empty", "is empty", b"")
    case("random", "not a PyTorch checkpoint", np.random.default_rng(1).bytes(5000))
    case("truncated", "truncated", data[: int(len(data) * 0.9)])
    case("pickle", "not a PyTorch checkpoint", pickle.dumps({"format": "edgesc-ckpt/1"}))
    case("foreign", "is not an edgesc checkpoint", edit=lambda o: o.pop("format"))
    case("badcfg", "stored config is invalid", edit=lambda o: o["config"].update(heads=0))
    case("missing", "2 missing: decoder.head.proj.weight, decoder.head.proj.bias",
         edit=lambda o: [o["model"].pop(k) for k in ("decoder.head.proj.weight", "decoder.head.proj.bias")])
    case("shape", "encoder.embed.pos (7,) vs (1, 16, 32)", edit=lambda o: o["model"].update({"encoder.embed.pos": torch.zeros(7)}))
    case("notensor", "are not tensors", edit=lambda o: o["model"].update({"encoder.embed.pos": "x"}))
    case("nan", "hold NaN or inf", edit=lambda o: o["model"]["encoder.embed.pos"].fill_(float("nan")))
    case("step", "step must be an integer", edit=lambda o: o.update(step="x"))
    for name, (path, fragment) in cases.items():
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        msg = str(info.value)
        assert fragment in msg and path.name in msg and "\n" not in msg and len(msg) < 400, (name, msg)


# ---- eval options ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, fragment", [
    (["--snr-db", "1,,2"], "empty item"),
    (["--snr-db", "nan"], "not finite"),
    (["--baseline", "ee:0"], "integer >= 1"),
    (["--baseline", "ee:99", "--max-batches", "1"], "only 2 layers"),
    (["--baseline", "sp:1.5"], "must be in [0, 1)"),
    (["--baseline", "sp:x"], "'x' is not a number"),
    (["--baseline", "zz:1"], "expected ee:DEPTH"),
    (["--batch-size", "0"], "--batch-size 0"),
    (["--max-batches", "0"], "--max-batches 0"),
    (["--device", "tpu"], "--device 'tpu'"),
    (["--budget", "0.5", "--max-batches", "1"], "has no token selection"),
])
def test_eval_rejects_bad_options(ckpt: Path, args: list[str], fragment: str) -> None:
    _assert_error(_cli("eval", ckpt, "--no-flops", *args), fragment)


def test_eval_output_paths_checked_before_the_job(tmp_path: Path, ckpt: Path) -> None:
    (tmp_path / "afile").write_text("x")
    _assert_error(_cli("eval", ckpt, "--json", tmp_path / "afile" / "r.json"), "is a file, not a folder")
    _assert_error(_cli("eval", ckpt, "--plot", tmp_path), "is a folder")
    _assert_error(_cli("eval", ckpt, "--plot", tmp_path / "p.xyz"), "unsupported file type '.xyz'")


# ---- data --------------------------------------------------------------------------------------------------------
def _png(path: Path, seed: int = 0) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)


def test_folder_data_problems(tmp_path: Path) -> None:
    from edgesc.data import load_dataset

    root = tmp_path / "tree"
    for i in range(5):
        _png(root / "cat" / f"{i}.png", i)
    (root / "cat" / "notes.txt").write_text("not an image")  # ignored: not an image extension
    assert len(load_dataset(f"folder:{root}", "train")) == 4
    (root / "cat" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    ds = load_dataset(f"folder:{root}", "train")
    with pytest.raises(DataError, match=r"cannot read image .*0\.png"):
        [ds[i] for i in range(len(ds))]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images for split 'train'"):
        load_dataset(f"folder:{tmp_path / 'empty'}", "train")


def test_cifar_archive_problems(tmp_path: Path) -> None:
    from edgesc.data import load_dataset

    batch = pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 4}, protocol=2)
    arc = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(arc, "w:gz") as tar:
        for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "test_batch"):
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(batch)
            tar.addfile(info, io.BytesIO(batch))
    with pytest.raises(DataError, match="has no member cifar-10-batches-py/data_batch_5"):
        load_dataset(f"cifar10:{arc}", "train")
    assert len(load_dataset(f"cifar10:{arc}", "test")) == 4
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(DataError) as info:
        load_dataset(f"cifar10:{junk}", "train")
    assert "not a tar" in str(info.value) and "\n" not in str(info.value)


# ---- runtime: manifest, graphs, controls, arrays, packets ------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_model_dir(tmp_path_factory.mktemp("rt"))


def _edited(tmp_path: Path, edit) -> Path:
    return rewrite_manifest(build_model_dir(tmp_path / "m"), edit)


@pytest.mark.parametrize("edit, error, fragment", [
    (lambda m: m["controls"]["encoder"]["budget"].update(levels=3), ManifestError, "levels must be a list"),
    (lambda m: m["controls"]["encoder"]["budget"].update(min=float("nan")), ManifestError, "finite number or null"),
    (lambda m: m["flops"]["encoder"].update(specials="x"), ManifestError, "flops.encoder.specials"),
    (lambda m: m["flops"]["decoder"].update(halting="yes"), ManifestError, "flops.decoder.halting"),
    (lambda m: m["graphs"]["encoder"].update(file="../encoder.onnx"), ManifestError, "in the manifest's folder"),
    (lambda m: m["model"].update(image_size=64, num_patches=64), ModelMismatchError, "image has shape ['?', 3, 32, 32], the manifest's model needs ['?', 3, 64, 64]"),
    (lambda m: m["model"].update(encoder_layers=5), ModelMismatchError, "layer_tokens has shape ['?', 4], the manifest's model needs ['?', 5]"),
])
def test_bad_manifests(tmp_path: Path, edit, error: type, fragment: str) -> None:
    path = _edited(tmp_path, edit)
    with pytest.raises(error) as info:
        Encoder(path, backend="onnxruntime", threads=1)
    assert fragment in str(info.value), str(info.value)


def test_truncated_graph_and_bad_threads(tmp_path: Path) -> None:
    path = build_model_dir(tmp_path / "m")
    onnx_bytes = (path / "encoder.onnx").read_bytes()
    (path / "encoder.onnx").write_bytes(onnx_bytes[:200])
    with pytest.raises(ModelMismatchError, match="sha256"):
        Encoder(path)
    with pytest.raises(ModelMismatchError, match="ONNX Runtime cannot load encoder.onnx"):
        Encoder(path, verify_hashes=False)
    with pytest.raises(BackendUnavailable, match="threads must be a non-negative int"):
        Encoder(build_model_dir(tmp_path / "n"), backend="onnxruntime", threads=-1)


def test_runtime_arrays_and_controls(model_dir: Path) -> None:
    enc = Encoder(model_dir, backend="onnxruntime", threads=1)
    dec = Decoder(model_dir, backend="onnxruntime", threads=1)
    img = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    with pytest.raises(InputError, match="not a rectangular array"):
        enc.encode([img[0], img[0, :, :16]])
    with pytest.raises(ControlError, match="does not fit float32"):
        enc.encode(img, snr_db=1e39)
    for bad in (float("nan"), float("inf"), "0.5", [0.5], True):
        with pytest.raises(ControlError):
            enc.encode(img, budget=bad)
    res = enc.encode(img)
    huge = res.token_index.astype(np.uint64) + np.uint64(2**63)  # used to wrap to negative in the message
    with pytest.raises(InputError, match=r"got \[9223372036854775808"):
        dec.decode(res.symbols, huge)
    with pytest.raises(InputError, match="not a rectangular array"):
        dec.decode([res.symbols[0]], [[[0, 1], [2]]])


def test_packet_control_ranges_and_argument_types() -> None:
    h = "ab" * 32
    sym = np.zeros((2, 4, 2), np.float32)
    idx = np.array([0, 1])
    good = pk.encode_packet(sym, idx, h, {"budget": 0.5, "width": 1.0})
    assert pk.parse_packet(good, h).controls["budget"] == 0.5
    with pytest.raises(pk.PacketError, match="budget=1.5 is outside"):
        pk.encode_packet(sym, idx, h, {"budget": 1.5})
    with pytest.raises(pk.PacketError, match="frame must be an integer"):
        pk.encode_packet(sym, idx, h, frame="1")
    for offset, value in ((14, -1.0), (19, 0.0)):  # budget, width with a valid CRC
        raw = bytearray(good)
        raw[offset:offset + 4] = struct.pack("<f", value)
        raw[-4:] = struct.pack("<I", zlib.crc32(bytes(raw[:-4])))
        with pytest.raises(pk.PacketError, match="is outside"):
            pk.parse_packet(bytes(raw), h)


# ---- what a shell user sees (real processes) ---------------------------------------------------------------------
def _shell(*args: object) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("edgesc")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "edgesc"]
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, "COLUMNS": "60"})


@pytest.mark.parametrize("make_args, code, fragment", [
    (lambda d: ["info", d / "bad.toml"], 2, "unknown key(s) in [train]: foo"),
    (lambda d: ["eval", d / "rand.pt"], 2, "not a PyTorch checkpoint"),
    (lambda d: ["train", "--model", "recvit-tiny", "--out", d / "afile" / "x"], 2, "is a file, not a folder"),
])
def test_shell_errors_are_one_stderr_line(tmp_path: Path, make_args, code: int, fragment: str) -> None:
    (tmp_path / "bad.toml").write_text(TINY + "\nfoo = 1\n")
    (tmp_path / "rand.pt").write_bytes(np.random.default_rng(2).bytes(1000))
    (tmp_path / "afile").write_text("x")
    res = _shell(*make_args(tmp_path))
    assert res.returncode == code, res.stderr
    assert "Traceback" not in res.stderr and res.stdout == "", res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], res.stderr


def test_every_user_error_is_an_edgesc_error() -> None:
    for cls in (ConfigError, DataError, CheckpointError, OptionError, JobFailed):
        assert issubclass(cls, EdgescError)
    assert JobFailed.exit_code == 1 and OptionError.exit_code == 2
