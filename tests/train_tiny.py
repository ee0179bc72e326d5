"""A tiny preset for the training tests (32x32 photos, E=32, one RTU per side, depth and width enabled)."""
from __future__ import annotations

from pathlib import Path

TINY = """
name = "tiny"
task = "reconstruction"
image_size = 32
patch_size = 8
embed_dim = 32
heads = 2
mlp_ratio = 2
mlp_groups = 2
[encoder]
units = 1
recursions = 2
[decoder]
units = 1
recursions = 2
[depth]
enabled = true
threshold = 0.99
[width]
enabled = true
target_prune = 0.3
[coder]
symbols = [8]
[train]
data = "photos32"
batch_size = 8
lr = 2e-3
steps = 40
warmup_steps = 4
snr_db = [0.0, 20.0]
stage = "full"
"""


def tiny_config(folder: Path, name: str = "tiny", extra: str = "") -> Path:
    """Write the tiny preset (plus ``extra`` TOML lines) to ``folder/name.toml`` and return its path."""
    path = Path(folder) / f"{name}.toml"
    path.write_text(TINY.replace('name = "tiny"', f'name = "{name}"') + extra)
    return path
