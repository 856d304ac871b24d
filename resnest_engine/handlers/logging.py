"""Text log and a progress bar (rank 0); TensorBoard scalars are in :mod:`.tensorboard`."""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Optional, Union

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar

from ..storage.files import write_error

logger = logging.getLogger("resnest_engine")

__all__ = ["LogFileHandler", "TrainLogger", "create_progress_bar", "setup_logger"]


def setup_logger(log_file: Optional[Union[str, Path]] = None, stream: bool = True) -> logging.Logger:
    """The ``resnest_engine`` logger: ``[06/15 14:30:25] message`` to the console and ``log_file``
    (appended), on rank 0 only; other ranks log warnings and errors to stderr."""
    log = logging.getLogger("resnest_engine")
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    log.propagate = False
    fmt = logging.Formatter("[%(asctime)s] %(message)s", datefmt="%m/%d %H:%M:%S")
    if idist.get_rank() != 0:
        log.setLevel(logging.WARNING)
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter(f"[rank {idist.get_rank()}] %(message)s"))
        log.addHandler(h)
        return log
    log.setLevel(logging.INFO)
    if stream:
        h = logging.StreamHandler(sys.stdout)
        h.setFormatter(fmt)
        log.addHandler(h)
    if log_file is not None:
        fh = LogFileHandler(str(log_file))
        fh.setFormatter(fmt)
        log.addHandler(fh)
    return log


class LogFileHandler(logging.FileHandler):
    """``log.txt``, appended. A record that cannot be written (disk full) raises
    :class:`~resnest_engine.storage.files.WriteError` from the logging call, once: the run ends with
    that one line. The file is then closed and left alone (the console handler goes on), so no
    later record retries the write, and logging's own ``handleError`` (a traceback on stderr for
    every record) is never reached."""

    def __init__(self, filename: str) -> None:
        super().__init__(filename, mode="a")
        self.failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.failed:
            return
        try:
            if self.stream is None:
                self.stream = self._open()
            self.stream.write(self.format(record) + self.terminator)
            self.stream.flush()
        except OSError as e:
            self.failed = True
            stream, self.stream = self.stream, None
            try:
                stream.close()  # flushes the rest again, fails again; the file is closed anyway
            except (OSError, AttributeError):
                pass
            raise write_error(self.baseFilename, e) from None


