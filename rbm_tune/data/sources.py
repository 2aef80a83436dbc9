"""Where each dataset's files live and how the real PyG / OGB loaders read them (method §6.1).

The data root may be read-only (tests use ``../shared/data``), but PyG and OGB write a
``processed/`` folder beside ``raw/``. So unless ``download=True`` we load from a private work
folder under the rbm-tune cache whose ``raw/`` (and OGB's ``split/`` and release file) are
symlinks into the data root. The work folder's name hashes the raw files' paths, sizes and
modification times, so a changed or truncated file is never served from a stale
``processed/`` file.

Safety: no dataset or processed file can run code when it is read. PyG's ``fs.torch_load``
would retry a processed file with ``weights_only=False`` (full unpickling) when it needs a
global that is not allow-listed, and PyG reads Planetoid's raw ``ind.*`` files with plain
``pickle.load``; while rbm-tune loads a dataset both are replaced (:func:`_safe_loads`) by
loaders that accept only tensors and PyG's data classes, and only the numpy / scipy classes the
Planetoid files are made of. A processed copy in the cache that cannot be loaded (truncated by
a crash, or refused as unsafe) is removed and rebuilt from the raw files once, with a warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import pickle
import re
import shutil
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from torch import Tensor

from rbm_tune.errors import DataError
from rbm_tune.paths import default_cache_dir

__all__ = ["SOURCES", "RawGraph", "Source", "default_cache_dir", "read_source"]
_log = logging.getLogger(__name__)

_PLANETOID_SUFFIXES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
_OGB_RAW = (
    "raw/edge.csv.gz",
    "raw/node-feat.csv.gz",
    "raw/node-label.csv.gz",
    "raw/num-node-list.csv.gz",
    "raw/num-edge-list.csv.gz",
)


@dataclass(frozen=True)
class Source:
    """One dataset: its loader family, folder under the data root and the files it needs.

    ``nodes``/``edges``/``features``/``classes`` are the sizes after rbm-tune's preprocessing
    (LCC for Amazon/Coauthor; self-loops and reverse edges where method §6.1 adds them are not
    counted in ``edges``, which is PyG's directed count of the raw graph).
    """

    name: str
    kind: str  # planetoid | amazon | coauthor | ogb | demo
    loader_name: str  # the name PyG / OGB knows it by
    folder: str
    files: tuple[str, ...]
    nodes: int
    features: int
    classes: int
    seeded_split: bool  # method §6.2: the split changes with the seed


def _planetoid(name: str, folder: str, nodes: int, features: int, classes: int) -> Source:
    prefix = folder.lower()
    files = tuple(f"raw/ind.{prefix}.{s}" for s in _PLANETOID_SUFFIXES)
    return Source(name, "planetoid", folder, folder, files, nodes, features, classes, False)


SOURCES: dict[str, Source] = {
    "demo": Source("demo", "demo", "demo", "", (), 3000, 32, 5, True),
    "cora": _planetoid("cora", "Cora", 2708, 1433, 7),
    "citeseer": _planetoid("citeseer", "CiteSeer", 3327, 3703, 6),
    "pubmed": _planetoid("pubmed", "PubMed", 19717, 500, 3),
    "amazon-computers": Source(
        "amazon-computers",
        "amazon",
        "Computers",
        "Computers",
        ("raw/amazon_electronics_computers.npz",),
        13381,
        767,
        10,
        True,
    ),
    "amazon-photo": Source(
        "amazon-photo",
        "amazon",
        "Photo",
        "Photo",
        ("raw/amazon_electronics_photo.npz",),
        7487,
        745,
        8,
        True,
    ),
    "coauthor-cs": Source(
        "coauthor-cs",
        "coauthor",
        "CS",
        "CS",
        ("raw/ms_academic_cs.npz",),
        18333,
        6805,
        15,
        True,
    ),
    "coauthor-physics": Source(
        "coauthor-physics",
        "coauthor",
        "Physics",
        "Physics",
        ("raw/ms_academic_phy.npz",),
        34493,
        8415,
        5,
        True,
    ),
    "ogbn-arxiv": Source(
        "ogbn-arxiv",
        "ogb",
        "ogbn-arxiv",
        "ogbn_arxiv",
        (
            "RELEASE_v1.txt",
            *_OGB_RAW,
            "raw/node_year.csv.gz",
            *(f"split/time/{s}.csv.gz" for s in ("train", "valid", "test")),
        ),
        169343,
        128,
        40,
        False,
    ),
    "ogbn-products": Source(
        "ogbn-products",
        "ogb",
        "ogbn-products",
        "ogbn_products",
        (
            "RELEASE_v1.txt",
            *_OGB_RAW,
            *(f"split/sales_ranking/{s}.csv.gz" for s in ("train", "valid", "test")),
        ),
        2449029,
        100,
        47,
        False,
    ),
}


@dataclass(frozen=True)
class RawGraph:
    """What a loader returns before rbm-tune's own preprocessing and splitting."""

    x: Tensor
    y: Tensor
    edge_index: Tensor
    split: tuple[Tensor, Tensor, Tensor] | None  # official train/val/test, if the data has one


def missing_files(source: Source, root: Path) -> list[str]:
    """Required files of ``source`` that are absent under ``root``."""
    return [f for f in source.files if not (root / source.folder / f).is_file()]


def _work_root(source: Source, root: Path, cache_dir: Path) -> Path:
    """A writable root mirroring ``root/<folder>`` by symlinks, unique to the raw files' state."""
    base = root / source.folder
    h = hashlib.sha256(str(base.resolve()).encode())
    for f in source.files:
        st = (base / f).stat()
        h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    work = cache_dir / "processed" / f"{source.folder}-{h.hexdigest()[:16]}"
    dataset_dir = work / source.folder
    dataset_dir.mkdir(parents=True, exist_ok=True)
    # link the top-level entries the loader reads (raw/, split/, RELEASE_v1.txt)
    for top in sorted({f.split("/")[0] for f in source.files}):
        link = dataset_dir / top
        if not link.exists():
            try:
                link.symlink_to((base / top).resolve())
            except FileExistsError:  # another process linked it first
                pass
    return work


def _allow_pyg_globals() -> None:
    """PyG's and OGB's processed files name PyG's data classes: allow-list them (and only them)
    for ``torch.load(weights_only=True)`` (torch >= 2.6)."""
    from torch_geometric.data.data import Data, DataEdgeAttr, DataTensorAttr
    from torch_geometric.data.storage import GlobalStorage

    torch.serialization.add_safe_globals([Data, DataEdgeAttr, DataTensorAttr, GlobalStorage])


# (module, name) of every global a Planetoid ``ind.*`` pickle may name: numpy arrays, a scipy
# CSR matrix, the graph's adjacency dict of lists, and the pure helpers pickle itself uses to
# rebuild them. Anything else (os.system, builtins.eval, ...) is refused.
_PLANETOID_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("scipy.sparse.csr", "csr_matrix"),
        ("scipy.sparse._csr", "csr_matrix"),
        ("collections", "defaultdict"),
        ("__builtin__", "list"),
        ("builtins", "list"),
        ("__builtin__", "dict"),
        ("builtins", "dict"),
        # written by Python 3 (protocol <= 2: bytes and plain objects): pure constructors
        ("_codecs", "encode"),
        ("copy_reg", "_reconstructor"),
        ("copyreg", "_reconstructor"),
        ("__builtin__", "object"),
        ("builtins", "object"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }
)


