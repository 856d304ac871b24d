"""Resume from a checkpoint of the official ResNeSt ``train.py``.

The official ``checkpoint_{epoch}.pth`` is ``{'epoch', 'state_dict', 'optimizer', 'best_pred',
'acclist_train', 'acclist_val'}``, written after 0-based epoch ``epoch``; the official script
continues at ``epoch + 1``. This module reads it with ``weights_only=True``, loads the model
weights and the SGD momentum buffers (mapped by parameter name, since the official optimizer
orders its parameters differently from ours), and puts the trainer and the LR schedule at the
start of the next epoch. It carries no RNG, sampler or EMA state, so the continuation is not
the bitwise one of our own checkpoints. Written by hand: no library reads this layout.

:func:`read_resume_file` is what ``--resume`` accepts: one of our checkpoints, checked by
:func:`resnest_engine.handlers.checkpoint.read_checkpoint`, or an official one as it is.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Union

import torch
from ignite.engine import Engine
from ignite.handlers.param_scheduler import ParamScheduler
from torch import nn

from ..handlers.checkpoint import CheckpointError, read_checkpoint
from ..models.weights import strip_prefixes

__all__ = ["CHECKPOINT_KEYS", "is_official_checkpoint", "load_official_checkpoint",
           "official_epochs_done", "read_resume_file"]

#: The keys every official checkpoint has.
CHECKPOINT_KEYS = ("epoch", "state_dict", "optimizer")


def is_official_checkpoint(obj: Any) -> bool:
    """True for a dict in the official ``train.py`` checkpoint layout."""
    return (isinstance(obj, dict) and "format_version" not in obj
            and all(k in obj for k in CHECKPOINT_KEYS) and isinstance(obj["state_dict"], dict))


def read_resume_file(path: Union[str, Path], allow_official: bool = True) -> Dict[str, Any]:
    """A checkpoint to resume from, loaded with ``weights_only=True``: one of ours, checked by
    :func:`~resnest_engine.handlers.checkpoint.read_checkpoint`, or an official checkpoint,
    returned as it is. Without ``allow_official`` (where only our checkpoints make sense) an
    official one is a :class:`CheckpointError` that says what it is."""
    ckpt = read_checkpoint(path, accept=is_official_checkpoint)
    if is_official_checkpoint(ckpt) and not allow_official:
        raise CheckpointError(f"{path} is an official ResNeSt checkpoint: resume training from "
                              "it with --resume, or load its weights with MODEL.PRETRAINED")
    return ckpt


def official_epochs_done(ckpt: Mapping[str, Any]) -> int:
    """Epochs completed when the official checkpoint was written (its 0-based epoch + 1)."""
    return int(ckpt["epoch"]) + 1


def _official_param_order(model: nn.Module, n_groups: int) -> List[str]:
    """Parameter names in the order the official script gave them to SGD.

    One group: ``model.parameters()``. Two (``DISABLE_BN_WD``): the parameters whose name
    contains ``bn`` or ``bias`` first, then the rest.
    """
    names = [n for n, _ in model.named_parameters()]
    if n_groups == 1:
        return names
    no_wd = [n for n in names if "bn" in n or "bias" in n]
    return no_wd + [n for n in names if n not in set(no_wd)]


def _load_momentum(optimizer: torch.optim.Optimizer, model: nn.Module,
                   state: Mapping[str, Any], path: Union[str, Path]) -> int:
    if not isinstance(optimizer, torch.optim.SGD):
        raise CheckpointError(f"{path}: an official checkpoint holds SGD momentum; this run's "
                              f"optimizer is {type(optimizer).__name__} (use OPTIMIZER.NAME sgd)")
    groups = state.get("param_groups") or []
    order = _official_param_order(model, len(groups))
    indices = [i for g in groups for i in g.get("params", [])]
    if len(indices) != len(order):
        raise CheckpointError(f"{path}: its optimizer has {len(indices)} parameters, the model "
                              f"{len(order)}")
    by_name: Dict[str, torch.Tensor] = {}
    for name, idx in zip(order, indices):  # state indices run over the groups in order
        buf = (state.get("state") or {}).get(idx, {}).get("momentum_buffer")
        if buf is not None:
            by_name[name] = buf
    params = dict(model.named_parameters())
    loaded = 0
    for name, buf in by_name.items():
        p = params[name]
        if buf.shape != p.shape:
            raise CheckpointError(f"{path}: momentum of {name} has shape {tuple(buf.shape)}, the "
                                  f"parameter {tuple(p.shape)}")
        optimizer.state[p]["momentum_buffer"] = buf.to(device=p.device, dtype=p.dtype).clone()
        loaded += 1
    return loaded


def load_official_checkpoint(ckpt: Mapping[str, Any], model: nn.Module,
                             optimizer: torch.optim.Optimizer, trainer: Engine,
                             scheduler: ParamScheduler, epoch_length: int, max_epochs: int,
                             path: Union[str, Path] = "checkpoint") -> Dict[str, Any]:
    """Load an official checkpoint and place ``trainer`` and ``scheduler`` at the start of the
    next epoch. Returns ``{"epochs_done", "momentum_buffers", "best_pred"}``.

    The architecture must match exactly (the caller checks with ``check_architecture``).
    """
    model.load_state_dict(strip_prefixes(dict(ckpt["state_dict"])), strict=True)
    buffers = _load_momentum(optimizer, model, ckpt["optimizer"], path)
    done = official_epochs_done(ckpt)
    if done >= max_epochs:
        raise CheckpointError(f"{path}: it finished epoch {done} of a {max_epochs}-epoch run; "
                              "nothing left to train")
    iteration = done * epoch_length
    # The engine's own state (seed, current RNG states) with the position of the next epoch.
    state = {k: v for k, v in trainer.state_dict().items() if k != "epoch"}
    state.update(epoch_length=epoch_length, max_epochs=max_epochs, iteration=iteration)
    trainer.load_state_dict(state)
    # ignite schedulers hold their position as a count of calls: replay them (a few us each).
    for _ in range(iteration):
        scheduler(None)
    return {"epochs_done": done, "momentum_buffers": buffers,
            "best_pred": float(ckpt.get("best_pred", 0.0) or 0.0)}
