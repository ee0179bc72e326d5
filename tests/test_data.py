"""Data sets: embedded sets, CIFAR-10 python format (tiny archives built here), ImageFolder trees, loaders."""
from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import edgesc.data.cifar as cifar
from edgesc.data import KNOWN_SPECS, download_cifar10, load_dataset, make_loader
from edgesc.data.photos import TEST_SOURCES, TRAIN_SOURCES, _photos
from edgesc.errors import ConfigError, DataError


# ---------------------------------------------------------------- photos32
def test_photos32_splits_by_source_and_is_fast() -> None:
    _photos.cache_clear()
    t0 = time.perf_counter()
    train = load_dataset("photos32", "train", 32)
    test = load_dataset("photos32", "test", 32)
    elapsed = time.perf_counter() - t0
    assert elapsed < 5.0, elapsed  # ~0.8 s on this machine; budget is < 2 s, slack for a loaded machine
    assert set(train.sources) == set(TRAIN_SOURCES) and set(test.sources) == set(TEST_SOURCES)
    assert {"chelsea", "coffee"} <= set(test.sources) and not ({"chelsea", "coffee"} & set(train.sources))
    assert 2000 <= len(train) <= 8000 and 200 <= len(test) <= 1000
    assert sum(train.sources.values()) == len(train) and all(n > 0 for n in train.sources.values())
    x, y = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == -1
    assert 0.0 <= float(train.images.min()) and float(train.images.max()) <= 255
    # no test crop appears in the training set
    train_hashes = {hashlib.sha1(c.numpy().tobytes()).digest() for c in train.images}
    assert not any(hashlib.sha1(c.numpy().tobytes()).digest() in train_hashes for c in test.images)
    # flat crops were dropped: every crop has texture
    assert float(train.images.float().flatten(1).std(1).min()) / 255 >= 0.02


def test_photos32_deterministic_and_other_sizes() -> None:
    a = load_dataset("photos32", "test", 32).images.clone()
    _photos.cache_clear()
    assert torch.equal(load_dataset("photos32", "test", 32).images, a)
    small = load_dataset("photos32", "train", 16)
    assert small[5][0].shape == (3, 16, 16) and len(small) > len(load_dataset("photos32", "train", 32))
    with pytest.raises(DataError, match="image_size"):
        load_dataset("photos32", "train", 1000)


# ---------------------------------------------------------------- digits32
def test_digits32() -> None:
    train = load_dataset("digits32", "train", 32)
    test = load_dataset("digits32", "test", 32)
    assert len(train) + len(test) == 1797 and 340 <= len(test) <= 380
    assert train.num_classes == 10
    for ds in (train, test):  # stratified: every class in both splits, in proportion
        counts = torch.bincount(ds.labels, minlength=10)
        assert bool((counts > 0.15 * len(ds) / 10 * 5).all()), counts
    x, y = test[0]
    assert x.shape == (3, 32, 32) and 0 <= y < 10
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])  # gray repeated over RGB
    assert float(x.max()) > 0.5 and float(x.min()) == 0.0
    tr = {hashlib.sha1(c.numpy().tobytes()).digest() for c in train.images}
    overlap = sum(hashlib.sha1(c.numpy().tobytes()).digest() in tr for c in test.images)
    assert overlap <= 2  # sklearn digits has a couple of exact duplicate images, nothing more
    assert torch.equal(load_dataset("digits32", "test", 32).labels, test.labels)


# ---------------------------------------------------------------- cifar10
def _batch(n: int, seed: int, key_type: type = bytes) -> tuple[bytes, np.ndarray, list[int]]:
    rng = np.random.RandomState(seed)
    data = rng.randint(0, 256, size=(n, 3072)).astype(np.uint8)
    labels = [int(v) for v in rng.randint(0, 10, size=n)]
    k = (lambda s: s.encode()) if key_type is bytes else (lambda s: s)
    obj = {k("batch_label"): k(f"batch {seed}"), k("labels"): labels, k("data"): data,
           k("filenames"): [k(f"img_{seed}_{i}.png") for i in range(n)]}
    return pickle.dumps(obj, protocol=2), data, labels


