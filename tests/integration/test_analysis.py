"""Beyond a sweep: a 2-objective study, its Pareto front and plots, evaluate, export.

One real study on the embedded demo graph (local Ray, SQLite MLflow) with two objectives
(val_acc max, num_params min) and no early stopping, then the commands that read it back:
``rbm-tune evaluate`` (2 configs x 2 new seeds as Ray tasks) and ``rbm-tune export`` (the best
student as TorchScript, loaded back by plain ``torch.jit.load`` in a process where rbm_tune
cannot be imported).
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from rbm_tune.data import load_graph
from tests.support.processes import rbm_tune_cli, stop_process_group

pytestmark = pytest.mark.integration

SPACE = """\
study:
  name: multi
  num_trials: 5
  max_concurrent: 2
  objectives: {val_acc: max, num_params: min}
  early_stopping: false   # no ASHA: every trial runs to its end
  resources: {cpus_per_trial: 1, gpus_per_trial: 0}
dataset: demo
teacher: {model: sage, num_layers: 2, hidden_dim: 16, max_epochs: 15, patience: 10}
student:
  model: rbm
  hidden_dim: {categorical: [8, 16, 32]}
  num_experts: {int: [2, 4]}
  k: {int: [1, num_experts - 1]}
distill:
  max_epochs: 6
  pretrain_epochs: 1
  patience: 50
  lr: 0.01
