"""Every link and repository path named in README.md and docs/*.md exists in the repository.

Checked: Markdown links [text](target) (relative files, and #anchors against the target's
headings, GitHub's slug rule), and backticked paths that start with a top-level folder of the
repository (rbm_tune/, tests/, benchmarks/, cluster/, docs/) or are a top-level file.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TOP = ("rbm_tune/", "tests/", "benchmarks/", "cluster/", "docs/", ".ci/")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\s]+)`")


def _slug(heading: str) -> str:
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    lines, inside = [], False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            inside = not inside
        elif not inside and line.startswith("#"):
            lines.append(_slug(line.lstrip("#")))
    return set(lines)


def _prose(page: Path) -> str:
    """The page without fenced code blocks (commands there are checked by hand)."""
    out, inside = [], False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            inside = not inside
        elif not inside:
            out.append(line)
    return "\n".join(out)


def _problems(page: Path) -> list[str]:
    found = []
    text = _prose(page)
    for target in LINK.findall(text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            found.append(f"{page.name}: link to missing {target}")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            found.append(f"{page.name}: no heading for #{anchor} in {dest.name}")
    for code in CODE.findall(text):
        if not code.startswith(TOP) or any(c in code for c in "<>*{}$"):
            continue
        path = code.split(":")[0].rstrip(".,;")
        if not (REPO / path).exists():
            found.append(f"{page.name}: names missing file {code}")
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_links_and_paths_exist(page: Path) -> None:
    assert _problems(page) == []
