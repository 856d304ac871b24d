"""The package's rooms and layers: the root holds only ``__init__.py`` and ``errors.py``; the
subpackages import each other without a cycle; ``storage/`` is a base layer; only ``cli/``
imports ``workflows/``; ``import resnest_engine`` loads neither ``cli/`` nor ``workflows/``."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "resnest_engine"


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports_between_rooms():
    """``room -> {rooms it imports at module level}`` over every module of the package."""
    edges = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        package = parts[:-1]
        module = ".".join(package if parts[-1] == "__init__" else parts)
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                targets = [".".join(base + ([node.module] if node.module else []))]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                if target.startswith("resnest_engine") and _room(target) != _room(module):
                    edges.setdefault(_room(module), set()).add(_room(target))
    return edges


def test_the_root_keeps_only_init_and_errors():
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py", "errors.py"]


def test_no_import_cycle_between_subpackages():
    edges = _imports_between_rooms()
    state = {}

    def visit(room, stack):
        state[room] = "open"
        for other in sorted(edges.get(room, ())):
            assert state.get(other) != "open", f"import cycle: {' -> '.join(stack + [room, other])}"
            if other not in state:
                visit(other, stack + [room])
        state[room] = "done"

    for room in sorted(edges):
        if room not in state:
            visit(room, [])


def test_layers():
    edges = _imports_between_rooms()
    assert edges.get("storage", set()) <= {"errors"}
    assert [room for room, to in edges.items() if "workflows" in to] == ["cli"]
    assert [room for room, to in edges.items() if "cli" in to] == []


@pytest.mark.slow  # starts a process
def test_importing_the_package_loads_no_command_line_or_workflow():
    code = ("import sys, resnest_engine; print(sorted(m for m in sys.modules if "
            "m.startswith(('resnest_engine.cli', 'resnest_engine.workflows'))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_a_moved_module_still_imports_with_a_deprecation_warning():
    """In this process (no interpreter start): the old path is forgotten first and put back as
    it was afterwards, so its import runs the package's finder as a first import does."""
    import importlib
    import warnings
    import resnest_engine
    saved = sys.modules.pop("resnest_engine.predict", None)
    saved_attr = resnest_engine.__dict__.pop("predict", None)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            old = importlib.import_module("resnest_engine.predict")
    finally:
        sys.modules.pop("resnest_engine.predict", None)
        resnest_engine.__dict__.pop("predict", None)
        if saved is not None:
            sys.modules["resnest_engine.predict"] = saved
        if saved_attr is not None:
            resnest_engine.predict = saved_attr
    assert [str(w.message) for w in caught if w.category is DeprecationWarning] == [
        "resnest_engine.predict moved to resnest_engine.workflows.predict; the old path goes in "
        "the next release"]
    assert old is importlib.import_module("resnest_engine.workflows.predict")