"""


def _cli(tmp: Path, *args: str, timeout: float = 400) -> str:
    proc = rbm_tune_cli(*args, cwd=tmp, env={"RBM_TUNE_CACHE": str(tmp / "cache")})
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        stop_process_group(proc, wait=5)
    assert proc.returncode == 0, out[-4000:]
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, tiny_teacher_cache: Path) -> Path:
    tmp = tmp_path_factory.mktemp("analysis")
    (tmp / "multi.yaml").write_text(SPACE)
    # the study's teacher (spaces.write_space's) is read, not trained: this module is about
    # what comes after a search; evaluate's new seeds still train theirs
    shutil.copytree(tiny_teacher_cache, tmp / "cache")
    assert "(from cache)" in _cli(tmp, "--space", "multi.yaml", "--cpus", "2")
    # the resources rbm-tune evaluate asks for per run: the trials'
    settings = json.loads((tmp / "rbm-tune-runs" / "multi" / "study.json").read_text())
    assert settings["cpus_per_trial"] == 1 and settings["gpus_per_trial"] == 0
    return tmp


def _trials(tmp: Path) -> list[dict]:
    return json.loads((tmp / "rbm-tune-runs" / "multi" / "trials.json").read_text())


def test_pareto_front_is_non_empty_and_mutually_non_dominated(study: Path) -> None:
    finished = [t for t in _trials(study) if not t["asha_stopped"]]
    assert len(finished) == 5
    table = (study / "rbm-tune-runs" / "multi" / "pareto.md").read_text()
    front_ids = [line.split("|")[1].strip() for line in table.splitlines()[4:] if line]
    assert front_ids, table
    by_id = {t["trial_id"]: t for t in finished}
    points = {i: (t["metrics"]["val_acc"], t["metrics"]["num_params"]) for i, t in by_id.items()}
    for a in front_ids:  # no point of the front is dominated by any finished trial
        va, pa = points[a]
        for b, (vb, pb) in points.items():
            assert not (vb >= va and pb <= pa and (vb > va or pb < pa)), (a, b, points)
    # and every non-dominated trial is on it
    expected = {
        a
        for a, (va, pa) in points.items()
        if not any(vb >= va and pb <= pa and (vb > va or pb < pa) for vb, pb in points.values())
    }
    assert set(front_ids) == expected
    # MLflow holds both objectives for every finished trial
    client = MlflowClient(f"sqlite:///{study / 'mlflow.db'}")
    exp = client.get_experiment_by_name("multi")
    runs = client.search_runs(
        [exp.experiment_id], filter_string="tags.`rbm_tune.role` = 'trial'", max_results=100
    )
    assert len(runs) == 5
    assert all({"final_val_acc", "num_params"} <= set(r.data.metrics) for r in runs)


def test_plots_are_valid_pngs_and_mlflow_artifacts(study: Path) -> None:
    plots = study / "rbm-tune-runs" / "multi" / "plots"
    names = {"optimization_history", "param_importances", "parallel_coordinate", "pareto_front"}
    for name in names:
        png = plots / f"{name}.png"
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000, png
        import matplotlib.image

        image = matplotlib.image.imread(png)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        page = (plots / f"{name}.html").read_text()
        assert "<html>" in page and "plotly" in page.lower()
    client = MlflowClient(f"sqlite:///{study / 'mlflow.db'}")
    exp = client.get_experiment_by_name("multi")
    parent = client.search_runs(
        [exp.experiment_id], filter_string="tags.`rbm_tune.role` = 'study'"
    )[0]
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {f"plots/{n}.png" for n in names} <= logged
    assert "pareto.md" in {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_evaluate_two_configs_over_two_seeds(study: Path) -> None:
    from rbm_tune.teacher_cache import TeacherCache

    before = {e.digest for e in TeacherCache.in_cache_dir(study / "cache").entries()}
    out = _cli(study, "evaluate", "--name", "multi", "--top", "2", "--seeds", "2", "--cpus", "2")
    # each new seed's teacher resolved once by the driver's side (trained by one task), then
    # shipped to that seed's four runs: two new cache entries, one "trained" line per seed
    trained = [
        line for line in out.splitlines() if line.startswith("teacher ") and "(trained)" in line
    ]
    assert len(trained) == 2 and len({line.split()[4] for line in trained}) == 2, out[-3000:]
    after = {e.digest for e in TeacherCache.in_cache_dir(study / "cache").entries()}
    assert len(after - before) == 2 and before <= after
    assert {line.split()[1] for line in trained} == {d[:12] for d in after - before}
    rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    body = rows[1:]  # below the header
    labels = [r.split("|")[1].strip() for r in body]
    assert labels[:3] == ["teacher", "glnn (distilled mlp)", "mlp (labels only)"], out
    assert len(labels) == 5, out
    top = [t["trial_id"] for t in _trials(study) if not t["asha_stopped"]][:2]
    assert labels[3:] == [f"#1 trial {top[0]}", f"#2 trial {top[1]}"]
    # the table opens with the verdict: a student row, its margin and the paired test
    table = (study / "rbm-tune-runs" / "multi" / "evaluate-top2-seeds2.md").read_text()
    first = table.splitlines()[0]
    assert first.startswith("**Verdict:** ") and "paired over 2 seeds" in first, first
    assert any(f"{label} wins" in first for label in labels[1:]), first
    # the table is the mean ± std of the per-seed numbers written beside it
    per_run = json.loads(
        (study / "rbm-tune-runs" / "multi" / "evaluate-top2-seeds2.json").read_text()
    )
    assert [r["model"] for r in per_run["rows"]] == labels
    seeds = per_run["seeds"]
    assert len(seeds) == 2 and len(set(seeds)) == 2
    for row, numbers in zip(body, per_run["rows"], strict=True):
        cells = [c.strip() for c in row.split("|")[1:-1]]
        assert cells[2] == "2"  # n seeds
        runs = numbers["runs"]
        assert [r["seed"] for r in runs] == seeds
        for r in runs:  # test acc at the best-val epoch never exceeds the max over epochs
            assert 0 <= r["test_acc"] <= r["test_acc_oracle"] <= 1
        for cell, key in zip(cells[3:6], ("test_acc", "val_acc", "test_acc_oracle"), strict=True):
            values = [100 * r[key] for r in runs]
            mean, _, std = cell.partition(" ± ")
            assert float(mean) == pytest.approx(statistics.fmean(values), abs=0.006)
            assert float(std) == pytest.approx(statistics.stdev(values), abs=0.006)
    teacher = per_run["rows"][0]["runs"]
    chance = 1 / load_graph("demo").num_classes
    assert min(r["test_acc"] for r in teacher) > 1.5 * chance  # a trained teacher
    client = MlflowClient(f"sqlite:///{study / 'mlflow.db'}")
    exp = client.get_experiment_by_name("multi")
    parent = client.search_runs(
        [exp.experiment_id], filter_string="tags.`rbm_tune.role` = 'study'"
    )[0]
    assert parent.info.status == "FINISHED"  # evaluate did not reopen the study run
    logged = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"evaluate-top2-seeds2.md", "evaluate-top2-seeds2.json"} <= logged


def test_exported_student_loads_with_plain_torch_and_predicts_the_same(study: Path) -> None:
    target = study / "export" / "student.pt"
    out = _cli(study, "export", "--name", "multi", "--out", str(target))
    best = next(t for t in _trials(study) if not t["asha_stopped"])
    assert best["trial_id"] in out and "batch of 1" in out
    assert "Warning" not in out  # e.g. a TracerWarning from tracing the student
    meta = json.loads(target.with_name("student.pt.json").read_text())
    assert meta["in_dim"] == 32 and meta["feature_columns"]["deepwalk_pe"] is None

    # rbm-tune's own prediction: the trial's checkpoint in the eager student
    from rbm_tune.config import TrialConfig
    from rbm_tune.data import load_graph
    from rbm_tune.models import build_student

    config = TrialConfig.from_mapping(best["config"])
    graph = load_graph("demo", setting="transductive", seed=config.seed)
    model = build_student(config.student, graph.num_features, graph.num_classes)
    state = torch.load(Path(best["checkpoint"]) / "student.pt", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        expected = model(graph.x).logits
    torch.save(graph.x, study / "x.pt")

    # plain torch, with every rbm_tune import blocked
    code = (
        "import sys; sys.modules['rbm_tune'] = None\n"
        "import torch\n"
        f"m = torch.jit.load({str(target)!r})\n"
        f"x = torch.load({str(study / 'x.pt')!r})\n"
        "with torch.no_grad():\n"
        f"    torch.save(m(x), {str(study / 'y.pt')!r})\n"
    )
    subprocess.run([sys.executable, "-I", "-c", code], check=True, timeout=120)
    got = torch.load(study / "y.pt")
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)
    assert torch.equal(got.argmax(1), expected.argmax(1))
