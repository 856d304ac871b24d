"""TensorBoard scalars (rank 0), apart from the text log as ignite keeps
``tensorboard_logger.py`` apart; a failed event-file write is one ``WriteError`` on the training
thread."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import ignite.distributed as idist
from ignite.engine import Engine, Events
from ignite.handlers import TensorboardLogger
from ignite.handlers.tensorboard_logger import OutputHandler

from ..storage.files import write_error

logger = logging.getLogger("resnest_engine")

__all__ = ["TensorBoard"]


class TensorBoard:
    """TensorBoard scalars via ignite's ``TensorboardLogger`` (tensorboardX) and ``OutputHandler``,
    on rank 0 (a no-op elsewhere).

    ``attach(trainer, train_logger, evaluators)``: ``train/{loss,top1,lr,images_per_sec}`` from
    ``train_logger.window`` every ``train_logger.every`` steps (attach after the
    :class:`TrainLogger`, which computes them), and ``val/{top1,top5,loss}`` (``val/<name>/*`` for
    the other evaluators, e.g. ``val/ema/top1``) at each evaluator's ``COMPLETED``; every point at
    the trainer's iteration. The writer opens at the trainer's ``STARTED``: a resumed run purges the
    points a killed run wrote after its checkpoint (``purge_step`` = the resumed iteration), so
    there are no duplicates. ``logger`` is ignite's ``TensorboardLogger`` once open.
    """

    def __init__(self, log_dir: Union[str, Path]) -> None:
        self.log_dir = Path(log_dir)
        self.logger = None
        self._file: Optional[_EventFile] = None

    def attach(self, trainer: Engine, train_logger: Optional[TrainLogger] = None,
               evaluators: Optional[Dict[str, Engine]] = None) -> None:
        if idist.get_rank() != 0:
            return
        at_iteration = lambda *_: trainer.state.iteration  # noqa: E731
        handlers = []
        if train_logger is not None:
            handlers.append((trainer, OutputHandler("train", output_transform=lambda _: train_logger.window,
                                                    global_step_transform=at_iteration),
                             Events.ITERATION_COMPLETED(every=train_logger.every)))
        for name, ev in (evaluators or {}).items():
            tag = "val" if name == "raw" else f"val/{name}"
            handlers.append((ev, OutputHandler(tag, metric_names=["top1", "top5", "loss"],
                                               global_step_transform=at_iteration),
                             Events.COMPLETED))

        def _open(engine: Engine) -> None:
            if self.logger is not None:
                return
            start = engine.state.iteration
            self.logger = TensorboardLogger(log_dir=str(self.log_dir),
                                            **({"purge_step": start} if start else {}))
            self._file = _EventFile.install(self.logger)
            for target, handler, event in handlers:
                self.logger.attach(target, handler, event)
                target.add_event_handler(event, self.check)

        trainer.add_event_handler(Events.STARTED, _open)
        trainer.add_event_handler(Events.COMPLETED | Events.TERMINATE, lambda _: self.close())

    def check(self, _engine: Optional[Engine] = None) -> None:
        """Raise the :class:`~resnest_engine.storage.files.WriteError` of a failed event write (the
        writes happen on tensorboardX's thread; this reports them on the training thread)."""
        if self._file is not None and self._file.error is not None:
            error, self._file.error = self._file.error, None
            raise write_error(self._file.path, error)

    def close(self) -> None:
        if self.logger is not None:
            self.logger.close()
            self.check()


class _EventFile:
    """The event file of a tensorboardX writer, wrapped so that a failed write (disk full) is
    recorded instead of raised. tensorboardX writes on a thread of its own: an error there is a
    traceback on stderr, kills the thread, and the next ``add_scalar`` then blocks forever on its
    full queue. Here the thread lives on (later writes are dropped) and :meth:`TensorBoard.check`
    raises the error on the training thread. Reaches into tensorboardX's writer (2.6: summary
    writer -> file writer -> event writer -> record writer -> file); without that layout, nothing
    is wrapped."""

    def __init__(self, f: Any, path: str) -> None:
        self._f, self.path, self.error = f, path, None

    @classmethod
    def install(cls, tb: TensorboardLogger) -> Optional["_EventFile"]:
        try:
            record_writer = tb.writer._get_file_writer().event_writer._ev_writer._py_recordio_writer
            wrapped = cls(record_writer._writer, record_writer.path)
        except AttributeError:
            return None
        record_writer._writer = wrapped
        return wrapped

    def _guard(self, op: Callable[[], Any]) -> None:
        if self.error is not None:
            return
        try:
            op()
        except OSError as e:
            self.error = e

    def write(self, data: bytes) -> None:
        self._guard(lambda: self._f.write(data))

    def flush(self) -> None:  # no ``fileno``: tensorboardX's own fsync would run unguarded
        self._guard(lambda: (self._f.flush(), os.fsync(self._f.fileno())))

    def close(self) -> None:
        try:
            self._f.close()  # a full disk fails the final flush again; the file closes anyway
        except OSError as e:
            self.error = self.error or e
