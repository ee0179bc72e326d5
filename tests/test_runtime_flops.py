"""edgesc_runtime.flops against hand-computed values of the contract's executed-FLOP formula (FLOPs = 2*MACs).

The parity test against torch.utils.flop_counter on the PyTorch inference form belongs with the model core
(edgesc.models); these tests pin the formula itself on a model small enough to count by hand:
M=4 patches, C=1, P=2 (C*P^2=4), E=4, H=2 (dh=2), D=8, G=4 (dg=2), 2 layers each side, S=3."""
from __future__ import annotations

import numpy as np
import pytest

from edgesc_runtime import InputError, ManifestError
from edgesc_runtime.flops import FlopModel, layer_macs

MODEL = {"task": "reconstruction", "channels": 1, "patch_size": 2, "num_patches": 4, "embed_dim": 4, "heads": 2,
         "mlp_dim": 8, "mlp_groups": 4, "num_classes": 0, "class_token": False, "encoder_layers": 2,
         "decoder_layers": 2}
ENC = {"halting": True, "tokens": True, "coder_hidden": 0, "specials": 1, "select_at": 1}
DEC = {"halting": False, "coder_hidden": 0, "head": "reconstruction"}


def test_layer_by_hand() -> None:
    # T=5 present, n=3 active, h=1 head (dh=2), g=2 groups (dg=2), halting:
    # 3*5*4*2 + 2*5*5*2 + 3*2*4 + 2*3*4*4 + 3*4 = 120 + 100 + 24 + 96 + 12 = 352
    assert layer_macs(5, 3, 1, 2, 4, 2, 8, 4, halting=True) == 352
    assert layer_macs(5, 3, 1, 2, 4, 2, 8, 4, halting=False) == 340
    assert layer_macs(5, 0, 1, 2, 4, 2, 8, 4, halting=True) == 0
    np.testing.assert_array_equal(layer_macs([5, 5], [3, 0], 1, 2, 4, 2, 8, 4, True), [352, 0])


def test_full_layer_reduces_to_paper_000_table_1() -> None:
    M, E, D = 4, 4, 8  # 4ME^2 + 2M^2E + 2MED = 256 + 128 + 256
    assert layer_macs(M, M, 2, 4, E, 2, D, 4, halting=False) == 4 * M * E * E + 2 * M * M * E + 2 * M * E * D == 640


def test_encoder_by_hand() -> None:
    fm = FlopModel.from_dicts(MODEL, ENC, DEC)
    # patch embedding 4*4*4 = 64; gates (4+1)*4 = 20;
    # layer 0 (before select_at=1, T = M + 1 special = 5, n = 5, h=2, g=4, halting): 240+200+80+320+20 = 860
    # layer 1 (after selection, T = K + 1 = 3, n = 2, h=1, g=2, last layer: no halting): 72+36+16+64 = 188
    # coder 2 tokens * E*2S = 2*4*6 = 48        -> 1180 MACs = 2360 FLOPs
    # second image halted after layer 0          ->  992 MACs = 1984 FLOPs
    flops = fm.encoder_flops(2, 3, [[5, 2], [5, 0]], [[2, 4], [1, 2]])
    np.testing.assert_array_equal(flops, [2360, 1984])
    assert flops.dtype == np.int64
    # per-image K (a ragged batch): the coder and the post-selection layers use each image's own K
    np.testing.assert_array_equal(fm.encoder_flops([2, 1], 3, [[5, 2], [5, 1]], [[2, 4], [1, 2]]),
                                  [2360, 2 * (64 + 20 + 860 + (3 * 2 * 4 * 2 + 2 * 4 * 2 + 1 * 2 * 4 + 2 * 1 * 4 * 4)
                                              + 24)])


def test_decoder_by_hand_reconstruction_and_classification() -> None:
    # coder 2*(2S*E) = 48; two full layers on T = M = 4 mask-filled tokens: 2*640; head M*E*C*P^2 = 64
    fm = FlopModel.from_dicts(MODEL, ENC, DEC)
    np.testing.assert_array_equal(fm.decoder_flops(2, 3, [[4, 4]], [[2, 4], [2, 4]]), [2 * (48 + 1280 + 64)])
    # classification: T = K = 2, each layer 96 + 32 + 32 + 128 = 288; head E*classes = 40
    cls = FlopModel.from_dicts({**MODEL, "task": "classification", "num_classes": 10}, ENC,
                               {**DEC, "head": "classification"})
    np.testing.assert_array_equal(cls.decoder_flops(2, 3, [[2, 2]], [[2, 4], [2, 4]]), [2 * (48 + 576 + 40)])


def test_mlp_coder_and_class_token() -> None:
    fm = FlopModel.from_dicts(MODEL, {**ENC, "coder_hidden": 5}, {**DEC, "coder_hidden": 5})
    assert fm.coder_enc_macs(3) == 4 * 5 + 5 * 5 + 5 * 6 == 75
    assert fm.coder_dec_macs(3) == 6 * 5 + 5 * 5 + 5 * 4 == 75
    # with a class token (always transmitted) K counts it, and the post-selection T = kept patches + specials
    ct = FlopModel.from_dicts({**MODEL, "class_token": True}, {**ENC, "specials": 2}, DEC)
    a = ct.encoder_flops(3, 3, [[6, 4]], [[2, 4], [2, 4]])  # K=3 -> 2 patches + cls + budget token = T 4
    expected = 64 + 20 + layer_macs(6, 6, 2, 4, 4, 2, 8, 4, True) + layer_macs(4, 4, 2, 4, 4, 2, 8, 4, False) \
        + 3 * 24
    assert a[0] == 2 * expected


def test_bad_statistics_and_missing_keys() -> None:
    fm = FlopModel.from_dicts(MODEL, ENC, DEC)
    with pytest.raises(InputError, match="layer_tokens"):
        fm.encoder_flops(2, 3, [[5, 2, 1]], [[2, 4], [1, 2]])
    with pytest.raises(InputError, match="width_units"):
        fm.encoder_flops(2, 3, [[5, 2]], [[2, 4]])
    with pytest.raises(InputError, match="outside"):
        fm.encoder_flops(2, 3, [[5, 2]], [[3, 4], [1, 2]])
    with pytest.raises(ManifestError, match="flops.encoder.tokens"):
        FlopModel.from_dicts(MODEL, {k: v for k, v in ENC.items() if k != "tokens"}, DEC)
