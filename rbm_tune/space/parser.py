"""The space-file parser: a YAML mapping -> fixed values, params, the study block.

It checks what one file says on its own: keys (with did-you-mean), value types, distribution
mappings and their options, bound expressions, the study block's keys, and a ``base:`` trial
config the file starts from. Whether every corner of the space is a valid trial is checked
afterwards (:mod:`rbm_tune.space.corners`).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, get_type_hints

from rbm_tune import yamlio
from rbm_tune.config import (
    ALIASES,
    DATASETS,
    RENAMED,
    SECTIONS,
    SETTINGS,
    TrialConfig,
    find_config,
    warn_renamed,
)
from rbm_tune.errors import ConfigError, SpaceError
from rbm_tune.space.conditions import conditions
from rbm_tune.space.params import Bound, Param, checked_range, on_grid
from rbm_tune.space.study import STUDY_KEYS
from rbm_tune.space.values import NUM, is_int, number, one_line

__all__ = ["TOP_KEYS", "Parser"]

TOP_KEYS = ("study", "base", "dataset", "setting", "seed", "teacher", "student", "distill")
_TRIAL_DEFAULTS = {f.name: f.default for f in fields(TrialConfig)}
_TERM = re.compile(
    rf"\s*(?:(?P<num>{NUM})|(?P<ref>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?)"
    rf"(?:\s*(?P<sign>[-+])\s*(?P<off>{NUM}))?)\s*"
)
_AGG = re.compile(r"\s*(min|max)\s*\((.*)\)\s*")
_KINDS = ("int", "float", "categorical")
_OPTIONS = ("log", "step", "or_zero", "default", "when")
_FIELD_KIND = {bool: "true/false", int: "integer", float: "number", str: "string"}


class Parser:
    """Checks one file's YAML mapping: keys, types, distributions, bounds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.base_bytes = b""  # the ``base:`` file's bytes, once read (the space's digest)

    def fail(self, key: str, message: str) -> SpaceError:
        return SpaceError(one_line(f"{self.path}: {key}: {message}"))

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
        """Returns (fixed values: the base's and the file's, params, the raw study block)."""
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
        base = self.base(data["base"]) if "base" in data else {}
        if "dataset" not in data and "dataset" not in base:
            raise self.fail(
                "dataset", f"missing; add dataset: <one of {list(DATASETS)}> or a base: config"
            )
        fixed: dict[str, Any] = {}
        for key, choices in (("dataset", DATASETS), ("setting", SETTINGS)):
            value = data.get(key, base.get(key, _TRIAL_DEFAULTS[key]))
            if value not in choices or not isinstance(value, str):
                raise self.fail(key, f"unknown {key} {value!r}; choose one of {list(choices)}")
            fixed[key] = value
        if "seed" in data and "seed" in study and data["seed"] != study["seed"]:
            raise self.fail("seed", "differs from study.seed; keep only study.seed")
        seed = study.get("seed", base.get("seed", _TRIAL_DEFAULTS["seed"]))
        fixed["seed"] = data.get("seed", seed)
        if not is_int(fixed["seed"]) or fixed["seed"] < 0:
            raise self.fail("seed", f"{fixed['seed']!r} must be an integer >= 0; e.g. seed: 0")
        entries: list[tuple[str, object]] = []
        for section in (key for key in data if key in SECTIONS):
            names = [f.name for f in fields(SECTIONS[section])]
            values = self.mapping(section, data[section])
            renamed = [self.renamed(section, key) for key in values]
            self.check_keys(dict.fromkeys(renamed), names, f"{section}.")
            if len(set(renamed)) < len(renamed):
                twice = next(k for k in renamed if renamed.count(k) > 1)
                raise self.fail(f"{section}.{twice}", "set twice via an alias; keep one")
            entries += [(f"{section}.{k}", v) for k, v in zip(renamed, values.values())]
        written = {name for name, _ in entries}
        # the base's values come first: a bound may name any of them
        inherited = [k for k in base if "." in k and k not in written]
        fixed.update((k, base[k]) for k in inherited)
        order = inherited + [name for name, _ in entries]
        params: list[Param] = []
        for index, (name, value) in enumerate(entries, start=len(inherited)):
            section, _, key = name.partition(".")
            hint = get_type_hints(SECTIONS[section])[key]
            if isinstance(value, Mapping):
                param = self.param(name, hint, value, order[:index], order)
                if param.default is None and name in base:
                    param = self.base_default(param, base[name])
                before = {p.name: p for p in params}
                when = conditions(self.fail, param, value.get("when"), before, self.choice)
                params.append(dataclasses.replace(param, when=when))
            else:
                fixed[name] = self.scalar(name, hint, value)
        return fixed, tuple(params), study

    def renamed(self, section: str, key: object) -> object:
        """The current name of ``key``: a reference alias or a deprecated name renamed."""
        if isinstance(key, str) and key in RENAMED:
            warn_renamed(f"{self.path}: {section}.{key}", RENAMED[key])
        return ALIASES.get(key, RENAMED.get(key, key)) if isinstance(key, str) else key

    def base(self, value: object) -> dict[str, Any]:
        """``base:`` (a trial config's path or shipped name) -> its flat values."""
        found = find_config(value, self.path.parent) if isinstance(value, str) else None
        if found is None:
            raise self.fail(
                "base",
                f"no trial config {value!r} next to this file or among the shipped ones; write "
                "a path relative to this file or a name 'rbm-tune configs' lists, e.g. "
                "base: cora-transductive-sage-rbm",
            )
        values, raw = yamlio.read(found, SpaceError, "config")
        try:
            config = TrialConfig.from_mapping(values or {}, source=f"{found}: ")
        except ConfigError as err:
            raise self.fail(
                "base", f"{found}: {err}; a base is a trial config (nothing searched, no study)"
            ) from None
        self.base_bytes = raw
        return config.flat()

    def base_default(self, param: Param, value: Any) -> Param:
        """``param`` with the base's ``value`` as its default, if it is a value of the range."""
        if param.kind == "categorical":
            if value not in param.choices:
                raise self.fail(
                    param.name,
                    f"the base's value {value!r} is not a choice; add it to the choices or "
                    f"write default: <one of {list(param.choices)}>",
                )
            return dataclasses.replace(param, default=value)
        if param.or_zero and value == 0:
            return dataclasses.replace(param, default=0.0 if param.kind == "float" else 0)
        if not param.refs:
            lo, hi = checked_range(self.path, param, {})
            if not (lo <= value <= hi and on_grid(value - lo, param.step)):
                raise self.fail(
                    param.name,
                    f"the base's value {value} lies off [{lo}, {hi}]; widen the range or "
                    "write default: <a value in the range>",
                )
        return dataclasses.replace(param, default=float(value) if param.kind == "float" else value)

    def choice(self, name: str, value: object) -> Any:
        """``value`` as a value of the field ``name`` (a ``when:`` choice)."""
        section, _, key = name.partition(".")
        return self.scalar(name, get_type_hints(SECTIONS[section])[key], value)

    def scalar(self, name: str, hint: Any, value: object) -> Any:
        """A fixed value (or a categorical choice) of the field's type."""
        if isinstance(value, list):
            raise self.fail(
                name, f"a list is not a value; to search write {{categorical: {value}}}"
            )
        if value is None:
            raise self.fail(name, "has no value; write one or delete the line")
        num = number(value)
        if hint is bool and isinstance(value, bool) or hint is str and isinstance(value, str):
            return value
        if hint is float and num is not None:
            return float(num)
        if hint is int and is_int(num):
            return num
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
            use = {bool: "{categorical: [false, true]}", int: "{int: [lo, hi]}"}.get(hint)
            raise self.fail(
                name,
                f"a {kind} range does not fit this {_FIELD_KIND[hint]} field; "
                f"use {use or '{categorical: [...]}'}",
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
            step = number(step)
            if step is None or step <= 0 or (kind == "int" and not is_int(step)):
                raise self.fail(
                    name, f"step {options['step']!r} is not a positive {kind}; write e.g. step: 2"
                )
            if options.get("log"):
                raise self.fail(name, "log and step cannot be combined (Optuna); drop one")
        if default is not None:
            default = number(default)
            if default is None or (kind == "int" and not is_int(default)):
                raise self.fail(
                    name, f"default {options['default']!r} is not a {kind}; use one from the range"
                )
            default = float(default) if kind == "float" else default
        log, or_zero = bool(options.get("log")), bool(options.get("or_zero"))
        param = Param(name, kind, low, high, (), log, step, or_zero, default)
        if not param.refs:
            checked_range(self.path, param, {})
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
        num = number(end)
        if num is not None and kind == "int" and not is_int(num):
            raise self.fail(name, f"int bound {end!r} is not a whole number; use integers")
        if num is not None:
            return Bound(str(end), ((None, num),))
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
            offset = number(match["num"] or match["off"] or 0)
            offset = -offset if match["sign"] == "-" else offset  # type: ignore[operator]
            if kind == "int" and not is_int(offset):
                raise self.fail(name, f"int bound {end!r} is not a whole number; use integers")
            if match["num"]:
                terms.append((None, offset))  # type: ignore[arg-type]
                continue
            ref = match["ref"] if "." in match["ref"] else f"{name.split('.')[0]}.{match['ref']}"
            section, _, key = ref.partition(".")
            key = ALIASES.get(key, RENAMED.get(key, key))
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
