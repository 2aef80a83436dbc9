"""A study's compact console: one progress view, one line per ended trial, each warning once.

By default a study prints no output of Ray Tune's own (no tables, result boxes or TensorBoard
hint: :func:`quiet_libraries`, from :mod:`rbm_tune.study.quiet`, turns Ray Tune's output
engine and Optuna's INFO lines off), and
:class:`StudyConsole`, a Ray Tune ``Callback``, prints instead:

* a line per ended trial, ``[3/8] trial 5c7e1a2b finished: val_acc 0.7612 (epoch 27)``
  (``pruned`` when ASHA stopped it, ``skipped`` when it was not trained for memory, ``errored``
  when it failed with no retries left);
* a status line, ``3/8 done (2 finished, 1 pruned), 2 running | best val_acc 0.7733 (trial
  0c3c1091) | 0:42 elapsed, ~1:10 left``: on a terminal redrawn in place (a carriage
  return, no escape codes), elsewhere (a pipe, a file) printed as a plain line at most every
  :data:`HEARTBEAT_S` seconds, and once more when the search ends;
* the ``rbm-tune: warning: ...`` lines of the driver and of the trials (a trial hands its
  warning to the driver in its results, :data:`rbm_tune.metrics.WARNING`), each once.

Trials are named by Ray Tune's trial id, as in the summary table, ``results.csv`` and MLflow's
``rbm_tune.trial_id`` tag (their folders keep Ray's names: ``--resume`` depends on them).
``rbm-tune --verbose`` keeps Ray Tune's own output as well. The formatting is pure functions
(:func:`status_line`, :func:`trial_line`, :func:`format_duration`), tested on their own. The
summary after the search: ``rbm_tune.study.report``.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TextIO

from ray import tune

from rbm_tune.metrics import EPOCH, FINAL, SKIPPED, VAL_ACC, WARNING
from rbm_tune.study.quiet import quiet_libraries

__all__ = [
    "HEARTBEAT_S",
    "Counts",
    "StudyConsole",
    "classify",
    "format_duration",
    "quiet_libraries",
    "status_line",
    "trial_line",
    "warning_key",
]

HEARTBEAT_S = 30.0  # a plain status line at most this often when the output is not a terminal
REDRAW_S = 0.5  # a terminal's status line at most this often


def format_duration(seconds: float) -> str:
    """``0:07``, ``12:34``, ``1:02:03``: minutes and seconds, hours when there are any."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def classify(status: str, last_result: dict[str, Any] | None) -> str:
    """A trial's state for the console: ``finished``, ``pruned`` (ASHA stopped it),
    ``skipped`` (not trained for memory, or ran out of it), ``errored``, ``running`` or
    ``pending``, from Ray Tune's status and the trial's last result."""
    if status == "ERROR":
        return "errored"
    if status == "TERMINATED":
        result = last_result or {}
        if result.get(SKIPPED):
            return "skipped"
        return "finished" if result.get(FINAL) else "pruned"
    return "running" if status == "RUNNING" else "pending"


