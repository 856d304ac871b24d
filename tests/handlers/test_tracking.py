"""LOGGING.MLFLOW: MLflow tracking through ignite's MLflowLogger (resnest_engine.handlers.tracking).

The slow tests start one real ``mlflow server`` (SQLite backend, artifacts in a temp folder,
127.0.0.1) and read back, with MLflow's own client, what a recipe run and a SIGKILLed and resumed
run logged. The fast ones run a tiny model in this process: an unreachable server is one
warning line and training goes on; only rank 0 tracks; the params' names and values."""
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
import torch.nn.functional as F
import yaml

from resnest_engine.config.schema import ALL_KEYS
from resnest_engine.engine import create_trainer
from resnest_engine.errors import InputError
from resnest_engine.handlers import MLflowTracking, attach_standard_handlers, list_checkpoints, \
    read_checkpoint
from resnest_engine.handlers import tracking as tracking_module
from resnest_engine.handlers.tracking import MLFLOW_RUN_ID, flat_params
from tests.support.cli import TINY, cli_env, free_port, merge, run_cli, run_main
from tests.support.standard_setup import standard_handlers
from tests.support.tiny_models import make_loader, make_tiny_model

mlflow = pytest.importorskip("mlflow")  # the mlflow extra (make test installs it)

EPOCHS, N, BATCH = 2, 16, 4
STEPS = N // BATCH


@contextlib.contextmanager
def env(**values):
    """Environment variables set for the block (None: unset), then put back."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in values.items():
            if v is None:
                mp.delenv(k, raising=False)
            else:
                mp.setenv(k, v)
        yield


@contextlib.contextmanager
def records():
    """The ``resnest_engine`` logger's records during the block (whatever its handlers)."""
    got = []
    handler = logging.Handler(logging.INFO)
    handler.emit = got.append
    log = logging.getLogger("resnest_engine")
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield got
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def tiny_run(out, tracking):
    """Two epochs of a tiny model with the standard handlers (EMA and validation on) and
    ``tracking`` as their tracker."""
    model = make_tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_trainer(model, optimizer, F.cross_entropy)
    handlers = standard_handlers(
        trainer, model, optimizer, make_loader(n=8, batch_size=4, seed=5), epochs=EPOCHS,
        epoch_length=STEPS, lr=0.1, ema_decay=0.5, output_dir=str(out), log_every=1,
        progress_bar="off", tensorboard=False)
    handlers.tracking = tracking
    attach_standard_handlers(trainer, handlers)
    trainer.run(make_loader(n=N, batch_size=BATCH, seed=3), max_epochs=EPOCHS)
    return trainer


def history(client, run_id, key):
    return [(m.step, m.value) for m in
            sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))]


# -- fast ---------------------------------------------------------------------------------------

def test_params_are_the_dotted_keys_with_yaml_values():
    assert flat_params({"SEED": 0, "MODEL": {"NAME": "resnest50", "PRETRAINED": None,
                                             "COMPILE": False},
                        "OPTIMIZER": {"LR": 0.1, "STEPS": [30, 60], "BETAS": (0.9, 0.999)}}) == {
        "SEED": "0", "MODEL.NAME": "resnest50", "MODEL.PRETRAINED": "null",
        "MODEL.COMPILE": "false", "OPTIMIZER.LR": "0.1", "OPTIMIZER.STEPS": "[30, 60]",
        "OPTIMIZER.BETAS": "[0.9, 0.999]"}


