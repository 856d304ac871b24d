"""tests/engine/test_distributed_eval.py's two gloo processes: each evaluates its unpadded shard
(rank r: samples r, r + 2, ...) of the test's data and writes its all-reduced metrics as
WORK/rank<r>.json. ``python -m tests.support.gloo_eval_worker WORK PORT``."""
import json
import sys

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
