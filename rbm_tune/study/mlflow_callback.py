"""The driver-side Ray Tune callback that mirrors every trial into a nested MLflow run.

Trial processes never talk to MLflow: this callback turns Ray Tune's trial events into
operations of a :class:`~rbm_tune.tracking.outbox.Outbox` (ordered, kept on disk through an
outage or a driver crash). A trial attempt that fails and is retried (``study.max_failures``)
ends as a FAILED run; the retry gets a run of its own. A trial that was skipped for memory is
tagged ``rbm_tune.skipped`` and logs no value. A trial run's params are the space's YAML names
with the values the trial trained with (:func:`~rbm_tune.space.params.effective_values`), less
the keys its model ignores where the study searches ``student.model`` (an MLP's ``momentum``:
:func:`~rbm_tune.space.conditions.ignored_by_model`); its
``best_val_acc`` ends at the trial's objective (:data:`~rbm_tune.metrics.OBJECTIVE`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from rbm_tune.metrics import (
    BEST_EPOCH,
    BEST_VAL_ACC,
    EPOCH,
    EPOCH_SECONDS,
    FINAL,
    FINAL_VAL_ACC,
    HELD_EPOCHS,
    INFERENCE_MS,
    IS_PRETRAINING,
    MEMORY_ESTIMATE,
    MEMORY_SHARE,
    NODE_ID,
    NUM_PARAMS,
    RAN_ON_CUDA,
    SEEDS,
    SKIPPED,
    SKIPPED_BECAUSE,
    TEST_ACC,
    TEST_ACC_ORACLE,
    TEST_ACC_STD,
    TRAIN_ACC,
    TRAIN_LOSS,
    VAL_ACC,
    VAL_ACC_STD,
)
from rbm_tune.space.conditions import ignored_by_model
from rbm_tune.space.params import effective_values
from rbm_tune.testing import faults
from rbm_tune.tracking.outbox import Outbox

__all__ = ["FINAL_STEP", "PENDING_MLFLOW", "MlflowTrials"]

PENDING_MLFLOW = "mlflow-pending.json"  # the outbox, in the study folder

# what MLflow gets from every epoch, and once from a finished trial's final result
LOGGED = (
    TRAIN_LOSS,
    TRAIN_ACC,
    VAL_ACC,
    VAL_ACC_STD,  # study.seeds_per_trial > 1 only: the spread of the students' val_acc
    BEST_VAL_ACC,
    IS_PRETRAINING,
    EPOCH_SECONDS,
    NUM_PARAMS,  # per epoch only in a multi-objective study (its cost objectives)
    INFERENCE_MS,
)
FINAL_LOGGED = (
    VAL_ACC,  # logged as FINAL_VAL_ACC: the best epoch's, beside the per-epoch curve
    TEST_ACC,
    TEST_ACC_ORACLE,
    BEST_EPOCH,
    NUM_PARAMS,
    INFERENCE_MS,
    RAN_ON_CUDA,
)
# in a final result of a study with seeds_per_trial > 1 only
FINAL_SEEDS_LOGGED = (VAL_ACC_STD, TEST_ACC_STD, SEEDS)


def logged(metrics: dict[str, Any]) -> dict[str, Any]:
    """The per-epoch metrics MLflow gets from one epoch's report."""
    return {k: metrics[k] for k in LOGGED if k in metrics}


# the step of a finished trial's end-of-trial values: MLflow's UI draws a metric whose latest step
# is 0 as a bar chart (one bar per run, side by side on the compare page) and one whose latest
# step is >= 1 as a line chart, where a value logged once is a lone dot
FINAL_STEP = 0


def final_logged(result: dict[str, Any]) -> dict[str, Any]:
    """What MLflow gets from a finished trial's final result."""
    out = {FINAL_VAL_ACC if k == VAL_ACC else k: result[k] for k in FINAL_LOGGED}
    return {**out, **{k: result[k] for k in FINAL_SEEDS_LOGGED if k in result}}


SKIP_REASONS = {
    "memory": "its estimated memory exceeds its share; not trained",
    "oom": "it ran out of memory while training; not retried",
    "no_cuda": "Ray gave it a GPU but its process has no CUDA; not retried",
}


def skip_tags(result: dict[str, Any]) -> dict[str, str]:
    """MLflow tags of a trial that was not trained, or ran out of memory."""
    from rbm_tune.memory import format_bytes

    kind = str(result[SKIPPED])
    why = result.get(SKIPPED_BECAUSE) or SKIP_REASONS.get(kind, kind)
    tags = {"rbm_tune.skipped": kind, "rbm_tune.skipped_because": str(why)}
    if kind in ("memory", "oom"):
        need, share = result.get(MEMORY_ESTIMATE, 0), result.get(MEMORY_SHARE, 0)
        tags["rbm_tune.memory_estimate"] = format_bytes(need)
        tags["rbm_tune.memory_share"] = format_bytes(share)
    return tags


