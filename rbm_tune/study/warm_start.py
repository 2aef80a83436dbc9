"""Warm start: an earlier study's finished trials as evaluated points for a new study's searcher.

``--warm-start STUDY`` (issue 24) names an earlier study folder (one holding ``trials.json``, as
:mod:`rbm_tune.study.summary` writes it) or its ``results.csv`` (read through the ``trials.json``
beside it: ``results.csv`` holds no configs). :func:`load_rows` reads its trials, best first;
:func:`warm_points` keeps those whose sampled parameters the new space has, with values inside its
ranges, and returns them as ``points_to_evaluate`` / ``evaluated_rewards`` for Ray's
``OptunaSearch`` (best first, so the earlier best is the first point), plus one line saying how
many were dropped and why.

Not yet wired into ``rbm-tune study`` (the ``--warm-start`` option, the MLflow tag and the
``--resume`` guard are still to do).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.distributions import BaseDistribution
from ray.tune.search.sample import Categorical, Domain, Float, Integer

from rbm_tune.errors import ConfigError
from rbm_tune.study._compat import distribution_contains

__all__ = ["WarmPoints", "WarmStartError", "load_rows", "warm_points"]


class WarmStartError(ConfigError):
    """A ``--warm-start`` source that cannot be read."""


@dataclass(frozen=True)
class WarmPoints:
    """Points for the searcher, their objective values, and what was dropped."""

    points: list[dict[str, Any]]
    rewards: list[float]
    dropped: int
    note: str  # one line; empty when nothing was dropped


def load_rows(source: str | Path) -> list[dict[str, Any]]:
    """The trials of the study at ``source`` (its folder or its ``results.csv``), best first."""
    path = Path(source)
    folder = path.parent if path.name == "results.csv" else path
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
