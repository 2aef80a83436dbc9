"""A searched hyperparameter (:class:`Param`), its bounds (:class:`Bound`) and its values.

A bound may name an earlier parameter, so a range is resolved against the values drawn before
it (``known``). :func:`pick_values` gives the values of one corner of the space (every
parameter low, high, at its default, or one of them at an end), which
:mod:`rbm_tune.space.corners` builds into trial configs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rbm_tune.errors import SpaceError
from rbm_tune.space.values import one_line

if TYPE_CHECKING:
    import optuna

__all__ = [
    "ZERO_SUFFIX",
    "Bound",
    "Param",
    "checked_range",
    "effective_values",
    "on_grid",
    "pick_values",
    "suggest_all",
]

# the Optuna parameter of an ``or_zero`` switch is ``<name>.is_zero`` (searcher state pickled by
# running studies holds these names: never change them)
ZERO_SUFFIX = ".is_zero"


@dataclass(frozen=True)
class Bound:
    """One end of a range: ``terms`` are (earlier parameter or None, offset); ``agg`` joins."""

    text: str
    terms: tuple[tuple[str | None, float], ...]
    agg: str = "min"

    @property
    def refs(self) -> tuple[str, ...]:
        return tuple(ref for ref, _ in self.terms if ref is not None)

    def value(self, known: Mapping[str, Any]) -> float:
        values = [(known[ref] if ref else 0) + offset for ref, offset in self.terms]
        return min(values) if self.agg == "min" else max(values)


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter; ``name`` is its flat name, e.g. ``student.k``."""

    name: str
    kind: str  # "int", "float" or "categorical"
    low: Bound | None = None
    high: Bound | None = None
    choices: tuple[Any, ...] = ()
    log: bool = False
    step: float | None = None
    or_zero: bool = False
    default: Any = None  # None: the first choice, or the (geometric) middle of the range
    # drawn only where every (earlier categorical parameter, its allowed choices) holds
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    @property
    def zero_name(self) -> str:
        """The Optuna name of the ``or_zero`` switch."""
        return f"{self.name}{ZERO_SUFFIX}"

    def active(self, known: Mapping[str, Any]) -> bool:
        """Whether it is drawn, given the values drawn before it (``known``): every parameter
        its ``when`` names was drawn, with one of the allowed choices."""
        return all(name in known and known[name] in allowed for name, allowed in self.when)

    @property
    def refs(self) -> tuple[str, ...]:
        """The earlier parameters its bounds name."""
        return self.low.refs + self.high.refs if self.low and self.high else ()

    def range(self, known: Mapping[str, Any]) -> tuple[Any, Any]:
        """(lo, hi) given the values of the earlier parameters in ``known``."""
        assert self.low is not None and self.high is not None
        lo, hi = self.low.value(known), self.high.value(known)
        return (int(lo), int(hi)) if self.kind == "int" else (float(lo), float(hi))

    def suggest(self, trial: optuna.trial.BaseTrial, known: Mapping[str, Any]) -> dict[str, Any]:
        """Draw this parameter with ``trial.suggest_*`` calls only (Ray's define-by-run rule)."""
        if self.kind == "categorical":
            return {self.name: trial.suggest_categorical(self.name, list(self.choices))}
        out: dict[str, Any] = {}
        if self.or_zero:
            out[self.zero_name] = trial.suggest_categorical(self.zero_name, [False, True])
            if out[self.zero_name]:
                out[self.name] = 0 if self.kind == "int" else 0.0
                return out
        lo, hi = self.range(known)
        if self.kind == "int":
            step = int(self.step or 1)
            out[self.name] = trial.suggest_int(self.name, lo, hi, step=step, log=self.log)
        else:
            out[self.name] = trial.suggest_float(self.name, lo, hi, step=self.step, log=self.log)
        return out


def suggest_all(params: tuple[Param, ...], trial: Any, fixed: Mapping) -> dict[str, Any]:
    """Draw every active parameter in order (an inactive one is not drawn at all: Optuna's
    conditional space, and the trial config gets the schema's default for it)."""
    known = dict(fixed)
    out: dict[str, Any] = {}
    for param in params:
        if not param.active(known):
            continue
        drawn = param.suggest(trial, known)
        out.update(drawn)
        known[param.name] = drawn[param.name]
    return out


