#!/usr/bin/env python3
"""A device loop: images in, ESC1 packets out, with the (budget, ratio) of every frame chosen by the Lyapunov
drift-plus-penalty controller of paper 001 (Alg. 2) from the link's SNR.

Torch-free on purpose: it imports only ``edgesc_runtime``, numpy and the standard library (Pillow or
matplotlib, when installed, to read PNG/JPEG; ``.npy`` images always work). This is the code a device runs.

    python examples/device_loop.py EXPORT_DIR IMAGES_DIR --proxy proxy.json --bound 0.3 \\
        --snr-trace normal:10,4 --out packets/

- ``EXPORT_DIR``: an ``edgesc export`` directory (manifest.json + encoder.onnx).
- ``IMAGES_DIR``: PNG/JPEG/.npy files, in name order; each is converted to RGB (or gray), centre-cropped to a
  square and resized to the model's image size. A ``.npy`` file holds one [C,H,W] / [H,W,C] image or a stack
  [N,C,H,W] of them (uint8 0..255 or float 0..1).
- ``--snr-trace``: a CSV file with one SNR (dB) per frame (the column ``snr_db`` if there is a header, else the
  first column; cycled when shorter than the frame count), or ``normal:MEAN,STD`` (one draw per frame).
- ``--proxy``: the proxy table (JSON, ``edgesc profile`` writes one; format in ``edgesc_runtime.controller``).
  Its ``ratio_index`` (or else ``symbols``, complex symbols per token) maps its ratio entries to the model's
  ratio levels; a table with only ``ratios`` must list one entry per ratio level of the model, in order.
- ``--bound``: the long-term average symbol ratio γ̄ (001 Eq. 10); ``--V`` and ``--mu`` the controller's
  weights (001 Eq. 11-13).

Writes ``OUT/frame_NNNNNN.esc1`` (one packet per frame; ``--fragments`` writes one packet per token instead,
``frame_NNNNNN_tKKK.esc1``) and ``OUT/device_log.jsonl`` (per frame: SNR, chosen budget and ratio, queue,
K, bytes, encode time).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from edgesc_runtime import Encoder, RuntimeErrorBase
from edgesc_runtime.controller import LyapunovController, ProxyTable
from edgesc_runtime.packet import encode_packet, split_packets

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".npy")


class LoopError(Exception):
    """A bad input of this example (file, trace, table); printed as one line, exit code 2."""


# ---- images -----------------------------------------------------------------------------------------------
def _read_raster(path: Path) -> np.ndarray:
    """HWC array of one PNG/JPEG: Pillow if installed, else matplotlib (PNG; JPEG needs Pillow anyway)."""
    try:
        from PIL import Image
    except ImportError:
        Image = None
    if Image is not None:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB"))
    try:
        import matplotlib.image as mpimg
    except ImportError:
        raise LoopError(f"{path}: reading {path.suffix} needs Pillow or matplotlib (or use .npy images)") from None
    return np.asarray(mpimg.imread(path))


def _to_chw(arr: np.ndarray, where: str) -> np.ndarray:
    """uint8/float image (HW, HWC or CHW) → float32 CHW in [0, 1]."""
    a = np.asarray(arr)
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    elif a.dtype.kind == "f":
        a = a.astype(np.float32)
        if a.size and a.max() > 1.0:
            a = a / 255.0
    else:
        raise LoopError(f"{where}: unsupported image dtype {a.dtype}")
    if a.ndim == 2:
        a = a[None]
    elif a.ndim == 3 and a.shape[-1] in (1, 3, 4) and a.shape[0] not in (1, 3, 4):
        a = a.transpose(2, 0, 1)
    if a.ndim != 3 or a.shape[0] not in (1, 3, 4):
        raise LoopError(f"{where}: expected an image [H,W], [H,W,C] or [C,H,W], got shape {list(arr.shape)}")
    if a.shape[0] == 4:
        a = a[:3]  # drop alpha
    return np.clip(a, 0.0, 1.0)


def fit_image(chw: np.ndarray, channels: int, size: int) -> np.ndarray:
    """Centre-crop to a square and resize (box filter when shrinking by an integer factor, else nearest) to
    ``size``; convert gray ↔ RGB to ``channels``."""
    c, h, w = chw.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    x = chw[:, top:top + s, left:left + s]
    if s != size:
        if s % size == 0:
            f = s // size
            x = x.reshape(c, size, f, size, f).mean(axis=(2, 4))
        else:
            rows = (np.arange(size) * s / size).astype(int)
            x = x[:, rows][:, :, rows]
    if x.shape[0] != channels:
        if channels == 3 and x.shape[0] == 1:
            x = np.repeat(x, 3, axis=0)
        elif channels == 1 and x.shape[0] == 3:
            x = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
        else:
            raise LoopError(f"cannot convert a {x.shape[0]}-channel image to {channels} channels")
    return np.ascontiguousarray(x, dtype=np.float32)


def load_images(folder: Path, channels: int, size: int) -> list[tuple[str, np.ndarray]]:
    """(name, CHW float32) for every image file in ``folder`` (name order)."""
    if not folder.is_dir():
        raise LoopError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise LoopError(f"no {'/'.join(IMAGE_SUFFIXES)} files in {folder}")
    out: list[tuple[str, np.ndarray]] = []
    for p in files:
        if p.suffix.lower() == ".npy":
            try:
                arr = np.load(p, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise LoopError(f"{p}: not a readable .npy array ({exc})") from None
            stack = arr if arr.ndim == 4 else arr[None]
            for i, img in enumerate(stack):
                out.append((f"{p.stem}_{i}" if arr.ndim == 4 else p.stem, fit_image(_to_chw(img, str(p)), channels, size)))
        else:
            try:
                raster = _read_raster(p)
            except LoopError:
                raise
            except Exception as exc:  # Pillow/matplotlib raise many types for corrupt files
                raise LoopError(f"{p}: cannot read image ({type(exc).__name__}: {exc})") from None
            out.append((p.stem, fit_image(_to_chw(raster, str(p)), channels, size)))
    return out


# ---- SNR trace --------------------------------------------------------------------------------------------
def snr_trace(spec: str, frames: int, seed: int) -> np.ndarray:
    """``normal:MEAN,STD`` → seeded draws; otherwise a CSV file (cycled to ``frames`` values)."""
    if spec.startswith("normal:"):
        try:
            mean, std = (float(v) for v in spec[len("normal:"):].split(","))
        except ValueError:
            raise LoopError(f"--snr-trace {spec!r}: expected normal:MEAN,STD") from None
        if not std >= 0:
            raise LoopError(f"--snr-trace {spec!r}: STD must be >= 0")
        return np.random.default_rng(seed).normal(mean, std, size=frames)
    path = Path(spec)
    if not path.is_file():
        raise LoopError(f"--snr-trace: {spec!r} is neither normal:MEAN,STD nor an existing CSV file")
    values: list[float] = []
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise LoopError(f"{path}: empty SNR trace")
    col = 0
    start = 0
    try:
        float(rows[0][0])
    except (ValueError, IndexError):
        header = [h.strip() for h in rows[0]]
        col = header.index("snr_db") if "snr_db" in header else 0
        start = 1
    for n, row in enumerate(rows[start:], start=start + 1):
        if not row or not "".join(row).strip():
            continue
        try:
            values.append(float(row[col]))
        except (ValueError, IndexError):
            raise LoopError(f"{path}:{n}: not a number: {row!r}") from None
    if not values or not np.isfinite(values).all():
        raise LoopError(f"{path}: the SNR trace needs finite numbers")
    return np.resize(np.asarray(values, dtype=np.float64), frames)


# ---- controller → model controls --------------------------------------------------------------------------
def ratio_levels(table_raw: dict, symbols_per_token: tuple[int, ...]) -> list[int]:
    """Model ratio index of each of the table's ratio entries: its ``ratio_index`` list (``edgesc profile``
    writes one), else its ``symbols`` matched to the model's, else positional."""
    R = len(symbols_per_token)
    if "ratio_index" in table_raw:
        idx = [int(r) for r in table_raw["ratio_index"]]
        if any(not 0 <= r < R for r in idx):
            raise LoopError(f"proxy table ratio_index {idx} outside the model's {R} ratio levels")
        return idx
    if "symbols" in table_raw:
        out = []
        for s in table_raw["symbols"]:
            if int(s) not in symbols_per_token:
                raise LoopError(f"proxy table has S={s} symbols per token; the model has {list(symbols_per_token)}")
            out.append(symbols_per_token.index(int(s)))
        return out
    n = len(table_raw.get("ratios", []))
    if n != len(symbols_per_token):
        raise LoopError(f"proxy table lists {n} ratios, the model has {len(symbols_per_token)} ratio levels "
                        f"({list(symbols_per_token)} symbols per token); give the table 'symbols' instead")
    return list(range(n))


