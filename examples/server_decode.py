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

A lossy link delivers damaged packets: a ``.esc1`` file that fails to parse (truncated, CRC mismatch, another
model's hash, indices out of range) is reported on stderr as ``skipped NAME: reason`` and left out; the other
packets are decoded (a fragment's frame is decoded from the fragments that did arrive). Exit codes: 0 when at
least one frame was decoded (skipped files or not), 2 on bad input -- including when no packet file could be
used, so that nothing was decoded -- with one line ``error: ...`` on stderr.
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
from edgesc_runtime.packet import Packet, PacketError, parse_packet, reassemble


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


def check_out_dir(out: Path) -> None:
    """``--out`` must be a folder or creatable: not a file, not under a file (checked before any work).

    A copy of ``edgesc.bench.inputs.check_output_dir``: this script must not import edgesc (nor torch)."""
    if out.exists():
        if not out.is_dir():
            raise ServerError(f"--out {out}: exists and is not a folder")
        return
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ServerError(f"--out {out}: {parent} is a file, not a folder")
            break


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


def read_packets(files: list[Path], model_hash: str, max_index: int) -> tuple[list[Packet], list[str]]:
    """Parse every file; a corrupt or foreign one is reported (``name: reason``) and skipped, not fatal."""
    good: list[Packet] = []
    skipped: list[str] = []
    for f in files:
        try:
            good.append(parse_packet(f.read_bytes(), model_hash, max_index))
        except (PacketError, OSError) as exc:
            skipped.append(f"{f.name}: {exc}")
            print(f"skipped {f.name}: {exc}", file=sys.stderr)
    return good, skipped


def run(args: argparse.Namespace) -> int:
    check_out_dir(args.out)
    if not args.packets.is_dir():
        raise ServerError(f"packet folder not found: {args.packets}")
    files = sorted(args.packets.glob("*.esc1"))
    if not files:
        raise ServerError(f"no .esc1 packets in {args.packets}")
    dec = Decoder(args.export_dir, backend="onnxruntime", threads=args.threads)
    m = dec.model
    max_index = m.num_patches + int(m.class_token)
    packets, skipped = read_packets(files, m.hash, max_index)
    if not packets:
        raise ServerError(f"no frame decoded: all {len(files)} packet file(s) unusable (first: {skipped[0]})")
    frames = reassemble(packets)
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
    note = f"; skipped {len(skipped)} of {len(files)} packet file(s) (listed above)" if skipped else ""
    print(f"{n_out} frames decoded -> {args.out}{note}")
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