def test_unreachable_server_is_one_warning_and_training_goes_on(tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    meta = {}
    with env(MLFLOW_TRACKING_URI=url, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
             MLFLOW_HTTP_REQUEST_TIMEOUT="2"), records() as got:
        start = time.perf_counter()
        trainer = tiny_run(tmp_path, MLflowTracking(tmp_path, {"A": {"B": 1}}, meta=meta))
        took = time.perf_counter() - start
        assert os.environ["MLFLOW_TRACKING_URI"] == url  # the process's setting is left alone
    assert trainer.state.iteration == EPOCHS * STEPS and (tmp_path / "model_weights.pt").exists()
    warnings = [r.getMessage() for r in got if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    (line,) = warnings
    assert line.startswith(f"warning: cannot open the MLflow run at {url} (")
    assert line.endswith("training goes on without MLflow tracking") and "\n" not in line
    assert MLFLOW_RUN_ID not in meta and mlflow.active_run() is None
    assert "Traceback" not in capsys.readouterr().err
    assert took < 30


def test_only_rank_0_tracks(tmp_path, monkeypatch):
    model = make_tiny_model()
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), F.cross_entropy)
    tracking = MLflowTracking(tmp_path, {"A": 1})
    monkeypatch.setattr(tracking_module.idist, "get_rank", lambda: 1)
    tracking.attach(trainer)
    assert not trainer.has_event_handler(tracking._open)
    trainer.run(make_loader(n=N, batch_size=BATCH), max_epochs=1)
    assert not (tmp_path / "mlruns").exists() and tracking.logger is None


def test_missing_mlflow_is_a_one_line_input_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    with pytest.raises(InputError, match=r"^MLflow tracking \(LOGGING.MLFLOW\) needs the mlflow "
                                         r"package: pip install 'resnest-engine\[mlflow\]'$"):
        MLflowTracking("out")


# -- slow: a local store, a real server ----------------------------------------------------------

