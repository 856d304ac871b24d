"""Checkpoint averaging: ``average_state_dicts``, ``average_checkpoints`` and the
``resnest-average`` command."""
import contextlib
import io
import re

import pytest
import torch
import yaml

from tests.support.cli import TINY, cli_env, merge, run_cli, run_main

from resnest_engine.workflows.average import average_checkpoints, average_state_dicts  # noqa: E402
from resnest_engine.cli.average import main  # noqa: E402
from resnest_engine.models.weights import read_state_dict  # noqa: E402


def _states():
    g = torch.Generator().manual_seed(0)
    a = {"conv.weight": torch.randn(4, 3, generator=g),
         "bn.running_mean": torch.randn(4, generator=g),
         "bn.num_batches_tracked": torch.tensor(7, dtype=torch.int64),
         "half": torch.randn(5, generator=g).half(),
         "mask": torch.tensor([True, False])}
    b = {"conv.weight": torch.randn(4, 3, generator=g),
         "bn.running_mean": torch.randn(4, generator=g),
         "bn.num_batches_tracked": torch.tensor(12, dtype=torch.int64),
         "half": torch.randn(5, generator=g).half(),
         "mask": torch.tensor([False, True])}
    return a, b


def test_two_state_dicts_give_their_exact_mean():
    a, b = _states()
    out = average_state_dicts([a, b])
    assert list(out) == list(a)
    for k in ("conv.weight", "bn.running_mean", "half"):
        expected = ((a[k].double() + b[k].double()) / 2).to(a[k].dtype)
        assert out[k].dtype == a[k].dtype
        assert torch.equal(out[k], expected), k
    # float16 averaged in float64: not the same as averaging in float16 everywhere
    assert out["half"].dtype == torch.float16
    # integer and bool buffers: from the last (newest) state_dict
    assert out["bn.num_batches_tracked"].dtype == torch.int64
    assert int(out["bn.num_batches_tracked"]) == 12
    assert torch.equal(out["mask"], b["mask"])
    # the inputs are untouched
    assert torch.equal(a["conv.weight"], _states()[0]["conv.weight"])


def test_one_state_dict_comes_back_bitwise():
    a, _ = _states()
    a["nan"] = torch.tensor([float("nan"), -0.0, float("inf")])
    a["bf16"] = torch.randn(3).bfloat16()
    out = average_state_dicts([a])
    assert list(out) == list(a)
    for k, v in a.items():
        assert out[k].dtype == v.dtype and out[k].shape == v.shape
        assert torch.equal(out[k].reshape(-1).view(torch.uint8),
                           v.reshape(-1).view(torch.uint8)), k  # bitwise, NaN and -0.0 too
        assert out[k].data_ptr() != v.data_ptr()  # a copy


@pytest.mark.parametrize("change, needle", [
    (lambda s: s.pop("bn.running_mean"), "bn.running_mean"),
    (lambda s: s.__setitem__("extra", torch.zeros(1)), "extra"),
    (lambda s: s.__setitem__("conv.weight", torch.zeros(4, 4)), "conv.weight"),
    (lambda s: s.__setitem__("half", s["half"].float()), "half"),
])
def test_mismatched_keys_or_shapes_raise(change, needle):
    a, b = _states()
    change(b)
    with pytest.raises(ValueError, match=re.escape(repr(needle))):
        average_state_dicts([a, b])
    with pytest.raises(ValueError):
        average_state_dicts([])


