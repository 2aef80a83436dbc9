"""A study's trials as rows: one per trial of Ray Tune's ``ResultGrid`` (:func:`trial_rows`),
ranked by the study's metric with ties to the earliest-created trial (:func:`rank_trials`,
:func:`trial_order`). What :mod:`rbm_tune.study.summary` writes and prints."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

from rbm_tune.metrics import (
    EPOCH,
    FINAL,
    NODE_ID,
    OBJECTIVE,
    SKIPPED,
    SKIPPED_BECAUSE,
    TEST_ACC,
    VAL_ACC,
)

__all__ = ["error_line", "rank_trials", "trial_order", "trial_rows"]


def trial_order(row: dict[str, Any]) -> tuple[float, str]:
    """Sort key of a trial row in the order its trial was created: the index Ray Tune puts in
    the trial's folder name (``_trial_fn_<id>_<n>_...``; Ray 2.60's ids are random hex), then
    the id (rows without a folder index)."""
    order = row.get("order")
    return (float("inf") if order is None else float(order), str(row["trial_id"]))


def _creation_index(path: Any) -> int | None:
    """The ``<n>`` of a trial folder ``_trial_fn_<id>_<n>_<params>_<time>``."""
    match = re.match(r"_trial_fn_[^_]+_(\d+)(?:_|$)", PurePosixPath(str(path or "")).name)
    return int(match.group(1)) if match else None


def rank_trials(done: list[dict[str, Any]], metric: str, mode: str) -> list[dict[str, Any]]:
    """``done`` best first by the study's metric (val_acc unless the space chose another
    per-epoch metric; for val_acc, by :data:`OBJECTIVE`, which is a finished trial's val_acc and
    an ASHA-stopped trial's best before it stopped); ties go to the earliest trial
    (:func:`trial_order`)."""
    by_trial = sorted(done, key=trial_order)
    key = OBJECTIVE if metric == VAL_ACC else metric
    # sorted() is stable, also with reverse=True: equal scores keep trial order
    return sorted(by_trial, key=lambda r: r["metrics"].get(key, r[VAL_ACC]), reverse=mode == "max")


def error_line(error: BaseException) -> str:
    """One line for a trial's error: its first line, plus Ray's exit detail where it has one
    (an actor killed for memory or by a signal says why only there)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    first = lines[0] if lines else type(error).__name__
    detail = next((line for line in lines[1:] if "exit detail" in line.lower()), "")
    text = f"{first} {detail}".strip() if detail and detail not in first else first
    return text if len(text) <= 400 else text[:397] + "..."


def trial_rows(grid: Any) -> list[dict[str, Any]]:
    """One row per trial of a Ray Tune ``ResultGrid``: ids, metrics, config, checkpoint."""
    rows = []
    for result in grid:
        m = result.metrics or {}
        rows.append(
            {
                "trial_id": _trial_id(result),
                "order": _creation_index(getattr(result, "path", None)),
                VAL_ACC: m.get(VAL_ACC),
                # a finished trial's best_val_acc is its val_acc; a stopped one's, its best yet
                OBJECTIVE: m.get(OBJECTIVE, m.get(VAL_ACC)),
                TEST_ACC: m.get(TEST_ACC),
                "epochs": m.get(EPOCH),
                "asha_stopped": not m.get(FINAL, False),
                NODE_ID: m.get(NODE_ID) or "",
                "config": result.config or {},
                "checkpoint": result.checkpoint,
                "error": error_line(result.error) if result.error else None,
                "metrics": {k: v for k, v in m.items() if isinstance(v, (int, float))},
                SKIPPED: m.get(SKIPPED),
                SKIPPED_BECAUSE: m.get(SKIPPED_BECAUSE),
            }
        )
    return rows


def _trial_id(result: Any) -> str:
    """A Ray Tune ``Result``'s trial id: from its metrics, else from its trial folder's name
    (``_trial_fn_<id>_<n>_...``: a trial that failed before its first report has no metrics)."""

    tid = (result.metrics or {}).get("trial_id")
    if tid:
        return str(tid)
    name = Path(str(result.path)).name
    found = re.match(r"_trial_fn_([0-9a-f]+)_", name)
    return found.group(1) if found else name
