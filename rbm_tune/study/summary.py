"""A finished study's summary: the best trial, the study folder's files, MLflow's parent run.

After Ray Tune's ``fit`` returns, :func:`summarize` reads the ``ResultGrid`` into one row per
trial, picks the best finished trial by the study's metric (validation only; an ASHA-stopped
trial counts only when none finished), and writes, in the study folder and as artifacts of the
study's MLflow parent run: ``best_config.yaml``, ``results.csv``, ``trials.json`` (what
``rbm-tune evaluate`` / ``export`` read), Optuna's plots and, for two objectives,
``pareto.md``; ``best_selection.json`` records that the search chose ``best_config.yaml``
(``rbm-tune evaluate --select`` may choose again: rbm_tune/selection.py). An MLflow outage
while it writes is one :class:`TrackingError` line: every trial is safe on disk and
``--resume`` writes the summary again.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rbm_tune.errors import RbmTuneError, TrackingError, first_line
from rbm_tune.metrics import (
    BEST_VAL_ACC,
    MEMORY_ESTIMATE,
    MEMORY_SHARE,
    NODE_ID,
    OBJECTIVE,
    SKIPPED,
    SKIPPED_BECAUSE,
    TEST_ACC,
    VAL_ACC,
)
from rbm_tune.selection import record_search, search_record, selection_tags
from rbm_tune.storage import checkpoint_location
from rbm_tune.study.finished import mark_finished
from rbm_tune.study.rows import (  # error_line, rank_trials, trial_order: re-exported
    error_line,
    rank_trials,
    trial_order,
    trial_rows,
)
from rbm_tune.testing import faults
from rbm_tune.tracking.study_run import best_tags

__all__ = [
    "RESULTS_COLUMNS",
    "StudyResult",
    "error_line",
    "rank_trials",
    "summarize",
    "trial_order",
    "trial_rows",
]

# results.csv: one row per trial that reported, best first; OBJECTIVE is each trial's val_acc
# at its best-validation epoch (an ASHA-stopped trial's: before it stopped)
RESULTS_COLUMNS = ("trial_id", OBJECTIVE, TEST_ACC, "epochs", "asha_stopped", NODE_ID)


@dataclass(frozen=True)
class StudyResult:
    """Where a finished study's results are and what was best."""

    name: str
    storage_path: Path
    experiment_url: str
    best_config: dict[str, Any]
    best_val_acc: float
    best_test_acc: float | None
    table: list[dict[str, Any]]
    teacher_digest: str
    teacher_trained: bool
    failed: tuple[str, ...] = ()  # trials that errored with no retries left
    skipped: tuple[str, ...] = ()  # trials not trained for memory, or that ran out of it


