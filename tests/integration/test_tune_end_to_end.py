"""Studies on a real local Ray with a real MLflow store (SQLite, and an ``mlflow server``).

No mocks: every study trains a real teacher (once) and real RbM students on the embedded demo
graph, with a tiny budget so the whole file stays within a few minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from rbm_tune.search_space import load_space
from rbm_tune.study import run_study
from rbm_tune.teacher_cache import TeacherCache
from tests.support.spaces import write_space

pytestmark = pytest.mark.integration


def _runs(uri: str, experiment: str, role: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    return client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`rbm_tune.role` = '{role}'", max_results=1000
    )


def _check_study_runs(uri: str, name: str, trials: int) -> list:
    client = MlflowClient(uri)
    parents = _runs(uri, name, "study")
    assert len(parents) == 1
    runs = _runs(uri, name, "trial")
    assert len(runs) == trials
    assert len({r.data.tags["rbm_tune.trial_id"] for r in runs}) == trials
    for run in runs:
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        params = run.data.params
        assert {"student.num_experts", "student.k", "distill.lr", "teacher.hidden_dim"} <= set(
            params
        )
        assert int(params["student.k"]) < int(params["student.num_experts"])
        assert params["teacher.hidden_dim"] == "16"
        history = client.get_metric_history(run.info.run_id, "val_acc")
        steps = [m.step for m in history]
        # every epoch once, those the trial held back between reports included
        assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 3, steps
        assert run.data.tags["rbm_tune.asha_stopped"] in ("true", "false")
        if run.data.tags["rbm_tune.asha_stopped"] == "false":
            assert 0 <= run.data.metrics["test_acc"] <= 1
    # ASHA lets the first trial at every rung go on: at least one trial finishes
    assert any(r.data.tags["rbm_tune.asha_stopped"] == "false" for r in runs)
    assert len(_runs(uri, name, "teacher")) == 1
    return runs


def test_demo_study_end_to_end(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    space = load_space(write_space(workdir, "e2e", trials=8, concurrent=2, plots=True))
    result = run_study(space, cpus=2, verbose=0)
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    runs = _check_study_runs(uri, "e2e", 8)
    stopped = [r for r in runs if r.data.tags["rbm_tune.asha_stopped"] == "true"]
    assert stopped, "ASHA stopped no trial"
    assert result.teacher_trained  # trained exactly once for 8 trials: one cache entry
    assert (result.storage_path / "best_config.yaml").is_file()
    # one objective: Optuna's three plots, PNG and HTML, in the study folder and in MLflow
    kinds = ("optimization_history", "param_importances", "parallel_coordinate")
    drawn = {f"plots/{k}.{ext}" for k in kinds for ext in ("png", "html")}
    assert {f"plots/{p.name}" for p in (result.storage_path / "plots").iterdir()} == drawn
    (study_run,) = _runs(uri, "e2e", "study")
    client = MlflowClient(uri)
    assert {a.path for a in client.list_artifacts(study_run.info.run_id, "plots")} == drawn
    # trials report to Ray Tune at ASHA's rungs and at most once a second (the space's default
    # study.report_every_s): fewer reports than epochs, while MLflow got every epoch (above)
    reports = {}
    for path in result.storage_path.glob("*/result.json"):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        reports[path.parent.name] = (len(lines), max(line["epoch"] for line in lines))
    assert len(reports) == 8 and any(n < epochs for n, epochs in reports.values()), reports
    # TPE was told which trials ASHA stopped (PRUNED, per-epoch values), which finished
    # (COMPLETE at the best-validation val_acc): the searcher state Ray Tune saved at the end
    (state_file,) = result.storage_path.glob("searcher-state-*.pkl")
    state = pickle.loads(state_file.read_bytes())
    told = {tid: state["_ot_study"].trials[t.number] for tid, t in state["_ot_trials"].items()}
    assert len(told) == 8
    for run in runs:
        trial = told[run.data.tags["rbm_tune.trial_id"]]
        if run.data.tags["rbm_tune.asha_stopped"] == "true":
            assert trial.state.name == "PRUNED", trial
            # its val_acc at every epoch after the pretraining switch, at ASHA's time
            epochs = len(MlflowClient(uri).get_metric_history(run.info.run_id, "val_acc"))
            after = epochs - int(run.data.params["distill.pretrain_epochs"])
            assert sorted(trial.intermediate_values) == list(range(1, after + 1)), trial
        else:
            assert trial.state.name == "COMPLETE", trial
            assert trial.values == [run.data.metrics["final_val_acc"]]
    # the best is the best finished trial's val_acc at its best-validation epoch, as MLflow has it
    finished = [r for r in runs if r.data.tags["rbm_tune.asha_stopped"] == "false"]
    assert finished
    assert result.best_val_acc == max(r.data.metrics["final_val_acc"] for r in finished)
    (parent,) = _runs(uri, "e2e", "study")
    assert parent.data.metrics["best_val_acc"] == result.best_val_acc
    # the best config is a valid trial config naming what was searched
    from rbm_tune.config import load_config

    best = load_config(result.storage_path / "best_config.yaml")
    assert best.student.k < best.student.num_experts
    # `rbm-tune best` prints it as YAML that `rbm-tune train --config` accepts
    from rbm_tune.cli import main

    capsys.readouterr()  # drop Ray Tune's progress output
    assert main(["best", "--name", "e2e"]) == 0
    printed = workdir / "printed.yaml"
    printed.write_text(capsys.readouterr().out)
    assert load_config(printed) == best
    # the teacher is cached: a second study reuses it without training
    assert len(TeacherCache.in_cache_dir().entries()) == 1
    again = run_study(space, cpus=2, verbose=0, name="e2e-again", num_trials=2)
    assert not again.teacher_trained
    assert len(TeacherCache.in_cache_dir().entries()) == 1


@pytest.mark.usefixtures("teacher_in_cache")  # these studies are not about the teacher
def test_study_against_mlflow_server(workdir: Path, mlflow_server: str) -> None:
    space = load_space(write_space(workdir, "http", trials=3, concurrent=3, epochs=4))
    result = run_study(space, cpus=2, tracking_uri=mlflow_server, verbose=0)
    assert not result.teacher_trained  # the copied one
    _check_study_runs(mlflow_server, "http", 3)
    assert not (workdir / "mlflow.db").exists()
    # study.plots: false (write_space's default): no plots, here or in MLflow
    assert not (result.storage_path / "plots").exists()
    (study_run,) = _runs(mlflow_server, "http", "study")
    assert not MlflowClient(mlflow_server).list_artifacts(study_run.info.run_id, "plots")
    assert (result.storage_path / "results.csv").is_file()


def _logical_gpu_space(workdir: Path, name: str, *, fallback: bool) -> Any:
    path = write_space(workdir, name, trials=4, concurrent=4, gpus=0.5, epochs=25)
    if fallback:
        path.write_text(path.read_text().replace("study:\n", "study:\n  cpu_fallback: true\n"))
    return load_space(path)


def test_a_gpu_without_cuda_is_refused_in_one_line(workdir: Path) -> None:
    """Logical GPUs on this CUDA-less machine, no study.cpu_fallback: the teacher task Ray gives
    a GPU (or, with a cached teacher, every trial) finds no CUDA, and the study ends in one
    line naming the fix instead of training on CPUs as if it had GPUs."""
    from rbm_tune.errors import RbmTuneError

    space = _logical_gpu_space(workdir, "nocuda", fallback=False)
    assert not space.study.cpu_fallback
    import ray

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray.init(num_cpus=4, num_gpus=2, include_dashboard=False)  # logical GPUs
    with pytest.raises(RbmTuneError) as err:
        run_study(space, gpus=2, verbose=0)
    text = str(err.value)
    assert "\n" not in text and "CUDA is not available" in text
    assert "study.cpu_fallback: true" in text


def test_fractional_gpus_pack_four_trials(workdir: Path) -> None:
    """--gpus 2 and 0.5 GPU per trial: 4 trials at once on 2 logical GPUs; the space allows the
    CPU fallback (study.cpu_fallback: true). The teacher is trained by a Ray task that asks for
    a whole GPU (and falls back to the CPU too)."""
    space = _logical_gpu_space(workdir, "gpus", fallback=True)
    import ray

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray.init(num_cpus=4, num_gpus=2, include_dashboard=False)  # logical GPUs
    assert run_study(space, gpus=2, verbose=0).teacher_trained
    runs = _runs(f"sqlite:///{workdir / 'mlflow.db'}", "gpus", "trial")
    assert len(runs) == 4
    spans = [(r.info.start_time, r.info.end_time) for r in runs]
    # the 4 trials overlap: every trial started before any trial ended
    assert max(s for s, _ in spans) < min(e for _, e in spans)
    finished = [r for r in runs if "ran_on_cuda" in r.data.metrics]
    assert finished and all(r.data.metrics["ran_on_cuda"] == 0 for r in finished)


@pytest.mark.usefixtures("teacher_in_cache")
def test_study_searching_another_per_epoch_metric(workdir: Path) -> None:
    """``metric: train_loss`` (mode min): every result carries it, a finished trial's final one
    at its best-validation epoch, and the best trial is the finished one with the least."""
    path = write_space(workdir, "loss", trials=4, concurrent=2, epochs=6)
    text = path.read_text().replace("  name: loss\n", "  name: loss\n  metric: train_loss\n")
    path.write_text(text)
    space = load_space(path)
    assert (space.study.metric, space.study.mode) == ("train_loss", "min")
    result = run_study(space, cpus=2, verbose=0)
    assert not result.teacher_trained
    assert result.failed == ()  # Ray Tune fails a trial whose result lacks the metric
    trials = json.loads((result.storage_path / "trials.json").read_text())
    assert len(trials) == 4
    finished = [t for t in trials if not t["asha_stopped"]]
    assert finished
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = MlflowClient(uri)
    runs = {r.data.tags["rbm_tune.trial_id"]: r for r in _runs(uri, "loss", "trial")}
    for t in finished:  # the returned model's epoch, as MLflow logged it per epoch
        history = client.get_metric_history(runs[t["trial_id"]].info.run_id, "train_loss")
        at_best = {m.step: m.value for m in history}[int(t["metrics"]["best_epoch"])]
        assert t["metrics"]["train_loss"] == pytest.approx(at_best)
        assert t["metrics"]["best_val_acc"] == t["val_acc"]
        # end-of-trial values at step 0 (MLflow draws them as bars), curves at their epochs
        test_acc = client.get_metric_history(runs[t["trial_id"]].info.run_id, "test_acc")
        assert [(m.step, m.value) for m in test_acc] == [(0, t["metrics"]["test_acc"])]
        assert min(m.step for m in history) >= 1
    best = min(finished, key=lambda t: t["metrics"]["train_loss"])
    assert result.best_val_acc == best["val_acc"]
    assert space.config_for(best["sampled"]).to_dict() == result.best_config


@pytest.mark.usefixtures("teacher_in_cache")
def test_one_objective_name_and_the_study_run(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tiny study through the command line: the best trial's objective (best_val_acc, its
    val_acc at its best-validation epoch) is the same number in the CLI summary, results.csv,
    MLflow and the searcher; trial runs log the YAML names only (an or_zero parameter logs its
    effective value, no ``.is_zero`` switch); the parent run carries the study's settings, the
    best trial and a description; no run lands in a "Default" experiment, which this store
    does not show; artifacts stay out of the working directory."""
    import csv

    from rbm_tune.cli import main
    from rbm_tune.metrics import OBJECTIVE

    path = write_space(workdir, "obj", trials=4, concurrent=2, epochs=6)
    text = path.read_text().replace(
        "  patience: 50\n",
        "  patience: 50\n  weight_decay: {float: [1.0e-5, 1.0e-2], log: true, or_zero: true, "
        "default: 0}\n",
    )
    path.write_text(text)
    space = load_space(path)
    capsys.readouterr()
    assert main(["--space", str(path), "--cpus", "2"]) == 0
    printed = capsys.readouterr().out
    study = workdir / "rbm-tune-runs" / "obj"
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = MlflowClient(uri)
    # 1. results.csv: the objective column, best first
    with open(study / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert OBJECTIVE in rows[0] and "val_acc" not in rows[0]
    trials = json.loads((study / "trials.json").read_text())
    best = next(t for t in trials if not t["asha_stopped"])
    best_id, value = best["trial_id"], float(best[OBJECTIVE])
    assert float(next(r for r in rows if r["trial_id"] == best_id)[OBJECTIVE]) == value
    # 2. the CLI summary names the objective and prints the best trial's value
    assert OBJECTIVE in printed
    (line,) = [ln for ln in printed.splitlines() if ln.startswith(best_id)]
    assert f"{value:.4f}" in line.split(), line
    # 3. MLflow: the trial run's best_val_acc ends at it; the parent run names the trial
    runs = {r.data.tags["rbm_tune.trial_id"]: r for r in _runs(uri, "obj", "trial")}
    assert runs[best_id].data.metrics[OBJECTIVE] == value
    (parent,) = _runs(uri, "obj", "study")
    tags = parent.data.tags
    assert tags["rbm_tune.best_trial_id"] == best_id
    assert float(tags[f"rbm_tune.{OBJECTIVE}"]) == value
    assert tags["rbm_tune.best_run_id"] == runs[best_id].info.run_id
    assert parent.data.metrics[OBJECTIVE] == value
    note = tags["mlflow.note.content"]
    assert best_id in note and f"{value:.4f}" in note and "rbm-tune --space" in note
    assert "`distill.weight_decay`" in note
    params = parent.data.params
    assert params["dataset"] == "demo" and params["study.num_trials"] == "4"
    assert params["study.metric"] == "val_acc" and params["study.scheduler"] == "asha"
    assert params["study.asha.grace_period"] == "2"
    assert params["study.cpus_per_trial"] == "1"
    # 4. the searcher: TPE's value for that trial
    (state_file,) = study.glob("searcher-state-*.pkl")
    state = pickle.loads(state_file.read_bytes())
    ot = state["_ot_study"].trials[state["_ot_trials"][best_id].number]
    assert ot.values == [value]
    # the searcher keeps Optuna's own names (a resumed study's pickled state holds them) ...
    assert "distill.weight_decay.is_zero" in ot.params
    # ... while every trial run logs exactly the YAML names, with the values trained with
    names = set(space.config_for(best["sampled"]).flat())
    zero_seen = False
    for tid, run in runs.items():
        logged = run.data.params
        assert set(logged) == names, set(logged) ^ names
        sampled = next(t["sampled"] for t in trials if t["trial_id"] == tid)
        effective = space.config_for(sampled).flat()
        assert logged == {k: "null" if v is None else str(v) for k, v in effective.items()}
        zero_seen |= float(logged["distill.weight_decay"]) == 0
    assert zero_seen  # the default point chose the zero branch
    # no run in a "Default" experiment, and no empty one left in this new store
    assert not client.search_runs(["0"], run_view_type=3)
    assert [e.name for e in client.search_experiments()] == ["obj"]
    # artifacts under the storage path, none in the working directory
    assert not (workdir / "mlartifacts").exists()
    location = client.get_experiment_by_name("obj").artifact_location
    assert location == (workdir / "rbm-tune-runs" / "mlflow-artifacts" / "obj").as_uri()
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"results.csv"}
