"""docs/configuration.md's keys table is the one the schema generates."""
from pathlib import Path

import pytest

from resnest_engine.config import reference
from resnest_engine.config.schema import ALL_KEYS

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_keys_table_in_the_docs_is_current():
    block = reference.generated_block(PAGE.read_text(encoding="utf-8"))
    assert block.strip() == reference.keys_table_markdown().strip(), (
        "docs/configuration.md: the keys table differs from the schema; regenerate it with: "
        "python -m resnest_engine.config.reference --write docs/configuration.md")


def test_the_table_has_a_row_per_key_with_its_default_and_rules():
    rows = reference.keys_table_markdown().splitlines()[2:]
    assert [r.split(" | ")[0] for r in rows] == [f"| `{k}`" for k in ALL_KEYS]
    row = dict((r.split(" | ")[0][3:-1], r) for r in rows)
    assert row["TRAINING.EPOCHS"].startswith("| `TRAINING.EPOCHS` | int | `270` | >= 1 |")
    assert "| Optional[int] | `null` | >= 1 |" in row["MODEL.NUM_CLASSES"]
    assert "| List[float] | `[0.9, 0.999]` | two values, each in [0, 1) |" in row["OPTIMIZER.BETAS"]
    assert "cos / step / linear / poly (also cosine, multistep)" in row["OPTIMIZER.LR_SCHEDULER"]
    assert "ROOT/&lt;class>/" in row["DATA.VAL_FRACTION"]  # no HTML tag in the page


def test_write_replaces_only_the_block(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(f"# Title\n\nbefore\n{reference.BEGIN}\nstale\n{reference.END}\nafter\n")
    assert reference.main(["--write", str(page)]) == 0
    text = page.read_text()
    assert text.startswith(f"# Title\n\nbefore\n{reference.BEGIN}\n\n| Key |")
    assert text.endswith(f"|\n\n{reference.END}\nafter\n") and "stale" not in text
    assert reference.generated_block(text).strip() == reference.keys_table_markdown().strip()
    assert reference.main(["--write", str(page)]) == 0 and page.read_text() == text
    page.write_text("no markers\n")
    with pytest.raises(SystemExit):
        reference.main(["--write", str(page)])
