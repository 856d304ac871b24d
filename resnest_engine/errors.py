"""The root of the errors that a user's input or environment causes, and how every command
reports one: on one line."""
from __future__ import annotations

import os
from typing import Optional, Tuple

__all__ = ["InputError", "MachineFailure", "one_line", "os_error_message", "worker_error"]


class InputError(ValueError):
    """An error that the user's input or environment causes, not a bug: a bad argument, path,
    file, config, model name, dataset, weights file, checkpoint or run directory, or (through
    :class:`MachineFailure`) a write that failed. The message is one line naming the field or
    path (as the console command's flag when there is one). Every console command reports it as
    one ``error:`` line without a traceback: exit status 2, or 1 for a :class:`MachineFailure`
    (``resnest_engine.cli.exit_codes.exit_status``)."""


class MachineFailure(InputError):
    """The machine failed the run, not the input: a write that failed (``cannot write PATH:
    <reason>``, a full or read-only disk) or a dead DataLoader worker. Exit status 1."""


def os_error_message(e: OSError) -> str:
    """The reason of an ``OSError`` for ``cannot write PATH: <reason>``: the system's text for
    its errno (``No space left on device``), else its message."""
    return os.strerror(e.errno) if e.errno else str(e)


def worker_error(text: str) -> Optional[Tuple[str, str]]:
    """``(message, where)`` of an exception torch re-raised from a DataLoader worker, else None.

    Torch's text is ``Caught X in DataLoader worker process N.\\nOriginal Traceback ...``, ending
    with the worker's ``pkg.X: message``: ``message`` is that last line without its exception
    type, ``where`` is ``in DataLoader worker process N`` (``a worker`` when not named).
    """
    text = text.strip()
    if "Original Traceback" not in text:
        return None
    last = [ln for ln in text.splitlines() if ln.strip()][-1].strip()
    message = last.split(": ", 1)[1] if ": " in last else last
    head = text.split("\n", 1)[0]  # "Caught DataError in DataLoader worker process 0."
    where = head.split(" ", 2)[2].rstrip(".") if head.count(" ") >= 2 else "a worker"
    return message, where


def one_line(e: BaseException, first_line: bool = False) -> str:
    """The message of ``e`` on one line (its type's name when it has none).

    For an error re-raised from a DataLoader worker, the original message rather than the
    worker's traceback (:func:`worker_error`). Otherwise the lines are joined, or with
    ``first_line`` only the first one is kept (for third-party messages whose later lines are
    advice, e.g. ``torch.load``'s).
    """
    text = str(e).strip()
    worker = worker_error(text)
    if worker is not None:
        text = worker[0]
    elif first_line and text:
        text = text.splitlines()[0]
    return " ".join(text.split()) or type(e).__name__
