"""A step-indexed batch sampler: the examples of global step ``s`` are a pure function of (seed, s).

Epoch ``e`` visits the data in the order ``randperm(N, seed=hash(seed, e))``; step ``s`` takes batch
``s mod (N // B)`` of epoch ``s // (N // B)`` (the last incomplete batch of an epoch is dropped). Because nothing
else is stateful, ``--resume`` continues with exactly the batches the uninterrupted run would have seen, and
under DDP each rank takes its own strided share of the same global batch.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler

from edgesc.errors import DataError


class StepBatchSampler(Sampler[list[int]]):
    """Yields the index lists of steps ``start, start+1, …, stop-1`` (global batch split over ranks)."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, stop: int, rank: int = 0,
                 world: int = 1) -> None:
        if n < batch_size:
            raise DataError(f"the training set has {n} examples, fewer than the batch size {batch_size}")
        if batch_size % world:
            raise DataError(f"batch size {batch_size} is not divisible by the {world} processes")
        self.n, self.batch, self.seed = n, batch_size, seed
        self.start, self.stop, self.rank, self.world = start, stop, rank, world
        self.per_epoch = n // batch_size
        self._perm_epoch = -1
        self._perm = torch.empty(0, dtype=torch.long)

    def _epoch_perm(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % (2**63))
            self._perm = torch.randperm(self.n, generator=g)
            self._perm_epoch = epoch
        return self._perm

    def indices(self, step: int) -> list[int]:
        """The global batch of ``step`` restricted to this rank."""
        epoch, pos = divmod(step, self.per_epoch)
        batch = self._epoch_perm(epoch)[pos * self.batch:(pos + 1) * self.batch]
        return batch[self.rank::self.world].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            yield self.indices(step)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)
