"""An official train.py checkpoint loads: weights, SGD momentum by name, epoch, LR position."""
import pytest
import torch
from torch import nn

from resnest_engine.engine import create_trainer, param_groups
from resnest_engine.handlers.checkpoint import CheckpointError, check_architecture, read_checkpoint
from resnest_engine.handlers.schedules import create_lr_scheduler, simulate_lr
from resnest_engine.models import get_model
from resnest_engine.official import (is_official_checkpoint, load_official_checkpoint,
                                     read_resume_file)

EPOCH_LEN, EPOCHS, LR = 3, 4, 0.1


def official_checkpoint(tmp_path, no_bn_wd, epoch=1, seed=0):
    """Train a few steps the way the official script builds its optimizer; save its layout."""
    torch.manual_seed(seed)
    model = get_model("resnest14", num_classes=4)
    if no_bn_wd:  # the official DISABLE_BN_WD grouping: by 'bn'/'bias' in the name
        named = list(model.named_parameters())
        bn = [p for n, p in named if "bn" in n or "bias" in n]
        rest = [p for n, p in named if not ("bn" in n or "bias" in n)]
        opt = torch.optim.SGD([{"params": bn, "weight_decay": 0}, {"params": rest}], lr=LR,
                              momentum=0.9, weight_decay=1e-4)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=1e-4)
    for _ in range(2):
        x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 4, (4,))
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    path = tmp_path / f"checkpoint_{epoch}.pth"
    torch.save({"epoch": epoch, "state_dict": model.state_dict(), "optimizer": opt.state_dict(),
                "best_pred": 12.5, "acclist_train": [10.0], "acclist_val": [12.5]}, path)
    return path, model, opt


@pytest.mark.parametrize("no_bn_wd", [False, True])
def test_official_checkpoint_loads_into_our_run(tmp_path, no_bn_wd):
    path, ref_model, ref_opt = official_checkpoint(tmp_path, no_bn_wd)
    ckpt = read_resume_file(path)
    assert is_official_checkpoint(ckpt)
    with pytest.raises(CheckpointError, match="official ResNeSt checkpoint"):
        # where only our checkpoints make sense, it says what it is
        read_resume_file(path, allow_official=False)
    with pytest.raises(CheckpointError, match="not a resnest-engine checkpoint"):
        read_checkpoint(path)  # the library's own reader knows only our format

    torch.manual_seed(123)
    model = get_model("resnest14", num_classes=4)
    check_architecture({"model": ckpt["state_dict"], "meta": {}}, model.state_dict(), path)
    # our own grouping (by module type), different from the official one
    optimizer = torch.optim.SGD(param_groups(model, 1e-4, no_bn_wd=True), lr=LR, momentum=0.9)
    trainer = create_trainer(model, optimizer, nn.CrossEntropyLoss(), deterministic=True, seed=0)
    sched = create_lr_scheduler(optimizer, "cos", LR, EPOCHS * EPOCH_LEN, EPOCH_LEN)
    info = load_official_checkpoint(ckpt, model, optimizer, trainer, sched, EPOCH_LEN, EPOCHS, path)

    assert info["epochs_done"] == 2 and info["best_pred"] == 12.5  # official epoch 1 = 2 done
    assert trainer.state.epoch == 2 and trainer.state.iteration == 2 * EPOCH_LEN
    for (name, p), q in zip(model.state_dict().items(), ref_model.state_dict().values()):
        assert torch.equal(p, q), name
    ref_bufs = {n: ref_opt.state[p]["momentum_buffer"] for n, p in ref_model.named_parameters()}
    assert info["momentum_buffers"] == len(ref_bufs)
    for name, p in model.named_parameters():
        assert torch.equal(optimizer.state[p]["momentum_buffer"], ref_bufs[name]), name
    # the schedule continues where an uninterrupted run would be at step 6
    fresh = create_lr_scheduler(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=LR), "cos", LR,
                                EPOCHS * EPOCH_LEN, EPOCH_LEN)
    # the same formula at the same event index: bitwise by construction
    assert simulate_lr(sched, 3) == pytest.approx(simulate_lr(fresh, 9)[6:9], rel=0, abs=0)


def test_official_checkpoint_of_another_model_or_finished_run_is_refused(tmp_path):
    path, _, _ = official_checkpoint(tmp_path, False, epoch=EPOCHS - 1)
    ckpt = read_resume_file(path)
    model = get_model("resnest26", num_classes=4)
    with pytest.raises(CheckpointError, match="another architecture"):
        check_architecture({"model": ckpt["state_dict"], "meta": {}}, model.state_dict(), path)
    model = get_model("resnest14", num_classes=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    trainer = create_trainer(model, optimizer, nn.CrossEntropyLoss())
    sched = create_lr_scheduler(optimizer, "cos", LR, EPOCHS * EPOCH_LEN)
    with pytest.raises(CheckpointError, match="nothing left to train"):
        load_official_checkpoint(ckpt, model, optimizer, trainer, sched, EPOCH_LEN, EPOCHS, path)
    adam = torch.optim.AdamW(model.parameters())
    with pytest.raises(CheckpointError, match="SGD"):
        load_official_checkpoint(ckpt, model, adam, trainer, sched, EPOCH_LEN, EPOCHS + 5, path)
