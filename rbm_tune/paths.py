"""Default locations, importable without torch (the CLI checks its arguments before it pays
for importing torch)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_dir", "resolve_storage"]


def default_cache_dir() -> Path:
    """``RBM_TUNE_CACHE``, else ``$XDG_CACHE_HOME/rbm-tune``, else ``~/.cache/rbm-tune``."""
    env = os.environ.get("RBM_TUNE_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "rbm-tune"


def resolve_storage(storage_path: str | Path | None) -> Path:
    """Ray Tune's results folder: ``--storage-path``, else ``./rbm-tune-runs``; absolute."""
    return Path(storage_path or Path.cwd() / "rbm-tune-runs").resolve()
