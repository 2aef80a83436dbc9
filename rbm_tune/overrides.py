"""``--set KEY=VALUE``: changes to a space file or a trial config from the command line.

``rbm-tune --space cora --set distill.max_epochs=100`` reads ``cora.yaml`` as if it said
``max_epochs: 100`` in its ``distill:`` section; ``rbm-tune train`` and ``rbm-tune evaluate``
take the same flag for trial configs. A value is read by the same YAML loader as the files
(:mod:`rbm_tune.yamlio`: ``1e-4`` is a number, ``true`` a boolean, ``none`` a string), so in a
space a flow mapping searches the key: ``--set 'student.hidden_dim={categorical: [64, 128]}'``.

The key is checked here (an unknown one gets a did-you-mean naming the full key); the value is
checked by whatever reads the changed mapping, the space parser or ``TrialConfig.from_mapping``,
exactly as if the file had said it. :func:`blame` turns the reader's error about a key that
``--set`` changed into one that names ``--set``, so the user is not sent to a file that does
not say it.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import yaml

from rbm_tune import yamlio
from rbm_tune.config import ALIASES, RENAMED, SECTIONS
from rbm_tune.errors import ConfigError, SpaceError

__all__ = ["Override", "apply", "blame", "parse_overrides"]

_EXAMPLE = "e.g. --set distill.max_epochs=100"


@dataclass(frozen=True)
class Override:
    """One ``--set``: the key as the reader names it (aliases renamed) and the parsed value."""

    key: str  # distill.label_weight (canonical: what errors and MLflow name)
    given: str  # distill.lambda (as written on the command line)
    text: str  # the value as written
    value: Any  # the value as the YAML loader reads it

    def __str__(self) -> str:
        return f"{self.given}={self.text}"


def _space_keys() -> list[str]:
    from rbm_tune.space.study import STUDY_KEYS

    keys = ["base", "dataset", "setting", "seed"]
    for name, sub in STUDY_KEYS.items():
        keys += [f"study.{name}"] if sub is None else [f"study.{name}.{k}" for k in sub]
    return keys


def _section_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in fields(cls)]


def known_keys(*, space: bool) -> list[str]:
    """Every key ``--set`` may name: a space's (``study.*``, ``base`` too) or a config's."""
    top = _space_keys() if space else ["dataset", "setting", "seed"]
    return top + _section_keys()


def _canonical(key: str) -> str:
    """``distill.lambda`` -> ``distill.label_weight`` (reference aliases, renamed keys)."""
    section, dot, name = key.partition(".")
    if dot and section in SECTIONS:
        return f"{section}.{ALIASES.get(name, RENAMED.get(name, name))}"
    return "seed" if key == "study.seed" else key


def parse_overrides(items: Sequence[str] | None, *, space: bool) -> tuple[Override, ...]:
    """``["distill.max_epochs=100", ...]`` -> overrides, keys checked, values read as YAML.

    Args:
        items: the ``--set`` arguments in order (a later one wins over an earlier one).
        space: whether they change a space (``study.*`` and ``base`` allowed) or a config.
    Raises:
        ConfigError (SpaceError for a space): one line naming the ``--set`` and the fix.
    """
    error = SpaceError if space else ConfigError
    allowed = known_keys(space=space)
    out: dict[str, Override] = {}
    for item in items or ():
        given, eq, text = item.partition("=")
        given = given.strip()
        if not eq or not given:
            raise error(f"--set {item!r}: write KEY=VALUE, {_EXAMPLE}")
        key = _canonical(given)
        if key not in allowed or (not space and given.partition(".")[0] == "study"):
            raise error(f"--set {item}: {_unknown(given, allowed, space)}")
        try:
            value = yamlio.parse(text) if text.strip() else None
        except yaml.YAMLError as err:
            problem = " ".join(str(getattr(err, "problem", None) or "syntax").split())
            if "for the tag" in problem:  # !!python/...: the safe loader never runs code
                raise error(
                    f"--set {item}: {problem}; a value is plain YAML, without !!python or other "
                    "tags; remove the tag"
                ) from None
            raise error(
                f"--set {item}: the value is not valid YAML ({problem}); quote the whole "
                "argument for the shell, e.g. --set 'student.hidden_dim={categorical: [64, 128]}'"
            ) from None
        if value is None:
            raise error(f"--set {item}: no value; write {given}=VALUE, {_EXAMPLE}")
        if isinstance(value, list):
            fix = f"to search it write --set '{given}={{categorical: {text.strip()}}}'"
            raise error(f"--set {item}: a list is not a value; {fix if space else 'give one'}")
        if isinstance(value, Mapping) and not space:
            raise error(
                f"--set {item}: a trial config fixes every value, it searches nothing; give "
                f"one value (a mapping searches {given} in a space: rbm-tune --space ... --set)"
            )
        out.pop(key, None)  # the later one wins, and keeps the order it was given in
        out[key] = Override(key, given, text.strip(), value)
    return tuple(out.values())


def _unknown(given: str, allowed: list[str], space: bool) -> str:
    section = given.partition(".")[0]
    if not space and (section == "study" or given == "base"):
        return (
            f"{given} is a search-space key; a trial config has dataset, setting, seed, "
            "teacher.*, student.* and distill.* (study settings go with rbm-tune --space)"
        )
    if given in SECTIONS or given in ("study", "study.asha", "study.resources"):
        return f"give one key of {given}, e.g. --set {given}.{_first_under(given, allowed)}=..."
    close = difflib.get_close_matches(given, allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    tops = ", ".join(k for k in allowed if "." not in k)
    sections = "teacher, student, distill" + (", study" if space else "")
    return f"unknown key; name a key as the file nests it: {tops} or SECTION.KEY ({sections})"


def _first_under(prefix: str, allowed: list[str]) -> str:
    return next(k for k in allowed if k.startswith(prefix + ".")).removeprefix(prefix + ".")


def apply(data: object, overrides: Sequence[Override], *, space: bool) -> dict[str, Any]:
    """A copy of the file's top-level mapping ``data`` with ``overrides`` written into it.

    A key the file already writes (under any alias) keeps its place, so the sampling order of
    a space does not change; a new key goes first in its section (a bound may name it).
    ``seed`` in a space is the top-level ``seed`` and ``study.seed`` at once.
    """
    out: dict[str, Any] = dict(data) if isinstance(data, Mapping) else {}
    for o in overrides:
        parts = o.key.split(".")
        if parts == ["seed"] and space:
            study = _sub(out, "study")
            if "seed" in study or "seed" not in out:
                study["seed"] = o.value
            if "seed" in out:
                out["seed"] = o.value
            continue
        if len(parts) == 1:
            out[parts[0]] = o.value
            continue
        parent = out
        for part in parts[:-2]:
            parent = _sub(parent, part)
        holder, name = parts[-2], parts[-1]
        section = dict(parent.get(holder) or {}) if isinstance(parent.get(holder), Mapping) else {}
        parent[holder] = _put(section, name, o.value, renames=holder in SECTIONS)
    return out


def _sub(parent: dict[str, Any], key: str) -> dict[str, Any]:
    """``parent[key]`` as a fresh dict (a copy: the caller's mapping is not changed)."""
    value = parent.get(key)
    parent[key] = dict(value) if isinstance(value, Mapping) else {}
    return parent[key]


def _put(section: dict[str, Any], name: str, value: Any, *, renames: bool) -> dict[str, Any]:
    """``section`` with ``name`` set to ``value``: in the place of the key it replaces (an
    alias too), else first."""

    def same(key: object) -> bool:
        if not isinstance(key, str):
            return False
        return (ALIASES.get(key, RENAMED.get(key, key)) if renames else key) == name

    if not any(same(k) for k in section):
        return {name: value, **section}
    out: dict[str, Any] = {}
    for key, old in section.items():
        if same(key):
            out.setdefault(name, value)
        else:
            out[key] = old
    return out


def blame(err: ConfigError, overrides: Sequence[Override], source: str) -> ConfigError:
    """The reader's one-line error ``err``, reworded where a ``--set`` caused it.

    ``<source>: <key>: <what>`` (a space's errors) or an error naming ``<key>`` (a config's)
    about a key an override set becomes ``--set KEY=VALUE: <what>``; any other error about
    the changed file says which ``--set`` were given, as the file alone does not say them.
    """
    message = str(err)
    rest = message.removeprefix(f"{source}: ") if source else message
    for o in overrides:
        for name in dict.fromkeys((o.key, o.given, "study.seed" if o.key == "seed" else o.key)):
            if rest.startswith(f"{name}: "):
                return type(err)(f"--set {o}: {rest.removeprefix(f'{name}: ')}")
            if rest.startswith((f"{name} ", f"{name}=")):
                return type(err)(f"--set {o}: {rest}")
    if not overrides:
        return err
    given = " ".join(f"--set {o}" for o in overrides)
    return type(err)(f"{message} (with {given})")
