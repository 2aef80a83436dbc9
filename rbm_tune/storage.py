"""A study's storage path on an object store (``--storage-path s3://bucket/runs``).

Ray Tune writes a study's trials, checkpoints and its own state straight to the URI. The files
rbm-tune's driver writes into the study folder (``best_config.yaml``, ``results.csv``,
``trials.json``, ``study.json``, ``finished.json``, the MLflow outbox, plots...) are written to a
local *mirror* of the study folder first, under the cache (:func:`mirror_dir`), and copied up to
``<URI>/<study>/`` by :func:`push`; :func:`pull` brings them down (those the mirror lacks) before
a command reads them, on this machine or another. A local store's MLflow artifacts stay in the
mirror. Credentials and the endpoint come from pyarrow's usual sources: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION`` and, for MinIO or any other S3 API server,
``AWS_ENDPOINT_URL`` (``http://host:port``), which Ray's trial processes inherit.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
from pathlib import Path
from typing import Any

from rbm_tune.paths import STORAGE_ENV, default_cache_dir

__all__ = [
    "STUDY_FILES",
    "checkpoint_location",
    "local_study",
    "mirror_dir",
    "open_study",
    "pull",
    "push",
    "remote_storage",
    "remote_study_exists",
    "remote_study_files",
    "study_uri",
    "with_query",
]

# what rbm-tune writes into a study folder (Ray Tune writes the rest: its state, the trials)
STUDY_FILES = (
    "best_config.yaml",
    "best_config.search.yaml",  # rbm-tune evaluate --select (rbm_tune/selection.py)
    "best_selection.json",
    "results.csv",
    "trials.json",
    "study.json",
    "finished.json",
    "pareto.md",
    "mlflow-pending.json",
    "warm_start.json",
    "plots",
)


def remote_storage(storage_path: str | Path | None) -> str | None:
    """The object-store URI ``--storage-path`` (else ``$RBM_TUNE_STORAGE``) names, or None for
    a directory or a ``file://`` URI."""
    text = str(storage_path or os.environ.get(STORAGE_ENV) or "")
    if "://" not in text or text.lower().startswith("file://"):
        return None
    return text


def study_uri(remote: str, name: str) -> str:
    """``<remote>/<name>``, keeping ``remote``'s ``?query`` at the end."""
    base, query, rest = remote.partition("?")
    return f"{base.rstrip('/')}/{name}{query}{rest}"


