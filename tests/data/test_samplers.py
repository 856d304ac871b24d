from collections import Counter

import pytest
import torch
from torch.utils.data import BatchSampler

from resnest_engine.data import DataError
from resnest_engine.data.reproducible import SampleKey
from resnest_engine.data.samplers import EvalShardSampler, TrainSampler, WindowSampler


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


# --------------------------------------------------------------------------- the two train orders
# 23 blocks of uneven sizes (shards of 13-40 samples, as a converter's last shard is short).
BLOCKS = [40, 37, 13, 40, 40, 29, 40, 40, 33, 40, 18, 40, 40, 40, 25, 40, 40, 31, 40, 40, 22, 40, 9]
N = sum(BLOCKS)


def _sampler(order, world, rank, seed=5, **kw):
    if order == "window":
        return WindowSampler(BLOCKS, 4, num_replicas=world, rank=rank, seed=seed, **kw)
    return TrainSampler(N, num_replicas=world, rank=rank, seed=seed, **kw)


def _rank_batches(order, world, local_batch, epoch):
    out = []
    for rank in range(world):
        s = _sampler(order, world, rank)
        s.set_epoch(epoch)
        out.append([[k.index for k in b] for b in BatchSampler(s, local_batch, drop_last=True)])
    return out


@pytest.mark.parametrize("order", ["global", "window"])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_every_sample_once_per_epoch_and_equal_steps(order, world):
    local_batch = 16
    dropped = []
    for epoch in range(3):
        per_rank = _rank_batches(order, world, local_batch, epoch)
        assert len({len(b) for b in per_rank}) == 1  # every rank runs the same number of steps
        seen = Counter(i for batches in per_rank for b in batches for i in b)
        assert max(seen.values()) == 1 and set(seen) <= set(range(N))
        # The stated remainder: n mod W, plus W x (per-rank count mod batch): under one global batch
        per = N // world
        assert N - len(seen) == N % world + world * (per % local_batch) < world * local_batch
        dropped.append(set(range(N)) - set(seen))
    assert dropped[0] != dropped[1] != dropped[2]  # other samples left out every epoch


@pytest.mark.parametrize("order", ["global", "window"])
def test_the_epochs_sequence_does_not_depend_on_the_world_size(order):
    # What a 2 -> 1 (or any) process resume relies on: the epoch's sequence is one, split
    # differently. Global: strided; window: contiguous parts.
    one = [k.index for k in _sampler(order, 1, 0)]
    for world in (2, 3):
        parts = [[k.index for k in _sampler(order, world, r)] for r in range(world)]
        per = N // world
        if order == "global":
            merged = [parts[p % world][p // world] for p in range(per * world)]
        else:
            merged = [i for part in parts for i in part]
        assert merged == one[:per * world]


def test_window_keeps_each_rank_on_a_few_blocks_at_a_time():
    starts = [sum(BLOCKS[:b]) for b in range(len(BLOCKS) + 1)]
    block_of = {i: b for b in range(len(BLOCKS)) for i in range(starts[b], starts[b + 1])}
    seq = [k.index for k in _sampler("window", 1, 0)]
    # cut the sequence where each window's samples end: exactly its blocks, shuffled
    s = _sampler("window", 1, 0)
    perm_blocks = torch.randperm(len(BLOCKS), generator=s._generator()).tolist()
    pos = 0
    for w in range(0, len(perm_blocks), 4):
        group = perm_blocks[w:w + 4]
        size = sum(BLOCKS[b] for b in group)
        chunk = seq[pos:pos + size]
        assert {block_of[i] for i in chunk} == set(group)  # exactly the window's blocks
        assert chunk != sorted(chunk)  # shuffled within the window
        pos += size
    assert pos == N
    # Three ranks each read a contiguous part: only the windows at the parts' two borders are
    # read by two ranks, so all ranks together fetch at most B + (W - 1) x 4 blocks, where the
    # global order has every rank read (nearly) every block
    touched = [len({block_of[k.index] for k in _sampler("window", 3, r)}) for r in range(3)]
    assert sum(touched) <= len(BLOCKS) + 2 * 4
    spread = [len({block_of[k.index] for k in _sampler("global", 3, r)}) for r in range(3)]
    assert min(spread) >= len(BLOCKS) - 1


def test_window_with_block_groups_reads_a_few_files_at_a_time():
    # Parquet: 12 files of 10 row groups of 10 rows; 4 processes. The row groups of a file stay
    # together, so each process reads about a quarter of the files (plus the borders), where
    # permuting row groups alone would have every process read nearly every file.
    sizes, groups = [10] * 120, [b // 10 for b in range(120)]
    file_of = {i: (i // 10) // 10 for i in range(1200)}
    for world in (1, 4):
        grouped = [WindowSampler(sizes, 4, num_replicas=world, rank=r, seed=3, block_groups=groups)
                   for r in range(world)]
        files = [len({file_of[k.index] for k in s}) for s in grouped]
        assert sum(files) <= 12 + 2 * (world - 1), files
        seen = sorted(k.index for s in grouped for k in s)
        assert seen == sorted(set(seen)) and len(seen) == 1200 // world * world
    flat = [len({file_of[k.index] for k in WindowSampler(sizes, 4, num_replicas=4, rank=r,
                                                          seed=3)}) for r in range(4)]
    assert min(flat) >= 10  # without the groups
    # the sequence still does not depend on the world size
    one = [k.index for k in WindowSampler(sizes, 4, num_replicas=1, rank=0, seed=3,
                                          block_groups=groups)]
    four = [k.index for r in range(4) for k in WindowSampler(sizes, 4, num_replicas=4, rank=r,
                                                             seed=3, block_groups=groups)]
    assert four == one


def test_window_order_is_seeded_by_seed_and_epoch():
    a, b, c = _sampler("window", 2, 1, seed=1), _sampler("window", 2, 1, seed=1), \
        _sampler("window", 2, 1, seed=2)
    assert list(a) == list(b) and [k.index for k in a] != [k.index for k in c]
    b.set_epoch(1)
    assert [k.index for k in a] != [k.index for k in b] and {k.epoch for k in b} == {1}


def test_eval_contiguous_ranges_cover_every_index_once():
    for n, world in [(103, 2), (10, 3), (2, 4)]:
        parts = [list(EvalShardSampler(n, num_replicas=world, rank=r, contiguous=True))
                 for r in range(world)]
        assert [i for p in parts for i in p] == list(range(n))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
