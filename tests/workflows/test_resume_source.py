"""The resume source (``resnest_engine.workflows.resume``), in process: the elastic accumulation table, the
resume point picked on the same and on another world size, the two kinds ``open_resume`` returns
(our checkpoint, an official ``train.py`` one), their architecture check and their loading into
freshly built handlers. The checkpoints are real: a tiny model trained by the standard handlers
(mid-epoch ``resume-*``, ``epoch-*`` and ``best-*`` files), as a 2-process run with 2 micro-steps
would have recorded them (``meta``)."""
from __future__ import annotations

import logging
import shutil

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Events

from resnest_engine.storage.checksum import with_checksum
from resnest_engine.engine import create_trainer
from resnest_engine.handlers import attach_standard_handlers, read_checkpoint
from resnest_engine.handlers.checkpoint import CheckpointError
from resnest_engine.handlers.schedules import create_lr_scheduler, simulate_lr
from resnest_engine.workflows.resume import (CheckpointResume, OfficialResume, elastic_accum,
                                   elastic_resume_point, open_resume)
from tests.support.standard_setup import scripted_evaluator, standard_handlers
from tests.support.tiny_models import make_loader, make_tiny_model

EPOCHS, EL, LR = 3, 4, 0.1  # 16 images in batches of 4: 4 steps per epoch
STOP_AT = 9  # the saved run stops after the first step of epoch 3
BATCH = 64  # the global batch of the saved run: 2 processes x 2 micro-steps of 16
META = {"model": "tiny", "world_size": 2, "grad_accum": 2, "threads": 3}
SCORES = (10.0, 30.0, 20.0)  # top-1 after epochs 1, 2, 3
SAVED = ["best-e001-top1=10.00.pt", "best-e002-top1=30.00.pt", "epoch-e002-i0000008.pt",
         "resume-e001-i0000003.pt", "resume-e001-i0000004.pt", "resume-e002-i0000006.pt",
         "resume-e002-i0000008.pt", "resume-e003-i0000009.pt"]




def _build(out_dir, *, model=None, epochs=EPOCHS, el=EL, meta=META):
    """Model, optimizer, trainer and attached standard handlers of the tiny run: resume points
    every 3 steps (all kept), the newest epoch end, the best 2 by the scripted top-1."""
    model = model if model is not None else make_tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    trainer = create_trainer(model, opt, F.cross_entropy)
    policy = dict(output_dir=str(out_dir), ckpt_every_iters=3, keep_checkpoints=10,
                  keep_best=2) if out_dir is not None else {}
    handlers = standard_handlers(trainer, model, opt, [0], evaluator=scripted_evaluator(SCORES),
                                 epochs=epochs, epoch_length=el, lr=LR, log_every=1000,
                                 progress_bar="off", tensorboard=False, meta=dict(meta), **policy)
    attach_standard_handlers(trainer, handlers)
    return model, opt, trainer, handlers


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """The checkpoints directory of a run stopped after step 9 (as a killed run leaves it)."""
    out = tmp_path_factory.mktemp("saved_run")
    _, _, trainer, _ = _build(out)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=STOP_AT), lambda e: e.terminate())
    trainer.run(make_loader(n=16, batch_size=4), max_epochs=EPOCHS)
    ckpt_dir = out / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.glob("*.pt")) == SAVED
    return ckpt_dir


@pytest.fixture
def ckpts(saved_run, tmp_path):
    """This test's own copy of the saved checkpoints (tests corrupt, rewrite or remove files)."""
    return shutil.copytree(saved_run, tmp_path / "checkpoints")


@pytest.fixture
def warnings_log(caplog, monkeypatch):
    """caplog on the "resnest_engine" logger (``setup_logger`` turns its propagation off)."""
    monkeypatch.setattr(logging.getLogger("resnest_engine"), "propagate", True)
    caplog.set_level(logging.WARNING, logger="resnest_engine")
    return caplog


def _messages(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "resnest_engine"]


def _corrupt(path, how):
    if how == "garbage":
        path.write_bytes(b"\x00not a checkpoint\xff" * 64)
    else:  # truncated: as a write cut short would leave it
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])


# -- 1. elastic_accum ------------------------------------------------------------------------

