#!/usr/bin/env python3
"""The server side of ``device_loop.py``: parse ESC1 packets, pass them through a simulated channel, decode.

Torch-free: ``edgesc_runtime``, numpy and the standard library (Pillow or matplotlib, when installed, write
PNGs; otherwise images are saved as ``.npy``).

    python examples/server_decode.py EXPORT_DIR packets/ --out decoded/ [--channel awgn|none] [--erasure 0.1]

Every ``*.esc1`` file in the packet folder is parsed and checked (CRC, model hash, indices); fragments of a
frame (``--fragments`` on the device) are reassembled from whatever arrived. The channel is simulated here at
the SNR each packet records (``--channel awgn``, the default; ``none`` decodes the clean symbols), after an
optional token erasure (``--erasure p``: each token lost with probability p, the decoder fills the gap).
The decoder runs with the ratio of each packet and its own ``--depth``/``--width`` (default: the model's).
Writes ``OUT/frame_NNNNNN.png`` (reconstruction) or ``OUT/predictions.jsonl`` (classification), and
``OUT/server_log.jsonl``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from edgesc_runtime import Decoder, RuntimeErrorBase
from edgesc_runtime.channel import awgn, erasure
from edgesc_runtime.packet import parse_packet, reassemble


class ServerError(Exception):
    """A bad input of this example; printed as one line, exit code 2."""


def save_image(chw: np.ndarray, path: Path) -> Path:
    """float CHW in [0, 1] → PNG (Pillow, else matplotlib), else ``.npy``."""
    hwc = np.clip(chw.transpose(1, 2, 0), 0.0, 1.0)
    img8 = (hwc * 255.0 + 0.5).astype(np.uint8)
    if img8.shape[2] == 1:
        img8 = img8[:, :, 0]
    try:
        from PIL import Image

        Image.fromarray(img8).save(path.with_suffix(".png"))
        return path.with_suffix(".png")
    except ImportError:
        pass
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.image as mpimg

        mpimg.imsave(path.with_suffix(".png"), img8, cmap="gray" if img8.ndim == 2 else None)
        return path.with_suffix(".png")
    except ImportError:
        np.save(path.with_suffix(".npy"), chw.astype(np.float32))
        return path.with_suffix(".npy")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("export_dir", type=Path)
    ap.add_argument("packets", type=Path, help="folder of *.esc1 packets")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--channel", choices=("awgn", "none"), default="awgn",
                    help="simulated channel at each packet's recorded SNR (default awgn)")
    ap.add_argument("--erasure", type=float, default=0.0, help="token loss probability (default 0)")
    ap.add_argument("--depth", type=int, default=None)
    ap.add_argument("--width", type=float, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        return run(args)
    except (ServerError, RuntimeErrorBase) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    dec = Decoder(args.export_dir, backend="onnxruntime", threads=args.threads)
    m = dec.model
    if not args.packets.is_dir():
        raise ServerError(f"packet folder not found: {args.packets}")
    files = sorted(args.packets.glob("*.esc1"))
    if not files:
        raise ServerError(f"no .esc1 packets in {args.packets}")
    max_index = m.num_patches + int(m.class_token)
    frames = reassemble((parse_packet(f.read_bytes(), m.hash, max_index) for f in files))
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    takes = set(dec.control_names)
    n_out = 0
    with (args.out / "server_log.jsonl").open("w") as log, \
            (args.out / "predictions.jsonl").open("w") if m.task == "classification" else _Null() as preds:
        for frame, pk in frames.items():
            sym, idx = pk.symbols, pk.token_index
            snr = pk.controls.get("snr_db")
            if args.erasure > 0:
                sym, idx = erasure(sym, idx, args.erasure, rng)
            if args.channel == "awgn":
                if snr is None:
                    raise ServerError(f"frame {frame}: packet records no SNR; use --channel none")
                if sym.shape[0]:
                    sym = awgn(sym[None], snr, rng)[0]
            kw: dict = {"depth": args.depth, "width": args.width}
            if "snr_db" in takes and snr is not None:
                kw["snr_db"] = snr
            ratio = int(pk.controls.get("ratio") or 0)
            if "ratio" in takes or ratio != 0:
                kw["ratio"] = ratio
            t0 = time.perf_counter_ns()
            res = dec.decode(sym[None], idx[None], **kw)
            ms = (time.perf_counter_ns() - t0) / 1e6
            entry = {"frame": frame, "tokens_received": int(idx.shape[0]), "tokens_sent": pk.total,
                     "snr_db": snr, "ratio": ratio, "decode_ms": ms, "decoder_flops": int(res.flops[0])}
            if m.task == "reconstruction":
                entry["file"] = save_image(res.output[0], args.out / f"frame_{frame:06d}").name
            else:
                entry["class"] = int(np.argmax(res.output[0]))
                preds.write(json.dumps({"frame": frame, "class": entry["class"]}) + "\n")
            log.write(json.dumps(entry) + "\n")
            n_out += 1
    print(f"{n_out} frames decoded -> {args.out}")
    return 0


class _Null:
    def __enter__(self) -> "_Null":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def write(self, _text: str) -> None:
        return None


if __name__ == "__main__":
    sys.exit(main())
