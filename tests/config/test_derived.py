"""Values a run derives from its config: the effective LR and the per-process batches."""
import pytest

from resnest_engine.config import (Config, apply_overrides, effective_lr, eval_batch_per_process,
                                   train_micro_batch)
from tests.support.config import error


def test_effective_lr_and_batch_helpers():
    cfg = apply_overrides(Config(), ["TRAINING.BATCH_SIZE=1024", "TRAINING.GRAD_ACCUM=2",
                                     "TRAINING.TEST_BATCH_SIZE=100"])
    assert effective_lr(cfg) == pytest.approx(0.4)
    assert train_micro_batch(cfg, 4) == 128
    assert eval_batch_per_process(cfg, 4) == 25
    assert error(train_micro_batch, cfg, 3).startswith("TRAINING.BATCH_SIZE:")
    assert error(eval_batch_per_process, cfg, 3).startswith("TRAINING.TEST_BATCH_SIZE:")
