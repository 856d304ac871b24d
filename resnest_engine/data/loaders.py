"""Loaders: ``create_loaders`` (global batch split over processes) and ``SamplerEpochs``.

Per process: batch = global batch / world size (an error when it does not divide), ``workers``
DataLoader workers (not divided), persistent workers, pinned memory on CUDA, ``drop_last`` for
training. Training shuffles with ``TrainSampler`` seeded from the config seed (not through
``idist.auto_dataloader``, whose DistributedSampler always uses seed 0); evaluation shards with
``EvalShardSampler`` (no padding: every sample counted once over all ranks).

The loaders are ``ImageLoader`` objects (a ``DataLoader`` subclass, so ignite's
``DeterministicEngine`` can rebuild them): ``loader.batch_transform(batch)`` returns
``(float images, labels)`` for a batch already on the device, and ``loader.prepare_batch`` is a
drop-in ``prepare_batch`` for ignite's ``create_supervised_trainer`` / ``_evaluator`` that moves
the batch and applies it. On the default (float) path the transform returns the batch unchanged;
with ``fast_jpeg`` it normalises the uint8 batch (see ``jpeg.py``).

Reproducibility: call ``SamplerEpochs(train_loader).attach(trainer)`` so the sampler's epoch is
set before each epoch's DataLoader iterator is created, including after a mid-epoch resume.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Callable, List, Optional, Sequence, Tuple

import ignite.distributed as idist
import torch
from ignite.engine import Events
from ignite.utils import convert_tensor
from torch.utils.data import DataLoader, Dataset

from .cache import CachePlan, cache_normalizer, cached_split, pass_collated, plan_cache
from .datasets import build_dataset
from .errors import DataError, worker_died
from .gpu_decode import (DecodeBatchTransform, EncodedJpegSample, check_encoded, encoded_collate,
                         resolve_decode)
from .jpeg import FastJpegSample, fast_collate, identity_batch_transform, make_device_transform
from .options import DataOptions, validate_options
from .reproducible import SeededDataset, TransformedSample
from .samplers import EvalShardSampler, TrainSampler, WindowSampler
from .shard_cache import is_url
from .transforms import build_eval_transform, build_train_transform

logger = logging.getLogger("resnest_engine")

__all__ = ["ImageLoader", "create_loaders", "create_eval_loader", "make_train_loader", "make_eval_loader",
           "SamplerEpochs", "find_epoch_sampler", "close_loader", "train_order",
           "pin_data_choices"]


class ImageLoader(DataLoader):
    """A ``DataLoader`` carrying the batch transform to apply after the host-to-device copy.

    ``batch_transform`` and ``classes`` (the class names, index order) are constructor arguments
    (not only attributes) so that ignite's ``update_dataloader`` (used by ``DeterministicEngine``),
    which rebuilds the loader from its public attributes, keeps them.
    """

    def __init__(self, *args: Any, batch_transform: Optional[Callable] = None,
                 classes: Optional[Sequence[str]] = None, data_fingerprint: Optional[str] = None,
                 data_choices: Optional[dict] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.classes = list(classes) if classes is not None else None
        self.data_fingerprint = data_fingerprint
        self.data_choices = data_choices
        self.batch_transform = batch_transform if batch_transform is not None else identity_batch_transform

    def prepare_batch(self, batch: Sequence[Any], device: Optional[Any] = None,
                      non_blocking: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """Move every tensor of ``batch`` to ``device``, then apply ``batch_transform``; a
        transform with ``from_host`` (DATA.DECODE gpu) takes the host batch and moves it."""
        from_host = getattr(self.batch_transform, "from_host", None)
        if from_host is not None:
            return from_host(batch, device, non_blocking)
        moved = [convert_tensor(t, device=device, non_blocking=non_blocking) for t in batch]
        return self.batch_transform(moved)

    def close(self) -> None:
        """Stop this loader's persistent workers now (see ``close_loader``)."""
        close_loader(self)

    def __iter__(self):
        iterator = super().__iter__()
        return _WorkerWatch(iterator, self.num_workers) if self.num_workers > 0 else iterator


