"""DevicePrefetcher: on the CPU a pass-through (the loader's batches, bitwise); the engine's
batch-sampler swap and mid-epoch resume reach the wrapped loader; on CUDA (when there is one) the
prefetched batches equal the loader's ``prepare_batch`` on the device."""
import pytest
import torch
from ignite.engine import Events

from resnest_engine.data import SamplerEpochs, close_loader
from resnest_engine.data.prefetch import DevicePrefetcher
from resnest_engine.engine.trainer import SeededDeterministicEngine
from tests.data.test_loaders import _loader


def _batches(iterable, epochs, sampler):
    out = []
    for e in range(epochs):
        sampler.set_epoch(e)
        out += [[t.clone() for t in b] for b in iterable]
    return out


def _equal(a, b):
    assert len(a) == len(b)
    for ba, bb in zip(a, b):
        assert len(ba) == len(bb) and all(torch.equal(x, y) and x.dtype == y.dtype
                                          for x, y in zip(ba, bb))


def test_cpu_pass_through_yields_the_loaders_batches():
    loader = _loader(workers=0)
    pf = DevicePrefetcher(loader, "cpu")
    assert not pf.active and len(pf) == len(loader) == 10
    assert pf.sampler is loader.sampler and pf.dataset is loader.dataset
    assert pf.batch_transform is loader.batch_transform
    twin = _loader(workers=0)
    ref = _batches(twin, 2, twin.sampler)
    got = _batches(pf, 2, loader.sampler)
    _equal(ref, got)
    b = next(iter(pf))
    xa, ya = pf.prepare_batch(b, torch.device("cpu"))
    xb, yb = loader.prepare_batch(b, torch.device("cpu"))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    pf.set_epoch(3)
    assert loader.sampler.epoch == 3


def _record(feed, max_epochs, stop_at=None, state=None):
    seen = {}
    engine = SeededDeterministicEngine(
        lambda e, b: seen.__setitem__(e.state.iteration, [t.clone() for t in b]), seed=0)
    SamplerEpochs(feed).attach(engine)
    if stop_at is not None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=stop_at), lambda e: e.terminate())
    if state is not None:
        engine.load_state_dict(state)
    engine.run(feed, max_epochs=max_epochs)
    close_loader(engine.state.dataloader)
    return seen, engine


def test_mid_epoch_resume_through_the_prefetcher_is_bitwise_the_loaders():
    full, _ = _record(_loader(workers=0), max_epochs=2)
    pf = DevicePrefetcher(_loader(workers=0), "cpu")
    first, engine = _record(pf, max_epochs=2, stop_at=13)
    # the engine swapped the wrapped loader's batch sampler, and still runs the wrapper
    assert engine.state.dataloader is pf
    assert type(pf.wrapped_loader.batch_sampler).__name__ == "_EagerBatchSampler"
    state = engine.state_dict()
    resumed, _ = _record(DevicePrefetcher(_loader(workers=0), "cpu"), max_epochs=2, state=state)
    assert sorted(first) == list(range(1, 14)) and sorted(resumed) == list(range(14, 21))
    for it in range(1, 21):
        _equal([full[it]], [(first if it <= 13 else resumed)[it]])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_prefetch_equals_prepare_batch_on_the_device():
    dev = torch.device("cuda")
    loader = _loader(workers=0)
    ref = [loader.prepare_batch(b, dev) for b in _batches(loader, 1, loader.sampler)]
    pf = DevicePrefetcher(_loader(workers=0), dev)
    assert pf.active
    got = []
    for b in _batches(pf, 1, pf.sampler):
        x, y = pf.prepare_batch(b, dev)
        assert x.device.type == "cuda" and x.is_floating_point()
        got.append((x, y))
    torch.cuda.synchronize()
    _equal(ref, got)
