"""The exit statuses of the console commands (``resnest-train``, ``resnest-predict``,
``resnest-average``, ``resnest-report``), in one place."""
from __future__ import annotations

from enum import IntEnum

__all__ = ["ExitCode"]


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