class _WorkerWatch:
    """An iterator of worker batches whose dead worker (torch's ``RuntimeError``, a traceback
    through the whole training loop) is a one-line :class:`WorkerDiedError` instead."""

    def __init__(self, iterator: Any, workers: int) -> None:
        self._it, self._workers = iterator, workers

    def __iter__(self) -> "_WorkerWatch":
        return self

    def __next__(self) -> Any:
        try:
            return next(self._it)
        except RuntimeError as e:
            codes = {w.pid: w.exitcode for w in getattr(self._it, "_workers", [])}
            died = worker_died(e, self._workers, codes)
            if died is None:
                raise
            raise died from None

    def __len__(self) -> int:
        return len(self._it)


def close_loader(loader: Any) -> None:
    """Stop the persistent workers of ``loader`` (a no-op without them); a later ``iter()``
    starts new ones.

    Persistent workers normally stop when their loader is freed. But a loader reachable only
    through a reference cycle (an ignite Engine's state holds its loader, and Engines sit in
    cycles) is freed by the cycle collector, which closes the worker queues before the
    iterator's shutdown runs; each worker then waits out torch's 5 s join timeout. Close loaders
    explicitly when you drop them mid-process (tests, notebooks, repeated runs); for the loader
    a ``DeterministicEngine`` ran, pass ``engine.state.dataloader`` (it rebuilds the loader).
    """
    loader = getattr(loader, "wrapped_loader", loader)  # a DevicePrefetcher: its loader's
    iterator = getattr(loader, "_iterator", None)
    if iterator is None:
        return
    loader._iterator = None
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


def _world() -> Tuple[int, int]:

    return idist.get_world_size(), idist.get_rank()


def _pin_memory(opts: DataOptions) -> bool:
    if opts.pin_memory is not None:
        return bool(opts.pin_memory)
    if not torch.cuda.is_available():
        return False

    return idist.device().type == "cuda"


def _decode_opts(opts: DataOptions, log: bool = False) -> DataOptions:
    """``opts`` with DATA.DECODE auto resolved for this process's device (logged with ``log``)."""
    if opts.decode != "auto":
        if log and opts.decode == "gpu":
            logger.info("JPEG decoding: gpu (as set)")
        return opts
    resolved, why = resolve_decode(opts, idist.device())
    if log:
        logger.info("JPEG decoding: %s (%s)", resolved.decode, why)
    return resolved


def _sample_fn(dataset: Dataset, opts: DataOptions, train: bool) -> Callable[[int], Any]:
    if opts.decode == "gpu":
        check_encoded(dataset, opts, "DATA.DECODE gpu")
        return EncodedJpegSample(dataset, opts, train)
    if opts.fast_jpeg:
        check_encoded(dataset, opts, "data.fast_jpeg")
        return FastJpegSample(dataset, opts, train)
    transform = build_train_transform(opts) if train else build_eval_transform(opts)
    return TransformedSample(dataset, transform)


def _loader_kwargs(opts: DataOptions, train: bool) -> dict:
    workers = opts.workers
    collate, transform = None, make_device_transform(opts)
    if opts.fast_jpeg:
        collate = fast_collate
    if opts.decode == "gpu":
        collate, transform = encoded_collate, DecodeBatchTransform(opts, train, transform)
    return dict(num_workers=workers, persistent_workers=bool(opts.persistent_workers and workers > 0),
                pin_memory=_pin_memory(opts), collate_fn=collate, batch_transform=transform)


def _loader_data(dataset: Dataset, opts: DataOptions, train: bool, seed: int,
                 plan: Optional[CachePlan]) -> Tuple[Dataset, dict]:
    """The loader's dataset and its keyword arguments: cached (``plan.use``) or per sample."""
    opts = _decode_opts(opts)
    kwargs = _loader_kwargs(opts, train)
    plan = plan if plan is not None else plan_cache(opts, [len(dataset)])
    if plan.use:
        kwargs.update(collate_fn=pass_collated, batch_transform=cache_normalizer(opts))
        return cached_split(dataset, opts, train, seed, plan), kwargs
    return SeededDataset(_sample_fn(dataset, opts, train), len(dataset), seed), kwargs


def train_order(dataset: Dataset, opts: DataOptions) -> str:
    """``DATA.SHUFFLE`` resolved for ``dataset``: ``global`` or ``window`` (auto: window for a
    blocked dataset, shards or Parquet, under a URL ROOT)."""
    blocked = callable(getattr(dataset, "block_sizes", None))
    order = opts.shuffle
    if order == "auto":
        order = "window" if blocked and opts.root and is_url(str(opts.root)) else "global"
    if order == "window" and not blocked:
        raise DataError(f"data.shuffle=window needs a dataset stored in shards or row groups "
                        f"(data.dataset shards or parquet), not data.dataset={opts.dataset}")
    return order


