"""Which config is a study's best, and by what rule: ``best_selection.json`` beside
``best_config.yaml`` (method §9: a test accuracy never chooses anything).

Two rules write ``best_config.yaml``:

- ``search`` (the study's summary, rbm_tune/study/summary.py): the finished trial with the best
  objective on the study's seed (the mean over ``study.seeds_per_trial`` students when > 1);
- ``mean-val`` (``rbm-tune evaluate --select mean-val``): of the K configs evaluate re-ran over S
  new seeds, the one with the highest mean validation accuracy over those seeds
  (:func:`select_by_mean_val`; ties go to the better search rank). The search's own choice is
  kept as ``best_config.search.yaml``, and ``--select search`` puts it back.

``rbm-tune best`` prints the rule as a YAML comment above the config (:func:`chosen_by`);
the study's MLflow parent run gets the tags ``rbm_tune.best_selection`` and
``rbm_tune.selected_trial_id`` (:func:`selection_tags`; ``rbm_tune.best_trial_id`` and the
other ``best_*`` tags stay the search's best trial's). Imports nothing heavy.
"""

from __future__ import annotations

import json
import shutil
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rbm_tune.atomic import atomic_write_bytes

__all__ = [
    "MEAN_VAL",
    "SEARCH",
    "SEARCH_BEST",
    "SELECTION_FILE",
    "SELECTIONS",
    "adopt",
    "chosen_by",
    "read_selection",
    "record_search",
    "select_by_mean_val",
    "selection_tags",
]

SELECTION_FILE = "best_selection.json"
SEARCH_BEST = "best_config.search.yaml"  # the search's choice, once another rule replaced it
SEARCH = "search"
MEAN_VAL = "mean-val"
SELECTIONS = (SEARCH, MEAN_VAL)


def select_by_mean_val(candidates: Sequence[Mapping[str, Any]]) -> int:
    """The index of the candidate with the highest mean ``val_acc`` over its runs.

    ``candidates``: in search rank order (best first), each ``{"runs": [{"val_acc": ...},
    ...]}`` (a run's other keys, its test accuracy among them, are never read). Ties go to the
    earlier candidate (the better search rank).

    Raises:
        ValueError: no candidate, or one without runs.
    """
    if not candidates:
        raise ValueError("no candidate to select from")
    means = []
    for c in candidates:
        runs = c["runs"]
        if not runs:
            raise ValueError("a candidate has no runs")
        means.append(statistics.fmean(float(r["val_acc"]) for r in runs))
    best = max(means)
    return means.index(best)


