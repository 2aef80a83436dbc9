"""Reachability: every corner of a space is built into a valid :class:`TrialConfig`.

:func:`check_reachable` builds the trial config of the default point and of every corner
(all parameters low, all high, each parameter's every extreme or choice with the others low
and then high) through ``optuna.trial.FixedTrial``, so a space that can express an invalid
trial (``k`` reaching ``num_experts``, a dropout above 1) fails when it is loaded, with one
line naming the key, the corner and the fix (:func:`reachability_error`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rbm_tune.config import RENAMED, SECTIONS, TrialConfig
from rbm_tune.errors import ConfigError, SpaceError
from rbm_tune.space.conditions import describe
from rbm_tune.space.params import Param, pick_values, suggest_all
from rbm_tune.space.values import is_int, one_line

__all__ = [
    "check_reachable",
    "corner_points",
    "current_name",
    "reachability_error",
    "to_config",
]


def current_name(flat: str) -> str:
    """``student.vq_coeff`` (or ``student.vq_coeff.is_zero``) -> ``student.vq_coef``(...)."""
    section, _, rest = flat.partition(".")
    key, dot, suffix = rest.partition(".")
    return f"{section}.{RENAMED[key]}{dot}{suffix}" if key in RENAMED else flat


def to_config(
    path: Path, params: tuple[Param, ...], fixed: Mapping[str, Any], sampled: Mapping[str, Any]
) -> TrialConfig:
    """Raises SpaceError for wrong keys and the raw ConfigError for invalid values.

    A renamed key (``student.vq_coeff``, as in the trials of a study begun before the rename
    and resumed) is read under its new name.
    """
    sampled = {current_name(key): value for key, value in sampled.items()}
    allowed = {p.name for p in params} | {p.zero_name for p in params if p.or_zero}
    unknown = sorted(set(sampled) - allowed)
    if unknown:
        raise SpaceError(
            f"{path}: {unknown[0]}: not searched by this space; pass only {sorted(allowed)}"
        )
    values = dict(fixed)
    for p in params:
        if not p.active(values):  # not drawn: the schema's default (a model that ignores it)
            if p.name in sampled or p.zero_name in sampled:
                raise SpaceError(
                    f"{path}: {p.name}: drawn only when {describe(p.when)}; drop it here"
                )
            continue
        if p.name in sampled:
            values[p.name] = sampled[p.name]
        elif p.or_zero and sampled.get(p.zero_name) is True:
            values[p.name] = 0
        else:
            raise SpaceError(f"{path}: {p.name}: missing; pass every searched parameter")
    nested: dict[str, Any] = {section: {} for section in SECTIONS}
    for key, value in values.items():
        section, _, name = key.partition(".")
        if name:
            nested[section][name] = value
        else:
            nested[key] = value
    return TrialConfig.from_mapping(nested)


def reachability_error(
    path: Path,
    params: tuple[Param, ...],
    err: ConfigError,
    known: Mapping,
    base: str,
    picks: Mapping,
) -> SpaceError:
    """Words a ConfigError met at a corner: the key, where it happens and the fix."""
    message = one_line(str(err))
    names = {p.name for p in params}
    match = re.search(r"\b(?:teacher|student|distill)\.\w+", message)
    key = match.group(0) if match else next(iter(picks), "config")
    k: Any = known.get("student.k")
    experts: Any = known.get("student.num_experts")
    if key == "student.k" and is_int(k) and is_int(experts) and k >= experts:
        if "student.k" in names:
            return SpaceError(
                f"{path}: student.k: can reach k={k} while student.num_experts="
                f"{experts}, but k must be < num_experts; bound k by the expert "
                "count: k: {int: [1, num_experts - 1]}"
            )
        return SpaceError(
            f"{path}: student.num_experts: can reach {experts}, not above the "
            f"fixed k={k} (k must be < num_experts); raise its lower bound to "
            f"{k + 1} or search k: {{int: [1, num_experts - 1]}}"
        )
    drawn_where = {p.name: p.when for p in params if p.when and p.name not in known}
    if key in drawn_where:  # a conditional parameter not drawn here: its fix is its when
        message = (
            f"{message.split('; ')[0]}; {key} is not drawn there (only when "
            f"{describe(drawn_where[key])}) and holds its default: widen its when"
        )
    kinds = {p.name: p.kind for p in params}
    fixes = {None: f"change {key}", "categorical": f"drop that choice of {key}"}
    fix = "" if "; " in message else f"; {fixes.get(kinds.get(key), f'narrow the range of {key}')}"
    if key not in names and not picks:  # a fixed value that is wrong by itself
        return SpaceError(f"{path}: {key}: {message}{fix}")
    ends = {"default": "its default", "low": "its lower end", "high": "its upper end"}[base]
    at = ", ".join(f"{n}={known.get(n, 0)}" for n in picks)
    at = f"{at} and every other parameter at {ends}" if at else f"every parameter at {ends}"
    return SpaceError(f"{path}: {key}: with {at}, {message}{fix}")


def corner_points(
    path: Path, params: tuple[Param, ...], fixed: dict[str, Any]
) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(base, picks, FixedTrial values) of every distinct corner, the default point first:
    every parameter at its default / lower / upper end, then each parameter at each of its
    ends or choices with the others at their lower or upper ends."""
    corners: list[tuple[str, dict[str, Any]]] = [("default", {}), ("low", {}), ("high", {})]
    for p in params:
        ends: list[Any] = list(range(len(p.choices))) if p.choices else ["lo", "hi"]
        ends += ["zero"] if p.or_zero else []
        corners += [
            (base, {**_enabling(params, p, base), p.name: end})
            for end in ends
            for base in ("low", "high")
        ]
    seen: set[str] = set()
    for base, picks in corners:
        values = pick_values(path, params, fixed, base, picks)
        if repr(values) not in seen:
            seen.add(repr(values))
            yield base, picks, values


def _enabling(params: tuple[Param, ...], p: Param, base: str) -> dict[str, int]:
    """Picks that make ``p`` drawn (its conditions, and theirs): each condition's first
    allowed choice at the ``"low"`` corners and its last at the ``"high"`` ones, so every
    family's parameters reach their ends with that family's model."""
    by_name = {q.name: q for q in params}
    picks: dict[str, int] = {}
    for name, allowed in p.when:
        cond = by_name[name]
        picks.update(_enabling(params, cond, base))
        choice = allowed[0] if base == "low" else allowed[-1]
        picks[name] = cond.choices.index(choice)
    return picks


def check_reachable(
    path: Path, params: tuple[Param, ...], fixed: dict[str, Any]
) -> tuple[TrialConfig, int]:
    """Build the TrialConfig of every corner; return the default one and the longest trial."""
    from optuna.trial import FixedTrial

    configs: list[TrialConfig] = []
    for base, picks, values in corner_points(path, params, fixed):
        sampled = suggest_all(params, FixedTrial(values), fixed)
        try:
            configs.append(to_config(path, params, fixed, sampled))
        except SpaceError:
            raise
        except ConfigError as err:
            raise reachability_error(
                path, params, err, {**fixed, **sampled}, base, picks
            ) from None
    # ASHA's time is post-switch epochs (rbm_tune.study.trainable): pretraining does not count
    longest = max(c.distill.max_epochs for c in configs)
    return configs[0], longest
