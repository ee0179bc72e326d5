"""The runtime's per-call fast paths (docs/methods.md, "Runtime per-call overhead") against slow references:
the cached/vectorised executed-FLOP formula against a per-layer ``layer_macs`` loop, the control cache against
fresh validation, the one-pass image check against the float checks and their messages, and the inline output
checks against a backend that returns off-contract arrays."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from test_runtime_graphs import build_model_dir  # noqa: E402

from edgesc_runtime import ControlError, Encoder, InputError, ModelMismatchError  # noqa: E402
from edgesc_runtime import flops as flops_mod  # noqa: E402
from edgesc_runtime import session as session_mod  # noqa: E402
from edgesc_runtime.flops import FlopModel, layer_macs  # noqa: E402

MODEL = {"task": "reconstruction", "channels": 3, "patch_size": 4, "num_patches": 16, "embed_dim": 8, "heads": 2,
         "mlp_dim": 16, "mlp_groups": 4, "num_classes": 0, "class_token": False, "encoder_layers": 3,
         "decoder_layers": 3}
ENC = {"halting": True, "tokens": True, "coder_hidden": 0, "specials": 1, "select_at": 1}
DEC = {"halting": True, "coder_hidden": 0, "head": "reconstruction"}
VARIANTS = {
    "base": (MODEL, ENC, DEC),
    "class-token+mlp-coder": ({**MODEL, "class_token": True}, {**ENC, "coder_hidden": 5, "specials": 2,
                                                               "select_at": 0}, {**DEC, "coder_hidden": 5}),
    "classification": ({**MODEL, "task": "classification", "num_classes": 7}, {**ENC, "halting": False},
                       {**DEC, "head": "classification", "halting": False}),
    "no-tokens": (MODEL, {**ENC, "tokens": False, "select_at": 0}, DEC),
}


def reference(fm: FlopModel, role: str, K, S: int, lt: np.ndarray, wu: np.ndarray) -> np.ndarray:
    """The contract formula written out per image and layer with ``layer_macs`` (the pre-vectorisation code)."""
    B, L = lt.shape
    k = np.broadcast_to(np.asarray(K, dtype=np.int64), (B,))
    M, E, cpp = fm.num_patches, fm.embed_dim, fm.channels * fm.patch_size ** 2
    out = []
    for b in range(B):
        kb = int(k[b])
        if role == "encoder":
            macs = M * cpp * E + ((M + 1) * E if fm.enc_tokens else 0) + kb * fm.coder_enc_macs(S)
            T = [M + fm.enc_specials if layer < fm.enc_select_at else kb - int(fm.class_token) + fm.enc_specials
                 for layer in range(L)]
            halting = fm.enc_halting
        else:
            recon = fm.dec_head == "reconstruction"
            macs = kb * fm.coder_dec_macs(S) + (M * E * cpp if recon else E * fm.num_classes)
            T = [M if recon else kb] * L
            halting = fm.dec_halting
        for layer in range(L):
            macs += int(layer_macs(T[layer], lt[b, layer], int(wu[layer, 0]), int(wu[layer, 1]), E, fm.heads,
                                   fm.mlp_dim, fm.mlp_groups, halting and layer < L - 1))
        out.append(2 * macs)
    return np.asarray(out, dtype=np.int64)


def random_stats(fm: FlopModel, role: str, B: int, rng: np.random.Generator):
    L = fm.encoder_layers if role == "encoder" else fm.decoder_layers
    K = int(rng.integers(1, fm.num_patches + 1))
    lt = rng.integers(0, fm.num_patches + 2, size=(B, L))
    lt[rng.random((B, L)) < 0.3] = 0  # halted images: whole layers skipped
    wu = np.stack([rng.integers(0, fm.heads + 1, L), rng.integers(0, fm.mlp_groups + 1, L)], 1)
    return K, lt.astype(np.int64), wu.astype(np.int64)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("role", ["encoder", "decoder"])
def test_flops_fast_paths_equal_the_per_layer_reference(variant: str, role: str) -> None:
    fm = FlopModel.from_dicts(*VARIANTS[variant])
    fn = fm.encoder_flops if role == "encoder" else fm.decoder_flops
    rng = np.random.default_rng(0)
    big = flops_mod._PYTHON_MAX // 3 + 5  # B * L above _PYTHON_MAX: the numpy mat-vec path
    for B in (1, 2, 8, big):
        for _ in range(6):
            K, lt, wu = random_stats(fm, role, B, rng)
            S = int(rng.integers(1, 9))
            want = reference(fm, role, K, S, lt, wu)
            for k in (K, np.int64(K), np.full(B, K)):       # Python int, numpy int, per-image array
                got = fn(k, S, lt, wu)
                assert got.dtype == np.int64 and got.shape == (B,)
                np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(fn(K, S, lt.tolist(), wu.tolist()), want)  # nested lists
            ks = rng.integers(1, fm.num_patches + 1, size=B)  # ragged K: the general [B, L] path
            np.testing.assert_array_equal(fn(ks, S, lt, wu), reference(fm, role, ks, S, lt, wu))


def test_flops_errors_keep_their_order_and_do_not_poison_the_cache() -> None:
    fm = FlopModel.from_dicts(*VARIANTS["base"])
    wu = np.array([[2, 4], [1, 2], [2, 4]])
    for B in (1, flops_mod._PYTHON_MAX):  # the Python path and the numpy path
        neg = np.full((B, 3), 3)
        neg[-1, 1] = -1
        with pytest.raises(InputError, match="layer_tokens must be >= 0"):
            fm.encoder_flops(4, 2, neg, wu)
        # negative counts are reported before an out-of-range width, as before
        with pytest.raises(InputError, match="layer_tokens must be >= 0"):
            fm.encoder_flops(4, 2, neg, [[3, 4], [1, 2], [2, 4]])
        # once (K, S, width_units) is cached, negative counts are still refused
        ok = np.full((B, 3), 3)
        fm.encoder_flops(4, 2, ok, wu)
        with pytest.raises(InputError, match="layer_tokens must be >= 0"):
            fm.encoder_flops(4, 2, neg, wu)
    for _ in range(2):  # a rejected width is never cached
        with pytest.raises(InputError, match=r"width_units\[0\] = \(3, 4\) outside \[0, 2\] x \[0, 4\]"):
            fm.encoder_flops(4, 2, [[3, 3, 3]], [[3, 4], [1, 2], [2, 4]])


def test_flop_cache_is_bounded() -> None:
    fm = FlopModel.from_dicts(*VARIANTS["base"])
    lt = np.array([[5, 4, 3]])
    for K in range(1, 17):
        for S in range(1, flops_mod._CACHE_SIZE // 16 + 20):
            fm.encoder_flops(K, S, lt, [[2, 4], [2, 4], [2, 4]])
    assert 0 < len(fm._cache) <= flops_mod._CACHE_SIZE
    np.testing.assert_array_equal(fm.encoder_flops(3, 2, lt, [[2, 4], [1, 2], [0, 0]]),
                                  reference(fm, "encoder", 3, 2, lt, np.array([[2, 4], [1, 2], [0, 0]])))


# ---- sessions ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_model_dir(tmp_path_factory.mktemp("fast"))


@pytest.fixture()
def enc(model_dir: Path) -> Encoder:
    return Encoder(model_dir, backend="onnxruntime", threads=1)


@pytest.fixture()
def images() -> np.ndarray:
    return np.random.default_rng(1).random((2, 3, 32, 32), dtype=np.float32)


def test_encode_flops_equal_the_reference(enc: Encoder, images: np.ndarray) -> None:
    for kw in ({}, {"budget": 0.25}, {"depth": 2, "width": 0.5}, {"ratio": 1, "budget": 0.5}):
        r = enc.encode(images, **kw)
        np.testing.assert_array_equal(r.flops, reference(enc.flop_model, "encoder", r.tokens, r.symbols_per_token,
                                                         r.layer_tokens, r.width_units))
        np.testing.assert_array_equal(enc.encode(images[0], **kw).flops, r.flops[:1])


def test_control_cache_matches_fresh_validation_and_hands_out_copies(enc: Encoder, images: np.ndarray) -> None:
    fresh = Encoder(enc.manifest, backend="onnxruntime", threads=1)
    for kw in ({"budget": 0.5}, {"budget": np.float32(0.5)}, {"depth": np.int64(2)}, {"snr_db": -0.0},
               {"width": 1}, {"ratio": 1}, {"budget": np.array(0.25)}):
        for _ in range(2):
            assert enc.encode(images, **kw).controls == fresh._validate_controls(
                tuple(kw.get(n) for n in session_mod.ROLE_CONTROLS["encoder"]))[1]
    r = enc.encode(images, budget=0.5)
    r.controls["budget"] = 99.0  # the caller's copy, not the cache
    assert enc.encode(images, budget=0.5).controls["budget"] == 0.5
    feeds, eff = enc.resolve_controls({"budget": 0.5})
    eff["depth"] = -1
    feeds.pop("budget")
    assert enc.resolve_controls({"budget": 0.5})[1]["depth"] == 4 and "budget" in enc.resolve_controls({})[0]
    with pytest.raises(ValueError):
        enc.resolve_controls({"budget": 0.5})[0]["budget"][()] = 0.75  # shared feeds are read-only


def test_control_cache_keeps_types_apart_and_revalidates_failures(enc: Encoder, images: np.ndarray) -> None:
    enc.encode(images, depth=1)
    with pytest.raises(ControlError, match="control depth must be a number, got bool True"):
        enc.encode(images, depth=True)  # True == 1 and hashes alike, but is not an integer control value
    enc.encode(images, width=1.0)
    with pytest.raises(ControlError, match="control depth must be an integer, got 1.0"):
        enc.encode(images, depth=1.0)
    for _ in range(2):
        with pytest.raises(ControlError, match="control budget must be finite"):
            enc.encode(images, budget=float("nan"))
        with pytest.raises(ControlError, match="above its maximum"):
            enc.encode(images, budget=2.0)
        with pytest.raises(ControlError, match="must be a scalar"):
            enc.encode(images, budget=np.array([0.5, 0.5]))  # unhashable: validated on every call


def test_control_cache_is_bounded(enc: Encoder, images: np.ndarray) -> None:
    for i in range(session_mod._CONTROL_CACHE_SIZE + 40):
        enc.resolve_controls({"snr_db": 40.0 * i / (session_mod._CONTROL_CACHE_SIZE + 40)})
    assert 0 < len(enc._controls) <= session_mod._CONTROL_CACHE_SIZE
    assert enc.encode(images[:1], snr_db=3.0).controls["snr_db"] == 3.0


@pytest.mark.parametrize("value, message", [
    (np.nextafter(np.float32(1), np.float32(2)), "image values must lie in [0, 1], got [0, 1]"),
    (np.float32(-1e-40), "image values must lie in [0, 1], got [-1e-40, 1]"),  # a negative denormal
    (np.float32(-0.5), "image values must lie in [0, 1], got [-0.5, 1]"),
    (np.float32(np.nan), "images contain NaN or infinite values"),
    (np.float32(np.inf), "images contain NaN or infinite values"),
    (np.float32(-np.inf), "images contain NaN or infinite values"),
])
def test_image_check_names_each_problem(enc: Encoder, value: np.float32, message: str) -> None:
    x = np.zeros((2, 3, 32, 32), dtype=np.float32)
    x[0, 0, 0, 0] = 1.0
    x[1, 2, 5, 7] = value
    with pytest.raises(InputError) as err:
        enc.encode(x)
    assert str(err.value) == message
    with pytest.raises(InputError) as err:  # the same on the general path (float64 input, cast first)
        enc.encode(x.astype(np.float64))
    assert str(err.value) == message


def test_image_check_accepts_the_closed_range_and_other_layouts(enc: Encoder) -> None:
    x = np.zeros((2, 3, 32, 32), dtype=np.float32)
    x[0] = 1.0
    x[1, 0] = -0.0  # lies in [0, 1] (-0.0 >= 0): accepted, as the float checks accept it
    x[1, 1] = np.float32(1e-45)  # smallest denormal
    assert enc.validate_images(x) is x
    np.testing.assert_array_equal(enc.encode(x).flops, enc.encode(x.copy()).flops)
    wide = np.zeros((2, 3, 32, 64), dtype=np.float32)
    wide[..., ::2] = x
    view = wide[..., ::2]  # non-contiguous: copied to a contiguous float32 batch
    got = enc.validate_images(view)
    assert got.flags.c_contiguous and got.dtype == np.float32
    np.testing.assert_array_equal(got, x)
    for other in (x.astype(np.float64), x.astype(np.float16), x.astype(">f4"), x[0], x.tolist()):
        got = enc.validate_images(other)
        assert got.dtype == np.float32 and got.flags.c_contiguous and got.ndim == 4
    with pytest.raises(InputError, match="empty batch"):
        enc.encode(x[:0])


class _Backend:
    """Wraps the real backend and replaces one output."""

    def __init__(self, real, name: str, value) -> None:
        self.real, self.name, self.value = real, name, value

    def run(self, feeds):
        out = dict(self.real.run(feeds))
        out[self.name] = self.value(out[self.name])
        return out


@pytest.mark.parametrize("name, change, message", [
    ("symbols", lambda a: a.astype(np.float64), "encoder graph returned symbols float64[2, 16, 8, 2], the contract "
                                                "expects float32[2, ?, 8, 2]"),
    ("symbols", lambda a: a[..., :1], "encoder graph returned symbols float32[2, 16, 8, 1]"),
    ("token_index", lambda a: a.astype(np.int32), "encoder graph returned token_index int32[2, 16], the contract "
                                                  "expects int64[2, 16]"),
    ("layer_tokens", lambda a: a[:, :3], "encoder graph returned layer_tokens int64[2, 3], the contract expects "
                                         "int64[2, 4]"),
    ("width_units", lambda a: a.T.copy(), "encoder graph returned width_units int64[2, 4], the contract expects "
                                          "int64[4, 2]"),
])
def test_output_checks_refuse_off_contract_arrays(enc: Encoder, images: np.ndarray, name, change, message) -> None:
    enc.backend = _Backend(enc.backend, name, change)
    with pytest.raises(ModelMismatchError) as err:
        enc.encode(images)
    assert str(err.value).startswith(message)


def test_output_checks_accept_equal_dtypes_of_other_descriptors(enc: Encoder, images: np.ndarray) -> None:
    want = enc.encode(images).flops
    for name in ("token_index", "layer_tokens", "width_units"):
        enc.backend = _Backend(enc.backend, name, lambda a: a.astype(np.dtype("<i8")))
    enc.backend = _Backend(enc.backend, "symbols", lambda a: a.astype(np.dtype("=f4")))
    np.testing.assert_array_equal(enc.encode(images).flops, want)
