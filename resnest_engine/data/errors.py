"""The one exception type the data package raises for user errors."""
from __future__ import annotations

from ..errors import worker_error

__all__ = ["DataError"]


class DataError(ValueError):
    """A user error in data options or files: a one-line message naming the field or path.

    A ``DataError`` raised inside a DataLoader worker reaches the main process re-raised by
    torch as ``DataError("Caught DataError in DataLoader worker process 0.\\nOriginal Traceback
    ...")``. The constructor recognises that form and keeps the message one line: the original
    message followed by ``(in DataLoader worker process N)``.
    """

    def __init__(self, message: str = "") -> None:
        super().__init__(_one_line(str(message)))


def _one_line(message: str) -> str:
    worker = worker_error(message) if message.startswith("Caught ") else None
    return message if worker is None else f"{worker[0]} ({worker[1]})"
