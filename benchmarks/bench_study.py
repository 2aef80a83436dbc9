"""Where a study's wall time goes, and what ASHA saves: one space run as ASHA, FIFO, FIFO-full.

Runs ``rbm_tune.study.run_study`` in this process on a copy of a shipped search space with
``num_trials`` and 1 CPU per trial set, each run with a fresh local Ray (127.0.0.1, private
temp dir) and a fresh SQLite MLflow store. The teacher is trained first, once, by
``rbm-tune teacher --space`` into the runs' shared cache (timed and reported on its own), so both
runs load the same teacher from the cache, as every study after a project's first does:

- ASHA: the space's own ``asha`` block (what ``rbm-tune`` runs);
- FIFO: the same file with ``early_stopping: false`` (no ASHA), so no trial is stopped early
  by the scheduler; each trial still ends at its own ``patience`` (epochs
  without a better val_acc), as every rbm-tune trial does. Same ``seed`` (split, teacher,
  students) and ``sampler_seed``;
- FIFO, no early stopping (``full``, the issue's baseline read literally): FIFO with
  ``distill.patience`` above any trial's length, so every trial runs its pretraining plus
  ``max_epochs``. Its epochs are what a study without any early stopping pays; ASHA's ratio to
  them is the saving of rbm-tune's early stopping as a whole (scheduler and patience), its ratio
  to FIFO's that of the scheduler alone. ``--arms asha,fifo`` skips it (it is the longest run);
- trial actors are reused between trials (``reuse_actors=True``), as ``rbm-tune`` runs a fresh
  study; ``--mode fast`` adds ``distill.mode: fast`` and ``eval_nodes: needed`` to both runs.

rbm_tune itself is not changed. The driver side is timed by wrapping what ``run_study`` calls
(MLflow store, data, teacher, ``_tune``) and by a subclass of its MLflow callback
(``MlflowTrials``) that stamps trial start / results / completion and times its own MLflow
writes. The trial side is timed by a Ray ``worker_process_setup_hook`` that wraps
``rbm_tune.study.trainable._trial_fn`` and ``train_student`` inside each trial process (wall clock,
one JSON line per report): entry to the trial function (after the graph and teacher are fetched),
the train_student call, its first epoch, the per-epoch ``epoch_seconds``, the time each report
blocks (Ray's synchronous reporting: the driver's result handling, MLflow included), the return.
The headline share is Σ train_student wall / (concurrency × study wall).

    nice -n 19 .venv/bin/python benchmarks/bench_study.py [--space demo] [--trials 32] [--cpus 2]
        [--max-epochs N] [--grace-period N] [--reduction-factor N] [--mode reference|fast]
        [--data-root DIR]
        [--workdir DIR] [--out benchmarks/results/bench_study-cpu.md] [--render JSON]

e.g. ``--space cora --data-root /work/shared/data --max-epochs 100`` (cora's 500 epochs x 32
trials x 2 runs is hours on 2 CPUs). ``--render`` rewrites the report from a saved JSON.
Goals (issue 7 item 3): >= 90 % of the slot time inside train_student; ASHA uses <= 35 % of
FIFO's epochs and reaches FIFO's best val_acc within 0.5 points (ideally the same best config).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

RESULTS = Path(__file__).resolve().parent / "results"
# the runs this script can make, in report order (see the module docstring)
ARMS = {"asha": "ASHA", "fifo": "FIFO", "full": "FIFO-full"}
SPACES = Path(__file__).resolve().parents[1] / "rbm_tune" / "search_spaces"


# -- the driver's clock -------------------------------------------------------------------------
@dataclass
class TrialClock:
    index: int = -1  # the trial's number in the study (creation order)
    config: dict[str, Any] = field(default_factory=dict)
    start: float | None = None
    # (t, epoch_s) per epoch: each Ray result's own and the ones it carries (held_epochs)
    results: list[tuple[float, float | None]] = field(default_factory=list)
    reports: int = 0  # Ray Tune results before the final one
    complete: float | None = None
    final: bool = False


@dataclass
class Clock:
    marks: dict[str, float] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    trials: dict[str, TrialClock] = field(default_factory=dict)
    mlflow_s: float = 0.0  # driver time inside the MLflow callback's hooks

    def trial(self, tid: str) -> TrialClock:
        return self.trials.setdefault(tid, TrialClock())


CLOCK = Clock()  # module-level: the callback is pickled with the Tuner, the clock must not be
EVENTS_ENV = "RBM_BENCH_EVENTS"


def _worker_hook() -> None:
    """Ray ``worker_process_setup_hook``: time ``_trial_fn`` and ``train_student`` in the trial.

    Imports nothing itself: once the worker imports ``rbm_tune.study.trainable`` (to unpickle
    the trainable) ``_trial_fn`` is wrapped; the wrapper swaps in a timed ``train_student`` for the
    call and appends its cumulative timings (``time.time()``) as one JSON line to the file named
    by ``$RBM_BENCH_EVENTS`` after set-up and after every report, so that a trial ASHA stops
    (its thread never returns from the blocked report) still leaves its last line.
    """
    import importlib.abc
    import importlib.util

    path = os.environ.get(EVENTS_ENV)
    if not path:
        return

    def emit(ev: dict[str, Any]) -> None:
        with open(path, "a") as f:
            f.write(json.dumps(ev) + "\n")

    def patch(module: Any) -> None:
        orig = module._trial_fn

        def trial_fn(config: dict[str, Any], **kwargs: Any) -> None:
            from ray import tune

            import rbm_tune.distill as D

            ev: dict[str, Any] = {"pid": os.getpid(), "fn_enter": time.time(), "epoch_s": 0.0}
            ev["trial_id"] = tune.get_context().get_trial_id()
            ev.update(report_blocked=0.0, reports=0, returned=False)
            ev["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
            inner = D.train_student

            def train_student(*args: Any, **kw: Any) -> Any:
                ev["ts_enter"] = time.time()
                report = kw.get("report")

                def timed(m: dict[str, float]) -> object:
                    t = time.time()
                    ev.setdefault("first_epoch_start", t - m["epoch_seconds"])
                    ev["epoch_s"] += m["epoch_seconds"]
                    ev["reports"] += 1
                    ev["last_report"] = t
                    emit(ev)
                    out = report(m) if report is not None else None
                    # not reached when the trial is stopped while blocked here (SystemExit)
                    ev["report_blocked"] += time.time() - t
                    return out

                kw["report"] = timed
                import torch

                ev["torch_threads"] = torch.get_num_threads()
                try:
                    out = inner(*args, **kw)
                    ev["returned"] = True
                    return out
                finally:
                    ev["ts_exit"] = time.time()
                    emit(ev)

            D.train_student = train_student
            try:
                return orig(config, **kwargs)
            finally:
                D.train_student = inner
                ev["fn_exit"] = time.time()
                emit(ev)

        module._trial_fn = trial_fn

    class PatchOnImport(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
            if name != "rbm_tune.study.trainable":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            run = spec.loader.exec_module

            def exec_module(module: Any) -> None:
                run(module)
                patch(module)

            spec.loader.exec_module = exec_module
            return spec

    if "rbm_tune.study.trainable" in sys.modules:
        patch(sys.modules["rbm_tune.study.trainable"])
    else:
        sys.meta_path.insert(0, PatchOnImport())


def _instrument() -> None:
    """Wrap what ``run_study`` calls (driver side only) so that CLOCK records the timeline."""
    import rbm_tune.data
    import rbm_tune.study.run as R
    import rbm_tune.study.tuner as T
    import rbm_tune.tracking

    def timed(module: Any, name: str, label: str, *, mark: str | None = None) -> None:
        inner = getattr(module, name)
        if getattr(inner, "_bench_wrapped", False):
            return

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.time()
            if mark:
                CLOCK.marks.setdefault(mark, t)
            try:
                return inner(*args, **kwargs)
            finally:
                CLOCK.phases[label] = CLOCK.phases.get(label, 0.0) + time.time() - t

        wrapper._bench_wrapped = True  # type: ignore[attr-defined]
        setattr(module, name, wrapper)

    timed(rbm_tune.tracking, "check_reachable", "MLflow: store check")
    timed(rbm_tune.data, "load_graph", "data: load_graph")
    timed(R, "_log_teacher", "MLflow: teacher run", mark="teacher_done")
    timed(R, "fit_and_summarize", "Tuner: fit + wrap-up", mark="tune_start")
    timed(T.MlflowTrials, "drain", "MLflow: final drain", mark="fit_end")
    tracker_init = rbm_tune.tracking.Tracker.__init__
    if not getattr(tracker_init, "_bench_wrapped", False):

        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            t = time.time()
            tracker_init(self, *args, **kwargs)
            label = "MLflow: experiment + parent run"
            CLOCK.phases[label] = CLOCK.phases.get(label, 0.0) + time.time() - t

        init._bench_wrapped = True  # type: ignore[attr-defined]
        rbm_tune.tracking.Tracker.__init__ = init  # type: ignore[method-assign]
    T.MlflowTrials = _timed_callback_class(T.MlflowTrials)


def _timed_callback_class(base: type) -> type:
    if getattr(base, "_bench_timed", False):
        return base

    class TimedMlflowTrials(base):  # type: ignore[misc, valid-type]
        _bench_timed = True

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            rec = CLOCK.trial(trial.trial_id)
            rec.start = time.time()
            rec.index = int(str(trial.experiment_tag).split("_")[0] or -1)
            rec.config = dict(trial.config)
            super().on_trial_start(iteration, trials, trial, **info)

        def on_trial_result(
            self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
        ) -> None:
            t = time.time()
            rec = CLOCK.trial(trial.trial_id)
            if result.get("final"):
                rec.final = True
                rec.results.append((t, None))
            else:
                rec.reports += 1
                # epochs held back since the previous report (study.report_every_s) ride along
                for row in result.get("held_epochs") or ():
                    rec.results.append((t, float(row.get("epoch_seconds", 0.0))))
                rec.results.append((t, float(result.get("epoch_seconds", 0.0))))
            super().on_trial_result(iteration, trials, trial, result, **info)
            CLOCK.mlflow_s += time.time() - t

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            t = time.time()
            CLOCK.trial(trial.trial_id).complete = t
            super().on_trial_complete(iteration, trials, trial, **info)
            CLOCK.mlflow_s += time.time() - t

    TimedMlflowTrials.__qualname__ = TimedMlflowTrials.__name__ = "TimedMlflowTrials"
    globals()["TimedMlflowTrials"] = TimedMlflowTrials  # picklable by reference
    return TimedMlflowTrials


# -- spaces -------------------------------------------------------------------------------------
def write_space(
    base: Path,
    out: Path,
    *,
    name: str,
    trials: int,
    max_epochs: int | None,
    grace: int | None,
    reduction_factor: int | None = None,
    mode: str | None = None,
    patience: int | None = None,
) -> Path:
    data = yaml.safe_load(base.read_text())
    study = data.setdefault("study", {})
    study.update(name=name, num_trials=trials, max_concurrent=None)
    study["resources"] = {"cpus_per_trial": 1, "gpus_per_trial": 0}
    if grace == 0:  # no ASHA: every trial runs to its end (FIFO)
        study["early_stopping"] = False
    elif grace is not None:
        study["asha"] = {**(study.get("asha") or {}), "grace_period": grace}
    if reduction_factor is not None:
        study["asha"] = {**(study.get("asha") or {}), "reduction_factor": reduction_factor}
    if mode is not None:
        data["distill"]["mode"] = mode
        data["distill"]["eval_nodes"] = "needed" if mode == "fast" else "all"
    if max_epochs is not None:
        data["distill"]["max_epochs"] = max_epochs
    if patience is not None:
        data["distill"]["patience"] = patience
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# -- one study ----------------------------------------------------------------------------------
@dataclass
class StudyRun:
    label: str
    wall: float
    clock: Clock
    result: Any
    concurrency: int
    events: dict[str, dict[str, Any]]  # trial id -> the worker's last timing line


def run_one(
    label: str,
    space: Any,
    *,
    cpus: int,
    workdir: Path,
    data_root: str | None,
) -> StudyRun:
    import ray

    from rbm_tune.study import run_study

    global CLOCK
    CLOCK = Clock()
    _instrument()
    if ray.is_initialized():
        ray.shutdown()
    events = workdir / f"events-{label}.jsonl"
    os.environ[EVENTS_ENV] = str(events)
    start = time.time()
    CLOCK.marks["call"] = start
    # rbm_tune's own _init_ray would call ray.init(num_cpus, num_gpus, include_dashboard=False);
    # the same here, plus the timing hook (run_study then finds Ray initialised)
    ray.init(
        num_cpus=cpus,
        num_gpus=0,
        include_dashboard=False,
        runtime_env={"worker_process_setup_hook": _worker_hook},
    )
    CLOCK.phases["Ray: start"] = time.time() - start
    CLOCK.marks["ray_done"] = time.time()
    result = run_study(
        space,
        cpus=cpus,
        gpus=0,
        data_root=data_root,
        cache_dir=workdir / "cache",  # pre-trained by main(): every run loads the teacher
        tracking_uri=f"sqlite:///{workdir / f'mlflow-{label}.db'}",
        storage_path=workdir / "runs",
        verbose=0,
        log=lambda line: print(f"[{label}] {line}", flush=True),
    )
    wall = time.time() - start
    CLOCK.marks["end"] = start + wall
    ray.shutdown()
    concurrency = max(1, int(cpus // space.study.cpus_per_trial))
    if space.study.max_concurrent:
        concurrency = min(concurrency, space.study.max_concurrent)
    last: dict[str, dict[str, Any]] = {}
    if events.is_file():
        for line in events.read_text().splitlines():
            ev = json.loads(line)
            last[ev["trial_id"]] = ev
    return StudyRun(label, wall, CLOCK, result, concurrency, last)


def summarise(run: StudyRun) -> dict[str, Any]:
    """Totals over the trials (seconds) and the study's phases, from the driver and workers."""
    c, m = run.clock, run.clock.marks
    trials = {k: t for k, t in c.trials.items() if t.start is not None and t.complete}
    tot: dict[str, float] = dict.fromkeys(
        (
            "trial_wall",
            "to_fn",
            "fn_to_ts",
            "ts_setup",
            "epochs",
            "report_blocked",
            "ts_rest",
            "ts_wall",
            "after_ts",
            "teardown",
        ),
        0.0,
    )
    missing = 0
    for tid, t in trials.items():
        assert t.start is not None and t.complete is not None
        tot["trial_wall"] += t.complete - t.start
        ev = run.events.get(tid)
        if not ev or "ts_enter" not in ev:
            missing += 1
            continue
        ts_end = ev.get("ts_exit", ev.get("last_report", ev["ts_enter"]))
        end = ev.get("fn_exit", ts_end)
        blocked = ev["report_blocked"]
        # a trial ASHA stopped ends blocked in its last report until the driver stops it (then
        # SystemExit): that wait counts as teardown, not as time inside train_student
        if not ev.get("returned"):
            ts_end = end = ev.get("last_report", ts_end)
        first = ev.get("first_epoch_start", ts_end)
        ts_wall = ts_end - ev["ts_enter"]
        tot["to_fn"] += ev["fn_enter"] - t.start
        tot["fn_to_ts"] += ev["ts_enter"] - ev["fn_enter"]
        tot["ts_setup"] += first - ev["ts_enter"]
        tot["epochs"] += ev["epoch_s"]
        tot["report_blocked"] += blocked
        tot["ts_wall"] += ts_wall
        tot["ts_rest"] += ts_wall - (first - ev["ts_enter"]) - ev["epoch_s"] - blocked
        tot["after_ts"] += end - ts_end
        tot["teardown"] += t.complete - end
    train = sum(e for t in trials.values() for _, e in t.results if e is not None)
    tune_start = m.get("tune_start", m["call"])
    fit_end = m.get("fit_end", m["end"])
    fit_wall = fit_end - tune_start
    slots = run.concurrency * fit_wall
    n = len(trials)
    table = {str(r["trial_id"]): r for r in run.result.table}
    order = sorted(trials, key=lambda k: trials[k].index)
    epochs = sum(int(r["epochs"] or 0) for r in table.values())
    teacher = m.get("teacher_done", tune_start) - m["ray_done"]
    before_teacher = c.phases.get("MLflow: experiment + parent run", 0.0)
    before_teacher += c.phases.get("data: load_graph", 0.0)
    rows = []
    for k in order:
        r = table.get(k, {})
        rows.append(
            {
                "index": trials[k].index,
                "trial_id": k,
                "val_acc": r.get("val_acc"),
                "epochs": r.get("epochs"),
                "asha_stopped": r.get("asha_stopped"),
                "config": trials[k].config,
            }
        )
    return {
        "label": run.label,
        "trials": n,
        "concurrency": run.concurrency,
        "study_wall_s": run.wall,
        "ray_start_s": c.phases.get("Ray: start", 0.0),
        "teacher_s": teacher - before_teacher,
        "teacher_trained": run.result.teacher_trained,
        "fit_wall_s": fit_wall,
        "wrap_up_s": m["end"] - fit_end,
        "train_s": train,
        "slot_idle_s": slots - tot["trial_wall"],  # actor start-up, scheduling, searcher
        # ... of which after the last trial started: slots left empty at the study's end
        "slot_idle_tail_s": _tail_idle(trials.values(), run.concurrency, fit_end),
        **{f"{k}_s": v for k, v in tot.items()},
        "trials_without_worker_timing": missing,
        "worker_threads": sorted(
            {
                f"OMP={e.get('omp_num_threads')}/torch={e.get('torch_threads')}"
                for e in run.events.values()
            }
        ),
        "mlflow_driver_s": c.mlflow_s,
        "phases": dict(c.phases),
        "epochs": epochs,
        "epoch_reports": sum(1 for t in trials.values() for _, e in t.results if e is not None),
        "ray_reports": sum(t.reports for t in trials.values()),
        "asha_stopped": sum(1 for r in table.values() if r["asha_stopped"]),
        "best_val_acc": run.result.best_val_acc,
        "best_test_acc": run.result.best_test_acc,
        "best_config": run.result.best_config,
        "share_ts_study": tot["ts_wall"] / (run.concurrency * run.wall),
        "share_ts_fit": tot["ts_wall"] / slots if slots else 0.0,
        "share_epochs_study": train / (run.concurrency * run.wall),
        "share_epochs_fit": train / slots if slots else 0.0,
        "overhead_per_trial_s": (run.wall - teacher - train / run.concurrency) / max(n, 1),
        "median_epoch_s": statistics.median(
            [e for t in trials.values() for _, e in t.results if e is not None] or [0.0]
        ),
        "rows": rows,
    }


