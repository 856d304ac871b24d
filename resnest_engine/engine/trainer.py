"""The training Engine and its step.

ignite's ``create_supervised_trainer`` hard-codes CUDA fp16 autocast and accumulates gradients
over the global iteration (windows cross epoch ends), so the step is written here: one engine
iteration is one optimizer step, and accumulation splits that step's batch into micro-batches.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
from ignite.engine import DeterministicEngine, Engine
from ignite.engine.deterministic import ReproducibleBatchSampler, update_dataloader
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, IterableDataset

from .events import register_train_events
from .rng import decode_ignite_rng_states, encode_ignite_rng_states

__all__ = ["AMP_MODES", "SeededDeterministicEngine", "autocast_context", "create_trainer",
           "default_prepare_batch"]

AMP_MODES = ("off", "fp16", "bf16")

BatchTransform = Callable[[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]


class _EagerBatchSampler(ReproducibleBatchSampler):
    """ignite's ``ReproducibleBatchSampler`` drawing the epoch's order when the DataLoader
    iterator is created (right after the engine seeds the epoch), not at the first batch: on a
    mid-epoch resume ignite restores the saved RNG state in between, so a lazily drawn shuffle
    order (``RandomSampler`` without its own generator) would differ from the original run's."""

    def __iter__(self):
        # A multi-worker DataLoader calls iter() on its batch sampler twice while building one
        # iterator (__init__ and _reset), so the resume offset is consumed only once batches
        # are actually taken.
        self.batch_indices = list(self.batch_sampler)
        start = self.start_iteration or 0
        indices = self.batch_indices[start:]

        def _batches():
            self.start_iteration = None
            yield from indices

        return _batches()


class SeededDeterministicEngine(DeterministicEngine):
    """ignite's ``DeterministicEngine`` with a pinned seed.

    ignite draws ``state.seed`` at random on every ``STARTED`` (and does not checkpoint it); here it
    is fixed at construction, stored in ``state_dict()`` and restored by ``load_state_dict``. The
    RNG states ignite keeps for a mid-epoch resume are stored as tensors and plain types so the
    checkpoint loads with ``weights_only=True``.
    """

    def __init__(self, process_function: Callable, seed: int) -> None:
        super().__init__(process_function)
        self._pinned_seed = int(seed)
        self.state.seed = self._pinned_seed

    def _init_run(self) -> None:
        super()._init_run()
        self.state.seed = self._pinned_seed

    def _setup_engine(self) -> None:
        # A wrapper of a loader (``DevicePrefetcher``: ``wrapped_loader``) gets its loader's
        # batch sampler swapped in place, as a bare loader does.
        dl = self.state.dataloader
        inner = getattr(dl, "wrapped_loader", None)
        target = inner if inner is not None else dl
        if (isinstance(target, DataLoader) and not isinstance(target.dataset, IterableDataset)
                and isinstance(target.batch_sampler, BatchSampler)
                and not isinstance(target.batch_sampler, ReproducibleBatchSampler)):
            target = update_dataloader(target, _EagerBatchSampler(target.batch_sampler))
            if inner is not None:
                dl.wrapped_loader = target
            else:
                self.state.dataloader = target
        super()._setup_engine()

    def _from_iteration(self, iteration: int):
        # ignite starts a bare DataLoader at ``iteration`` through its batch sampler, but reads
        # any other iterable from the epoch's start, discarding batches; a wrapper's loader is
        # started the DataLoader way and the wrapper iterates it.
        dl = self.state.dataloader
        inner = getattr(dl, "wrapped_loader", None)
        if not (isinstance(inner, DataLoader)
                and isinstance(inner.batch_sampler, ReproducibleBatchSampler)):
            return super()._from_iteration(iteration)
        iteration %= len(inner.batch_sampler)
        self._setup_seed()
        if iteration > 0:
            inner.batch_sampler.start_iteration = iteration
        return iter(dl)

    def state_dict(self):
        sd = super().state_dict()
        sd["seed"] = self._pinned_seed
        if sd.get("rng_states") is not None:
            sd["rng_states"] = encode_ignite_rng_states(sd["rng_states"])
        return sd

    def load_state_dict(self, state_dict) -> None:
        state_dict = dict(state_dict)
        seed = state_dict.pop("seed", None)
        if isinstance(state_dict.get("rng_states"), dict):
            state_dict["rng_states"] = decode_ignite_rng_states(state_dict["rng_states"])
        super().load_state_dict(state_dict)
        if seed is not None:
            self._pinned_seed = int(seed)
            self.state.seed = self._pinned_seed


def autocast_context(device: torch.device, amp: str):
    """``torch.autocast`` for ``amp`` in ``("off", "fp16", "bf16")`` on CPU or CUDA."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    if amp == "off":
        return contextlib.nullcontext()
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


PrepareBatch = Callable[[Any, torch.device, bool], Tuple[torch.Tensor, torch.Tensor]]


def default_prepare_batch(batch: Any, device: torch.device, non_blocking: bool = False
                          ) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` from a batch's first two items, moved to ``device``."""
    return (batch[0].to(device, non_blocking=non_blocking),
            batch[1].to(device, non_blocking=non_blocking))


