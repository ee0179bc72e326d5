"""``load_dataset(spec, split, image_size)`` and ``make_loader``: the one entry point to every data set."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from edgesc.errors import ConfigError, DataError

#: the data specs :func:`load_dataset` understands
KNOWN_SPECS: tuple[str, ...] = ("photos32", "digits32", "cifar10:PATH", "folder:PATH")
SPLITS: tuple[str, ...] = ("train", "test")


def check_spec(spec: str) -> tuple[str, str]:
    """Check the form of a data spec without reading any data → ``(name, path)`` (path "" for embedded sets).

    Raises :class:`DataError` for an unknown name, a path given to an embedded set, or a missing path.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"empty data spec (known: {', '.join(KNOWN_SPECS)})")
    name, sep, arg = spec.partition(":")
    if name in ("photos32", "digits32") and not sep:
        return name, ""
    if name in ("cifar10", "folder"):
        if not arg:
            raise DataError(f"data spec '{spec}' needs a path: {name}:PATH")
        return name, arg
    raise DataError(f"unknown data spec '{spec}' (known: {', '.join(KNOWN_SPECS)})")


def load_dataset(spec: str, split: str = "train", image_size: int = 32) -> Dataset:
    """A torch Dataset of ``(image float32 [3, H, W] in [0, 1], label int)`` (label −1 when unlabeled).

    ``spec``: ``photos32`` (embedded photos, reconstruction), ``digits32`` (embedded demo classification set),
    ``cifar10:PATH`` (CIFAR-10 python format), ``folder:PATH`` (ImageFolder tree). ``H = W = image_size``.
    Every dataset has ``num_classes`` (0 when unlabeled).
    """
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}' (known: {', '.join(SPLITS)})")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
        raise DataError(f"image_size must be a positive integer, got {image_size!r}")
    name, sep, arg = spec.partition(":")
    if name == "photos32" and not sep:
        from edgesc.data.photos import load_photos

        return load_photos(split, image_size)
    if name == "digits32" and not sep:
        from edgesc.data.digits import load_digits32

        return load_digits32(split, image_size)
    if name in ("cifar10", "folder"):
        if not arg:
            raise DataError(f"data spec '{spec}' needs a path: {name}:PATH")
        if name == "cifar10":
            from edgesc.data.cifar import load_cifar10

            return load_cifar10(arg, split, image_size)
        from edgesc.data.folder import load_folder

        return load_folder(arg, split, image_size)
    raise DataError(f"unknown data spec '{spec}' (known: {', '.join(KNOWN_SPECS)})")


def check_task(dataset: Dataset, task: str, num_classes: int, model: str = "the model") -> None:
    """A classifier needs labels in ``[0, num_classes)``: refuse an unlabeled set (``num_classes`` 0, e.g.
    ``photos32``) or one with more classes than the model's head. Reconstruction takes any set."""
    if task != "classification":
        return
    have = getattr(dataset, "num_classes", None)
    name = getattr(dataset, "name", type(dataset).__name__)
    if have is None:
        return  # a custom Dataset without the attribute: trust the caller
    if have == 0:
        raise DataError(f"{model} is a classifier ({num_classes} classes) but data set {name} is unlabeled; "
                        f"use a labelled set (digits32, cifar10:PATH, folder:PATH with class folders)")
    if have > num_classes:
        raise DataError(f"data set {name} has {have} classes, more than the {num_classes} of {model}")


def make_loader(
    ds: Dataset,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader whose shuffling order depends only on ``seed`` (its own ``torch.Generator``)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    n = len(ds)  # type: ignore[arg-type]
    if n == 0 or (drop_last and n < batch_size):
        raise DataError(f"data set {getattr(ds, 'name', '')!s} has {n} items: no full batch of {batch_size}")
    gen = torch.Generator().manual_seed(int(seed))
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=gen, drop_last=drop_last,
                      num_workers=num_workers, persistent_workers=False)
