"""Warm start: an earlier study's finished trials as evaluated points for a new study's searcher.

``--warm-start STUDY`` (issue 24) names an earlier study folder (one holding ``trials.json``, as
:mod:`rbm_tune.study.summary` writes it) or its ``results.csv`` (read through the ``trials.json``
beside it: ``results.csv`` holds no configs). :func:`load_rows` reads its trials, best first;
:func:`warm_points` keeps those whose sampled parameters the new space has, with values inside its
ranges, and returns them as ``points_to_evaluate`` / ``evaluated_rewards`` for Ray's
``OptunaSearch`` (best first, so the earlier best is the first point), plus one line saying how
many were dropped and why.

For ``rbm-tune --space FILE --warm-start STUDY`` (define-by-run spaces, whose ranges may depend
on earlier parameters, which Ray's ``evaluated_rewards`` does not take), :func:`load_warm_start`
replays each earlier finished trial's sampled constants through the new space's
``define_by_run`` on an ``optuna.trial.FixedTrial`` (as :mod:`rbm_tune.plots` does), keeps it
where every parameter the new space draws is there and inside the distribution it draws from, and
builds a COMPLETE ``optuna.trial.FrozenTrial`` valued in the new study's metric(s).
:meth:`rbm_tune.study.searcher.TrialSearch.add_warm_start` adds them to the searcher's Optuna
study before its first suggestion and enqueues the earlier best as its first trial. Only the
names and ranges of parameters matter: the earlier study may be on another dataset.

The study folder's ``warm_start.json`` (:data:`RECORD`, copied into ``study.json`` by the summary)
says which studies were given: ``--resume`` never adds them again (the restored searcher already
holds them; it records the same in its pickled state).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial
from ray.tune.search.sample import Categorical, Domain, Float, Integer

from rbm_tune.errors import ConfigError
from rbm_tune.study._compat import distribution_contains

__all__ = [
    "RECORD",
    "WarmPoints",
    "WarmStart",
    "WarmStartError",
    "check_resume",
    "load_rows",
    "load_warm_start",
    "read_record",
    "resolve_source",
    "study_folder",
    "warm_points",
    "write_record",
]

# the study folder's record of the studies a study was warm-started from
RECORD = "warm_start.json"


class WarmStartError(ConfigError):
    """A ``--warm-start`` source that cannot be read."""


@dataclass(frozen=True)
class WarmPoints:
    """Points for the searcher, their objective values, and what was dropped."""

    points: list[dict[str, Any]]
    rewards: list[float]
    dropped: int
    note: str  # one line; empty when nothing was dropped


def study_folder(path: Path) -> Path:
    """The study folder a ``--warm-start`` path names: the folder itself, or its results.csv's
    (the trials.json beside it holds the configs)."""
    return path.parent if path.name == "results.csv" else path


def load_rows(source: str | Path) -> list[dict[str, Any]]:
    """The trials of the study at ``source`` (its folder or its ``results.csv``), best first."""
    folder = study_folder(Path(source))
    trials = folder / "trials.json"
    if not trials.is_file():
        raise WarmStartError(
            f"--warm-start {source}: no trials.json there; name a finished study's folder "
            "or its results.csv"
        )
    try:
        rows = json.loads(trials.read_text())
    except (OSError, ValueError) as exc:
        raise WarmStartError(f"--warm-start {source}: cannot read {trials}: {exc}") from None
    if not isinstance(rows, list):
        raise WarmStartError(f"--warm-start {source}: {trials} is not a list of trials")
    return [r for r in rows if isinstance(r, dict)]


_SEARCHED = (Domain, BaseDistribution)


def _inside(domain: Any, value: Any) -> bool:
    if isinstance(domain, BaseDistribution):  # e.g. from optuna.trial.FixedTrial.distributions
        return distribution_contains(domain, value)
    if not isinstance(domain, Domain):
        return bool(domain == value)  # a constant in the new space
    if isinstance(domain, Categorical):
        return value in domain.categories
    if isinstance(domain, (Float, Integer)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if isinstance(domain, Integer) and value != int(value):
            return False
        upper_ok = value < domain.upper if isinstance(domain, Integer) else value <= domain.upper
        return bool(domain.lower <= value and upper_ok)
    return False


def warm_points(
    rows: list[dict[str, Any]], space: dict[str, Any], metric: str, mode: str
) -> WarmPoints:
    """Rows whose sampled values fit ``space`` as evaluated points.

    ``space`` maps a name to a Ray domain, an Optuna distribution or a constant.

    A parameter the earlier study sampled but the new space lacks is left out of the point; a row
    missing one of the new space's searched parameters, holding a value outside its range, or
    without a finite ``metric`` is dropped. Order is kept (best first). ``mode`` only checks.
    """
    if mode not in ("min", "max"):
        raise WarmStartError(f"mode {mode!r} is not 'min' or 'max'")
    searched = {k: d for k, d in space.items() if isinstance(d, _SEARCHED)}
    points, rewards = [], []
    no_value = outside = missing = 0
    for row in rows:
        value = row.get(metric)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            no_value += 1
            continue
        sampled = row.get("sampled") or {}
        if any(k not in sampled for k in searched):
            missing += 1
            continue
        if not all(_inside(searched[k], sampled[k]) for k in searched):
            outside += 1
            continue
        points.append({k: sampled[k] for k in searched})
        rewards.append(float(value))
    dropped = no_value + outside + missing
    note = ""
    if dropped:
        why = [
            f"{n} {what}"
            for n, what in (
                (outside, "outside the new space's ranges"),
                (missing, "missing a searched parameter"),
                (no_value, f"without {metric}"),
            )
            if n
        ]
        note = f"warm start: dropped {dropped} of {len(rows)} earlier trials ({', '.join(why)})"
    return WarmPoints(points, rewards, dropped, note)


@dataclass(frozen=True)
class WarmStart:
    """The earlier trials for a new study's searcher, best first, and where they came from."""

    sources: tuple[str, ...]  # as given on the command line
    folders: tuple[str, ...]  # the study folders they name (absolute)
    trials: list[FrozenTrial]  # COMPLETE, in the new study's objective(s)
    note: str  # one line: how many were used and dropped, and why

    @property
    def best(self) -> dict[str, Any] | None:
        """Optuna parameters of the best earlier trial (the new study's first trial)."""
        return dict(self.trials[0].params) if self.trials else None

    def record(self) -> dict[str, Any]:
        """What the study folder and the searcher's saved state keep."""
        return {
            "sources": list(self.sources),
            "folders": list(self.folders),
            "points": len(self.trials),
        }

    def tags(self) -> dict[str, str]:
        """The MLflow parent run's tags."""
        return {
            "rbm_tune.warm_start": ", ".join(self.sources)[:5000],  # MLflow's tag limit
            "rbm_tune.warm_start_points": str(len(self.trials)),
        }


