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
