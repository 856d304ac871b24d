"""Shared error handling of the console commands (``resnest-train``, ``resnest-predict``,
``resnest-average``, ``resnest-report``): an error of the input or the machine is one ``error:``
line and the exit status :func:`~.exit_codes.exit_status` gives it (2 for bad input, 1 for a
failed write or a dead worker, 130 for Ctrl-C)."""
from __future__ import annotations

import sys
from typing import Callable, List, Optional, Sequence

from ..errors import InputError, one_line
from .exit_codes import exit_status

__all__ = ["UsageError", "console_main", "report_error"]


class UsageError(InputError):
    """A bad command line."""


def report_error(e: BaseException, show: bool = True) -> Optional[int]:
    """Print ``e`` as one ``error:`` line (``interrupted`` for Ctrl-C; nothing when not
    ``show``, e.g. on ranks other than 0) and return its exit status; None for a bug, which the
    caller re-raises with its traceback."""
    code = exit_status(e)
    if code is not None and show:
        text = "interrupted" if isinstance(e, KeyboardInterrupt) else f"error: {one_line(e)}"
        print(text, file=sys.stderr)
    return code


def console_main(body: Callable[[List[str]], int], argv: Optional[Sequence[str]]) -> int:
    """Run a console command's ``body(argv)``; an error of the input or the machine ends it with
    one line on stderr and its exit status (:func:`report_error`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return body(argv)
    except (Exception, KeyboardInterrupt) as e:
        code = report_error(e)
        if code is None:
            raise
        return code