def _reports(s: dict[str, Any]) -> int:
    """Ray Tune reports of a run (older JSONs: one per epoch, which they were then)."""
    return max(int(s.get("ray_reports", s["epoch_reports"])), 1)


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def report(runs: dict[str, dict[str, Any]], args: argparse.Namespace) -> list[str]:
    asha, fifo, full = runs["asha"], runs["fifo"], runs.get("full")
    names = ARMS

    def per(s: dict[str, Any], key: str) -> str:
        return f"{s[key] / max(s['trials'], 1):.2f}"

    def _teacher(s: dict[str, Any]) -> str:
        took = s.get("teacher_pretrain_s")
        if took is None:  # results of this script before the teacher was pre-trained
            return "the teacher trained by the first run and loaded from the cache by the others"
        return (
            f"the teacher trained once beforehand by `rbm-tune teacher --space` ({took:.1f} s) "
            "and loaded from the cache by every run"
        )

    lines = [
        "# bench_study: a study's wall time, ASHA vs FIFO"
        + (" vs FIFO with no early stopping" if full is not None else ""),
        "",
        "```bash",
        "nice -n 19 .venv/bin/python benchmarks/bench_study.py " + asha.get("command", ""),
        "```",
        "",
        f"{os.cpu_count()} CPUs, load average {asha.get('loadavg', '?')} at the end (other jobs "
        f"shared the machine); torch {_torch_version()}; space "
        f"`{args.space}`, {asha['trials']} trials, {asha['concurrency']} at a time (1 CPU per "
        f"trial); a fresh Ray and SQLite MLflow store per run, {_teacher(asha)}. Seconds are "
        "wall-clock; driver-side "
        "figures come from the wrapped MLflow callback, trial-side ones from the trial "
        "processes (see the script's docstring).",
        "",
        "## Where the time goes",
        "",
        "| | " + " | ".join(names[k] for k in runs) + " |",
        "| --- |" + " --- |" * len(runs),
    ]
    rows: list[tuple[str, Any]] = [
        ("trials / concurrent", lambda s: f"{s['trials']} / {s['concurrency']}"),
        ("study wall s", lambda s: f"{s['study_wall_s']:.1f}"),
        ("one-off: Ray start s", lambda s: f"{s['ray_start_s']:.1f}"),
        (
            "one-off: MLflow experiment + parent run s",
            lambda s: f"{s['phases'].get('MLflow: experiment + parent run', 0.0):.1f}",
        ),
        (
            "one-off: teacher s (the cache read on the driver, or a Ray task that trains it)",
            lambda s: f"{s['teacher_s']:.1f} ({'trained' if s['teacher_trained'] else 'cached'})",
        ),
        ("one-off: wrap-up s (drain, results.csv, artifacts)", lambda s: f"{s['wrap_up_s']:.1f}"),
        ("Tuner.fit wall s", lambda s: f"{s['fit_wall_s']:.1f}"),
        ("Σ train_student wall s (in the trial processes)", lambda s: f"{s['ts_wall_s']:.1f}"),
        ("Σ train_student epochs s (epoch_seconds)", lambda s: f"{s['train_s']:.1f}"),
        ("median epoch s", lambda s: f"{s['median_epoch_s']:.3f}"),
        ("epochs consumed (Σ over trials)", lambda s: f"{s['epochs']}"),
        ("trials stopped by ASHA", lambda s: f"{s['asha_stopped']}"),
        (
            "**share of slot time (concurrency × study wall) inside train_student**",
            lambda s: f"**{s['share_ts_study']:.1%}** (Tuner.fit only: {s['share_ts_fit']:.1%})",
        ),
        (
            "the same, less the slots left empty after the last trial started",
            _share_before_tail,
        ),
        (
            "share of slot time in train_student's epochs",
            lambda s: (
                f"{s['share_epochs_study']:.1%} (Tuner.fit only: {s['share_epochs_fit']:.1%})"
            ),
        ),
        (
            "overhead per trial s = (wall − teacher − Σepochs / concurrency) / trials",
            lambda s: f"{s['overhead_per_trial_s']:.2f}",
        ),
        (
            "per trial: slot idle until the actor is up (new process, import Ray Tune) s",
            lambda s: per(s, "slot_idle_s"),
        ),
        (
            "slot idle s: in all / after the last trial started (empty slots at the end)",
            lambda s: (
                f"{s['slot_idle_s']:.1f} / "
                + ("?" if "slot_idle_tail_s" not in s else f"{s['slot_idle_tail_s']:.1f}")
            ),
        ),
        (
            "per trial: actor up → _trial_fn (unpickle graph, teacher: imports torch, PyG) s",
            lambda s: per(s, "to_fn_s"),
        ),
        (
            "per trial: _trial_fn → train_student (imports, features) s",
            lambda s: per(s, "fn_to_ts_s"),
        ),
        ("per trial: train_student set-up → 1st epoch s", lambda s: per(s, "ts_setup_s")),
        ("per trial: train_student epochs s", lambda s: per(s, "epochs_s")),
        (
            "per trial: blocked in report (Ray round trip + driver incl. MLflow) s",
            lambda s: per(s, "report_blocked_s"),
        ),
        (
            "per trial: after train_student (inference, checkpoint) s",
            lambda s: per(s, "after_ts_s"),
        ),
        ("per trial: _trial_fn return → trial complete s", lambda s: per(s, "teardown_s")),
        ("per trial: driver time in the MLflow callback s", lambda s: per(s, "mlflow_driver_s")),
        (
            "Ray Tune reports / epochs in MLflow (Σ over trials)",
            lambda s: f"{_reports(s)} / {s['epoch_reports']}",
        ),
        (
            "per Ray Tune report: trial blocked in it ms (driver time in the MLflow callback)",
            lambda s: (
                f"{1000 * s['report_blocked_s'] / _reports(s):.1f} "
                f"({1000 * s['mlflow_driver_s'] / _reports(s):.1f})"
            ),
        ),
        (
            "best val_acc (its test_acc)",
            lambda s: f"{s['best_val_acc']:.4f} ({s['best_test_acc']:.4f})",
        ),
    ]
    lines += [f"| {name} | " + " | ".join(f(r) for r in runs.values()) + " |" for name, f in rows]
    share = min(asha["share_ts_study"], fifo["share_ts_study"])
    goal = vs_fifo = _versus(asha, fifo, "FIFO")
    lines += [
        "",
        "## ASHA vs FIFO (no scheduler stops; each trial still ends at its patience)",
        "",
        *vs_fifo.lines,
        *vs_fifo.scale,
    ]
    if full is not None:
        goal = _versus(asha, full, "FIFO-full")
        lines += [
            "",
            "## ASHA vs FIFO with no early stopping at all (every trial to max_epochs)",
            "",
            *goal.lines,
            f"- Patience alone (FIFO vs FIFO-full): {fifo['epochs'] / max(full['epochs'], 1):.1%}"
            f" of the epochs; ASHA on top of it: {vs_fifo.ratio:.1%} of FIFO's.",
            *goal.scale,
        ]
    lines += [
        f"- The validation set has {asha['val_nodes']} nodes (one node = "
        f"{100 / max(asha['val_nodes'], 1):.2f} points).",
        f"- Trial threads: {', '.join(asha['worker_threads'])}.",
        "",
        "## What the share depends on",
        "",
        "Slot time outside train_student per trial, o = (concurrency × study wall − Σ "
        "train_student wall) / trials: "
        + "; ".join(f"{names[k]} {_overhead(r):.1f} s" for k, r in runs.items())
        + ". A study spends ≥ 90 % of its slot time inside train_student only when its trials "
        "average ≥ 9·o inside it: "
        + "; ".join(f"{names[k]} ≥ {9 * _overhead(r):.0f} s" for k, r in runs.items())
        + " (here: "
        + ", ".join(
            f"{r['ts_wall_s'] / max(r['trials'], 1):.1f} s with {names[k]}"
            for k, r in runs.items()
        )
        + "). ASHA shortens trials, so it lowers the share for a fixed per-trial overhead.",
        "",
        "## Goals (issue 7 item 3)",
        "",
        f"- {'PASS' if share >= 0.90 else 'FAIL'}: share of slot time inside train_student "
        + " / ".join(f"{r['share_ts_study']:.1%} ({names[k]})" for k, r in runs.items())
        + "; goal ≥ 90 % (ASHA and FIFO).",
        f"- {'PASS' if goal.ratio <= 0.35 else 'FAIL'}: ASHA epochs {goal.ratio:.1%} of "
        f"{goal.name}'s{' (no early stopping)' if full is not None else ''}; goal ≤ 35 %"
        f"{_goal_context(goal.bounds)}"
        + (f"; of FIFO's (patience kept): {vs_fifo.ratio:.1%}." if full is not None else "."),
        f"- {'PASS' if goal.gap >= -0.5 else 'FAIL'}: ASHA's best val_acc not below "
        f"{goal.name}'s by more than 0.5 points ({goal.gap:+.2f}; within "
        f"±0.5: {'yes' if abs(goal.gap) <= 0.5 else 'no'}); same best config: "
        f"{'yes' if goal.same_best else 'no'} over the whole study, "
        f"{'yes' if goal.same_top else 'no'} over the {goal.same_prefix} shared draws.",
        "",
        "Per trial, in the order drawn: val_acc / epochs (stopped: by ASHA)",
        "",
        "| # | " + " | ".join(names[k] for k in runs) + " | same config |",
        "| --- |" + " --- |" * (len(runs) + 1),
    ]

    def cell(r: dict[str, Any] | None) -> str:
        if r is None or r["val_acc"] is None:
            return "—"
        return f"{r['val_acc']:.4f} / {r['epochs']}{' stopped' if r['asha_stopped'] else ''}"

    for i in range(max(len(r["rows"]) for r in runs.values())):
        row = [r["rows"][i] if i < len(r["rows"]) else None for r in runs.values()]
        same = all(x is not None for x in row) and all(
            _same(x["config"], row[0]["config"]) for x in row if x is not None
        )
        lines.append(
            f"| {i + 1} | " + " | ".join(cell(x) for x in row) + f" | {'yes' if same else ''} |"
        )
    return lines


