"""Default locations, importable without torch (the CLI checks its arguments before it pays
for importing torch)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "URI_SCHEMES",
    "cache_subdir",
    "check_uri",
    "default_cache_dir",
    "local_cache_dir",
    "resolve_storage",
]


def default_cache_dir() -> Path:
    """``RBM_TUNE_CACHE``, else ``$XDG_CACHE_HOME/rbm-tune``, else ``~/.cache/rbm-tune``."""
    env = os.environ.get("RBM_TUNE_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "rbm-tune"


def cache_subdir(cache_dir: str | Path | None, folder: str) -> str | Path:
    """``<cache_dir>/<folder>``; ``cache_dir`` is what ``--cache-dir`` and ``RBM_TUNE_CACHE``
    name (a directory or URI; a URI keeps its ``?query``); ``None`` or ``""``: the default
    cache (:func:`default_cache_dir`)."""
    if cache_dir is None or str(cache_dir) == "":
        return default_cache_dir() / folder
    check_uri(str(cache_dir), "--cache-dir")
    base, query, rest = str(cache_dir).partition("?")  # s3://b/p?region=x keeps its query
    if "://" not in base:
        return Path(base) / folder
    return f"{base.rstrip('/')}/{folder}{query}{rest}"


def local_cache_dir(cache_dir: str | Path | None) -> Path:
    """The local folder for what must live on this machine's disk (processed datasets):
    ``cache_dir`` when it is a directory or a ``file://`` URI, else :func:`default_cache_dir`
    (``None``, or an object store such as ``s3://``, which PyG and OGB cannot write to)."""
    if cache_dir is None or str(cache_dir) == "":
        return default_cache_dir()
    text = str(cache_dir)
    if text.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(text).path))
    if "://" in text:
        return default_cache_dir()
    return Path(text).expanduser()


STORAGE_ENV = "RBM_TUNE_STORAGE"


# URI schemes pyarrow.fs.FileSystem.from_uri understands (what the teacher cache writes through)
URI_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


def check_uri(text: str, flag: str) -> str:
    """``text`` unchanged when it is a directory or a URI whose scheme pyarrow knows; otherwise
    a one-line :class:`~rbm_tune.errors.ConfigError` naming ``flag`` and the schemes accepted."""
    if "://" not in text:
        return text
    scheme = text.partition("://")[0].lower()
    if scheme not in URI_SCHEMES:
        from rbm_tune.errors import ConfigError

        raise ConfigError(
            f"{flag} {text!r}: unknown URI scheme {scheme!r}; give a directory or a "
            f"{', '.join(s + '://' for s in URI_SCHEMES)} URI"
        )
    return text


def resolve_storage(storage_path: str | Path | None) -> Path:
    """The local folder of the studies' folders: ``--storage-path``, else
    ``$RBM_TUNE_STORAGE``, else ``./rbm-tune-runs``; absolute. A ``file://`` URI is its local
    path; an object-store URI (``s3://``, ``gs://``...) is its local mirror
    (:func:`rbm_tune.storage.mirror_dir`: Ray Tune writes the trials to the URI itself)."""
    chosen = storage_path or os.environ.get(STORAGE_ENV) or Path.cwd() / "rbm-tune-runs"
    text = check_uri(str(chosen), "--storage-path")
    if text.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(text).path)).resolve()
    if "://" in text:
        from rbm_tune.storage import mirror_dir

        return mirror_dir(text)
    return Path(text).expanduser().resolve()
