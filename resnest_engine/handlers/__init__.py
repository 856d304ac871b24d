"""Handlers: each attachable on its own; ``attach_standard_handlers`` wires the usual set."""
from .checkpoint import (AtomicDiskSaver, CheckpointError, CheckpointWriteError, atomic_save, check_architecture,
                         create_best_checkpointer, create_resume_checkpointer, list_checkpoints,
                         load_checkpoint, read_checkpoint)
from .dropblock import attach_dropblock_ramp, dropblock_prob_at
from .ema import attach_ema, broadcast_buffers
from .logging import TrainLogger, attach_progress_bar, attach_tensorboard, setup_logger
from .metrics_history import MetricsHistory
from .mixup import MixupCutmix, SoftTargetCrossEntropy
from .nan_guard import NAN_EXIT_CODE, NanGuard
from .schedules import SCHEDULES, attach_lr_scheduler, create_lr_scheduler, simulate_lr
from .standard import StandardHandlers, StandardOptions, attach_standard_handlers, training_finished
from .validation import attach_validation, run_validation

__all__ = [name for name in dir() if not name.startswith("_")]
