"""A study folder's record that its study ended: ``finished.json``, and what ``--resume`` does
with it.

:func:`rbm_tune.study.summary.summarize` writes ``finished.json`` last, once every file of the
summary is in the folder and in MLflow and the parent run has ended. A study interrupted at
any point before that (killed driver, MLflow outage while the summary was written) has no such
file, and ``--resume`` continues it as before. One that has it is done: ``--resume`` then
changes nothing (no Ray, no MLflow write: ``best_config.yaml`` and the parent and teacher runs'
end times stay as they are) and says so (:class:`StudyAlreadyFinished`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rbm_tune.atomic import atomic_write_bytes
from rbm_tune.errors import RbmTuneError

__all__ = ["FINISHED_FILE", "StudyAlreadyFinished", "check_not_finished", "mark_finished"]

FINISHED_FILE = "finished.json"


class StudyAlreadyFinished(RbmTuneError):
    """``--resume`` of a study that ended: nothing to do (the CLI prints it, exit status 0)."""

    def __init__(
        self, name: str, trials: int, best_trial: str | None, storage_arg: str | None = None
    ) -> None:
        self.name, self.trials, self.best_trial = name, trials, best_trial
        where = f" --storage-path {storage_arg}" if storage_arg else ""
        super().__init__(
            f"study {name!r} is already finished ({trials} trials); nothing to do — see "
            f"`rbm-tune best --name {name}{where}`"
        )


def mark_finished(folder: Path, *, trials: int, best_trial: str) -> None:
    """Record in ``folder`` that its study ended (atomically: a half-written file is none)."""
    record = {"trials": trials, "best_trial": best_trial, "finished_at": time.time()}
    atomic_write_bytes(folder / FINISHED_FILE, (json.dumps(record, indent=1) + "\n").encode())


def finished(folder: Path) -> dict[str, Any] | None:
    """``folder``'s :data:`FINISHED_FILE` record, or None if its study has not ended."""
    try:
        record = json.loads((folder / FINISHED_FILE).read_text())
    except (OSError, ValueError):
        return None  # no record (or a damaged one: resuming redoes the summary)
    return record if isinstance(record, dict) else None


def check_not_finished(folder: Path, name: str, storage_arg: str | None = None) -> None:
    """Raise :class:`StudyAlreadyFinished` if the study in ``folder`` ended (``storage_arg``:
    the ``--storage-path`` given, which the message's ``rbm-tune best`` then repeats)."""
    record = finished(folder)
    if record is not None:
        best = record.get("best_trial")
        trials = int(record.get("trials", 0))
        raise StudyAlreadyFinished(name, trials, None if best is None else str(best), storage_arg)
