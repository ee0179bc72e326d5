"""The "ESC1" packet: a compact byte format for one image's transmission (or one fragment of it).

Layout (little-endian; see docs/runtime.md for the table)::

    offset size  field
    0      4     magic b"ESC1"
    4      1     version (1)
    5      1     flags: bit 0 = fragment (carries a subset of a frame's tokens); other bits must be 0
    6      8     model-hash prefix: first 8 bytes of the manifest's model hash (sha256 hex -> bytes)
    14     4     budget  float32 (NaN = not applicable)
    18     1     depth   uint8   (0 = not applicable)
    19     4     width   float32 (NaN = not applicable)
    23     4     snr_db  float32 (NaN = unknown)
    27     1     ratio   uint8
    28     4     frame counter uint32
    32     2     K: tokens in this packet, uint16
    34     2     S: complex symbols per token, uint16 (>= 1)
    36     2     total: tokens of the whole frame, uint16 (K <= total; total == K for a whole-frame packet)
    38     2     offset: position of this packet's first token within the frame, uint16 (offset + K <= total)
    40     2K    token indices, uint16
    40+2K  4KS   symbols, float16, [K, S, 2] (I, Q)
    end-4  4     CRC-32 (zlib.crc32) of every byte before it

Whole frame: :func:`encode_packet` / :func:`parse_packet`. Lossy links: :func:`split_packets` makes one packet
per token (flag "fragment"), :func:`reassemble` rebuilds each frame from whatever arrived (lost tokens are simply
absent, as the decoder expects). Every malformed input raises :class:`PacketError`, never anything else.
"""
from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from .errors import PacketError

MAGIC = b"ESC1"
VERSION = 1
FLAG_FRAGMENT = 0x01
_KNOWN_FLAGS = FLAG_FRAGMENT
_HEADER = struct.Struct("<4sBB8sfBffBIHHHH")
HEADER_BYTES = _HEADER.size  # 40
CRC_BYTES = 4
MAX_PACKET_BYTES = 1 << 22   # 4 MiB: far above any real frame (65535 tokens x S symbols is refused earlier)
_U16 = 0xFFFF


def hash_prefix(model_hash: str | bytes) -> bytes:
    """First 8 bytes of a model hash given as sha256 hex (or raw bytes)."""
    if isinstance(model_hash, bytes):
        raw = model_hash
    else:
        try:
            raw = bytes.fromhex(model_hash[:16])
        except (ValueError, TypeError):
            raise PacketError(f"model hash must be hex, got {str(model_hash)[:20]!r}") from None
    if len(raw) < 8:
        raise PacketError(f"model hash too short for an 8-byte prefix: {raw.hex()!r}")
    return raw[:8]


@dataclass
class Packet:
    """A parsed packet. ``symbols`` float32 [K, S, 2] and ``token_index`` int64 [K] feed ``Decoder.decode``."""

    model_prefix: bytes
    frame: int
    symbols: np.ndarray
    token_index: np.ndarray
    controls: dict[str, Any] = field(default_factory=dict)
    total: int = 0
    offset: int = 0
    flags: int = 0
    version: int = VERSION

    @property
    def tokens(self) -> int:
        return int(self.token_index.shape[0])

    @property
    def is_fragment(self) -> bool:
        return bool(self.flags & FLAG_FRAGMENT)


def _f32(name: str, value: Any) -> float:
    if value is None:
        return math.nan
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise PacketError(f"packet control {name} must be a number, got {value!r}") from None
    if math.isinf(v) or (not math.isnan(v) and abs(v) > 3.4e38):
        raise PacketError(f"packet control {name}={v!r} does not fit float32")
    return v


def _u8(name: str, value: Any) -> int:
    if value is None:
        return 0
    try:
        ok = not isinstance(value, (bool, np.bool_)) and int(value) == value and 0 <= int(value) <= 255
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise PacketError(f"packet control {name}={value!r} must be an integer in [0, 255]")
    return int(value)


