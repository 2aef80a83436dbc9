"""Best-trial ranking: ties are broken by the earliest trial, whatever the grid's order."""

from rbm_tune.study.summary import rank_trials


def _row(tid: str, acc: float) -> dict:
    return {"trial_id": tid, "val_acc": acc, "metrics": {"val_acc": acc}}


def test_ties_go_to_the_earliest_trial() -> None:
    done = [_row("ab_00002", 0.9), _row("ab_00000", 0.8), _row("ab_00001", 0.9)]
    ranked = rank_trials(done, "val_acc", "max")
    assert [r["trial_id"] for r in ranked] == ["ab_00001", "ab_00002", "ab_00000"]
    ranked = rank_trials(done, "val_acc", "min")
    assert [r["trial_id"] for r in ranked] == ["ab_00000", "ab_00001", "ab_00002"]


def test_a_trial_error_keeps_ray_s_exit_detail_in_one_line() -> None:
    """An actor killed at start says why only in Ray's 'Worker exit detail' line: the study's
    'no trial reported a result' line must carry it, not just 'The actor died unexpectedly'."""
    from ray.exceptions import RayError

    from rbm_tune.study.summary import error_line

    text = (
        "The actor died unexpectedly before finishing this task.\n"
        "\tclass_name: ImplicitFunc\n\tactor_id: 1a2b\n\tpid: 42\n"
        "The actor is dead because its worker process has died. Worker exit type: "
        "NODE_OUT_OF_MEMORY Worker exit detail: Task was killed due to the node running low "
        "on memory.\n"
    )
    line = error_line(RayError(text))
    assert "\n" not in line
    assert line.startswith("The actor died unexpectedly before finishing this task.")
    assert "killed due to the node running low on memory" in line
    assert error_line(ValueError("bad\nsecond")) == "bad"
    assert error_line(RuntimeError("")) == "RuntimeError"
    assert len(error_line(RuntimeError("x" * 2000))) == 400


def test_ties_go_to_the_trial_created_first_not_the_smallest_random_id() -> None:
    """Ray 2.60's trial ids are random hex: the creation order is the index in the trial's
    folder name, and both the summary's ranking and the console's best-so-far follow it."""
    from rbm_tune.study.console import best_of
    from rbm_tune.study.rows import _creation_index, trial_order

    assert _creation_index("/r/demo/_trial_fn_f0cf3c94_12_student_k=2_2026-12-05_09-23-20") == 12
    assert _creation_index("/r/demo/_trial_fn_bdce1740_1") == 1
    assert _creation_index("/r/demo/other") is None and _creation_index(None) is None
    rows = [
        {"trial_id": "0aaaaaaa", "order": 3, "metrics": {"best_val_acc": 0.77}, "val_acc": 0.77},
        {"trial_id": "ffffffff", "order": 1, "metrics": {"best_val_acc": 0.77}, "val_acc": 0.77},
        {"trial_id": "11111111", "order": 2, "metrics": {"best_val_acc": 0.70}, "val_acc": 0.70},
    ]
    assert [r["trial_id"] for r in sorted(rows, key=trial_order)] == [
        "ffffffff", "11111111", "0aaaaaaa"
    ]  # fmt: skip
    assert [r["trial_id"] for r in rank_trials(rows, "val_acc", "max")][:2] == [
        "ffffffff", "0aaaaaaa"
    ]  # fmt: skip
    # the console gets the trials in creation order: ties to the first of them
    ended = [("ffffffff", "finished", 0.77), ("0aaaaaaa", "finished", 0.77)]
    assert best_of(ended, "max").trial_id == "ffffffff"
    assert best_of(list(reversed(ended)), "max").trial_id == "0aaaaaaa"
