"""Resume on another number of processes: epoch boundary, same global batch and LR schedule."""
import json
import re
import shutil

import pytest
import yaml

from tests.support.cli import TINY, merge, run_cli, run_main

pytestmark = pytest.mark.slow

# 48 images, global batch 16: 3 steps/epoch; a resume point after every step, all kept, so the
# run directory can be cut back to any point (as a run killed there would have left it).
CONFIG = merge(TINY, {"TRAINING": {"EPOCHS": 4, "CKPT_EVERY_ITERS": 1, "KEEP_CHECKPOINTS": 12}})
BATCH = re.compile(r"Batch: (\d+)\| Loss: [\d.]+ \| Top1: [\d.]+ \| epoch (\d+)/4 \| LR: ([\d.]+)")


def _run(*args, nproc):
    """resnest-train on ``nproc`` processes; a 1-process run in this process (its ``main``,
    without a new interpreter's imports)."""
    if nproc == 1:
        return run_main(*args)
    return run_cli(*args, "--nproc-per-node", str(nproc), timeout=300)


def lr_by_step(log_text):
    return {(int(e), int(b)): float(lr) for b, e, lr in BATCH.findall(log_text)}


def stopped_at(full, target, iteration, mid_epoch):
    """A copy of run ``full`` as a run stopped right after ``iteration`` would have left it.

    ``mid_epoch``: as with ``KEEP_CHECKPOINTS: 1``, only the newest resume point (mid-epoch)
    is left, and the last epoch end survives as ``epoch-*.pt`` (what the run keeps for this)."""
    shutil.copytree(full, target)
    for name in ("model_weights.pt", "metrics.json"):
        (target / name).unlink()
    ckpts = target / "checkpoints"
    boundary = iteration // 3 * 3
    shutil.copy(ckpts / f"resume-e{boundary // 3:03d}-i{boundary:07d}.pt",
                ckpts / f"epoch-e{boundary // 3:03d}-i{boundary:07d}.pt")
    for p in ckpts.glob("*.pt"):
        if p.name.startswith("best-"):
            p.unlink()
            continue
        it = int(p.stem.split("-i")[-1])
        keep = (p.name.startswith("epoch-") and it == boundary) or (
            p.name.startswith("resume-") and (it == iteration if mid_epoch else it <= iteration))
        if not keep:
            p.unlink()
    log = target / "log.txt"
    log.write_text(log.read_text().split("Epoch: 2, Time cost")[0])


@pytest.mark.parametrize("before, after, mid_epoch", [(2, 1, True), (1, 2, False)])
def test_resume_on_another_world_size_continues_the_schedule(tmp_path, before, after, mid_epoch):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    full = _run("--config-file", cfg, "--outdir", tmp_path / "full", nproc=before)
    assert full.returncode == 0, full.stderr
    # stopped at the first step of epoch 3 (mid-epoch point i7), or right after epoch 2 (i6)
    stopped_at(tmp_path / "full", tmp_path / "elastic", 7 if mid_epoch else 6, mid_epoch)
    resumed = _run("--config-file", cfg, "--outdir", tmp_path / "elastic", "--resume", "auto",
                   nproc=after)
    assert resumed.returncode == 0, resumed.stderr

    log = (tmp_path / "elastic" / "log.txt").read_text()
    assert f"Resuming a {before}-process run on {after} processes" in log
    assert "Not bitwise" in log and "same global batch 16" in log
    if mid_epoch:  # the newest point is mid-epoch: the epoch-2 end point is used instead
        assert "resume-e003-i0000007.pt is a mid-epoch resume point" in log
        assert "epoch-e002-i0000006.pt" in log
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
