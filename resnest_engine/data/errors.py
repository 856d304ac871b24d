"""The one exception type the data package raises for user errors."""
from __future__ import annotations

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
    if not (message.startswith("Caught ") and "\nOriginal Traceback" in message):
        return message
    where = message.split("\n", 1)[0]  # "Caught DataError in DataLoader worker process 0."
    where = where.split(" ", 2)[2].rstrip(".") if where.count(" ") >= 2 else "a worker"
    lines = [line for line in message.splitlines() if line.strip()]
    last = lines[-1]
    # The traceback's last line is "package.module.DataError: <message>".
    head, sep, tail = last.partition(": ")
    original = tail if sep and head.split(".")[-1].endswith("Error") else last
    return f"{original} ({where})"
