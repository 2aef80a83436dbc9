"""MLflow tracking against a real SQLite store and a real ``mlflow server`` on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rbm_tune.errors import TrackingError
from rbm_tune.tracking import Tracker, check_reachable, resolve_tracking_uri
from tests.support.processes import free_port


def _exercise(uri: str, tmp_path: Path) -> None:
    tags = {"rbm_tune.study": "s1", "rbm_tune.space_digest": "abc"}
    tracker = Tracker(uri, "study-s1", study_tags=tags)
    run = tracker.start_trial("t1", {"student.k": 2, "distill.lr": 0.01}, {"x": "y"})
    for epoch in range(1, 4):
        tracker.log_metrics(run, {"val_acc": 0.1 * epoch}, step=epoch)
    art = tmp_path / "best.yaml"
    art.write_text("a: 1\n")
    tracker.log_artifact(tracker.parent_id, art)
    tracker.end(run)
    # a resumed study reuses the parent run, and a finished trial handing back its stored
    # result adopts its run, instead of adding new ones
    again = Tracker(uri, "study-s1", study_tags=tags)
    assert again.parent_id == tracker.parent_id
    assert again.start_trial("t1", {"student.k": 2}, {}, replace_partial=False) == run
    runs = again.trial_runs()
    assert len(runs) == 1
    data = again.client.get_run(run).data
    assert data.params["student.k"] == "2" and data.params["distill.lr"] == "0.01"
    assert data.tags["mlflow.parentRunId"] == tracker.parent_id
    history = again.client.get_metric_history(run, "val_acc")
    assert [m.step for m in history] == [1, 2, 3]


def test_sqlite_store(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    check_reachable(uri)
    _exercise(uri, tmp_path)


@pytest.mark.integration
def test_mlflow_server_over_http(mlflow_server: str, tmp_path: Path) -> None:
    check_reachable(mlflow_server)
    _exercise(mlflow_server, tmp_path)


def test_unreachable_server_is_one_line() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(TrackingError, match=r"cannot reach the MLflow tracking server") as err:
        check_reachable(f"http://127.0.0.1:{port}", timeout=2)
    assert "\n" not in str(err.value)


def test_unwritable_store_folder(tmp_path: Path) -> None:
    with pytest.raises(TrackingError, match="cannot write"):
        check_reachable(f"sqlite:///{tmp_path / 'missing' / 'mlflow.db'}")


def test_uri_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert resolve_tracking_uri("sqlite:///rel.db") == f"sqlite:///{tmp_path / 'rel.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri(None) == "http://127.0.0.1:5000"


def test_teacher_run_never_adopts_a_trial_run(tmp_path: Path) -> None:
    """A resumed study logs its teacher again: that must not touch a crashed trial's run."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tags = {"rbm_tune.study": "s"}
    tracker = Tracker(uri, "s", study_tags=tags)
    trial = tracker.start_trial("t1", {"student.k": 1}, {"rbm_tune.teacher_key": "abc"})
    tracker.log_metrics(trial, {"val_acc": 0.5}, step=1)  # then the driver dies
    again = Tracker(uri, "s", study_tags=tags)
    teacher = again.log_teacher(
        "abc", {"teacher.hidden_dim": 16}, {"val_acc": 0.9}, step=3, trained=False
    )
    assert teacher != trial
    assert again.client.get_run(trial).info.status == "RUNNING"
    assert again.client.get_run(teacher).data.tags["rbm_tune.role"] == "teacher"
    # a restarted trial replaces its partial run instead of logging epoch 1 twice
    restarted = again.start_trial("t1", {"student.k": 1}, {"rbm_tune.teacher_key": "abc"})
    assert restarted != trial
    live = [r.info.run_id for r in again.trial_runs() if r.info.status != "KILLED"]
    assert live == [restarted]
    assert again.client.get_run(trial).info.status == "KILLED"  # closed, not left RUNNING


