"""``--warm-start``: a demo study, then a second one warm-started from it, then its ``--resume``.

Real Ray, Optuna and MLflow (SQLite) on the embedded demo graph, a few 4-epoch trials each: the
second study's searcher holds the first study's finished trials as COMPLETE Optuna trials with
their values before its first suggestion, its first trial is the first study's best config, the
MLflow parent run and ``study.json`` say where the points came from, and a resume adds nothing.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from rbm_tune.search_space import load_space
from rbm_tune.study import run_study
from tests.support.spaces import write_space

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("teacher_in_cache")]


def _searcher_state(folder: Path) -> dict[str, Any]:
    # the latest (a resumed study saves its own file beside the first one's)
    state_file = max(folder.glob("searcher-state-*.pkl"), key=lambda p: p.stat().st_mtime_ns)
    state: dict[str, Any] = pickle.loads(state_file.read_bytes())
    return state


def _warm(state: dict[str, Any]) -> list[Any]:
    return [t for t in state["_ot_study"].trials if "rbm_tune.warm_start" in t.user_attrs]


def test_warm_started_study_and_its_resume(workdir: Path) -> None:
    earlier = run_study(
        load_space(write_space(workdir, "earlier", trials=4, concurrent=2, epochs=4)),
        cpus=2,
        verbose=0,
    )
    rows = json.loads((earlier.storage_path / "trials.json").read_text())
    finished = [r for r in rows if not r["asha_stopped"]]
    assert finished and finished[0]["val_acc"] == earlier.best_val_acc

    space = load_space(write_space(workdir, "later", trials=3, concurrent=1, epochs=4))
    lines: list[str] = []
    later = run_study(space, cpus=2, verbose=0, warm_start=["earlier"], log=lines.append)
    assert f"warm start: {len(finished)} of {len(rows)} earlier trials from earlier" in lines[0]

    # the earlier finished trials, COMPLETE with their values, before any trial of this study
    state = _searcher_state(later.storage_path)
    warm = _warm(state)
    assert [t.state for t in warm] == [TrialState.COMPLETE] * len(finished)
    assert [t.values for t in warm] == [[r["val_acc"]] for r in finished]
    assert [t.number for t in warm] == list(range(len(finished)))
    assert {t.user_attrs["rbm_tune.trial_id"] for t in warm} == {r["trial_id"] for r in finished}
    assert state["warm_start"]["points"] == len(finished)
    # the earlier best is this study's first trial
    told = sorted(state["_ot_trials"].values(), key=lambda t: t.number)
    assert len(told) == 3
    best = {k: v for k, v in finished[0]["sampled"].items() if k in told[0].params}
    assert told[0].params == best and told[0].number == len(finished)

    # recorded: the MLflow parent run's tags and study.json
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("later")
    assert exp is not None
    (parent,) = client.search_runs(
        [exp.experiment_id], filter_string="tags.`rbm_tune.role` = 'study'"
    )
    assert parent.data.tags["rbm_tune.warm_start"] == "earlier"
    assert parent.data.tags["rbm_tune.warm_start_points"] == str(len(finished))
    study_json = json.loads((later.storage_path / "study.json").read_text())
    assert study_json["warm_start"]["sources"] == ["earlier"]
    assert study_json["warm_start"]["points"] == len(finished)

    # --resume (with the same --warm-start, as a rerun of the command line would): nothing twice.
    # A finished study's --resume is a no-op (rbm_tune.study.finished); this one stands for a
    # study whose driver died before its summary ended, which has no finished.json yet
    from rbm_tune.study.finished import FINISHED_FILE, StudyAlreadyFinished

    with pytest.raises(StudyAlreadyFinished):
        run_study(space, cpus=2, verbose=0, resume=True, warm_start=["earlier"], log=print)
    (later.storage_path / FINISHED_FILE).unlink()
    lines.clear()
    run_study(space, cpus=2, verbose=0, resume=True, warm_start=["earlier"], log=lines.append)
    assert any("already in the resumed searcher; not added again" in line for line in lines)
    assert len(list(later.storage_path.glob("searcher-state-*.pkl"))) == 2
    again = _searcher_state(later.storage_path)
    assert [(t.number, t.values) for t in _warm(again)] == [(t.number, t.values) for t in warm]
    assert len(again["_ot_study"].trials) == len(state["_ot_study"].trials)