@dataclass(frozen=True)
class Counts:
    """How many trials are in each :func:`classify` state."""

    finished: int = 0
    pruned: int = 0
    skipped: int = 0
    errored: int = 0
    running: int = 0
    pending: int = 0

    @property
    def done(self) -> int:
        """Trials that ended, whichever way."""
        return self.finished + self.pruned + self.skipped + self.errored

    @classmethod
    def of(cls, states: Iterable[str]) -> Counts:
        names = list(states)
        return cls(**{field: names.count(field) for field in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Best:
    """The best objective so far and its trial."""

    value: float
    trial_id: str


def best_of(ended: Iterable[tuple[str, str, Any]], mode: str) -> Best | None:
    """The best of ``(trial_id, state, value)`` rows (in the order the trials were created) as
    the study's summary picks it: among finished trials (ASHA-stopped ones only when none
    finished), ties to the earliest trial."""
    rows = [(tid, state, v) for tid, state, v in ended if isinstance(v, (int, float))]
    pool = [r for r in rows if r[1] == "finished"] or [r for r in rows if r[1] == "pruned"]
    if not pool:
        return None
    sign = -1.0 if mode == "max" else 1.0
    _, (tid, _, value) = min(enumerate(pool), key=lambda ir: (sign * float(ir[1][2]), ir[0]))
    return Best(float(value), tid)


def eta_seconds(elapsed: float, done: int, total: int) -> float | None:
    """Time left if the remaining trials take as long as the ended ones did on average
    (None before the first ends)."""
    if done <= 0 or done >= total:
        return None
    return elapsed / done * (total - done)


def status_line(
    counts: Counts,
    total: int,
    *,
    metric: str,
    best: Best | None,
    elapsed: float,
    eta: float | None,
) -> str:
    """The progress view in one line (module docstring): ended trials of ``total`` and how they
    ended (states with none left out), running trials, the best objective, elapsed, ETA."""
    kinds = [("finished", counts.finished)] + [
        (kind, n)
        for kind, n in (
            ("pruned", counts.pruned),
            ("skipped", counts.skipped),
            ("errored", counts.errored),
        )
        if n
    ]
    how = ", ".join(f"{n} {kind}" for kind, n in kinds)
    parts = [f"{counts.done}/{total} done ({how}), {counts.running} running"]
    if best is not None:
        parts.append(f"best {metric} {best.value:.4f} (trial {best.trial_id})")
    time_part = f"{format_duration(elapsed)} elapsed"
    if eta is not None:
        time_part += f", ~{format_duration(eta)} left"
    parts.append(time_part)
    return " | ".join(parts)


def trial_line(
    trial_id: str,
    state: str,
    *,
    done: int,
    total: int,
    metric: str,
    result: dict[str, Any] | None,
    error: str | None = None,
) -> str:
    """One ended trial: ``[done/total] trial ID STATE: metric VALUE (epoch E)``; a skipped
    trial says why, an errored one its error (first line) and where its traceback is."""
    result = result or {}
    head = f"[{done}/{total}] trial {trial_id}"
    if state == "errored":
        return f"{head} errored: {error or 'see its error.txt'}"
    if state == "skipped":
        return f"{head} skipped ({result.get(SKIPPED)}): not trained"
    value = result.get(metric, result.get(VAL_ACC))
    what = "finished" if state == "finished" else "pruned by ASHA"
    if not isinstance(value, (int, float)):
        return f"{head} {what}"
    epoch = result.get(EPOCH)
    at = f" (epoch {int(epoch)})" if isinstance(epoch, (int, float)) else ""
    return f"{head} {what}: {metric} {value:.4f}{at}"


def warning_key(line: str) -> str:
    """What makes two warnings the same: their text, whatever numbers it carries (the trials
    given GPU 0 and GPU 1 that both fall back to their CPUs say one thing)."""
    return re.sub(r"\d+", "#", line)


def _error_text(trial: Any) -> str:
    """A failed trial's error in one line, and where its traceback is kept: its folder in the
    study (Ray Tune writes it in a staging folder first, then syncs it there)."""
    text = ""
    staged = getattr(trial, "error_file", None) or ""
    try:
        if staged and os.path.isfile(staged):
            with open(staged) as handle:
                lines = [line.strip() for line in handle if line.strip()]
            text = lines[-1] if lines else ""
    except OSError:
        text = ""
    text = text if len(text) <= 200 else text[:197] + "..."
    folder = getattr(trial, "path", None)
    name = os.path.basename(staged) if staged else "error.txt"
    where = f"{folder}/{name}" if folder else staged or "the trial's error.txt"
    return f"{text or 'no message'}; traceback in {where}"


class StudyConsole(tune.Callback):
    """Ray Tune callback printing the compact console of a study (module docstring).

    ``stream``: where the progress view goes (default: ``sys.stderr``); ``log``: where lines go
    (default: print to ``stream``); ``live``: the status line while trials run (off beside Ray
    Tune's own output, ``--verbose``: the ended trials' lines and the final status remain).
    :meth:`log` wraps ``log`` so that a line never lands inside a terminal's status line, and
    prints an ``rbm-tune: warning:`` line once per study.
    Picklable (Ray saves callbacks with the Tuner): the stream and ``log`` are not kept.
    """

    def __init__(
        self,
        total: int,
        metric: str,
        mode: str,
        *,
        stream: TextIO | None = None,
        log: Callable[[str], None] | None = None,
        live: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.metric = metric
        self.mode = mode
        self.stream = stream if stream is not None else sys.stderr
        self._log = log
        self.clock = clock
        self.live = live
        self.start = clock()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.warned: set[str] = set()
        self.states: dict[str, str] = {}
        self.shown = 0  # characters of the status line a terminal shows now
        # a terminal shows the status line at once; a pipe's first comes after a heartbeat
        self.last_status = -1.0e9 if self.tty else self.start

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "stream": None, "_log": None, "clock": time.monotonic}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.stream = sys.stderr

    # -- output ----------------------------------------------------------------------------
    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed stream: the study goes on
            pass

    def _clear(self) -> None:
        if self.tty and self.shown:
            self._write("\r" + " " * self.shown + "\r")
            self.shown = 0

    def log(self, line: str) -> None:
        """Print ``line``; a warning only the first time (:func:`warning_key`)."""
        if "warning:" in line:
            key = warning_key(line)
            if key in self.warned:
                return
            self.warned.add(key)
        self._clear()
        if self._log is not None:
            self._log(line)
        else:
            self._write(line + "\n")

    def status(self, trials: list[Any], *, force: bool = False) -> str:
        """Show the status line (on a terminal redrawn, elsewhere at most every HEARTBEAT_S
        seconds unless ``force``); returns it."""
        now = self.clock()
        states = [(t, self._state(t)) for t in trials]
        counts = Counts.of(state for _, state in states)
        total = max(self.total, len(trials))
        elapsed = now - self.start
        best = best_of(
            ((str(t.trial_id), state, self._value(t)) for t, state in states), self.mode
        )
        line = status_line(
            counts,
            total,
            metric=self.metric,
            best=best,
            elapsed=elapsed,
            eta=eta_seconds(elapsed, counts.done, total),
        )
        if self.tty:
            if force or now - self.last_status >= REDRAW_S:
                # a line wider than the terminal would wrap, and \r redraw only its last row
                shown = line if force else line[: max(20, shutil.get_terminal_size().columns - 1)]
                pad = max(0, self.shown - len(shown))
                self._write("\r" + shown + " " * pad + ("\n" if force else ""))
                self.shown = 0 if force else len(shown)
                self.last_status = now
        elif force or now - self.last_status >= HEARTBEAT_S:
            self._write(line + "\n")
            self.last_status = now
        return line

    # -- Ray Tune's hooks -----------------------------------------------------------------
    def _state(self, trial: Any) -> str:
        # a trial Ray Tune is still stopping is RUNNING in its status, but ended here
        ended = self.states.get(str(trial.trial_id))
        return ended or classify(str(trial.status), getattr(trial, "last_result", None))

    def _value(self, trial: Any) -> Any:
        result = getattr(trial, "last_result", None) or {}
        return result.get(self.metric, result.get(VAL_ACC))

    def setup(self, *args: Any, **info: Any) -> None:
        self.start = self.clock()
        if not self.tty:
            self.last_status = self.start

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        warning = result.get(WARNING)
        if warning:
            self.log(str(warning))

    def _ended(self, trials: list, trial: Any, state: str, error: str | None = None) -> None:
        tid = str(trial.trial_id)
        if tid in self.states:
            return
        self.states[tid] = state
        done = Counts.of(self._state(t) for t in trials).done
        line = trial_line(
            tid,
            state,
            done=max(done, 1),
            total=max(self.total, len(trials)),
            metric=self.metric,
            result=getattr(trial, "last_result", None),
            error=error,
        )
        self._clear()
        self._write(line + "\n")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trials, trial, classify("TERMINATED", getattr(trial, "last_result", None)))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._clear()
        self._write(f"trial {trial.trial_id} failed; Ray Tune retries it: {_error_text(trial)}\n")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trials, trial, "errored", _error_text(trial))

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.live:
            self.status(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.status(trials, force=True)
