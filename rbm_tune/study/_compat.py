"""Every use of a private Ray Tune / Optuna name, in one place, for the pinned versions.

Each function below reaches into an internal that has no public equivalent in Ray 2.60 /
Optuna 5.0 (``pyproject.toml`` pins both exactly). :func:`check_versions` runs before a study
starts and tests/test_compat.py exercises every function against the installed packages, so an
upgrade that moves one of these internals fails there, not in the middle of a study.

- :func:`set_driver_cluster_flag`: ``ray._private.ray_constants.ENABLE_RAY_CLUSTER``, read once
  when ``ray`` is imported (rbm_tune.study.ray_session._loopback_only says why).
- :func:`replace_restored_callbacks` / :func:`disable_actor_reuse`: a restored ``Tuner`` keeps
  the callbacks and ``reuse_actors`` it was pickled with; ``Tuner.restore`` takes neither.
- :func:`optuna_trials`, :func:`optuna_study`, :func:`completed_trials`: the Optuna trial of
  each Ray trial that ``OptunaSearch`` keeps (rbm_tune.study.searcher reports ASHA's rungs and
  ends stopped trials PRUNED through them, and gives a warm-started study's Optuna study the
  earlier trials, ``add_trial`` / ``enqueue_trial``, through :func:`optuna_study`).
- :func:`distribution_contains`: whether a value lies in an Optuna distribution
  (``BaseDistribution._contains``; rbm_tune.study.warm_start keeps an earlier trial only where
  its values fit the new space).
- :func:`asha_rungs`: the rung milestones ASHA's one bracket uses (rbm_tune.study.trainable
  reports at exactly these epochs; ``rung_epochs`` restates Ray's formula and the test checks
  it against this).
"""

from __future__ import annotations

from typing import Any

from rbm_tune.errors import RbmTuneError

__all__ = [
    "PINNED",
    "asha_rungs",
    "check_versions",
    "completed_trials",
    "disable_actor_reuse",
    "distribution_contains",
    "optuna_study",
    "optuna_trials",
    "replace_restored_callbacks",
    "set_driver_cluster_flag",
]

# the versions these internals were read on (pyproject.toml pins the same)
PINNED = {"ray": "2.60.0", "optuna": "5.0.0"}


def check_versions() -> dict[str, str]:
    """The installed versions of Ray and Optuna.

    Raises:
        RbmTuneError: either is not the pinned one (an install that ignored
            ``pyproject.toml``: the internals used here may have moved).
    """
    import optuna
    import ray

    found = {"ray": ray.__version__, "optuna": optuna.__version__}
    wrong = {k: v for k, v in found.items() if v != PINNED[k]}
    if wrong:
        raise RbmTuneError(
            "rbm-tune relies on internals of "
            + ", ".join(f"{k}=={PINNED[k]} (found {v})" for k, v in wrong.items())
            + "; reinstall with pip install -e . to get the pinned versions"
        )
    return found


def set_driver_cluster_flag(enabled: bool) -> None:
    """Set this driver's copy of ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` (read at import)."""
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = enabled


def replace_restored_callbacks(tuner: Any, callbacks: list[Any]) -> None:
    """Give a ``Tuner.restore``-d tuner fresh callbacks (the pickled ones hold no live state)."""
    tuner._local_tuner.get_run_config().callbacks = callbacks  # noqa: SLF001


def disable_actor_reuse(tuner: Any) -> None:
    """Turn ``reuse_actors`` off on a restored tuner (its pickled TuneConfig had it on)."""
    tuner._local_tuner._tune_config.reuse_actors = False  # noqa: SLF001


def optuna_trials(searcher: Any) -> dict[str, Any]:
    """``OptunaSearch``'s Ray trial id -> live ``optuna.Trial``."""
    return searcher._ot_trials  # noqa: SLF001


def optuna_study(searcher: Any) -> Any:
    """``OptunaSearch``'s ``optuna.Study``."""
    return searcher._ot_study  # noqa: SLF001


def completed_trials(searcher: Any) -> set[str]:
    """The Ray trial ids ``OptunaSearch`` has already told Optuna about."""
    return searcher._completed_trials  # noqa: SLF001


def asha_rungs(scheduler: Any) -> list[float]:
    """The milestones of an ``ASHAScheduler``'s (only) bracket, smallest first."""
    return sorted(float(m) for m, _ in scheduler._brackets[0]._rungs)  # noqa: SLF001


def distribution_contains(distribution: Any, value: Any) -> bool:
    """Whether ``value`` lies in the Optuna ``distribution`` (a step grid, bounds, choices)."""
    try:
        return bool(distribution._contains(distribution.to_internal_repr(value)))  # noqa: SLF001
    except (ValueError, TypeError):
        return False