@dataclass
class Versus:
    """ASHA against one baseline run of the same study."""

    name: str  # the baseline's, as the report names it
    lines: list[str]
    bounds: tuple[float, float] | None  # sha_bounds on the baseline's trial lengths
    scale: list[str]  # those bounds, in words
    ratio: float  # ASHA's epochs / the baseline's
    gap: float  # ASHA's best val_acc − the baseline's, in points
    same_best: bool
    same_top: bool  # the same best config among the draws both runs share
    same_prefix: int  # trials drawn identically in both runs, from the first


def _versus(asha: dict[str, Any], base: dict[str, Any], name: str) -> Versus:
    same_prefix = 0
    for a, b in zip(asha["rows"], base["rows"]):
        if not _same(a["config"], b["config"]):
            break
        same_prefix += 1
    ratio = asha["epochs"] / max(base["epochs"], 1)
    gap = 100 * (asha["best_val_acc"] - base["best_val_acc"])
    same_best = _same(asha["best_config"], base["best_config"])
    shared_a, shared_b = asha["rows"][:same_prefix], base["rows"][:same_prefix]
    ep_a = sum(int(r["epochs"] or 0) for r in shared_a)
    ep_b = sum(int(r["epochs"] or 0) for r in shared_b)
    done_a = [r for r in shared_a if r["val_acc"] is not None and not r["asha_stopped"]]
    top_a = max(done_a, key=lambda r: r["val_acc"], default=None)
    top_b = max(
        (r for r in shared_b if r["val_acc"] is not None), key=lambda r: r["val_acc"], default=None
    )
    same_top = top_a is not None and top_b is not None and _same(top_a["config"], top_b["config"])
    twin = ""
    best_a = max(
        (r for r in asha["rows"] if r["val_acc"] is not None and not r["asha_stopped"]),
        key=lambda r: r["val_acc"],
        default=None,
    )
    for i, r in enumerate(base["rows"]):
        if best_a is not None and _same(r["config"], best_a["config"]):
            twin = (
                f" ASHA's best config is {name}'s trial {i + 1}, val_acc {r['val_acc']:.4f} there."
            )
    lines = [
        f"- The first {same_prefix} of {len(asha['rows'])} trials drew the same config in both "
        "runs (the first is the space's default point; TPE's draws diverge once the two runs "
        "have seen different results).",
        f"- {name}: {base['asha_stopped']} trial(s) stopped by the scheduler (must be 0).",
        f"- Epochs: ASHA {asha['epochs']} vs {name} {base['epochs']} = {ratio:.1%}.",
        f"- Best val_acc: ASHA {asha['best_val_acc']:.4f} vs {name} {base['best_val_acc']:.4f} "
        f"({gap:+.2f} points); same best config: {'yes' if same_best else 'no'}.{twin}",
        f"- On the {same_prefix} trials both runs drew identically: epochs ASHA {ep_a} vs {name} "
        f"{ep_b} = {ep_a / max(ep_b, 1):.1%}; best val_acc ASHA "
        f"{top_a['val_acc'] if top_a else float('nan'):.4f} (trial "
        f"{shared_a.index(top_a) + 1 if top_a else '-'}) vs {name} "
        f"{top_b['val_acc'] if top_b else float('nan'):.4f} (trial "
        f"{shared_b.index(top_b) + 1 if top_b else '-'}): same best config: "
        f"{'yes' if same_top else 'no'}.",
    ]
    bounds = sha_bounds(asha, base)
    scale = _sha_lines(asha, bounds, name)
    return Versus(name, lines, bounds, scale, ratio, gap, same_best, same_top, same_prefix)


