"""Values a run derives from a config: the LR it uses and the batch each process runs."""
from .errors import ConfigError
from .schema import Config

__all__ = ["effective_lr", "train_micro_batch", "eval_batch_per_process"]


def effective_lr(cfg: Config) -> float:
    """The peak LR the run uses: ``OPTIMIZER.LR * TRAINING.BATCH_SIZE / 256``."""
    return cfg.OPTIMIZER.LR * cfg.TRAINING.BATCH_SIZE / 256


def train_micro_batch(cfg: Config, world_size: int = 1) -> int:
    """Samples per process per forward pass: BATCH_SIZE / (world_size * GRAD_ACCUM)."""
    div = world_size * cfg.TRAINING.GRAD_ACCUM
    if world_size < 1 or cfg.TRAINING.BATCH_SIZE % div:
        raise ConfigError(f"TRAINING.BATCH_SIZE: the global batch ({cfg.TRAINING.BATCH_SIZE}) "
                          f"must be divisible by world size ({world_size}) x "
                          f"TRAINING.GRAD_ACCUM ({cfg.TRAINING.GRAD_ACCUM})",
                          key="TRAINING.BATCH_SIZE")
    return cfg.TRAINING.BATCH_SIZE // div


def eval_batch_per_process(cfg: Config, world_size: int = 1) -> int:
    """Eval samples per process per forward pass: TEST_BATCH_SIZE / world_size."""
    if world_size < 1 or cfg.TRAINING.TEST_BATCH_SIZE % world_size:
        raise ConfigError(f"TRAINING.TEST_BATCH_SIZE: the global eval batch "
                          f"({cfg.TRAINING.TEST_BATCH_SIZE}) must be divisible by world size "
                          f"({world_size})", key="TRAINING.TEST_BATCH_SIZE")
    return cfg.TRAINING.TEST_BATCH_SIZE // world_size
