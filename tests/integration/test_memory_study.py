"""A study never trains a trial whose memory estimate exceeds its share (real Ray, MLflow).

The space searches a student width whose wide choice (3 x 4096, 67 M expert weights: about
1.5 GiB with Adam's state) exceeds ``memory_per_trial`` and whose narrow one fits; the wide
choice is the default point, so the study's first trial is one to skip.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from rbm_tune.errors import RbmTuneError
from rbm_tune.search_space import load_space
from rbm_tune.study import run_study

pytestmark = pytest.mark.integration

SPACE = """\
study:
  name: {name}
  num_trials: 4
  max_concurrent: 2
  plots: false
  asha: {{grace_period: 2, reduction_factor: 2}}
  resources: {{cpus_per_trial: 1, gpus_per_trial: 0, memory_per_trial: {share}}}
dataset: demo
teacher: {{model: sage, num_layers: 2, hidden_dim: 16, max_epochs: 15, patience: 10}}
student:
  model: rbm
  num_layers: 3
  hidden_dim: {{categorical: [16, 4096], default: 4096}}
  num_experts: 4
  k: 2
distill:
  max_epochs: 6
  pretrain_epochs: 1
  patience: 50
"""


def test_draws_that_do_not_fit_are_skipped_not_trained(workdir: Path) -> None:
    path = workdir / "skip.yaml"
    path.write_text(SPACE.format(name="skip", share="800MiB"))
    lines: list[str] = []
    result = run_study(load_space(path), cpus=2, verbose=0, log=lines.append)
    text = "\n".join(lines)
    # the driver warned before Ray started: the default point is one to skip
    assert "warning: the space's default point needs about" in text
    assert result.skipped and not result.failed
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("skip")
    runs = client.search_runs(
        [exp.experiment_id], filter_string="tags.`rbm_tune.role` = 'trial'", max_results=100
    )
    assert len(runs) == 4
    skipped = [r for r in runs if r.data.tags.get("rbm_tune.skipped") == "memory"]
    trained = [r for r in runs if "rbm_tune.skipped" not in r.data.tags]
    assert {r.data.tags["rbm_tune.trial_id"] for r in skipped} == set(result.skipped)
    assert skipped and trained
    for run in skipped:  # the wide draws, never trained: no metric at all, FINISHED, tagged
        assert run.data.params["student.hidden_dim"] == "4096"
        assert run.data.metrics == {}
        assert run.info.status == "FINISHED"
        assert run.data.tags["rbm_tune.asha_stopped"] == "false"
        assert run.data.tags["rbm_tune.memory_share"] == "800 MiB"
        assert "GiB" in run.data.tags["rbm_tune.memory_estimate"]
    for run in trained:
        assert run.data.params["student.hidden_dim"] == "16"
        assert len(client.get_metric_history(run.info.run_id, "val_acc")) >= 2
    # one summary line names them; the table and the best config hold trained trials only
    (summary,) = [line for line in lines if "not trained: estimated memory" in line]
    assert all(tid in summary for tid in result.skipped)
    assert {row["trial_id"] for row in result.table}.isdisjoint(result.skipped)
    assert result.best_config["student"]["hidden_dim"] == 16
    # TPE learnt the skipped draws as PRUNED, with no value at any step
    (state_file,) = result.storage_path.glob("searcher-state-*.pkl")
    state = pickle.loads(state_file.read_bytes())
    told = {tid: state["_ot_study"].trials[t.number] for tid, t in state["_ot_trials"].items()}
    for tid in result.skipped:
        assert told[tid].state.name == "PRUNED"
        assert told[tid].intermediate_values == {}
        assert told[tid].params["student.hidden_dim"] == 4096


def test_a_space_none_of_whose_points_fits_is_refused_before_ray(workdir: Path) -> None:
    import ray

    path = workdir / "tiny.yaml"
    path.write_text(SPACE.format(name="tiny", share="64MiB"))
    with pytest.raises(RbmTuneError) as caught:
        run_study(load_space(path), cpus=2, verbose=0)
    message = str(caught.value)
    assert message.startswith("no trial of this space fits its memory share on this machine")
    assert "a trial may use 64 MiB" in message and "rbm-tune plan --space tiny.yaml" in message
    assert not ray.is_initialized()  # nothing started
    assert not (workdir / "rbm-tune-runs" / "tiny").exists()