def effective_values(sampled: Mapping[str, Any]) -> dict[str, Any]:
    """``sampled`` (a define-by-run dict or Optuna's parameters) under the space's own names.

    The ``<name>.is_zero`` switches are Optuna's encoding of ``or_zero``, not hyperparameters:
    they are dropped, and a switch that chose zero gives ``<name>`` the value 0 where the dict
    lacks it. What MLflow logs as a trial's params.
    """
    out = {k: v for k, v in sampled.items() if not k.endswith(ZERO_SUFFIX)}
    for key, chose_zero in sampled.items():
        name = key.removesuffix(ZERO_SUFFIX)
        if key != name and chose_zero is True:
            out.setdefault(name, 0)
    return out


def _when(p: Param, known: Mapping[str, Any]) -> str:
    return f" when {', '.join(f'{r}={known[r]}' for r in p.refs)}" if p.refs else ""


def on_grid(span: float, step: float | None) -> bool:
    return not step or Decimal(str(span)) % Decimal(str(step)) == 0


def checked_range(path: Path, p: Param, known: Mapping[str, Any]) -> tuple[Any, Any]:
    """The resolved range of ``p``, or a SpaceError saying why it is unusable."""
    assert p.low is not None and p.high is not None
    lo, hi = p.range(known)
    text, when = f"[{p.low.text}, {p.high.text}]", _when(p, known)
    problem = None
    if lo > hi and p.refs:
        problem = f"range {text} is empty ({lo} > {hi}){when}; narrow {', '.join(p.refs)}"
    elif lo > hi:
        problem = f"range {text} is reversed; swap the bounds: [{p.high.text}, {p.low.text}]"
    elif lo == hi and not p.refs:
        problem = f"range {text} holds one value; write the fixed value {lo} instead"
    elif p.log and lo <= 0:
        problem = f"log range {text} starts at {lo}{when}; use lo > 0 (or_zero: true adds 0)"
    elif p.or_zero and lo <= 0:
        problem = f"or_zero range {text} starts at {lo}{when}; or_zero adds 0 itself: use lo > 0"
    elif not on_grid(hi - lo, p.step):
        problem = f"step {p.step} does not divide {text}{when}; make hi - lo a multiple of it"
    if problem:
        raise SpaceError(one_line(f"{path}: {p.name}: {problem}"))
    return lo, hi


def _middle(p: Param, lo: float, hi: float) -> float:
    mid = math.sqrt(lo * hi) if p.log else (lo + hi) / 2
    step = p.step or (1 if p.kind == "int" else None)
    if step:
        mid = lo + step * math.floor((mid - lo) / step)
    return int(mid) if p.kind == "int" else mid


def pick_values(
    path: Path, params: tuple[Param, ...], fixed: Mapping[str, Any], base: str, picks: Mapping
) -> dict[str, Any]:
    """FixedTrial parameters of one corner: each parameter at ``picks[name]``, else ``base``.

    A pick is "low" / "high" (the smallest / largest reachable value), "default", "lo" / "hi"
    (the range's ends), "zero" (``or_zero``) or the index of a categorical choice.
    """
    known = dict(fixed)
    out: dict[str, Any] = {}
    for p in params:
        if not p.active(known):
            continue
        pick = picks.get(p.name, base)
        if p.kind == "categorical":
            if pick == "default":
                value = p.choices[0] if p.default is None else p.default
            else:
                value = p.choices[{"low": 0, "high": -1}.get(pick, pick)]
            out[p.name] = known[p.name] = value
            continue
        pick = {"low": "zero" if p.or_zero else "lo", "high": "hi"}.get(pick, pick)
        if pick == "zero" or (pick == "default" and p.or_zero and p.default == 0):
            out[p.zero_name], known[p.name] = True, 0
            continue
        lo, hi = checked_range(path, p, known)
        value = {"lo": lo, "hi": hi}.get(pick)
        if value is None:
            value = _middle(p, lo, hi) if p.default is None else p.default
            if not lo <= value <= hi or not on_grid(value - lo, p.step):
                where = f"[{lo}, {hi}]{_when(p, known)}"
                raise SpaceError(f"{path}: {p.name}: default {value} lies off {where}; move it")
        if p.or_zero:
            out[p.zero_name] = False
        out[p.name] = known[p.name] = value
    return out