def check_out_dir(out: Path) -> None:
    """``--out`` must be a folder or creatable: not a file, not under a file (checked before any work).

    A copy of ``edgesc.bench.inputs.check_output_dir``: this script must not import edgesc (nor torch)."""
    if out.exists():
        if not out.is_dir():
            raise LoopError(f"--out {out}: exists and is not a folder")
        return
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise LoopError(f"--out {out}: {parent} is a file, not a folder")
            break


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export_dir", type=Path)
    ap.add_argument("images", type=Path)
    ap.add_argument("--proxy", type=Path, required=True, help="proxy table JSON (budget x ratio x SNR accuracy)")
    ap.add_argument("--snr-trace", default="normal:10,3", help="CSV file or normal:MEAN,STD (default %(default)s)")
    ap.add_argument("--bound", type=float, required=True, help="long-term average symbol ratio bound")
    ap.add_argument("--V", type=float, default=1.0, help="accuracy weight V (001 Eq. 13)")
    ap.add_argument("--mu", type=float, default=1.0, help="queue step size mu (001 Eq. 11)")
    ap.add_argument("--out", type=Path, required=True, help="output folder for packets and device_log.jsonl")
    ap.add_argument("--frames", type=int, default=None, help="frames to send (default: one per image)")
    ap.add_argument("--fragments", action="store_true", help="one packet per token (for lossy links)")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        return run(args)
    except (LoopError, RuntimeErrorBase) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    check_out_dir(args.out)
    enc = Encoder(args.export_dir, backend="onnxruntime", threads=args.threads)
    m = enc.model
    images = load_images(args.images, m.channels, m.image_size)
    frames = args.frames if args.frames is not None else len(images)
    if frames < 1:
        raise LoopError("--frames must be >= 1")
    if not args.proxy.is_file():
        raise LoopError(f"proxy table not found: {args.proxy}")
    try:
        raw = json.loads(args.proxy.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LoopError(f"{args.proxy}: not valid JSON ({exc})") from None
    table = ProxyTable.load(raw)
    levels = ratio_levels(raw, m.symbols_per_token)
    controller = LyapunovController(table, bound=args.bound, V=args.V, mu=args.mu)
    trace = snr_trace(args.snr_trace, frames, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    takes = set(enc.control_names)
    total_bytes = 0
    gammas: list[float] = []
    with (args.out / "device_log.jsonl").open("w") as log:
        for t in range(frames):
            name, img = images[t % len(images)]
            snr = float(trace[t])
            choice = controller.step(snr)
            ratio = levels[choice.ratio_index]
            kw: dict = {"snr_db": snr}
            if "budget" in takes:
                kw["budget"] = choice.budget
            elif abs(choice.budget - float(enc.resolve_controls({})[1]["budget"])) > 1e-6:
                raise LoopError(f"the proxy table chooses budget {choice.budget}, but this model has a fixed budget")
            if "ratio" in takes or ratio != 0:
                kw["ratio"] = ratio
            t0 = time.perf_counter_ns()
            res = enc.encode(img[None], **kw)
            encode_ms = (time.perf_counter_ns() - t0) / 1e6
            controls = {k: res.controls.get(k) for k in ("budget", "depth", "width", "snr_db", "ratio")}
            if args.fragments:
                packets = split_packets(res.symbols[0], res.token_index[0], m.hash, controls, frame=t)
                for k, pk in enumerate(packets):
                    (args.out / f"frame_{t:06d}_t{k:03d}.esc1").write_bytes(pk)
                nbytes = sum(len(pk) for pk in packets)
            else:
                pk = encode_packet(res.symbols[0], res.token_index[0], m.hash, controls, frame=t)
                (args.out / f"frame_{t:06d}.esc1").write_bytes(pk)
                nbytes = len(pk)
            total_bytes += nbytes
            gammas.append(choice.gamma)
            log.write(json.dumps({"frame": t, "image": name, "snr_db": snr, "budget": choice.budget,
                                  "ratio": ratio, "gamma": choice.gamma, "proxy_accuracy": choice.accuracy,
                                  "queue": choice.queue, "tokens": res.tokens, "symbols": res.symbols_per_image,
                                  "bytes": nbytes, "encode_ms": encode_ms,
                                  "encoder_flops": int(res.flops[0])}) + "\n")
    print(f"{frames} frames -> {args.out}: {total_bytes} bytes, mean symbol ratio {np.mean(gammas):.4f} "
          f"(bound {args.bound}), final queue {controller.queue:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
