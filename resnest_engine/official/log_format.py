"""The official ``train.py``'s log lines, which our text log keeps to.

The official script prints three kinds of line, and the log parsers written for it read them::

    Batch: 200| Loss: 2.841 | Top1: 41.250
    Epoch: 3, Time cost: 1234.5
    Validation: Top1: 81.030 | Top5: 95.420

``Batch`` is the 1-based step within the epoch, ``Loss`` and ``Top1`` running averages over the
epoch so far (``AverageMeter.avg``; no ``Top1`` while the targets are soft, with mixup);
``Epoch`` is 0-based, ``Time cost`` the epoch's seconds. resnest-engine's log
(:class:`resnest_engine.handlers.TrainLogger` and :class:`~resnest_engine.handlers.Validation`)
and ``--eval-only``'s output start their lines with exactly these fields and add their own after
``" | "``, so the patterns below, which such parsers apply, find the same quantities in ours.
"""
from __future__ import annotations

import re

__all__ = ["BATCH_LINE", "EPOCH_LINE", "VALIDATION_LINE", "validation_line"]

#: Step, running loss and running top-1 of a batch line.
BATCH_LINE = re.compile(r"Batch: (\d+)\| Loss: ([\d.]+) \| Top1: ([\d.]+)")
#: 0-based epoch and its time of an epoch line.
EPOCH_LINE = re.compile(r"Epoch: (\d+), Time cost: ([\d.]+)")
#: Top-1 and top-5 of a validation line.
VALIDATION_LINE = re.compile(r"Validation: Top1: ([\d.]+) \| Top5: ([\d.]+)")


def validation_line(top1: float, top5: float) -> str:
    """The official script's validation line (its ``--eval`` output): percentages, 3 decimals."""
    return f"Validation: Top1: {top1:.3f} | Top5: {top5:.3f}"
