"""Shared test fixtures. The machine has 2 cores shared by many jobs: torch runs single-threaded in tests."""
from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def gen() -> torch.Generator:
    """A CPU generator with a fixed seed, for reproducible random draws in a test."""
    return torch.Generator().manual_seed(1234)
