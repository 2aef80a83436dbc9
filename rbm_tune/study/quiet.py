"""Quiet libraries: a study without ``--verbose`` shows none of Ray Tune's or Optuna's routine
output (:func:`quiet_libraries`, re-exported by :mod:`rbm_tune.study.console`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["QUIET_ENV", "RAY_LOGGERS", "quiet_libraries"]

# Ray Tune's settings for a study without --verbose (a user's own values are kept): its legacy
# output engine, silent at verbose=0 (the new one prints tables and a TensorBoard hint even
# then), and no traceback per failed trial attempt (the console prints a line instead)
QUIET_ENV = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_PRINT_ALL_TRIAL_ERRORS": "0"}
# Ray loggers whose routine warnings a study does not show without --verbose (experiment-state
# snapshot and checkpoint-sync notices, auth-token hints): a study's errors come as its own lines
RAY_LOGGERS = ("ray.tune", "ray.train", "ray.air", "ray._private.auth", "ray.util.annotations")


@contextmanager
def quiet_libraries(enabled: bool = True) -> Iterator[None]:
    """Inside the block, silence the libraries' routine output (a study without ``--verbose``);
    everything is as it was afterwards (a study may run inside another program).

    Ray Tune's new output engine prints its configuration table, a TensorBoard hint and a final
    trial table even at ``verbose=0``; with ``RAY_AIR_NEW_OUTPUT=0`` the legacy engine runs,
    which at ``verbose=0`` prints nothing (:data:`QUIET_ENV`, a user's own values kept).
    Optuna's INFO lines ("A new study created in memory ...") and the routine warnings of Ray's
    loggers (:data:`RAY_LOGGERS`) are lowered to errors.
    """
    if not enabled:
        yield
        return
    import optuna

    env = {name: os.environ.get(name) for name in QUIET_ENV}
    verbosity = optuna.logging.get_verbosity()
    levels = {name: logging.getLogger(name).level for name in RAY_LOGGERS}
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in RAY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    summary = logging.getLogger("ray.tune.tune")
    summary.addFilter(_no_incomplete_trials)
    try:
        yield
    finally:
        for key, before in env.items():
            if before is None:
                os.environ.pop(key, None)
        optuna.logging.set_verbosity(verbosity)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        summary.removeFilter(_no_incomplete_trials)


def _no_incomplete_trials(record: logging.LogRecord) -> bool:
    """Drop Ray Tune's closing "Trials did not complete: [<trial names>]" error: the console
    printed each errored trial, and the study's summary counts them."""
    return record.msg != "Trials did not complete: %s"
