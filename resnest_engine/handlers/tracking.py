"""MLflow tracking through ignite's ``MLflowLogger`` (rank 0), resumable, never fatal."""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, MutableMapping, Optional, Tuple, Union

import ignite.distributed as idist
from ignite.engine import Engine, Events

from ..errors import InputError, one_line, os_error_message
from .logging import TrainLogger
from .standard import training_finished
from ..storage.run_dir import RunDir

logger = logging.getLogger("resnest_engine")

__all__ = ["MLFLOW_RUN_ID", "MLflowTracking", "flat_params"]

#: The checkpoint meta key holding the MLflow run id (a resumed run continues that run).
MLFLOW_RUN_ID = "mlflow_run_id"
#: What :class:`MLflowTracking` logs as artifacts at the end, from the output directory: always
#: :data:`LOGGED_FILES`, with ``log_model`` also :data:`LOGGED_WEIGHT_FILES`.
LOGGED_FILES = (RunDir.CONFIG, RunDir.METRICS)
LOGGED_WEIGHT_FILES = (RunDir.WEIGHTS, RunDir.WEIGHTS + RunDir.CHECKSUM_SUFFIX)
LOCAL_EXPERIMENT = "resnest-engine"


def flat_params(params: Mapping[str, Any], prefix: str = "") -> Dict[str, str]:
    """A nested mapping (a config dict) as MLflow params named by dotted keys
    (``{"OPTIMIZER": {"LR": 0.1}}`` -> ``{"OPTIMIZER.LR": "0.1"}``); values as YAML writes
    them (``true``, ``null``, ``[30, 60]``), strings as they are."""
    out: Dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_params(value, name + "."))
        else:
            out[name] = value if isinstance(value, str) else _yaml_scalar(value)
    return out


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_scalar(v) for v in value) + "]"
    return str(value)


