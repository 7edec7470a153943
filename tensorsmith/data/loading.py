"""Feeding the training loop through ``torch.utils.data``: a Dataset, a seeded sampler, a loader.

Batches depend only on the seed and the epoch (epoch mode) or the micro-batch index (step mode),
never on how many batches were drawn before: a run resumed at epoch or step k draws exactly the
batches an uninterrupted run drew (DESIGN.md §6). A dataset whose samples are random (image
augmentation) gets ``(epoch, index)`` from its sampler and seeds each sample by (seed, epoch,
sample), so it draws the same whichever worker process fetches it.

The datasets here fetch a whole batch at once (``__getitems__``, which ``DataLoader`` calls with
the sampler's index batch): an in-memory table is one tensor index per batch, not one Python call
per row, so the loader costs about what a hand-written slicing loop does (``bench/overhead.py``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = [
    "BucketSampler",
    "EpochFeed",
    "EpochSampler",
    "Padded",
    "StepFeed",
    "StepSampler",
    "Tensors",
    "Windows",
    "sequential",
    "shard_of",
]

Batch = tuple[torch.Tensor, ...]
Index = torch.Tensor | slice | np.ndarray


def _whole(batch: Any) -> Any:
    """collate_fn for datasets that return whole batches from ``__getitems__``."""
    return batch


def _loader(dataset: Dataset[Any], batch_sampler: Any, workers: int = 0) -> DataLoader[Any]:
    """A DataLoader that leaves torch's global RNG alone: its iterator draws the workers' base
    seed from its own generator, so dropout's stream is the same whether or not a run resumed
    (and so whenever a new iterator starts)."""
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        collate_fn=_whole,
        num_workers=workers,
        generator=torch.Generator().manual_seed(0),
    )


class Tensors(Dataset[Batch]):
    """Equal-length tensors (inputs …, target), indexed a batch at a time."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        n = {len(t) for t in tensors}
        if len(n) != 1:
            raise ValueError(f"tensors of different lengths: {sorted(n)}")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index: int) -> Batch:
        return tuple(t[index] for t in self.tensors)

    def __getitems__(self, index: Index) -> Batch:
        return tuple([t[index] for t in self.tensors])


class EpochSampler(Sampler[Index]):
    """Index batches of one epoch: a permutation seeded by (seed, epoch), cut into batches.

    ``set_epoch`` chooses the epoch, as ``DistributedSampler`` does. Without shuffling (or with
    one batch holding every row) the batches are slices, which index without copying.
    """

    def __init__(
        self, n: int, batch_size: int, seed: int, shuffle: bool = True, tag_epoch: bool = False
    ) -> None:
        self.n = n
        self.batch_size = max(1, min(batch_size, n))
        self.seed = seed
        self.shuffle = shuffle and self.batch_size < n
        self.tag_epoch = tag_epoch  # yield (epoch, index): for datasets that draw per sample
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        for index in self._batches():
            yield (self.epoch, index) if self.tag_epoch else index

    def _batches(self) -> Iterator[Index]:
        if not self.shuffle:
            for start in range(0, self.n, self.batch_size):
                yield slice(start, start + self.batch_size)
            return
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=gen)
        for start in range(0, self.n, self.batch_size):
            yield order[start : start + self.batch_size]


class BucketSampler(EpochSampler):
    """Length-bucketed batches: a seeded permutation of the epoch is cut into buckets of
    ``bucket_batches`` batches, each bucket sorted by length and cut into batches, and the
    batches shuffled. A batch then holds samples of similar length, so padding it to its
    longest sample costs little; the batches still depend only on (seed, epoch)."""

    def __init__(
        self, lengths: torch.Tensor, batch_size: int, seed: int, bucket_batches: int = 50
    ) -> None:
        super().__init__(len(lengths), batch_size, seed)
        self.lengths = lengths
        self.bucket = self.batch_size * bucket_batches

    def _batches(self) -> Iterator[Index]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=gen)
        batches: list[torch.Tensor] = []
        for start in range(0, self.n, self.bucket):
            bucket = order[start : start + self.bucket]
            bucket = bucket[torch.argsort(self.lengths[bucket], stable=True)]
            batches += list(torch.split(bucket, self.batch_size))
        for i in torch.randperm(len(batches), generator=gen).tolist():
            yield batches[i]


def _rows(index: Index, n: int) -> int:
    if isinstance(index, slice):
        return len(range(*index.indices(n)))
    return len(index)


def shard_of(index: Index, n: int, rank: int, size: int) -> tuple[Index, float]:
    """Rank ``rank``'s part of one global index batch, and its share of the batch's rows × size.

    The parts are contiguous and differ by at most one row; a rank whose part would be empty
    (a last batch smaller than the world) gets the batch's first row with share 0, so every rank
    still runs one forward and backward (the gradient all-reduce needs every rank).
    """
    if isinstance(index, tuple):  # (epoch, index) from a sampler that tags its batches
        part, share = shard_of(index[1], n, rank, size)
        return (index[0], part), share
    rows = _rows(index, n)
    base, extra = divmod(rows, size)
    count = base + (rank < extra)
    start = rank * base + min(rank, extra)
    if count == 0:
        start, count = 0, 1
        share = 0.0
    else:
        share = count * size / rows
    if isinstance(index, slice):
        first = index.indices(n)[0] + start
        return slice(first, first + count), share
    return index[start : start + count], share


