"""The quick-start recipe end to end: real data, >= 99.0% top-1 with its fixed seed."""
import json

import pytest

from tests.support.cli import REPO, run_cli


@pytest.mark.slow
def test_digits_recipe_reaches_99_percent(tmp_path):
    out = tmp_path / "digits"
    r = run_cli("--config-file", REPO / "recipes" / "digits.yaml", "--outdir", out, timeout=600)
    assert r.returncode == 0, r.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epoch"] == 6
    assert metrics["top1"] >= 99.0, metrics
    log = (out / "log.txt").read_text()
    assert "Data cache: train split decoded once, 1437 images, 4.4 MB in memory" in log
