"""Small value checks shared by the space modules: numbers as a space file writes them."""

from __future__ import annotations

import re

__all__ = ["NUM", "is_int", "is_num", "number", "one_line"]

NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def is_num(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def number(value: object) -> int | float | None:
    """A YAML number, or a number written as a string (a bound's offset); else None."""
    if is_num(value):
        return value  # type: ignore[return-value]
    if isinstance(value, str) and re.fullmatch(NUM, value.strip()):
        text = value.strip()
        return int(text) if re.fullmatch(r"[-+]?\d+", text) else float(text)
    return None
