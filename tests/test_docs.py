"""README.md and docs/*.md: every relative link resolves, every #anchor is a heading of its target,
and docs/index.md lists every page."""
from pathlib import Path

import pytest

from tests.support.markdown import anchors, broken_links, links, python_blocks, slug

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_and_anchors_resolve(page):
    problems = broken_links(page, REPO)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_docs_index_lists_every_page():
    index = DOCS / "index.md"
    linked = {(index.parent / t.partition("#")[0]).resolve()
              for _, t in links(index.read_text()) if t.partition("#")[0]}
    unlisted = [p.name for p in DOCS.glob("*.md") if p != index and p.resolve() not in linked]
    assert not unlisted, f"docs/index.md does not link to {unlisted}"
    readme_targets = {t.partition("#")[0] for _, t in links((REPO / "README.md").read_text())}
    assert "docs/index.md" in readme_targets


def test_slugs_follow_github_rules():
    assert slug("Coming from the official train.py") == "coming-from-the-official-trainpy"
    assert slug("Predicting with a trained run: `resnest-predict`") == \
        "predicting-with-a-trained-run-resnest-predict"
    assert slug("`create_trainer(model, optimizer, loss_fn, **options)`") == \
        "create_trainermodel-optimizer-loss_fn-options"
    assert slug("Fast JPEG path (`fast_jpeg=true`, image folders)") == \
        "fast-jpeg-path-fast_jpegtrue-image-folders"
    assert slug("Batch size, learning rate and workers (read this if you come from the "
                "official code)") == \
        "batch-size-learning-rate-and-workers-read-this-if-you-come-from-the-official-code"
    assert slug("Resuming, evaluating, exporting") == "resuming-evaluating-exporting"


def test_checker_sees_what_github_renders(tmp_path):
    """Headings inside code blocks are not anchors, repeated headings get -1, links inside code
    are not links; a missing file and a missing anchor are both reported."""
    (tmp_path / "other.md").write_text("# Other\n\n## Part\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n## Part\n\n## Part\n\n```bash\n# not a heading\n[x](nowhere.md)\n```\n\n"
        "`[y](nowhere.md)` and [ok](other.md#part), [ok](#part-1), [web](https://example.com)\n"
        "[gone](missing.md) [bad](other.md#title) [bad](#not-a-heading)\n"
        "```python\nprint(1)\n```\n")
    assert anchors(page.read_text()) == {"title", "part", "part-1"}
    problems = broken_links(page, tmp_path)
    assert len(problems) == 3, problems
    assert "missing.md does not exist" in problems[0]
    assert "#title" in problems[1] and "#not-a-heading" in problems[2]
    assert python_blocks(page.read_text()) == ["print(1)"]
    outside = tmp_path / "sub"
    outside.mkdir()
    (outside / "p.md").write_text("[up](../page.md)\n")
    assert broken_links(outside / "p.md", outside) == [
        "p.md:1: (../page.md): points outside the repository"]
