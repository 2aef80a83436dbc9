"""Every ``method §N`` citation resolves to a heading of docs/method.md, and the old spec is gone.

The code, configs, tests and docs cite the method description as ``method §N`` or
``method §N.M`` (docs/method.md keeps the section numbers of the specification it was written
from). Checked: every ``§`` number on a line after its ``method §`` (``method §7, §11.5``,
``method §3.2-§3.3``) names a numbered heading of docs/method.md, and ``method §10.1 item K``
names one of that section's items. No file may still cite the specification file users never
had.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METHOD = REPO / "docs" / "method.md"
# what is searched: the package, tests, benchmarks, tools, docs, cluster set-up, CI, top files
ROOTS = ("rbm_tune", "tests", "benchmarks", "tools", "docs", "cluster", ".ci")
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".txt", ".cfg", ".ini", ""}
CITE = "method §"
SECTION = re.compile(r"§(\d+(?:\.\d+)?)(?:\s+items?\s+(\d+))?")
HEADING = re.compile(r"^#{2,4} (\d+(?:\.\d+)?)[. ]")
OLD = "rbm" + "-spec"  # spelled in two parts so that this file does not match itself


def _files() -> list[Path]:
    found = [p for p in REPO.iterdir() if p.is_file() and p.suffix in SUFFIXES]
    for root in ROOTS:
        for path in sorted((REPO / root).rglob("*")):
            if path.is_file() and path.suffix in SUFFIXES and "__pycache__" not in path.parts:
                found.append(path)
    return found


FILES = _files()


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _method_sections() -> tuple[set[str], int]:
    """Numbered headings of docs/method.md, and the number of items in its §10.1 list."""
    sections, items, in_10_1 = set(), 0, False
    for line in _read(METHOD).splitlines():
        heading = HEADING.match(line)
        if heading:
            sections.add(heading.group(1))
            in_10_1 = heading.group(1) == "10.1"
        elif in_10_1 and re.match(r"\d+\. ", line):
            items += 1
    return sections, items


def _citations(text: str, *, own: bool = False) -> list[tuple[int, str, str | None]]:
    """(line, section, item) for every § number after a ``method §`` on its line; with ``own``
    (docs/method.md's cross-references), for every § number."""
    cited = []
    for number, line in enumerate(text.splitlines(), 1):
        found = line.find(CITE)
        if found < 0 and not own:
            continue
        start = 0 if own else found + len(CITE) - 1
        for match in SECTION.finditer(line, start):
            cited.append((number, match.group(1), match.group(2)))
    return cited


def test_method_page_keeps_the_cited_numbering() -> None:
    sections, items = _method_sections()
    for number in [str(n) for n in range(12)] + ["2.2", "3.3", "4.3", "7.5", "10.3", "11.5"]:
        assert number in sections, number
    assert items == 17


def test_citations_are_found() -> None:
    cited = {(p, s) for p in FILES for _, s, _ in _citations(_read(p))}
    assert len(cited) > 100  # the code cites the method throughout; a broken scan finds none
    assert ("3.3" in {s for _, s in cited}) and ("7" in {s for _, s in cited})


def _problems(text: str, where: str, sections: set[str], items: int) -> list[str]:
    found = [
        f"{where}:{line}: no heading §{section} in docs/method.md"
        + (f" (or no item {item} in §10.1)" if item else "")
        for line, section, item in _citations(text, own=where == "docs/method.md")
        if section not in sections or (item and (section != "10.1" or not 1 <= int(item) <= items))
    ]
    if OLD in text:
        found.append(f"{where}: still names the specification file; cite {CITE}N instead")
    return found


def test_the_check_catches_bad_citations() -> None:
    sections, items = _method_sections()
    text = f"ok: {CITE}3.3, §7\n# {CITE}3.3, §99.1 and {CITE}10.1 item 18\n{OLD}.md §4\n"
    assert _problems(text, "x.py", sections, items) == [
        "x.py:2: no heading §99.1 in docs/method.md",
        "x.py:2: no heading §10.1 in docs/method.md (or no item 18 in §10.1)",
        "x.py: still names the specification file; cite method §N instead",
    ]
    # in docs/method.md itself every § is a cross-reference; elsewhere only cited ones count
    assert _problems("see §12\n", "docs/method.md", sections, items) == [
        "docs/method.md:1: no heading §12 in docs/method.md"
    ]
    assert _problems("STYLE.md §12\n", "x.py", sections, items) == []


def test_every_method_citation_resolves() -> None:
    sections, items = _method_sections()
    problems = [
        problem
        for path in FILES
        for problem in _problems(_read(path), str(path.relative_to(REPO)), sections, items)
    ]
    assert problems == []
