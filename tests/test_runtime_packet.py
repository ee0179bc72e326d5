"""edgesc_runtime.packet: the ESC1 byte format, fragments over a lossy link, rejection of bad packets, and a
seeded fuzz loop that may only ever raise PacketError."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from edgesc_runtime import PacketError
from edgesc_runtime import channel as ch
from edgesc_runtime.packet import (FLAG_FRAGMENT, HEADER_BYTES, encode_packet, hash_prefix, packet_size,
                                   parse_packet, reassemble, split_packets)

HASH = "0123456789abcdef" * 4
OTHER = "fedcba9876543210" * 4
CONTROLS = {"budget": 0.5, "depth": 6, "width": 0.75, "snr_db": 7.5, "ratio": 1}


def _frame(K: int = 8, S: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sym = ch.normalize_power(rng.standard_normal((1, K, S, 2)).astype(np.float32))[0]
    return sym, rng.permutation(16)[:K]


def _recrc(buf: bytes | bytearray) -> bytes:
    body = bytes(buf[:-4])
    return body + struct.pack("<I", zlib.crc32(body))


def test_round_trip_layout_and_fp16_precision() -> None:
    sym, idx = _frame()
    data = encode_packet(sym, idx, HASH, CONTROLS, frame=41)
    assert len(data) == packet_size(8, 4) == HEADER_BYTES + 2 * 8 + 4 * 8 * 4 + 4
    assert data[:4] == b"ESC1" and data[6:14] == bytes.fromhex(HASH[:16])
    p = parse_packet(data, expected_model_hash=HASH, max_index=16)
    assert p.frame == 41 and p.total == 8 and not p.is_fragment
    assert p.token_index.tolist() == idx.tolist() and p.token_index.dtype == np.int64
    np.testing.assert_allclose(p.symbols, sym, rtol=1e-3, atol=1e-3)  # float16 on the wire
    assert p.controls["depth"] == 6 and p.controls["ratio"] == 1
    assert p.controls["budget"] == 0.5 and p.controls["snr_db"] == 7.5 and p.controls["width"] == 0.75


def test_missing_controls_are_not_applicable() -> None:
    sym, idx = _frame(K=0)
    p = parse_packet(encode_packet(sym, idx, HASH, {"ratio": 0}))
    assert p.tokens == 0 and p.symbols.shape == (0, 4, 2)
    assert p.controls == {"budget": None, "depth": None, "width": None, "snr_db": None, "ratio": 0}


@pytest.mark.parametrize("mutate, msg", [
    (lambda d: d[:30], "truncated"),
    (lambda d: d[:-1], "truncated"),
    (lambda d: d + b"\x00", "oversized"),
    (lambda d: b"ESC2" + d[4:], "magic"),
    (lambda d: _recrc(d[:4] + b"\x02" + d[5:]), "version"),
    (lambda d: d[:-5] + bytes([d[-5] ^ 1]) + d[-4:], "CRC"),
    (lambda d: _recrc(d[:5] + b"\x80" + d[6:]), "flags"),
    (lambda d: _recrc(d[:HEADER_BYTES] + d[HEADER_BYTES + 2:HEADER_BYTES + 4] + d[HEADER_BYTES + 2:]), "duplicate"),
    (lambda d: b"\x00" * (5 << 20), "oversized"),
])
def test_bad_packets_are_rejected(mutate, msg: str) -> None:
    sym, idx = _frame()
    with pytest.raises(PacketError, match=msg):
        parse_packet(mutate(encode_packet(sym, idx, HASH, CONTROLS)))


def test_wrong_model_and_out_of_range_index() -> None:
    sym, idx = _frame()
    data = encode_packet(sym, idx, HASH, CONTROLS)
    with pytest.raises(PacketError, match=f"{HASH[:16]}, expected {OTHER[:16]}"):
        parse_packet(data, expected_model_hash=OTHER)
    with pytest.raises(PacketError, match="out of range"):
        parse_packet(data, max_index=int(idx.max()))


@pytest.mark.parametrize("args, msg", [
    ((np.zeros((2, 4)), [0, 1]), "shape"),
    ((np.zeros((2, 4, 2)), [0, 0]), "unique"),
    ((np.zeros((2, 4, 2)), [0, 70000]), "65535"),
    ((np.full((2, 4, 2), 1e6), [0, 1]), "float16"),
    ((np.full((2, 4, 2), np.nan), [0, 1]), "finite"),
    ((np.zeros((2, 4, 2)), [0.0, 1.0]), "integer"),
])
def test_unencodable_input_raises_packet_error(args, msg: str) -> None:
    with pytest.raises(PacketError, match=msg):
        encode_packet(args[0], np.asarray(args[1]), HASH, CONTROLS)
    with pytest.raises(PacketError, match="depth"):
        encode_packet(np.zeros((1, 4, 2)), np.array([0]), HASH, {"depth": 300})


def test_fragments_over_a_lossy_link_reassemble_what_arrived() -> None:
    sym, idx = _frame(K=12, S=3)
    frags = split_packets(sym, idx, HASH, CONTROLS, frame=7)
    assert len(frags) == 12 and all(parse_packet(f).flags == FLAG_FRAGMENT for f in frags)
    rng = np.random.default_rng(3)
    arrived = [f for f in frags if rng.random() > 0.4]
    rng.shuffle(arrived)
    arrived.append(arrived[0])  # a duplicated packet is harmless
    frames = reassemble(arrived, expected_model_hash=HASH, max_index=16)
    p = frames[7]
    got = {int(i) for i in p.token_index}
    sent = {int(idx[k]) for k in range(12) if frags[k] in arrived}
    assert got == sent and p.tokens == len(sent) and p.is_fragment
    order = [list(idx).index(i) for i in p.token_index]  # tokens come back in frame order
    assert order == sorted(order)
    for j, i in enumerate(p.token_index):
        np.testing.assert_allclose(p.symbols[j], sym[list(idx).index(i)], atol=1e-3)
    full = reassemble(frags)[7]
    assert full.tokens == 12 and not full.is_fragment


def test_reassemble_rejects_inconsistent_fragments_and_can_skip_garbage() -> None:
    sym, idx = _frame(K=4)
    a = split_packets(sym, idx, HASH, CONTROLS, frame=1)
    b = split_packets(sym, idx, HASH, {**CONTROLS, "ratio": 0}, frame=1)
    with pytest.raises(PacketError, match="disagree"):
        reassemble([a[0], b[1]])
    other = encode_packet(sym[1:2] * 0.5, idx[1:2], HASH, CONTROLS, frame=1, total=4, offset=0, flags=FLAG_FRAGMENT)
    with pytest.raises(PacketError, match="two different tokens"):
        reassemble([a[0], other])
    assert list(reassemble([a[0], b"junk", a[1][:-2]], strict=False)) == [1]
    with pytest.raises(PacketError):
        reassemble([a[0], b"junk"])


def test_split_then_decode_path_feeds_the_decoder_shapes() -> None:
    sym, idx = _frame(K=5, S=8)
    p = reassemble(split_packets(sym, idx, hash_prefix(HASH), CONTROLS, frame=0))[0]
    assert p.symbols.dtype == np.float32 and p.symbols.shape == (5, 8, 2) and p.token_index.shape == (5,)


def test_fuzzed_packets_only_ever_raise_packet_error() -> None:
    rng = np.random.default_rng(20240601)
    seeds = [encode_packet(*_frame(K=k, S=s, seed=k), HASH, CONTROLS, frame=k) for k, s in ((0, 1), (3, 2), (9, 4))]
    seeds += split_packets(*_frame(K=3, S=2), HASH, CONTROLS, frame=99)
    outcomes = {"ok": 0, "rejected": 0}
    for trial in range(3000):
        buf = bytearray(seeds[trial % len(seeds)])
        kind = trial % 6
        if kind == 0:      # random bit flips
            for _ in range(rng.integers(1, 4)):
                pos = rng.integers(len(buf))
                buf[pos] ^= 1 << int(rng.integers(8))
        elif kind == 1:    # truncation
            buf = buf[: rng.integers(0, len(buf))]
        elif kind == 2:    # extension with random bytes
            buf += bytes(rng.integers(0, 256, rng.integers(1, 40), dtype=np.uint8))
        elif kind == 3:    # random header bytes with a valid CRC: reaches the semantic checks
            for _ in range(rng.integers(1, 4)):
                buf[rng.integers(4, HEADER_BYTES)] = int(rng.integers(256))
            buf = bytearray(_recrc(buf))
        elif kind == 4:    # random payload bytes with a valid CRC (indices, fp16 NaN/inf patterns)
            if len(buf) > HEADER_BYTES + 4:
                for _ in range(rng.integers(1, 6)):
                    buf[rng.integers(HEADER_BYTES, len(buf) - 4)] = int(rng.integers(256))
                buf = bytearray(_recrc(buf))
        else:              # pure noise
            buf = bytearray(rng.integers(0, 256, rng.integers(0, 200), dtype=np.uint8).tobytes())
        try:
            p = parse_packet(bytes(buf), expected_model_hash=HASH if trial % 2 else None, max_index=16)
        except PacketError:
            outcomes["rejected"] += 1
        else:
            outcomes["ok"] += 1
            assert np.isfinite(p.symbols).all() and len(set(p.token_index.tolist())) == p.tokens
    assert outcomes["rejected"] > 2000 and outcomes["ok"] > 0
