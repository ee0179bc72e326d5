"""``cifar10:PATH``: CIFAR-10 in its python format, read safely; ``download_cifar10`` for online users.

PATH may be the ``cifar-10-python.tar.gz`` archive (read in place, never extracted), the
``cifar-10-batches-py`` folder, or a folder holding either. Batches are pickles of
``{"data": uint8 [N, 3072], "labels": [N ints], ...}`` (rows are R, G, B planes of 32×32); they are read with a
restricted unpickler that can build only plain containers and numpy arrays/dtypes, so a tampered archive cannot
run code. Array sizes, dtypes and labels are checked; any problem raises DataError naming the file.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path
from typing import Any, Callable
from urllib.request import urlopen

import numpy as np
import torch

from edgesc.data.arrays import ImageArrayDataset, resize_uint8
from edgesc.errors import DataError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
BATCH_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _numpy_attr(module: str, name: str) -> Callable[..., Any]:
    import importlib

    # numpy >= 2 moved numpy.core to numpy._core (old pickles name numpy.core, new ones numpy._core)
    for mod in (module.replace("numpy.core", "numpy._core"), module):
        try:
            return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"{module}.{name} not available")


_ALLOWED: frozenset[tuple[str, str]] = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # protocol-2 pickles written by Python 3 encode bytes this way
})


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds only dicts, lists, strings, numbers and numpy arrays; any other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if module == "_codecs":
            import codecs

            return codecs.encode
        return _numpy_attr(module, name)


def _read_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        obj = _RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as exc:  # any failure inside pickle means a corrupt or foreign file
        raise DataError(f"{where}: not a CIFAR-10 batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: not a CIFAR-10 batch (a {type(obj).__name__}, expected a dict)")
    obj = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    if "data" not in obj or "labels" not in obj:
        raise DataError(f"{where}: CIFAR-10 batch lacks 'data' or 'labels' (keys: {sorted(map(str, obj))})")
    data, labels = obj["data"], obj["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DataError(f"{where}: 'data' must be uint8 [N, 3072], got {getattr(data, 'dtype', type(data).__name__)} {shape}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{where}: 'labels' must be a list of integers") from None
    if labels.shape != (data.shape[0],):
        raise DataError(f"{where}: {labels.size} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{where}: labels must be in 0..9, got {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels


def _locate(path: Path) -> Path:
    """The archive file or the batch folder that ``path`` names or holds."""
    if not path.exists():
        raise DataError(f"cifar10: path not found: {path} (get the data with edgesc.data.download_cifar10(DIR))")
    if path.is_file():
        return path
    for cand in (path / "data_batch_1", path / BATCH_DIR / "data_batch_1"):
        if cand.is_file():
            return cand.parent
    for cand in (path / ARCHIVE_NAME,):
        if cand.is_file():
            return cand
    if (path / "test_batch").is_file():
        return path
    raise DataError(f"cifar10: {path} holds neither {BATCH_DIR}/ nor {ARCHIVE_NAME}")


def _read_members(src: Path, names: tuple[str, ...]) -> list[tuple[bytes, str]]:
    if src.is_dir():
        out = []
        for n in names:
            f = src / n
            if not f.is_file():
                raise DataError(f"cifar10: missing batch file {f}")
            out.append((f.read_bytes(), str(f)))
        return out
    try:
        with tarfile.open(src, "r:*") as tar:
            members = {m.name.lstrip("./"): m for m in tar.getmembers() if m.isfile()}
            out = []
            for n in names:
                key = f"{BATCH_DIR}/{n}"
                m = members.get(key) or members.get(n)
                if m is None:
                    raise DataError(f"cifar10: {src} has no member {key}")
                fh = tar.extractfile(m)
                assert fh is not None
                out.append((fh.read(), f"{src}:{m.name}"))
            return out
    except DataError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if isinstance(exc, tarfile.ReadError) and "could not be opened" in reason:
            reason = "not a tar, tar.gz, tar.bz2 or tar.xz archive"
        raise DataError(f"cifar10: {src} is not a readable CIFAR-10 archive ({type(exc).__name__}: {reason})") from None


def load_cifar10(path: str | Path, split: str, image_size: int = 32) -> ImageArrayDataset:
    """CIFAR-10 ``train`` (50 000 images in the official files) or ``test`` (10 000), resized if needed."""
    src = _locate(Path(path).expanduser())
    names = TRAIN_BATCHES if split == "train" else TEST_BATCHES
    images, labels = [], []
    for raw, where in _read_members(src, names):
        x, y = _read_batch(raw, where)
        images.append(x)
        labels.append(y)
    x = resize_uint8(torch.from_numpy(np.concatenate(images)), image_size)
    return ImageArrayDataset(x, torch.from_numpy(np.concatenate(labels)), f"cifar10/{split}", num_classes=10)


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_cifar10(dest: str | Path, url: str = CIFAR10_URL, md5: str = CIFAR10_MD5) -> Path:
    """Download the official CIFAR-10 python archive into ``dest`` and verify its MD5; returns the archive path.

    An archive already in ``dest`` with the right checksum is kept. The download goes to a temporary file
    in ``dest`` that is renamed only after the checksum matches. Load it with ``cifar10:DEST``.
    """
    d = Path(dest).expanduser()
    d.mkdir(parents=True, exist_ok=True)
    target = d / ARCHIVE_NAME
    if target.is_file() and _md5(target) == md5:
        return target
    part = d / (ARCHIVE_NAME + ".part")
    try:
        with urlopen(url, timeout=60) as resp, open(part, "wb") as out:  # noqa: S310 - fixed https URL
            while block := resp.read(1 << 20):
                out.write(block)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise DataError(f"cifar10: download of {url} failed ({exc})") from None
    got = _md5(part)
    if got != md5:
        part.unlink(missing_ok=True)
        raise DataError(f"cifar10: {url} downloaded with MD5 {got}, expected {md5}; file removed")
    os.replace(part, target)
    return target
