"""Which config is a study's best and why (rbm_tune.selection): the mean-val rule over a table
of per-seed results, never a test accuracy; the files it keeps; what `rbm-tune best` prints."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from rbm_tune.cli import main
from rbm_tune.selection import (
    SEARCH_BEST,
    SELECTION_FILE,
    adopt,
    chosen_by,
    read_selection,
    record_search,
    select_by_mean_val,
    selection_tags,
)


class ValOnly(Mapping[str, Any]):
    """A per-seed run whose test accuracy cannot be read: the test fails if the rule looks."""

    def __init__(self, val: float, test: float) -> None:
        self._d = {"seed": 1, "val_acc": val, "test_acc": test}

    def __getitem__(self, key: str) -> Any:
        if key.startswith("test"):
            raise AssertionError(f"the selection read {key}")
        return self._d[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)


def _runs(vals: list[float], tests: list[float]) -> dict[str, list]:
    return {"runs": [ValOnly(v, t) for v, t in zip(vals, tests, strict=True)]}


def test_mean_val_picks_the_best_mean_and_never_reads_test() -> None:
    table = [
        _runs([0.80, 0.70], [0.99, 0.99]),  # search's #1: mean 0.75, the best test accuracy
        _runs([0.76, 0.78], [0.10, 0.10]),  # mean 0.77: the winner, the worst test accuracy
        _runs([0.90, 0.50], [0.50, 0.50]),  # best single seed, mean 0.70
    ]
    assert select_by_mean_val(table) == 1


def test_mean_val_ties_go_to_the_better_search_rank() -> None:
    assert select_by_mean_val([_runs([0.5, 0.7], [0, 0]), _runs([0.7, 0.5], [1, 1])]) == 0
    with pytest.raises(ValueError):
        select_by_mean_val([])
    with pytest.raises(ValueError):
        select_by_mean_val([{"runs": []}])


def test_same_val_other_test_same_choice() -> None:
    """Changing only test accuracies never changes the choice (plain dicts this time)."""
    vals = [[0.6, 0.62], [0.61, 0.62], [0.58, 0.7]]
    for tests in ([0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9]):
        table = [
            {"runs": [{"val_acc": v, "test_acc": t} for v in vs]}
            for vs, t in zip(vals, tests, strict=True)
        ]
        assert select_by_mean_val(table) == 2


def _study(tmp_path: Path) -> Path:
    folder = tmp_path / "runs" / "demo"
    folder.mkdir(parents=True)
    (folder / "best_config.yaml").write_text("dataset: demo\nseed: 0\n")
    record_search(folder, "00001", 2)
    return folder


def test_adopt_keeps_the_search_choice_and_search_puts_it_back(tmp_path: Path) -> None:
    folder = _study(tmp_path)
    assert chosen_by(folder) == (
        "chosen by: search (mean over 2 seeds per trial, one split); trial 00001"
    )
    record = adopt(
        folder, rule="mean-val", trial_id="00003", config_yaml="dataset: demo\nseed: 7\n",
        seeds=[101, 102, 103, 104, 105], mean_val=0.8,
    )  # fmt: skip
    assert (folder / "best_config.yaml").read_text() == "dataset: demo\nseed: 7\n"
    assert (folder / SEARCH_BEST).read_text() == "dataset: demo\nseed: 0\n"
    assert chosen_by(folder) == (
        "chosen by: mean val acc over seeds 101-105 (rbm-tune evaluate --select mean-val); "
        "trial 00003"
    )
    assert selection_tags(record) == {
        "rbm_tune.best_selection": record["chosen_by"],
        "rbm_tune.selected_trial_id": "00003",
    }
    # a second mean-val selection keeps the search's file, not the first selection's
    adopt(folder, rule="mean-val", trial_id="00002", config_yaml="seed: 9\n", seeds=[1, 2])
    assert (folder / SEARCH_BEST).read_text() == "dataset: demo\nseed: 0\n"
    assert read_selection(folder)["search_trial_id"] == "00001"  # type: ignore[index]
    adopt(folder, rule="search", trial_id="ignored", config_yaml="", seeds=[])
    assert (folder / "best_config.yaml").read_text() == "dataset: demo\nseed: 0\n"
    assert not (folder / SEARCH_BEST).exists()
    assert chosen_by(folder).endswith("; trial 00001")


def test_a_new_summary_drops_an_older_selection(tmp_path: Path) -> None:
    folder = _study(tmp_path)
    adopt(folder, rule="mean-val", trial_id="3", config_yaml="seed: 7\n", seeds=[1, 2])
    record_search(folder, "00004", 1)
    assert not (folder / SEARCH_BEST).exists()
    assert json.loads((folder / SELECTION_FILE).read_text())["rule"] == "search"
    assert chosen_by(folder) == "chosen by: search (single seed); trial 00004"


def test_best_prints_the_rule_as_a_yaml_comment(tmp_path: Path, capsys) -> None:
    folder = _study(tmp_path)
    adopt(folder, rule="mean-val", trial_id="3", config_yaml="dataset: demo\nseed: 7\n",
          seeds=[5, 6])  # fmt: skip
    assert main(["best", "--name", "demo", "--storage-path", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == (
        "# chosen by: mean val acc over seeds 5, 6 (rbm-tune evaluate --select mean-val); trial 3"
    )
    assert yaml.safe_load(out) == {"dataset": "demo", "seed": 7}  # still a config


def test_a_study_without_a_record_was_chosen_by_its_search(tmp_path: Path) -> None:
    assert chosen_by(tmp_path) == "chosen by: search (single seed)"


def test_select_mean_val_refuses_set_in_one_line(capsys) -> None:
    argv = ["evaluate", "--name", "x", "--select", "mean-val", "--set", "distill.lr=0.1"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rbm-tune: error: ") and "drop --set" in err[0]