def summarize(
    space: Any,
    grid: Any,
    tracker: Any,
    *,
    key: Any,
    trained: bool,
    name: str,
    storage: Path,
    resume: bool,
    log: Callable[[str], None],
) -> StudyResult:
    """Write the study's summary (module docstring) and return its :class:`StudyResult`.

    Raises:
        RbmTuneError: no trial reported a result (or every one was skipped for memory).
        TrackingError: MLflow stopped answering while the summary was written.
    """
    import yaml

    study = space.study
    rows = trial_rows(grid)
    skipped = [r for r in rows if r[SKIPPED]]
    for line in _skipped_lines(skipped):
        log(line)
    out_dir = storage / name
    # the summary's MLflow writes (closing lost runs, artifacts, the parent run's end): MLflow
    # failing here is the same outage as during the study, with the same way out
    with _summary_outage(tracker.uri, out_dir):
        _close_lost_trial_runs({r["trial_id"] for r in rows}, tracker, log, resumed=resume)
        # an errored trial (no retries left) never counts, whatever it reported before failing
        done = [r for r in rows if r[VAL_ACC] is not None and not r["error"] and not r[SKIPPED]]
        if not done and any(r[SKIPPED] == "no_cuda" for r in skipped):
            raise RbmTuneError(
                f"no trial of study {name!r} could train: Ray gave them GPUs but CUDA is not "
                "available in their processes (see the line above); fix the nodes' NVIDIA "
                "driver / CUDA build of torch, or set study.cpu_fallback: true in the space"
            )
        if not done and skipped:
            raise RbmTuneError(
                f"every trial of study {name!r} that reported was skipped for memory; see "
                f"'rbm-tune plan --space {Path(space.path).name}' and lower the space's largest "
                "settings (hidden_dim, num_experts, batch_size) or give each trial more "
                "(resources.gpus_per_trial, resources.memory_per_trial)"
            )
        if not done:
            errors = [f"{r['trial_id']}: {r['error']}" for r in rows if r["error"]]
            first = f" (first error, trial {errors[0]})" if errors else ""
            raise RbmTuneError(
                f"no trial of study {name!r} reported a result{first}; see the Ray logs in "
                f"{out_dir}"
            )
        done = rank_trials(done, study.metric, study.mode)
        finished = [r for r in done if not r["asha_stopped"]] or done
        best = finished[0]
        best_config = space.config_for(best["config"]).to_dict()
        best_yaml = out_dir / "best_config.yaml"
        best_yaml.write_text(yaml.safe_dump(best_config, sort_keys=False))
        # chosen by the search (rbm-tune evaluate --select may choose again: rbm_tune.selection)
        record_search(out_dir, str(best["trial_id"]), study.seeds_per_trial)
        faults.fire("driver_summary", 1)
        tracker.log_artifact(tracker.parent_id, best_yaml)
        _write_results_csv(done, out_dir / "results.csv")
        tracker.log_artifact(tracker.parent_id, out_dir / "results.csv")
        _write_trials(space, done, out_dir / "trials.json")
        # what rbm-tune evaluate asks Ray for per run: the resources the trials had
        (out_dir / "study.json").write_text(
            json.dumps(_study_json(study, out_dir), indent=1, default=str)
        )
        tracker.log_artifact(tracker.parent_id, out_dir / "trials.json")
        for path in _plots(space, done, study, out_dir / "plots", log):
            tracker.log_artifact(tracker.parent_id, path, "plots")
        pareto = _pareto(done, study, out_dir / "pareto.md") if study.objectives else []
        if pareto:
            tracker.log_artifact(tracker.parent_id, out_dir / "pareto.md")
        if best["checkpoint"] is not None:
            with best["checkpoint"].as_directory() as ckpt:
                tracker.log_artifact(tracker.parent_id, Path(ckpt) / "student.pt")
        tracker.log_metrics(tracker.parent_id, {BEST_VAL_ACC: best[OBJECTIVE]}, step=0)
        tags = best_tags(
            space,
            name=name,
            trials=len(rows),
            best=best,
            run_id=tracker.trial_run_id(str(best["trial_id"])),
            storage=storage,
        )
        tags.update(selection_tags(search_record(str(best["trial_id"]), study.seeds_per_trial)))
        tracker.set_tags(tracker.parent_id, tags)
        tracker.end(tracker.parent_id)
    # last: the study ended; --resume of it now changes nothing (rbm_tune.study.finished)
    mark_finished(out_dir, trials=len(rows), best_trial=str(best["trial_id"]))
    return StudyResult(
        name=name,
        storage_path=out_dir,
        experiment_url=tracker.experiment_url,
        best_config=best_config,
        best_val_acc=float(best[OBJECTIVE]),
        best_test_acc=None if best[TEST_ACC] is None else float(best[TEST_ACC]),
        table=[{k: v for k, v in r.items() if k not in ("checkpoint", "metrics")} for r in done],
        teacher_digest=key.digest,
        teacher_trained=trained,
        failed=tuple(str(r["trial_id"]) for r in rows if r["error"]),
        skipped=tuple(str(r["trial_id"]) for r in skipped),
    )


def _study_json(study: Any, out_dir: Path) -> dict[str, Any]:
    """``study.json``: the study settings, and the studies it was warm-started from."""
    from rbm_tune.study.warm_start import read_record

    out = dict(study.to_dict())
    warm = read_record(out_dir)
    if warm is not None:
        out["warm_start"] = warm
    return out


