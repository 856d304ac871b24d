"""The GPU benchmark suite's smoke mode (benchmarks/gpu_suite.py --smoke) runs end to end and
writes the JSON/markdown shape a GPU run writes, so that the suite cannot rot between GPU loans."""
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PARTS = ("train", "infer", "jpeg_pipeline", "train_compiled", "recipe")


@pytest.mark.slow  # a benchmark subprocess, about 20 s
def test_gpu_suite_smoke(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), "--smoke",
                           "--out", str(tmp_path)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert result["mode"] == "smoke" and result["smoke_reason"]
    assert result["env"]["device_name"] and result["env"]["torch"]
    assert set(result["parts"]) == set(PARTS)
    for name, part in result["parts"].items():
        assert part["status"] == "ok", (name, part.get("reason"))
        assert part["seconds"] > 0 and part["budget_s"] > 0
    for name in ("train", "infer", "train_compiled"):
        models = result["parts"][name]["models"]
        assert set(models) == {"ours:resnest14", "timm:resnest14d"}
        for row in models.values():
            # the reported throughput is the median of the timed trials
            assert row["status"] == "ok" and row["img_s_trials"] and min(row["img_s_trials"]) > 0
            assert row["img_s"] == statistics.median(row["img_s_trials"])
        ours, timm = models["ours:resnest14"], models["timm:resnest14d"]
        assert ours["ratio_vs_timm"] == pytest.approx(ours["img_s"] / timm["img_s"])
    jpeg = result["parts"]["jpeg_pipeline"]
    pipes = jpeg["pipelines"]
    assert len(pipes) == 2 and all(p["img_s"] == statistics.median(p["img_s_trials"]) > 0
                                   for p in pipes.values())
    assert jpeg["speedup_vs_torchvision"] == pytest.approx(
        pipes["ours (fast_jpeg, normalise on device)"]["img_s"]
        / pipes["torchvision reference"]["img_s"])
    recipe = result["parts"]["recipe"]
    assert recipe["batch_lines"] >= 1 and recipe["epoch_lines"] == 1
    assert recipe["steady_img_s"] > 0 and recipe["epoch_img_s"] > 0
    assert recipe["peak_gpu_mem_gib"] is None and recipe["peak_gpu_mem_note"]
    table = (tmp_path / "gpu_suite.md").read_text()
    assert "| part | what | img/s | vs reference | status |" in table
    for name in PARTS:
        assert f"| {name} |" in table
    assert "SMOKE" in table


def test_parse_train_log():
    from benchmarks import gpu_suite
    log = ("[x] Batch: 10| Loss: 2.000 | Top1: 10.000 | epoch 1/1 | LR: 0.1 | 100.0 img/s\n"
           "[x] Batch: 20| Loss: 2.000 | epoch 1/1 | LR: 0.1 | 300.0 img/s\n"
           "[x] Batch: 30| Loss: 2.000 | epoch 1/1 | LR: 0.1 | 500.0 img/s\n"
           "[x] Epoch: 0, Time cost: 12.5 | epoch 1/1 | 250.0 img/s\n")
    parsed = gpu_suite.parse_train_log(log)
    assert parsed == dict(batch_lines=3, epoch_lines=1, steady_img_s=400.0, epoch_img_s=250.0,
                          epoch_time_s=12.5)
