"""Samplers: an epoch-keyed, distributed, optionally repeated train sampler; an eval sharder.

``TrainSampler`` shuffles with a generator seeded from (seed, epoch) (not seed 0 as
``DistributedSampler`` via ``idist.auto_dataloader``), gives every rank a disjoint strided share
of one permutation, and yields ``SampleKey(epoch, index, repeat)`` so the epoch reaches the
workers. Call ``set_epoch`` before each epoch's DataLoader iterator is created (see
``loaders.SamplerEpochs``).

``WindowSampler`` is the order for data stored in blocks (tar shards, Parquet row groups) that
each process should stream a few at a time: the blocks permuted, the samples permuted within
windows of K blocks, each rank taking one contiguous part.

Both train orders are a sequence of the epoch's samples that does not depend on the number of
processes; W processes split it (strided or contiguous) after truncating it to a multiple of W.
With the loaders' ``drop_last``, each epoch leaves out the ``n mod W`` samples at the end of the
sequence plus ``W x (n // W mod b)`` more (b = per-process batch): always fewer than one global
batch, and other samples every epoch; every rank runs the same number of steps.

``EvalShardSampler`` gives rank r the indices r, r+W, r+2W, ... with no padding (or, for
blocked data, one contiguous range), so distributed evaluation sees every sample exactly once.
"""
from __future__ import annotations

import math
from typing import Iterator, List, Optional, Sequence, Tuple

import ignite.distributed as idist
import torch
from torch.utils.data import Sampler

from .errors import DataError
from .reproducible import SampleKey, sample_seed

__all__ = ["TrainSampler", "WindowSampler", "EvalShardSampler"]


def _world(num_replicas: Optional[int], rank: Optional[int]) -> Tuple[int, int]:
    if num_replicas is None or rank is None:

        num_replicas = idist.get_world_size() if num_replicas is None else num_replicas
        rank = idist.get_rank() if rank is None else rank
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise DataError(f"invalid rank {rank} for world size {num_replicas}")
    return int(num_replicas), int(rank)


