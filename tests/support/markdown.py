"""Just enough Markdown reading for the docs tests: fenced code blocks, heading anchors (GitHub's
slug rules) and relative links."""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_HTML_ID = re.compile(r"""<a\s[^>]*\b(?:name|id)\s*=\s*["']([^"']+)["']""", re.I)
_CODE_SPAN = re.compile(r"(`+)((?:(?!\n[ \t]*\n).)+?)\1", re.S)
_INLINE_LINK = re.compile(r"\]\(\s*<?([^()\s<>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:|^//")


def code_blocks(text: str) -> list[tuple[str, str]]:
    """The fenced code blocks as (info string, content), in order."""
    blocks, fence, info, body = [], None, "", []
    for line in text.split("\n"):
        m = _FENCE.match(line)
        if fence is None:
            if m:
                fence, info, body = m.group(1), m.group(2).strip(), []
        elif m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) \
                and not m.group(2).strip():
            blocks.append((info, "\n".join(body)))
            fence = None
        else:
            body.append(line)
    return blocks


def python_blocks(text: str) -> list[str]:
    """The contents of the ```python blocks."""
    return [body for info, body in code_blocks(text) if info.split()[:1] == ["python"]]


def prose(text: str) -> str:
    """The text with fenced code blocks blanked out (line numbers kept)."""
    out, fence = [], None
    for line in text.split("\n"):
        m = _FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
            out.append("")
        elif fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) \
                    and not m.group(2).strip():
                fence = None
            out.append("")
        else:
            out.append(line)
    return "\n".join(out)


def _without_code_spans(text: str) -> str:
    # Keep the newlines a span covers, so line numbers stay right.
    return _CODE_SPAN.sub(lambda m: "code" + "\n" * m.group(0).count("\n"), text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lowercased, punctuation other than '-'
    and '_' dropped, each space replaced by '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)   # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)                         # inline HTML tags
    text = text.replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a page has: its headings' slugs (a repeated slug gets -1, -2, ... as on
    GitHub) and explicit <a name=...>/<a id=...> targets."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose(text).split("\n"):
        m = _HEADING.match(line)
        if m:
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
        found.update(_HTML_ID.findall(line))
    return found


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every inline link, image and reference definition outside code,
    in the order they appear."""
    body = _without_code_spans(prose(text))
    found = sorted((m.start(1), m.group(1))
                   for pattern in (_INLINE_LINK, _REF_DEF) for m in pattern.finditer(body))
    return [(body.count("\n", 0, start) + 1, target) for start, target in found]


def broken_links(path: Path, root: Path) -> list[str]:
    """Relative links in the Markdown file ``path`` whose file does not exist (or lies outside
    ``root``), and #anchors that are not a heading of the Markdown file they point into."""
    path = path.resolve()
    root = root.resolve()
    problems = []
    anchor_cache: dict[Path, set[str]] = {}
    for lineno, target in links(path.read_text(encoding="utf-8")):
        if _SCHEME.match(target):
            continue                                  # http(s), mailto, ...: not checked here
        where = f"{path.relative_to(root)}:{lineno}: ({target})"
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / unquote(file_part)).resolve() if file_part else path
        if dest != root and root not in dest.parents:
            problems.append(f"{where}: points outside the repository")
            continue
        if not dest.exists():
            problems.append(f"{where}: {dest.relative_to(root)} does not exist")
            continue
        if not anchor or dest.suffix.lower() != ".md":
            continue
        if dest not in anchor_cache:
            anchor_cache[dest] = anchors(dest.read_text(encoding="utf-8"))
        if unquote(anchor) not in anchor_cache[dest]:
            problems.append(f"{where}: no heading with anchor #{anchor} in "
                            f"{dest.relative_to(root)}")
    return problems