class MLflowTracking:
    """Logs a run to MLflow with ignite's ``MLflowLogger``, on rank 0 (a no-op elsewhere).

    ``attach(trainer, train_logger, evaluators)``; the MLflow run opens at the trainer's
    ``STARTED`` (nothing is contacted before training starts) and logs:

    - ``params`` (e.g. the resolved config), flattened to dotted names (:func:`flat_params`);
    - ``train/loss`` and ``train/lr`` from ``train_logger.window`` every ``train_logger.every``
      steps (attach after the :class:`TrainLogger` and before a mid-epoch resume point), at the
      trainer's iteration;
    - ``val/{top1,top5,loss}`` at the ``"raw"`` evaluator's ``COMPLETED`` and
      ``<name>/{top1,top5,loss}`` at the others' (``ema/top1``), at the trainer's epoch (a
      second validation in one epoch is not logged);
    - at the trainer's ``COMPLETED`` (after every ``COMPLETED`` handler attached before the
      run, such as the final weights), when training finished: ``config.yaml`` and
      ``metrics.json`` of ``output_dir`` as artifacts, plus ``model_weights.pt`` and its
      ``.checksum`` with ``log_model``; the MLflow run then ends (``KILLED`` when the run was
      interrupted, to be resumed).

    Where: ``tracking_uri``, else the ``MLFLOW_TRACKING_URI`` environment variable, else a local
    store in ``output_dir/mlruns`` (``mlflow.db``, SQLite, and ``artifacts/``, experiment
    ``resnest-engine`` or ``MLFLOW_EXPERIMENT_NAME``), else MLflow's own default. With a tracking
    URI, MLflow's environment variables choose the experiment (``MLFLOW_EXPERIMENT_NAME``).
    Inside a ``mlflow.start_run()`` block of yours, that run is used (and left open).

    Resume: the run id is written into ``meta`` (pass the checkpoint meta dict, which every
    checkpoint reads when it is written) under :data:`MLFLOW_RUN_ID`; pass a resumed
    checkpoint's id as ``run_id`` and the same MLflow run continues. A step the run already
    has for a metric (logged by the killed run after its last checkpoint) is not logged again:
    every metric keeps one value per step.

    MLflow failing (server unreachable, a dropped connection) logs one ``warning:`` line and
    training goes on without tracking. MLflow's client retries first
    (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``MLFLOW_HTTP_REQUEST_TIMEOUT``).
    """

    def __init__(self, output_dir: Optional[Union[str, Path]] = None,
                 params: Optional[Mapping[str, Any]] = None, *, run_id: Optional[str] = None,
                 meta: Optional[MutableMapping[str, Any]] = None, log_model: bool = False,
                 tracking_uri: Optional[str] = None, run_name: Optional[str] = None) -> None:
        try:  # mlflow is an optional dependency (the mlflow extra): fail now, not at STARTED
            importlib.import_module("mlflow")
        except ImportError:
            raise InputError("MLflow tracking (LOGGING.MLFLOW) needs the mlflow package: "
                             "pip install 'resnest-engine[mlflow]'") from None
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.params = flat_params(params or {})
        self.run_id, self.meta, self.log_model = run_id, meta, log_model
        if run_id and meta is not None:  # kept for the next resume even if MLflow is down now
            meta[MLFLOW_RUN_ID] = run_id
        self.tracking_uri = tracking_uri
        self.run_name = run_name or (self.output_dir.name if self.output_dir else None)
        self.logger: Any = None  # ignite's MLflowLogger while tracking
        self._started = False  # the MLflow run is ours to end
        self._previous_uri: Optional[str] = None  # mlflow.set_tracking_uri writes the env var
        self._last_step: Dict[str, int] = {}
        self._keys: List[str] = []

    # -- wiring -------------------------------------------------------------------------------

    def attach(self, trainer: Engine, train_logger: Optional[TrainLogger] = None,
               evaluators: Optional[Mapping[str, Engine]] = None) -> None:
        if idist.get_rank() != 0:
            return
        if train_logger is not None:
            self._keys += ["train/loss", "train/lr"]

            def _train(engine: Engine) -> None:
                w = train_logger.window
                if w:
                    self._log({"train/loss": w["loss"], "train/lr": w["lr"]},
                              engine.state.iteration)

            trainer.add_event_handler(Events.ITERATION_COMPLETED(every=train_logger.every), _train)
        for name, evaluator in (evaluators or {}).items():
            prefix = "val" if name == "raw" else name
            self._keys += [f"{prefix}/{k}" for k in ("top1", "top5", "loss")]
            evaluator.add_event_handler(Events.COMPLETED, self._log_validation, prefix, trainer)
        trainer.add_event_handler(Events.STARTED, self._open)

    def _log_validation(self, evaluator: Engine, prefix: str, trainer: Engine) -> None:
        m = evaluator.state.metrics
        self._log({f"{prefix}/{k}": float(m[k]) for k in ("top1", "top5", "loss")},
                  trainer.state.epoch)

    # -- the MLflow run -----------------------------------------------------------------------

    def _uri(self) -> Tuple[Optional[str], bool]:
        """``(tracking URI, whether it is the local store in output_dir/mlruns)``."""
        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if uri:
            return uri, False
        if self.output_dir is not None:
            return f"sqlite:///{(self.output_dir / 'mlruns').resolve() / 'mlflow.db'}", True
        return None, False

    def _open(self, trainer: Engine) -> None:
        if not trainer.has_event_handler(self._finish, Events.COMPLETED):
            # placed now: after every COMPLETED handler attached before the run (final weights)
            trainer.add_event_handler(Events.COMPLETED, self._finish)
        if self.logger is not None:
            return
        uri, local = self._uri()
        try:
            with _quiet_retries():
                self._start(uri, local)
        except Exception as e:  # noqa: BLE001 (tracking never stops training)
            self._off(f"cannot open the MLflow run at {uri or 'the default store'}", e)
            return
        run_id = self.run_id = self.logger.active_run.info.run_id  # a second run() continues it
        if self.meta is not None:
            self.meta[MLFLOW_RUN_ID] = run_id
        logger.info("MLflow run %s at %s", run_id, uri or "the default store")

    def _start(self, uri: Optional[str], local: bool) -> None:
        import mlflow  # the optional dependency (checked in __init__)
        from ignite.handlers.mlflow_logger import MLflowLogger  # imports mlflow

        self._previous_uri = os.environ.get("MLFLOW_TRACKING_URI")
        if uri is not None:
            mlflow.set_tracking_uri(uri)
        if local:
            (self.output_dir / "mlruns").mkdir(parents=True, exist_ok=True)
        client = mlflow.MlflowClient()
        active = mlflow.active_run()
        if self.run_id and (active is None or active.info.run_id != self.run_id):
            try:
                mlflow.start_run(run_id=self.run_id)
                self._started = True
            except mlflow.exceptions.MlflowException as e:
                if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                logger.warning("warning: MLflow run %s (from the checkpoint) is not in %s; "
                               "starting a new run", self.run_id, uri or "the default store")
                self.run_id = None
        if not self._started and mlflow.active_run() is None:
            experiment = self._local_experiment(client) if local else None
            mlflow.start_run(experiment_id=experiment, run_name=self.run_name)
            self._started = True
        self.logger = MLflowLogger()  # takes the active run
        run_id = self.logger.active_run.info.run_id
        if self.run_id == run_id:  # resumed: the steps and params it already has
            for key in self._keys:
                steps = [m.step for m in client.get_metric_history(run_id, key)]
                if steps:
                    self._last_step[key] = max(steps)
            have = client.get_run(run_id).data.params
            changed = sorted(k for k, v in self.params.items() if k in have and have[k] != v)
            if changed:
                logger.info("MLflow keeps the params' first values; changed on resume: %s",
                            ", ".join(f"{k}={self.params[k]}" for k in changed))
            params = {k: v for k, v in self.params.items() if k not in have}
        else:
            params = self.params
        if params:
            self.logger.log_params(params)

    def _local_experiment(self, client: Any) -> str:
        """The experiment of the local store, its artifacts beside the database."""
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or LOCAL_EXPERIMENT
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        where = (self.output_dir / "mlruns" / "artifacts").resolve().as_uri()
        return client.create_experiment(name, artifact_location=where)

    def _log(self, values: Dict[str, float], step: int) -> None:
        if self.logger is None:
            return
        new = {k: v for k, v in values.items() if step > self._last_step.get(k, -1)}
        if not new:
            return
        try:
            with _quiet_retries():
                self.logger.log_metrics(new, step=step)
        except Exception as e:  # noqa: BLE001 (tracking never stops training)
            self._off("MLflow logging failed", e)
            return
        self._last_step.update(dict.fromkeys(new, step))

    def _finish(self, trainer: Engine) -> None:
        if self.logger is None:
            return
        finished = training_finished(trainer)
        try:
            with _quiet_retries():
                if finished and self.output_dir is not None:
                    names = LOGGED_FILES + (LOGGED_WEIGHT_FILES if self.log_model else ())
                    for path in _existing(self.output_dir / n for n in names):
                        self.logger.log_artifact(str(path))
                self._close("FINISHED" if finished else "KILLED")
        except Exception as e:  # noqa: BLE001 (tracking never stops training)
            self._off("MLflow logging failed", e)

    def _off(self, what: str, e: BaseException) -> None:
        """One warning line; tracking stops, training goes on."""
        logger.warning("warning: %s (%s); training goes on without MLflow tracking", what,
                       _reason(e))
        try:
            with _quiet_retries():
                self._close("FAILED")
        except Exception:  # noqa: BLE001 (the server is gone: nothing more to do)
            pass

    def _close(self, status: str) -> None:
        """End the MLflow run if it is ours (not left active in this process, where a later run
        would take it) and put the process's tracking URI back."""
        import mlflow  # the optional dependency (checked in __init__)
        self.logger = None
        try:
            if self._started:
                self._started = False
                mlflow.end_run(status)
        finally:
            if os.environ.get("MLFLOW_TRACKING_URI") != self._previous_uri:
                mlflow.set_tracking_uri(self._previous_uri)


def _existing(paths: Iterable[Path]) -> Iterable[Path]:
    return [p for p in paths if p.is_file()]


def _reason(e: BaseException) -> str:
    """Why an MLflow call failed, short: the system's reason of the OS error at the bottom of the
    chain (``Connection refused``), else the first line of the message."""
    root = e
    while (root.__cause__ or root.__context__) is not None:
        root = root.__cause__ or root.__context__
    if isinstance(root, OSError) and (root.errno or str(root)):
        return os_error_message(root)
    text = one_line(e, first_line=True)
    return text if len(text) <= 200 else text[:197] + "..."


class _DropAll(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


@contextlib.contextmanager
def _quiet_retries():
    """urllib3 logs each HTTP retry of MLflow's client as a warning; a failure is one line of
    ours (:meth:`MLflowTracking._off`), so those records are dropped during MLflow calls."""
    log, drop = logging.getLogger("urllib3.connectionpool"), _DropAll()
    log.addFilter(drop)
    try:
        yield
    finally:
        log.removeFilter(drop)
