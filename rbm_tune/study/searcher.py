"""Ray Tune's OptunaSearch, telling TPE which trials ASHA stopped.

Ray's ``OptunaSearch`` (Ray 2.60) ends every trial whose last result holds the metric as
COMPLETE with that last value. Under ASHA that misleads TPE: a trial ASHA stopped counts as
finished, its value the ``val_acc`` of the epoch at its rung (an early, partly trained model's)
ranked beside finished trials' best-epoch ``val_acc``. (An errored trial already ends FAIL.)

:class:`TrialSearch` ends a trial whose last result is not the trainable's ``final`` one as
PRUNED. Optuna's TPE (``optuna.samplers._tpe.sampler._split_trials``) ranks every COMPLETE trial
before any PRUNED one, and pruned trials among themselves by the last step they reported, then
by its value. For that ranking a trial's ``val_acc`` is reported at every epoch after its
pretraining switch (the held epochs included), the step being ASHA's time (``post_switch_epoch``):
not Ray's report count (a trial reports at ASHA's rungs and otherwise at most every
``study.report_every_s``, so two trials at the same epoch may have reported a different number of
times), and not the epoch counted from 1 (pretraining is searched: a trial stopped at the first
rung after 45 warm-up epochs would outrank one stopped at the second after none). A
multi-objective study reports no intermediate values (Optuna takes none), but its stopped trials
end PRUNED all the same.

:meth:`TrialSearch.add_warm_start` gives it an earlier study's trials (rbm_tune.study.warm_start)
before its first suggestion, once: the record it keeps travels in the saved state, so a restored
searcher never adds them again.

:func:`tpe_sampler` is the study's TPE: for a space with conditional parameters (``when:``, the
student family: a ``num_experts`` only MoE/RbM trials draw) Optuna's multivariate TPE with
``group=True``, which models each set of parameters drawn together on the trials that drew them;
otherwise the independent TPE every earlier study used.

Everything else (suggestions, ``points_to_evaluate``, saving and restoring the searcher's state
for ``Tuner.restore``) is OptunaSearch's own. Imported only by the driver: trial processes never
load Optuna's searcher.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from rbm_tune.metrics import EPOCH, FINAL, HELD_EPOCHS, POST_SWITCH_EPOCH
from rbm_tune.study._compat import completed_trials, optuna_study, optuna_trials

__all__ = ["TrialSearch", "tpe_sampler"]

logger = logging.getLogger(__name__)


def tpe_sampler(space: Any, seed: int | None) -> optuna.samplers.TPESampler:
    """TPE for ``space``: grouped multivariate where some parameter is conditional."""
    if not getattr(space, "conditional", False):
        return optuna.samplers.TPESampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)


class TrialSearch(OptunaSearch):
    """OptunaSearch that ends ASHA-stopped trials PRUNED (see the module docstring)."""

    def add_warm_start(
        self, trials: list[Any], first: list[dict[str, Any]], record: dict[str, Any]
    ) -> bool:
        """Add ``trials`` (finished ``FrozenTrial``s) to the Optuna study and enqueue the
        parameter sets ``first`` as the next trials, once; False if already done (a searcher
        restored from its saved state, which holds ``record``)."""
        if self.__dict__.get("warm_start"):
            return False
        study = optuna_study(self)
        for trial in trials:
            study.add_trial(trial)
        for params in first:
            study.enqueue_trial(params)
        self.warm_start = dict(record)  # saved with the searcher's __dict__
        return True

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if isinstance(self.metric, list) or trial_id in completed_trials(self):
            return super().on_trial_result(trial_id, result)
        if result.get(FINAL) or EPOCH not in result:
            return None  # a finished trial's val_acc is its best epoch's, not this epoch's
        # ASHA's time: epochs after the pretraining switch (the same offset for held rows)
        offset = int(result[EPOCH]) - int(result.get(POST_SWITCH_EPOCH, result[EPOCH]))
        # the last step reported per trial (saved with the searcher's __dict__; older state
        # lacks it)
        last = self.__dict__.setdefault("_last_step", {})
        for row in (*(result.get(HELD_EPOCHS) or ()), result):
            epoch, value = row.get(EPOCH), row.get(self.metric)
            if epoch is None or value is None:
                continue
            step = int(epoch) - offset
            if step <= last.get(trial_id, 0):  # the warm-up, or reported before
                continue
            optuna_trials(self)[trial_id].report(float(value), step)
            last[trial_id] = step
        return None

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        stopped = result is not None and not error and not result.get(FINAL)
        done, live = completed_trials(self), optuna_trials(self)
        if stopped and trial_id not in done and trial_id in live:
            # Ray's controller passes the result ASHA stopped the trial on here only, not to
            # on_trial_result: its epochs (the held ones too) are the trial's last
            assert result is not None
            try:
                self.on_trial_result(trial_id, result)
                optuna_study(self).tell(live[trial_id], state=TrialState.PRUNED)
            except Exception as exc:  # noqa: BLE001 (as OptunaSearch: never fail the stop)
                logger.warning("rbm-tune: Optuna could not record trial %s: %s", trial_id, exc)
            done.add(trial_id)
        else:
            super().on_trial_complete(trial_id, result, error)
        self.__dict__.get("_last_step", {}).pop(trial_id, None)