@pytest.mark.slow  # a new SQLite store takes seconds to create
def test_without_a_tracking_uri_the_store_is_in_the_run_dir(tmp_path, monkeypatch):
    out, cwd = tmp_path / "run", tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    meta = {}
    with env(MLFLOW_TRACKING_URI=None, MLFLOW_EXPERIMENT_NAME=None):
        tiny_run(out, MLflowTracking(out, {"OPTIMIZER": {"LR": 0.1}}, meta=meta, log_model=True))
        assert "MLFLOW_TRACKING_URI" not in os.environ  # put back after the run
    assert (out / "mlruns" / "mlflow.db").is_file() and not list(cwd.iterdir())
    client = mlflow.MlflowClient(f"sqlite:///{out / 'mlruns' / 'mlflow.db'}")
    run = client.get_run(meta[MLFLOW_RUN_ID])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params == {"OPTIMIZER.LR": "0.1"}
    summary = json.loads((out / "metrics.json").read_text())
    assert history(client, run.info.run_id, "ema/top1") == [
        (h["epoch"], h["ema_top1"]) for h in summary["history"]]
    assert [s for s, _ in history(client, run.info.run_id, "train/loss")] == list(
        range(1, EPOCHS * STEPS + 1))
    artifacts = out / "mlruns" / "artifacts"
    assert sorted(p.name for p in artifacts.rglob("*") if p.is_file()) == [
        "metrics.json", "model_weights.pt", "model_weights.pt.checksum"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real ``mlflow server`` on 127.0.0.1 (SQLite, artifacts proxied into a temp folder); its
    URL. Stopped (its process group) at the end of the module."""
    d = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    log = open(d / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{d / 'mlflow.db'}",
         "--artifacts-destination", str(d / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        # no background job runner (a dozen worker processes this test does not need)
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (d / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow server did not answer in 180 s"
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of its group is left
        proc.wait()
        log.close()


CONFIG = {"TRAINING": {"EMA_DECAY": 0.9, "CKPT_EVERY_ITERS": 2},
          "LOGGING": {"MLFLOW": True, "MLFLOW_LOG_MODEL": True}}
TOTAL = 6  # TINY: 3 steps per epoch, 2 epochs


def _config(d):
    path = d / "tiny.yaml"
    path.write_text(yaml.safe_dump(merge(TINY, CONFIG)))
    return path


def _only_run(client, experiment):
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


def _one_value_per_step(client, run_id):
    """Every metric of the run, one value per step, steps contiguous: ``{key: [values]}``."""
    keys = sorted(client.get_run(run_id).data.metrics)
    assert keys == sorted(["train/loss", "train/lr"] + [
        f"{p}/{m}" for p in ("val", "ema") for m in ("top1", "top5", "loss")])
    out = {}
    for key in keys:
        points = history(client, run_id, key)
        steps = [s for s, _ in points]
        assert steps == list(range(1, (TOTAL if key.startswith("train/") else 2) + 1)), (key, steps)
        out[key] = [v for _, v in points]
    return out


@pytest.mark.slow
def test_a_server_gets_the_run_and_a_killed_run_resumes_into_the_same_one(server, tmp_path):
    """One test (make test's workers would each start a server for two): a recipe run
    (2 epochs, EMA, MLFLOW_LOG_MODEL) read back with MLflow's client; then the same recipe killed
    after step 5 and resumed with ``--resume auto``: its newest resume point is at step 4 (or 3,
    when the background write of 4 had not landed), so the steps after it are logged twice
    unless the resumed run skips what the MLflow run already has."""
    client = mlflow.MlflowClient(server)
    cfg = _config(tmp_path)

    # a recipe run
    out = tmp_path / "run"
    with env(MLFLOW_TRACKING_URI=server, MLFLOW_EXPERIMENT_NAME="whole"):
        r = run_main("--config-file", cfg, "--outdir", out)
    assert r.returncode == 0, r.stderr
    assert "warning:" not in r.stdout + r.stderr
    run = _only_run(client, "whole")
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    newest = list_checkpoints(out / "checkpoints", ("resume-",))[0]
    assert read_checkpoint(newest)["meta"][MLFLOW_RUN_ID] == run.info.run_id
    params = run.data.params  # the resolved config, every key by its dotted name
    assert set(params) == set(ALL_KEYS)
    assert (params["OPTIMIZER.LR"], params["TRAINING.EMA_DECAY"], params["LOGGING.MLFLOW"],
            params["MODEL.NUM_CLASSES"]) == ("0.4", "0.9", "true", "null")
    values = _one_value_per_step(client, run.info.run_id)
    summary = json.loads((out / "metrics.json").read_text())
    assert values["val/top1"] == [h["top1"] for h in summary["history"]]
    assert values["ema/top1"] == [h["ema_top1"] for h in summary["history"]]
    assert values["val/loss"] == [h["loss"] for h in summary["history"]]
    assert values["train/lr"][0] == 0.0 and max(values["train/lr"]) == pytest.approx(0.4 * 16 / 256)
    names = sorted(a.path for a in client.list_artifacts(run.info.run_id))
    assert names == ["config.yaml", "metrics.json", "model_weights.pt",
                     "model_weights.pt.checksum"]
    mlflow.artifacts.download_artifacts(run_id=run.info.run_id, tracking_uri=server,
                                        dst_path=str(tmp_path / "download"))
    for name in names:
        assert (tmp_path / "download" / name).read_bytes() == (out / name).read_bytes(), name

    # killed after step 5, resumed
    killed_out = tmp_path / "killed"
    tracking = dict(MLFLOW_TRACKING_URI=server, MLFLOW_EXPERIMENT_NAME="killed")
    killed = run_cli("--config-file", cfg, "--outdir", killed_out,
                     env={**cli_env(), **tracking, "RESNEST_ENGINE_KILL_AT_ITER": "5"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    first = _only_run(client, "killed")
    assert first.info.status == "RUNNING"
    assert [s for s, _ in history(client, first.info.run_id, "train/loss")] == [1, 2, 3, 4, 5]
    with env(**tracking):
        resumed = run_main("--config-file", cfg, "--outdir", killed_out, "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    assert "Resumed from" in resumed.stdout and "warning:" not in resumed.stdout + resumed.stderr
    again = _only_run(client, "killed")
    assert again.info.run_id == first.info.run_id and again.info.status == "FINISHED"
    # one value per step, contiguous, and the values of the run that was never killed
    assert _one_value_per_step(client, first.info.run_id) == values
    assert sorted(a.path for a in client.list_artifacts(first.info.run_id)) == names