def _write_results_csv(done: list[dict[str, Any]], path: Path) -> None:
    """``results.csv``: :data:`RESULTS_COLUMNS` of every trial that reported, best first."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(RESULTS_COLUMNS)
        writer.writerows([r[c] for c in RESULTS_COLUMNS] for r in done)


def _skipped_lines(skipped: list[dict[str, Any]]) -> list[str]:
    """One summary line per kind of skipped trial: how many, why, their ids."""
    from rbm_tune.memory import format_bytes

    lines = []
    for kind, what in (
        ("memory", "not trained: estimated memory above the trial's share"),
        ("oom", "ran out of memory while training (not retried)"),
        ("no_cuda", "not trained: given a GPU by Ray, but no CUDA in the trial's process"),
    ):
        these = [r for r in skipped if r[SKIPPED] == kind]
        if not these:
            continue
        ids = ", ".join(str(r["trial_id"]) for r in these)
        if kind == "no_cuda":
            why = these[0].get(SKIPPED_BECAUSE)
            lines.append(
                f"rbm-tune: {len(these)} trial(s) {what} (MLflow tag rbm_tune.skipped={kind}; "
                f"{why}): {ids}"
            )
            continue
        worst = max(these, key=lambda r: r["metrics"].get(MEMORY_ESTIMATE, 0))
        need = worst["metrics"].get(MEMORY_ESTIMATE, 0)
        share = worst["metrics"].get(MEMORY_SHARE, 0)
        lines.append(
            f"rbm-tune: {len(these)} trial(s) {what} (largest estimate {format_bytes(need)}, "
            f"share {format_bytes(share)}; MLflow tag rbm_tune.skipped={kind}): {ids}"
        )
    return lines


@contextmanager
def _summary_outage(uri: str, folder: Path) -> Iterator[None]:
    """Turn an MLflow client failure inside the block into a ``TrackingError`` naming the fix.

    After the outbox is drained, the study's summary is written to MLflow directly; a server
    that stops answering then (or refuses a write) would otherwise end the study in a traceback
    from deep inside MLflow's client. Every trial finished and its results are on disk, and
    ``--resume`` writes the summary again (Ray Tune restores the finished study, the driver
    redoes the summary). Other errors pass through unchanged.
    """
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, ConnectionError, TimeoutError) as err:
        first = first_line(err)
        raise TrackingError(
            f"MLflow at {uri} stopped answering while the study's summary was written "
            f"({first}); every trial finished and its results are safe in {folder}; rerun the "
            "same command with --resume once MLflow answers, to write the summary"
        ) from None


def _write_trials(space: Any, done: list[dict[str, Any]], path: Path) -> None:
    """Every trial that reported, best first: id, metrics, sampled constants, full config.

    What ``rbm-tune evaluate`` and ``rbm-tune export`` read back; the checkpoint is the trial's
    folder in Ray Tune's results.
    """
    from rbm_tune.metrics import TEST_ACC, VAL_ACC

    rows = []
    for r in done:
        checkpoint = r["checkpoint"]
        rows.append(
            {
                "trial_id": r["trial_id"],
                OBJECTIVE: r[OBJECTIVE],
                VAL_ACC: r[VAL_ACC],  # its last result's: OBJECTIVE for a finished trial
                TEST_ACC: r[TEST_ACC],
                "epochs": r["epochs"],
                "asha_stopped": r["asha_stopped"],
                "metrics": r["metrics"],
                "sampled": r["config"],
                "config": space.config_for(r["config"]).to_dict(),
                "checkpoint": None if checkpoint is None else checkpoint_location(checkpoint),
            }
        )
    path.write_text(json.dumps(rows, indent=1, default=str))


def _plots(
    space: Any, done: list[dict[str, Any]], study: Any, out: Path, log: Callable[[str], None]
) -> list[Path]:
    """Optuna's plots of the study's reported trials (rbm_tune.plots), none where the space
    says ``study.plots: false``; never fails a study."""
    if not study.plots:
        return []
    from rbm_tune.plots import study_from_trials, write_plots

    try:
        objectives = study.objectives or ((study.metric, study.mode),)
        names = [m for m, _ in objectives]
        directions = ["maximize" if d == "max" else "minimize" for _, d in objectives]
        # a multi-objective front is drawn over finished trials only: an ASHA-stopped trial's
        # accuracy is from an early epoch; in trial order (the history plot's x axis), not by score
        rows = sorted(
            (r for r in done if not (study.objectives and r["asha_stopped"])), key=trial_order
        )
        values = [[r["metrics"].get(n, r.get(n)) for n in names] for r in rows]
        optuna_study = study_from_trials(
            space,
            [(r["config"], v) for r, v in zip(rows, values, strict=True)],
            directions,
            names=names,
        )
        return write_plots(optuna_study, out, log=log)
    except Exception as err:  # noqa: BLE001 (plots are a bonus)
        log(f"rbm-tune: note: no plots ({type(err).__name__}: {err})")
        return []


def _pareto(done: list[dict[str, Any]], study: Any, path: Path) -> list[dict[str, Any]]:
    """The finished trials no other finished trial dominates, as a markdown table at ``path``."""
    from rbm_tune.metrics import TEST_ACC
    from rbm_tune.plots import pareto_front

    names = [m for m, _ in study.objectives]
    directions = ["maximize" if d == "max" else "minimize" for _, d in study.objectives]
    rows = [r for r in done if not r["asha_stopped"]]
    points = [[float(r["metrics"][n]) for n in names] for r in rows]
    front = sorted(
        (rows[i] for i in pareto_front(points, directions)),
        key=lambda r: r["metrics"][names[0]],
        reverse=directions[0] == "maximize",
    )
    lines = [
        f"| trial | {' | '.join(names)} | test_acc (at best val) |",
        "| --- |" + " --- |" * (len(names) + 1),
    ]
    for r in front:
        cells = " | ".join(f"{r['metrics'][n]:.6g}" for n in names)
        lines.append(f"| {r['trial_id']} | {cells} | {r[TEST_ACC]:.4f} |")
    path.write_text(
        f"Pareto front of {len(front)} of {len(rows)} finished trials "
        f"({', '.join(f'{n} {d}' for n, d in study.objectives)}):\n\n" + "\n".join(lines) + "\n"
    )
    return front


def _close_lost_trial_runs(
    known: set[str], tracker: Any, log: Callable[[str], None], *, resumed: bool
) -> None:
    """Close, as KILLED, every trial run of the study whose trial is not in ``known`` (the
    trial ids of the study's ``ResultGrid``, :func:`_trial_id`).

    After a driver crash, a trial created after Ray Tune's last experiment snapshot is unknown
    to the restored Tuner, which runs a new trial in its place. Its run is lost in one of two
    states: still RUNNING (it was cut short) or FINISHED (it ended, even ASHA stopped it, before
    the snapshot caught up: snapshots are throttled, so this happens whenever a short trial is
    created and ends between two of them). Either would otherwise count as one of the study's
    trials in MLflow. Run after the outbox is drained, so every live trial's run is FINISHED or
    FAILED by then; FAILED and KILLED runs are already history and stay as they are. FINISHED
    runs are only checked in a resumed study (a fresh one has no earlier driver) and only when
    the trials could be identified (``known`` is not empty).
    """
    from rbm_tune.tracking import TRIAL_TAG

    runs = tracker.trial_runs()
    lost = [
        (run, "lost when the study's driver was killed")
        for run in runs
        if run.info.status in ("RUNNING", "SCHEDULED")
    ]
    lost += [
        (
            run,
            "finished after Ray Tune's last snapshot before the study's driver was killed; the "
            "resumed study ran another trial in its place",
        )
        for run in runs
        if resumed
        and known
        and run.info.status == "FINISHED"
        and run.data.tags.get(TRIAL_TAG) not in known
    ]
    for run, why in lost:
        tracker.close_orphan(run.info.run_id, why)
    if lost:
        log(
            f"closed {len(lost)} MLflow run(s) of trials lost when the study was killed, as KILLED"
        )
