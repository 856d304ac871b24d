import os

import pytest
import torch
from ignite.engine import DeterministicEngine, Engine, Events
from torch.utils.data import Dataset
from torchvision import tv_tensors

from resnest_engine.data import (DataError, DataOptions, SamplerEpochs, close_loader,
                                 create_loaders)
from resnest_engine.data.loaders import make_train_loader
from resnest_engine.data.samplers import TrainSampler

from tests.support.data import make_folder


def test_create_loaders_digits_default_float_path():
    opts = DataOptions(dataset="digits", crop_size=32, small_image=True, workers=0)
    train, val, num_classes = create_loaders(opts, batch_size=64, test_batch_size=100, seed=0)
    assert num_classes == 10 and len(train) == 1437 // 64 and len(val) == 4
    x, y = next(iter(train))
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert train.batch_transform((x, y))[0] is x  # the default path needs no batch transform
    assert sum(len(b[1]) for b in val) == 360
    assert not train.pin_memory or torch.cuda.is_available()
    gray = DataOptions(dataset="digits", crop_size=32, small_image=True, workers=0, in_chans=1, pca_lighting=0)
    x, _ = next(iter(create_loaders(gray, batch_size=8, test_batch_size=8, seed=0)[0]))
    assert x.shape == (8, 1, 32, 32)  # ImageNet's 3-value mean/std averaged for one channel


def test_worker_reraised_data_error_keeps_one_line():
    from torch._utils import ExceptionWrapper

    try:
        raise DataError("cannot read image file /x/y.jpg: OSError: truncated")
    except DataError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 3")
    with pytest.raises(DataError) as info:
        wrapped.reraise()
    assert str(info.value) == ("cannot read image file /x/y.jpg: OSError: truncated "
                               "(in DataLoader worker process 3)")


def test_global_batch_must_divide_by_world_size(monkeypatch):
    import ignite.distributed as idist

    monkeypatch.setattr(idist, "get_world_size", lambda: 2)
    monkeypatch.setattr(idist, "get_rank", lambda: 1)
    opts = DataOptions(dataset="synthetic", synthetic_size=64, image_size=8, crop_size=8,
                       small_image=True, workers=0)
    with pytest.raises(DataError, match="batch_size=63 .*divide by the number of processes \\(2\\)"):
        create_loaders(opts, batch_size=63, test_batch_size=8, seed=0)
    with pytest.raises(DataError, match="test_batch_size=9"):
        create_loaders(opts, batch_size=8, test_batch_size=9, seed=0)
    train, val, _ = create_loaders(opts, batch_size=8, test_batch_size=6, seed=0)
    assert train.batch_size == 4 and val.batch_size == 3
    assert train.sampler.rank == 1 and train.sampler.num_replicas == 2 and len(train.sampler) == 32
    assert list(val.sampler) == list(range(1, 16, 2))
    with pytest.raises(DataError, match="fewer than one global batch"):
        create_loaders(opts, batch_size=80, test_batch_size=8, seed=0)


class IndexImages(Dataset):
    """Image i is a distinct uint8 pattern and its label is i, so batches name their indices."""

    def __init__(self, n=40, size=16):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return tv_tensors.Image(self.images[i]), i


AUG = DataOptions(crop_size=12, color_jitter=0.4, pca_lighting=0.1, random_erase=0.5, workers=2)


def _loader(workers=2, seed=11, n=40, batch=4):
    opts = DataOptions(**{**AUG.__dict__, "workers": workers})
    return make_train_loader(IndexImages(n), opts, batch, seed, num_replicas=1, rank=0)


def _record(engine_cls, loader, max_epochs, stop_at=None, state=None):
    seen = {}
    engine = engine_cls(lambda e, b: seen.__setitem__(e.state.iteration, (b[0].clone(), b[1].clone())))

    @engine.on(Events.STARTED)
    def _pin_seed(e):  # DeterministicEngine draws a random seed on every start otherwise
        e.state.seed = 0

    SamplerEpochs(loader).attach(engine)
    if stop_at is not None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=stop_at), lambda e: e.terminate())
    if state is not None:
        engine.load_state_dict(state)
    engine.run(loader, max_epochs=max_epochs)
    # Stop the workers now: freed through the engine's reference cycles they would each wait
    # out torch's 5 s join timeout (see close_loader).
    close_loader(engine.state.dataloader)
    close_loader(loader)
    return seen, engine


