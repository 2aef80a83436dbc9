"""The study's searcher (rbm_tune/study/searcher.py): Ray's OptunaSearch driven by hand, as
Ray Tune's controller drives it (suggest, results, completion), on the shipped demo space with a
real Optuna study. No Ray cluster: a searcher is plain Python. A real study's searcher state is
checked in tests/integration/test_tune_end_to_end.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch
from ray.tune.utils import flatten_dict

from rbm_tune.metrics import FINAL, HELD_EPOCHS, POST_SWITCH_EPOCH
from rbm_tune.search_space import SHIPPED_DIR, load_space
from rbm_tune.study.searcher import TrialSearch
from rbm_tune.study.trainable import HeldEpochs

optuna.logging.set_verbosity(optuna.logging.WARNING)


PRETRAIN = 2  # epochs before the switch: ASHA's time (post_switch_epoch) is epoch - 2


def _searcher(cls: type = TrialSearch, startup: int = 10) -> Any:
    space = load_space(SHIPPED_DIR / "demo.yaml")
    return cls(
        space=space.define_by_run,
        metric="val_acc",
        mode="max",
        sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=startup),
        points_to_evaluate=[space.default_params()],
    )


def _epoch(epoch: int, val: float) -> dict[str, float]:
    return {"epoch": epoch, "val_acc": val, "train_loss": 1.0 / epoch}


def _report(epoch: int, val: float, held: list[tuple[int, float]], **more: Any) -> dict:
    """One result as _trial_fn sends it and Ray Tune's controller hands it on (flattened)."""
    rows = HeldEpochs([_epoch(e, v) for e, v in held])
    out = {**_epoch(epoch, val), POST_SWITCH_EPOCH: epoch - PRETRAIN, HELD_EPOCHS: rows, **more}
    return flatten_dict({**out, "config": {"student": {"k": 2}}})


def _drive(searcher: Any) -> None:
    """Three trials as Ray Tune runs them: one ASHA stops, one finishes, one errors."""
    for tid in ("stopped", "finished", "errored"):
        assert searcher.suggest(tid) is not None
    # reports at epochs 3 (holding 1-2, the warm-up) and 5 (holding 4), as _trial_fn sends them
    first = _report(3, 0.5, [(1, 0.3), (2, 0.4)], training_iteration=1)
    second = _report(5, 0.6, [(4, 0.55)], training_iteration=2)
    for tid in ("stopped", "finished"):
        searcher.on_trial_result(tid, first)
    searcher.on_trial_result("finished", second)
    # ASHA stopped "stopped" at its rung on its second result: Ray's controller passes that
    # result (marked done) to on_trial_complete only, not to on_trial_result
    searcher.on_trial_complete("stopped", result={**second, "done": True})
    # "finished" ends with _trial_fn's final result: val_acc at the best-validation epoch
    final = _report(9, 0.7, [], training_iteration=3, **{FINAL: 1, "test_acc": 0.65})
    searcher.on_trial_result("finished", final)
    searcher.on_trial_complete("finished", result=final)
    searcher.on_trial_complete("errored", error=True)


def _states(searcher: Any) -> dict[str, Any]:
    trials = searcher._ot_study.trials
    return {tid: trials[t.number] for tid, t in searcher._ot_trials.items()}


def test_asha_stopped_trial_is_pruned_with_its_epochs() -> None:
    searcher = _searcher()
    _drive(searcher)
    got = _states(searcher)
    stopped, finished, errored = got["stopped"], got["finished"], got["errored"]
    assert stopped.state == TrialState.PRUNED  # Optuna keeps its last epoch's value as its value
    # every epoch after the switch at ASHA's time, held ones included; not Ray's report count
    assert stopped.intermediate_values == {1: 0.5, 2: 0.55, 3: 0.6}
    assert finished.state == TrialState.COMPLETE and finished.values == [0.7]
    # its final result (best epoch's val_acc) is no intermediate value
    assert finished.intermediate_values == {1: 0.5, 2: 0.55, 3: 0.6}
    assert errored.state == TrialState.FAIL


def test_tpe_ranks_finished_trials_above_pruned_ones() -> None:
    """With TPE past its random start-up, a trial ASHA stopped with a higher val_acc than every
    finished trial still falls in the worse group (as Optuna ranks pruned trials)."""
    from optuna.samplers._tpe.sampler import _split_trials

    searcher = _searcher(startup=1)
    ids = [f"t{i}" for i in range(6)]
    for tid in ids:
        assert searcher.suggest(tid) is not None
    for i, tid in enumerate(ids[:3]):  # finished, val_acc 0.60-0.62
        searcher.on_trial_result(tid, _report(5, 0.5, []))
        searcher.on_trial_complete(tid, result=_report(9, 0.6 + i / 100, [], **{FINAL: 1}))
    for i, tid in enumerate(ids[3:]):  # stopped at post-switch epochs 3, 6, 9 with 0.9
        searcher.on_trial_complete(tid, result={**_report(3 * i + 5, 0.9, []), "done": True})
    study = searcher._ot_study
    below, above = _split_trials(study, study.trials, n_below=4)
    numbers = {tid: t.number for tid, t in searcher._ot_trials.items()}
    # the three finished, then the pruned one that got furthest
    assert {t.number for t in below} == {numbers[t] for t in ("t0", "t1", "t2", "t5")}
    assert searcher.suggest("next") is not None


def test_stock_optuna_search_counts_a_stopped_trial_as_complete() -> None:
    """Why TrialSearch exists: Ray's OptunaSearch tells TPE the rung's val_acc as a result."""
    searcher = _searcher(OptunaSearch)
    _drive(searcher)
    stopped = _states(searcher)["stopped"]
    assert stopped.state == TrialState.COMPLETE and stopped.values == [0.6]
    assert stopped.intermediate_values == {1: 0.5}  # steps are report counts, the last lost


def test_state_round_trip_keeps_reported_epochs(tmp_path: Path) -> None:
    """Tuner.restore restores the searcher from save(): a resumed trial reports no epoch twice."""
    searcher = _searcher()
    assert searcher.suggest("t") is not None
    searcher.on_trial_result("t", _report(5, 0.5, [(4, 0.4)]))
    searcher.save(str(tmp_path / "searcher.pkl"))
    again = _searcher()
    again.restore(str(tmp_path / "searcher.pkl"))
    # a restarted trial re-reports epochs it had reported before: kept once, at their values
    again.on_trial_result("t", _report(6, 0.45, [(5, 0.1)]))
    again.on_trial_complete("t", result=_report(6, 0.45, []))
    (t,) = _states(again).values()
    assert t.state == TrialState.PRUNED
    assert t.intermediate_values == {2: 0.4, 3: 0.5, 4: 0.45}


def test_multi_objective_stopped_trial_is_pruned() -> None:
    space = load_space(SHIPPED_DIR / "demo.yaml")
    searcher = TrialSearch(
        space=space.define_by_run,
        metric=["val_acc", "num_params"],
        mode=["max", "min"],
        sampler=optuna.samplers.TPESampler(seed=0),
    )
    for tid in ("a", "b"):
        assert searcher.suggest(tid) is not None
        searcher.on_trial_result(tid, _report(3, 0.5, [], num_params=100))
    searcher.on_trial_complete("a", result=_report(4, 0.5, [], num_params=100))
    searcher.on_trial_complete("b", result=_report(9, 0.7, [], num_params=100, **{FINAL: 1}))
    got = _states(searcher)
    assert got["a"].state == TrialState.PRUNED
    assert got["b"].state == TrialState.COMPLETE and got["b"].values == [0.7, 100]
    assert searcher.suggest("c") is not None
