"""rbm_tune.study._compat: every private Ray Tune / Optuna name rbm-tune uses, exercised on the
installed (pinned) packages, so an upgrade that moves one fails here and not mid-study."""

from __future__ import annotations

import optuna
import pytest
import ray
from ray.tune.schedulers import ASHAScheduler

from rbm_tune.errors import RbmTuneError
from rbm_tune.search_space import SHIPPED_DIR, load_space
from rbm_tune.study import _compat
from rbm_tune.study.searcher import TrialSearch
from rbm_tune.study.trainable import rung_epochs


def test_the_installed_ray_and_optuna_are_the_pinned_ones() -> None:
    assert _compat.check_versions() == _compat.PINNED
    pins = open(SHIPPED_DIR.parent.parent / "pyproject.toml").read()
    for name, version in _compat.PINNED.items():
        assert f"{name}" in pins and f"=={version}" in pins, (name, version)


def test_a_wrong_version_is_one_line_naming_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(optuna, "__version__", "9.9.9")
    with pytest.raises(RbmTuneError) as err:
        _compat.check_versions()
    assert "optuna==5.0.0 (found 9.9.9)" in str(err.value) and "pip install" in str(err.value)
    assert "\n" not in str(err.value)


def test_the_driver_cluster_flag_is_the_one_ray_reads() -> None:
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER
    try:
        for value in (True, False):
            _compat.set_driver_cluster_flag(value)
            assert ray_constants.ENABLE_RAY_CLUSTER is value
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def test_a_tuner_s_callbacks_and_actor_reuse_can_be_replaced(tmp_path: object) -> None:
    """What a resumed study changes on a restored Tuner (a fresh one has the same insides);
    building a Tuner starts no Ray."""
    from ray import tune

    tuner = tune.Tuner(
        lambda config: None,
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), callbacks=[]),
    )
    callback = tune.Callback()
    _compat.replace_restored_callbacks(tuner, [callback])
    _compat.disable_actor_reuse(tuner)
    assert tuner._local_tuner.get_run_config().callbacks == [callback]  # noqa: SLF001
    assert tuner._local_tuner._tune_config.reuse_actors is False  # noqa: SLF001
    assert not ray.is_initialized()


def test_optuna_search_s_trials_study_and_completed_set() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(SHIPPED_DIR / "demo.yaml")
    searcher = TrialSearch(
        space=space.define_by_run,
        metric="val_acc",
        mode="max",
        sampler=optuna.samplers.TPESampler(seed=0),
    )
    assert searcher.suggest("a") is not None
    live = _compat.optuna_trials(searcher)
    assert isinstance(live["a"], optuna.trial.Trial)
    study = _compat.optuna_study(searcher)
    assert isinstance(study, optuna.Study) and len(study.trials) == 1
    assert "a" not in _compat.completed_trials(searcher)
    searcher.on_trial_complete("a", {"val_acc": 0.5, "final": 1, "epoch": 3})
    assert "a" in _compat.completed_trials(searcher)
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE


@pytest.mark.parametrize(
    ("grace", "factor", "max_t"), [(20, 2, 101), (50, 1.1, 60), (4, 2, 31), (10, 3, 551)]
)
def test_asha_rungs_are_the_epochs_trials_report_at(grace: int, factor: float, max_t: int) -> None:
    asha = ASHAScheduler(
        time_attr="post_switch_epoch",
        metric="val_acc",
        mode="max",
        max_t=max_t,
        grace_period=grace,
        reduction_factor=factor,
    )
    import math

    rungs = _compat.asha_rungs(asha)
    assert rungs == sorted(rungs) and rungs[0] == grace
    assert {math.ceil(r) for r in rungs} == rung_epochs(grace, factor, max_t)


def test_distribution_contains_reads_optunas_bounds_steps_and_choices() -> None:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    ints = IntDistribution(2, 8, step=2)
    assert _compat.distribution_contains(ints, 4)
    assert not _compat.distribution_contains(ints, 5)  # off the step grid
    assert not _compat.distribution_contains(ints, 10)
    floats = FloatDistribution(1e-4, 1e-1, log=True)
    assert _compat.distribution_contains(floats, 1e-2)
    assert not _compat.distribution_contains(floats, 0.5)
    choices = CategoricalDistribution(["mlp", "rbm"])
    assert _compat.distribution_contains(choices, "rbm")
    assert not _compat.distribution_contains(choices, "moe")  # not a choice: False, no raise


def test_optuna_study_takes_added_and_enqueued_trials_before_the_first_suggestion() -> None:
    from optuna.trial import FixedTrial, TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(SHIPPED_DIR / "demo.yaml")
    searcher = TrialSearch(space=space.define_by_run, metric="val_acc", mode="max")
    fixed = FixedTrial(space.default_params())
    space.define_by_run(fixed)
    study = _compat.optuna_study(searcher)
    study.add_trial(create_trial(params=fixed.params, distributions=fixed.distributions, value=1))
    study.enqueue_trial(fixed.params)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.WAITING]
    config = searcher.suggest("a")
    assert config is not None and {k: config[k] for k in fixed.params} == fixed.params
