"""Shared exit statuses of the console commands (``resnest-train``, ``resnest-predict``,
``resnest-average``, ``resnest-report``): a user error is one ``error:`` line and status 2, a failed write 1, Ctrl-C 130."""
from __future__ import annotations

import sys
from typing import Callable, List, Optional, Sequence, Tuple

from ..config import ConfigError
from ..data import DataError, WorkerDiedError
from ..errors import InputError, one_line
from ..exit_codes import ExitCode
from ..handlers.checkpoint import CheckpointError
from ..models.registry import UnknownModelError
from ..models.weights import WeightsError
from ..files import WriteError
from ..run_lock import RunDirError

__all__ = ["MACHINE_FAILURES", "UsageError", "console_main"]

#: Failures of the machine, not of the input: one ``error:`` line and exit status 1 (a full or
#: unwritable disk, a dead DataLoader worker).
MACHINE_FAILURES = (WriteError, WorkerDiedError, OSError)


class UsageError(InputError):
    """A bad command line."""


def _user_errors():
    return (ConfigError, DataError, CheckpointError, UnknownModelError, WeightsError, InputError,
            RunDirError)


def console_main(body: Callable[[List[str]], int], argv: Optional[Sequence[str]],
                 user_errors: Tuple[type, ...] = ()) -> int:
    """Run a console command's ``body(argv)`` with the shared exit statuses: a user error (bad
    input) is one ``error:`` line and 2, a failed write 1, Ctrl-C 130."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return body(argv)
    except MACHINE_FAILURES as e:  # a failure of the machine (disk full), not of the input
        print(f"error: {one_line(e)}", file=sys.stderr)
        return ExitCode.FAILED
    except (*_user_errors(), *user_errors) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return ExitCode.USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return ExitCode.KEYBOARD_INTERRUPT
