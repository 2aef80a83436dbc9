"""A study that searches the student family: ``student.model: {categorical: [mlp, rbm]}``.

Real Ray, Optuna (grouped multivariate TPE) and MLflow (SQLite) on the embedded demo graph, a
few 8-epoch trials: MLP trials draw and log no ``num_experts`` / ``k`` / RbM coefficients, RbM
trials do; the RbM is handicapped (a load-balance loss 50-100 times its usual weight, an RbM-only
parameter, and a learning rate drawn for it alone, a thousandth of the MLP's) so the plain
distilled MLP wins, and ``rbm-tune best`` and ``rbm-tune train --config
best_config.yaml`` work for that MLP winner.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from rbm_tune.config import load_config
from rbm_tune.search_space import load_space
from rbm_tune.study import run_study
from tests.support.spaces import write_space

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("teacher_in_cache")]

FAMILY = """\
  model: {categorical: [mlp, rbm], default: rbm}
  load_balance_coef: {float: [50.0, 100.0]}
"""
# the RbM learns at a thousandth of the MLP's rate (the schema's 0.01): a `when:` on a key
# every model reads
RBM_LR = "  lr: {float: [1.0e-5, 2.0e-5], when: {student.model: [rbm]}}\n"
RBM_ONLY = {"student.num_experts", "student.k", "student.load_balance_coef"}


def test_family_study_finds_the_mlp_and_logs_only_what_each_trial_used(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_space(workdir, "family", trials=5, concurrent=2, epochs=8)
    text = path.read_text().replace("  model: rbm\n", FAMILY)
    path.write_text(text.replace("  lr: {categorical: [0.01, 0.00001], default: 0.01}\n", RBM_LR))
    space = load_space(path)
    assert space.conditional
    result = run_study(space, cpus=2, verbose=0)

    # trials.json: what each trial drew; its config holds the schema's defaults otherwise
    rows = json.loads((result.storage_path / "trials.json").read_text())
    models = {r["trial_id"]: r["sampled"]["student.model"] for r in rows}
    assert set(models.values()) == {"mlp", "rbm"}, models
    for row in rows:
        drawn = set(row["sampled"])
        assert ("distill.lr" in drawn) == (models[row["trial_id"]] == "rbm")
        assert (RBM_ONLY <= drawn) == (models[row["trial_id"]] == "rbm"), row["sampled"]
        assert RBM_ONLY & drawn in (set(), RBM_ONLY)

    # MLflow: each trial run's params are what it trained with, nothing it did not use
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("family")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], "tags.`rbm_tune.role` = 'trial'")
    assert len(runs) == len(rows) == 5
    for run in runs:
        params = run.data.params
        model = params["student.model"]
        assert model == models[run.data.tags["rbm_tune.trial_id"]]
        # distill.lr, drawn for the RbM only: the MLP logs the 0.01 it trained with; the fixed
        # keys an MLP ignores are not logged for it
        assert (params["distill.lr"] == "0.01") == (model == "mlp"), params
        if model == "mlp":
            assert not (RBM_ONLY | {"student.momentum", "student.vq_coef"}) & set(params), params
        else:
            assert RBM_ONLY | {"student.momentum", "student.vq_coef"} <= set(params)
            assert int(params["student.k"]) < int(params["student.num_experts"])

    # the plain MLP wins; best_config.yaml is a valid MLP trial config
    best = load_config(result.storage_path / "best_config.yaml")
    assert best.student.model == "mlp", [(r["sampled"], r["val_acc"]) for r in rows]
    assert best.distill.lr == 0.01
    from rbm_tune.cli import main

    capsys.readouterr()  # drop Ray Tune's progress output
    assert main(["best", "--name", "family"]) == 0
    printed = workdir / "printed.yaml"
    printed.write_text(capsys.readouterr().out)
    assert load_config(printed) == best
    out = workdir / "train.json"
    config = str(result.storage_path / "best_config.yaml")
    args = ["train", "--config", config, "--device", "cpu", "--quiet", "--json", str(out)]
    assert main(args) == 0
    metrics = json.loads(out.read_text())
    assert metrics["student"] == "mlp" and 0 < metrics["val_acc"] <= 1, metrics
