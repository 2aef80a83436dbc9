"""One error family for everything a user can get wrong.

Every message fits on one line and says what was wrong *and* what to do about it; the CLI prints
it as ``rbm-tune: error: <message>`` and exits with status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

__all__ = [
    "CacheError",
    "ConfigError",
    "DataError",
    "RbmTuneError",
    "SpaceError",
    "TrackingError",
    "first_line",
]


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first line of ``err``'s message (its type's name when empty), at most ``limit``
    characters: how a one-line error or warning quotes an exception from Ray, MLflow or Optuna.
    """
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:limit]


class RbmTuneError(Exception):
    """Base class: a problem the user can fix; the message names the fix."""


class ConfigError(RbmTuneError):
    """A trial configuration (YAML or mapping) is malformed or inconsistent."""


class SpaceError(ConfigError):
    """A search-space file is malformed or can express an invalid configuration."""


class DataError(RbmTuneError):
    """A dataset is unknown, missing, or its files cannot be read."""


class CacheError(RbmTuneError):
    """A cache entry is corrupt or unreadable."""


class TrackingError(RbmTuneError):
    """The MLflow tracking store cannot be reached or written."""
