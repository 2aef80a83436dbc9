"""The DeepWalk embedding cache: one embedding per walked graph, seed and DeepWalk parameters.

A :class:`~rbm_tune.store.ContentStore` in ``<cache_dir>/deepwalk`` (the layer under the teacher
cache too): ``<digest>/payload.pt`` holds the key and the CPU embedding, ``meta.json`` its size
and sha256. Writes are atomic, reads are checked, a corrupt entry is moved aside with one warning
line and recomputed, and processes wanting the same embedding compute it once (the store's lock).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from rbm_tune.paths import cache_subdir
from rbm_tune.positional import DEEPWALK_VERSION
from rbm_tune.store import PAYLOAD, ContentStore, CorruptEntry, Entry, content_digest

__all__ = ["cached_deepwalk", "deepwalk_cache_key", "deepwalk_store"]

_FORMAT = 1


def deepwalk_cache_key(
    graph_fingerprint: str,
    *,
    seed: int,
    walk_length: int,
    num_walks: int,
    window: int,
    epochs: int,
    dim: int,
) -> str:
    """Build the cache key of one DeepWalk embedding (R8; method §10.1 item 14: by graph and seed).

    Args:
        graph_fingerprint: content hash of the graph that was walked (edges and node count).
        seed: the seed passed to :func:`rbm_tune.positional.deepwalk`.
        walk_length, num_walks, window, epochs, dim: its parameters.

    Returns:
        A string naming everything that changes the embedding, including the code version.
    """
    return (
        f"deepwalk-v{DEEPWALK_VERSION}|graph={graph_fingerprint}|seed={seed}|"
        f"walk_length={walk_length}|num_walks={num_walks}|window={window}|"
        f"epochs={epochs}|dim={dim}"
    )


def deepwalk_store(cache_dir: str | Path | None = None) -> ContentStore:
    """The DeepWalk embedding cache: a :class:`~rbm_tune.store.ContentStore` in
    ``<cache_dir>/deepwalk``.

    Args:
        cache_dir: the rbm-tune cache (``--cache-dir``: a directory or URI); ``None``:
            ``RBM_TUNE_CACHE``, else the user cache.
    """
    return _store(cache_subdir(cache_dir, "deepwalk"))


def _store(root: str | Path) -> ContentStore:
    return ContentStore(
        root,
        what="DeepWalk cache",
        noun="DeepWalk embedding",
        verbs=("compute", "computing", "computed"),
        logger=__name__,
    )


def cached_deepwalk(
    cache: ContentStore | str | Path,
    key: str,
    compute: Callable[[], Tensor],
    *,
    device: torch.device | str | None = None,
) -> Tensor:
    """Return the embedding stored under ``key``, computing and storing it on a miss (R8).

    The entry is ``<root>/<sha256(key)>/`` (``payload.pt``: the key and the CPU embedding;
    ``meta.json``: its checksum), written atomically and checked on every read. A corrupt entry
    is moved aside with a one-line warning and recomputed; concurrent callers wanting the same
    key compute it once (the store's lock). A cache that cannot be written costs a warning.

    Args:
        cache: the store (:func:`deepwalk_store`), or the folder or URI holding its entries.
        key: what the embedding depends on, e.g. from :func:`deepwalk_cache_key`.
        compute: called once on a miss; returns the embedding, shape (N, D).
        device: where to put the result; defaults to CPU (the file always holds a CPU copy).

    Returns:
        The embedding, shape (N, D).
    """
    store = cache if isinstance(cache, ContentStore) else _store(cache)
    target = torch.device(device) if device is not None else torch.device("cpu")

    def decode(entry: Entry) -> Tensor:
        found = torch.load(io.BytesIO(entry.payload), map_location="cpu", weights_only=True)
        if (
            not isinstance(found, dict)
            or found.get("key") != key
            or not isinstance(found.get("embedding"), Tensor)
            or found["embedding"].dim() != 2
        ):
            raise CorruptEntry(f"{PAYLOAD} holds another entry")
        return found["embedding"]

    def encode(embedding: Tensor) -> tuple[bytes, dict[str, object]]:
        buffer = io.BytesIO()
        torch.save({"key": key, "embedding": embedding}, buffer)
        meta = {"format": _FORMAT, "key": key, "shape": list(embedding.shape)}
        return buffer.getvalue(), meta

    embedding, _ = store.get_or_create(
        content_digest(key),
        decode=decode,
        create=lambda: compute().detach().cpu().contiguous(),
        encode=encode,
    )
    return embedding.to(target)