class EpochFeed:
    """The train split in epochs: ``batches(epoch)`` is a ``DataLoader`` over that epoch.

    ``shard(rank, size)`` makes it one rank's feed: each global batch is cut into ``size``
    parts and this rank trains on its own; ``shares(epoch)`` gives each part's weight.
    """

    unit = "epoch"
    rank, size = 0, 1

    def __init__(
        self,
        dataset: Dataset[Any],
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        workers: int = 0,
        tokens_per_sample: int = 1,
        sampler: EpochSampler | None = None,
    ) -> None:
        self.dataset = dataset
        self.sampler = sampler or EpochSampler(len(cast(Any, dataset)), batch_size, seed, shuffle)
        self.workers = workers
        self.tokens_per_sample = tokens_per_sample

    def __len__(self) -> int:
        return len(self.sampler)

    def shard(self, rank: int, size: int) -> None:
        self.rank, self.size = rank, size

    def _indices(self, epoch: int, start: int) -> Iterator[tuple[Index, float]]:
        self.sampler.set_epoch(epoch)
        n = len(cast(Any, self.dataset))
        for index in itertools.islice(self.sampler, start, None):
            yield shard_of(index, n, self.rank, self.size) if self.size > 1 else (index, 1.0)

    def shares(self, epoch: int, start: int = 0) -> Iterator[float]:
        """The weight of each of this rank's batches: its rows × world size / the batch's."""
        return (share for _, share in self._indices(epoch, start))

    def batches(self, epoch: int, start: int = 0) -> Iterable[Batch]:
        """The batches of ``epoch`` from batch ``start`` on (a run resumed mid-epoch)."""
        indices = (index for index, _ in self._indices(epoch, start))
        fetch = getattr(self.dataset, "__getitems__", None)
        if self.workers == 0 and fetch is not None:
            # in-memory tensors: the loader's per-batch machinery would cost about a third of a
            # tiny network's step (measured by bench/overhead.py), so fetch directly
            return (fetch(index) for index in indices)
        return _loader(self.dataset, list(indices), self.workers)


class Padded(Dataset[Batch]):
    """Padded sequences (N, L, …) with their lengths and targets; a batch is cut to its longest
    sequence and comes as ``(x, mask, *targets)`` with ``mask`` (B, T) True on real steps."""

    def __init__(self, x: torch.Tensor, lengths: torch.Tensor, *targets: torch.Tensor) -> None:
        self.x, self.lengths, self.targets = x, lengths, targets

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> Batch:
        return tuple(t[0] for t in self.__getitems__(torch.tensor([index])))

    def __getitems__(self, index: Index) -> Batch:
        lengths = self.lengths[index]  # (B,)
        longest = max(int(lengths.max()), 1) if len(lengths) else 1
        x = self.x[index][:, :longest]  # (B, T, …)
        mask = torch.arange(longest) < lengths[:, None]  # (B, T)
        x = x.long() if not x.is_floating_point() else x
        return (x, mask, *(t[index] for t in self.targets))


class Windows(Dataset[Batch]):
    """Language-model windows of a token array: start ``s`` gives x = tokens[s:s+T] and
    y = tokens[s+1:s+T+1], each (T,) int64."""

    def __init__(self, tokens: np.ndarray, block_size: int) -> None:
        self.tokens = tokens
        self.block_size = block_size

    def __len__(self) -> int:
        return len(self.tokens) - self.block_size

    def __getitem__(self, start: int) -> Batch:
        x, y = self.__getitems__(np.asarray([start]))
        return x[0], y[0]

    def __getitems__(self, starts: np.ndarray) -> Batch:
        idx = np.asarray(starts)[:, None] + np.arange(self.block_size + 1)  # (B, T+1)
        w = np.asarray(self.tokens[idx]).astype(np.int64)
        return torch.from_numpy(w[:, :-1].copy()), torch.from_numpy(w[:, 1:].copy())


class StepSampler(Sampler[np.ndarray]):
    """Endless random index batches; batch ``i`` depends only on (seed, i), from ``start`` on."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int = 0) -> None:
        self.n, self.batch_size, self.seed, self.start = n, batch_size, seed, start

    def __iter__(self) -> Iterator[np.ndarray]:
        i = self.start
        while True:
            # a fresh generator per batch (not one stream advanced batch by batch) is what makes
            # a resumed run draw the same batches as an uninterrupted one
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, i]))
            yield rng.integers(0, self.n, size=self.batch_size)
            i += 1


class StepFeed:
    """The train split in steps: ``stream(start)`` yields micro-batch ``start``, ``start + 1`` …

    ``shard(rank, size)`` makes it one rank's feed: its part of each global micro-batch (the
    batch size is a multiple of the world size, so every part weighs the same).
    """

    unit = "step"
    rank, size = 0, 1

    def __init__(
        self, dataset: Dataset[Any], batch_size: int, seed: int, tokens_per_sample: int = 1
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.tokens_per_sample = tokens_per_sample

    def shard(self, rank: int, size: int) -> None:
        self.rank, self.size = rank, size

    def shares(self, epoch: int, start: int = 0) -> Iterator[float]:
        return itertools.repeat(1.0)

    def stream(self, start: int) -> Iterator[Batch]:
        sampler = StepSampler(len(cast(Any, self.dataset)), self.batch_size, self.seed, start)
        part = self.batch_size // self.size
        local = (b[self.rank * part : (self.rank + 1) * part] for b in sampler)
        return iter(_loader(self.dataset, local if self.size > 1 else sampler))


def sequential(
    dataset: Dataset[Any], indices: Sequence[Index], workers: int = 0
) -> Iterable[Batch]:
    """Evaluation batches: the given index batches in order, through a ``DataLoader``."""
    return _loader(dataset, list(indices), workers)
