"""Training and evaluation Engines, their custom events, optimizer building and losses."""
from .evaluator import create_evaluator
from .events import TrainEvents, epochs_filter, mid_epoch_filter
from .losses import SoftTargetCrossEntropy
from .optim import create_optimizer, param_groups
from .trainer import SeededDeterministicEngine, create_trainer

# What docs/engine.md and README.md teach. The rest stays in its module: .distributed
# (unwrap_model, broadcast_buffers), .evaluator (evaluator_like), .events
# (register_train_events), .optim (OPTIMIZERS, update_kernel_kwargs), .trainer (AMP_MODES,
# autocast_context), .precision, .rng.
__all__ = ["SeededDeterministicEngine", "SoftTargetCrossEntropy", "TrainEvents", "create_evaluator",
           "create_optimizer", "create_trainer", "epochs_filter", "mid_epoch_filter", "param_groups"]