def resolve_source(source: str, storage: Path) -> Path:
    """The study folder ``source`` names: a path (a study folder or its ``results.csv``), else
    a study name in ``storage``."""
    path = Path(source).expanduser()
    if not path.exists() and (storage / source).exists():
        path = storage / source
    folder = study_folder(path)
    if not (folder / "trials.json").is_file():
        raise WarmStartError(
            f"--warm-start {source}: no finished study there (no trials.json in {folder}); name "
            f"a study in {storage}, a study folder or its results.csv"
        )
    return folder.resolve()


def _replay(space: Any, sampled: dict[str, Any]) -> tuple[dict, dict] | str:
    """The new space's Optuna parameters and distributions for ``sampled``, or why not:
    ``"outside"`` (a value off a choice), ``"missing"`` (a parameter it draws is not there)."""
    from optuna.trial import FixedTrial

    from rbm_tune.space.corners import current_name

    values = {current_name(k): v for k, v in sampled.items()}
    for param in space.params:  # an earlier space without or_zero: its zeros are the switch's
        if param.or_zero and param.zero_name not in values and param.name in values:
            values[param.zero_name] = values[param.name] == 0
        if param.kind == "categorical" and param.name in values:
            if values[param.name] not in param.choices:
                return "outside"  # FixedTrial would raise as for a missing one
    fixed = FixedTrial(values)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FixedTrial warns about values off a range
            space.define_by_run(fixed)
    except (ValueError, KeyError, TypeError):
        return "missing"
    return dict(fixed.params), dict(fixed.distributions)


