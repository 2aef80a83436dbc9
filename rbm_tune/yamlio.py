"""The one YAML dialect of rbm-tune: search spaces and trial configs are read the same way.

- Safe: plain YAML only; a ``!!python/...`` (or any other unknown) tag is refused, never run.
- Strict: a key written twice in one mapping is an error naming the key and its line (plain
  YAML keeps the last one silently).
- Numbers as people write them: YAML 1.1 reads ``1e-4`` (no dot in the mantissa) as a
  string; here it is the float ``0.0001``, as YAML 1.2 and Python read it.

Every error is one line, ``<file>: line <n>: <what is wrong>; <fix>``, of the error class the
caller names (:class:`~rbm_tune.errors.SpaceError` for spaces,
:class:`~rbm_tune.errors.ConfigError` for trial configs).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from rbm_tune.errors import ConfigError

__all__ = ["StrictLoader", "parse", "read"]

# Floats YAML 1.1 leaves as strings: an exponent without a dot in the mantissa (1e-4, 5E3).
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*\.?[0-9_]*|\.[0-9_]+)[eE][-+]?[0-9]+$")


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key written twice in one mapping and reads ``1e-4`` as a float."""


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if not isinstance(key, str | int | float | bool):
            continue  # an unhashable key is reported as an unknown key by the caller
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)
# add_implicit_resolver copies the resolver table before it changes it: SafeLoader is untouched
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789.")
)


def parse(text: str) -> Any:
    """``text`` read by :class:`StrictLoader`.

    Raises:
        yaml.YAMLError: not valid YAML, a key written twice, or a tag.
    """
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 (a SafeLoader subclass)


def read(
    path: Path, error: type[ConfigError] = ConfigError, what: str = "config"
) -> tuple[Any, bytes]:
    """Read the YAML file ``path`` (see the module docstring).

    Args:
        path: the file.
        error: the class of the error raised (``SpaceError`` for a space).
        what: what the file is, for the error message (``"config"``, ``"space"``).
    Returns:
        (the parsed document, the file's bytes: what a digest of the file is taken of).
    Raises:
        ``error``: one line naming the file, the line and the fix.
    """
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or err
        raise error(f"{path}: file: cannot read it ({reason}); check the path") from None
    try:
        return parse(text), raw
    except yaml.YAMLError as err:
        raise error(_yaml_message(path, err, what)) from None


def _yaml_message(path: Path, err: yaml.YAMLError, what: str) -> str:
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}" if mark is not None else "file"
    problem = " ".join(str(getattr(err, "problem", None) or "").split())
    if problem.startswith("duplicate key"):
        return f"{path}: {where}: {problem}; keep one"
    if "for the tag" in problem:  # !!python/object/...: the safe loader never runs code
        return (
            f"{path}: {where}: {problem}; a {what} is plain YAML, without !!python or other "
            "tags; remove the tag"
        )
    return f"{path}: {where}: not valid YAML ({problem or 'syntax'}); fix the YAML syntax"
