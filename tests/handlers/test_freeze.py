"""Fine-tuning pieces: body/head LR groups under a schedule, and a frozen-then-unfrozen body."""
import pytest
import torch
from ignite.engine import Events
from torch import nn

from resnest_engine.engine import create_trainer, param_groups
from resnest_engine.handlers.freeze import FreezeBody
from resnest_engine.handlers.schedules import LRScale, create_lr_scheduler
from resnest_engine.models import get_model

from tests.support.tiny_models import make_loader


def test_body_lr_scale_and_freeze_are_visible_in_the_optimizer():
    torch.manual_seed(0)
    model = get_model("resnest14", num_classes=10, stem="cifar")
    groups = param_groups(model, 1e-4, no_bn_wd=True, body_lr_scale=0.1)
    head = {id(p) for p in model.fc.parameters()}
    assert all(id(p) in head for g in groups if "lr_scale" not in g for p in g["params"])
    assert all(id(p) not in head for g in groups if "lr_scale" in g for p in g["params"])
    opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    trainer = create_trainer(model, opt, nn.CrossEntropyLoss())
    sched = create_lr_scheduler(opt, "cos", 0.1, 8, 2)
    trainer.add_event_handler(Events.ITERATION_STARTED, sched)
    trainer.add_event_handler(Events.ITERATION_STARTED, LRScale(opt))
    FreezeBody(model, opt, epochs=1).attach(trainer)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    seen = []

    @trainer.on(Events.ITERATION_COMPLETED)
    def _record(engine):
        lrs = [(g.get("lr_scale", 1.0), g["lr"]) for g in opt.param_groups]
        seen.append(lrs)
        if engine.state.epoch == 1:  # frozen: the body has not moved
            for n, p in model.named_parameters():
                if not n.startswith("fc."):
                    assert torch.equal(p, start[n]), n

    @trainer.on(Events.EPOCH_COMPLETED(once=1))
    def _head_moved(_):
        assert not torch.equal(model.fc.weight, start["fc.weight"])

    loader = make_loader(n=16, batch_size=4, size=16)
    trainer.run(loader, max_epochs=2)
    for lrs in seen:
        head_lr = [lr for scale, lr in lrs if scale == 1.0][0]
        assert all(lr == pytest.approx(head_lr * 0.1) for scale, lr in lrs if scale != 1.0)
    moved = [n for n, p in model.named_parameters() if not n.startswith("fc.")
             and not torch.equal(p, start[n])]
    assert moved  # epoch 2: the body trains


def test_fraction_split_is_stratified_and_fixed_by_the_seed():
    from resnest_engine.data.datasets import fraction_split
    files = [f"f{i:02d}.png" for i in range(10)]
    a = fraction_split(files, 0.2, seed=0, key="cat")
    assert len(a["val"]) == 2 and len(a["train"]) == 8
    assert sorted(a["val"] + a["train"]) == files
    assert fraction_split(list(reversed(files)), 0.2, 0, "cat") == a  # order-independent
    assert fraction_split(files, 0.2, 1, "cat") != a  # another seed, another split
    assert fraction_split(["one.png"], 0.5, 0, "x") == {"train": ["one.png"], "val": []}
