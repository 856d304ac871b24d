"""The recipe runner: config -> model, data, optimizer -> engines -> handlers -> ``trainer.run``.

A thin composition of public pieces; a user can do the same in Python (see README). Runs inside
each process of a distributed launch (``cli`` starts them).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import ignite.distributed as idist
import torch
from ignite.utils import manual_seed

from ..config import Config, config_warnings, dump_config, effective_lr
from ..data import SamplerEpochs, close_loader, create_loaders
from ..data.errors import DataError, worker_died
from ..data.loaders import pin_data_choices
from ..data.prefetch import DevicePrefetcher, resolve_prefetch
from ..engine import create_evaluator
from ..engine.precision import amp_warning, resolve_amp, resolve_channels_last
from ..storage.files import atomic_write_text
from .from_config import (build_freeze, build_handlers, build_loss, build_model,
                          build_optimizer, build_trainer, checkpoint_meta, data_options)
from ..handlers import GracefulInterrupt, attach_standard_handlers, setup_logger
from ..handlers.standard import training_finished
from ..handlers.tracking import MLFLOW_RUN_ID
from .resume import open_resume
from ..storage.run_dir import RunDir

__all__ = ["Outcome", "TrainResult", "train"]

logger = logging.getLogger("resnest_engine")


class Outcome(Enum):
    """How a :func:`train` call ended (the console command turns it into its exit status)."""

    #: Every epoch ran; the final weights and metrics are written.
    FINISHED = "finished"
    #: The loss went NaN/Inf; nothing was written after the last good resume point.
    NAN = "nan"
    #: SIGTERM/SIGINT arrived; a resume point was written (``--resume auto`` goes on).
    INTERRUPTED = "interrupted"
    #: The trainer stopped before its last epoch for another reason (e.g. a handler terminated it).
    UNFINISHED = "unfinished"


@dataclass
class TrainResult:
    """What :func:`train` returns: its :class:`Outcome`, and the metrics summary when finished."""

    outcome: Outcome
    metrics: Optional[Dict[str, Any]] = None


def _setup(cfg: Config, outdir: Path, preamble: Sequence[str]) -> Tuple[Any, str, bool]:
    """Run directory, log, seed and determinism; ``(device, amp, channels_last)`` resolved and
    logged."""
    if idist.get_rank() == 0:
        outdir.mkdir(parents=True, exist_ok=True)
    idist.barrier()
    setup_logger(RunDir(outdir).log)
    for line in preamble:
        logger.info("%s", line)
    for line in config_warnings(cfg):
        logger.warning("warning: %s", line)
    manual_seed(cfg.SEED)
    if cfg.TRAINING.DETERMINISTIC:
        torch.use_deterministic_algorithms(True, warn_only=True)
    device = idist.device()
    amp, amp_why = resolve_amp(cfg.TRAINING.AMP, device)
    channels_last, cl_why = resolve_channels_last(cfg.MODEL.CHANNELS_LAST, device)
    logger.info("Precision: %s (%s); channels_last: %s (%s)", amp, amp_why,
                "on" if channels_last else "off", cl_why)
    slow = amp_warning(amp, device)
    if slow:
        logger.warning("warning: %s", slow)
    return device, amp, channels_last


def train(cfg: Config, outdir: Path, resume: Optional[Path] = None,
          preamble: Sequence[str] = ()) -> TrainResult:
    """Train ``cfg`` into ``outdir``, optionally resuming from checkpoint ``resume`` (ours, or
    an official ``train.py`` checkpoint). ``preamble``: lines logged first (e.g. the launch
    arguments and an official config's translation).

    Args:
        cfg: the validated config.
        outdir: the run directory to write.
        resume: a checkpoint to resume from (ours, or an official ``train.py`` one).
        preamble: lines logged first (e.g. the launch arguments).
    """
    outdir, t, rank = Path(outdir), cfg.TRAINING, idist.get_rank()
    device, amp, channels_last = _setup(cfg, outdir, preamble)
    source = open_resume(resume, t.BATCH_SIZE, t.GRAD_ACCUM, idist.get_world_size()) if resume else None
    if source is not None and source.restore_threads(t.DETERMINISTIC):
        logger.info("Thread count restored to %d from the checkpoint", source.threads)

    # Data
    opts = data_options(cfg)
    if source is not None:  # the auto keys as the resumed run resolved them
        opts = pin_data_choices(opts, source.meta.get("data_choices"))
    train_loader, val_loader, num_classes = create_loaders(
        opts, t.BATCH_SIZE, t.TEST_BATCH_SIZE, cfg.SEED)
    if cfg.MODEL.NUM_CLASSES and cfg.MODEL.NUM_CLASSES != num_classes:
        raise DataError(f"MODEL.NUM_CLASSES is {cfg.MODEL.NUM_CLASSES} but {cfg.DATA.DATASET} has "
                        f"{num_classes} classes")
    class_names = getattr(train_loader, "classes", None)
    if rank == 0 and class_names is not None:
        atomic_write_text(RunDir(outdir).classes, json.dumps(list(class_names)) + "\n")

    prefetch, prefetch_why = resolve_prefetch(cfg.DATA.PREFETCH, device)
    logger.info("Device prefetch: %s (%s)", "on" if prefetch else "off", prefetch_why)
    # The engine runs the wrapper; SamplerEpochs and the checkpoints see the loader through it.
    train_feed = DevicePrefetcher(train_loader, device) if prefetch else train_loader

    # Model (a resume replaces the pretrained weights) and optimizer
    model = build_model(cfg, num_classes, pretrained=source is None)
    logger.info("Model %s: %.2fM parameters, %d classes", cfg.MODEL.NAME,
                sum(p.numel() for p in model.parameters()) / 1e6, num_classes)
    fingerprint = getattr(train_loader, "data_fingerprint", None)
    if source is not None:
        source.check_architecture(model)
        source.check_data(fingerprint)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = idist.auto_model(model, sync_bn=cfg.MODEL.SYNC_BN)
    raw_model = getattr(model, "module", model)
    optimizer = build_optimizer(cfg, raw_model)

    # Trainer, evaluator and handlers
    loss_fn, mix = build_loss(cfg, num_classes)
    grad_accum = source.grad_accum if source is not None else t.GRAD_ACCUM
    trainer = build_trainer(cfg, model, optimizer, loss_fn, mix, device=device, amp=amp,
                            channels_last=channels_last, grad_accum=grad_accum,
                            prepare_batch=getattr(train_feed, "prepare_batch", None))
    if mix is not None:
        mix.attach(trainer, cfg.DATA.MIXUP_OFF_EPOCH)
    SamplerEpochs(train_loader).attach(trainer)
    freeze = build_freeze(cfg, raw_model, optimizer)
    if freeze is not None:
        freeze.attach(trainer)
    evaluator = create_evaluator(raw_model, device=device, amp=amp, channels_last=channels_last,
                                 prepare_batch=getattr(val_loader, "prepare_batch", None))
    epoch_length = len(train_loader)
    meta = checkpoint_meta(cfg, raw_model, grad_accum, class_names, fingerprint,
                           getattr(train_loader, "data_choices", None))
    handlers = build_handlers(cfg, trainer, model, optimizer, evaluator, val_loader, epoch_length,
                              str(outdir), meta,
                              mlflow_run_id=source.meta.get(MLFLOW_RUN_ID) if source else None)
    if handlers.ema is not None and channels_last:
        handlers.ema.ema_model.to(memory_format=torch.channels_last)
    attach_standard_handlers(trainer, handlers)

    # SIGTERM/SIGINT from here on end in a resume point (also during the resume's own loading)
    interrupt = GracefulInterrupt(handlers.write_resume_point, t.NAN_CHECK_EVERY)
    interrupt.attach(trainer)

    # Resume, or a new run directory
    if source is not None:
        logger.info("%s", source.load(handlers, trainer, model=raw_model, optimizer=optimizer,
                                      epoch_length=epoch_length, max_epochs=t.EPOCHS))
    if rank == 0 and (source is None or source.new_run_dir):
        dump_config(cfg, RunDir(outdir).config)
    if source is None:
        logger.info("Run directory %s; %s on %d process(es), effective LR %.6f for batch %d",
                    outdir, cfg.MODEL.NAME, idist.get_world_size(), effective_lr(cfg),
                    t.BATCH_SIZE)

    # Run
    try:
        trainer.run(train_feed, max_epochs=t.EPOCHS)
    except RuntimeError as e:  # torch's SIGCHLD handler raises it wherever the main thread is
        died = worker_died(e, cfg.DATA.WORKERS)
        if died is None:
            raise
        raise died from None
    finally:
        # Persistent workers freed by the garbage collector each wait out a 5 s timeout.
        for loader in (trainer.state.dataloader, train_loader, val_loader):
            close_loader(loader)
    if not handlers.writes_allowed():  # the NaN guard fired
        return TrainResult(Outcome.NAN)
    if interrupt.signal is not None:
        return TrainResult(Outcome.INTERRUPTED)
    if not training_finished(trainer):
        return TrainResult(Outcome.UNFINISHED)
    return TrainResult(Outcome.FINISHED, handlers.history.summary())