def test_resume_closes_the_runs_of_trials_ray_tune_lost(tmp_path: Path) -> None:
    """After a resume, a trial run whose trial the restored Tuner does not know is closed as
    KILLED, saying why: RUNNING (cut short) or FINISHED (ended between two Ray Tune snapshots);
    the known trials' runs and earlier FAILED attempts stay as they are."""
    from rbm_tune.study.summary import _close_lost_trial_runs

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "s", study_tags={"rbm_tune.study": "s"})
    runs = {tid: tracker.start_trial(tid, {}, {}) for tid in ("kept", "failed", "ended", "cut")}
    tracker.end(runs["kept"])
    tracker.end(runs["failed"], "FAILED")
    tracker.end(runs["ended"])  # finished, then lost: not in the restored Tuner's trials

    def statuses() -> dict[str, tuple[str, str]]:
        return {
            r.data.tags["rbm_tune.trial_id"]: (r.info.status, r.data.tags.get("rbm_tune.ended_by"))
            for r in tracker.trial_runs()
        }

    said: list[str] = []
    # a fresh study (no earlier driver) only closes what is still running
    fresh = Tracker(uri, "s2", study_tags={"rbm_tune.study": "s2"})
    fresh_run = fresh.start_trial("x", {}, {})
    fresh.end(fresh_run)
    _close_lost_trial_runs({"other"}, fresh, said.append, resumed=False)
    assert fresh.client.get_run(fresh_run).info.status == "FINISHED"
    # resumed, but the trials could not be identified: FINISHED runs are left alone
    _close_lost_trial_runs(set(), tracker, said.append, resumed=True)
    assert statuses()["ended"] == ("FINISHED", None)
    assert statuses()["cut"][0] == "KILLED"
    tracker.client.update_run(runs["cut"], status="RUNNING")

    _close_lost_trial_runs({"kept", "failed", "new"}, tracker, said.append, resumed=True)
    now = statuses()
    assert now["kept"] == ("FINISHED", None)
    assert now["failed"] == ("FAILED", None)
    assert now["ended"][0] == "KILLED"
    assert now["ended"][1].startswith("finished after Ray Tune's last snapshot")
    assert now["cut"] == ("KILLED", "lost when the study's driver was killed")
    assert said[-1].startswith("closed 2 MLflow run(s)")


def test_trial_id_of_a_result_with_and_without_metrics(tmp_path: Path) -> None:
    """A trial that failed before its first report has no metrics: its id comes from its
    folder's name (Ray Tune's ``_trial_fn_<id>_<n>_<config>_<date>``), not the folder's tail."""
    from ray.tune import Result

    from rbm_tune.study.rows import _trial_id

    folder = tmp_path / "_trial_fn_14bfcf10_3_distill_lr=0.0000,student_k=2_2026-11-26_05-27-35"
    assert _trial_id(Result({"trial_id": "ab12cd34"}, None, None, str(folder))) == "ab12cd34"
    assert _trial_id(Result({}, None, RuntimeError("x"), str(folder))) == "14bfcf10"
    assert _trial_id(Result(None, None, None, str(tmp_path / "other"))) == "other"


def test_held_epochs_are_logged_at_their_own_steps_in_batches(tmp_path: Path) -> None:
    """A trial's held-back epochs reach MLflow each at its step, across MLflow's 1,000-value
    limit per request (here 300 epochs x 4 metrics)."""
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "held", study_tags={})
    run = tracker.start_trial("t1", {}, {})
    rows = [
        [{"val_acc": e / 1000, "train_acc": 0.5, "train_loss": 1.0 / e, "is_pretraining": 0}, e]
        for e in range(1, 301)
    ]
    tracker.log_metric_rows(run, rows)
    history = tracker.client.get_metric_history(run, "val_acc")
    assert sorted((m.step, m.value) for m in history) == [(e, e / 1000) for e in range(1, 301)]
    assert len(tracker.client.get_metric_history(run, "train_loss")) == 300


