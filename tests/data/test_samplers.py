from collections import Counter

import pytest
import torch
from torch.utils.data import BatchSampler

from resnest_engine.data import DataError
from resnest_engine.data.reproducible import SampleKey
from resnest_engine.data.samplers import EvalShardSampler, TrainSampler


def _epoch_batches(n, world, local_batch, epoch, seed=3, aug_repeats=0):
    out = []
    for rank in range(world):
        s = TrainSampler(n, num_replicas=world, rank=rank, seed=seed, aug_repeats=aug_repeats)
        s.set_epoch(epoch)
        out.append(list(BatchSampler(s, local_batch, drop_last=True)))
    return out


@pytest.mark.parametrize("n,world,local_batch", [(103, 2, 8), (100, 2, 5), (37, 1, 4), (64, 2, 32)])
def test_two_ranks_cover_epoch_without_duplicates(n, world, local_batch):
    global_batch = world * local_batch
    orders = []
    for epoch in range(3):
        per_rank = _epoch_batches(n, world, local_batch, epoch)
        assert len({len(b) for b in per_rank}) == 1  # ranks run the same number of steps
        keys = [k for batches in per_rank for batch in batches for k in batch]
        assert all(isinstance(k, SampleKey) and k.epoch == epoch and k.repeat == 0 for k in keys)
        seen = Counter(k.index for k in keys)
        assert max(seen.values()) == 1  # none twice
        assert n - len(seen) < global_batch  # every sample but fewer than one global batch
        assert set(seen) <= set(range(n))
        orders.append([k.index for k in keys])
    assert orders[0] != orders[1] != orders[2]  # reshuffled every epoch


def test_same_seed_same_order_other_seed_differs():
    a = TrainSampler(50, num_replicas=1, rank=0, seed=1)
    b = TrainSampler(50, num_replicas=1, rank=0, seed=1)
    c = TrainSampler(50, num_replicas=1, rank=0, seed=2)
    assert list(a) == list(b) and [k.index for k in a] != [k.index for k in c]
    a.set_epoch(4)
    b.set_epoch(4)
    assert list(a) == list(b) and all(k.epoch == 4 for k in a)


def test_aug_repeats_sends_copies_to_different_ranks():
    n, world, k = 60, 3, 3
    per_rank = []
    for rank in range(world):
        s = TrainSampler(n, num_replicas=world, rank=rank, seed=0, aug_repeats=k)
        assert len(s) == n // world
        per_rank.append(list(s))
    for rank_keys in per_rank:  # a rank never gets two copies of one index
        assert len({key.index for key in rank_keys}) == len(rank_keys)
    all_keys = [key for keys in per_rank for key in keys]
    copies = Counter(key.index for key in all_keys)
    assert set(copies.values()) == {k} and len(copies) == n // k
    assert len(set(all_keys)) == len(all_keys)  # copies differ in SampleKey.repeat
    # One process: the copies sit next to each other (same batch).
    single = list(TrainSampler(10, num_replicas=1, rank=0, seed=0, aug_repeats=2))
    assert [key.index for key in single[0::2]] == [key.index for key in single[1::2]]
    assert [key.repeat for key in single[:4]] == [0, 1, 0, 1]


@pytest.mark.parametrize("n,world", [(103, 2), (10, 3), (2, 4), (0, 2)])
def test_eval_shards_union_is_every_index_once(n, world):
    shards = [list(EvalShardSampler(n, num_replicas=world, rank=r)) for r in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(n))
    assert [len(EvalShardSampler(n, num_replicas=world, rank=r)) for r in range(world)] == [len(s) for s in shards]
    assert shards[0][:2] == list(range(0, n, world))[:2]


def test_eval_shards_through_dataloader_keep_last_partial_batch():
    data = torch.arange(23)
    seen = []
    for rank in range(2):
        loader = torch.utils.data.DataLoader(data, batch_size=4,
                                             sampler=EvalShardSampler(23, num_replicas=2, rank=rank))
        seen += [int(v) for batch in loader for v in batch]
    assert sorted(seen) == list(range(23))


def test_invalid_world():
    with pytest.raises(DataError, match="invalid rank 2 for world size 2"):
        TrainSampler(10, num_replicas=2, rank=2)
    with pytest.raises(DataError, match="cannot be shared"):
        TrainSampler(1, num_replicas=2, rank=0)


def test_defaults_come_from_idist():
    s = TrainSampler(10)
    assert (s.num_replicas, s.rank) == (1, 0)
