"""The one exception of the config package, and how values are named in its messages."""
from typing import Any, Optional

from ..errors import InputError

__all__ = ["ConfigError"]


class ConfigError(InputError):
    """An invalid config. The message is one line and starts with the dotted key or the path.

    ``key`` (dotted key) and ``path`` (config file) are set where they are known.
    """

    def __init__(self, message: str, *, key: Optional[str] = None,
                 path: Optional[str] = None) -> None:
        super().__init__(" ".join(str(message).split()))
        self.key = key
        self.path = path


def type_name(value: Any) -> str:
    """The type of ``value`` as error messages show it (``null`` for None)."""
    return "null" if value is None else type(value).__name__
