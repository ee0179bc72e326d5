"""Channel models (torch, training form): AWGN, block Rayleigh (with/without CSI), token erasure.

One definition, two implementations (``docs/contract.md`` "Channel definitions"): this package and
``edgesc_runtime.channel`` (numpy). SNR is per complex symbol at unit average transmit power.
"""
from __future__ import annotations

from edgesc.channels.factory import CHANNELS, Channel, make_channel
from edgesc.channels.functions import (
    awgn,
    complex_noise,
    erasure,
    noise_variance,
    normalize_power,
    rayleigh_block,
    rayleigh_gain,
    symbol_power,
)

__all__ = [
    "CHANNELS",
    "Channel",
    "awgn",
    "complex_noise",
    "erasure",
    "make_channel",
    "noise_variance",
    "normalize_power",
    "rayleigh_block",
    "rayleigh_gain",
    "symbol_power",
]