def make_train_loader(dataset: Dataset, opts: DataOptions, local_batch: int, seed: int,
                      num_replicas: Optional[int] = None, rank: Optional[int] = None,
                      cache: Optional[CachePlan] = None) -> ImageLoader:
    """The train loader of one process over an untransformed ``dataset``, in the order of
    ``DATA.SHUFFLE`` (:func:`train_order`). ``cache``: the ``plan_cache`` decision (None:
    planned for this split alone)."""
    order = train_order(dataset, opts)
    if order == "window":
        groups = getattr(dataset, "block_groups", None)
        sampler: TrainSampler = WindowSampler(
            dataset.block_sizes(), opts.shuffle_window, num_replicas=num_replicas, rank=rank,
            seed=seed, aug_repeats=opts.aug_repeats,
            block_groups=groups() if callable(groups) else None)
    else:
        sampler = TrainSampler(len(dataset), num_replicas=num_replicas, rank=rank, seed=seed,
                               aug_repeats=opts.aug_repeats)
    if len(sampler) < local_batch:
        raise DataError(f"the train split has {len(dataset)} samples, fewer than one global batch "
                        f"({local_batch} x {sampler.num_replicas} processes)")
    follow = getattr(dataset, "follow", None)
    if follow is not None:  # e.g. remote shards: fetched in the order this sampler reads them
        follow(sampler)
    data, kwargs = _loader_data(dataset, opts, True, seed, cache)
    choices = dict(shuffle=order, shuffle_window=opts.shuffle_window if order == "window" else None,
                   decode=_decode_opts(opts).decode)
    return ImageLoader(data, batch_size=local_batch, sampler=sampler, drop_last=True,
                       classes=getattr(dataset, "classes", None),
                       data_fingerprint=getattr(dataset, "fingerprint", None),
                       data_choices=choices, **kwargs)


def pin_data_choices(opts: DataOptions, saved: Optional[dict]) -> DataOptions:
    """``opts`` with the ``auto`` keys that a resumed run resolved (``saved``: its loader's
    ``data_choices``, from the checkpoint) set to those values: ``DATA.SHUFFLE: auto`` picks
    the order from the root's kind and ``DATA.DECODE: auto`` from this machine's device, and a
    run resumed from a local copy of its S3 data, or on a node without nvjpeg, must go on with
    the order and decoding it started with. Logged when it changes what auto would pick."""
    if not saved:
        return opts
    pinned = {}
    if opts.shuffle == "auto" and saved.get("shuffle") in ("global", "window"):
        pinned["shuffle"] = saved["shuffle"]
        if saved["shuffle"] == "window" and saved.get("shuffle_window"):
            pinned["shuffle_window"] = int(saved["shuffle_window"])
    if opts.decode == "auto" and saved.get("decode") in ("cpu", "gpu"):
        pinned["decode"] = saved["decode"]
    if pinned:
        logger.info("Resumed run's data choices kept for the auto keys: %s",
                    ", ".join(f"DATA.{k.upper()}={v}" for k, v in pinned.items()))
    return replace(opts, **pinned)


def make_eval_loader(dataset: Dataset, opts: DataOptions, local_batch: int,
                     num_replicas: Optional[int] = None, rank: Optional[int] = None,
                     cache: Optional[CachePlan] = None) -> ImageLoader:
    """The eval loader of one process: this rank's unpadded shard, in order, last batch kept
    (one contiguous range of the blocks under the window order, strided otherwise)."""
    sampler = EvalShardSampler(len(dataset), num_replicas=num_replicas, rank=rank,
                               contiguous=train_order(dataset, opts) == "window")
    data, kwargs = _loader_data(dataset, opts, False, 0, cache)
    return ImageLoader(data, batch_size=local_batch, sampler=sampler, drop_last=False,
                       classes=getattr(dataset, "classes", None), **kwargs)


