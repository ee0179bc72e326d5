"""``folder:PATH``: an ImageFolder tree (one subfolder per class), e.g. Imagenette.

Layouts:
- ``PATH/train/<class>/*`` and ``PATH/test/<class>/*`` (or ``PATH/val/``): the given split is used.
- ``PATH/<class>/*`` only: a deterministic 80/20 split per class — in sorted file order, every 5th file
  (index % 5 == 4) is a test image.
- images directly in ``PATH`` (no class folders): unlabeled (label −1), split the same way.
Classes are the sorted names of the train classes; a test class not among them is an error. Images are read
with Pillow, converted to RGB, the shorter side resized to ``image_size`` (bicubic, antialiased) and
center-cropped. A file that cannot be read raises DataError naming it (when the item is loaded).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from edgesc.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".gif", ".tif", ".tiff", ".webp")
TEST_EVERY = 5


def _images_in(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _classes_in(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan(root: Path) -> tuple[list[str], list[tuple[Path, str | None]]]:
    classes = _classes_in(root)
    if classes:
        items = [(f, c) for c in classes for f in _images_in(root / c)]
    else:
        items = [(f, None) for f in _images_in(root)]
    return classes, items


def read_image(path: Path, image_size: int) -> Tensor:
    """Read an image file → float32 [3, image_size, image_size] in [0, 1] (resize shorter side, center crop)."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:  # pragma: no cover - pillow comes with matplotlib and scikit-image
        raise DataError(f"folder data needs pillow: {exc}") from None
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            s = image_size / min(w, h)
            nw, nh = max(image_size, round(w * s)), max(image_size, round(h * s))
            im = im.resize((nw, nh), Image.Resampling.BICUBIC)
            left, top = (nw - image_size) // 2, (nh - image_size) // 2
            im = im.crop((left, top, left + image_size, top + image_size))
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"cannot read image {path} ({type(exc).__name__}: {exc})") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


class FolderDataset(Dataset):
    """Lazily read images of an ImageFolder tree: items ``(float [3, S, S] in [0, 1], label or −1)``."""

    def __init__(self, files: list[tuple[Path, int]], classes: list[str], image_size: int, name: str) -> None:
        self.files = files
        self.classes = classes
        self.num_classes = len(classes)
        self.image_size = image_size
        self.name = name

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.files[index]
        return read_image(path, self.image_size), label

    def __repr__(self) -> str:
        return f"FolderDataset({self.name!r}, n={len(self)}, classes={self.num_classes})"


def load_folder(path: str | Path, split: str, image_size: int) -> FolderDataset:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"folder: not a directory: {root}")
    train_dir = root / "train"
    if train_dir.is_dir():
        test_dir = next((d for d in (root / "test", root / "val") if d.is_dir()), None)
        if split == "test" and test_dir is None:
            raise DataError(f"folder: {root} has train/ but neither test/ nor val/")
        classes, _ = _scan(train_dir)
        _, items = _scan(train_dir if split == "train" else test_dir)  # type: ignore[arg-type]
        chosen = items
    else:
        classes, items = _scan(root)
        per_class: dict[str | None, int] = {}
        chosen = []
        for f, c in items:
            i = per_class.get(c, 0)
            per_class[c] = i + 1
            if (i % TEST_EVERY == TEST_EVERY - 1) == (split == "test"):
                chosen.append((f, c))
    index = {c: i for i, c in enumerate(classes)}
    files: list[tuple[Path, int]] = []
    for f, c in chosen:
        if c is not None and c not in index:
            raise DataError(f"folder: class folder '{c}' of the {split} split is not a train class ({root})")
        files.append((f, index[c] if c is not None else -1))
    if not files:
        raise DataError(f"folder: no images for split '{split}' under {root} (extensions: {', '.join(IMAGE_EXTENSIONS)})")
    return FolderDataset(files, classes, image_size, f"folder:{root}/{split}")
