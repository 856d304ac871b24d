"""Training and evaluation Engines, optimizer parameter groups."""
from .evaluator import create_evaluator
from .param_groups import OPTIMIZERS, create_optimizer, param_groups
from .trainer import AMP_MODES, SeededDeterministicEngine, autocast_context, create_trainer

__all__ = ["AMP_MODES", "OPTIMIZERS", "SeededDeterministicEngine", "autocast_context",
           "create_evaluator", "create_optimizer", "create_trainer", "param_groups"]
