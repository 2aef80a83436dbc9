"""Search spaces: a YAML file -> a validated :class:`SearchSpace` -> an Optuna define-by-run.

A space file mirrors a trial config (``rbm_tune/configs/*.yaml``), so every trial config is a
valid space with nothing searched. A scalar is fixed; a mapping is searched::

    study:                       # every key optional; defaults shown
      name: demo                 # default: the file's stem (MLflow experiment, Ray folder)
      num_trials: 8
      seed: 0                    # data split / teacher / student seed of every trial
      sampler_seed: 0            # TPE seed; default: seed
      metric: val_acc            # a per-epoch metric: val_acc, best_val_acc, train_acc, train_loss
      mode: max                  # default: max for accuracies, min for train_loss
      max_concurrent: null       # null: as many trials at once as resources allow
      max_failures: 2            # a trial that raises or dies is retried this many times
      report_every_s: 1.0        # a trial reports to Ray Tune at most this often, and at every
                                 # ASHA rung; MLflow still gets every epoch (0: every epoch)
      objectives: null           # two objectives, e.g. {val_acc: max, num_params: min}
      plots: true                # Optuna's plots of the trials at the end (false: skip them)
      asha: {grace_period: 10, reduction_factor: 2}
      resources: {cpus_per_trial: 1, gpus_per_trial: 0}   # fractional GPUs pack trials
                                 # memory_per_trial: 8GiB caps a CPU trial (default: the
                                 # host's memory / the trials at once); see rbm-tune plan
    dataset: cora                # required
    setting: transductive
    teacher: {model: sage, num_layers: 3, hidden_dim: 512}   # fixed: trained once, cached
    student:
      model: rbm
      num_experts: {int: [2, 16], default: 4}
      k: {int: [1, num_experts - 1]}        # a bound may name an earlier parameter
      hidden_dim: {categorical: [64, 128, 256]}
    distill:
      lr: {float: [5.0e-4, 2.0e-2], log: true}
      pretrain_epochs: {int: [0, 50], step: 5}
      weight_decay: {float: [1.0e-5, 1.0e-2], log: true, or_zero: true}

Rules:

- A distribution is a mapping with exactly one of ``int: [lo, hi]``, ``float: [lo, hi]`` or
  ``categorical: [choice, ...]``, plus optional ``log`` (true/false), ``step`` (not with
  ``log``), ``or_zero`` (spec §9's "{0} ∪ range") and ``default`` (the value
  :meth:`SearchSpace.default_params` proposes; the shipped dataset spaces set it to the spec's
  Table A value). Anything else (a list, null, an unknown option) is an error.
- A bound is a number, ``name``, ``name + n``, ``name - n`` or ``min(...)`` / ``max(...)`` of
  those, where ``name`` is a parameter set *earlier in the file* (``num_experts`` in the same
  section, or ``section.key``). Quote a ``min``/``max`` bound: YAML splits flow lists at commas
  (``k: {int: [1, "min(4, num_experts - 1)"]}``).
- A ``float`` distribution on an integer field is an error; an ``int`` one on a float field is
  fine; a true/false field is searched with ``categorical: [false, true]``. ``dataset``,
  ``setting``, ``seed`` and the whole ``teacher`` section are fixed: the teacher is trained once
  per study and shared by every trial.
- Keys are the trial-config keys (reference aliases such as ``lambda`` are accepted and renamed).
  Optuna and MLflow see the flat names ``student.num_experts``; the file order is the sampling
  order. Numbers that YAML 1.1 reads as strings (``1e-4``) are accepted as numbers; a key
  written twice is an error. ``seed`` may also sit at the top level, as in a trial config.
- ``or_zero`` is encoded for Optuna as two parameters, so define-by-run needs only ``suggest_*``
  calls and TPE sees a clean conditional space: ``<name>.is_zero`` (categorical
  ``[False, True]``) and, only when it is False, ``<name>`` itself. The dict
  :meth:`SearchSpace.define_by_run` returns always holds the final value under ``<name>``.
- ASHA's ``max_t`` is derived, never written: the largest reachable
  ``distill.max_epochs + distill.pretrain_epochs`` (``time_attr`` is the reported epoch).

:func:`load_space` validates the whole file before anything runs: syntax, unknown keys, types,
ranges, bounds, the study block, and every reachable corner of the space (all parameters low,
all high, each parameter's every extreme or choice with the others low and then high) is built
into a :class:`~rbm_tune.config.TrialConfig` through ``optuna.trial.FixedTrial``. Every error is
a one-line :class:`~rbm_tune.errors.SpaceError`: ``<file>: <key>: <what is wrong>; <fix>``.

This module imports neither torch nor Ray; Optuna only when a file is validated.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_type_hints

import yaml

from rbm_tune.config import (
    ALIASES,
    DATASETS,
    SETTINGS,
    DistillSpec,
    StudentSpec,
    TeacherSpec,
    TrialConfig,
)
from rbm_tune.errors import ConfigError, SpaceError

if TYPE_CHECKING:
    import optuna

__all__ = [
    "SEARCH_METRICS",
    "SHIPPED_DIR",
    "Bound",
    "Param",
    "SearchSpace",
    "StudySettings",
    "load_space",
    "shipped_spaces",
]

SHIPPED_DIR = Path(__file__).resolve().parent / "search_spaces"
SECTIONS: dict[str, type] = {
    "teacher": TeacherSpec,
    "student": StudentSpec,
    "distill": DistillSpec,
}
TOP_KEYS = ("study", "dataset", "setting", "seed", "teacher", "student", "distill")
STUDY_KEYS = {
    "name": None,
    "num_trials": None,
    "seed": None,
    "sampler_seed": None,
    "metric": None,
    "mode": None,
    "max_concurrent": None,
    "max_failures": None,
    "report_every_s": None,
    "objectives": None,
    "plots": None,
    "asha": ("grace_period", "reduction_factor"),
    "resources": ("cpus_per_trial", "gpus_per_trial", "memory_per_trial"),
}
# The per-epoch metrics of rbm_tune.metrics and their direction, spelled out so that loading a
# space never imports torch (a test checks they match). A test accuracy is never one of them.
SEARCH_METRICS = {"val_acc": "max", "best_val_acc": "max", "train_acc": "max", "train_loss": "min"}
# Second objectives of a multi-objective study: properties of a student's architecture, known
# before it trains and reported with every epoch (rbm_tune.tune). Always minimised.
COST_METRICS = {"num_params": "min", "inference_ms_per_1k_nodes": "min"}

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_TERM = re.compile(
    rf"\s*(?:(?P<num>{_NUM})|(?P<ref>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?)"
    rf"(?:\s*(?P<sign>[-+])\s*(?P<off>{_NUM}))?)\s*"
)
_AGG = re.compile(r"\s*(min|max)\s*\((.*)\)\s*")
_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_KINDS = ("int", "float", "categorical")
_OPTIONS = ("log", "step", "or_zero", "default")
_FIELD_KIND = {bool: "true/false", int: "integer", float: "number", str: "string"}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _is_num(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> int | float | None:
    """A YAML number, or a string YAML 1.1 did not read as one (``1e-4``); else None."""
    if _is_num(value):
        return value  # type: ignore[return-value]
    if isinstance(value, str) and re.fullmatch(_NUM, value.strip()):
        text = value.strip()
        return int(text) if re.fullmatch(r"[-+]?\d+", text) else float(text)
    return None


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

    @property
    def zero_name(self) -> str:
        """The Optuna name of the ``or_zero`` switch."""
        return f"{self.name}.is_zero"

    @property
    def refs(self) -> tuple[str, ...]:
        """The earlier parameters its bounds name."""
        return self.low.refs + self.high.refs if self.low and self.high else ()

    def range(self, known: Mapping[str, Any]) -> tuple[Any, Any]:
        """(lo, hi) given the values of the earlier parameters in ``known``."""
        assert self.low is not None and self.high is not None
        lo, hi = self.low.value(known), self.high.value(known)
        return (int(lo), int(hi)) if self.kind == "int" else (float(lo), float(hi))

    def suggest(self, trial: optuna.Trial, known: Mapping[str, Any]) -> dict[str, Any]:
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


@dataclass(frozen=True)
class StudySettings:
    """The ``study:`` block, flattened (``asha.grace_period`` -> ``grace_period``).

    ``asha_max_t`` is derived: the longest reachable trial in epochs (ASHA's ``time_attr`` is
    the reported epoch, which counts pretraining epochs too).
    """

    name: str
    num_trials: int = 8
    seed: int = 0
    sampler_seed: int = 0
    metric: str = "val_acc"
    mode: str = "max"
    max_concurrent: int | None = None
    max_failures: int = 2
    report_every_s: float = 1.0
    objectives: tuple[tuple[str, str], ...] = ()  # () or ((metric, mode), (cost, "min"))
    plots: bool = True
    grace_period: int = 10
    reduction_factor: float = 2
    asha_max_t: int = 1
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0
    # bytes a CPU trial may use (0: the host's memory / the trials that run at once on it);
    # a trial whose estimate (rbm_tune.memory) exceeds its share is not trained
    memory_per_trial: int = 0

    def __post_init__(self) -> None:
        metric, gpus, grace = self.metric, self.gpus_per_trial, self.grace_period
        factor = self.reduction_factor
        direction = SEARCH_METRICS.get(metric) if isinstance(metric, str) else None
        positive = "is not an integer >= 1; use a positive integer"
        checks = [
            ("name", isinstance(self.name, str) and _STUDY_NAME.fullmatch(self.name),
             "cannot name an MLflow experiment; use letters, digits, '.', '_' and '-'"),
            ("num_trials", _is_int(self.num_trials) and self.num_trials >= 1, positive),
            ("seed", _is_int(self.seed) and self.seed >= 0, "is not an integer >= 0; use e.g. 0"),
            ("sampler_seed", _is_int(self.sampler_seed) and self.sampler_seed >= 0,
             "is not an integer >= 0; use e.g. 0"),
            ("metric", not (isinstance(metric, str) and metric.startswith("test")),
             "is a test metric, which must never steer the search (spec §9); use val_acc"),
            ("metric", direction is not None, f"is unknown; choose one of {list(SEARCH_METRICS)}"),
            ("mode", self.mode == direction, f"does not fit {metric}; use {direction} (or omit)"),
            ("max_concurrent", self.max_concurrent is None
             or (_is_int(self.max_concurrent) and self.max_concurrent >= 1),
             "is not null or an integer >= 1; use null to fill the resources"),
            ("max_failures", _is_int(self.max_failures) and self.max_failures >= 0,
             "is not an integer >= 0; use e.g. 2 (0: a failed trial is not retried)"),
            ("report_every_s", _is_num(self.report_every_s) and self.report_every_s >= 0,
             "is not a number >= 0; use e.g. 1.0 (0: report every epoch)"),
            ("objectives", not self.objectives or (
                len(self.objectives) == 2 and self.objectives[0] == (metric, self.mode)
                and self.objectives[1][0] in COST_METRICS and self.objectives[1][1] == "min"),
             f"must be two: the search metric first ({metric}: {self.mode}), then one of "
             f"{sorted(COST_METRICS)} with min, e.g. {{{metric}: {self.mode}, num_params: min}}"),
            ("plots", isinstance(self.plots, bool),
             "is not true or false; use false to end a study without Optuna's plots"),
            ("asha.grace_period", _is_int(grace) and grace >= 1, positive),
            ("asha.grace_period", not _is_int(grace) or grace <= self.asha_max_t,
             f"exceeds the longest trial ({self.asha_max_t} epochs: distill.max_epochs + "
             f"pretrain_epochs); use at most {self.asha_max_t}"),
            ("asha.reduction_factor", _is_num(factor) and factor > 1,
             "is not a number > 1; use e.g. 2"),
            ("resources.cpus_per_trial", _is_num(self.cpus_per_trial) and self.cpus_per_trial > 0,
             "is not a number > 0; use e.g. 1"),
            ("resources.gpus_per_trial",
             _is_num(gpus) and gpus >= 0 and (gpus <= 1 or gpus == int(gpus)),
             "is not 0, a fraction of one GPU or a whole number; e.g. 0.25 packs 4 on a GPU"),
        ]  # fmt: skip
        for key, ok, message in checks:
            if not ok:
                value = getattr(self, key.rpartition(".")[2])
                raise SpaceError(_one_line(f"study.{key}: {value!r} {message}"))

    def replace(self, **changes: Any) -> StudySettings:
        """A validated copy with ``changes`` (e.g. the CLI's ``--trials`` or ``--name``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space; build it with :func:`load_space`.

    Attributes:
        path: the file it came from.
        digest: sha256 of the file's bytes (the space-file hash tag).
        study: the study settings.
        fixed: every hyperparameter that is not searched, by flat name (``dataset``,
            ``setting``, ``seed``, ``teacher.*``, ``student.*``, ``distill.*``, schema defaults
            included): ``{**fixed, **final values}`` is exactly ``config_for(...).flat()``.
        params: the searched hyperparameters in sampling (file) order.
    """

    path: Path
    digest: str
    study: StudySettings
    fixed: dict[str, Any]
    params: tuple[Param, ...]

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def define_by_run(self, trial: optuna.Trial) -> dict[str, Any]:
        """Optuna/Ray define-by-run: draw every parameter in file order.

        Returns:
            the flat dict of drawn constants: every Optuna parameter (``.is_zero`` switches
            included) and, for every searched hyperparameter, its final value under its name.
        """
        return _suggest_all(self.params, trial, self.fixed)

    def config_for(self, sampled: Mapping[str, Any]) -> TrialConfig:
        """Fixed values + ``sampled`` (a :meth:`define_by_run` dict) -> a validated TrialConfig.

        Raises:
            SpaceError: a key is not searched here, a searched one is missing, a value is invalid.
        """
        try:
            return _to_config(self.path, self.params, self.fixed, sampled)
        except SpaceError:
            raise
        except ConfigError as err:
            raise SpaceError(_one_line(f"{self.path}: {err}")) from None

    def default_params(self) -> dict[str, Any]:
        """Optuna parameters of the default point: each ``default:``, else the first choice or
        the (geometric) middle. For ``OptunaSearch(points_to_evaluate=[...])``."""
        return _pick_values(self.path, self.params, self.fixed, "default", {})

    def corners(self) -> list[tuple[str, TrialConfig]]:
        """(label, config) of the default point and every corner :func:`load_space` checked:
        ``"high"`` (every parameter at its upper end), ``"low, student.k=hi"``, ..."""
        from optuna.trial import FixedTrial

        out = []
        for base, picks, values in _corners(self.path, self.params, self.fixed):
            sampled = _suggest_all(self.params, FixedTrial(values), self.fixed)
            at = [f"{name}={sampled.get(name, 0)}" for name in picks]
            out.append((", ".join([base, *at]), self.config_for(sampled)))
        return out

    def default_config(self) -> TrialConfig:
        """The TrialConfig at :meth:`default_params`; with nothing searched, the file itself."""
        from optuna.trial import FixedTrial

        return self.config_for(self.define_by_run(FixedTrial(self.default_params())))


def _suggest_all(params: tuple[Param, ...], trial: Any, fixed: Mapping) -> dict[str, Any]:
    known = dict(fixed)
    out: dict[str, Any] = {}
    for param in params:
        drawn = param.suggest(trial, known)
        out.update(drawn)
        known[param.name] = drawn[param.name]
    return out


def _to_config(
    path: Path, params: tuple[Param, ...], fixed: Mapping[str, Any], sampled: Mapping[str, Any]
) -> TrialConfig:
    """Raises SpaceError for wrong keys and the raw ConfigError for invalid values."""
    allowed = {p.name for p in params} | {p.zero_name for p in params if p.or_zero}
    unknown = sorted(set(sampled) - allowed)
    if unknown:
        raise SpaceError(
            f"{path}: {unknown[0]}: not searched by this space; pass only {sorted(allowed)}"
        )
    values = dict(fixed)
    for p in params:
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


def _when(p: Param, known: Mapping[str, Any]) -> str:
    return f" when {', '.join(f'{r}={known[r]}' for r in p.refs)}" if p.refs else ""


def _on_grid(span: float, step: float | None) -> bool:
    return not step or Decimal(str(span)) % Decimal(str(step)) == 0


def _checked_range(path: Path, p: Param, known: Mapping[str, Any]) -> tuple[Any, Any]:
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
    elif not _on_grid(hi - lo, p.step):
        problem = f"step {p.step} does not divide {text}{when}; make hi - lo a multiple of it"
    if problem:
        raise SpaceError(_one_line(f"{path}: {p.name}: {problem}"))
    return lo, hi


def _middle(p: Param, lo: float, hi: float) -> float:
    mid = math.sqrt(lo * hi) if p.log else (lo + hi) / 2
    step = p.step or (1 if p.kind == "int" else None)
    if step:
        mid = lo + step * math.floor((mid - lo) / step)
    return int(mid) if p.kind == "int" else mid


def _pick_values(
    path: Path, params: tuple[Param, ...], fixed: Mapping[str, Any], base: str, picks: Mapping
) -> dict[str, Any]:
    """FixedTrial parameters of one corner: each parameter at ``picks[name]``, else ``base``.

    A pick is "low" / "high" (the smallest / largest reachable value), "default", "lo" / "hi"
    (the range's ends), "zero" (``or_zero``) or the index of a categorical choice.
    """
    known = dict(fixed)
    out: dict[str, Any] = {}
    for p in params:
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
        lo, hi = _checked_range(path, p, known)
        value = {"lo": lo, "hi": hi}.get(pick)
        if value is None:
            value = _middle(p, lo, hi) if p.default is None else p.default
            if not lo <= value <= hi or not _on_grid(value - lo, p.step):
                where = f"[{lo}, {hi}]{_when(p, known)}"
                raise SpaceError(f"{path}: {p.name}: default {value} lies off {where}; move it")
        if p.or_zero:
            out[p.zero_name] = False
        out[p.name] = known[p.name] = value
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key written twice in one mapping (YAML keeps the last)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if not isinstance(key, str | int | float | bool):
            continue  # an unhashable key is reported as an unknown key later
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,  # type: ignore[arg-type]
)


class _Parser:
    """Checks one file's YAML mapping: keys, types, distributions, bounds."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, message: str) -> SpaceError:
        return SpaceError(_one_line(f"{self.path}: {key}: {message}"))

    def check_keys(self, values: Mapping, allowed: list[str], prefix: str = "") -> None:
        for key in values:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                fix = f"did you mean {close[0]!r}?" if close else f"allowed: {allowed}"
                raise self.fail(f"{prefix}{key}", f"unknown key; {fix}")

    def mapping(self, key: str, value: object) -> Mapping:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(key, f"must be a mapping, got {value!r}; write {key}: {{k: v, ...}}")
        return value

    def parse(self, data: object) -> tuple[dict[str, Any], tuple[Param, ...], Mapping]:
        """Returns (fixed values written in the file, params, the raw study block)."""
        if not data or not isinstance(data, Mapping):
            raise self.fail("file", "not a mapping of keys; start from rbm-tune's demo.yaml")
        self.check_keys(data, list(TOP_KEYS))
        study = self.mapping("study", data.get("study"))
        self.check_keys(study, list(STUDY_KEYS), "study.")
        for name, sub_keys in STUDY_KEYS.items():
            if sub_keys:
                sub = self.mapping(f"study.{name}", study.get(name))
                if name == "asha" and "max_t" in sub:
                    raise self.fail("study.asha.max_t", "is derived from the epochs; delete it")
                self.check_keys(sub, list(sub_keys), f"study.{name}.")
        if "dataset" not in data:
            raise self.fail("dataset", f"missing; add dataset: <one of {list(DATASETS)}>")
        fixed: dict[str, Any] = {}
        for key, choices in (("dataset", DATASETS), ("setting", SETTINGS)):
            value = data.get(key, "transductive")
            if value not in choices or not isinstance(value, str):
                raise self.fail(key, f"unknown {key} {value!r}; choose one of {list(choices)}")
            fixed[key] = value
        if "seed" in data and "seed" in study and data["seed"] != study["seed"]:
            raise self.fail("seed", "differs from study.seed; keep only study.seed")
        fixed["seed"] = data.get("seed", study.get("seed", 0))
        if not _is_int(fixed["seed"]) or fixed["seed"] < 0:
            raise self.fail("seed", f"{fixed['seed']!r} must be an integer >= 0; e.g. seed: 0")
        entries: list[tuple[str, object]] = []
        for section in (key for key in data if key in SECTIONS):
            names = [f.name for f in fields(SECTIONS[section])]
            values = self.mapping(section, data[section])
            renamed = [ALIASES.get(key, key) for key in values]
            self.check_keys(dict.fromkeys(renamed), names, f"{section}.")
            if len(set(renamed)) < len(renamed):
                twice = next(k for k in renamed if renamed.count(k) > 1)
                raise self.fail(f"{section}.{twice}", "set twice via an alias; keep one")
            entries += [(f"{section}.{k}", v) for k, v in zip(renamed, values.values())]
        order = [name for name, _ in entries]
        params: list[Param] = []
        for index, (name, value) in enumerate(entries):
            section, _, key = name.partition(".")
            hint = get_type_hints(SECTIONS[section])[key]
            if isinstance(value, Mapping):
                params.append(self.param(name, hint, value, order[:index], order))
            else:
                fixed[name] = self.scalar(name, hint, value)
        return fixed, tuple(params), study

    def scalar(self, name: str, hint: Any, value: object) -> Any:
        """A fixed value (or a categorical choice) of the field's type."""
        if isinstance(value, list):
            raise self.fail(
                name, f"a list is not a value; to search write {{categorical: {value}}}"
            )
        if value is None:
            raise self.fail(name, "has no value; write one or delete the line")
        number = _number(value)
        if hint is bool and isinstance(value, bool) or hint is str and isinstance(value, str):
            return value
        if hint is float and number is not None:
            return float(number)
        if hint is int and _is_int(number):
            return number
        want = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
        raise self.fail(name, f"{value!r} is not {want[hint]}; write {want[hint]}")

    def param(self, name: str, hint: Any, spec: Mapping, before: list, order: list) -> Param:
        """A distribution mapping -> Param."""
        if name.startswith("teacher."):
            raise self.fail(
                name,
                "the teacher is trained once per study, so it is fixed; "
                "write a value (run one study per teacher)",
            )
        kinds = [k for k in _KINDS if k in spec]
        for key in spec:
            if key not in _KINDS + _OPTIONS:
                close = difflib.get_close_matches(str(key), _KINDS + _OPTIONS, n=1)
                fix = f"did you mean {close[0]!r}?" if close else f"options: {list(_OPTIONS)}"
                raise self.fail(name, f"unknown option {key!r}; {fix}")
        if len(kinds) != 1 or any(k not in _KINDS + _OPTIONS for k in spec):
            raise self.fail(
                name,
                f"got keys {sorted(map(str, spec))}, need exactly one of "
                f"{list(_KINDS)} plus options {list(_OPTIONS)}; e.g. "
                "{float: [0.001, 0.1], log: true}",
            )
        kind, options = kinds[0], {k: spec[k] for k in _OPTIONS if k in spec}
        fits = {bool: ("categorical",), int: ("int", "categorical"), str: ("categorical",)}
        if kind not in fits.get(hint, _KINDS):
            fix = {bool: "{categorical: [false, true]}", int: "{int: [lo, hi]}"}.get(hint)
            raise self.fail(
                name,
                f"a {kind} range does not fit this {_FIELD_KIND[hint]} field; "
                f"use {fix or '{categorical: [...]}'}",
            )
        for opt in ("log", "or_zero"):
            if opt in options and not isinstance(options[opt], bool):
                raise self.fail(
                    name, f"{opt} must be true or false, got {options[opt]!r}; write {opt}: true"
                )
        if kind == "categorical":
            return self.categorical(name, hint, spec[kind], options)
        ends = spec[kind]
        if not isinstance(ends, list) or len(ends) != 2:
            raise self.fail(
                name,
                f"{kind} needs [lo, hi], got {ends!r}; quote a min()/max() "
                'bound: [1, "min(4, num_experts - 1)"]',
            )
        low, high = (self.bound(name, kind, end, before, order) for end in ends)
        step, default = (options.get(k) for k in ("step", "default"))
        if step is not None:
            step = _number(step)
            if step is None or step <= 0 or (kind == "int" and not _is_int(step)):
                raise self.fail(
                    name, f"step {options['step']!r} is not a positive {kind}; write e.g. step: 2"
                )
            if options.get("log"):
                raise self.fail(name, "log and step cannot be combined (Optuna); drop one")
        if default is not None:
            default = _number(default)
            if default is None or (kind == "int" and not _is_int(default)):
                raise self.fail(
                    name, f"default {options['default']!r} is not a {kind}; use one from the range"
                )
            default = float(default) if kind == "float" else default
        log, or_zero = bool(options.get("log")), bool(options.get("or_zero"))
        param = Param(name, kind, low, high, (), log, step, or_zero, default)
        if not param.refs:
            _checked_range(self.path, param, {})
        return param

    def categorical(self, name: str, hint: Any, choices: object, options: Mapping) -> Param:
        if not isinstance(choices, list) or not choices:
            raise self.fail(
                name, f"categorical needs choices, got {choices!r}; write {{categorical: [a, b]}}"
            )
        for opt in ("log", "step", "or_zero"):
            if opt in options:
                raise self.fail(name, f"{opt} does not apply to a categorical; drop it")
        values = [self.scalar(name, hint, choice) for choice in choices]
        if len({repr(v) for v in values}) < len(values):
            raise self.fail(name, f"categorical {choices} repeats a choice; list each once")
        default = options.get("default")
        if default is not None and self.scalar(name, hint, default) not in values:
            raise self.fail(name, f"default {default!r} is not a choice; pick one of {values}")
        default = None if default is None else self.scalar(name, hint, default)
        return Param(name, "categorical", choices=tuple(values), default=default)

    def bound(self, name: str, kind: str, end: object, before: list, order: list) -> Bound:
        """``end`` (a number or an expression over earlier parameters) -> Bound."""
        number = _number(end)
        if number is not None and kind == "int" and not _is_int(number):
            raise self.fail(name, f"int bound {end!r} is not a whole number; use integers")
        if number is not None:
            return Bound(str(end), ((None, number),))
        agg = _AGG.fullmatch(end) if isinstance(end, str) else None
        parts = agg.group(2).split(",") if agg else [end]
        terms: list[tuple[str | None, float]] = []
        for part in parts:
            match = _TERM.fullmatch(part) if isinstance(part, str) else None
            if not match:
                raise self.fail(
                    name,
                    f"cannot read bound {end!r}; write a number, a name, "
                    "name + n, name - n or min(...) / max(...) of those",
                )
            offset = _number(match["num"] or match["off"] or 0)
            offset = -offset if match["sign"] == "-" else offset  # type: ignore[operator]
            if kind == "int" and not _is_int(offset):
                raise self.fail(name, f"int bound {end!r} is not a whole number; use integers")
            if match["num"]:
                terms.append((None, offset))  # type: ignore[arg-type]
                continue
            ref = match["ref"] if "." in match["ref"] else f"{name.split('.')[0]}.{match['ref']}"
            section, _, key = ref.partition(".")
            key = ALIASES.get(key, key)
            ref, hints = f"{section}.{key}", get_type_hints(SECTIONS.get(section, object))
            if key not in hints:
                raise self.fail(
                    name,
                    f"bound {end!r} names an unknown parameter "
                    f"{match['ref']!r}; name an earlier one, e.g. num_experts",
                )
            if ref not in before:
                where = "comes later in the file" if ref in order else "is not set in the file"
                raise self.fail(
                    name,
                    f"bound {end!r} names {ref}, which {where}; set it "
                    "above (the file order is the sampling order)",
                )
            if hints[key] not in ((int,) if kind == "int" else (int, float)):
                want = "an integer" if kind == "int" else "a number"
                raise self.fail(name, f"bound {end!r} names {ref}, not {want}; name {want}")
            terms.append((ref, offset))  # type: ignore[arg-type]
        return Bound(str(end), tuple(terms), agg.group(1) if agg else "min")


def _reachability_error(
    path: Path,
    params: tuple[Param, ...],
    err: ConfigError,
    known: Mapping,
    base: str,
    picks: Mapping,
) -> SpaceError:
    """Words a ConfigError met at a corner: the key, where it happens and the fix."""
    message = _one_line(str(err))
    names = {p.name for p in params}
    match = re.search(r"\b(?:teacher|student|distill)\.\w+", message)
    key = match.group(0) if match else next(iter(picks), "config")
    k, experts = known.get("student.k"), known.get("student.num_experts")
    if key == "student.k" and _is_int(k) and _is_int(experts) and k >= experts:
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
    kinds = {p.name: p.kind for p in params}
    fix = {None: f"change {key}", "categorical": f"drop that choice of {key}"}
    fix = "" if "; " in message else f"; {fix.get(kinds.get(key), f'narrow the range of {key}')}"
    if key not in names and not picks:  # a fixed value that is wrong by itself
        return SpaceError(f"{path}: {key}: {message}{fix}")
    ends = {"default": "its default", "low": "its lower end", "high": "its upper end"}[base]
    at = ", ".join(f"{n}={known.get(n, 0)}" for n in picks)
    at = f"{at} and every other parameter at {ends}" if at else f"every parameter at {ends}"
    return SpaceError(f"{path}: {key}: with {at}, {message}{fix}")


def _corners(
    path: Path, params: tuple[Param, ...], fixed: dict[str, Any]
) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(base, picks, FixedTrial values) of every distinct corner, the default point first:
    every parameter at its default / lower / upper end, then each parameter at each of its
    ends or choices with the others at their lower or upper ends."""
    corners: list[tuple[str, dict[str, Any]]] = [("default", {}), ("low", {}), ("high", {})]
    for p in params:
        picks: list[Any] = list(range(len(p.choices))) if p.choices else ["lo", "hi"]
        picks += ["zero"] if p.or_zero else []
        corners += [(base, {p.name: pick}) for pick in picks for base in ("low", "high")]
    seen: set[str] = set()
    for base, picks in corners:
        values = _pick_values(path, params, fixed, base, picks)
        if repr(values) not in seen:
            seen.add(repr(values))
            yield base, picks, values


def _check_reachable(
    path: Path, params: tuple[Param, ...], fixed: dict[str, Any]
) -> tuple[TrialConfig, int]:
    """Build the TrialConfig of every corner; return the default one and the longest trial."""
    from optuna.trial import FixedTrial

    configs: list[TrialConfig] = []
    for base, picks, values in _corners(path, params, fixed):
        sampled = _suggest_all(params, FixedTrial(values), fixed)
        try:
            configs.append(_to_config(path, params, fixed, sampled))
        except SpaceError:
            raise
        except ConfigError as err:
            raise _reachability_error(
                path, params, err, {**fixed, **sampled}, base, picks
            ) from None
    longest = max(c.distill.max_epochs + c.distill.pretrain_epochs for c in configs)
    return configs[0], longest


def shipped_spaces() -> list[str]:
    """File names of the spaces shipped in ``rbm_tune/search_spaces/``."""
    return sorted(p.name for p in SHIPPED_DIR.glob("*.yaml"))


def _find(path_or_name: str | Path) -> Path:
    given = Path(path_or_name)
    candidates = [given]
    if given.parent == Path("."):  # a bare name: working directory first, then shipped
        if not given.suffix:
            candidates.append(given.with_suffix(".yaml"))
        candidates += [SHIPPED_DIR / c.name for c in candidates]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise SpaceError(
        f"{path_or_name}: file: no such space here or among the shipped spaces; "
        f"pass a path or one of {shipped_spaces()}"
    )


def _objectives(path: Path, value: Any) -> tuple[tuple[str, str], ...]:
    """``study.objectives`` (a mapping metric -> max/min, in order) as ((metric, mode), ...)."""
    if value is None:
        return ()
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and v in ("max", "min") for k, v in value.items()
    ):
        raise SpaceError(
            _one_line(
                f"{path}: study.objectives: {value!r} is not a mapping of metric to max/min; "
                "e.g. objectives: {val_acc: max, num_params: min}"
            )
        )
    return tuple(value.items())


def _memory_per_trial(path: Path, value: Any) -> int:
    from rbm_tune.memory import parse_bytes

    if value is None:
        return 0
    try:
        return parse_bytes(value, "study.resources.memory_per_trial")
    except ConfigError as err:
        raise SpaceError(_one_line(f"{path}: {err}")) from None


def load_space(path_or_name: str | Path) -> SearchSpace:
    """Read and completely validate a search-space file (format: this module's docstring).

    Args:
        path_or_name: a path, or a bare file name looked up in the working directory and then
            among the shipped spaces (``demo`` and ``demo.yaml`` both work).
    Raises:
        SpaceError: one line, ``<file>: <key>: <what is wrong>; <fix>``.
    """
    path = _find(path_or_name)
    try:
        raw = path.read_bytes()
        data = yaml.load(raw.decode("utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506
    except (OSError, UnicodeDecodeError) as err:
        raise SpaceError(_one_line(f"{path}: file: cannot read it ({err}); check it")) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "file"
        problem = getattr(err, "problem", None) or "not valid YAML"
        fix = "keep one" if problem.startswith("duplicate key") else "fix the YAML syntax"
        if "for the tag" in problem:  # !!python/object/...: the safe loader never runs code
            fix = "a space is plain YAML, without !!python or other tags; remove the tag"
        raise SpaceError(_one_line(f"{path}: {where}: {problem}; {fix}")) from None
    fixed, params, block = _Parser(path).parse(data)
    default, longest = _check_reachable(path, params, fixed)
    names = {p.name for p in params}
    asha, resources = block.get("asha") or {}, block.get("resources") or {}
    objectives = _objectives(path, block.get("objectives"))
    metric = block.get("metric", objectives[0][0] if objectives else "val_acc")
    try:
        study = StudySettings(
            name=block.get("name", path.stem),
            num_trials=block.get("num_trials", 8),
            seed=fixed["seed"],
            sampler_seed=block.get("sampler_seed", fixed["seed"]),
            metric=metric,
            mode=block.get("mode", SEARCH_METRICS.get(metric, "max")),
            max_concurrent=block.get("max_concurrent"),
            max_failures=block.get("max_failures", 2),
            report_every_s=block.get("report_every_s", 1.0),
            objectives=objectives,
            plots=block.get("plots", True),
            grace_period=asha.get("grace_period", 10),
            reduction_factor=asha.get("reduction_factor", 2),
            asha_max_t=longest,
            cpus_per_trial=resources.get("cpus_per_trial", 1),
            gpus_per_trial=resources.get("gpus_per_trial", 0),
            memory_per_trial=_memory_per_trial(path, resources.get("memory_per_trial")),
        )
    except SpaceError as err:
        raise SpaceError(f"{path}: {err}") from None
    return SearchSpace(
        path=path,
        digest=hashlib.sha256(raw).hexdigest(),
        study=study,
        fixed={k: v for k, v in default.flat().items() if k not in names},
        params=params,
    )