class MlflowTrials(tune.Callback):
    """Ray Tune callback writing each trial to MLflow through an outbox (module docstring).

    Picklable (Ray saves callbacks with the Tuner); a restored study is given a fresh one.
    """

    def __init__(
        self,
        tracker: Any,
        fixed: dict[str, Any],
        teacher_digest: str,
        pending_path: Path,
        *,
        log: Callable[[str], None] = print,
        retry_s: float = 10.0,
    ) -> None:
        self.outbox = Outbox(tracker, pending_path, log=log, retry_s=retry_s)
        self.fixed = dict(fixed)
        self.teacher_digest = teacher_digest
        self.started: set[str] = set()
        self.finished: set[str] = set()
        self.skipped: set[str] = set()
        self.start_ms: dict[str, int] = {}
        self.results = 0
        self.completed = 0

    def __getstate__(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "started": set(),
            "finished": set(),
            "skipped": set(),
            "start_ms": {},
        }

    def drain(self, wait_s: float) -> None:
        """At the end of a study: write what the outbox holds (see ``Outbox.drain``)."""
        self.outbox.drain(wait_s)

    # -- Ray Tune's hooks ----------------------------------------------------------------
    def _ensure_started(self, trial: Any, *, adopt: bool = False, failed: bool = False) -> None:
        """Open the trial's run; ``adopt``: keep the run an earlier driver left unfinished.

        ``failed``: opened by the failure of an attempt that never reported (trials hold
        epochs back between reports); Ray Tune has already counted that failure in
        ``num_failures``, so the attempt is ``num_failures``, not ``num_failures + 1``.
        """
        tid = trial.trial_id
        if tid in self.started:
            return
        self.started.add(tid)
        failures = getattr(trial, "num_failures", 0)
        tags = {
            "rbm_tune.teacher_key": self.teacher_digest,
            "rbm_tune.trial_name": str(trial),
            "rbm_tune.attempt": str(failures if failed else failures + 1),
        }
        start_ms = self.start_ms.pop(tid, None)
        # the YAML names with the values the trial trained with (no ``.is_zero`` switches);
        # a searched student family: not the keys the trial's model ignores
        drawn = effective_values(trial.config)
        ignored = ignored_by_model(drawn)
        params = {k: v for k, v in {**self.fixed, **drawn}.items() if k not in ignored}
        self.outbox.send("start", tid, params, tags, adopt, start_ms)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # the run opens at the first result (a trial restored finished adopts its old run),
        # but starts when the trial did
        self.start_ms[trial.trial_id] = int(time.time() * 1000)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        # a trial whose first result here is its final one finished under a driver that died
        # before recording it (the trainable hands back the stored result): its run is complete
        self._ensure_started(trial, adopt=bool(result.get(FINAL)))
        tid, step = trial.trial_id, int(result[EPOCH])
        # the epochs the trial held back, then this result's own: one MLflow request
        rows = [[logged(row), int(row[EPOCH])] for row in result.get(HELD_EPOCHS) or ()]
        if result.get(SKIPPED):  # not trained (memory), or ran out of memory: tags, no value
            self.skipped.add(tid)
            if rows:
                self.outbox.send("rows", tid, rows)
            self.outbox.send("tags", tid, skip_tags(result))
            self.results += 1
            return
        if result.get(FINAL):
            rows.append([final_logged(result), FINAL_STEP])
            self.finished.add(tid)
        else:
            rows.append([logged(result), step])
        self.outbox.send("rows", tid, rows)
        self.results += 1
        faults.fire("driver_result", self.results)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ensure_started(trial)
        tid = trial.trial_id
        stopped = tid not in self.finished and tid not in self.skipped
        tags = {"rbm_tune.asha_stopped": str(stopped).lower()}
        node = (getattr(trial, "last_result", None) or {}).get(NODE_ID)
        if node:
            tags["rbm_tune.node_id"] = str(node)
        self.outbox.send("tags", tid, tags)
        self.outbox.send("end", tid, "FINISHED")
        self.completed += 1
        faults.fire("driver_complete", self.completed)

    def _failed(self, trial: Any, why: str) -> None:
        self._ensure_started(trial, failed=True)
        error = getattr(trial, "error_file", None) or ""
        self.outbox.send(
            "tags", trial.trial_id, {"rbm_tune.ended_by": why, "rbm_tune.error_file": error}
        )
        self.outbox.send("end", trial.trial_id, "FAILED")
        self.started.discard(trial.trial_id)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._failed(trial, "the attempt failed; Ray Tune retries the trial")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._failed(trial, "the trial failed and has no retries left (study.max_failures)")
