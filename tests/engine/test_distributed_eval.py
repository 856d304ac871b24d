"""Evaluation on 2 gloo processes with unpadded sharding equals 1 process, on an odd-sized set."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from resnest_engine.engine import create_evaluator

REPO = Path(__file__).resolve().parents[2]
N, BATCH = 37, 8

WORKER = textwrap.dedent("""
    import json, sys
    import ignite.distributed as idist
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    from resnest_engine.engine import create_evaluator

    def run(local_rank, work):
        torch.set_num_threads(1)
        data = torch.load(work + "/data.pt", weights_only=True)
        model = nn.Sequential(nn.Flatten(), nn.Linear(12, 10))
        model.load_state_dict(data["model"])
        rank, world = idist.get_rank(), idist.get_world_size()
        ds = TensorDataset(data["x"], data["y"])
        shard = list(range(rank, len(ds), world))  # unpadded: every sample on exactly one rank
        loader = DataLoader(ds, batch_size=int(data["batch"]), sampler=shard)
        ev = create_evaluator(model, num_classes=10)
        ev.run(loader)
        m = {k: float(v) for k, v in ev.state.metrics.items()}
        m["local_samples"] = len(shard)
        with open(f"{work}/rank{rank}.json", "w") as f:
            json.dump(m, f)

    if __name__ == "__main__":
        work, port = sys.argv[1], int(sys.argv[2])
        # fork: the children inherit the imports (spawn would re-import torch in each, ~4 s).
        with idist.Parallel(backend="gloo", nproc_per_node=2, master_port=port,
                            start_method="fork") as parallel:
            parallel.run(run, work)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two gloo processes in a subprocess
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

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), str(_free_port())],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
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