class TrainSampler(Sampler[SampleKey]):
    """Each epoch: one permutation of ``range(num_samples)`` drawn from (seed, epoch), truncated
    to a multiple of the world size (no sample is padded in twice), rank r taking positions
    r, r+W, ... With ``aug_repeats`` = k >= 2 (repeated augmentation, as timm's --aug-repeats),
    the first ceil(n / k) indices of the permutation are each repeated k times in a row before
    the strided split, so the k copies land on k different ranks (when k <= W) or in the same
    batch (one process); the epoch keeps about ``num_samples`` draws in all. Copies differ in
    ``SampleKey.repeat`` and so get different augmentations.
    """

    def __init__(self, num_samples: int, *, num_replicas: Optional[int] = None,
                 rank: Optional[int] = None, seed: int = 0, shuffle: bool = True,
                 aug_repeats: int = 0) -> None:
        self.num_samples = int(num_samples)
        self.num_replicas, self.rank = _world(num_replicas, rank)
        self.seed, self.shuffle = int(seed), bool(shuffle)
        self.aug_repeats = int(aug_repeats) if aug_repeats and aug_repeats > 1 else 1
        self.epoch = 0
        self.per_rank = self.num_samples // self.num_replicas
        if self.per_rank < 1:
            raise DataError(f"{self.num_samples} samples cannot be shared by "
                            f"{self.num_replicas} processes")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, -1) >> 1)

    def permutation(self) -> List[int]:
        """This epoch's sequence of all sample indices (the same for every world size)."""
        if not self.shuffle:
            return list(range(self.num_samples))
        return torch.randperm(self.num_samples, generator=self._generator()).tolist()

    def _order(self) -> Tuple[List[int], List[int]]:
        k = self.aug_repeats
        perm = self.permutation()
        total = self.per_rank * self.num_replicas
        if k == 1:
            return perm[:total], [0] * total
        distinct = perm[:math.ceil(total / k)]
        indices = [i for i in distinct for _ in range(k)][:total]
        repeats = [r for _ in distinct for r in range(k)][:total]
        return indices, repeats

    def _mine(self, seq: List[int]) -> List[int]:
        """This rank's share of the truncated sequence: positions r, r+W, ..."""
        return seq[self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[SampleKey]:
        indices, repeats = self._order()
        e = self.epoch
        return iter([SampleKey(e, i, rep) for i, rep in zip(self._mine(indices),
                                                             self._mine(repeats))])

    def __len__(self) -> int:
        return self.per_rank


class WindowSampler(TrainSampler):
    """The train order for blocked data: ``block_sizes`` are the sample counts of consecutive
    blocks of the dataset (shards, row groups) in index order. Each epoch, drawn from (seed,
    epoch): the blocks are permuted; the samples of each run of ``window`` consecutive blocks of
    that permutation are permuted together; the resulting sequence (the same for every world
    size) is truncated to a multiple of W and rank r takes its r-th contiguous part. A rank thus
    reads about ``len / mean block size + window`` blocks per epoch, a few at a time.
    ``block_groups`` (the file of each Parquet row group) keeps a group's blocks together: the
    groups are permuted, then the blocks within each, then the windows are cut. Repeated
    augmentation repeats indices in the sequence as ``TrainSampler`` does (the copies then land
    mostly in one batch)."""

    def __init__(self, block_sizes: Sequence[int], window: int, *,
                 num_replicas: Optional[int] = None, rank: Optional[int] = None, seed: int = 0,
                 shuffle: bool = True, aug_repeats: int = 0,
                 block_groups: Optional[Sequence[int]] = None) -> None:
        sizes = [int(b) for b in block_sizes]
        if block_groups is not None and len(block_groups) != len(sizes):
            raise DataError(f"{len(block_groups)} block groups for {len(sizes)} blocks")
        self.block_groups = [int(g) for g in block_groups] if block_groups is not None else None
        if any(b < 0 for b in sizes) or window < 1:
            raise DataError(f"invalid blocks {sizes[:4]}... or window {window} for the window order")
        super().__init__(sum(sizes), num_replicas=num_replicas, rank=rank, seed=seed,
                         shuffle=shuffle, aug_repeats=aug_repeats)
        self.block_sizes, self.window = sizes, int(window)
        starts = [0]
        for b in sizes:
            starts.append(starts[-1] + b)
        self._starts = starts

    def permutation(self) -> List[int]:
        if not self.shuffle:
            return list(range(self.num_samples))
        g = self._generator()
        blocks = self._block_sequence(g)
        out: List[int] = []
        for w in range(0, len(blocks), self.window):
            pool = torch.cat([torch.arange(self._starts[b], self._starts[b + 1])
                              for b in blocks[w:w + self.window]])
            out.extend(pool[torch.randperm(len(pool), generator=g)].tolist())
        return out

    def _block_sequence(self, g: torch.Generator) -> List[int]:
        """The blocks permuted; with ``block_groups`` (e.g. the file of each Parquet row group),
        the groups permuted and the blocks permuted within each group."""
        if self.block_groups is None:
            return torch.randperm(len(self.block_sizes), generator=g).tolist()
        members: dict = {}
        for block, group in enumerate(self.block_groups):
            members.setdefault(group, []).append(block)
        groups = list(members)
        out: List[int] = []
        for k in torch.randperm(len(groups), generator=g).tolist():
            blocks = members[groups[k]]
            out.extend(blocks[i] for i in torch.randperm(len(blocks), generator=g).tolist())
        return out

    def _mine(self, seq: List[int]) -> List[int]:
        return seq[self.rank * self.per_rank:(self.rank + 1) * self.per_rank]


class EvalShardSampler(Sampler[int]):
    """Rank r of W takes indices r, r+W, r+2W, ... of ``range(num_samples)`` or, ``contiguous``
    (blocked data: each rank reads only its part of the blocks), the r-th of W consecutive
    ranges: no padding, no duplicates, ranks may differ in length by one."""

    def __init__(self, num_samples: int, *, num_replicas: Optional[int] = None,
                 rank: Optional[int] = None, contiguous: bool = False) -> None:
        self.num_samples = int(num_samples)
        self.num_replicas, self.rank = _world(num_replicas, rank)
        self.contiguous = bool(contiguous)

    def _range(self) -> range:
        n, w, r = self.num_samples, self.num_replicas, self.rank
        if self.contiguous:
            return range(r * n // w, (r + 1) * n // w)
        return range(r, n, w)

    def __iter__(self) -> Iterator[int]:
        return iter(self._range())

    def __len__(self) -> int:
        return len(self._range())
