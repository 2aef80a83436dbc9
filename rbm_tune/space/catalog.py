"""The shipped spaces as a catalogue: ``rbm-tune spaces`` and ``rbm-tune spaces show NAME``.

One line per space: its name, data, teacher and student, its trials and what it searches, read
by the space parser (not the corner checks: listing stays fast and needs no Optuna). ``show``
prints the file exactly as shipped, to copy and edit (or to change in place with ``--set``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rbm_tune import yamlio
from rbm_tune.errors import SpaceError
from rbm_tune.space.load import SHIPPED_DIR, shipped_spaces
from rbm_tune.space.parser import Parser
from rbm_tune.space.study import StudySettings

__all__ = ["SpaceSummary", "find_shipped", "spaces_command", "summaries"]


@dataclass(frozen=True)
class SpaceSummary:
    """What ``rbm-tune spaces`` says about one shipped space."""

    name: str
    dataset: str
    setting: str
    teacher: str
    student: str
    trials: int
    searched: tuple[str, ...]  # flat names, in sampling order

    def line(self) -> str:
        by_section: dict[str, int] = {}
        for name in self.searched:
            section = name.partition(".")[0]
            by_section[section] = by_section.get(section, 0) + 1
        parts = ", ".join(f"{n} {s}" for s, n in by_section.items())
        searched = f"{len(self.searched)} params ({parts})" if self.searched else "nothing"
        return (
            f"{self.name:<18} {self.dataset:<17} {self.setting:<12} {self.teacher:<7} "
            f"{self.student:<11} {self.trials:>6}  {searched}"
        )


HEADER = (
    f"{'space':<18} {'dataset':<17} {'setting':<12} {'teacher':<7} {'student':<11} "
    f"{'trials':>6}  searched"
)


def summarize(path: Path) -> SpaceSummary:
    """The :class:`SpaceSummary` of the space file ``path``."""
    data, _ = yamlio.read(path, SpaceError, "space")
    fixed, params, block = Parser(path).parse(data)
    trials: Any = block.get("num_trials", StudySettings.num_trials)
    return SpaceSummary(
        name=path.stem,
        dataset=str(fixed["dataset"]),
        setting=str(fixed["setting"]),
        teacher=str(fixed.get("teacher.model", "sage")),
        student=next(  # a searched family: its choices, mlp/moe/rbm
            ("/".join(map(str, p.choices)) for p in params if p.name == "student.model"),
            str(fixed.get("student.model", "rbm")),
        ),
        trials=int(trials),
        searched=tuple(p.name for p in params),
    )


def summaries() -> list[SpaceSummary]:
    """One :class:`SpaceSummary` per shipped space, by name."""
    return [summarize(SHIPPED_DIR / file) for file in shipped_spaces()]


def find_shipped(name: str) -> Path:
    """The shipped space ``name`` (``cora`` or ``cora.yaml``).

    Raises:
        SpaceError: no such shipped space; the line lists them.
    """
    names = [file.removesuffix(".yaml") for file in shipped_spaces()]
    stem = name.removesuffix(".yaml")
    if stem not in names:
        raise SpaceError(
            f"no shipped space {name!r}; choose one of {', '.join(names)} ('rbm-tune spaces' "
            "lists them)"
        )
    return SHIPPED_DIR / f"{stem}.yaml"


def spaces_command(args: Any) -> int:
    """``rbm-tune spaces``: the list; ``rbm-tune spaces show NAME``: one file's text."""
    if getattr(args, "spaces_command", None) == "show":
        print(find_shipped(args.space_name).read_text(), end="")
        return 0
    print(HEADER)
    for summary in summaries():
        print(summary.line())
    print(
        "\nrbm-tune spaces show NAME prints one to copy; rbm-tune --space NAME runs it "
        "(--set KEY=VALUE changes a key, e.g. --set distill.max_epochs=100)"
    )
    return 0
