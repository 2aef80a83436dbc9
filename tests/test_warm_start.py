"""Warm-start points: loading an earlier study's trials and fitting them to a new space."""

from __future__ import annotations

import json
from pathlib import Path

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