def test_reports_meet_every_asha_rung_of_ray_tune() -> None:
    """The epochs at which a trial always reports include every rung Ray Tune's ASHA has, for
    integer and fractional reduction factors, so holding other epochs back changes no decision."""
    import math

    from ray.tune.schedulers import ASHAScheduler

    from rbm_tune.study import HeldEpochs, rung_epochs
    from rbm_tune.study._compat import asha_rungs

    for grace in (1, 2, 3, 7, 10, 20, 25, 50):
        for factor in (1.1, 1.5, 1.6, 2, 2.5, 3, 4):
            for longest in (grace, grace + 1, 4 * grace, 100, 501):
                asha = ASHAScheduler(
                    time_attr="post_switch_epoch",
                    metric="val_acc",
                    mode="max",
                    max_t=longest + 1,
                    grace_period=grace,
                    reduction_factor=factor,
                )
                rungs = {math.ceil(m) for m in asha_rungs(asha)}
                ours = rung_epochs(grace, factor, longest + 1)
                assert rungs and rungs == ours, (grace, factor, longest, rungs, ours)
                assert max(ours) <= longest + 1
    assert rung_epochs(20, 2, 101) == {20, 40, 80}
    assert rung_epochs(50, 1.1, 60) == {50, 56}  # 50 * 1.1 = 55.000000000000007
    held = HeldEpochs([{"epoch": 1}, {"epoch": 2}])
    assert str(held) == repr(held) == "<2 epochs>" and list(held) == [{"epoch": 1}, {"epoch": 2}]
    assert json.loads(json.dumps(held)) == [{"epoch": 1}, {"epoch": 2}]  # Ray's result.json


