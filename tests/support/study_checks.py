"""Checks shared by the reliability tests: what a finished (or resumed) study must hold.

Not a test module. A study "lost nothing" when Ray Tune's results and MLflow agree: every
requested trial ended exactly once (one row in results.csv, one FINISHED MLflow run), no run is
left RUNNING, and no run logged an epoch twice.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from tests.support.spaces import write_space


def write_study(
    folder: Path,
    name: str,
    *,
    trials: int = 4,
    epochs: int = 6,
    concurrent: int = 2,
    max_failures: int = 2,
) -> Path:
    """spaces.write_space's tiny demo study, with a retry budget."""
    return write_space(
        folder,
        name,
        trials=trials,
        epochs=epochs,
        concurrent=concurrent,
        max_failures=max_failures,
    )


def all_runs(uri: str, experiment: str) -> list[Any]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    return client.search_runs([exp.experiment_id], max_results=1000)


def results(storage: Path, name: str) -> list[dict[str, str]]:
    with open(storage / name / "results.csv") as f:
        return list(csv.DictReader(f))


def describe(runs: list[Any]) -> list[tuple[str, str, str]]:
    return [
        (r.data.tags.get("rbm_tune.role", ""), r.data.tags.get("rbm_tune.trial_id", ""),
         r.info.status)
        for r in runs
    ]  # fmt: skip


def check_lost_nothing(uri: str, name: str, storage: Path, trials: int) -> dict[str, Any]:
    """The study's trials each ended exactly once, in Ray Tune and in MLflow.

    Returns the FINISHED trial run of each trial id.
    """
    rows = results(storage, name)
    ids = [r["trial_id"] for r in rows]
    assert len(ids) == trials and len(set(ids)) == trials, rows
    runs = all_runs(uri, name)
    what = describe(runs)
    assert not [r for r in runs if r.info.status in ("RUNNING", "SCHEDULED")], what
    roles = [r.data.tags.get("rbm_tune.role") for r in runs]
    assert roles.count("study") == 1 and roles.count("teacher") == 1, what
    finished = [
        r for r in runs if r.data.tags.get("rbm_tune.role") == "trial"
        and r.info.status == "FINISHED"
    ]  # fmt: skip
    by_trial = {r.data.tags["rbm_tune.trial_id"]: r for r in finished}
    assert len(finished) == trials and set(by_trial) == set(ids), what
    client = MlflowClient(uri)
    for run in runs:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
        assert len(steps) == len(set(steps)), f"run {run.info.run_id} logged an epoch twice"
    for trial_id, run in by_trial.items():
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
        row = next(r for r in rows if r["trial_id"] == trial_id)
        assert steps == list(range(1, int(row["epochs"]) + 1)), (trial_id, steps, row)
    return by_trial
