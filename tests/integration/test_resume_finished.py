"""``--resume`` of a finished study changes nothing and says so (a real study, real MLflow);
the study's ``--set`` reaches its trials and MLflow.

Issue 22: resuming a finished demo study rewrote ``best_config.yaml`` (locally and in MLflow)
and moved the parent and teacher runs' end times. Here a tiny study runs through ``cli.main``,
then the same command with ``--resume`` must print one line, exit 0 and leave the study
folder's summary files, their MLflow copies and every run's end time as they were.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from rbm_tune.cli import main
from tests.support.spaces import write_space

pytestmark = pytest.mark.integration


def _state(uri: str, name: str, folder: Path) -> dict[str, object]:
    """What a resume must not change: the summary files (bytes and mtimes), every run of the
    study (status, end time) and the parent run's artifact copy of best_config.yaml."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    roles = {r.data.tags.get("rbm_tune.role") for r in runs}
    assert {"study", "teacher", "trial"} <= roles, roles
    (parent,) = [r for r in runs if r.data.tags.get("rbm_tune.role") == "study"]
    artifact = Path(parent.info.artifact_uri.removeprefix("file://")) / "best_config.yaml"
    files = {
        p.name: (p.read_bytes(), p.stat().st_mtime_ns)
        for p in (folder / f for f in ("best_config.yaml", "results.csv", "trials.json"))
    }
    return {
        "files": files,
        "artifact": (artifact.read_bytes(), artifact.stat().st_mtime_ns),
        "runs": sorted(
            (r.info.run_id, r.info.status, r.info.end_time, r.data.tags.get("rbm_tune.role"))
            for r in runs
        ),
    }


def test_resume_of_a_finished_study_changes_nothing(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the file says 10 epochs; --set makes the study's trials 4 epochs long
    space = write_space(workdir, "fin", trials=2, concurrent=2, epochs=10)
    argv = ["--space", str(space), "--cpus", "2", "--set", "distill.max_epochs=4"]
    assert main(argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    folder = workdir / "rbm-tune-runs" / "fin"
    assert (folder / "finished.json").is_file()
    before = _state(uri, "fin", folder)
    assert "max_epochs: 4\n" in (folder / "best_config.yaml").read_text()
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("fin")
    assert experiment is not None
    for run in client.search_runs([experiment.experiment_id]):
        assert run.data.tags["rbm_tune.set"] == "distill.max_epochs=4"
        if run.data.tags.get("rbm_tune.role") == "trial":
            assert run.data.params["distill.max_epochs"] == "4"

    assert main([*argv, "--resume"]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines() == [
        "study 'fin' is already finished (2 trials); nothing to do — see "
        "`rbm-tune best --name fin`"
    ], out
    assert _state(uri, "fin", folder) == before

    # the best config the line points at is the one the study wrote
    assert main(["best", "--name", "fin"]) == 0
    first, _, rest = capsys.readouterr().out.partition("\n")
    assert first.startswith("# chosen by: search (single seed); trial "), first
    assert rest == (folder / "best_config.yaml").read_text()
