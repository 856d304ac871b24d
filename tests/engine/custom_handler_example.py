"""A custom handler: train only the classifier in epoch 1, everything from epoch 2 on."""
import torch
from ignite.engine import Events
from torch.utils.data import DataLoader, TensorDataset

from resnest_engine.engine import create_optimizer, create_trainer, param_groups
from resnest_engine.handlers import (attach_standard_handlers, build_standard_handlers,
                                     create_lr_scheduler)
from resnest_engine.models import get_model

torch.manual_seed(0)
model = get_model("resnest14", num_classes=10)
# Build the optimizer while everything is trainable: param_groups leaves frozen parameters out.
optimizer = create_optimizer(param_groups(model, weight_decay=1e-4), "nesterov", lr=0.05)
trainer = create_trainer(model, optimizer, torch.nn.CrossEntropyLoss())
data = DataLoader(TensorDataset(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))),
                  batch_size=4)
epochs = 2
schedule = create_lr_scheduler(optimizer, "cos", lr=0.05, total_steps=epochs * len(data))
handlers = build_standard_handlers(trainer, model, optimizer, lr_scheduler=schedule,
                                   progress_bar="off")
attach_standard_handlers(trainer, handlers)


@trainer.on(Events.EPOCH_STARTED)  # also fires for the epoch a resumed run continues
def freeze_backbone_in_first_epoch(engine):
    # The step sets gradients to None first, and the optimizer skips parameters without one.
    # BatchNorm running statistics still update in train mode.
    train_all = engine.state.epoch >= 2
    for name, p in model.named_parameters():
        p.requires_grad_(train_all or name.startswith("fc."))


stem_before = model.conv1[0].weight.detach().clone()


@trainer.on(Events.EPOCH_COMPLETED)
def report(engine):
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    stem_changed = not torch.equal(model.conv1[0].weight, stem_before)
    print(f"epoch {engine.state.epoch}: {trainable} trainable parameters, "
          f"stem changed: {stem_changed}")


trainer.run(data, max_epochs=epochs)
# epoch 1: 20490 trainable parameters, stem changed: False
# epoch 2: 8583178 trainable parameters, stem changed: True
