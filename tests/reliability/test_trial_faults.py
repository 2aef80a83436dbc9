"""Trial faults: an exception and a SIGKILL inside trials are retried (FailureConfig).

Real processes throughout: the study is the ``rbm-tune`` command on a local Ray; the faults are
planted with ``RBM_TUNE_FAULT`` (rbm_tune/testing/faults.py), so a trial really raises, or its Ray
worker process really dies of SIGKILL, at a chosen epoch, once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.processes import rbm_tune_cli, stop_process_group
from tests.support.study_checks import all_runs, check_lost_nothing, describe, results, write_study

# the studies read their teacher from the cache (training it is not what is tested)
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("teacher_in_cache")]


def _run(space: Path, cwd: Path, fault: str) -> str:
    proc = rbm_tune_cli(
        "--space",
        str(space),
        "--cpus",
        "2",
        cwd=cwd,
        env={
            "RBM_TUNE_FAULT": fault,
            "RBM_TUNE_FAULT_DIR": str(cwd / "faults"),
            "RBM_TUNE_CACHE": str(cwd / "cache"),
        },
    )
    try:
        out, _ = proc.communicate(timeout=400)
    finally:
        stop_process_group(proc, wait=5)
    assert proc.returncode == 0, out[-4000:]
    assert "(from cache)" in out  # the copied teacher was the study's
    # no INFO line of Ray Train's per checkpoint (it could land after the summary)
    assert "Checkpoint successfully created" not in out
    return out


def test_raising_and_killed_trials_are_retried_and_logged_failed(tmp_path: Path) -> None:
    space = write_study(tmp_path, "retry", trials=4, epochs=6, max_failures=2)
    _run(space, tmp_path, "trial_epoch@3=raise,trial_epoch@5=kill")
    fired = sorted(p.name for p in (tmp_path / "faults").iterdir())
    assert fired == ["fired-trial_epoch-3", "fired-trial_epoch-5"]  # both faults happened

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    finished = check_lost_nothing(uri, "retry", tmp_path / "rbm-tune-runs", trials=4)
    failed = [r for r in all_runs(uri, "retry") if r.info.status == "FAILED"]
    assert len(failed) == 2, describe(all_runs(uri, "retry"))
    for run in failed:
        # the failed attempt is a run of its own, FAILED, and its trial finished on a retry
        trial_id = run.data.tags["rbm_tune.trial_id"]
        assert trial_id in finished
        assert run.data.tags["rbm_tune.ended_by"].startswith("the attempt failed")
        assert "test_acc" not in run.data.metrics  # never reported as a finished trial
        retry = finished[trial_id]
        assert int(retry.data.tags["rbm_tune.attempt"]) > int(run.data.tags["rbm_tune.attempt"])
    # Ray Tune keeps the failed attempts' tracebacks
    errors = list((tmp_path / "rbm-tune-runs" / "retry").rglob("error.txt"))
    assert errors, "no error.txt for the failed attempts"


def test_without_retries_a_failed_trial_ends_failed_and_the_study_completes(
    tmp_path: Path,
) -> None:
    space = write_study(tmp_path, "noretry", trials=3, epochs=5, max_failures=0)
    out = _run(space, tmp_path, "trial_epoch@2=raise")
    assert "1 trial(s) failed" in out
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = all_runs(uri, "noretry")
    trials = [r for r in runs if r.data.tags.get("rbm_tune.role") == "trial"]
    assert sorted(r.info.status for r in trials) == ["FAILED", "FINISHED", "FINISHED"], describe(
        runs
    )
    failed = next(r for r in trials if r.info.status == "FAILED")
    assert failed.data.tags["rbm_tune.ended_by"].startswith("the trial failed")
    assert len(results(tmp_path / "rbm-tune-runs", "noretry")) == 2  # the finished ones
