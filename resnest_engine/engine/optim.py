"""Optimizer parameter groups and the optimizer factory."""
from __future__ import annotations

from typing import Dict, Iterable, List, Sequence, Union

import torch
from torch import nn

__all__ = ["NORM_TYPES", "OPTIMIZERS", "create_optimizer", "update_kernel_kwargs", "param_groups"]

# Found by module type, not by name: the official code matches "bn" in parameter names and so
# decays the deep stem's and the downsample shortcut's BatchNorm weights.
NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def param_groups(model: nn.Module, weight_decay: float, no_bn_wd: bool = True,
                 body_lr_scale: float = 1.0) -> List[Dict]:
    """Two groups: decayed weights, and (when ``no_bn_wd``) norm-layer weights plus every bias
    with ``weight_decay=0``. Frozen parameters are left out.

    ``body_lr_scale != 1`` splits each group into the classifier (``model.get_classifier()``,
    first) and the body, whose group carries ``lr_scale``: the LR schedule's value times it (see
    ``LRScale``), e.g. 0.1 for a pretrained body under a new head.
    """
    groups = _decay_groups(model, weight_decay, no_bn_wd)
    if body_lr_scale == 1.0:
        return groups
    head = {id(p) for p in model.get_classifier().parameters()}
    heads, bodies = [], []
    for g in groups:
        h = [p for p in g["params"] if id(p) in head]
        b = [p for p in g["params"] if id(p) not in head]
        if h:
            heads.append(dict(g, params=h))
        if b:
            bodies.append(dict(g, params=b, lr_scale=body_lr_scale))
    return heads + bodies


def _decay_groups(model: nn.Module, weight_decay: float, no_bn_wd: bool) -> List[Dict]:
    if not no_bn_wd:
        return [{"params": [p for p in model.parameters() if p.requires_grad],
                 "weight_decay": weight_decay}]
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        is_norm = isinstance(module, NORM_TYPES)
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if is_norm or name == "bias" else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


OPTIMIZERS = ("sgd", "nesterov", "adamw")


def update_kernel_kwargs(fused: Union[bool, str], device: torch.device) -> Dict[str, bool]:
    """The ``fused`` / ``foreach`` keywords of the optimizer on ``device`` (the same for every
    name in ``OPTIMIZERS``).

    ``False``: torch's default (for-loop on the CPU, foreach on CUDA). ``"auto"``: on the CPU,
    foreach (1.4-1.7x faster steps whose results are bitwise the default's); elsewhere torch's
    default. ``True``: torch's fused kernels (another 3x; AdamW's updates then differ from the
    default's in the last bits, and SGD cannot start parameters mid-run)."""
    if fused is True:
        return {"fused": True}
    if fused == "auto" and device.type == "cpu":
        # The fastest implementation whose updates are bitwise the for-loop's
        # (tests/engine/test_optimizer_implementation.py). Fused AdamW differs in the last bits;
        # torch's fused SGD step fails when some parameters have momentum buffers and others not
        # yet (parameters that start training mid-run, e.g. after a freeze).
        return {"foreach": True}
    return {}


def create_optimizer(params: Iterable, name: str, lr: float, momentum: float = 0.9,
                     weight_decay: float = 0.0, betas: Sequence[float] = (0.9, 0.999),
                     fused: Union[bool, str] = "auto") -> torch.optim.Optimizer:
    """``sgd`` / ``nesterov`` (SGD with Nesterov momentum, the published recipe) / ``adamw``.

    ``weight_decay`` applies to groups that do not set their own; a group with ``lr_scale`` (and
    no ``lr`` of its own) starts at ``lr x lr_scale``, which it keeps without an LR schedule.
    ``fused``: the update implementation (see :func:`update_kernel_kwargs`; the device is the first
    parameter's). It is kept when a checkpoint's optimizer state is loaded, whatever
    implementation wrote it.

    Args:
        params: parameters or parameter groups (see :func:`param_groups`).
        name: ``"sgd"``, ``"nesterov"`` or ``"adamw"``.
        lr: the base learning rate.
        momentum: SGD momentum.
        weight_decay: the decay of groups that set none of their own.
        betas: AdamW's betas.
        fused: ``True``, ``False`` or ``"auto"``: the update implementation.
    """
    params = [dict(g, lr=lr * g["lr_scale"]) if isinstance(g, dict) and "lr_scale" in g
              and "lr" not in g else g for g in params]
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS}")
    impl = update_kernel_kwargs(fused, _first_device(params))
    if name in ("sgd", "nesterov"):
        optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                                    nesterov=name == "nesterov", **impl)
    else:
        optimizer = torch.optim.AdamW(params, lr=lr, betas=tuple(betas),
                                      weight_decay=weight_decay, **impl)
    if impl:
        optimizer.register_load_state_dict_post_hook(_KeepImplementation(impl))
    return optimizer


def _first_device(params: List) -> torch.device:
    for g in params:
        for p in (g["params"] if isinstance(g, dict) else [g]):
            if isinstance(p, torch.Tensor):
                return p.device
    return torch.device("cpu")


class _KeepImplementation:
    """A loaded optimizer state brings the saved groups' ``fused``/``foreach`` flags with it;
    this hook sets them back to the chosen implementation."""

    def __init__(self, impl: Dict[str, bool]) -> None:
        self.impl = impl

    def __call__(self, optimizer: torch.optim.Optimizer) -> None:
        for group in optimizer.param_groups:
            group.update(fused=None, foreach=None)
            group.update(self.impl)
