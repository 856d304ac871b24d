"""Training and evaluation Engines, their custom events, optimizer building and losses."""
from .distributed import broadcast_buffers, unwrap_model
from .evaluator import create_evaluator, evaluator_like
from .events import TrainEvents, epochs_filter, mid_epoch_filter, register_train_events
from .losses import SoftTargetCrossEntropy
from .optim import OPTIMIZERS, create_optimizer, param_groups, update_kernel_kwargs
from .trainer import AMP_MODES, SeededDeterministicEngine, autocast_context, create_trainer

__all__ = ["AMP_MODES", "OPTIMIZERS", "SeededDeterministicEngine", "SoftTargetCrossEntropy",
           "TrainEvents", "autocast_context", "broadcast_buffers", "create_evaluator",
           "create_optimizer", "create_trainer", "update_kernel_kwargs", "epochs_filter", "evaluator_like", "mid_epoch_filter",
           "param_groups", "register_train_events", "unwrap_model"]