def _make_cifar(root: Path, n: int = 4, corrupt: dict[str, bytes] | None = None) -> tuple[Path, dict]:
    """The official layout: cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta} in a .tar.gz."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    truth: dict[str, tuple[np.ndarray, list[int]]] = {}
    for i, name in enumerate([*(f"data_batch_{j}" for j in range(1, 6)), "test_batch"]):
        raw, data, labels = _batch(n + i % 2, i, bytes if i % 2 else str)
        (d / name).write_bytes((corrupt or {}).get(name, raw))
        truth[name] = (data, labels)
    meta = {b"label_names": [c.encode() for c in cifar.CLASSES], b"num_cases_per_batch": n, b"num_vis": 3072}
    (d / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(d, arcname="cifar-10-batches-py")
    return archive, truth


@pytest.mark.parametrize("where", ["archive", "batch_dir", "parent_dir"])
def test_cifar10_reads_official_layout(tmp_path: Path, where: str) -> None:
    archive, truth = _make_cifar(tmp_path)
    path = {"archive": archive, "batch_dir": tmp_path / "cifar-10-batches-py", "parent_dir": tmp_path}[where]
    train = load_dataset(f"cifar10:{path}", "train", 32)
    test = load_dataset(f"cifar10:{path}", "test", 32)
    n_train = sum(len(truth[f"data_batch_{j}"][1]) for j in range(1, 6))
    assert len(train) == n_train and len(test) == len(truth["test_batch"][1])
    assert train.num_classes == 10
    data, labels = truth["data_batch_1"]
    x, y = train[1]
    # row layout: 1024 R, then 1024 G, then 1024 B values, each a 32×32 image in row-major order
    assert torch.equal((x * 255).round().to(torch.uint8), torch.from_numpy(data[1].reshape(3, 32, 32)))
    assert y == labels[1]
    assert test.labels.tolist() == truth["test_batch"][1]
    resized = load_dataset(f"cifar10:{path}", "test", 16)
    assert resized[0][0].shape == (3, 16, 16)


def test_cifar10_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="path not found: .*nowhere"):
        load_dataset(f"cifar10:{tmp_path / 'nowhere'}", "train")
    with pytest.raises(DataError, match="needs a path"):
        load_dataset("cifar10", "train")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds neither"):
        load_dataset(f"cifar10:{empty}", "train")
    archive, _ = _make_cifar(tmp_path / "ok")
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated.tar.gz"):
        load_dataset(f"cifar10:{truncated}", "train")
    # a member missing from the archive
    partial = tmp_path / "partial.tar.gz"
    with tarfile.open(partial, "w:gz") as tar:
        tar.add(tmp_path / "ok" / "cifar-10-batches-py" / "test_batch", arcname="cifar-10-batches-py/test_batch")
    with pytest.raises(DataError, match="no member cifar-10-batches-py/data_batch_1"):
        load_dataset(f"cifar10:{partial}", "train")


class _Boom:
    def __reduce__(self):  # what a malicious batch would contain
        return (Path.touch, (Path("/tmp/edgesc_pwned_marker"),))


@pytest.mark.parametrize(
    "payload,match",
    [
        (pickle.dumps({"data": _Boom(), "labels": []}, protocol=2), "refusing to load global"),
        (pickle.dumps({"data": np.zeros((2, 3071), np.uint8), "labels": [0, 1]}, protocol=2), r"uint8 \[N, 3072\]"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]}, protocol=2), "uint8"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, protocol=2), "1 labels for 2"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}, protocol=2), "0..9"),
        (pickle.dumps({"data": np.zeros((2, 3072), object), "labels": [0, 1]}, protocol=2), "uint8"),
        (pickle.dumps([1, 2, 3], protocol=2), "expected a dict"),
        (b"not a pickle at all", "not a CIFAR-10 batch"),
    ],
)
def test_cifar10_rejects_bad_batches(tmp_path: Path, payload: bytes, match: str) -> None:
    marker = Path("/tmp/edgesc_pwned_marker")
    marker.unlink(missing_ok=True)
    _make_cifar(tmp_path, corrupt={"test_batch": payload})
    with pytest.raises(DataError, match=match) as info:
        load_dataset(f"cifar10:{tmp_path / 'cifar-10-batches-py'}", "test")
    assert "test_batch" in str(info.value)  # names the file
    assert not marker.exists()  # nothing was executed


def test_download_cifar10_checks_md5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive, _ = _make_cifar(tmp_path / "src")
    blob = archive.read_bytes()
    calls: list[str] = []

    def fake_urlopen(url: str, timeout: float = 0):
        calls.append(url)
        return io.BytesIO(blob)

    monkeypatch.setattr(cifar, "urlopen", fake_urlopen)
    dest = tmp_path / "dl"
    # the official checksum does not match the fake archive: refused, nothing left behind
    with pytest.raises(DataError, match=f"expected {cifar.CIFAR10_MD5}"):
        download_cifar10(dest)
    assert calls == [cifar.CIFAR10_URL] and list(dest.iterdir()) == []
    # with the right checksum the archive lands and loads
    md5 = hashlib.md5(blob).hexdigest()
    path = download_cifar10(dest, md5=md5)
    assert path == dest / "cifar-10-python.tar.gz" and path.read_bytes() == blob
    assert len(load_dataset(f"cifar10:{dest}", "test")) == 5
    # already present and verified: no second download
    monkeypatch.setattr(cifar, "urlopen", lambda *a, **k: pytest.fail("downloaded again"))
    assert download_cifar10(dest, md5=md5) == path
    assert cifar.CIFAR10_MD5 == "c58f30108f718f92721af3b95e74349a"
    assert cifar.CIFAR10_URL.endswith("cifar-10-python.tar.gz")


def test_download_cifar10_network_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, timeout: float = 0):
        raise OSError("network unreachable")

    monkeypatch.setattr(cifar, "urlopen", offline)
    with pytest.raises(DataError, match="download of .* failed"):
        download_cifar10(tmp_path)


# ---------------------------------------------------------------- folder
def _img(path: Path, w: int, h: int, color: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), color).save(path)


def test_folder_class_tree_split_and_resize(tmp_path: Path) -> None:
    for i in range(10):
        _img(tmp_path / "cat" / f"{i:02d}.png", 40 + i, 30, (200, 10, 10))
        _img(tmp_path / "dog" / f"{i:02d}.jpg", 20, 50, (10, 10, 200))
    train = load_dataset(f"folder:{tmp_path}", "train", 16)
    test = load_dataset(f"folder:{tmp_path}", "test", 16)
    assert len(train) == 16 and len(test) == 4 and train.classes == ["cat", "dog"]
    assert {p.name for p, _ in test.files} == {"04.png", "09.png", "04.jpg", "09.jpg"}
    x, y = train[0]
    assert x.shape == (3, 16, 16) and y == 0 and float(x[0].mean()) > 0.7
    x, y = test[3]
    assert y == 1 and float(x[2].mean()) > 0.7
    batch = next(iter(make_loader(train, 5, shuffle=True, seed=0)))
    assert batch[0].shape == (5, 3, 16, 16) and batch[1].dtype == torch.int64


def test_folder_train_val_layout_and_unlabeled(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("val", 2)):
        for c in ("n01", "n02"):
            for i in range(n):
                _img(tmp_path / "set" / split / c / f"{i}.png", 64, 48, (i * 40, 0, 0))
    assert len(load_dataset(f"folder:{tmp_path / 'set'}", "train", 32)) == 6
    val = load_dataset(f"folder:{tmp_path / 'set'}", "test", 32)
    assert len(val) == 4 and sorted(lbl for _, lbl in val.files) == [0, 0, 1, 1]
    _img(tmp_path / "set" / "val" / "n99" / "0.png", 8, 8, (0, 0, 0))
    with pytest.raises(DataError, match="'n99'.*not a train class"):
        load_dataset(f"folder:{tmp_path / 'set'}", "test", 32)
    for i in range(5):
        _img(tmp_path / "flat" / f"{i}.png", 10, 10, (0, 0, 0))
    flat = load_dataset(f"folder:{tmp_path / 'flat'}", "test", 8)
    assert len(flat) == 1 and flat[0][1] == -1 and flat.num_classes == 0


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a directory"):
        load_dataset(f"folder:{tmp_path / 'missing'}", "train")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        load_dataset(f"folder:{tmp_path / 'empty'}", "train")
    bad = tmp_path / "bad" / "cls" / "broken.png"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    ds = load_dataset(f"folder:{tmp_path / 'bad'}", "train")
    with pytest.raises(DataError, match="broken.png"):
        ds[0]
    (tmp_path / "only_train" / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="neither test/ nor val/"):
        load_dataset(f"folder:{tmp_path / 'only_train'}", "test")


# ---------------------------------------------------------------- specs and loaders
def test_unknown_spec_and_bad_arguments() -> None:
    with pytest.raises(DataError, match="unknown data spec 'mnist'.*photos32.*digits32.*cifar10:PATH.*folder:PATH"):
        load_dataset("mnist", "train")
    assert KNOWN_SPECS == ("photos32", "digits32", "cifar10:PATH", "folder:PATH")
    with pytest.raises(DataError, match="unknown split 'val'"):
        load_dataset("photos32", "val")
    with pytest.raises(DataError, match="image_size"):
        load_dataset("photos32", "train", 0)


def test_make_loader_is_seeded() -> None:
    ds = load_dataset("digits32", "test", 32)

    def order(seed: int) -> list[int]:
        return torch.cat([y for _, y in make_loader(ds, 64, shuffle=True, seed=seed)]).tolist()

    assert order(1) == order(1)
    assert order(1) != order(2)
    assert sorted(order(1)) == sorted(ds.labels.tolist())
    loader = make_loader(ds, 100, shuffle=False, seed=0, drop_last=True)
    sizes = [len(y) for _, y in loader]
    assert sizes == [100] * (len(ds) // 100)
    with pytest.raises(ConfigError, match="batch_size"):
        make_loader(ds, 0, True, 0, False)
    with pytest.raises(DataError, match="no full batch"):
        make_loader(ds, 10_000, True, 0, drop_last=True)
