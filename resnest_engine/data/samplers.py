"""Samplers: an epoch-keyed, distributed, optionally repeated train sampler; an eval sharder.

``TrainSampler`` shuffles with a generator seeded from (seed, epoch) (not seed 0 as
``DistributedSampler`` via ``idist.auto_dataloader``), gives every rank a disjoint strided share
of one permutation, and yields ``SampleKey(epoch, index, repeat)`` so the epoch reaches the
workers. Call ``set_epoch`` before each epoch's DataLoader iterator is created (see
``loaders.SamplerEpochs``).

``EvalShardSampler`` gives rank r the indices r, r+W, r+2W, ... with no padding, so
distributed evaluation sees every sample exactly once.
"""
from __future__ import annotations

import math
from typing import Iterator, List, Optional, Tuple

import ignite.distributed as idist
import torch
from torch.utils.data import Sampler

from .errors import DataError
from .reproducible import SampleKey, sample_seed

__all__ = ["TrainSampler", "EvalShardSampler"]


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

    def _order(self) -> Tuple[List[int], List[int]]:
        n, k = self.num_samples, self.aug_repeats
        if self.shuffle:
            g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, -1) >> 1)
            perm = torch.randperm(n, generator=g).tolist()
        else:
            perm = list(range(n))
        total = self.per_rank * self.num_replicas
        if k == 1:
            return perm[:total], [0] * total
        distinct = perm[:math.ceil(total / k)]
        indices = [i for i in distinct for _ in range(k)][:total]
        repeats = [r for _ in distinct for r in range(k)][:total]
        return indices, repeats

    def __iter__(self) -> Iterator[SampleKey]:
        indices, repeats = self._order()
        r, w, e = self.rank, self.num_replicas, self.epoch
        return iter([SampleKey(e, i, rep) for i, rep in zip(indices[r::w], repeats[r::w])])

    def __len__(self) -> int:
        return self.per_rank


class EvalShardSampler(Sampler[int]):
    """Rank r of W takes indices r, r+W, r+2W, ... of ``range(num_samples)``: no padding, no
    duplicates, ranks may differ in length by one."""

    def __init__(self, num_samples: int, *, num_replicas: Optional[int] = None,
                 rank: Optional[int] = None) -> None:
        self.num_samples = int(num_samples)
        self.num_replicas, self.rank = _world(num_replicas, rank)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.num_samples, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.num_samples, self.num_replicas))