def create_loaders(opts: DataOptions, batch_size: int, test_batch_size: int,
                   seed: int) -> Tuple[ImageLoader, ImageLoader, int]:
    """``(train_loader, val_loader, num_classes)`` for this process.

    ``batch_size`` and ``test_batch_size`` are global: each must divide by
    ``idist.get_world_size()``. Raises ``DataError`` for user errors.

    Args:
        opts: the data options (dataset, root, crop, augmentation, workers, ...).
        batch_size: the global training batch (images per optimizer step, all processes).
        test_batch_size: the global validation batch.
        seed: the seed of the shuffle order and of the per-sample augmentation draws.
    """
    validate_options(opts)
    opts = _decode_opts(opts, log=True)
    world, rank = _world()
    for name, value in (("batch_size", batch_size), ("test_batch_size", test_batch_size)):
        if not isinstance(value, int) or value < 1:
            raise DataError(f"{name} must be a positive integer, got {value!r}")
        if value % world:
            raise DataError(f"{name}={value} is a global batch and must divide by the number of "
                            f"processes ({world})")
    train_set = build_dataset(opts, "train")
    val_set = build_dataset(opts, "val")
    plan = plan_cache(opts, [len(train_set), len(val_set)])
    if not plan.use:
        logger.info("Data cache: not used (%s)", plan.reason)
    if train_order(train_set, opts) == "window":
        logger.info("Train order: window (blocks of the %d in the train split permuted, samples "
                    "shuffled within %d at a time, each process reading a contiguous part)",
                    len(train_set.block_sizes()), opts.shuffle_window)
    train = make_train_loader(train_set, opts, batch_size // world, seed, world, rank, plan)
    val = make_eval_loader(val_set, opts, test_batch_size // world, world, rank, plan)
    val.classes = train.classes  # index -> name (the train split's), stored with the run
    return train, val, len(train_set.classes)


def create_eval_loader(opts: DataOptions, test_batch_size: int,
                       classes: Optional[Sequence[str]] = None) -> Tuple[ImageLoader, List[str]]:
    """``(val_loader, class_names)`` for this process, reading only the validation split.

    Evaluation needs only the data it evaluates: the train split is never scanned. ``classes``
    (e.g. the names stored with a run) fixes the label order of an image folder; without them
    the folder's own class directories are used.
    """
    validate_options(opts)
    opts = _decode_opts(opts, log=True)
    world, rank = _world()
    if not isinstance(test_batch_size, int) or test_batch_size < 1 or test_batch_size % world:
        raise DataError(f"test_batch_size={test_batch_size!r} must be a positive global batch "
                        f"that divides by the number of processes ({world})")
    val_set = build_dataset(opts, "val", classes=classes)
    val = make_eval_loader(val_set, opts, test_batch_size // world, world, rank)
    return val, list(val_set.classes)


def find_epoch_sampler(loader: DataLoader) -> Any:
    """The sampler with ``set_epoch`` behind ``loader``, looking through ignite's
    ``ReproducibleBatchSampler`` and torch's ``BatchSampler``."""
    candidates = []
    batch_sampler = getattr(loader, "batch_sampler", None)
    while batch_sampler is not None:
        candidates.append(getattr(batch_sampler, "sampler", None))
        batch_sampler = getattr(batch_sampler, "batch_sampler", None)
    candidates.append(getattr(loader, "sampler", None))
    for sampler in candidates:
        if sampler is not None and hasattr(sampler, "set_epoch"):
            return sampler
    raise DataError("the loader has no sampler with set_epoch(); build it with create_loaders")


class SamplerEpochs:
    """Keeps ``loader``'s sampler epoch in step with an engine: ``SamplerEpochs(loader).attach(trainer)``.

    The epoch must be set before the DataLoader iterator of that epoch is created (the iterator
    draws the whole epoch's order, and persistent workers never see later changes). ignite
    creates it after ``STARTED``/``EPOCH_STARTED`` for the first epoch and right after
    ``DATALOADER_STOP_ITERATION`` for later ones, so the epoch is set on those two events to
    ``iteration // len(loader)``: the 0-based pass over the data, which is the engine's epoch
    when ``epoch_length == len(loader)`` (the default) and is right after a mid-epoch resume
    (``engine.load_state_dict`` with any iteration).
    """

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader
        self.sampler = find_epoch_sampler(loader)

    def __call__(self, engine: Any) -> None:
        try:
            length = len(self.loader)
        except TypeError:
            length = engine.state.epoch_length
        self.sampler.set_epoch(engine.state.iteration // max(1, int(length)))

    def attach(self, engine: Any) -> None:

        engine.add_event_handler(Events.STARTED, self)
        engine.add_event_handler(Events.DATALOADER_STOP_ITERATION, self)