def _overhead(r: dict[str, Any]) -> float:
    """Slot seconds per trial not spent inside train_student (one-offs included)."""
    return (r["concurrency"] * r["study_wall_s"] - r["ts_wall_s"]) / max(r["trials"], 1)


def sha_bounds(asha: dict[str, Any], fifo: dict[str, Any]) -> tuple[float, float] | None:
    """What successive halving could save, in FIFO's epochs: (ideal, floor).

    Each FIFO trial i ran ``L_i`` epochs, pretraining ``P_i`` of them (0 for an MLP student);
    ASHA (``time_attr`` the post-switch epoch) compares it at the epochs ``rung_epochs`` gives,
    ``P_i`` later in its own count. Ideal synchronous successive halving stops a share 1 - 1/rf
    of the trials alive at each rung r_j and lets 1/rf^n run to the end, so trial i is expected
    to cost ``Σ_j (1/rf)^j (1 - 1/rf) min(L_i, P_i + r_j) + (1/rf)^n L_i`` (an expectation over
    which trials it stops, not a bound). The floor stops every trial at its first rung:
    ``min(L_i, P_i + r_0)``, the least ASHA can spend. Both use FIFO's own trial lengths (its
    patience stops included). ``None`` for results saved before these keys.
    """
    if "grace_period" not in asha:
        return None
    from rbm_tune.study import rung_epochs

    rf = asha["reduction_factor"]
    longest = max((int(r["epochs"] or 0) for r in fifo["rows"]), default=0)
    rungs = sorted(rung_epochs(asha["grace_period"], rf, longest + 1))
    ideal = floor = 0.0
    for r in fifo["rows"]:
        length = int(r["epochs"] or 0)
        model = r["config"].get("student.model", asha.get("model_default", "rbm"))
        pre = r["config"].get("distill.pretrain_epochs", asha["pretrain_default"])
        pre = 0 if model == "mlp" else int(pre)
        alive = 1.0
        for rung in rungs:
            ideal += alive * (1 - 1 / rf) * min(length, pre + rung)
            alive /= rf
        ideal += alive * length
        floor += min(length, pre + rungs[0]) if rungs else length
    total = max(fifo["epochs"], 1)
    return ideal / total, floor / total


