"""Conditional parameters: ``when:``, and the student family's implied conditions.

A parameter may be drawn only for some choices of an earlier categorical parameter::

    student:
      model: {categorical: [mlp, moe, rbm]}
      num_experts: {int: [2, 8]}                 # implied: when: {student.model: [moe, rbm]}
      k: {int: [1, num_experts - 1]}             # implied as well
      router: {categorical: [reference, noisy_topk], when: {student.model: [moe]}}
    distill:
      krd_bins: {int: [10, 100], when: {distill.reliable_sampling: [true]}}

Where ``student.model`` is searched, a key only some models read (:data:`~rbm_tune.config.
FAMILY_KEYS`: ``num_experts``, ``k``, ``router``, ...) is drawn only for those models without a
``when:``; a ``when:`` on ``student.model`` that lists a model which ignores the key is an
error. A parameter that is not drawn is not an Optuna parameter of that trial (TPE's conditional
space), is not logged to MLflow, and the trial config holds the schema's default for it.

:func:`conditions` checks one parameter's ``when:`` against the parameters before it and
returns the conditions it is drawn under; every error is one line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rbm_tune.config import ALIASES, FAMILY_KEYS, RENAMED
from rbm_tune.errors import SpaceError
from rbm_tune.space.params import Param

__all__ = ["MODEL", "conditions", "describe", "ignored_by_model"]

MODEL = "student.model"

When = tuple[tuple[str, tuple[Any, ...]], ...]


def describe(when: When) -> str:
    """``student.model in [moe, rbm]`` (conditions joined by ``and``)."""
    return " and ".join(f"{name} in {list(allowed)}" for name, allowed in when)


def ignored_by_model(sampled: Mapping[str, Any]) -> set[str]:
    """The family keys the trial's student ignores, where ``student.model`` was drawn
    (``sampled``: a define-by-run dict): not logged to MLflow, even fixed ones."""
    model = sampled.get(MODEL)
    if model is None:
        return set()
    return {key for key, models in FAMILY_KEYS.items() if model not in models}


def _flat(name: str, key: object) -> str:
    if not isinstance(key, str):
        return repr(key)
    section, dot, rest = key.partition(".")
    if not dot:
        section, rest = name.split(".")[0], key
    return f"{section}.{ALIASES.get(rest, RENAMED.get(rest, rest))}"


def conditions(
    fail: Callable[[str, str], SpaceError],
    param: Param,
    spec: object,
    before: Mapping[str, Param],
    scalar: Callable[[str, Any], Any],
) -> When:
    """The conditions ``param`` is drawn under: its ``when:`` (``spec``, None if unwritten) plus
    the implied family condition.

    ``before`` holds the searched parameters above it (file order), ``fail(key, message)`` makes
    the one-line error and ``scalar(name, value)`` checks a choice against a field's type.
    """
    name = param.name
    written: list[tuple[str, tuple[Any, ...]]] = []
    if spec is not None:
        if not isinstance(spec, Mapping) or not spec:
            raise fail(
                name,
                f"when must map an earlier categorical parameter to its choices, got {spec!r}; "
                "e.g. when: {student.model: [moe, rbm]}",
            )
        for key, choices in spec.items():
            ref = _flat(name, key)
            if ref not in before:
                where = "is not searched above it" if ref != name else "is the parameter itself"
                raise fail(
                    name,
                    f"when names {key!r}, which {where}; name a categorical parameter "
                    "searched earlier in the file (the file order is the sampling order)",
                )
            cond = before[ref]
            if cond.kind != "categorical":
                raise fail(
                    name,
                    f"when names {ref}, a {cond.kind} range; a condition needs a categorical "
                    f"parameter: write {ref}: {{categorical: [...]}}",
                )
            listed = choices if isinstance(choices, list) else [choices]
            values = [scalar(ref, c) for c in listed]
            off = [v for v in values if v not in cond.choices]
            if off or not values:
                raise fail(
                    name,
                    f"when lists {off or listed} for {ref}, not among its choices "
                    f"{list(cond.choices)}; list some of those",
                )
            written.append((ref, tuple(c for c in cond.choices if c in values)))
    users = FAMILY_KEYS.get(name)
    model = before.get(MODEL)
    if users and model is not None:
        wrote = dict(written)
        if MODEL in wrote:
            ignore = [m for m in wrote[MODEL] if m not in users]
            if ignore:
                keep = [m for m in wrote[MODEL] if m in users] or list(users)
                raise fail(
                    name,
                    f"when lists {ignore} for {MODEL}, but such a student ignores {name} (read "
                    f"by {list(users)} only); write when: {{{MODEL}: [{', '.join(keep)}]}}",
                )
        else:
            used = tuple(m for m in model.choices if m in users)
            if not used:
                raise fail(
                    name,
                    f"no choice of {MODEL} {list(model.choices)} reads it (only "
                    f"{list(users)} do); drop it or add one of those models",
                )
            if len(used) < len(model.choices):
                written.append((MODEL, used))
    when = tuple(written)
    _check_refs(fail, param, when, before)
    return when


def _check_refs(
    fail: Callable[[str, str], SpaceError], param: Param, when: When, before: Mapping[str, Param]
) -> None:
    """A bound may name a conditional parameter only where that one is always drawn too."""
    mine = dict(when)
    for ref in param.refs:
        other = before.get(ref)
        if other is None:
            continue
        for cond, allowed in other.when:
            if cond not in mine or not set(mine[cond]) <= set(allowed):
                raise fail(
                    param.name,
                    f"a bound names {ref}, drawn only when {describe(other.when)}, but "
                    f"{param.name} is drawn {'when ' + describe(when) if when else 'always'}; "
                    f"add when: {{{cond}: {list(allowed)}}} (or bound it by numbers)",
                )