def encode_packet(symbols: Any, token_index: Any, model_hash: str | bytes, controls: Mapping[str, Any] | None = None,
                  frame: int = 0, *, total: int | None = None, offset: int = 0, flags: int = 0) -> bytes:
    """Serialise one image's tokens: ``symbols`` [K, S, 2] (stored as float16), ``token_index`` [K] (uint16).

    ``controls``: budget, depth, width, snr_db, ratio (e.g. ``EncodeResult.controls``); missing ones are written
    as "not applicable". Raises PacketError for shapes, indices or values that the format cannot carry.
    """
    sym = np.asarray(symbols)
    idx = np.asarray(token_index)
    if sym.ndim != 3 or sym.shape[2] != 2:
        raise PacketError(f"packet symbols must have shape [K, S, 2], got {list(sym.shape)}")
    K, S = int(sym.shape[0]), int(sym.shape[1])
    if idx.shape != (K,) or (K and idx.dtype.kind not in "iu"):
        raise PacketError(f"packet token_index must be an integer array of shape [{K}], got {idx.dtype}{list(idx.shape)}")
    if not 1 <= S <= _U16 or K > _U16:
        raise PacketError(f"packet cannot carry K={K}, S={S} (K <= 65535, 1 <= S <= 65535)")
    if K and (idx.min() < 0 or idx.max() > _U16):
        raise PacketError(f"packet token indices must lie in [0, 65535], got [{idx.min()}, {idx.max()}]")
    if len(np.unique(idx)) != K:
        raise PacketError("packet token indices must be unique")
    if sym.dtype.kind != "f" or not np.isfinite(sym).all() or (K and np.abs(sym).max() > 65504.0):
        raise PacketError("packet symbols must be finite floats within the float16 range (|x| <= 65504)")
    for label, value in (("frame", frame), ("offset", offset), ("total", total), ("flags", flags)):
        if value is not None and (isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer))):
            raise PacketError(f"packet {label} must be an integer, got {value!r}")
    total = K if total is None else int(total)
    if not (0 <= offset and offset + K <= total <= _U16):
        raise PacketError(f"packet offset {offset} + K {K} must not exceed total {total} (<= 65535)")
    if flags & ~_KNOWN_FLAGS or not 0 <= frame <= 0xFFFFFFFF:
        raise PacketError(f"packet flags {flags:#x} or frame {frame} out of range")
    c = dict(controls or {})
    for name in ("budget", "width"):
        v = _f32(name, c.get(name))
        if not math.isnan(v) and not 0.0 < v <= 1.0:
            raise PacketError(f"packet control {name}={v:g} is outside (0, 1]")
    header = _HEADER.pack(MAGIC, VERSION, flags, hash_prefix(model_hash), _f32("budget", c.get("budget")),
                          _u8("depth", c.get("depth")), _f32("width", c.get("width")),
                          _f32("snr_db", c.get("snr_db")), _u8("ratio", c.get("ratio")), frame, K, S, total, offset)
    body = header + idx.astype("<u2").tobytes() + sym.astype("<f2").tobytes()
    return body + struct.pack("<I", zlib.crc32(body))


def encode_frames(result: Any, model_hash: str | bytes, first_frame: int = 0) -> list[bytes]:
    """One whole-frame packet per image of an ``EncodeResult`` (frames first_frame, first_frame + 1, ...)."""
    sym, idx = np.asarray(result.symbols), np.asarray(result.token_index)
    return [encode_packet(sym[b], idx[b], model_hash, result.controls, first_frame + b) for b in range(sym.shape[0])]


def packet_size(K: int, S: int) -> int:
    """Bytes of a packet with K tokens of S symbols: 40 + 2K + 4KS + 4."""
    return HEADER_BYTES + 2 * K + 4 * K * S + CRC_BYTES


