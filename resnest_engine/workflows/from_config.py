"""The library's pieces from a :class:`~resnest_engine.config.Config`: the one place where config
keys become builder arguments. Data options, the model (with its pretrained weights), the
optimizer, the loss and batch mixing, the LR schedule, the EMA, the validation and the standard
handlers with their policy. Shared by the recipe runner, ``--eval-only``, ``resnest-predict``,
``resnest-average`` and exports; option objects take their keys generically
(:func:`~resnest_engine.config.options.option_values`), so a new key is one schema line."""
from __future__ import annotations

import logging
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

import ignite.distributed as idist
import torch
from ignite.engine import Engine
from torch import nn

from ..config import Config, config_to_dict, effective_lr
from ..config.fields import compile_mode
from ..config.options import option_values
from ..data import DataOptions, MixupCutmix
from ..engine import SoftTargetCrossEntropy, create_optimizer, create_trainer, param_groups
from ..engine.distributed import unwrap_model
from ..handlers import (DropBlockRamp, FreezeBody, MLflowTracking, StandardHandlers,
                       StandardOptions, Validation, build_standard_handlers, create_ema,
                       create_lr_scheduler)
from ..models import get_model, load_pretrained
from ..models.registry import get_variant
from ..models.published import load_published_state_dict, published_url

__all__ = ["build_freeze", "build_handlers", "build_loss", "build_lr_scheduler",
           "build_model", "build_optimizer", "build_trainer", "checkpoint_meta", "data_options",
           "model_kwargs"]

logger = logging.getLogger("resnest_engine")



def data_options(cfg: Config) -> DataOptions:
    """The DATA keys (and MODEL.IN_CHANS) as the data package's options, with the variant's
    geometry and normalisation where the config leaves them to it, and SEED for a
    VAL_FRACTION split without a SPLIT_SEED."""
    variant = get_variant(cfg.MODEL.NAME)
    values = option_values(DataOptions, cfg)
    for name in ("crop_size", "eval_crop_fraction", "interpolation"):
        if values[name] is None:
            values[name] = getattr(variant, name)
    if values["split_seed"] is None and cfg.DATA.VAL_FRACTION:
        values["split_seed"] = cfg.SEED
    return DataOptions(**values, mean=variant.mean, std=variant.std)


def model_kwargs(cfg: Config) -> Dict[str, Any]:
    """Constructor overrides the MODEL section asks for."""
    m = cfg.MODEL
    kw: Dict[str, Any] = dict(final_drop=m.FINAL_DROP, dropblock_prob=m.DROPBLOCK_PROB,
                              zero_init_last=m.ZERO_INIT_LAST, in_chans=m.IN_CHANS)
    if m.STEM:
        kw["stem"] = m.STEM
    return kw


def build_model(cfg: Config, num_classes: int, pretrained: bool = True) -> nn.Module:
    """The MODEL section's network with its pretrained weights, if any and ``pretrained`` (a
    resume skips them: the checkpoint replaces them), not yet on a device."""
    model = get_model(cfg.MODEL.NAME, num_classes=num_classes, **model_kwargs(cfg))
    source = cfg.MODEL.PRETRAINED if pretrained else None
    if source is True:  # the published weights, fetched once per machine (rank 0 first)
        if idist.get_local_rank() != 0:
            idist.barrier()
        state = load_published_state_dict(cfg.MODEL.NAME, progress=idist.get_rank() == 0)
        if idist.get_local_rank() == 0 and idist.get_world_size() > 1:
            idist.barrier()
        report = load_pretrained(model, state)
        source = published_url(cfg.MODEL.NAME)
    elif source:
        report = load_pretrained(model, source)
    if source:
        logger.info("Pretrained weights from %s%s", source,
                    f"; classifier re-initialised ({', '.join(report.skipped_classifier)})"
                    if report.skipped_classifier else "")
    if cfg.MODEL.GRAD_CHECKPOINTING:
        model.set_grad_checkpointing(True)
    return model


def build_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    """The OPTIMIZER section's optimizer over ``model``'s parameter groups, at the effective LR
    (logs the classifier/body split when fine-tuning)."""
    o, lr = cfg.OPTIMIZER, effective_lr(cfg)
    groups = param_groups(model, o.WEIGHT_DECAY, no_bn_wd=o.DISABLE_BN_WD,
                          body_lr_scale=o.BODY_LR_SCALE)
    if o.BODY_LR_SCALE != 1.0 or o.FREEZE_BODY_EPOCHS > 0:
        head = sum(p.numel() for p in model.get_classifier().parameters())
        body = sum(p.numel() for p in model.parameters()) - head
        logger.info("Fine-tuning: classifier LR %g (%d parameters), body LR %g = x%g (%d "
                    "parameters)%s", lr, head, lr * o.BODY_LR_SCALE, o.BODY_LR_SCALE, body,
                    f"; body frozen in epochs 1-{o.FREEZE_BODY_EPOCHS}"
                    if o.FREEZE_BODY_EPOCHS else "")
    return create_optimizer(groups, o.NAME, lr, o.MOMENTUM, o.WEIGHT_DECAY, o.BETAS, o.FUSED)


def build_freeze(cfg: Config, model: nn.Module, optimizer: torch.optim.Optimizer
                 ) -> Optional[FreezeBody]:
    """OPTIMIZER.FREEZE_BODY_EPOCHS as a :class:`FreezeBody` handler (None when 0)."""
    epochs = cfg.OPTIMIZER.FREEZE_BODY_EPOCHS
    return FreezeBody(model, optimizer, epochs) if epochs > 0 else None


