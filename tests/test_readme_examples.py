"""The README's Python example is tests/examples/compose_run.py, verbatim, and it runs."""
import runpy
from pathlib import Path

import pytest

from tests.support.cli import process_state_restored
from tests.support.markdown import python_blocks

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "tests" / "examples" / "compose_run.py"


def test_readme_shows_the_compose_example_verbatim():
    blocks = [b.strip() for b in python_blocks((REPO / "README.md").read_text())]
    assert EXAMPLE.read_text().strip() in blocks, (
        "README.md must show tests/examples/compose_run.py verbatim as one ```python block")


@pytest.mark.slow  # trains the digits for 2 epochs in-process
def test_compose_example_trains(capsys):
    # the example's setup_logger() logs to this test's captured stdout, closed afterwards: the
    # logger is put back so later tests in this process do not log into a closed stream
    with process_state_restored():
        ns = runpy.run_path(str(EXAMPLE), run_name="__main__")
    top1 = ns["handlers"].validation.results["raw"]["top1"]
    # 97.2% here with seed 0 (96.9% and 97.5% with seeds 1 and 2): the bound checks that it
    # learns, with room for another CPU's rounding, not the exact number
    assert top1 > 90.0, top1
    from resnest_engine.data.loaders import close_loader
    close_loader(ns["trainer"].state.dataloader)
