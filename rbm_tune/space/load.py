"""Finding and loading a space file: :func:`load_space`, the shipped spaces."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from rbm_tune import yamlio
from rbm_tune.errors import SpaceError
from rbm_tune.space.corners import check_reachable
from rbm_tune.space.parser import Parser
from rbm_tune.space.searchspace import SearchSpace
from rbm_tune.space.study import study_settings

__all__ = ["SHIPPED_DIR", "load_space", "shipped_spaces"]

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "search_spaces"


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


def load_space(path_or_name: str | Path, overrides: Sequence[str] = ()) -> SearchSpace:
    """Read and completely validate a search-space file (format: :mod:`rbm_tune.space`).

    Args:
        path_or_name: a path, or a bare file name looked up in the working directory and then
            among the shipped spaces (``demo`` and ``demo.yaml`` both work).
        overrides: ``KEY=VALUE`` changes to the file (the CLI's ``--set``,
            :mod:`rbm_tune.overrides`), validated as if the file said them; they are part of
            the space's digest.
    Raises:
        SpaceError: one line, ``<file>: <key>: <what is wrong>; <fix>`` (``--set KEY=VALUE:
            <what is wrong>; <fix>`` where an override caused it).
    """
    from rbm_tune.overrides import apply, blame, parse_overrides

    path = _find(path_or_name)
    changes = parse_overrides(overrides, space=True)
    data, raw = yamlio.read(path, SpaceError, "space")
    if changes:
        data = apply(data, changes, space=True)
    parser = Parser(path)
    try:
        fixed, params, block = parser.parse(data)
        default, longest = check_reachable(path, params, fixed)
        study = study_settings(path, block, fixed["seed"], longest)
    except SpaceError as err:
        raise blame(err, changes, str(path)) from None
    names = {p.name for p in params}
    digest = hashlib.sha256(raw)
    if parser.base_bytes:  # the space is its file and its base: a new base is a new space
        digest.update(b"\0" + parser.base_bytes)
    for change in changes:  # the file with --set is another space than the file alone
        digest.update(f"\0--set {change.key}={change.text}".encode())
    return SearchSpace(
        path=path,
        digest=digest.hexdigest(),
        study=study,
        fixed={k: v for k, v in default.flat().items() if k not in names},
        params=params,
        overrides=tuple(str(c) for c in changes),
    )