def build_loss(cfg: Config, num_classes: int) -> Tuple[nn.Module, Optional[MixupCutmix]]:
    """``(loss, batch mixing)``: soft-target cross-entropy with :class:`MixupCutmix` when MIXUP
    or CUTMIX is on (attach it with ``mix.attach(trainer, DATA.MIXUP_OFF_EPOCH)``), else
    cross-entropy with LABEL_SMOOTHING and no mixing."""
    d = cfg.DATA
    if d.MIXUP > 0 or d.CUTMIX > 0:
        mix = MixupCutmix(num_classes, d.MIXUP, d.CUTMIX, d.MIXUP_PROB, d.MIXUP_SWITCH_PROB,
                          d.LABEL_SMOOTHING)
        return SoftTargetCrossEntropy(), mix
    return nn.CrossEntropyLoss(label_smoothing=d.LABEL_SMOOTHING), None


def _compiled(model: nn.Module, value: Any) -> nn.Module:
    """MODEL.COMPILE: the model, or ``torch.compile(model, mode=...)`` (true: mode default)."""
    mode = compile_mode(value)
    return model if mode is None else torch.compile(model, mode=mode)


def build_trainer(cfg: Config, model: nn.Module, optimizer: torch.optim.Optimizer,
                  loss_fn: nn.Module, mix: Optional[MixupCutmix], *, device: Any, amp: str,
                  channels_last: bool, grad_accum: int, prepare_batch: Any = None) -> Engine:
    """The trainer of the TRAINING section (clipping, determinism with SEED, MODEL.COMPILE) with
    the resolved precision, layout and accumulation (a resume may change the latter)."""
    t = cfg.TRAINING
    return create_trainer(
        _compiled(model, cfg.MODEL.COMPILE), optimizer, loss_fn, device=device,
        amp=amp, grad_accum=grad_accum, clip_grad=t.CLIP_GRAD, channels_last=channels_last,
        batch_transform=mix, prepare_batch=prepare_batch, deterministic=t.DETERMINISTIC,
        seed=cfg.SEED)


def build_lr_scheduler(cfg: Config, optimizer: torch.optim.Optimizer, epoch_length: int):
    """The OPTIMIZER section's schedule (warmup, then the decay), per optimizer step."""
    o = cfg.OPTIMIZER
    return create_lr_scheduler(
        optimizer, o.LR_SCHEDULER, effective_lr(cfg), cfg.TRAINING.EPOCHS * epoch_length,
        o.WARMUP_EPOCHS * epoch_length, o.WARMUP_START_FACTOR, o.MIN_LR,
        [m * epoch_length for m in o.STEPS], o.GAMMA, o.POLY_POWER)


def checkpoint_meta(cfg: Config, model: nn.Module, grad_accum: Optional[int] = None,
                    class_names: Optional[Sequence[str]] = None,
                    data_fingerprint: Optional[str] = None,
                    data_choices: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """What every checkpoint of the run records beside the states: the model and its
    arguments, the resolved config, the world size, threads and accumulation, the class names,
    the train split's content fingerprint (shards, Parquet; else None) and what the data's
    auto keys resolved to (train order, window, decoding)."""
    return {"model": cfg.MODEL.NAME, "model_args": dict(model.model_args),
            "num_classes": model.num_classes, "config": config_to_dict(cfg),
            "world_size": idist.get_world_size(), "threads": torch.get_num_threads(),
            "grad_accum": grad_accum or cfg.TRAINING.GRAD_ACCUM,
            "class_names": list(class_names) if class_names is not None else None,
            "data_fingerprint": data_fingerprint, "data_choices": data_choices}


def build_handlers(cfg: Config, trainer: Engine, model: nn.Module, optimizer: torch.optim.Optimizer,
                   evaluator: Engine, val_loader: Optional[Iterable], epoch_length: int,
                   output_dir: Optional[str], meta: Dict[str, Any],
                   mlflow_run_id: Optional[str] = None) -> StandardHandlers:
    """The standard handlers of a recipe: its LR schedule, EMA (TRAINING.EMA_DECAY), validation
    (TRAINING.VAL_EVERY / VAL_START, ``evaluator`` for the raw model), DropBlock ramp
    (MODEL.DROPBLOCK_PROB), the policy keys of :class:`StandardOptions` and MLflow tracking
    (LOGGING.MLFLOW, MLFLOW_LOG_MODEL: the resolved config as params, the run id into ``meta``;
    ``mlflow_run_id``: the MLflow run of the checkpoint being resumed, continued)."""
    t, raw = cfg.TRAINING, unwrap_model(model)
    total = t.EPOCHS * epoch_length
    validation = (Validation({"raw": evaluator}, val_loader, t.VAL_EVERY, t.VAL_START)
                  if val_loader is not None else None)
    prob = cfg.MODEL.DROPBLOCK_PROB
    handlers = build_standard_handlers(
        trainer, model, optimizer,
        StandardOptions(**option_values(StandardOptions, cfg), output_dir=output_dir, meta=meta),
        lr_scheduler=build_lr_scheduler(cfg, optimizer, epoch_length),
        ema=create_ema(model, t.EMA_DECAY) if t.EMA_DECAY > 0 else None,
        validation=validation,
        dropblock=DropBlockRamp(raw, prob, total) if prob > 0 else None)
    if cfg.LOGGING.MLFLOW:
        handlers.tracking = MLflowTracking(output_dir, config_to_dict(cfg), run_id=mlflow_run_id,
                                           meta=meta, log_model=cfg.LOGGING.MLFLOW_LOG_MODEL)
    return handlers
