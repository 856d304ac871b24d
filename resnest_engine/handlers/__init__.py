"""Handlers. Each is either a callable you place on an event
(``trainer.add_event_handler(event, handler)``: :class:`LRScale`, :class:`DropBlockRamp`,
:class:`FinalWeights`, the checkpointers) or an object whose ``attach(engine, ...)`` returns None
and places itself (:class:`NanGuard`, :class:`TrainLogger`, :class:`Validation`,
:class:`MetricsHistory`, :class:`TensorBoard`, :class:`MLflowTracking`, :class:`FreezeBody`).
Builders (``create_*``) return unattached pieces; :func:`attach_standard_handlers` wires a
:class:`StandardHandlers`."""
from .checkpoint import (CheckpointError, check_architecture, create_best_checkpointer,
                         create_resume_checkpointer, list_checkpoints, load_checkpoint,
                         read_checkpoint)
from .dropblock import DropBlockRamp
from .ema import create_ema
from .freeze import FreezeBody
from .interrupt import GracefulInterrupt
from .logging import TrainLogger, create_progress_bar, setup_logger
from .metrics_history import MetricsHistory
from .nan_guard import NanGuard
from .schedules import LRScale, create_lr_scheduler
from .standard import (FinalWeights, StandardHandlers, StandardOptions, attach_standard_handlers,
                       build_standard_handlers)
from .tensorboard import TensorBoard
from .tracking import MLflowTracking
from .validation import Validation

# What docs/engine.md, docs/running.md, docs/reliability.md and README.md teach. The rest stays in
# its module: .checkpoint (atomic_save, save_weights, AtomicDiskSaver, CheckpointWriteError,
# create_epoch_checkpointer), .schedules (SCHEDULES, simulate_lr), .dropblock (dropblock_prob_at),
# .standard (training_finished, write_final_outputs), .validation (run_validation).
__all__ = [
    # placed on an event, or attach themselves
    "DropBlockRamp", "FinalWeights", "FreezeBody", "GracefulInterrupt", "LRScale", "MLflowTracking",
    "MetricsHistory", "NanGuard", "TensorBoard", "TrainLogger", "Validation",
    # builders
    "create_best_checkpointer", "create_ema", "create_lr_scheduler", "create_progress_bar",
    "create_resume_checkpointer", "setup_logger",
    # the standard set
    "StandardHandlers", "StandardOptions", "attach_standard_handlers", "build_standard_handlers",
    # checkpoints
    "CheckpointError", "check_architecture", "list_checkpoints", "load_checkpoint",
    "read_checkpoint",
]
