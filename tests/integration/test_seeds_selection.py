"""Noise-aware selection end to end: a study with ``study.seeds_per_trial: 2`` (each trial the
mean of two lockstep students), then ``rbm-tune evaluate --select mean-val`` choosing the
study's best_config.yaml by mean validation accuracy over new seeds, and ``rbm-tune best``
saying which rule chose it. Real Ray (local), SQLite MLflow, the embedded demo graph.
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.support.processes import rbm_tune_cli, stop_process_group

pytestmark = pytest.mark.integration

SPACE = """\
study:
  name: noisy
  num_trials: 3
  max_concurrent: 2
  seeds_per_trial: 2
  early_stopping: false
  plots: false
  resources: {cpus_per_trial: 1, gpus_per_trial: 0}
dataset: demo
teacher: {model: sage, num_layers: 2, hidden_dim: 16, max_epochs: 15, patience: 10}
student:
  model: rbm
  hidden_dim: {categorical: [8, 16, 32]}
  num_experts: {int: [2, 4]}
  k: {int: [1, num_experts - 1]}
distill:
  max_epochs: 5
  pretrain_epochs: 1
  patience: 50
  lr: {float: [0.003, 0.03], log: true}
"""


def _cli(tmp: Path, *args: str, timeout: float = 400) -> str:
    proc = rbm_tune_cli(*args, cwd=tmp, env={"RBM_TUNE_CACHE": str(tmp / "cache")})
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        stop_process_group(proc, wait=5)
    assert proc.returncode == 0, out[-4000:]
    return out


def _parent(tmp: Path):  # noqa: ANN202 (an MLflow Run)
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    exp = client.get_experiment_by_name("noisy")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("rbm_tune.role") == "study"]
    return client, parent, [r for r in runs if r.data.tags.get("rbm_tune.role") == "trial"]


def test_seeds_per_trial_and_evaluate_select(tmp_path: Path, tiny_teacher_cache: Path) -> None:
    (tmp_path / "noisy.yaml").write_text(SPACE)
    shutil.copytree(tiny_teacher_cache, tmp_path / "cache")
    _cli(tmp_path, "--space", "noisy.yaml", "--cpus", "2")
    folder = tmp_path / "rbm-tune-runs" / "noisy"
    trials = json.loads((folder / "trials.json").read_text())
    finished = [t for t in trials if not t["asha_stopped"]]
    assert len(finished) == 3
    for t in finished:  # each trial: the mean of two students, with their spread
        assert t["metrics"]["seeds_per_trial"] == 2
        assert t["metrics"]["val_acc_std"] >= 0 and t["metrics"]["test_acc_std"] >= 0
        ckpt = Path(t["checkpoint"])
        assert (ckpt / "student.pt").is_file()
        assert (ckpt / f"student-seed{t['config']['seed'] + 1}.pt").is_file()
    _, parent, runs = _parent(tmp_path)
    assert all("val_acc_std" in r.data.metrics for r in runs)
    assert parent.data.params["study.seeds_per_trial"] == "2"
    assert parent.data.tags["rbm_tune.best_selection"] == (
        "search (mean over 2 seeds per trial, one split)"
    )
    search_yaml = (folder / "best_config.yaml").read_text()
    best = _cli(tmp_path, "best", "--name", "noisy").splitlines()
    assert best[0] == (
        "# chosen by: search (mean over 2 seeds per trial, one split); "
        f"trial {finished[0]['trial_id']}"
    )

    out = _cli(
        tmp_path, "evaluate", "--name", "noisy", "--top", "3", "--seeds", "2", "--cpus", "2",
        "--select", "mean-val",
    )  # fmt: skip
    per_run = json.loads((folder / "evaluate-top3-seeds2.json").read_text())
    seeds = per_run["seeds"]
    configs = per_run["rows"][3:]  # after the teacher, GLNN and the plain MLP
    means = [statistics.fmean(r["val_acc"] for r in row["runs"]) for row in configs]
    won = means.index(max(means))
    winner = finished[won]
    assert f"best_config.yaml: #{won + 1} trial {winner['trial_id']}" in out, out[-3000:]
    # the winner's config is the study's best now; the search's is kept beside it
    assert yaml.safe_load((folder / "best_config.yaml").read_text()) == winner["config"]
    assert (folder / "best_config.search.yaml").read_text() == search_yaml
    chosen = (
        f"mean val acc over seeds {seeds[0]}, {seeds[1]} (rbm-tune evaluate --select mean-val)"
    )
    best = _cli(tmp_path, "best", "--name", "noisy").splitlines()
    assert best[0] == f"# chosen by: {chosen}; trial {winner['trial_id']}"
    _, parent, _ = _parent(tmp_path)
    assert parent.data.tags["rbm_tune.best_selection"] == chosen
    assert parent.data.tags["rbm_tune.selected_trial_id"] == winner["trial_id"]
    assert parent.data.tags["rbm_tune.best_trial_id"] == finished[0]["trial_id"]  # the search's