def _goal_context(bounds: tuple[float, float] | None) -> str:
    if bounds is None:
        return ""
    return f" (ideal synchronous successive halving: {bounds[0]:.1%}; floor {bounds[1]:.1%})"


def _sha_lines(asha: dict[str, Any], bounds: tuple[float, float] | None, name: str) -> list[str]:
    if bounds is None:  # older results: the estimate from the space (trials run to max_epochs)
        return [
            f"- For scale: ideal synchronous successive halving on this space (1/rf of the "
            f"trials promoted at every rung, none early) would use {asha['ideal_sha']:.1%} of "
            "FIFO's epochs."
        ]
    ideal, floor = bounds
    return [
        f"- For scale, on {name}'s own trial lengths: ideal synchronous successive halving "
        f"(grace {asha['grace_period']}, factor {asha['reduction_factor']:g}: 1/rf of the "
        f"trials promoted at every rung, none by luck of arriving early) would use {ideal:.1%} "
        f"of {name}'s epochs; stopping every trial at its first rung (its pretraining plus "
        f"{asha['grace_period']} post-switch epochs, the least a trial runs before ASHA can "
        f"compare it) {floor:.1%}."
    ]


def _val_nodes(space: Any, args: argparse.Namespace) -> int:
    from rbm_tune.data import load_graph

    cfg = space.default_config()
    graph = load_graph(cfg.dataset, root=args.data_root, setting=cfg.setting, seed=cfg.seed)
    return int(graph.val_idx.numel())


