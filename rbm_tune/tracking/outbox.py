"""An ordered MLflow outbox that survives outages and driver crashes. Imports no Ray.

Every write of a study's trial runs is an operation (``start``, ``rows``, ``tags``, ``end``)
appended to the outbox and written in order. When MLflow does not answer (a server restarting,
the network), the operations wait and are retried at most every ``retry_s`` seconds while the
trials keep training; the outbox is also kept in ``pending_path`` (a JSON list, replaced
atomically), so a driver that dies during an outage, or a study that ends before MLflow is
back, loses nothing: the next driver (``--resume``) writes what is left first.

Picklable (Ray saves the study's callbacks with the Tuner): it keeps only the tracker's
settings and opens the MLflow client lazily; a pickled copy carries no pending operations
(those are in ``pending_path``) and no run ids.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rbm_tune.errors import TrackingError, first_line

__all__ = ["Outbox"]


class Outbox:
    """Ordered trial-run writes to MLflow through ``tracker`` (see the module docstring)."""

    def __init__(
        self,
        tracker: Any,
        pending_path: Path,
        *,
        log: Callable[[str], None] = print,
        retry_s: float = 10.0,
    ) -> None:
        self.tracker_args = (tracker.uri, tracker.experiment_name, tracker.study_tags)
        self._tracker = tracker
        self.pending_path = Path(pending_path)
        self.log = log
        self.retry_s = retry_s
        self.runs: dict[str, str] = {}  # trial id -> its open MLflow run
        self.pending: list[list[Any]] = []
        if self.pending_path.is_file():  # left by an outage or a crash: written first
            self.pending = json.loads(self.pending_path.read_text())
        self.down_since: float | None = None
        self.next_try = 0.0

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tracker": None, "log": print, "runs": {}, "pending": []}

    @property
    def tracker(self) -> Any:
        if self._tracker is None:
            from rbm_tune.tracking import Tracker

            uri, experiment, tags = self.tracker_args
            self._tracker = Tracker(uri, experiment, study_tags=tags)
        return self._tracker

    def send(self, *op: Any) -> None:
        """Queue one operation and write what MLflow takes now."""
        self.pending.append(list(op))
        self.flush()

    def flush(self, *, force: bool = False) -> bool:
        """Write pending operations in order; False when MLflow still does not answer."""
        if not self.pending:
            return True
        if not force and self.down_since is not None and time.monotonic() < self.next_try:
            return False
        written = 0
        while self.pending:
            try:
                self._apply(self.pending[0])
            except Exception as err:  # noqa: BLE001 (any client/server failure: keep, retry)
                if self.down_since is None:
                    self.down_since = time.monotonic()
                    first = first_line(err, 160)
                    self.log(
                        f"rbm-tune: warning: MLflow at {self.tracker_args[0]} does not answer "
                        f"({first}); trials go on, their runs are written when it is back"
                    )
                self.next_try = time.monotonic() + self.retry_s
                self._save_pending()
                return False
            self.pending.pop(0)
            written += 1
        if self.down_since is not None:
            self.log(f"rbm-tune: MLflow answers again; wrote {written} buffered update(s)")
            self.down_since = None
        self._save_pending()
        return True

    def drain(self, wait_s: float) -> None:
        """At the end of a study: retry the outbox for up to ``wait_s`` seconds.

        Raises:
            TrackingError: MLflow is still down; the outbox stays in ``pending_path``.
        """
        deadline = time.monotonic() + wait_s
        while not self.flush(force=True):
            if time.monotonic() >= deadline:
                raise TrackingError(
                    f"MLflow at {self.tracker_args[0]} stopped answering during the study; "
                    f"every trial finished and its results are safe in {self.pending_path.parent}"
                    f", and {len(self.pending)} MLflow update(s) wait in "
                    f"{self.pending_path.name}; rerun the same command with --resume once "
                    "MLflow answers, to write them"
                )
            time.sleep(min(self.retry_s, 5.0))

    def _save_pending(self) -> None:
        if self.pending:
            self.pending_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.pending_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.pending))
            os.replace(tmp, self.pending_path)
        elif self.pending_path.exists():
            self.pending_path.unlink()

    def _run_id(self, trial_id: str) -> str:
        if trial_id not in self.runs:  # an outbox left by an earlier driver: adopt its run
            self.runs[trial_id] = self.tracker.start_trial(trial_id, {}, {}, replace_partial=False)
        return self.runs[trial_id]

    def _apply(self, op: list[Any]) -> None:
        kind, trial_id, *args = op
        if kind == "start":
            params, tags, adopt, start_ms = args
            self.runs[trial_id] = self.tracker.start_trial(
                trial_id, params, tags, replace_partial=not adopt, start_time=start_ms
            )
        elif kind == "metrics":  # one step: outboxes written before "rows" existed
            metrics, step = args
            self.tracker.log_metrics(self._run_id(trial_id), metrics, step=step)
        elif kind == "rows":  # [[metrics, step], ...]: one request per 1,000 values
            self.tracker.log_metric_rows(self._run_id(trial_id), args[0])
        elif kind == "tags":
            self.tracker.set_tags(self._run_id(trial_id), args[0])
        elif kind == "end":
            self.tracker.end(self._run_id(trial_id), args[0])
            self.runs.pop(trial_id, None)  # a retried attempt gets a run of its own
