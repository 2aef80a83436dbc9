"""Warm-start points: loading an earlier study's trials and fitting them to a new space."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ray import tune

from rbm_tune.study.warm_start import WarmStartError, load_rows, warm_points

SPACE = {
    "lr": tune.loguniform(1e-4, 1e-1),
    "hidden": tune.choice([64, 128]),
    "layers": tune.randint(1, 4),
    "dataset": "cora",
}


def _study(tmp_path: Path, rows: list[dict]) -> Path:
    (tmp_path / "trials.json").write_text(json.dumps(rows))
    (tmp_path / "results.csv").write_text("trial_id,val_acc\n")
    return tmp_path


def _row(acc: float, **sampled: object) -> dict:
    return {"trial_id": f"t{acc}", "val_acc": acc, "sampled": sampled}


def test_points_are_filtered_and_converted_best_first(tmp_path: Path) -> None:
    rows = [
        _row(0.9, lr=0.01, hidden=128, layers=2, old_param=3),
        _row(0.8, lr=0.5, hidden=64, layers=1),  # lr outside
        _row(0.7, lr=0.001, hidden=256, layers=1),  # hidden not a choice
        _row(0.6, lr=0.001, hidden=64, layers=4),  # randint's upper is exclusive
        _row(0.5, lr=0.001, hidden=64),  # layers missing
        {"trial_id": "x", "val_acc": None, "sampled": {"lr": 0.01, "hidden": 64, "layers": 1}},
        _row(0.4, lr=0.002, hidden=64, layers=3),
    ]
    for source in (_study(tmp_path, rows), tmp_path / "results.csv"):
        warm = warm_points(load_rows(source), SPACE, "val_acc", "max")
        assert warm.points == [
            {"lr": 0.01, "hidden": 128, "layers": 2},
            {"lr": 0.002, "hidden": 64, "layers": 3},
        ]
        assert warm.rewards == [0.9, 0.4]
        assert warm.dropped == 5
        assert warm.note == (
            "warm start: dropped 5 of 7 earlier trials (3 outside the new space's ranges, "
            "1 missing a searched parameter, 1 without val_acc)"
        )


def test_nothing_dropped_no_note(tmp_path: Path) -> None:
    rows = [_row(0.9, lr=0.01, hidden=128, layers=2)]
    warm = warm_points(load_rows(_study(tmp_path, rows)), SPACE, "val_acc", "max")
    assert (warm.dropped, warm.note) == (0, "")


def test_bad_path_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(WarmStartError, match="no trials.json there") as info:
        load_rows(tmp_path / "nope")
    assert "\n" not in str(info.value)
    (tmp_path / "trials.json").write_text("{not json")
    with pytest.raises(WarmStartError, match="cannot read"):
        load_rows(tmp_path)


def test_optuna_distributions(tmp_path: Path) -> None:
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    space = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "act": CategoricalDistribution(["a"])}
    rows = [_row(0.9, lr=0.01, act="a"), _row(0.8, lr=0.2, act="a"), _row(0.7, lr=0.01, act="b")]
    warm = warm_points(load_rows(_study(tmp_path, rows)), space, "val_acc", "max")
    assert warm.points == [{"lr": 0.01, "act": "a"}]
    assert warm.dropped == 2


# -- wiring: the new space's define-by-run, real Optuna, the searcher ---------------------------


def _tiny(tmp_path: Path) -> Any:
    from rbm_tune.search_space import load_space
    from tests.support.spaces import write_space

    return load_space(write_space(tmp_path, "tiny"))


def _drawn(acc: float, experts: int, k: int, lr: float, **extra: object) -> dict:
    sampled = {"student.num_experts": experts, "student.k": k, "distill.lr": lr, **extra}
    return {"trial_id": f"t{acc}", "val_acc": acc, "asha_stopped": False, "sampled": sampled,
            "metrics": {"val_acc": acc, "loss": 1 - acc}}  # fmt: skip


def _earlier(tmp_path: Path, name: str = "earlier") -> Path:
    rows = [
        _drawn(0.9, 4, 3, 0.01, **{"student.vq_coef": 0.5}),  # a parameter the new space lacks
        _drawn(0.85, 3, 1, 0.01) | {"asha_stopped": True},
        _drawn(0.8, 2, 2, 0.01),  # k outside [1, num_experts - 1]
        _drawn(0.7, 3, 2, 0.001),  # lr not a choice
        {"trial_id": "nolr", "val_acc": 0.6, "sampled": {"student.num_experts": 3}},
        _drawn(0.5, 3, 2, 0.00001),
        _drawn(0.4, 2, 1, 0.01) | {"val_acc": None, "metrics": {}},
    ]
    folder = tmp_path / name
    folder.mkdir(parents=True)
    return _study(folder, rows)


def test_load_warm_start_replays_rows_through_the_new_space(tmp_path: Path) -> None:
    from optuna.distributions import IntDistribution
    from optuna.trial import TrialState

    from rbm_tune.study.warm_start import load_warm_start

    space, earlier = _tiny(tmp_path), _earlier(tmp_path)
    warm = load_warm_start(["earlier"], tmp_path, space, ["val_acc"], ["max"])
    assert [t.state for t in warm.trials] == [TrialState.COMPLETE] * 2
    assert [t.values for t in warm.trials] == [[0.9], [0.5]]
    assert warm.best == {"student.num_experts": 4, "student.k": 3, "distill.lr": 0.01}
    # the distribution the new space draws k from given num_experts (its range depends on it)
    assert warm.trials[1].distributions["student.k"] == IntDistribution(1, 2)
    assert warm.trials[0].user_attrs["rbm_tune.warm_start"] == "earlier"
    assert warm.folders == (str(earlier.resolve()),)
    assert warm.note == (
        "warm start: 2 of 7 earlier trials from earlier given to the searcher; dropped 5 (1 "
        "stopped early by ASHA, 2 outside the new space's ranges, 1 missing a searched "
        "parameter, 1 without val_acc)"
    )
    assert warm.tags() == {"rbm_tune.warm_start": "earlier", "rbm_tune.warm_start_points": "2"}
    # another metric and mode: the rows' values of that metric, best (lowest) first
    by_loss = load_warm_start([str(earlier / "results.csv")], tmp_path, space, ["loss"], ["min"])
    assert [t.values for t in by_loss.trials] == [[pytest.approx(0.1)], [0.5]]


def test_sources_are_names_folders_or_results_csv_and_bad_ones_one_line(tmp_path: Path) -> None:
    from rbm_tune.study.warm_start import resolve_source

    earlier = _earlier(tmp_path / "runs")
    runs = tmp_path / "runs"
    for source in ("earlier", str(earlier), str(earlier / "results.csv")):
        assert resolve_source(source, runs) == earlier.resolve()
    with pytest.raises(WarmStartError, match=r"^--warm-start nope: no finished study there") as e:
        resolve_source("nope", runs)
    assert "\n" not in str(e.value)


def test_the_searcher_holds_the_points_before_its_first_suggestion_once(tmp_path: Path) -> None:
    import optuna
    from optuna.trial import TrialState

    from rbm_tune.study._compat import optuna_study
    from rbm_tune.study.searcher import TrialSearch
    from rbm_tune.study.warm_start import load_warm_start

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = _tiny(tmp_path)
    _earlier(tmp_path)
    warm = load_warm_start(["earlier"], tmp_path, space, ["val_acc"], ["max"])

    def searcher() -> TrialSearch:
        return TrialSearch(
            space=space.define_by_run,
            metric="val_acc",
            mode="max",
            sampler=optuna.samplers.TPESampler(seed=0),
        )

    first = searcher()
    default = space.default_params()
    assert first.add_warm_start(warm.trials, [warm.best, default], warm.record())
    study = optuna_study(first)
    done = [(t.state, t.values) for t in study.trials[:2]]
    assert done == [(TrialState.COMPLETE, [0.9]), (TrialState.COMPLETE, [0.5])]
    assert [t.state for t in study.trials[2:]] == [TrialState.WAITING] * 2  # enqueued
    # the earlier best is the first trial, the space's default point the second
    a, b = first.suggest("a"), first.suggest("b")
    assert a is not None and b is not None
    assert {k: a[k] for k in warm.best} == warm.best
    assert {k: b[k] for k in default} == default
    # added once: again, or in a searcher restored from the saved state, nothing is added
    assert not first.add_warm_start(warm.trials, [warm.best], warm.record())
    first.save(str(tmp_path / "searcher.pkl"))
    restored = searcher()
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert restored.warm_start == warm.record()
    assert not restored.add_warm_start(warm.trials, [warm.best], warm.record())
    completed = [t for t in optuna_study(restored).trials if t.state == TrialState.COMPLETE]
    assert len(completed) == 2


def test_resume_takes_the_same_sources_only(tmp_path: Path) -> None:
    from rbm_tune.study.warm_start import check_resume, load_warm_start, write_record

    space, runs = _tiny(tmp_path), tmp_path / "runs"
    _earlier(runs)
    _earlier(runs, "other")
    warm = load_warm_start(["earlier"], runs, space, ["val_acc"], ["max"])
    study = runs / "new"
    with pytest.raises(WarmStartError, match="started with no warm start"):
        check_resume(study, ["earlier"], runs)
    write_record(study, warm)
    assert "not added again" in check_resume(study, [str(runs / "earlier")], runs)
    with pytest.raises(WarmStartError, match="started with earlier; earlier trials are given"):
        check_resume(study, ["earlier", "other"], runs)


def test_cli_bad_source_is_exit_2_before_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import ray

    from rbm_tune.cli import main
    from tests.support.spaces import write_space

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    space = write_space(tmp_path, "tiny")
    argv = ["--space", str(space), "--storage-path", str(tmp_path), "--warm-start", "gone"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rbm-tune: error: --warm-start gone: no finished study there")
    assert "\n" not in err and not ray.is_initialized()
    assert not (tmp_path / "tiny").exists() and not (tmp_path / "mlflow.db").exists()


def test_across_datasets_amazon_computers_to_amazon_photo(tmp_path: Path) -> None:
    """Trials drawn from the shipped amazon-computers space all fit amazon-photo's (same
    parameters and ranges): only names and ranges matter, not the dataset."""
    import optuna

    from rbm_tune.search_space import SHIPPED_DIR, load_space
    from rbm_tune.study.warm_start import load_warm_start

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    computers = load_space(SHIPPED_DIR / "amazon-computers.yaml")
    photo = load_space(SHIPPED_DIR / "amazon-photo.yaml")
    drawn = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    rows = []
    for i in range(12):
        sampled = computers.define_by_run(drawn.ask())
        rows.append({"trial_id": f"c_{i:05d}", "val_acc": i / 20, "sampled": sampled})
    (tmp_path / "amazon-computers").mkdir()
    _study(tmp_path / "amazon-computers", rows)
    warm = load_warm_start(["amazon-computers"], tmp_path, photo, ["val_acc"], ["max"])
    assert len(warm.trials) == 12 and "dropped" not in warm.note
    assert [t.values for t in warm.trials] == [[i / 20] for i in reversed(range(12))]
    assert warm.best == {k: v for k, v in rows[-1]["sampled"].items() if k in warm.best}