class TrainLogger:
    """Text log lines of training progress.

    Every ``every`` steps (1-based step within the epoch)::

        Batch: 200| Loss: 2.841 | Top1: 41.250 | epoch 4/120 | LR: 0.098765 | 812.3 img/s

    ``Loss`` and ``Top1`` are running averages over the epoch so far; img/s is over the steps
    since the previous line; ``LR`` is the first param group's of ``optimizer`` (``nan`` without
    one). While the targets are soft (the step's
    output has ``soft_targets`` true, i.e. mixup/cutmix; or its ``y`` is missing or not 1-D) the
    ``Top1`` field is left out::

        Batch: 200| Loss: 3.912 | epoch 4/120 | LR: 0.098765 | 812.3 img/s

    After each epoch::

        Epoch: 3, Time cost: 1234.5 | epoch 4/120 | 1037.2 img/s

    ``Epoch:`` is 0-based (the first epoch prints ``Epoch: 0``); the ``epoch 4/120`` after it is
    ignite's 1-based epoch. The time is the epoch's training time, without validation. After a
    mid-epoch resume, the averages and time cover the steps since the resume.

    Loss and correct counts are accumulated on the device over each window and read once per log
    line (no host sync per step); the epoch totals are kept on the host. :attr:`window` (for
    TensorBoard) holds the *window* values of the latest line, the mean over the steps since the
    previous line, so its curves do not reset each epoch: ``loss``, ``top1`` (absent while the
    targets are soft), ``lr`` and ``images_per_sec``.

    The leading fields (``Batch``, ``Loss``, ``Top1``; ``Epoch``, ``Time cost``) are a contract
    with log parsers: see :mod:`resnest_engine.official.log_format` before changing them.
    """

    def __init__(self, every: int = 50, optimizer: Optional[torch.optim.Optimizer] = None) -> None:
        self.every = max(int(every), 1)
        self.optimizer = optimizer
        self.window: dict = {}
        self._reset_window()
        self._reset_epoch()

    def _reset_window(self) -> None:
        self._loss = None
        self._correct = None
        self._n = 0
        self._n_hard = 0

    def _reset_epoch(self) -> None:
        self._epoch_loss = 0.0
        self._epoch_correct = 0
        self._epoch_n = 0
        self._epoch_n_hard = 0

    def _accumulate(self, engine: Engine) -> None:
        out = engine.state.output
        n = out["batch_size"]
        loss = out["loss"].detach().float() * n
        self._loss = loss if self._loss is None else self._loss + loss
        y_pred, y = out.get("y_pred"), out.get("y")
        if (y_pred is not None and y is not None and y.ndim == 1
                and not out.get("soft_targets", False)):
            c = (y_pred.argmax(dim=1) == y).sum()
            self._correct = c if self._correct is None else self._correct + c
            self._n_hard += n
        self._n += n

    def _log(self, engine: Engine) -> None:
        if self._n == 0:
            return
        now = time.perf_counter()
        elapsed = now - self._t0
        # One device-to-host read per log line.
        if self._correct is not None:
            loss_sum, correct = torch.stack([self._loss, self._correct.to(self._loss)]).tolist()
        else:
            loss_sum, correct = float(self._loss), 0.0
        self._epoch_loss += loss_sum
        self._epoch_correct += round(correct)
        self._epoch_n += self._n
        self._epoch_n_hard += self._n_hard
        lr = self.optimizer.param_groups[0]["lr"] if self.optimizer is not None else float("nan")
        ips = self._n * idist.get_world_size() / elapsed if elapsed > 0 else float("nan")
        train_log = {"loss": loss_sum / self._n, "lr": lr, "images_per_sec": ips}
        if self._n_hard == self._n:
            train_log["top1"] = 100.0 * correct / self._n
        self.window = train_log

        it = (engine.state.iteration - 1) % engine.state.epoch_length + 1
        msg = f"Batch: {it}| Loss: {self._epoch_loss / self._epoch_n:.3f}"
        # Top1 only when every step of the epoch so far had hard targets.
        if self._epoch_n_hard == self._epoch_n:
            msg += f" | Top1: {100.0 * self._epoch_correct / self._epoch_n:.3f}"
        msg += (f" | epoch {engine.state.epoch}/{engine.state.max_epochs} | LR: {lr:.6f}"
                f" | {ips:.1f} img/s")
        logger.info(msg)
        self._t0 = now
        self._reset_window()

    def attach(self, trainer: Engine) -> None:
        def _start(_: Engine) -> None:
            self._t0 = self._epoch_t0 = time.perf_counter()
            self._epoch_images = 0
            self._reset_window()
            self._reset_epoch()

        def _iter(engine: Engine) -> None:
            self._accumulate(engine)
            self._epoch_images += engine.state.output["batch_size"]

        def _epoch(engine: Engine) -> None:
            dt = time.perf_counter() - self._epoch_t0
            ips = self._epoch_images * idist.get_world_size() / dt if dt > 0 else float("nan")
            # 0-based epoch number first (see the class docstring).
            logger.info("Epoch: %d, Time cost: %.1f | epoch %d/%d | %.1f img/s",
                        engine.state.epoch - 1, dt, engine.state.epoch, engine.state.max_epochs, ips)

        trainer.add_event_handler(Events.EPOCH_STARTED, _start)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, _iter)
        trainer.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), self._log)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, _epoch)


def create_progress_bar(mode: str = "auto"):
    """ignite ``ProgressBar`` for rank 0 (``auto``: only on an interactive terminal), else None.
    The standard handlers place it with the text log's latest window loss
    (``output_transform=lambda _: logged_loss(train_logger)``, :mod:`.standard`): an
    ``output_transform`` returning the step's loss tensor would make ignite read it to the host
    (``.item()``) every step, one device sync per step.

    Args:
        mode: ``"auto"`` (only on an interactive terminal), ``"off"``, or anything else for on.
    """
    if idist.get_rank() != 0 or mode == "off" or (mode == "auto" and not sys.stderr.isatty()):
        return None
    return ProgressBar(persist=False)