class _PlanetoidUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that builds only the classes Planetoid's raw files are made of."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PLANETOID_GLOBALS:
            raise pickle.UnpicklingError(
                f"global {module}.{name} is not allowed in a Planetoid data file"
            )
        return super().find_class(module, name)


def _planetoid_pickle_load(file: Any, *, encoding: str = "ASCII", **_: Any) -> Any:
    return _PlanetoidUnpickler(file, encoding=encoding).load()


@contextlib.contextmanager
def _safe_loads() -> Iterator[None]:
    """While a dataset loads, PyG reads tensors and Planetoid pickles without running code.

    Replaces PyG's ``fs.torch_load`` (whose fallback is ``weights_only=False``) by a strict
    ``weights_only=True`` load, and the ``pickle`` module seen by PyG's Planetoid reader by one
    whose ``load`` allows only :data:`_PLANETOID_GLOBALS`. Both are put back afterwards.
    """
    import fsspec
    from torch_geometric.io import fs, planetoid

    def strict_torch_load(path: str, map_location: Any = None) -> Any:
        with fsspec.open(path, "rb") as f:
            return torch.load(f, map_location, weights_only=True)

    _allow_pyg_globals()
    saved = fs.torch_load, planetoid.pickle
    fs.torch_load = strict_torch_load
    planetoid.pickle = types.SimpleNamespace(
        load=_planetoid_pickle_load, UnpicklingError=pickle.UnpicklingError
    )
    try:
        yield
    finally:
        fs.torch_load, planetoid.pickle = saved


