"""Resume on another number of processes: epoch boundary, same global batch and LR schedule."""
import json
import re

import pytest
import yaml

from cli_helpers import TINY, cli_env, merge, run_cli

pytestmark = pytest.mark.slow

CONFIG = merge(TINY, {"TRAINING": {"EPOCHS": 4}})  # 48 images, global batch 16: 3 steps/epoch
BATCH = re.compile(r"Batch: (\d+)\| Loss: [\d.]+ \| Top1: [\d.]+ \| epoch (\d+)/4 \| LR: ([\d.]+)")


def lr_by_step(log_text):
    return {(int(e), int(b)): float(lr) for b, e, lr in BATCH.findall(log_text)}


def run(tmp_path, name, nproc, *extra, env=None):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    flags = ["--nproc-per-node", str(nproc)] if nproc > 1 else []
    return run_cli("--config-file", cfg, "--outdir", tmp_path / name, *flags, *extra, env=env,
                   timeout=300)


@pytest.mark.parametrize("before, after, iter_points", [(2, 1, True), (1, 2, False)])
def test_resume_on_another_world_size_continues_the_schedule(tmp_path, before, after,
                                                             iter_points):
    full = run(tmp_path, "full", before)
    assert full.returncode == 0, full.stderr
    env = cli_env()
    env["RESNEST_ENGINE_KILL_AT_ITER"] = "7"  # the first step of epoch 3: epoch 2 is done
    # with a resume point every step and only the newest kept, the epoch-end point survives as
    # epoch-*.pt
    extra = ["TRAINING.CKPT_EVERY_ITERS=1", "TRAINING.KEEP_CHECKPOINTS=1"] if iter_points else []
    killed = run(tmp_path, "elastic", before, *extra, env=env)
    assert killed.returncode != 0
    resumed = run(tmp_path, "elastic", after, "--resume", "auto", *extra)
    assert resumed.returncode == 0, resumed.stderr

    log = (tmp_path / "elastic" / "log.txt").read_text()
    assert f"Resuming a {before}-process run on {after} processes" in log
    assert "Not bitwise" in log and "same global batch 16" in log
    if iter_points:  # the newest point was mid-epoch (iteration 7): the epoch-2 end is used
        assert "mid-epoch resume point" in log and "epoch-e002-i0000006.pt" in log
    a = json.loads((tmp_path / "full" / "metrics.json").read_text())
    b = json.loads((tmp_path / "elastic" / "metrics.json").read_text())
    assert [h["epoch"] for h in b["history"]] == [1, 2, 3, 4]
    assert b["history"][:2] == a["history"][:2]  # epochs 1-2 kept exactly
    full_lr = lr_by_step((tmp_path / "full" / "log.txt").read_text())
    resumed_lr = lr_by_step(log.split(f"Resuming a {before}-process run")[1])
    later = {k: v for k, v in full_lr.items() if k[0] >= 3}
    assert len(later) == 6 and {k: resumed_lr[k] for k in later} == later
    print(f"{before}->{after} processes: final top-1 {b['top1']:.3f} (uninterrupted "
          f"{before}-process run: {a['top1']:.3f})")
