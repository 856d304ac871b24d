"""The exceptions of the data package: user errors, and a DataLoader worker that died."""
from __future__ import annotations

import re
import signal
from typing import Dict, Optional

from ..errors import InputError, MachineFailure, worker_error

__all__ = ["DataError", "WorkerDiedError", "worker_died"]


class DataError(InputError):
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


class WorkerDiedError(MachineFailure, RuntimeError):
    """A DataLoader worker process died (killed by a signal, often the out-of-memory killer, or
    exited): one line naming the worker, the signal or exit code, and what to try. A failure of
    the machine, not of the input (the commands exit with status 1)."""


_KILLED = re.compile(r"DataLoader worker \(pid (\d+)\) is killed by signal: (.+?)\.?\s*$")
_EXITED = re.compile(r"DataLoader worker \(pid\(?s?\)? ([\d, ]+)\) exited unexpectedly"
                     r"(?: with exit code (-?\d+))?")
_SIGNAL_BY_TEXT = {signal.strsignal(s): s.name for s in signal.Signals if signal.strsignal(s)}
_SIGNALS = {s.value: s for s in signal.Signals}


def worker_died(e: BaseException, workers: int,
                exit_codes: Optional[Dict[int, Optional[int]]] = None) -> Optional[WorkerDiedError]:
    """The :class:`WorkerDiedError` of torch's ``RuntimeError`` about a dead worker, else None.
    ``exit_codes`` (worker pid -> ``Process.exitcode``) names the signal when torch's message
    does not (a negative exit code is the signal that killed the worker)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    advice = (f"try fewer DataLoader workers (DATA.WORKERS, now {workers}) or a smaller batch "
              "(TRAINING.BATCH_SIZE)")

    def killed(pid: str, name: str, desc: str) -> WorkerDiedError:
        oom = " (the out-of-memory killer sends it when memory runs out)" if name == "SIGKILL" else ""
        return WorkerDiedError(f"DataLoader worker (pid {pid}) was killed by {name} ({desc}){oom}; "
                               f"{advice}")

    m = _KILLED.match(text)
    if m:
        return killed(m.group(1), _SIGNAL_BY_TEXT.get(m.group(2), m.group(2)), m.group(2))
    m = _EXITED.match(text)
    if m:
        pids = [p.strip() for p in m.group(1).split(",")]
        code = (exit_codes or {}).get(int(pids[0]))
        if code is not None and code < 0 and -code in _SIGNALS:
            sig = _SIGNALS[-code]
            return killed(pids[0], sig.name, signal.strsignal(sig) or sig.name)
        code_text = f" with exit code {m.group(2) or code}" if (m.group(2) or code) else ""
        return WorkerDiedError(f"DataLoader worker (pid {', '.join(pids)}) exited "
                               f"unexpectedly{code_text}; {advice}")
    return None
