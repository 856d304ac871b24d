"""Handlers. Each is either a callable you place on an event
(``trainer.add_event_handler(event, handler)``: :class:`LRScale`, :class:`DropBlockRamp`,
:class:`FinalWeights`, the checkpointers) or an object whose ``attach(engine, ...)`` returns None
and places itself (:class:`NanGuard`, :class:`TrainLogger`, :class:`Validation`,
:class:`MetricsHistory`, :class:`TensorBoard`, :class:`MLflowTracking`, :class:`FreezeBody`).
Builders (``create_*``) return unattached pieces; :func:`attach_standard_handlers` wires a
:class:`StandardHandlers`."""
from .checkpoint import (AtomicDiskSaver, CheckpointError, CheckpointWriteError, atomic_save, check_architecture, save_weights,
                         create_best_checkpointer, create_epoch_checkpointer, create_resume_checkpointer,
                         list_checkpoints, load_checkpoint, read_checkpoint)
from .dropblock import DropBlockRamp, dropblock_prob_at
from .ema import create_ema
from .freeze import FreezeBody
from .interrupt import GracefulInterrupt
from .logging import TrainLogger, create_progress_bar, setup_logger
from .tensorboard import TensorBoard
from .metrics_history import MetricsHistory
from .nan_guard import NanGuard
from .schedules import SCHEDULES, LRScale, create_lr_scheduler, simulate_lr
from .standard import (FinalWeights, StandardHandlers, StandardOptions, attach_standard_handlers,
                       build_standard_handlers, training_finished, write_final_outputs)
from .tracking import MLflowTracking
from .validation import Validation, run_validation

__all__ = [
    "AtomicDiskSaver", "CheckpointError", "CheckpointWriteError", "DropBlockRamp", "FinalWeights",
    "FreezeBody", "GracefulInterrupt", "LRScale", "MLflowTracking", "MetricsHistory", "NanGuard",
    "SCHEDULES", "StandardHandlers", "StandardOptions", "TensorBoard", "TrainLogger", "Validation",
    "atomic_save", "attach_standard_handlers", "build_standard_handlers", "check_architecture", "save_weights",
    "create_best_checkpointer", "create_ema", "create_epoch_checkpointer", "create_lr_scheduler",
    "create_progress_bar", "create_resume_checkpointer", "dropblock_prob_at", "list_checkpoints",
    "load_checkpoint", "read_checkpoint", "run_validation", "setup_logger", "simulate_lr",
    "training_finished", "write_final_outputs",
]
