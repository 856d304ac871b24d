"""A deterministic run stopped mid-epoch and resumed from its checkpoint ends bitwise equal."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from ignite.engine import Events

from tests.support.standard_setup import standard_handlers
from resnest_engine.engine import create_optimizer, create_trainer, param_groups
from resnest_engine.data import MixupCutmix
from resnest_engine.engine import SoftTargetCrossEntropy
from resnest_engine.handlers import (attach_standard_handlers, list_checkpoints, load_checkpoint,
                                     read_checkpoint)

from tests.support.tiny_models import make_loader, make_tiny_model

EPOCHS, N, BATCH = 3, 24, 4  # 6 iterations per epoch, 18 in all


def _build(out_dir: Path):
    """Everything from scratch, as a new process would."""
    torch.manual_seed(1234)  # whatever the init, the checkpoint replaces it on resume
    model = make_tiny_model(seed=11)
    opt = create_optimizer(param_groups(model, 1e-4), "nesterov", lr=0.2)
    mix = MixupCutmix(10, mixup_alpha=0.2, cutmix_alpha=1.0, prob=0.8, label_smoothing=0.1)
    trainer = create_trainer(model, opt, SoftTargetCrossEntropy(), batch_transform=mix,
                             deterministic=True, seed=42)
    mix.attach(trainer, off_epoch=2)
    opts = dict(epochs=EPOCHS, epoch_length=N // BATCH, lr=0.2, output_dir=str(out_dir),
                           warmup_epochs=1, warmup_start_factor=0.1, ema_decay=0.7,
                           ckpt_every_iters=4, keep_checkpoints=3, log_every=5,
                           progress_bar="off", tensorboard=False)
    val = make_loader(n=13, batch_size=5, seed=9)
    handlers = standard_handlers(trainer, model, opt, val, **opts)
    attach_standard_handlers(trainer, handlers)
    train = make_loader(n=N, batch_size=BATCH, seed=3, shuffle=True)
    return model, trainer, handlers, train


def _final_state(model, handlers):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {k: v.clone() for k, v in handlers.ema.ema_model.state_dict().items()})


def test_mid_epoch_resume_is_bitwise_exact(tmp_path):
    # Uninterrupted.
    model, trainer, handlers, train = _build(tmp_path / "a")
    trainer.run(train, max_epochs=EPOCHS)
    assert trainer.state.iteration == 18
    ref_model, ref_ema = _final_state(model, handlers)
    ref_metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())

    # Interrupted at iteration 10 (epoch 2, mid-epoch); the newest resume point is iteration 8.
    model, trainer, handlers, train = _build(tmp_path / "b")
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=10), lambda e: e.terminate())
    trainer.run(train, max_epochs=EPOCHS)
    assert trainer.state.iteration == 10
    newest = list_checkpoints(tmp_path / "b" / "checkpoints")[0]
    assert newest.name == "resume-e002-i0000008.pt"

    # Fresh objects, resumed.
    model, trainer, handlers, train = _build(tmp_path / "b")
    ckpt = read_checkpoint(newest)
    load_checkpoint(ckpt, handlers.to_save)
    handlers.resume_checkpointer.load_state_dict(ckpt["checkpointer"])
    assert trainer.state.iteration == 8 and trainer.state.seed == 42
    iterations = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: iterations.append(e.state.iteration))
    trainer.run(train, max_epochs=EPOCHS)
    assert iterations == list(range(9, 19))

    # Bitwise per machine and thread count, checked here: both runs are this process, so the same
    # kernels on the same values in the same order.
    got_model, got_ema = _final_state(model, handlers)
    for k, v in ref_model.items():
        assert torch.equal(got_model[k], v), k
    for k, v in ref_ema.items():
        assert torch.equal(got_ema[k], v), k
    assert json.loads((tmp_path / "b" / "metrics.json").read_text()) == ref_metrics
    assert len(ref_metrics["history"]) == EPOCHS
    a_final = torch.load(tmp_path / "a" / "model_weights.pt", weights_only=True)
    b_final = torch.load(tmp_path / "b" / "model_weights.pt", weights_only=True)
    assert all(torch.equal(a_final[k], b_final[k]) for k in a_final)


def test_resume_from_epoch_end_is_bitwise_exact(tmp_path):
    model, trainer, handlers, train = _build(tmp_path / "a")
    trainer.run(train, max_epochs=EPOCHS)
    ref_model, _ = _final_state(model, handlers)

    model, trainer, handlers, train = _build(tmp_path / "b")
    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda e: e.terminate())
    trainer.run(train, max_epochs=EPOCHS)
    newest = list_checkpoints(tmp_path / "b" / "checkpoints")[0]
    assert newest.name == "resume-e001-i0000006.pt"
    model, trainer, handlers, train = _build(tmp_path / "b")
    ckpt = read_checkpoint(newest)
    load_checkpoint(ckpt, handlers.to_save)
    handlers.resume_checkpointer.load_state_dict(ckpt["checkpointer"])
    trainer.run(train, max_epochs=EPOCHS)
    got_model, _ = _final_state(model, handlers)
    assert all(torch.equal(got_model[k], v) for k, v in ref_model.items())