def _run_main(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


@pytest.mark.slow
def test_cli_averages_the_best_checkpoints_and_evaluates(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(merge(TINY, {"TRAINING": {"KEEP_BEST": 2, "EPOCHS": 3}})))
    run = tmp_path / "run"
    env = cli_env()
    r = run_main("--config-file", cfg, "--outdir", run)  # the run to average, in this process
    assert r.returncode == 0, r.stderr[-2000:]
    ckpts = run / "checkpoints"
    best = sorted(ckpts.glob("best-*.pt"))
    assert len(best) == 2, list(ckpts.iterdir())
    before = {p.name: p.stat().st_mtime_ns for p in ckpts.iterdir()}
    weights_mtime = (run / "model_weights.pt").stat().st_mtime_ns

    r = run_cli(run, "--best", "2", module="resnest_engine.cli.average", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    ckpt_lines = [ln for ln in lines if re.match(r"best-e\d{3}-top1=[\d.]+\.pt +top1 [\d.]+$", ln)]
    assert len(ckpt_lines) == 2, r.stdout
    assert {ln.split()[0] for ln in ckpt_lines} == {p.name for p in best}
    avg = [ln for ln in lines if re.match(r"average of 2: +top1 [\d.]+$", ln)]
    assert len(avg) == 1, r.stdout
    val = [ln for ln in lines if ln.startswith("Validation: Top1: ")]
    assert len(val) == 1 and avg[0].split()[-1] == val[0].split()[2], r.stdout

    # the file: a plain state_dict equal to the mean of the two best files' weights (oldest
    # first: the integer buffers come from the newest)
    written = torch.load(run / "model_weights_avg.pt", map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in written.values())
    oldest_first = sorted(best, key=lambda p: p.name)  # best-eNNN-...: by epoch
    expected = average_state_dicts([read_state_dict(p) for p in oldest_first])
    assert list(written) == list(expected)
    assert all(torch.equal(written[k], v) for k, v in expected.items())
    # nothing of the run was touched
    assert {p.name: p.stat().st_mtime_ns for p in ckpts.iterdir()} == before
    assert (run / "model_weights.pt").stat().st_mtime_ns == weights_mtime

    # --last 1: the newest resume point's weights, bitwise (in-process, no evaluation)
    newest = max(ckpts.glob("resume-*.pt"), key=lambda p: int(p.stem.rsplit("-i", 1)[1]))
    code, out, err = _run_main(run, "--last", "1", "--no-eval", "--output", tmp_path / "l1.pt")
    assert code == 0, err
    one = torch.load(tmp_path / "l1.pt", map_location="cpu", weights_only=True)
    ref = read_state_dict(newest)
    assert list(one) == list(ref) and all(torch.equal(one[k], v) for k, v in ref.items())

    # more than the run kept: a one-line note naming the config key, the two averaged
    code, out, err = _run_main(run, "--best", "5", "--no-eval", "--output", tmp_path / "b5.pt")
    assert code == 0, err
    note = [ln for ln in err.splitlines() if "TRAINING.KEEP_BEST" in ln]
    assert len(note) == 1 and "found only 2" in note[0], err
    b5 = torch.load(tmp_path / "b5.pt", map_location="cpu", weights_only=True)
    assert all(torch.equal(b5[k], v) for k, v in written.items())

    # never over a run file or checkpoint
    code, out, err = _run_main(run, "--no-eval", "--output", run / "model_weights.pt")
    assert code == 2 and err.startswith("error: --output") and len(err.splitlines()) == 1, err
    assert (run / "model_weights.pt").stat().st_mtime_ns == weights_mtime


@pytest.mark.parametrize("args, needle", [
    (["{tmp}/nope"], "run directory not found"),
    (["{tmp}", "--best", "0"], "--best must be >= 1"),
    (["{tmp}", "--no-eval"], "no best checkpoints"),
    (["{tmp}", "--last", "2", "--no-eval"], "no resume points"),
])
def test_cli_user_errors_are_one_line(tmp_path, args, needle):
    code, out, err = _run_main(*[a.format(tmp=tmp_path) for a in args])
    assert code == 2, (out, err)
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert not (tmp_path / "model_weights_avg.pt").exists()


def test_cli_mismatched_checkpoints_are_a_user_error(tmp_path):
    a, b = _states()
    b["conv.weight"] = torch.zeros(2, 2)
    (tmp_path / "checkpoints").mkdir()
    torch.save({"model": a}, tmp_path / "checkpoints" / "best-e001-top1=10.00.pt")
    torch.save({"model": b}, tmp_path / "checkpoints" / "best-e002-top1=20.00.pt")
    code, out, err = _run_main(tmp_path, "--no-eval")
    assert code == 2 and "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "'conv.weight'" in lines[0], err
    assert not (tmp_path / "model_weights_avg.pt").exists()


def test_cli_averages_the_ema_weights_of_an_ema_run(tmp_path):
    a, b = _states()
    raw = {k: torch.zeros_like(v) for k, v in a.items()}
    (tmp_path / "checkpoints").mkdir()
    for epoch, ema in ((1, a), (2, b)):  # only what read_state_dict looks at
        torch.save({"format_version": 1, "model": raw, "ema": ema},
                   tmp_path / "checkpoints" / f"best-e{epoch:03d}-top1={epoch}0.00.pt")
    code, out, err = _run_main(tmp_path, "--best", "2", "--no-eval")
    assert code == 0, err
    written = torch.load(tmp_path / "model_weights_avg.pt", weights_only=True)
    expected = average_state_dicts([a, b])
    assert all(torch.equal(written[k], v) for k, v in expected.items())
    assert int(written["bn.num_batches_tracked"]) == 12  # from the newest (epoch 2)


def test_average_checkpoints_from_python_writes_the_elementwise_mean(tmp_path):
    """Two checkpoints with known numbers: the file written is their elementwise mean (the
    integer buffer from the newer one), and nothing is written over a run file."""
    a = {"w": torch.tensor([1.0, 2.0, -3.0]), "b": torch.tensor([0.5]),
         "n": torch.tensor(3, dtype=torch.int64)}
    b = {"w": torch.tensor([3.0, 0.0, 5.0]), "b": torch.tensor([1.5]),
         "n": torch.tensor(9, dtype=torch.int64)}
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    torch.save({"model": a}, ckpts / "best-e001-top1=50.00.pt")
    torch.save({"model": b}, ckpts / "best-e002-top1=40.00.pt")
    notes = []
    done = average_checkpoints(tmp_path, best=3, note=notes.append)
    assert done.output == tmp_path / "model_weights_avg.pt"
    assert [p.name for p in done.checkpoints] == ["best-e001-top1=50.00.pt",
                                                  "best-e002-top1=40.00.pt"]  # best first
    assert done.what == "2 best checkpoints" and done.top1 == {}
    assert len(notes) == 1 and "found only 2" in notes[0]
    written = torch.load(done.output, weights_only=True)
    assert torch.equal(written["w"], torch.tensor([2.0, 1.0, 1.0]))
    assert torch.equal(written["b"], torch.tensor([1.0]))
    assert int(written["n"]) == 9  # from the newest (epoch 2), not the best
    from resnest_engine.errors import InputError
    with pytest.raises(InputError, match="is a run or checkpoint file"):
        average_checkpoints(tmp_path, output=tmp_path / "metrics.json")
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.slow  # starts a process
def test_the_former_module_command_still_runs():
    """``python -m resnest_engine.average`` (the spelling before the command moved to cli/)."""
    r = run_cli("--help", module="resnest_engine.average", timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: resnest-average ")
