"""GracefulInterrupt: a SIGTERM mid-run finishes the step, saves, and stops the trainer."""
import os
import signal

import torch
import torch.nn.functional as F
from ignite.engine import Events

import pytest

from resnest_engine.engine import create_trainer
from resnest_engine.handlers import GracefulInterrupt


@pytest.fixture
def signals_restored():
    """SIGTERM/SIGINT handlers put back after the test (attach and defer_signals set them)."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, h in previous.items():
        signal.signal(s, h)


def _trainer(model):
    return create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), F.cross_entropy)


def test_sigterm_stops_after_the_step_and_saves_once(tiny_model, loader, signals_restored):
    trainer = _trainer(tiny_model())
    saved = []
    interrupt = GracefulInterrupt(lambda e: saved.append(e.state.iteration))
    # Delivered during iteration 3 (before the check of that step runs).
    trainer.add_event_handler(Events.ITERATION_STARTED(once=3),
                              lambda _: os.kill(os.getpid(), signal.SIGTERM))
    interrupt.attach(trainer)
    trainer.run(loader(n=20, batch_size=4), max_epochs=2)
    assert interrupt.signal == signal.SIGTERM
    assert trainer.state.iteration == 3 and saved == [3]


def test_no_signal_runs_to_the_end(tiny_model, loader, signals_restored):
    trainer = _trainer(tiny_model())
    interrupt = GracefulInterrupt(lambda e: (_ for _ in ()).throw(AssertionError("called")))
    interrupt.attach(trainer)
    trainer.run(loader(n=8, batch_size=4), max_epochs=2)
    assert interrupt.signal is None and trainer.state.iteration == 4


def test_a_signal_before_the_attach_is_held_and_stops_at_the_first_check(tiny_model, loader,
                                                                         signals_restored):
    """defer_signals (a launched worker's start-up): a SIGTERM that arrives while the run is
    still being built is not fatal; the run stops at its first check with a resume point."""
    from resnest_engine.handlers.interrupt import defer_signals
    model = tiny_model()
    trainer = _trainer(model)
    saved = []
    defer_signals()
    os.kill(os.getpid(), signal.SIGTERM)  # before the run is set up: held, not fatal
    interrupt = GracefulInterrupt(lambda e: saved.append(e.state.iteration))
    interrupt.attach(trainer)
    trainer.run(loader(n=20, batch_size=4), max_epochs=2)
    assert interrupt.signal == signal.SIGTERM
    assert trainer.state.iteration == 1 and saved == [1]
    again = GracefulInterrupt()  # held once: a later GracefulInterrupt starts clean
    again.attach(_trainer(model))
    assert again.signal is None


def test_a_second_signal_before_the_attach_ends_the_process():
    from resnest_engine.handlers.interrupt import defer_signals
    pid = os.fork()
    if pid == 0:  # the child: only signals and os._exit, nothing of the parent's threads
        try:
            defer_signals()
            os.kill(os.getpid(), signal.SIGTERM)  # held
            os.kill(os.getpid(), signal.SIGTERM)  # ends it, as without defer_signals
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == -signal.SIGTERM
