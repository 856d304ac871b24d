"""Evaluation on 2 gloo processes with unpadded sharding equals 1 process, on an odd-sized set."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from resnest_engine.engine import create_evaluator
from tests.support.cli import free_port, run_cli

N, BATCH = 37, 8


@pytest.mark.slow  # two gloo processes, forked by a command
def test_two_gloo_processes_equal_one(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 10))
    x = torch.randn(N, 3, 2, 2)
    y = torch.randint(0, 10, (N,))
    torch.save({"model": model.state_dict(), "x": x, "y": y, "batch": BATCH}, tmp_path / "data.pt")

    ev = create_evaluator(model, num_classes=10)
    ev.run(DataLoader(TensorDataset(x, y), batch_size=BATCH))
    single = {k: float(v) for k, v in ev.state.metrics.items()}
    assert 0 < single["top1"] < 100 and single["top1"] < single["top5"] < 100

    # forked from the tests' fork server (OMP_NUM_THREADS=1), no torch import
    proc = run_cli(tmp_path, free_port(), timeout=120, module="tests.support.gloo_eval_worker")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["local_samples"] for r in ranks] == [19, 18]
    for r in ranks:  # metrics are all-reduced: both ranks see the global numbers
        # integer counts, all-reduced, then the same division: exact (a top logit would have
        # to tie another within rounding to change a count)
        assert r["top1"] == single["top1"]
        assert r["top5"] == single["top5"]
        # fp32 sums of 37 positive losses in another grouping: <= ~7 eps apart, measured <= 1.7
        # eps over 200 seeds; rel 1e-6 = 8.4 eps
        assert r["loss"] == pytest.approx(single["loss"], rel=1e-6)
    # 37 samples: top-1 is a multiple of 100/37, so a padded (38-sample) count would show.
    assert round(single["top1"] * N / 100, 6) == round(single["top1"] * N / 100)
