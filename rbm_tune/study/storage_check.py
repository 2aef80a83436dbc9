"""Before any trial on a cluster: can every alive node see the storage path and the cache?

The driver writes a marker file into each location (through ``pyarrow.fs``, so a shared folder
and an ``s3://`` / ``gs://`` URI go through the same code), then one Ray task pinned to every
alive node (``NodeAffinitySchedulingStrategy``, ``soft=False``) reads the markers back. A node
that cannot is named in one line that says what to fix; Ray would otherwise persist a finished
trial's checkpoint from that node into a folder the driver never sees, and fail it at its last
report.
"""

from __future__ import annotations

import posixpath
import uuid
from pathlib import Path
from typing import Any

from rbm_tune.errors import RbmTuneError
from rbm_tune.store import filesystem_of

__all__ = ["check_storage_visible", "read_marker", "write_marker"]

MARKER = ".rbm-tune-node-check"


def _marker(location: str | Path, token: str) -> tuple[Any, str]:
    """The file system of ``location`` and the path of its marker for ``token``."""
    filesystem, base = filesystem_of(location)
    return filesystem, posixpath.join(base, f"{MARKER}-{token}")


def write_marker(location: str | Path, token: str) -> str:
    """Write ``token`` to ``<location>/.rbm-tune-node-check-<token>``; its path for reading."""
    filesystem, path = _marker(location, token)
    filesystem.create_dir(posixpath.dirname(path), recursive=True)
    with filesystem.open_output_stream(path) as out:
        out.write(token.encode())
    return str(path)


def read_marker(location: str | Path, token: str) -> bool:
    """Whether ``<location>``'s marker for ``token`` is readable here and holds ``token``."""
    try:
        filesystem, path = _marker(location, token)
        with filesystem.open_input_stream(path) as src:
            return bool(src.read().decode() == token)
    except (OSError, ValueError):
        return False


def _remove_marker(location: str | Path, token: str) -> None:
    try:
        filesystem, path = _marker(location, token)
        filesystem.delete_file(path)
    except (OSError, ValueError):
        pass


def _node_reads(locations: list[str], token: str) -> list[str]:
    """On one node: the locations whose marker this node cannot read."""
    return [where for where in locations if not read_marker(where, token)]


def check_storage_visible(locations: dict[str, str | Path], timeout_s: float = 120.0) -> None:
    """Raise :class:`RbmTuneError` naming the first node that cannot read a marker written
    here to each of ``locations`` (``{"storage path": ..., "teacher cache": ...}``). Needs
    ``ray.init`` done."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex[:12]
    names = {str(where): what for what, where in locations.items()}
    try:
        for where in names:
            write_marker(where, token)
    except OSError as err:
        raise RbmTuneError(
            f"cannot write to {where} from the driver ({err}); pick a folder "
            "this machine can write to, or an s3:// URI"
        ) from None
    try:
        task = ray.remote(num_cpus=0)(_node_reads)
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        refs = {
            node["NodeID"]: task.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            ).remote(list(names), token)
            for node in nodes
        }
        for node in nodes:
            missing = ray.get(refs[node["NodeID"]], timeout=timeout_s)
            if missing:
                what = names[missing[0]]
                raise RbmTuneError(
                    f"node {node.get('NodeManagerAddress')} ({node['NodeID'][:12]}) cannot read "
                    f"the {what} {missing[0]}; use a folder every node mounts at the same path, "
                    "or an s3:// URI"
                )
    finally:
        for where in names:
            _remove_marker(where, token)