def read_selection(folder: Path) -> dict[str, Any] | None:
    """The study folder's selection record, or None (a study summarised before it existed)."""
    try:
        record = json.loads((folder / SELECTION_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _write(folder: Path, record: dict[str, Any]) -> None:
    atomic_write_bytes(folder / SELECTION_FILE, (json.dumps(record, indent=1) + "\n").encode())


def _seeds_text(seeds: Sequence[int]) -> str:
    """``101-105`` for consecutive seeds, else ``1, 4, 9``."""
    seeds = list(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def search_record(trial_id: str, seeds_per_trial: int) -> dict[str, Any]:
    """The record of the search's own choice."""
    how = (
        "single seed"
        if seeds_per_trial <= 1
        else f"mean over {seeds_per_trial} seeds per trial, one split"
    )
    return {
        "rule": SEARCH,
        "trial_id": str(trial_id),
        "seeds_per_trial": int(seeds_per_trial),
        "chosen_by": f"search ({how})",
    }


def record_search(folder: Path, trial_id: str, seeds_per_trial: int) -> None:
    """The summary's record: ``best_config.yaml`` is the search's choice (an older
    ``best_config.search.yaml`` is dropped: it is that same file now)."""
    (folder / SEARCH_BEST).unlink(missing_ok=True)
    _write(folder, search_record(trial_id, seeds_per_trial))


def adopt(
    folder: Path,
    *,
    rule: str,
    trial_id: str,
    config_yaml: str,
    seeds: Sequence[int],
    mean_val: float | None = None,
    evaluate_file: str | None = None,
) -> dict[str, Any]:
    """Make ``config_yaml`` the study's ``best_config.yaml`` under ``rule`` and record it.

    The first time another rule than the search's replaces it, the search's file is kept as
    :data:`SEARCH_BEST`; ``rule`` :data:`SEARCH` puts that file back.
    """
    best = folder / "best_config.yaml"
    previous = read_selection(folder)
    search_kept = folder / SEARCH_BEST
    if rule == SEARCH:
        if search_kept.is_file():
            shutil.copyfile(search_kept, best)
            search_kept.unlink()
        record = search_record(
            (previous or {}).get("search_trial_id", trial_id),
            int((previous or {}).get("seeds_per_trial", 1)),
        )
        _write(folder, record)
        return record
    if not search_kept.is_file():  # best_config.yaml is still the search's choice: keep it
        shutil.copyfile(best, search_kept)
    atomic_write_bytes(best, config_yaml.encode())
    record = {
        "rule": rule,
        "trial_id": str(trial_id),
        "seeds": list(seeds),
        "mean_val_acc": mean_val,
        "evaluate_file": evaluate_file,
        "seeds_per_trial": int((previous or {}).get("seeds_per_trial", 1)),
        # the search's choice, to name it and restore its record with --select search
        "search_trial_id": (previous or {}).get("search_trial_id")
        or (previous or {}).get("trial_id"),
        "chosen_by": (
            f"mean val acc over seeds {_seeds_text(seeds)} (rbm-tune evaluate --select {rule})"
        ),
    }
    _write(folder, record)
    return record


def chosen_by(folder: Path) -> str:
    """One line for ``rbm-tune best``: the rule that chose ``best_config.yaml`` and its trial."""
    record = read_selection(folder)
    if record is None:
        return "chosen by: search (single seed)"
    trial = record.get("trial_id")
    return f"chosen by: {record.get('chosen_by', record.get('rule'))}" + (
        f"; trial {trial}" if trial else ""
    )


def selection_tags(record: Mapping[str, Any]) -> dict[str, str]:
    """The MLflow parent run's tags for a selection record."""
    return {
        "rbm_tune.best_selection": str(record.get("chosen_by", record.get("rule"))),
        "rbm_tune.selected_trial_id": str(record.get("trial_id")),
    }


def select_and_adopt(
    folder: Path,
    rule: str,
    *,
    trials: Sequence[Mapping[str, Any]],
    configs: Sequence[Any],
    runs: Sequence[Sequence[Mapping[str, Any]]],
    seeds: Sequence[int],
    evaluate_file: str,
) -> tuple[dict[str, Any], str]:
    """``rbm-tune evaluate --select RULE``: the record written and one line for the table.

    ``trials`` / ``configs`` / ``runs``: the re-run configs in search rank order, their
    ``trials.json`` rows, their TrialConfigs and their runs (one per seed, a dict with
    ``val_acc``).
    """
    import yaml

    if rule == SEARCH:
        record = adopt(folder, rule=SEARCH, trial_id=str(trials[0]["trial_id"]), config_yaml="",
                       seeds=seeds)  # fmt: skip
        return record, f"best_config.yaml: the search's choice, trial {record['trial_id']}"
    won = select_by_mean_val([{"runs": r} for r in runs])
    mean = statistics.fmean(float(r["val_acc"]) for r in runs[won])
    record = adopt(
        folder,
        rule=rule,
        trial_id=str(trials[won]["trial_id"]),
        config_yaml=yaml.safe_dump(configs[won].to_dict(), sort_keys=False),
        seeds=seeds,
        mean_val=mean,
        evaluate_file=evaluate_file,
    )
    return record, (
        f"best_config.yaml: #{won + 1} trial {record['trial_id']}, {record['chosen_by']}: "
        f"{100 * mean:.2f} (the search's choice is kept in {SEARCH_BEST})"
    )
