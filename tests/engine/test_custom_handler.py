"""The custom-handler example of docs/engine.md (custom_handler_example.py) runs and does what it
says, and the page shows it verbatim."""
from __future__ import annotations

import re
from pathlib import Path

import torch

from tests.support.markdown import python_blocks

EXAMPLE = Path(__file__).with_name("custom_handler_example.py")
ENGINE_DOC = Path(__file__).resolve().parents[2] / "docs" / "engine.md"


def test_custom_handler_example_runs(capsys):
    source = EXAMPLE.read_text()
    namespace = {"__name__": "__readme_example__"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # steadier on a shared CPU; the example itself does not care
    try:
        exec(compile(source, str(EXAMPLE), "exec"), namespace)  # the text docs/engine.md shows
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    lines = re.findall(r"epoch (\d): (\d+) trainable parameters, stem changed: (True|False)", out)
    total = sum(p.numel() for p in namespace["model"].parameters())
    fc = sum(p.numel() for p in namespace["model"].fc.parameters())
    assert lines == [("1", str(fc), "False"), ("2", str(total), "True")]
    # The comments at the end of the example show this output.
    assert f"# epoch 1: {fc} trainable parameters, stem changed: False" in source
    assert f"# epoch 2: {total} trainable parameters, stem changed: True" in source
    assert namespace["trainer"].state.epoch == 2


def test_engine_doc_shows_the_example_verbatim():
    blocks = [b.strip() for b in python_blocks(ENGINE_DOC.read_text())]
    assert EXAMPLE.read_text().strip() in blocks, (
        "docs/engine.md must show tests/engine/custom_handler_example.py verbatim as one "
        "```python block")