def parse_packet(data: bytes | bytearray | memoryview, expected_model_hash: str | bytes | None = None,
                 max_index: int | None = None) -> Packet:
    """Parse and check one packet. ``max_index``: indices must be < max_index (M, or M + 1 with a class token).

    Raises PacketError on truncation, trailing bytes, bad magic/version/flags, CRC mismatch, another model's
    hash prefix, inconsistent counts, duplicate or out-of-range indices, or non-finite symbols.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PacketError(f"packet must be bytes, got {type(data).__name__}")
    buf = bytes(data)
    n = len(buf)
    if n > MAX_PACKET_BYTES:
        raise PacketError(f"packet of {n} bytes is oversized (limit {MAX_PACKET_BYTES})")
    if n < HEADER_BYTES + CRC_BYTES:
        raise PacketError(f"packet truncated: {n} bytes, a header alone needs {HEADER_BYTES + CRC_BYTES}")
    (magic, version, flags, prefix, budget, depth, width, snr, ratio, frame, K, S, total,
     offset) = _HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        raise PacketError(f"bad packet magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise PacketError(f"unsupported packet version {version}, expected {VERSION}")
    need = packet_size(K, S)
    if n < need:
        raise PacketError(f"packet truncated: {n} bytes, header announces {need} (K={K}, S={S})")
    if n > need:
        raise PacketError(f"packet oversized: {n} bytes, header announces {need} (K={K}, S={S})")
    (crc,) = struct.unpack_from("<I", buf, n - CRC_BYTES)
    actual = zlib.crc32(buf[: n - CRC_BYTES])
    if crc != actual:
        raise PacketError(f"packet CRC mismatch: stored {crc:#010x}, computed {actual:#010x}")
    if flags & ~_KNOWN_FLAGS:
        raise PacketError(f"packet has unknown flags {flags:#x}")
    if S == 0:
        raise PacketError("packet declares S=0 symbols per token")
    if offset + K > total:
        raise PacketError(f"packet offset {offset} + K {K} exceeds the frame's total {total}")
    if not (flags & FLAG_FRAGMENT) and (offset != 0 or total != K):
        raise PacketError(f"whole-frame packet has offset {offset} and total {total} for K={K}")
    if expected_model_hash is not None:
        want = hash_prefix(expected_model_hash)
        if prefix != want:
            raise PacketError(f"packet is for model {prefix.hex()}, expected {want.hex()}")
    idx = np.frombuffer(buf, dtype="<u2", count=K, offset=HEADER_BYTES).astype(np.int64)
    sym = np.frombuffer(buf, dtype="<f2", count=2 * K * S, offset=HEADER_BYTES + 2 * K).astype(np.float32)
    if len(np.unique(idx)) != K:
        raise PacketError("packet has duplicate token indices")
    if max_index is not None and K and idx.max() >= max_index:
        raise PacketError(f"packet token index {int(idx.max())} out of range [0, {max_index})")
    if not np.isfinite(sym).all():
        raise PacketError("packet symbols contain NaN or infinity")
    for name, v in (("budget", budget), ("width", width), ("snr_db", snr)):
        if math.isinf(v):
            raise PacketError(f"packet control {name} is infinite")
    for name, v in (("budget", budget), ("width", width)):  # contract ranges: (0, 1], NaN = not applicable
        if not math.isnan(v) and not 0.0 < v <= 1.0:
            raise PacketError(f"packet control {name}={v:g} is outside (0, 1]")
    controls = {"budget": None if math.isnan(budget) else budget, "depth": depth or None,
                "width": None if math.isnan(width) else width, "snr_db": None if math.isnan(snr) else snr,
                "ratio": ratio}
    return Packet(model_prefix=prefix, frame=frame, symbols=sym.reshape(K, S, 2), token_index=idx,
                  controls=controls, total=total, offset=offset, flags=flags, version=version)


def split_packets(symbols: Any, token_index: Any, model_hash: str | bytes, controls: Mapping[str, Any] | None = None,
                  frame: int = 0) -> list[bytes]:
    """One fragment packet per token of one image (for links that lose packets independently)."""
    sym = np.asarray(symbols)
    idx = np.asarray(token_index)
    if sym.ndim != 3 or idx.ndim != 1 or idx.shape[0] != sym.shape[0]:
        raise PacketError(f"split_packets needs symbols [K, S, 2] and token_index [K], got {list(sym.shape)} "
                          f"and {list(idx.shape)}")
    if len(np.unique(idx)) != idx.shape[0]:
        raise PacketError("packet token indices must be unique")
    K = sym.shape[0]
    return [encode_packet(sym[k:k + 1], idx[k:k + 1], model_hash, controls, frame, total=K, offset=k,
                          flags=FLAG_FRAGMENT) for k in range(K)]


def reassemble(packets: Iterable[bytes | Packet], expected_model_hash: str | bytes | None = None,
               max_index: int | None = None, strict: bool = True) -> dict[int, Packet]:
    """Rebuild frames from whatever arrived: {frame counter: Packet with the received tokens in frame order}.

    Duplicate copies of a fragment are ignored; fragments of one frame that disagree (model, S, controls,
    total, or two different tokens at one position / one index at two positions) raise PacketError. With
    ``strict=False`` packets that fail to parse are skipped instead of raising.
    """
    frames: dict[int, dict[str, Any]] = {}
    for item in packets:
        try:
            p = item if isinstance(item, Packet) else parse_packet(item, expected_model_hash, max_index)
        except PacketError:
            if strict:
                raise
            continue
        key = (p.model_prefix, p.symbols.shape[1], p.total, tuple(sorted((k, -1.0 if v is None else v)
                                                                          for k, v in p.controls.items())))
        f = frames.setdefault(p.frame, {"key": key, "pos": {}, "packet": p})
        if f["key"] != key:
            raise PacketError(f"fragments of frame {p.frame} disagree on model, S, total or controls")
        for j in range(p.tokens):
            pos, index = p.offset + j, int(p.token_index[j])
            prev = f["pos"].get(pos)
            if prev is not None:
                if prev[0] != index or not np.array_equal(prev[1], p.symbols[j]):
                    raise PacketError(f"frame {p.frame} received two different tokens at position {pos}")
                continue
            f["pos"][pos] = (index, p.symbols[j])
    out: dict[int, Packet] = {}
    for frame, f in sorted(frames.items()):
        first: Packet = f["packet"]
        order = sorted(f["pos"])
        idx = np.array([f["pos"][q][0] for q in order], dtype=np.int64)
        if len(np.unique(idx)) != len(idx):
            raise PacketError(f"frame {frame} received one token index at two positions")
        S = first.symbols.shape[1]
        sym = (np.stack([f["pos"][q][1] for q in order]) if order else np.zeros((0, S, 2), np.float32))
        out[frame] = Packet(model_prefix=first.model_prefix, frame=frame, symbols=sym, token_index=idx,
                            controls=dict(first.controls), total=first.total, offset=0,
                            flags=0 if len(order) == first.total else FLAG_FRAGMENT)
    return out


__all__ = ["MAGIC", "VERSION", "FLAG_FRAGMENT", "HEADER_BYTES", "MAX_PACKET_BYTES", "Packet", "hash_prefix",
           "encode_packet", "encode_frames", "parse_packet", "packet_size", "split_packets", "reassemble"]
