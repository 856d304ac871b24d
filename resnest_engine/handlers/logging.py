"""Text log in the official script's format, TensorBoard scalars and a progress bar (rank 0)."""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Optional, Union

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

logger = logging.getLogger("resnest_engine")


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
        fh = logging.FileHandler(str(log_file), mode="a")
        fh.setFormatter(fmt)
        log.addHandler(fh)
    return log


class TrainLogger:
    """Every ``every`` steps: ``Batch: 100| Loss: 1.253 | Top1: 65.432 | LR: 0.1 | 812.3 img/s``.

    Loss and hard-label top-1 are accumulated on the device and read once per log line (no host
    sync per step). The values also land in ``engine.state.train_log`` for TensorBoard. At each
    epoch end it logs the epoch time and throughput.
    """

    def __init__(self, every: int = 50) -> None:
        self.every = max(int(every), 1)
        self._reset()

    def _reset(self) -> None:
        self._loss = None
        self._correct = None
        self._n = 0
        self._steps = 0

    def _accumulate(self, engine: Engine) -> None:
        out = engine.state.output
        loss = out["loss"].detach() * out["batch_size"]
        self._loss = loss if self._loss is None else self._loss + loss
        y_pred, y = out.get("y_pred"), out.get("y")
        if y_pred is not None and y is not None and y.ndim == 1:
            c = (y_pred.argmax(dim=1) == y).sum()
            self._correct = c if self._correct is None else self._correct + c
        self._n += out["batch_size"]
        self._steps += 1

    def _log(self, engine: Engine) -> None:
        if self._n == 0:
            return
        now = time.perf_counter()
        elapsed = now - self._t0
        world = idist.get_world_size()
        loss = float(self._loss) / self._n
        top1 = 100.0 * float(self._correct) / self._n if self._correct is not None else float("nan")
        lr = engine.optimizer.param_groups[0]["lr"] if hasattr(engine, "optimizer") else float("nan")
        ips = self._n * world / elapsed if elapsed > 0 else float("nan")
        engine.state.train_log = {"loss": loss, "top1": top1, "lr": lr, "images_per_sec": ips}
        it = (engine.state.iteration - 1) % engine.state.epoch_length + 1
        logger.info("Epoch: %d Batch: %d| Loss: %.3f | Top1: %.3f | LR: %.6f | %.1f img/s",
                    engine.state.epoch, it, loss, top1, lr, ips)
        self._t0 = now
        self._reset()

    def attach(self, trainer: Engine) -> "TrainLogger":
        def _start(_: Engine) -> None:
            self._t0 = self._epoch_t0 = time.perf_counter()
            self._epoch_images = 0
            self._reset()

        def _iter(engine: Engine) -> None:
            self._accumulate(engine)
            self._epoch_images += engine.state.output["batch_size"]
            if engine.state.iteration % self.every == 0:
                self._log(engine)

        def _epoch(engine: Engine) -> None:
            dt = time.perf_counter() - self._epoch_t0
            ips = self._epoch_images * idist.get_world_size() / dt if dt > 0 else float("nan")
            logger.info("Epoch %d done in %.1f s (%.1f img/s)", engine.state.epoch, dt, ips)

        trainer.add_event_handler(Events.EPOCH_STARTED, _start)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, _iter)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, _epoch)
        return self


def attach_tensorboard(trainer: Engine, log_dir: Union[str, Path], every: int = 50,
                       purge_step: Optional[int] = None):
    """TensorBoard scalars via ignite's ``TensorboardLogger`` (tensorboardX) and ``OutputHandler``:
    ``train/{loss,top1,lr,images_per_sec}`` every ``every`` steps (attach after
    :class:`TrainLogger`, which computes them) and ``val/{top1,top5,loss}`` (``val/ema/*`` with
    EMA) after each validation, all at the trainer's iteration. ``purge_step`` (the resumed
    iteration) drops points a killed run wrote after its last checkpoint, so a resumed run has no
    duplicates. Rank 0 only; returns the logger (or None)."""
    if idist.get_rank() != 0:
        return None
    from ignite.handlers import TensorboardLogger
    from ignite.handlers.tensorboard_logger import OutputHandler

    kwargs = {"purge_step": purge_step} if purge_step else {}
    tb = TensorboardLogger(log_dir=str(log_dir), **kwargs)
    at_iteration = lambda engine, _event: engine.state.iteration  # noqa: E731

    def _val_results(_output) -> dict:
        results = dict(trainer.state.val_results)
        return {**results.pop("raw"), **results}  # raw at val/*, others nested (val/ema/*)

    tb.attach(trainer, OutputHandler("train", output_transform=lambda _: trainer.state.train_log,
                                     global_step_transform=at_iteration),
              Events.ITERATION_COMPLETED(every=max(int(every), 1)))
    validated = lambda e, _: getattr(e.state, "val_epoch", None) == e.state.epoch  # noqa: E731
    tb.attach(trainer, OutputHandler("val", output_transform=_val_results,
                                     global_step_transform=at_iteration),
              Events.EPOCH_COMPLETED(event_filter=validated))
    trainer.add_event_handler(Events.COMPLETED | Events.TERMINATE, lambda _: tb.close())
    return tb


def attach_progress_bar(trainer: Engine, mode: str = "auto") -> None:
    """ignite ``ProgressBar`` on rank 0; ``auto`` = only on an interactive terminal."""
    if idist.get_rank() != 0 or mode == "off" or (mode == "auto" and not sys.stderr.isatty()):
        return
    from ignite.handlers import ProgressBar

    ProgressBar(persist=False).attach(trainer, output_transform=lambda out: {"loss": out["loss"]})