def _torch_version() -> str:
    import torch

    return torch.__version__


def _share_before_tail(s: dict[str, Any]) -> str:
    """Σ train_student wall over the slot time less the empty slots at the study's end."""
    if "slot_idle_tail_s" not in s:  # results of this script before it timed the tail
        return "?"
    slots = s["concurrency"] * s["study_wall_s"] - s["slot_idle_tail_s"]
    return f"{s['ts_wall_s'] / slots:.1%}"


def _tail_idle(trials: Any, concurrency: int, fit_end: float) -> float:
    """Slot-seconds left empty after the last trial started (no trial was left to start)."""
    spans = [(t.start, t.complete) for t in trials]
    if not spans:
        return 0.0
    last_start = max(s for s, _ in spans)
    busy = sum(max(0.0, min(e, fit_end) - max(s, last_start)) for s, e in spans)
    return concurrency * (fit_end - last_start) - busy


def pretrain_teacher(space: Path, cache: Path, data_root: str | None) -> float:
    """``rbm-tune teacher --space``: the study's teacher into ``cache``; its wall seconds."""
    cmd = [sys.executable, "-m", "rbm_tune", "teacher", "--space", str(space), "--quiet"]
    cmd += ["--cache-dir", str(cache)] + (["--data-root", data_root] if data_root else [])
    start = time.time()
    subprocess.run(cmd, check=True)
    took = time.time() - start
    print(f"teacher pre-trained in {took:.1f}s", flush=True)
    return took


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="demo", help="a shipped space name or a YAML path")
    p.add_argument("--trials", type=int, default=32)
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray (1 per trial)")
    p.add_argument("--max-epochs", type=int, default=None, help="override distill.max_epochs")
    p.add_argument("--grace-period", type=int, default=None, help="override ASHA's grace period")
    p.add_argument("--data-root", default=None, help="dataset root (not needed for demo)")
    p.add_argument("--reduction-factor", type=int, default=None, help="override ASHA's")
    p.add_argument(
        "--mode",
        choices=["reference", "fast"],
        default=None,
        help="set distill.mode (fast also sets eval_nodes: needed); default: the space's",
    )
    p.add_argument(
        "--arms",
        default="asha,fifo,full",
        help="runs to make, in order: asha, fifo (no scheduler stops; patience kept), full (FIFO "
        "without patience either: every trial runs to max_epochs); asha and fifo are required",
    )
    p.add_argument("--workdir", default=None, help="keep the runs here (default: a temp dir)")
    p.add_argument("--out", default=str(RESULTS / "bench_study-cpu.md"))
    p.add_argument("--render", default=None, help="only re-render the report from this JSON")
    args = p.parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if not {"asha", "fifo"} <= set(arms) or not set(arms) <= set(ARMS):
        p.error(f"--arms: asha and fifo, optionally full (got {args.arms!r})")
    if args.render:
        summaries = json.loads(Path(args.render).read_text())
        args.space = summaries["asha"].get("space", args.space)
        text = "\n".join(report(summaries, args)) + "\n"
        print(text)
        Path(args.out).write_text(text)
        return 0

    # local Ray on loopback, no token, no usage stats, and a private temp dir so that a cluster
    # someone else started with `ray start` on this machine is never joined
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.pop("RAY_ADDRESS", None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    base = Path(args.space) if Path(args.space).is_file() else SPACES / f"{args.space}.yaml"
    if not base.is_file():
        names = sorted(s.stem for s in SPACES.glob("*.yaml"))
        p.error(f"no space {args.space!r}; pass a path or one of {names}")

    from rbm_tune.search_space import load_space

    keep = args.workdir is not None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="rbmb-", dir="/tmp")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray-", dir=str(workdir))

    def space_for(label: str, **changes: Any) -> Path:
        return write_space(
            base,
            workdir,
            name=f"bench-{label}",
            trials=args.trials,
            max_epochs=args.max_epochs,
            mode=args.mode,
            **changes,
        )

    asha_path = space_for("asha", grace=args.grace_period, reduction_factor=args.reduction_factor)
    asha_space = load_space(asha_path)
    longest = asha_space.study.asha_max_t  # the longest trial, in post-switch epochs
    fifo_space = load_space(space_for("fifo", grace=0))  # early_stopping: false
    spaces = {"asha": asha_space, "fifo": fifo_space}
    if "full" in arms:
        # patience above any trial's length (pretraining included) never ends a trial
        spaces["full"] = load_space(space_for("full", grace=0, patience=longest + 1000))
    print(
        f"workdir {workdir}; ASHA grace {asha_space.study.grace_period} rf "
        f"{asha_space.study.reduction_factor}; FIFO: early_stopping false (longest trial "
        f"{fifo_space.study.asha_max_t} post-switch epochs)",
        flush=True,
    )
    extra = {
        "grace_period": asha_space.study.grace_period,
        "reduction_factor": asha_space.study.reduction_factor,
        "pretrain_default": asha_space.default_config().distill.pretrain_epochs,
        "model_default": asha_space.default_config().student.model,
        "val_nodes": _val_nodes(asha_space, args),
        "teacher_pretrain_s": pretrain_teacher(asha_path, workdir / "cache", args.data_root),
    }
    summaries = {}
    for label in arms:
        space = spaces[label]
        run = run_one(
            label,
            space,
            cpus=args.cpus,
            workdir=workdir,
            data_root=args.data_root,
        )
        summaries[label] = {**summarise(run), **extra}
        s = summaries[label]
        print(
            f"[{label}] wall {s['study_wall_s']:.1f}s, train {s['train_s']:.1f}s, share "
            f"{s['share_ts_study']:.1%}, epochs {s['epochs']}, best val {s['best_val_acc']:.4f}",
            flush=True,
        )
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    for summary in summaries.values():
        summary.update(command=" ".join(sys.argv[1:]), loadavg=load, space=args.space)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(summaries, indent=1, default=str))
    lines = report(summaries, args)
    text = "\n".join(lines) + "\n"
    print(text)
    out.write_text(text)
    if not keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
