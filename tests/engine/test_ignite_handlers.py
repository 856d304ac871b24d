"""Stock ignite handlers work with our trainer and evaluator, and any standard piece can be
swapped for one of ignite's in one line."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Events
from ignite.handlers import (CosineAnnealingScheduler, EarlyStopping, FastaiLRFinder,
                             ModelCheckpoint, ProgressBar, global_step_from_engine)
from ignite.metrics import RunningAverage

from tests.support.standard_setup import standard_handlers
from resnest_engine.engine import TrainEvents, create_evaluator, create_trainer
from resnest_engine.handlers import (Validation, attach_standard_handlers,
                                     read_checkpoint)


def _setup(tiny_model, **kwargs):
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trainer = create_trainer(model, opt, F.cross_entropy, **kwargs)
    return model, opt, trainer


def test_running_average_early_stopping_and_progress_bar(tiny_model, loader, capsys):
    model, opt, trainer = _setup(tiny_model)
    RunningAverage(output_transform=lambda out: out["loss"], alpha=0.5).attach(trainer, "avg_loss")
    losses, averages = [], []

    @trainer.on(Events.ITERATION_COMPLETED)
    def _record(engine):
        losses.append(float(engine.state.output["loss"]))
        averages.append(engine.state.metrics["avg_loss"])

    evaluator = create_evaluator(model)
    validation = Validation({"raw": evaluator}, loader(n=8, batch_size=4, seed=3))
    validation.attach(trainer)
    # A score that never improves: EarlyStopping(patience=1) stops the trainer at the 2nd validation.
    evaluator.add_event_handler(Events.COMPLETED, EarlyStopping(1, lambda ev: 0.0, trainer))
    ProgressBar(persist=True).attach(trainer, output_transform=lambda out: {"loss": out["loss"]})
    ProgressBar(persist=True).attach(evaluator)
    trainer.run(loader(n=12, batch_size=4), max_epochs=5)

    assert trainer.state.epoch == 2 and validation.epoch == 2
    expected = losses[0]
    for i, (loss, avg) in enumerate(zip(losses, averages)):
        if i:
            expected = 0.5 * expected + 0.5 * loss
        # fp32 running average (alpha 0.5: one rounding a step, halved after) against float64:
        # <= 1 ulp of ~2.3; rel 1e-6 = 8.4 eps32
        assert avg == pytest.approx(expected, rel=1e-6)
    assert "[2/5]" in capsys.readouterr().err  # the trainer's bar reached epoch 2 of 5


def test_model_checkpoint_on_the_evaluator(tmp_path, tiny_model, loader):
    model, opt, trainer = _setup(tiny_model)
    evaluator = create_evaluator(model)
    Validation({"raw": evaluator}, loader(n=8, batch_size=4, seed=3)).attach(trainer)
    best = ModelCheckpoint(tmp_path, "best", n_saved=2, score_name="top1",
                           score_function=lambda ev: ev.state.metrics["top1"],
                           global_step_transform=global_step_from_engine(trainer))
    scores = []
    evaluator.add_event_handler(Events.COMPLETED, lambda ev: scores.append(ev.state.metrics["top1"]))
    evaluator.add_event_handler(Events.COMPLETED, best, {"model": model})
    trainer.run(loader(n=12, batch_size=4), max_epochs=3)
    assert len(scores) == 3
    kept = sorted(best._saved, key=lambda item: item.priority)
    assert [item.priority for item in kept] == sorted(scores)[-2:]
    for item in kept:
        state = torch.load(tmp_path / item.filename, weights_only=True)
        assert set(state) == set(model.state_dict())


def test_fastai_lr_finder_runs_on_our_trainer(tiny_model, loader):
    model, opt, trainer = _setup(tiny_model)
    before = copy.deepcopy(model.state_dict())
    finder = FastaiLRFinder()
    with finder.attach(trainer, to_save={"model": model, "optimizer": opt},
                       output_transform=lambda out: out["loss"], num_iter=6, start_lr=1e-4,
                       end_lr=1.0) as finding_trainer:
        finding_trainer.run(loader(n=24, batch_size=4), max_epochs=1)
    lrs = finder.get_results()["lr"]
    # An exponential sweep from 1e-4 to 1 over 6 steps, as the finder set it on our optimizer.
    # float64 both sides, another formula: rel 1e-9 = 4.5e6 eps64
    assert lrs == pytest.approx([1e-4 * 10 ** (4 * (i + 1) / 6) for i in range(6)], rel=1e-9)
    for k, v in model.state_dict().items():  # the finder restores the model afterwards
        assert torch.equal(v, before[k]), k


def _opts(tmp_path, **kw):
    base = dict(epochs=2, epoch_length=4, lr=0.1, output_dir=str(tmp_path), log_every=1000,
                progress_bar="off", tensorboard=False)
    base.update(kw)
    return dict(**base)


def test_swap_in_an_ignite_scheduler(tmp_path, tiny_model, loader):
    model, opt, trainer = _setup(tiny_model)
    handlers = standard_handlers(trainer, model, opt, None, **_opts(tmp_path))
    handlers.lr_scheduler = CosineAnnealingScheduler(opt, "lr", 0.5, 0.05, cycle_size=8)  # the swap
    attach_standard_handlers(trainer, handlers)
    seen = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: seen.append(opt.param_groups[0]["lr"]))
    trainer.run(loader(n=16, batch_size=4), max_epochs=2)
    expected = [v for _, v in CosineAnnealingScheduler.simulate_values(
        8, param_name="lr", start_value=0.5, end_value=0.05, cycle_size=8)]
    assert seen == pytest.approx(expected, rel=1e-12)  # ignite's own formula in float64: equal
    # The checkpoint holds the scheduler that ran.
    ckpt = read_checkpoint(tmp_path / "checkpoints" / "resume-e002-i0000008.pt")
    assert ckpt["schedulers"]["lr"]["event_index"] == 8
    assert ckpt["schedulers"]["lr"]["start_value"] == 0.5


def test_swap_in_model_checkpoint_for_resume_points(tmp_path, tiny_model, loader):
    model, opt, trainer = _setup(tiny_model)
    handlers = standard_handlers(trainer, model, opt, None, **_opts(tmp_path))
    handlers.resume_checkpointer = ModelCheckpoint(tmp_path / "mc", "run", n_saved=1)  # the swap
    attach_standard_handlers(trainer, handlers)
    trainer.run(loader(n=16, batch_size=4), max_epochs=2)
    files = sorted(p.name for p in (tmp_path / "mc").iterdir())
    assert files == ["run_checkpoint_8.pt"]  # epoch 2 of 2 (ckpt_every=1), newest one kept
    assert not list((tmp_path / "checkpoints").glob("resume-*"))
    saved = torch.load(tmp_path / "mc" / files[0], weights_only=True)
    assert saved["trainer"]["iteration"] == 8
    for k, v in model.state_dict().items():
        assert torch.equal(saved["model"][k], v)


def test_leave_a_piece_off(tmp_path, tiny_model, loader, caplog):
    model, opt, trainer = _setup(tiny_model)
    handlers = standard_handlers(trainer, model, opt, loader(n=8, batch_size=4),
                                 **_opts(tmp_path, log_every=1))
    handlers.train_logger = None
    handlers.final_weights = None
    attach_standard_handlers(trainer, handlers)
    with caplog.at_level("INFO", logger="resnest_engine"):
        trainer.run(loader(n=16, batch_size=4), max_epochs=2)
    assert not [r for r in caplog.messages if r.startswith("Batch:")]
    assert not (tmp_path / "model_weights.pt").exists()
    assert (tmp_path / "metrics.json").exists()


def test_validation_completed_fires_on_validated_epochs_only(tiny_model, loader):
    model, opt, trainer = _setup(tiny_model)
    validation = Validation({"raw": create_evaluator(model)}, loader(n=8, batch_size=4),
                            every=2)
    validation.attach(trainer)
    fired = []
    trainer.add_event_handler(TrainEvents.VALIDATION_COMPLETED,
                              lambda e: fired.append((e.state.epoch, validation.epoch,
                                                      validation.results["raw"]["top1"])))
    trainer.run(loader(n=8, batch_size=4), max_epochs=5)
    assert [f[0] for f in fired] == [2, 4, 5] and all(f[0] == f[1] for f in fired)
    assert all(f[2] in (0.0, 12.5, 25.0, 37.5, 50.0, 62.5, 75.0, 87.5, 100.0) for f in fired)
