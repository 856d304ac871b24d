"""How every command reports an exception: on one line."""
from __future__ import annotations

__all__ = ["one_line"]


def one_line(e: BaseException, first_line: bool = False) -> str:
    """The message of ``e`` on one line (its type's name when it has none).

    For an error re-raised from a DataLoader worker, the original message rather than the
    worker's traceback. Otherwise the lines are joined, or with ``first_line`` only the first
    one is kept (for third-party messages whose later lines are advice, e.g. ``torch.load``'s).
    """
    text = str(e).strip()
    if "Original Traceback" in text:
        last = [ln for ln in text.splitlines() if ln.strip()][-1].strip()
        text = last.split(": ", 1)[1] if ": " in last else last
    elif first_line and text:
        text = text.splitlines()[0]
    return " ".join(text.split()) or type(e).__name__
