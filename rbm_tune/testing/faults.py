"""Fault injection for the reliability tests: real exceptions and real SIGKILLs, on cue.

Inert unless ``RBM_TUNE_FAULT`` is set. Its value is a comma-separated list of
``POINT@N=ACTION`` entries; ``RBM_TUNE_FAULT_DIR`` is a folder where each entry leaves a marker
when it fires, so it fires once per folder (a retried trial or a resumed driver runs clean).

Points (where :func:`fire` is called):

- ``trial_epoch@N``: in a trial, when it reports epoch N;
- ``driver_result@N``: in the driver, at the N-th trial result of the study;
- ``driver_complete@N``: in the driver, when the N-th trial has completed;
- ``driver_summary@1``: in the driver, after Ray Tune finished, while the summary is written.

Actions: ``raise`` (a ``RuntimeError``), ``kill`` (SIGKILL of the current process), or
``killpg:PGID`` (SIGKILL of the process group PGID, e.g. an MLflow server the test started, at
exactly that point; the current process goes on).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

__all__ = ["InjectedFault", "fire"]

ENV = "RBM_TUNE_FAULT"
DIR_ENV = "RBM_TUNE_FAULT_DIR"


class InjectedFault(RuntimeError):
    """The exception a ``raise`` fault throws."""


def fire(point: str, count: int) -> None:
    """Carry out the fault planned for ``point`` at ``count``, once; no-op when none is."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    for entry in spec.split(","):
        where, _, action = entry.strip().partition("=")
        name, _, at = where.partition("@")
        if name != point or int(at or 1) != count:
            continue
        marker = Path(os.environ.get(DIR_ENV) or ".") / f"fired-{name}-{at or 1}"
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if action.startswith("killpg:"):
            try:
                os.killpg(int(action.partition(":")[2]), signal.SIGKILL)
            except ProcessLookupError:
                pass
            continue
        raise InjectedFault(f"injected fault at {point}@{count}")
