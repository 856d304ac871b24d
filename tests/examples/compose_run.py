import torch
from resnest_engine.data import DataOptions, SamplerEpochs, create_loaders
from resnest_engine.engine import create_evaluator, create_optimizer, create_trainer, param_groups
from resnest_engine.handlers import (Validation, attach_standard_handlers, build_standard_handlers,
                                     create_lr_scheduler, setup_logger)
from resnest_engine.models import get_model

train_loader, val_loader, num_classes = create_loaders(
    DataOptions(dataset="digits", crop_size=32, small_image=True, hflip=False, workers=0),
    batch_size=64, test_batch_size=360, seed=0)
model = get_model("resnest14", num_classes=num_classes, zero_init_last=True)
optimizer = create_optimizer(param_groups(model, weight_decay=0.05), "adamw", lr=0.003)
trainer = create_trainer(model, optimizer, torch.nn.CrossEntropyLoss(label_smoothing=0.1),
                         prepare_batch=train_loader.prepare_batch, deterministic=True, seed=0)
SamplerEpochs(train_loader).attach(trainer)
setup_logger()  # add a file path to also write log.txt; output_dir=... adds checkpoints etc.
steps = len(train_loader)  # optimizer steps per epoch
evaluator = create_evaluator(model, prepare_batch=val_loader.prepare_batch)
handlers = build_standard_handlers(
    trainer, model, optimizer, validation=Validation({"raw": evaluator}, val_loader),
    lr_scheduler=create_lr_scheduler(optimizer, "cos", 0.003, 2 * steps, warmup_steps=steps))
# swap, add or drop any piece here, e.g. handlers.ema = create_ema(model, decay=0.999)
attach_standard_handlers(trainer, handlers)
trainer.run(train_loader, max_epochs=2)
print(handlers.validation.results["raw"])  # {'top1': ..., 'top5': ..., 'loss': ...}