def _load(source: Source, root: str) -> RawGraph:
    if source.kind == "planetoid":
        from torch_geometric.datasets import Planetoid

        data = Planetoid(root, source.loader_name)[0]
        split = tuple(
            m.nonzero().view(-1) for m in (data.train_mask, data.val_mask, data.test_mask)
        )
        return RawGraph(data.x, data.y, data.edge_index, split)
    if source.kind in ("amazon", "coauthor"):
        from torch_geometric import datasets

        cls = datasets.Amazon if source.kind == "amazon" else datasets.Coauthor
        dataset = cls(root, source.loader_name)
        data = dataset[0]
        x = data.x
        if source.kind == "coauthor":
            # PyG binarises features (x > 0 -> 1); the reference keeps the raw counts (§6.1).
            x = _raw_npz_features(Path(dataset.raw_paths[0]))
        return RawGraph(x, data.y, data.edge_index, None)
    if source.kind == "ogb":
        from ogb.nodeproppred import PygNodePropPredDataset

        _allow_pyg_globals()
        dataset = PygNodePropPredDataset(source.loader_name, root=root)
        data = dataset[0]
        idx = dataset.get_idx_split()
        split = (idx["train"], idx["valid"], idx["test"])
        return RawGraph(data.x, data.y.view(-1), data.edge_index, split)
    raise AssertionError(source.kind)


def _raw_npz_features(path: Path) -> Tensor:
    import numpy as np
    import scipy.sparse as sp

    with np.load(path) as f:
        x = sp.csr_matrix((f["attr_data"], f["attr_indices"], f["attr_indptr"]), f["attr_shape"])
        return torch.from_numpy(x.toarray()).float()


def read_source(source: Source, root: Path, cache_dir: Path, *, download: bool) -> RawGraph:
    """Read a dataset's raw graph through its real loader.

    Raises:
        DataError: the files are missing (and ``download`` is off) or cannot be parsed.
    """
    if download:
        root.mkdir(parents=True, exist_ok=True)
        load_root = root
        lock_path = root / f".{source.folder}.lock"
    else:
        if not root.is_dir():
            raise DataError(
                f"data root {root} does not exist; pass --data-root DIR or set RBM_TUNE_DATA "
                f"to the folder holding {source.folder}/, or add --download"
            )
        missing = missing_files(source, root)
        if missing:
            shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
            raise DataError(
                f"dataset {source.name}: missing {shown} in {root / source.folder}; copy the "
                f"files there, point --data-root / RBM_TUNE_DATA at the right folder, or add "
                f"--download"
            )
        load_root = _work_root(source, root, cache_dir)
        lock_path = load_root / ".lock"
    processed = load_root / source.folder / "processed"
    with FileLock(str(lock_path)):
        had_processed = not download and any(processed.glob("*.pt"))
        try:
            return _load_quietly(source, load_root, download)
        except DataError:
            raise
        except (Exception, SystemExit) as err:  # noqa: BLE001 - any parse failure
            failure: BaseException = err
        if had_processed:
            # The processed copy in rbm-tune's cache, not the user's files, may be what failed
            # (a crash cut it short, or it is not a plain tensor file): rebuild it from raw once.
            _log.warning(
                f"rbm-tune: warning: the processed copy of {source.name} in {processed} could "
                f"not be loaded ({_detail(failure)}); rebuilding it from the raw files"
            )
            shutil.rmtree(processed, ignore_errors=True)
            try:
                return _load_quietly(source, load_root, download)
            except (Exception, SystemExit) as err:  # noqa: BLE001
                failure = err
        if not download:
            shutil.rmtree(processed, ignore_errors=True)  # leave nothing half-built behind
    where = root / source.folder
    raise DataError(
        f"cannot read dataset {source.name} from {where} ({_detail(failure)}); the files look "
        f"truncated or corrupt: copy them again, or remove them and use --download"
    ) from failure


def _detail(err: BaseException) -> str:
    if isinstance(err, pickle.UnpicklingError) and "Weights only load failed" in str(err):
        return "UnpicklingError: not a plain tensor file; refused to unpickle it"
    text = re.sub(r"\x1b\[[0-9;]*m", "", f"{type(err).__name__}: {err}")  # ANSI colours
    return text.splitlines()[0][:160]


def _load_quietly(source: Source, load_root: Path, download: bool) -> RawGraph:
    """``_load`` with PyG / OGB's progress prints kept off rbm-tune's stdout.

    Without ``download`` their lines ("Processing...") are held back and shown only when the
    load succeeds, so a failure is the one error line; downloads show their progress live.
    """
    if download:
        with contextlib.redirect_stdout(sys.stderr), _safe_loads():
            return _load(source, str(load_root))
    held = io.StringIO()
    with contextlib.redirect_stdout(held), contextlib.redirect_stderr(held), _safe_loads():
        raw = _load(source, str(load_root))
    sys.stderr.write(held.getvalue())
    return raw