def _value(row: dict[str, Any], metric: str) -> float | None:
    metrics = row.get("metrics")
    value = (metrics if isinstance(metrics, dict) else {}).get(metric, row.get(metric))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def load_warm_start(
    sources: list[str], storage: Path, space: Any, metrics: list[str], modes: list[str]
) -> WarmStart:
    """The finished trials of the studies ``sources`` names that fit ``space``, as COMPLETE
    Optuna trials valued in ``metrics``, best first by the first metric and its mode.

    Raises:
        WarmStartError: a source names no finished study, or its ``trials.json`` is unreadable.
    """
    from optuna.trial import create_trial

    folders = [resolve_source(s, storage) for s in sources]
    kept: list[tuple[float, FrozenTrial]] = []
    total = stopped = no_value = missing = outside = 0
    for source, folder in zip(sources, folders, strict=True):
        for row in load_rows(folder):
            total += 1
            values = [_value(row, m) for m in metrics]
            if row.get("asha_stopped"):
                stopped += 1
                continue
            if any(v is None for v in values):
                no_value += 1
                continue
            sampled = row.get("sampled")
            drawn = _replay(space, sampled) if isinstance(sampled, dict) else "missing"
            if drawn == "missing":
                missing += 1
                continue
            if isinstance(drawn, str):
                outside += 1
                continue
            params, dists = drawn
            if not all(distribution_contains(dists[k], params[k]) for k in dists):
                outside += 1
                continue
            trial = create_trial(
                params=params,
                distributions=dists,
                values=[float(v) for v in values if v is not None],
                user_attrs={
                    "rbm_tune.warm_start": source,
                    "rbm_tune.trial_id": row.get("trial_id"),
                },
            )
            kept.append((float(values[0] or 0.0), trial))
    kept.sort(key=lambda kv: kv[0], reverse=modes[0] == "max")  # stable: ties keep order
    why = [
        f"{n} {what}"
        for n, what in (
            (stopped, "stopped early by ASHA"),
            (outside, "outside the new space's ranges"),
            (missing, "missing a searched parameter"),
            (no_value, f"without {' or '.join(metrics)}"),
        )
        if n
    ]
    given = ", ".join(sources)
    note = f"warm start: {len(kept)} of {total} earlier trials from {given} given to the searcher"
    if why:
        note += f"; dropped {total - len(kept)} ({', '.join(why)})"
    return WarmStart(tuple(sources), tuple(str(f) for f in folders), [t for _, t in kept], note)


def write_record(experiment_dir: Path, warm: WarmStart) -> None:
    """Record in the study folder which studies this one was warm-started from."""
    from rbm_tune.atomic import atomic_write_bytes

    experiment_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(experiment_dir / RECORD, json.dumps(warm.record(), indent=1).encode())


def read_record(experiment_dir: Path) -> dict[str, Any] | None:
    """The study folder's warm-start record; None for a study not warm-started."""
    try:
        record = json.loads((experiment_dir / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def check_resume(experiment_dir: Path, sources: list[str], storage: Path) -> str:
    """``--resume`` with ``--warm-start``: the same studies the study started from are fine
    (already in its searcher: not added again); others are an error. Returns the line to log.
    """
    record = read_record(experiment_dir) or {}
    given = sorted(str(resolve_source(s, storage)) for s in sources)
    if sorted(record.get("folders") or []) != given:
        started = ", ".join(record.get("sources") or []) or "no warm start"
        raise WarmStartError(
            f"--warm-start with --resume: study {experiment_dir.name!r} started with "
            f"{started}; earlier trials are given to a searcher only when a study starts: resume "
            "without --warm-start, or start a new study (--name) warm-started from both"
        )
    return (
        f"warm start: the {record.get('points', 0)} earlier trials of "
        f"{', '.join(record.get('sources') or [])} are already in the resumed searcher; not added "
        "again"
    )