def create_trainer(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    device: Union[str, torch.device, None] = None,
    amp: str = "off",
    scaler: Optional[torch.amp.GradScaler] = None,
    grad_accum: int = 1,
    clip_grad: float = 0.0,
    channels_last: bool = False,
    batch_transform: Optional[BatchTransform] = None,
    prepare_batch: Optional[PrepareBatch] = None,
    non_blocking: bool = True,
    deterministic: bool = False,
    seed: Optional[int] = None,
) -> Engine:
    """Build the training ``Engine``; one iteration = one optimizer step.

    Args:
        model: the model, optionally wrapped in ``DistributedDataParallel``.
        optimizer: the optimizer stepped once per iteration.
        loss_fn: ``loss_fn(logits, target)``, mean over the batch; the target is whatever
            ``batch_transform`` returns (soft targets after mixup).
        device: where batches go (default: the model's device).
        amp: ``"off"``, ``"fp16"`` (autocast + ``GradScaler``) or ``"bf16"`` (autocast), on CPU or
            CUDA. For fp16 a ``GradScaler`` is created unless given; it is ``engine.state.scaler``
            (ignite's own place for it, as in ``create_supervised_trainer``), None otherwise.
        scaler: the ``GradScaler`` for fp16 (default: a new one).
        grad_accum: split each batch into this many micro-batches; gradients are accumulated and
            DDP syncs only on the last one (``no_sync``). The batch always means images per step.
        clip_grad: clip the global gradient norm to this value (after unscaling); 0 = off.
        channels_last: move inputs to channels_last memory format (convert the model yourself).
        batch_transform: ``(x, y) -> (x, y)`` after the transfer (mixup/cutmix plug in here);
            ``output["y"]`` keeps the hard labels.
        prepare_batch: ``(batch, device, non_blocking) -> (x, y)``, ignite's convention: moves
            the loader's batch to the device (default: its first two items). The data package's
            loaders provide ``loader.prepare_batch`` (it also normalises the fast uint8 JPEG path).
        non_blocking: asynchronous host-to-device copies.
        deterministic: use :class:`SeededDeterministicEngine` with ``seed``.
        seed: that engine's seed (None means 0); unused without ``deterministic``.

    ``engine.state.output`` is a dict: ``loss`` (0-d tensor, mean over the whole batch, not
    synced to the host), ``batch_size`` (int), ``y_pred`` (detached logits), ``y`` (hard labels),
    ``soft_targets`` (bool: the step trained on mixed targets, i.e. ``batch_transform.active``
    was true; accuracy against ``y`` means little then), and ``grad_norm`` (0-d tensor) when
    clipping. The engine has :class:`~resnest_engine.engine.events.TrainEvents` registered.
    """
    if grad_accum < 1:
        raise ValueError(f"grad_accum must be >= 1, got {grad_accum}")
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    if amp == "fp16" and scaler is None:
        scaler = torch.amp.GradScaler(device.type)
    autocast_context(device, amp)  # validates amp
    params = [p for g in optimizer.param_groups for p in g["params"]]
    prepare = prepare_batch or default_prepare_batch
    is_ddp = isinstance(model, nn.parallel.DistributedDataParallel)

    def train_step(engine: Engine, batch: Any) -> Dict[str, Any]:
        model.train()
        x, y = prepare(batch, device, non_blocking)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        hard_y = y
        soft = bool(getattr(batch_transform, "active", False))
        if batch_transform is not None:
            x, y = batch_transform(x, y)
        n = x.shape[0]
        k = min(grad_accum, n)
        optimizer.zero_grad(set_to_none=True)
        total_loss = torch.zeros((), device=device)
        preds = []
        for i, (xi, yi) in enumerate(zip(x.chunk(k), y.chunk(k))):
            sync = not is_ddp or i == k - 1
            with (contextlib.nullcontext() if sync else model.no_sync()):
                with autocast_context(device, amp):
                    out = model(xi)
                    # Weight by the micro-batch's share so the sum equals the full batch's mean.
                    loss = loss_fn(out, yi) * (xi.shape[0] / n)
                if scaler is not None:
                    scaler.scale(loss).backward()
                else:
                    loss.backward()
            total_loss += loss.detach().float()
            preds.append(out.detach())
        output: Dict[str, Any] = {}
        if clip_grad > 0:
            if scaler is not None:
                scaler.unscale_(optimizer)
            output["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, clip_grad)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        output.update(loss=total_loss, batch_size=n, y_pred=preds[0] if k == 1 else torch.cat(preds), y=hard_y,
                      soft_targets=soft)
        return output

    if deterministic:
        engine: Engine = SeededDeterministicEngine(train_step, seed=0 if seed is None else seed)
    else:
        engine = Engine(train_step)
    engine.state.scaler = scaler
    register_train_events(engine)
    return engine