def test_trial_processes_drop_the_systemexit_of_ray_s_sigterm_inside_callbacks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What a trial process prints when Ray's SIGTERM handler fires inside a weakref callback
    (the end of a study that went well): nothing; any other unraisable error still prints."""
    import sys
    import weakref

    from rbm_tune.study.trainable import _drop_exit_in_callbacks

    class Box:
        pass

    def sigterm(_: object) -> None:
        raise SystemExit(1)  # what ray._private.worker's sigterm_handler raises

    def broken(_: object) -> None:
        raise ValueError("a real bug")

    saved = sys.unraisablehook
    sys.unraisablehook = _drop_exit_in_callbacks
    try:
        box = Box()
        ref = weakref.ref(box, sigterm)
        del box
        dropped = capsys.readouterr().err
        box = Box()
        ref = weakref.ref(box, broken)
        del box
        kept = capsys.readouterr().err
    finally:
        sys.unraisablehook = saved
    assert ref() is None
    assert dropped == ""
    assert "ValueError: a real bug" in kept and "Traceback" in kept


def test_a_new_store_shows_no_default_experiment_and_keeps_artifacts_out_of_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SQLite store the study creates: MLflow's empty "Default" experiment (id 0) is deleted,
    artifacts go under the given root (a study's: its storage path), nothing lands in the cwd;
    a store someone already used keeps its Default experiment and its runs."""
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    root = tmp_path / "runs" / "mlflow-artifacts"
    tracker = Tracker(uri, "s", study_tags={"rbm_tune.study": "s"}, artifact_root=root)
    art = tmp_path / "best.yaml"
    art.write_text("a: 1\n")
    tracker.log_artifact(tracker.parent_id, art)
    client = MlflowClient(uri)
    assert [e.name for e in client.search_experiments()] == ["s"]  # Default: deleted
    assert client.get_experiment("0").lifecycle_stage == "deleted"
    assert (root / "s").is_dir() and list(root.rglob("best.yaml"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.yaml", "fresh.db", "runs"]
    # reopened (a resume, the outbox's own tracker): same experiment, nothing re-created
    again = Tracker(uri, "s", study_tags={"rbm_tune.study": "s"})
    assert again.experiment_id == tracker.experiment_id
    assert [e.name for e in client.search_experiments()] == ["s"]
    # someone's store, with a run in Default: left alone
    used = f"sqlite:///{tmp_path / 'used.db'}"
    other = MlflowClient(used)
    other.create_run("0")
    Tracker(used, "s", study_tags={})
    assert sorted(e.name for e in other.search_experiments()) == ["Default", "s"]
    # without a root, a SQLite store's artifacts go beside it, never into the cwd
    exp = other.get_experiment_by_name("s")
    assert exp.artifact_location == (tmp_path / "mlflow-artifacts" / "s").as_uri()


def test_trial_params_are_the_yaml_names_with_their_effective_values() -> None:
    """An or_zero parameter is two Optuna parameters (``<name>.is_zero`` and ``<name>``);
    MLflow gets the YAML name only, with the value the trial trained with."""
    from optuna.trial import FixedTrial

    from rbm_tune.search_space import load_space
    from rbm_tune.space.params import effective_values

    space = load_space("cora")
    zero = [p for p in space.params if p.or_zero]
    assert zero
    drawn = space.default_params()
    for p in zero:  # every switch on: the zero branch draws no value
        drawn = {k: v for k, v in drawn.items() if k != p.name} | {p.zero_name: True}
    sampled = space.define_by_run(FixedTrial(drawn))
    assert any(k.endswith(".is_zero") for k in sampled)
    for source in (sampled, drawn):  # a define-by-run dict, or Optuna's own parameters
        values = effective_values(source)
        assert set(values) == set(space.param_names)
        assert all(values[p.name] == 0 for p in zero)
    params = {**space.fixed, **effective_values(sampled)}
    assert params == space.config_for(sampled).flat()
    off = effective_values({"distill.weight_decay.is_zero": False, "distill.weight_decay": 0.1})
    assert off == {"distill.weight_decay": 0.1}


def test_the_study_run_names_its_best_trial_and_how_to_reproduce_it(tmp_path: Path) -> None:
    """The parent run's params (the study's settings) and tags (best trial, objective, a
    markdown description naming what was searched and the commands)."""
    from rbm_tune.metrics import OBJECTIVE
    from rbm_tune.search_space import load_space
    from rbm_tune.tracking.study_run import NOTE_TAG, best_tags, study_params

    space = load_space("demo")
    params = study_params(space, name="demo", trials=5)
    assert params["dataset"] == "demo" and params["study.num_trials"] == 5
    assert params["study.metric"] == "val_acc" and params["study.objective"] == OBJECTIVE
    assert params["study.scheduler"] == "asha" and params["study.asha.grace_period"] == 4
    assert set(params["study.searched"].split(", ")) == set(space.param_names)
    config = space.define_by_run(__import__("optuna").trial.FixedTrial(space.default_params()))
    best = {"trial_id": "abc_00003", OBJECTIVE: 0.8125, "test_acc": 0.79, "config": config}
    tags = best_tags(
        space, name="demo", trials=5, best=best, run_id="r1", storage=tmp_path / "runs"
    )
    assert tags["rbm_tune.best_trial_id"] == "abc_00003"
    assert tags["rbm_tune.best_val_acc"] == "0.8125" and tags["rbm_tune.best_run_id"] == "r1"
    note = tags[NOTE_TAG]
    assert "abc_00003" in note and "0.8125" in note and "0.7900" in note
    assert all(f"`{name}`" in note for name in space.param_names)
    assert f"rbm-tune --space {space.path} --name demo" in note
    assert "rbm-tune export --name demo" in note


def test_a_study_may_not_take_the_name_of_the_artifacts_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its Ray folder would be the folder of every study's MLflow artifacts: refused before
    anything is written."""
    from rbm_tune.errors import RbmTuneError
    from rbm_tune.search_space import load_space
    from rbm_tune.study import run_study

    monkeypatch.chdir(tmp_path)
    with pytest.raises(RbmTuneError, match="pass another --name") as err:
        run_study(load_space("demo"), name="mlflow-artifacts", storage_path=tmp_path / "runs")
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []
