"""The exit statuses of the console commands (``resnest-train``, ``resnest-predict``,
``resnest-average``, ``resnest-report``), and the one mapping of an error to its status."""
from __future__ import annotations

from enum import IntEnum
from typing import Optional

from ..errors import InputError, MachineFailure

__all__ = ["ExitCode", "exit_status"]


class ExitCode(IntEnum):
    """An exit status; an ``int``, so ``sys.exit(ExitCode.NAN)`` exits 3."""

    OK = 0
    #: A failure of the machine (e.g. a checkpoint that cannot be written), a run that did not
    #: finish, or (``resnest-predict``) some images that could not be read.
    FAILED = 1
    #: Bad input: config, paths, flags, unusable checkpoints; one ``error:`` line on stderr.
    USER_ERROR = 2
    #: The loss went NaN/Inf; nothing was written after the last good resume point.
    NAN = 3
    #: SIGTERM/SIGINT during training; a resume point was written (``--resume auto``).
    INTERRUPTED = 4
    #: Ctrl-C outside training (128 + SIGINT, as a shell reports it).
    KEYBOARD_INTERRUPT = 130
    #: stdout closed early (``resnest-predict ... | head``; 128 + SIGPIPE).
    BROKEN_PIPE = 141


def exit_status(e: BaseException) -> Optional[ExitCode]:
    """The exit status of a command that ``e`` ended, or None for a bug (shown with its traceback).

    Every entry point uses it: a :class:`~resnest_engine.errors.MachineFailure` (``cannot write
    PATH``, a dead DataLoader worker) or another ``OSError`` -> 1 (``FAILED``); any other
    :class:`~resnest_engine.errors.InputError` (config, model name, data, weights, checkpoint,
    run directory, command line) -> 2 (``USER_ERROR``); Ctrl-C -> 130.
    """
    if isinstance(e, KeyboardInterrupt):
        return ExitCode.KEYBOARD_INTERRUPT
    if isinstance(e, (MachineFailure, OSError)):
        return ExitCode.FAILED
    if isinstance(e, InputError):
        return ExitCode.USER_ERROR
    return None