def _expected_batch(loader, epoch, step, batch=4):
    sampler = TrainSampler(len(loader.dataset), num_replicas=1, rank=0, seed=11)
    sampler.set_epoch(epoch)
    keys = list(sampler)[step * batch:(step + 1) * batch]
    items = [loader.dataset[k] for k in keys]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


@pytest.mark.slow  # DataLoader worker processes
def test_epochs_are_set_before_each_iterator_with_persistent_workers():
    loader = _loader(workers=2)
    seen, _ = _record(Engine, loader, max_epochs=3)
    assert len(seen) == 30 and loader.persistent_workers
    for it in (1, 10, 11, 17, 21, 30):  # first/last batches of each epoch
        epoch, step = divmod(it - 1, 10)
        x, y = _expected_batch(loader, epoch, step)
        assert torch.equal(seen[it][1], y) and torch.equal(seen[it][0], x), it
    epoch_indices = [sorted(int(v) for it in range(e * 10 + 1, e * 10 + 11) for v in seen[it][1])
                     for e in range(3)]
    assert all(ix == list(range(40)) for ix in epoch_indices)
    assert [int(v) for v in seen[1][1]] != [int(v) for v in seen[11][1]]


@pytest.mark.slow  # DataLoader worker processes
def test_workers_do_not_change_the_batches():
    with_workers, _ = _record(Engine, _loader(workers=2), max_epochs=2)
    in_process, _ = _record(Engine, _loader(workers=0), max_epochs=2)
    for it in with_workers:
        assert torch.equal(with_workers[it][0], in_process[it][0])


@pytest.mark.slow  # DataLoader worker processes
def test_mid_epoch_resume_gives_the_same_batches_with_deterministic_engine():
    full, _ = _record(DeterministicEngine, _loader(workers=2), max_epochs=3)
    first, engine = _record(DeterministicEngine, _loader(workers=2), max_epochs=3, stop_at=13)
    state = engine.state_dict()
    assert state["iteration"] == 13  # stopped in the middle of epoch 2 (of 10 iterations each)
    resumed, _ = _record(DeterministicEngine, _loader(workers=2), max_epochs=3, state=state)
    assert sorted(first) == list(range(1, 14)) and sorted(resumed) == list(range(14, 31))
    for it in range(1, 31):
        x, y = (first if it <= 13 else resumed)[it]
        assert torch.equal(y, full[it][1]), f"indices differ at iteration {it}"
        assert torch.equal(x, full[it][0]), f"augmented pixels differ at iteration {it}"


def test_deterministic_engine_keeps_the_batch_transform():
    loader = _loader(workers=0)
    engine = DeterministicEngine(lambda e, b: None)
    SamplerEpochs(loader).attach(engine)
    engine.run(loader, max_epochs=1)
    assert engine.state.dataloader is not loader
    assert engine.state.dataloader.batch_transform is loader.batch_transform


def test_prepare_batch_moves_and_transforms():
    loader = _loader(workers=0)
    x, y = loader.prepare_batch(next(iter(loader)), device="cpu")
    assert x.shape == (4, 3, 12, 12) and y.shape == (4,)


@pytest.mark.slow  # DataLoader worker processes
def test_corrupt_file_in_a_worker_is_a_one_line_error(tmp_path):
    root = make_folder(tmp_path, {"train": {"a": 4}, "val": {"a": 1}})
    bad = os.path.join(root, "train", "a", "001.png")
    open(bad, "wb").write(b"not an image")
    opts = DataOptions(dataset="imagefolder", root=root, crop_size=16, workers=1)
    train, _, _ = create_loaders(opts, batch_size=4, test_batch_size=1, seed=0)
    with pytest.raises(DataError) as info:
        next(iter(train))
    train.close()
    message = str(info.value)
    assert "\n" not in message and bad in message and "worker" in message
