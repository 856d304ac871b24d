"""The recipe runner: config -> model, data, optimizer -> engines -> handlers -> ``trainer.run``.

A thin composition of public pieces; a user can do the same in Python (see README). Runs inside
each process of a distributed launch (``cli`` starts them).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import ignite.distributed as idist
import torch
from ignite.utils import manual_seed
from torch import nn

from .config import Config, config_to_dict, config_warnings, dump_config, effective_lr
from .data import MixupCutmix, SamplerEpochs, close_loader, create_loaders
from .engine.precision import amp_warning, resolve_amp, resolve_channels_last
from .engine import (SoftTargetCrossEntropy, create_evaluator, create_optimizer, create_trainer,
                     param_groups)
from .exit_codes import ExitCode
from .from_config import CLASSES_FILE, build_model, data_options
from .handlers import (FreezeBody, GracefulInterrupt, StandardOptions, attach_standard_handlers,
                       build_standard_handlers, check_architecture, load_checkpoint,
                       read_checkpoint, setup_logger, training_finished)
from .handlers.official_checkpoint import is_official_checkpoint, load_official_checkpoint
from .models.weights import strip_prefixes

__all__ = ["Interrupted", "RunResult", "checkpoint_meta", "elastic_accum", "elastic_resume_point",
           "train"]

logger = logging.getLogger("resnest_engine")

def checkpoint_meta(cfg: Config, model: nn.Module, grad_accum: Optional[int] = None,
                    class_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    return {"model": cfg.MODEL.NAME, "model_args": dict(model.model_args),
            "num_classes": model.num_classes, "config": config_to_dict(cfg),
            "world_size": idist.get_world_size(), "threads": torch.get_num_threads(),
            "grad_accum": grad_accum or cfg.TRAINING.GRAD_ACCUM,
            "class_names": list(class_names) if class_names is not None else None}


def elastic_accum(batch: int, saved_world: int, saved_accum: int, world: int) -> int:
    """Micro-steps per optimizer step on ``world`` processes that keep the global batch and, where
    it divides, the per-process micro-batch of the saved run (``batch / (saved_world x
    saved_accum)``); otherwise 1 (a smaller micro-batch). Raises ``CheckpointError`` when the
    global batch does not divide by ``world``."""
    from .handlers.checkpoint import CheckpointError
    if batch % world:
        raise CheckpointError(f"TRAINING.BATCH_SIZE {batch} (the global batch of the saved run) "
                              f"does not divide by {world} processes; resume with a number of "
                              f"processes that divides it (the run used {saved_world})")
    micro = batch // (saved_world * saved_accum)
    per_process = batch // world
    return per_process // micro if per_process % micro == 0 and per_process >= micro else 1


def elastic_resume_point(ckpt: Dict[str, Any], path: Path, cfg: Config, world: int
                         ) -> Tuple[Dict[str, Any], Path, int]:
    """``(checkpoint, its path, grad_accum)`` to resume on ``world`` processes.

    Same world size as the checkpoint: it as it is (the bitwise guarantee). Another world size:
    an epoch-boundary resume point (the newest mid-epoch point is replaced by the newest epoch-end
    point beside it, said in the log), the same global batch through gradient accumulation, and
    a log line on what is no longer guaranteed.
    """
    from .handlers.checkpoint import EPOCH_PREFIX, CheckpointError, list_checkpoints
    meta = ckpt["meta"]
    saved_world = int(meta.get("world_size") or world)
    saved_accum = int(meta.get("grad_accum") or cfg.TRAINING.GRAD_ACCUM)
    if saved_world == world:
        return ckpt, path, saved_accum
    t = ckpt["trainer"]
    length = int(t["epoch_length"])
    if int(t["iteration"]) % length:
        boundary = None
        candidates = sorted(list_checkpoints(path.parent) +
                            list_checkpoints(path.parent, EPOCH_PREFIX),
                            key=lambda p: int(p.stem.split("-i")[-1]), reverse=True)
        for other in candidates:
            try:
                cand = read_checkpoint(other)
            except CheckpointError:
                continue
            it = int(cand["trainer"]["iteration"])
            if it % length == 0 and it < int(t["iteration"]):
                boundary = (cand, other)
                break
        if boundary is None:
            raise CheckpointError(f"{path} is a mid-epoch resume point of a {saved_world}-process "
                                  f"run and no epoch-end resume point is beside it; resume with "
                                  f"{saved_world} processes")
        logger.warning("%s is a mid-epoch resume point of %d processes: another world size "
                       "resumes from the epoch boundary %s (epoch %d); the steps after it are "
                       "trained again", path.name, saved_world, boundary[1].name,
                       int(boundary[0]["trainer"]["iteration"]) // length)
        ckpt, path = boundary
        saved_accum = int(ckpt["meta"].get("grad_accum") or saved_accum)
    accum = elastic_accum(cfg.TRAINING.BATCH_SIZE, saved_world, saved_accum, world)
    micro_before = cfg.TRAINING.BATCH_SIZE // (saved_world * saved_accum)
    micro_now = cfg.TRAINING.BATCH_SIZE // (world * accum)
    logger.warning(
        "Resuming a %d-process run on %d processes (elastic, from %s at epoch %d): same global "
        "batch %d (%d micro-step(s) of %d per process, was %d of %d), same LR schedule position, "
        "EMA, scaler and metrics history. Not bitwise: each epoch's sample order is re-drawn from "
        "the seed and epoch for %d processes%s.", saved_world, world, path.name,
        int(ckpt["trainer"]["iteration"]) // length, cfg.TRAINING.BATCH_SIZE, accum, micro_now,
        saved_accum, micro_before, world,
        "" if micro_now == micro_before else " and BatchNorm sees micro-batches of "
        f"{micro_now} instead of {micro_before}")
    return ckpt, path, accum


@dataclass
class RunResult:
    exit_code: int
    metrics: Optional[Dict[str, Any]] = None


class Interrupted(Exception):
    """SIGTERM/SIGINT arrived; a resume point was written."""


def train(cfg: Config, outdir: Path, resume: Optional[Path] = None,
          preamble: Sequence[str] = ()) -> RunResult:
    """Train ``cfg`` into ``outdir``, optionally resuming from checkpoint ``resume`` (ours, or
    an official ``train.py`` checkpoint). ``preamble``: lines logged first (e.g. the launch
    arguments and an official config's translation)."""
    rank = idist.get_rank()
    outdir = Path(outdir)
    if rank == 0:
        outdir.mkdir(parents=True, exist_ok=True)
    idist.barrier()
    setup_logger(outdir / "log.txt")
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

    ckpt = None
    official = False
    if resume is not None:
        ckpt = read_checkpoint(resume, allow_official=True)
        official = is_official_checkpoint(ckpt)
    if ckpt is not None and not official:
        saved_threads = ckpt["meta"].get("threads")
        if cfg.TRAINING.DETERMINISTIC and saved_threads and saved_threads != torch.get_num_threads():
            torch.set_num_threads(int(saved_threads))
            logger.info("Thread count restored to %d from the checkpoint", saved_threads)
    grad_accum = cfg.TRAINING.GRAD_ACCUM
    if ckpt is not None and not official:
        ckpt, resume, grad_accum = elastic_resume_point(ckpt, Path(resume), cfg,
                                                        idist.get_world_size())

    opts = data_options(cfg)
    train_loader, val_loader, num_classes = create_loaders(
        opts, cfg.TRAINING.BATCH_SIZE, cfg.TRAINING.TEST_BATCH_SIZE, cfg.SEED)
    if cfg.MODEL.NUM_CLASSES and cfg.MODEL.NUM_CLASSES != num_classes:
        from .data import DataError
        raise DataError(f"MODEL.NUM_CLASSES is {cfg.MODEL.NUM_CLASSES} but {cfg.DATA.DATASET} has "
                        f"{num_classes} classes")
    class_names = getattr(train_loader, "classes", None)
    if rank == 0 and class_names is not None:
        import json

        from .files import atomic_write_text
        atomic_write_text(outdir / CLASSES_FILE, json.dumps(list(class_names)) + "\n")
    model = build_model(cfg, num_classes, pretrained=ckpt is None)
    logger.info("Model %s: %.2fM parameters, %d classes", cfg.MODEL.NAME,
                sum(p.numel() for p in model.parameters()) / 1e6, num_classes)
    if ckpt is not None:
        check_architecture({"model": strip_prefixes(ckpt["state_dict"]), "meta": {}}
                           if official else ckpt, model.state_dict(), resume)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = idist.auto_model(model, sync_bn=cfg.MODEL.SYNC_BN)
    raw_model = model.module if hasattr(model, "module") else model
    net = torch.compile(model) if cfg.MODEL.COMPILE else model

    o = cfg.OPTIMIZER
    lr = effective_lr(cfg)
    groups = param_groups(raw_model, o.WEIGHT_DECAY, no_bn_wd=o.DISABLE_BN_WD,
                          body_lr_scale=o.BODY_LR_SCALE)
    optimizer = create_optimizer(groups, o.NAME, lr, o.MOMENTUM, o.WEIGHT_DECAY, o.BETAS)

    d = cfg.DATA
    mix = None
    if d.MIXUP > 0 or d.CUTMIX > 0:
        mix = MixupCutmix(num_classes, d.MIXUP, d.CUTMIX, d.MIXUP_PROB, d.MIXUP_SWITCH_PROB,
                          d.LABEL_SMOOTHING)
        loss_fn: nn.Module = SoftTargetCrossEntropy()
    else:
        loss_fn = nn.CrossEntropyLoss(label_smoothing=d.LABEL_SMOOTHING)
    t = cfg.TRAINING
    trainer = create_trainer(
        net, optimizer, loss_fn, device=device, amp=amp, grad_accum=grad_accum,
        clip_grad=t.CLIP_GRAD, channels_last=channels_last, batch_transform=mix,
        prepare_batch=getattr(train_loader, "prepare_batch", None),
        deterministic=t.DETERMINISTIC, seed=cfg.SEED)
    if mix is not None:
        mix.attach(trainer, d.MIXUP_OFF_EPOCH)
    SamplerEpochs(train_loader).attach(trainer)
    if o.FREEZE_BODY_EPOCHS > 0:
        FreezeBody(raw_model, optimizer, o.FREEZE_BODY_EPOCHS).attach(trainer)
    if o.BODY_LR_SCALE != 1.0 or o.FREEZE_BODY_EPOCHS > 0:
        head = sum(p.numel() for p in raw_model.get_classifier().parameters())
        body = sum(p.numel() for p in raw_model.parameters()) - head
        logger.info("Fine-tuning: classifier LR %g (%d parameters), body LR %g = x%g (%d "
                    "parameters)%s", lr, head, lr * o.BODY_LR_SCALE, o.BODY_LR_SCALE, body,
                    f"; body frozen in epochs 1-{o.FREEZE_BODY_EPOCHS}"
                    if o.FREEZE_BODY_EPOCHS else "")
    evaluator = create_evaluator(raw_model, device=device, amp=amp,
                                 channels_last=channels_last,
                                 prepare_batch=getattr(val_loader, "prepare_batch", None))
    epoch_length = len(train_loader)
    handlers = build_standard_handlers(
        trainer, model, optimizer, val_loader,
        StandardOptions(
            epochs=t.EPOCHS, epoch_length=epoch_length, lr=lr, output_dir=str(outdir),
            lr_scheduler=o.LR_SCHEDULER, warmup_epochs=o.WARMUP_EPOCHS,
            warmup_start_factor=o.WARMUP_START_FACTOR, min_lr=o.MIN_LR, milestones=o.STEPS,
            gamma=o.GAMMA, poly_power=o.POLY_POWER, dropblock_prob=cfg.MODEL.DROPBLOCK_PROB,
            ema_decay=t.EMA_DECAY, val_every=t.VAL_EVERY, val_start=t.VAL_START,
            ckpt_every=t.CKPT_EVERY,
            ckpt_every_iters=t.CKPT_EVERY_ITERS, keep_checkpoints=t.KEEP_CHECKPOINTS,
            keep_best=t.KEEP_BEST, nan_check_every=t.NAN_CHECK_EVERY,
            log_every=cfg.LOGGING.LOG_EVERY, tensorboard=cfg.LOGGING.TENSORBOARD,
            progress_bar=cfg.LOGGING.PROGRESS_BAR, amp=amp,
            channels_last=channels_last, meta=checkpoint_meta(cfg, raw_model, grad_accum, class_names)),
        evaluator=evaluator)
    attach_standard_handlers(trainer, handlers)
    if handlers.ema is not None and channels_last:
        handlers.ema.ema_model.to(memory_format=torch.channels_last)

    if official:
        info = load_official_checkpoint(ckpt, raw_model, optimizer, trainer, handlers.lr_scheduler,
                                        epoch_length, t.EPOCHS, resume)
        if rank == 0:
            dump_config(cfg, outdir / "config.yaml")
        logger.info("Resumed from the official checkpoint %s: %d epoch(s) done (official epoch "
                    "%d), continuing at epoch %d of %d (official epoch %d) with its weights and "
                    "%d SGD momentum buffers. An official checkpoint resumes at an epoch boundary "
                    "with fresh RNG, sampler and metrics history: not the bitwise continuation "
                    "of our own checkpoints.", resume, info["epochs_done"],
                    info["epochs_done"] - 1, info["epochs_done"] + 1, t.EPOCHS,
                    info["epochs_done"], info["momentum_buffers"])
    elif ckpt is not None:
        load_checkpoint(ckpt, handlers.to_save)
        is_resume_file = Path(resume).name.startswith("resume-")
        if is_resume_file and "checkpointer" in ckpt and handlers.resume_checkpointer is not None:
            handlers.resume_checkpointer.load_state_dict(ckpt["checkpointer"])
        best_state = ckpt.get("checkpointer") if not is_resume_file else ckpt.get("best_checkpointer")
        if best_state and handlers.best_checkpointer is not None:
            handlers.best_checkpointer.load_state_dict(best_state)
        logger.info("Resumed from %s (epoch %d, iteration %d)", resume, trainer.state.epoch,
                    trainer.state.iteration)
    else:
        if rank == 0:
            dump_config(cfg, outdir / "config.yaml")
        logger.info("Run directory %s; %s on %d process(es), effective LR %.6f for batch %d",
                    outdir, cfg.MODEL.NAME, idist.get_world_size(), lr, t.BATCH_SIZE)

    interrupt = GracefulInterrupt(handlers.write_resume_point, t.NAN_CHECK_EVERY)
    interrupt.attach(trainer)
    try:
        trainer.run(train_loader, max_epochs=t.EPOCHS)
    finally:
        # Persistent workers freed by the garbage collector each wait out a 5 s timeout.
        close_loader(trainer.state.dataloader)
        close_loader(train_loader)
        close_loader(val_loader)
    if handlers.nan_guard is not None and handlers.nan_guard.detected:
        return RunResult(ExitCode.NAN)
    if interrupt.signal is not None:
        return RunResult(ExitCode.INTERRUPTED)
    if not training_finished(trainer):
        return RunResult(ExitCode.FAILED)
    return RunResult(ExitCode.OK, handlers.history.summary())