def mirror_dir(remote: str) -> Path:
    """The local mirror of the storage path ``remote``: ``<cache>/storage/<bucket_path>-<hash>``
    (the hash tells apart URIs that differ only in their query or in characters a folder name
    cannot hold)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", remote.partition("?")[0].partition("://")[2])
    digest = hashlib.sha256(remote.encode()).hexdigest()[:10]
    return default_cache_dir() / "storage" / f"{readable.strip('_')[:80]}-{digest}"


def _fs(uri: str) -> tuple[object, str]:
    from rbm_tune.store import filesystem_of

    return filesystem_of(uri)


def remote_study_exists(remote: str, name: str) -> bool:
    """Whether ``<remote>/<name>`` holds anything (an S3 "folder" is its objects' prefix)."""
    import pyarrow.fs

    filesystem, path = _fs(study_uri(remote, name))
    info = filesystem.get_file_info(path)  # type: ignore[attr-defined]
    return bool(info.type != pyarrow.fs.FileType.NotFound)


def remote_study_files(remote: str, name: str, pattern: str) -> list[tuple[str, bytes | None]]:
    """The files of ``<remote>/<name>/`` (top level) whose names match the glob ``pattern``:
    (URI-less path, bytes, or None where the read failed)."""
    import fnmatch

    import pyarrow.fs

    filesystem, path = _fs(study_uri(remote, name))
    selector = pyarrow.fs.FileSelector(path, allow_not_found=True)
    found = []
    for info in filesystem.get_file_info(selector):  # type: ignore[attr-defined]
        if info.type != pyarrow.fs.FileType.File or not fnmatch.fnmatch(info.base_name, pattern):
            continue
        try:
            with filesystem.open_input_stream(info.path) as src:  # type: ignore[attr-defined]
                found.append((info.path, src.read()))
        except OSError:
            found.append((info.path, None))
    return sorted(found)


def pull(remote: str, name: str, folder: Path) -> None:
    """Copy the :data:`STUDY_FILES` of ``<remote>/<name>/`` that ``folder`` lacks into it."""
    import pyarrow.fs

    filesystem, path = _fs(study_uri(remote, name))
    selector = pyarrow.fs.FileSelector(path, recursive=True, allow_not_found=True)
    for info in filesystem.get_file_info(selector):  # type: ignore[attr-defined]
        relative = posixpath.relpath(info.path, path)
        if info.type != pyarrow.fs.FileType.File or relative.split("/")[0] not in STUDY_FILES:
            continue
        target = folder / relative
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with filesystem.open_input_stream(info.path) as src:  # type: ignore[attr-defined]
            data = src.read()
        partial = target.with_name(target.name + ".part")
        partial.write_bytes(data)
        partial.replace(target)


def push(folder: Path, remote: str, name: str) -> None:
    """Copy every file under the mirror's study ``folder`` to ``<remote>/<name>/``; a top-level
    :data:`STUDY_FILES` file the mirror no longer holds (the MLflow outbox, once drained) is
    deleted there too (the mirror was :func:`pull`-ed first: it holds all the remote had)."""
    if not folder.is_dir():
        return
    import pyarrow.fs

    filesystem, path = _fs(study_uri(remote, name))
    for gone in STUDY_FILES:
        if gone == "plots" or (folder / gone).exists():
            continue
        where = posixpath.join(path, gone)
        if filesystem.get_file_info(where).type == pyarrow.fs.FileType.File:  # type: ignore[attr-defined]
            filesystem.delete_file(where)  # type: ignore[attr-defined]
    for local in sorted(p for p in folder.rglob("*") if p.is_file()):
        if local.name.endswith(".part"):
            continue
        target = posixpath.join(path, local.relative_to(folder).as_posix())
        with filesystem.open_output_stream(target) as out:  # type: ignore[attr-defined]
            out.write(local.read_bytes())


def open_study(remote: str, name: str, folder: Path) -> bool:
    """Before a command reads or writes study ``name``: whether ``<remote>/<name>`` exists; if
    it does, :func:`pull` it into the mirror's ``folder``, if not, drop a stale mirror of it (a
    study deleted from the bucket). One :class:`~rbm_tune.errors.ConfigError` line when the
    object store cannot be reached."""
    import shutil

    from rbm_tune.errors import ConfigError, first_line

    try:
        exists = remote_study_exists(remote, name)
        if exists:
            pull(remote, name, folder)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"--storage-path {remote}: cannot read it ({first_line(err)}); check the bucket, "
            "the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and, for an S3 API "
            "server other than AWS, AWS_ENDPOINT_URL=http://host:port"
        ) from None
    if not exists and folder.is_dir():
        shutil.rmtree(folder)
    return exists


def local_study(storage_path: str | Path | None, name: str) -> Path:
    """Study ``name``'s folder on this machine: in the storage path, or, for an object store,
    in its mirror after :func:`open_study` brought it down."""
    from rbm_tune.paths import resolve_storage

    folder = resolve_storage(storage_path) / name
    remote = remote_storage(storage_path)
    if remote is not None:
        open_study(remote, name, folder)
    return folder


def checkpoint_location(checkpoint: Any) -> str:
    """A Ray checkpoint's folder, as ``trials.json`` records it for ``rbm-tune export``: its
    path, or on an object store its URI (``s3://bucket/runs/study/trial/checkpoint_000004``)."""
    path = str(checkpoint.path)
    kind = getattr(checkpoint.filesystem, "type_name", "local")
    return path if kind == "local" or "://" in path else f"{kind}://{path}"


def with_query(location: str, storage_path: str | Path | None) -> str:
    """``location`` (an object-store URI in the storage path) with the storage path's
    ``?query`` (``endpoint_override``, ``scheme``...) when it has none of its own."""
    remote = remote_storage(storage_path)
    if remote is None or "?" not in remote or "://" not in location or "?" in location:
        return location
    return f"{location}?{remote.partition('?')[2]}"