@pytest.mark.parametrize("batch, saved_world, saved_accum, world, accum, micro", [
    # the saved micro-batch (batch / (saved_world x saved_accum)) kept where it divides
    (64, 4, 1, 4, 1, 16),
    (64, 4, 1, 2, 2, 16),
    (64, 4, 1, 1, 4, 16),
    (8, 2, 2, 1, 4, 2),
    (8, 2, 2, 2, 2, 2),
    (8, 2, 2, 4, 1, 2),
    (64, 2, 2, 4, 1, 16),
    (96, 4, 2, 2, 4, 12),
    (96, 4, 2, 1, 8, 12),
    # 1: the new per-process batch is smaller than the saved micro-batch ...
    (64, 2, 2, 8, 1, 8),
    (8, 2, 2, 8, 1, 1),
    (96, 4, 2, 16, 1, 6),
    # ... or the fewest micro-steps whose micro-batch is no larger than the saved one, where the
    # saved one does not divide (96 / 3 = 32 per process, saved micro-batch 12: 4 of 8)
    (96, 4, 2, 3, 4, 8),
    (48, 2, 2, 3, 2, 8),
    # a saved micro-batch below one image (the batch was changed): one image per micro-step
    (8, 4, 4, 2, 4, 1),
])
def test_elastic_accum_table(batch, saved_world, saved_accum, world, accum, micro):
    got = elastic_accum(batch, saved_world, saved_accum, world)
    assert got == accum
    assert (batch // world) % got == 0  # whole micro-batches
    assert world * got * micro == batch  # the global batch is kept


@pytest.mark.parametrize("batch, saved_world, world", [(64, 4, 3), (96, 4, 5), (10, 2, 4)])
def test_elastic_accum_refuses_a_world_that_does_not_divide_the_batch(batch, saved_world, world):
    with pytest.raises(CheckpointError) as info:
        elastic_accum(batch, saved_world, 1, world)
    msg = str(info.value)
    assert f"TRAINING.BATCH_SIZE {batch} " in msg
    assert f"does not divide by {world} processes" in msg
    assert f"(the run used {saved_world})" in msg


# -- 2. elastic_resume_point / open_resume -------------------------------------------------

@pytest.mark.parametrize("name", ["resume-e003-i0000009.pt", "resume-e002-i0000008.pt",
                                  "best-e002-top1=30.00.pt"])
def test_same_world_size_resumes_the_file_itself_with_its_accumulation(ckpts, warnings_log, name):
    path = ckpts / name
    ckpt = read_checkpoint(path)
    got, got_path, accum = elastic_resume_point(ckpt, path, BATCH, 1, 2)
    assert got is ckpt and got_path == path and accum == 2  # meta.grad_accum, not the argument
    source = open_resume(path, BATCH, 1, 2)
    assert isinstance(source, CheckpointResume)
    assert source.path == path and source.grad_accum == 2
    assert source.ckpt["trainer"]["iteration"] == ckpt["trainer"]["iteration"]
    assert _messages(warnings_log) == []  # nothing to say: the bitwise continuation


@pytest.mark.parametrize("world, accum, micro, bn_note", [
    (1, 4, 16, False), (4, 1, 16, False), (8, 1, 8, True)])
def test_another_world_size_from_an_epoch_end_point(ckpts, warnings_log, world, accum, micro,
                                                    bn_note):
    path = ckpts / "resume-e002-i0000008.pt"
    source = open_resume(path, BATCH, 1, world)
    assert isinstance(source, CheckpointResume)
    assert source.path == path and source.ckpt["trainer"]["iteration"] == 8
    assert source.grad_accum == accum == elastic_accum(BATCH, 2, 2, world)
    [msg] = _messages(warnings_log)
    assert msg.startswith(f"Resuming a 2-process run on {world} processes (elastic, from "
                          "resume-e002-i0000008.pt at epoch 2): same global batch 64 "
                          f"({accum} micro-step(s) of {micro} per process, was 2 of 16)")
    assert "Not bitwise" in msg
    assert ("BatchNorm sees micro-batches of 8 instead of 16" in msg) == bn_note


@pytest.mark.parametrize("start, corrupt, how, expected, iteration", [
    ("resume-e003-i0000009.pt", [], None, "resume-e002-i0000008.pt", 8),
    # an unreadable candidate is skipped, for the next readable one
    ("resume-e003-i0000009.pt", ["resume-e002-i0000008.pt"], "garbage", "epoch-e002-i0000008.pt", 8),
    ("resume-e003-i0000009.pt", ["resume-e002-i0000008.pt"], "truncated", "epoch-e002-i0000008.pt",
     8),
    ("resume-e003-i0000009.pt", ["resume-e002-i0000008.pt", "epoch-e002-i0000008.pt"], "garbage",
     "resume-e001-i0000004.pt", 4),
    # the boundary is before the point: the newer epoch end (i8) is not taken for i6
    ("resume-e002-i0000006.pt", [], None, "resume-e001-i0000004.pt", 4),
])
def test_another_world_size_from_a_mid_epoch_point_falls_back_to_an_epoch_boundary(
        ckpts, warnings_log, start, corrupt, how, expected, iteration):
    for name in corrupt:
        _corrupt(ckpts / name, how)
    path = ckpts / start
    ckpt = read_checkpoint(path)
    got, got_path, accum = elastic_resume_point(ckpt, path, BATCH, 1, 1)
    assert got_path == ckpts / expected
    assert got["trainer"]["iteration"] == iteration
    assert torch.equal(got["model"]["5.weight"], read_checkpoint(ckpts / expected)["model"]["5.weight"])
    assert accum == 4  # 1 process x 4 micro-steps of 16
    fallback, elastic = _messages(warnings_log)
    assert fallback == (f"{start} is a mid-epoch resume point of 2 processes: another world size "
                        f"resumes from the epoch boundary {expected} (epoch {iteration // EL}); "
                        "the steps after it are trained again")
    assert elastic.startswith(f"Resuming a 2-process run on 1 processes (elastic, from {expected} "
                              f"at epoch {iteration // EL})")
    source = open_resume(path, BATCH, 1, 1)  # the same through open_resume
    assert source.path == ckpts / expected and source.grad_accum == 4
    assert source.ckpt["trainer"]["iteration"] == iteration


@pytest.mark.parametrize("start, keep", [
    ("resume-e003-i0000009.pt", ["resume-e003-i0000009.pt"]),  # nothing beside it
    ("resume-e001-i0000003.pt", SAVED),  # no epoch boundary before step 3
])
def test_another_world_size_from_a_mid_epoch_point_without_a_boundary_is_refused(ckpts, start,
                                                                                   keep):
    for p in ckpts.iterdir():
        if p.name not in keep:
            p.unlink()
    with pytest.raises(CheckpointError) as info:
        open_resume(ckpts / start, BATCH, 1, 1)
    msg = str(info.value)
    assert f"{start} is a mid-epoch resume point of a 2-process run" in msg
    assert "no epoch-end resume point is beside it; resume with 2 processes" in msg
    assert open_resume(ckpts / start, BATCH, 1, 2).path == ckpts / start  # on 2 it resumes


def test_only_unreadable_boundaries_beside_a_mid_epoch_point_is_refused(ckpts):
    for name in ("resume-e001-i0000004.pt", "resume-e002-i0000008.pt", "epoch-e002-i0000008.pt"):
        _corrupt(ckpts / name, "garbage")
    with pytest.raises(CheckpointError, match="mid-epoch resume point of a 2-process run"):
        open_resume(ckpts / "resume-e003-i0000009.pt", BATCH, 1, 1)


def test_meta_without_grad_accum_uses_the_argument(ckpts, warnings_log):
    path = ckpts / "resume-e002-i0000008.pt"
    ckpt = read_checkpoint(path)
    del ckpt["meta"]["grad_accum"]
    torch.save(with_checksum(ckpt), path)  # as an older version wrote it
    ckpt = read_checkpoint(path)
    assert elastic_resume_point(ckpt, path, BATCH, 3, 2)[2] == 3  # same world: the argument
    # another world: the saved micro-batch is BATCH / (2 x the argument)
    assert elastic_resume_point(ckpt, path, BATCH, 2, 1)[2] == 4  # micro-batch 16 kept
    assert elastic_resume_point(ckpt, path, BATCH, 1, 1)[2] == 2  # micro-batch 32 kept
    assert open_resume(path, BATCH, 3, 2).grad_accum == 3
    assert open_resume(path, BATCH, 1, 1).grad_accum == 2
    assert "(2 micro-step(s) of 32 per process, was 1 of 32)" in _messages(warnings_log)[-1]


def test_the_boundary_point_records_its_own_accumulation(ckpts, warnings_log):
    """Mid-epoch fallback: the accumulation (so the micro-batch) is the boundary file's."""
    boundary = ckpts / "resume-e002-i0000008.pt"
    ckpt = read_checkpoint(boundary)
    ckpt["meta"]["grad_accum"] = 1  # micro-batch 64 / (2 x 1) = 32
    torch.save(with_checksum(ckpt), boundary)
    source = open_resume(ckpts / "resume-e003-i0000009.pt", BATCH, 1, 1)
    assert source.path == boundary and source.grad_accum == 2
    assert "(2 micro-step(s) of 32 per process, was 1 of 32)" in _messages(warnings_log)[-1]


def test_meta_without_world_size_is_the_same_world(ckpts, warnings_log):
    path = ckpts / "resume-e003-i0000009.pt"
    ckpt = read_checkpoint(path)
    del ckpt["meta"]["world_size"]
    for world in (1, 3):
        got, got_path, accum = elastic_resume_point(ckpt, path, BATCH, 1, world)
        assert got is ckpt and got_path == path and accum == 2
    assert _messages(warnings_log) == []


# -- 3. the two kinds ------------------------------------------------------------------------

def _official_checkpoint(path, prefix="", epoch=2):
    """The official train.py layout after two SGD steps of a tiny model; the reference model and
    optimizer."""
    model = make_tiny_model(seed=7)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=1e-4)
    g = torch.Generator().manual_seed(7)
    for _ in range(2):
        x, y = torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 10, (4,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    torch.save({"epoch": epoch,
                "state_dict": {prefix + k: v for k, v in model.state_dict().items()},
                "optimizer": opt.state_dict(), "best_pred": 0.0, "acclist_train": [],
                "acclist_val": []}, path)
    return model, opt


def test_our_checkpoint_is_a_checkpoint_resume_with_its_thread_count(ckpts):
    source = open_resume(ckpts / "resume-e003-i0000009.pt", BATCH, 1, 2)
    assert isinstance(source, CheckpointResume)
    assert source.kind == "checkpoint" and source.new_run_dir is False
    assert source.threads == 3
    before = torch.get_num_threads()
    assert before != 3  # the module runs single-threaded (tests/conftest.py)
    try:
        assert source.restore_threads(deterministic=False) is None
        assert torch.get_num_threads() == before
        assert source.restore_threads(deterministic=True) == 3
        assert torch.get_num_threads() == 3
        assert source.restore_threads(deterministic=True) is None  # already the saved count
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("prefix", ["", "module."])
def test_an_official_checkpoint_is_an_official_resume(tmp_path, prefix):
    path = tmp_path / "checkpoint_2.pth"
    _official_checkpoint(path, prefix)
    source = open_resume(path, BATCH, 3, 2)  # no world size recorded: nothing elastic
    assert isinstance(source, OfficialResume)
    assert source.kind == "official" and source.new_run_dir is True
    assert source.threads is None and source.path == path and source.grad_accum == 3
    before = torch.get_num_threads()
    assert source.restore_threads(deterministic=True) is None
    assert torch.get_num_threads() == before


# -- 4. check_architecture -------------------------------------------------------------------

def test_checkpoint_resume_checks_the_architecture(ckpts):
    source = open_resume(ckpts / "resume-e003-i0000009.pt", BATCH, 1, 2)
    source.check_architecture(make_tiny_model(seed=5))  # same architecture, other weights
    with pytest.raises(CheckpointError) as info:
        source.check_architecture(make_tiny_model(num_classes=5))
    msg = str(info.value)
    assert "resume-e003-i0000009.pt is for another architecture (tiny)" in msg
    assert "5.weight (10, 4) vs (5, 4)" in msg and "5.bias (10,) vs (5,)" in msg
    with pytest.raises(CheckpointError) as info:
        source.check_architecture(make_tiny_model(bn=False))  # the linear layer moves to 4
    assert "missing: 4.weight, 4.bias" in str(info.value)
    assert "1.running_mean" in str(info.value)  # the BatchNorm entries are unexpected


@pytest.mark.parametrize("prefix", ["", "module."])
def test_official_resume_checks_the_architecture(tmp_path, prefix):
    path = tmp_path / "checkpoint_2.pth"
    _official_checkpoint(path, prefix)
    source = open_resume(path, BATCH, 1, 1)
    source.check_architecture(make_tiny_model())
    with pytest.raises(CheckpointError) as info:
        source.check_architecture(make_tiny_model(num_classes=5))
    msg = str(info.value)
    assert "checkpoint_2.pth is for another architecture" in msg
    assert "5.weight (10, 4) vs (5, 4)" in msg and "5.bias (10,) vs (5,)" in msg


# -- 5. load ---------------------------------------------------------------------------------

def _assert_weights(model, saved):
    assert list(model.state_dict()) == list(saved)
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k


def test_load_a_resume_point_continues_the_run_and_its_rotation(ckpts):
    path = ckpts / "resume-e003-i0000009.pt"
    source = open_resume(path, BATCH, 1, 2)
    model, opt, trainer, handlers = _build(ckpts.parent)
    saved = source.ckpt
    assert not torch.equal(model.state_dict()["5.weight"], saved["model"]["5.weight"])
    assert handlers.resume_checkpointer.state_dict()["_saved"] == []

    line = source.load(handlers, trainer)

    assert line == f"Resumed from {path} (epoch 2, iteration 9)"
    assert trainer.state.iteration == 9 and trainer.state.epoch == 9 // EL
    assert trainer.state.epoch_length == EL and trainer.state.max_epochs == EPOCHS
    _assert_weights(model, saved["model"])
    bufs = [opt.state[p]["momentum_buffer"] for p in model.parameters()]
    assert len(bufs) == 6
    for i, buf in enumerate(bufs):
        assert torch.equal(buf, saved["optimizer"]["state"][i]["momentum_buffer"])
    # the rotation state of the resume points continues from the file's own ...
    resume_state = handlers.resume_checkpointer.state_dict()
    assert resume_state == saved["checkpointer"]
    assert [name for _, name in resume_state["_saved"]] == [
        "resume-e001-i0000003.pt", "resume-e001-i0000004.pt", "resume-e002-i0000006.pt",
        "resume-e002-i0000008.pt", "resume-e003-i0000009.pt"]
    # ... and the best checkpointer's from the state saved beside it
    best_state = handlers.best_checkpointer.state_dict()
    assert best_state == saved["best_checkpointer"]
    assert [name for _, name in best_state["_saved"]] == ["best-e001-top1=10.00.pt",
                                                          "best-e002-top1=30.00.pt"]


def test_load_a_best_file_gives_the_best_checkpointer_its_own_state(ckpts):
    path = ckpts / "best-e002-top1=30.00.pt"
    source = open_resume(path, BATCH, 1, 2)
    model, _, trainer, handlers = _build(ckpts.parent)
    saved = source.ckpt
    # the file's own rotation state includes itself; the state saved beside it does not yet
    assert saved["checkpointer"] != saved["best_checkpointer"]

    line = source.load(handlers, trainer)

    assert line == f"Resumed from {path} (epoch 2, iteration 8)"
    assert trainer.state.iteration == 8 and trainer.state.epoch == 2
    _assert_weights(model, saved["model"])
    best_state = handlers.best_checkpointer.state_dict()
    assert best_state == saved["checkpointer"]
    assert best_state["_saved"] == [(10.0, "best-e001-top1=10.00.pt"),
                                    (30.0, "best-e002-top1=30.00.pt")]
    assert handlers.resume_checkpointer.state_dict()["_saved"] == []  # not a resume point


@pytest.mark.parametrize("prefix", ["", "module."])
def test_load_an_official_checkpoint(tmp_path, prefix):
    epochs, el = 5, 3
    path = tmp_path / "checkpoint_2.pth"
    ref_model, ref_opt = _official_checkpoint(path, prefix, epoch=2)  # official epoch 2: 3 done
    source = open_resume(path, BATCH, 1, 1)
    model, opt, trainer, handlers = _build(None, epochs=epochs, el=el)
    assert opt.param_groups[0]["lr"] == LR

    line = source.load(handlers, trainer, model=model, optimizer=opt, epoch_length=el,
                       max_epochs=epochs)

    assert trainer.state.iteration == (2 + 1) * el == 9 and trainer.state.epoch == 3
    _assert_weights(model, ref_model.state_dict())
    ref_bufs = {n: ref_opt.state[p]["momentum_buffer"] for n, p in ref_model.named_parameters()}
    for name, p in model.named_parameters():
        assert torch.equal(opt.state[p]["momentum_buffer"], ref_bufs[name]), name
    # the LR schedule has made the 9 steps of 3 epochs: an uninterrupted schedule's values
    fresh = create_lr_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR),
                                "cos", LR, epochs * el)
    uninterrupted = simulate_lr(fresh, epochs * el)
    assert opt.param_groups[0]["lr"] == uninterrupted[8] < LR  # set by the 9th step
    assert simulate_lr(handlers.lr_scheduler, 3) == uninterrupted[9:12]
    assert line.startswith(f"Resumed from the official checkpoint {path}: 3 epoch(s) done "
                           "(official epoch 2), continuing at epoch 4 of 5 (official epoch 3) "
                           "with its weights and 6 SGD momentum buffers.")
