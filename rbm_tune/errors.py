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
]


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
