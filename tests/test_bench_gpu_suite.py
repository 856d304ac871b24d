"""The GPU benchmark suite's smoke mode (benchmarks/gpu_suite.py --smoke) runs end to end and
writes the JSON/markdown shape a GPU run writes, so that the suite cannot rot between GPU loans."""
import json
import statistics

import pytest
import torch

from tests.support.cli import cli_env, run_cli

PARTS = ("train", "infer", "jpeg_pipeline", "train_compiled", "recipe")


@pytest.mark.slow  # a benchmark subprocess, about 20 s
def test_gpu_suite_smoke(tmp_path):
    env = cli_env()  # OMP_NUM_THREADS=1
    if torch.cuda.is_available():
        env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU smoke run (a fresh interpreter then)
    # python -m benchmarks.gpu_suite, else forked from the tests' fork server (no torch import)
    proc = run_cli("--smoke", "--out", tmp_path, cwd=tmp_path, env=env, timeout=120,
                   module="benchmarks.gpu_suite")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert result["mode"] == "smoke" and result["smoke_reason"]
    assert result["env"]["device_name"] and result["env"]["torch"]
    assert set(result["parts"]) == set(PARTS)
    for name, part in result["parts"].items():
        assert part["status"] == "ok", (name, part.get("reason"))
        assert part["seconds"] > 0 and part["budget_s"] > 0
    parts = result["parts"]
    for name in PARTS[:-2] + ("recipe",):  # steady state: timed steps after warm-up, per part
        if name != "jpeg_pipeline":
            assert parts[name]["timed_steps"] >= 2 and parts[name]["img_per_s"] > 0, name
    groups = [parts["infer"]["models"]] + list(parts["train"]["by_batch"].values())
    assert set(parts["train"]["by_batch"]) == {"2", "4"}  # two batches (GPU: 128 and 256)
    for models in groups:
        # ours, timm's twin and timm's plain ResNet (the calibration)
        assert set(models) == {"ours:resnest14", "timm:resnest14d", "timm:resnet18"}
        for row in models.values():
            # the reported throughput is the median of the timed trials
            assert row["status"] == "ok" and row["img_s_trials"] and min(row["img_s_trials"]) > 0
            assert row["img_s"] == statistics.median(row["img_s_trials"])
        ours, timm = models["ours:resnest14"], models["timm:resnest14d"]
        assert ours["ratio_vs_timm"] == pytest.approx(ours["img_s"] / timm["img_s"])
    train = parts["train"]
    best = train["by_batch"][str(train["best_batch"])]
    assert train["img_per_s"] == best["ours:resnest14"]["img_s"]
    assert train["vs_timm"] == pytest.approx(best["ours:resnest14"]["ratio_vs_timm"])
    assert train["flops_per_image"] > 0
    assert train["mfu"] is None and train["peak_bf16_tflops"] is None  # no known peak: null
    from benchmarks.gpu_suite import bf16_peak_tflops, mfu
    assert bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bf16_peak_tflops("NVIDIA L4") == 121.0 and bf16_peak_tflops("Some GPU") is None
    assert mfu(1000.0, 1e10, 100.0) == pytest.approx(0.1)
    compiled = parts["train_compiled"]
    modes = {r["mode"]: r for r in compiled["models"].values()}
    assert set(modes) == {"default", "max-autotune", "reduce-overhead"}
    assert compiled["fastest_mode"] == max(modes, key=lambda m: modes[m]["img_s"])
    assert compiled["recipe_setting"] == f"MODEL.COMPILE: {compiled['fastest_mode']}"
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
    assert recipe["img_per_s"] == recipe["steady_img_s"]
    assert recipe["peak_gpu_mem_gib"] is None and recipe["peak_gpu_mem_note"]
    assert recipe["sync_debug"]["status"] == "skipped"  # CUDA only
    # the recipe over the bare step of part train: same model, batch and precision
    bare = train["by_batch"][str(recipe["batch"])]["ours:resnest14"]["img_s"]
    assert recipe["bare_step_img_s"] == bare and recipe["amp"] == "bf16"
    assert recipe["vs_bare_step"] == pytest.approx(recipe["img_per_s"] / bare)
    decode = recipe["jpeg"]["decode"]
    assert decode["cpu"]["status"] == "ok", decode["cpu"].get("reason")
    assert decode["cpu"]["img_per_s"] > 0 and decode["cpu"]["timed_steps"] >= 1
    # DATA.DECODE gpu: on the CPU the same device-decode code with libjpeg-turbo on both sides
    gpu = decode["gpu"]
    assert gpu["status"] == "ok", gpu.get("reason")
    assert gpu["img_per_s"] > 0 and gpu["timed_steps"] >= 1
    assert gpu["vs_decode_cpu"] == pytest.approx(gpu["img_per_s"] / decode["cpu"]["img_per_s"])
    assert gpu["decoder_images"] >= 8 and gpu["decoder_max_abs_diff_levels"] == 0
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


def test_sync_check_covers_exactly_the_free_iterations(monkeypatch):
    # The GPU run's sync check: "error" from ITERATION_STARTED of a free iteration (not a log,
    # NaN-check or epoch-end iteration) through its ITERATION_COMPLETED handlers, "default" from
    # the next batch fetch and at epoch ends. Recorded here through the mode setter.
    from ignite.engine import Engine, Events

    from benchmarks.gpu_suite import SyncCheck
    modes = []
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)
    trainer = Engine(lambda e, b: None)
    check = SyncCheck(log_every=3, check_every=5)
    check.attach(trainer)
    seen = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED,
                              lambda e: seen.append((e.state.iteration, modes[-1])))
    trainer.run(range(7), max_epochs=2)
    free = [it for it in range(1, 15) if it % 3 and it % 5 and it % 7]
    assert [it for it, mode in seen if mode == "error"] == free
    assert check.free_iterations == len(free) == 6 and modes[-1] == "default"

    # a failing step (a sync under "error") ends the run with its own exception, mode reset
    failing = Engine(lambda e, b: (_ for _ in ()).throw(RuntimeError("synced")))
    SyncCheck(log_every=3, check_every=5).attach(failing)
    with pytest.raises(RuntimeError, match="synced"):
        failing.run(range(7), max_epochs=1)
    assert modes[-1] == "default"
