"""The layout of a training run directory: the one place its file names are spelled."""
from __future__ import annotations

from pathlib import Path
from typing import Tuple, Union

__all__ = ["RunDir"]


class RunDir:
    """A run directory (``OUTDIR``) and its files; every module that reads or writes a run
    names them through this class.

    The names are class attributes (``RunDir.WEIGHTS`` is ``"model_weights.pt"``), the paths
    properties of an instance (``RunDir(outdir).weights``).
    """

    CONFIG = "config.yaml"  #: the resolved config of the run
    CLASSES = "classes.json"  #: the class names, index order
    WEIGHTS = "model_weights.pt"  #: the final weights (raw or EMA), with a ``.checksum`` sidecar
    METRICS = "metrics.json"  #: the metrics history
    EVAL_METRICS = "eval_metrics.json"  #: ``--eval-only``'s result
    LOG = "log.txt"  #: the text log
    CHECKPOINTS = "checkpoints"  #: resume points and best checkpoints
    TENSORBOARD = "tb"  #: TensorBoard event files
    LOCK = ".lock"  #: the one-writer lock (:mod:`resnest_engine.storage.run_lock`)
    CHECKSUM_SUFFIX = ".checksum"  #: the sidecar of a weights file

    #: Files that an output (``--export``, ``resnest-average``, ``resnest-predict``) must never
    #: replace; :attr:`PROTECTED_DIRS` as a whole too.
    PROTECTED_FILES: Tuple[str, ...] = (WEIGHTS, WEIGHTS + CHECKSUM_SUFFIX, METRICS, EVAL_METRICS,
                                        CONFIG, LOG, CLASSES)
    PROTECTED_DIRS: Tuple[str, ...] = (CHECKPOINTS, TENSORBOARD)

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def classes(self) -> Path:
        return self.path / self.CLASSES

    @property
    def weights(self) -> Path:
        return self.path / self.WEIGHTS

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def eval_metrics(self) -> Path:
        return self.path / self.EVAL_METRICS

    @property
    def log(self) -> Path:
        return self.path / self.LOG

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def tensorboard(self) -> Path:
        return self.path / self.TENSORBOARD

    @property
    def lock(self) -> Path:
        return self.path / self.LOCK

    def protects(self, target: Path) -> bool:
        """Whether ``target`` is one of the run's files that an output must not replace (a
        :attr:`PROTECTED_FILES` file, or anything inside a :attr:`PROTECTED_DIRS` folder);
        compared resolved."""
        run, target = self.path.resolve(), Path(target).resolve()
        return (target in [run / f for f in self.PROTECTED_FILES]
                or any(target.is_relative_to(run / d) for d in self.PROTECTED_DIRS))
