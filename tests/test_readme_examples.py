"""The README's Python examples are these files, verbatim, and they run."""
import runpy
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_compose_example_is_in_readme_and_trains(capsys):
    example = REPO / "tests" / "examples" / "compose_run.py"
    assert example.read_text().strip() in (REPO / "README.md").read_text()
    ns = runpy.run_path(str(example), run_name="__main__")
    top1 = ns["trainer"].state.val_results["raw"]["top1"]
    assert top1 > 80.0, top1
    from resnest_engine.data.loaders import close_loader
    close_loader(ns["trainer"].state.dataloader)
