"""Datasets: ``load_graph(name, root=..., setting=..., seed=...) -> Graph`` (method §6).

Preprocessing per dataset family (method §6.1):

- Planetoid (cora, citeseer, pubmed): features row-normalised (as DGL's loaders do), exactly one
  self-loop per node, the public split (fixed across seeds).
- Amazon / Coauthor: unweighted, symmetric, no self-loops, restricted to the largest connected
  component; no self-loops added; a seeded 20/30-per-class split, rest test.
- OGB: official split; arxiv made undirected, then self-loops; products gets self-loops.
- demo: an embedded contextual SBM (``demo.py``), seeded 20/30-per-class split.

Inductive (method §6.3): held-out test nodes and every edge touching them are removed from the
training graph; observed nodes are ordered train, val, rest.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from rbm_tune.data.demo import make_demo
from rbm_tune.data.graph import Graph, fingerprint
from rbm_tune.data.sources import (
    SOURCES,
    RawGraph,
    Source,
    default_cache_dir,
    missing_files,
    read_source,
)
from rbm_tune.data.splits import (
    add_self_loops,
    coalesce,
    inductive_split,
    largest_component,
    per_class_split,
    remove_self_loops,
    subgraph,
    to_undirected,
)
from rbm_tune.errors import DataError
from rbm_tune.paths import local_cache_dir

__all__ = [
    "SOURCES",
    "Graph",
    "default_cache_dir",
    "default_data_root",
    "get_source",
    "load_graph",
    "make_graph",
    "resolve_data_root",
]


def default_data_root() -> Path:
    """Where datasets live when neither ``--data-root`` nor ``RBM_TUNE_DATA`` is given."""
    return default_cache_dir() / "data"


def resolve_data_root(data_root: str | Path | None) -> Path:
    """``--data-root``, else env ``RBM_TUNE_DATA``, else ``<cache>/data``."""
    if data_root:
        return Path(data_root).expanduser().resolve()
    env = os.environ.get("RBM_TUNE_DATA")
    if env:
        return Path(env).expanduser().resolve()
    return default_data_root()


def get_source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; choose one of {sorted(SOURCES)}") from None


def dataset_status(name: str, root: Path) -> tuple[bool, list[str]]:
    """(present, missing files) for a dataset under ``root``; ``demo`` is always present."""
    source = get_source(name)
    if source.kind == "demo":
        return True, []
    missing = missing_files(source, root)
    return not missing, missing


def _preprocess(source: Source, raw: RawGraph) -> RawGraph:
    x, y, edge_index = raw.x.float(), raw.y.long(), raw.edge_index.long()
    n = x.size(0)
    if source.kind == "planetoid":
        rowsum = x.sum(dim=1, keepdim=True)
        x = torch.where(rowsum > 0, x / rowsum.clamp_min(1e-12), x)
        edge_index = remove_self_loops(edge_index)
        edge_index = add_self_loops(coalesce(edge_index, n), n)
        return RawGraph(x, y, coalesce(edge_index, n), raw.split)
    if source.kind in ("amazon", "coauthor", "demo"):
        edge_index = remove_self_loops(to_undirected(edge_index, n))
        if source.kind == "demo":
            return RawGraph(x, y, coalesce(edge_index, n), None)
        keep = largest_component(edge_index, n)
        return RawGraph(x[keep], y[keep], subgraph(edge_index, keep, n), None)
    if source.kind == "ogb":
        if source.name == "ogbn-arxiv":
            edge_index = to_undirected(edge_index, n)
        edge_index = add_self_loops(remove_self_loops(edge_index), n)
        return RawGraph(x, y, coalesce(edge_index, n), raw.split)
    raise AssertionError(source.kind)


def _check_consistent(source: Source, raw: RawGraph) -> None:
    """Catch damage the loaders accept silently (a short ``test.index``, short label files)."""
    n = raw.x.size(0)
    problems = []
    if raw.y.size(0) != n:
        problems.append(f"{raw.y.size(0)} labels for {n} nodes")
    if raw.edge_index.numel() and int(raw.edge_index.max()) >= n:
        problems.append("edges point past the last node")
    if raw.split is not None:
        if any(t.numel() and int(t.max()) >= n for t in raw.split):
            problems.append("split indices point past the last node")
        if source.kind == "planetoid" and (raw.split[1].numel(), raw.split[2].numel()) != (
            500,
            1000,
        ):
            sizes = f"{raw.split[1].numel()}/{raw.split[2].numel()}"
            problems.append(f"public split has {sizes} val/test nodes instead of 500/1000")
    if problems:
        raise DataError(
            f"dataset {source.name} is inconsistent ({'; '.join(problems)}); the files look "
            "truncated or corrupt: copy them again, or remove them and use --download"
        )


def load_graph(
    name: str,
    *,
    root: str | Path | None = None,
    setting: str = "transductive",
    seed: int = 0,
    download: bool = False,
    cache_dir: str | Path | None = None,
) -> Graph:
    """Load a dataset, preprocess and split it as method §6 says.

    Args:
        name: a dataset name (``rbm-tune datasets`` lists them).
        root: data root; ``None`` resolves ``RBM_TUNE_DATA``, then ``<cache>/data``.
        setting: ``transductive`` or ``inductive``.
        seed: seeds the split where method §6.2 seeds it (Amazon/Coauthor/demo 20/30 per class,
            the inductive hold-out of non-Planetoid data).
        download: let PyG / OGB download missing files (needs internet).
        cache_dir: the rbm-tune cache (``--cache-dir``); processed copies go to its
            ``processed/`` folder. ``None``, or an object-store URI (PyG writes only to local
            disk): ``RBM_TUNE_CACHE``, else ``~/.cache/rbm-tune``.

    Raises:
        DataError: unknown name or setting, missing or unreadable files.
    """
    source = get_source(name)
    if setting not in ("transductive", "inductive"):
        raise DataError(f"unknown setting {setting!r}; choose transductive or inductive")
    if source.kind == "demo":
        raw = RawGraph(*make_demo(), None)
    else:
        raw = read_source(
            source,
            resolve_data_root(root),
            local_cache_dir(cache_dir),
            download=download,
        )
    _check_consistent(source, raw)
    raw = _preprocess(source, raw)
    return make_graph(
        raw.x,
        raw.y,
        raw.edge_index,
        name=name,
        setting=setting,
        seed=seed,
        split=raw.split,
        heldout_all_test=source.kind == "planetoid",
    )


def make_graph(
    x: Tensor,
    y: Tensor,
    edge_index: Tensor,
    *,
    name: str = "custom",
    setting: str = "transductive",
    seed: int = 0,
    split: tuple[Tensor, Tensor, Tensor] | None = None,
    heldout_all_test: bool = False,
    train_per_class: int = 20,
    val_per_class: int = 30,
) -> Graph:
    """Split an already preprocessed graph and wrap it in a :class:`Graph` (method §6.2-6.3).

    Args:
        split: official train/val/test indices; ``None`` draws the seeded per-class split.
        heldout_all_test: inductive Planetoid protocol (the whole test set is held out).
        train_per_class, val_per_class: sizes of the seeded per-class split.
    """
    num_classes = int(y.max()) + 1
    if split is not None:
        train, val, test = (t.long() for t in split)
    else:
        train, val, test = per_class_split(
            y, num_classes, seed=seed, train_per_class=train_per_class, val_per_class=val_per_class
        )
    n = x.size(0)
    if setting == "inductive":
        observed, test = inductive_split(
            n, train, val, test, seed=seed, heldout_all_test=heldout_all_test
        )
        observed_edges = subgraph(edge_index, observed, n)
        obs_train = torch.arange(train.numel())
        obs_val = torch.arange(train.numel(), train.numel() + val.numel())
    else:
        observed, observed_edges, obs_train, obs_val = torch.arange(n), edge_index, train, val
    digest = fingerprint(x, y, edge_index, train, val, test, observed, extra=f"{name}|{setting}")
    return Graph(
        name=name,
        setting=setting,
        seed=seed,
        x=x.contiguous(),
        y=y,
        edge_index=edge_index,
        train_idx=train,
        val_idx=val,
        test_idx=test,
        observed_idx=observed,
        observed_edge_index=observed_edges,
        observed_train=obs_train,
        observed_val=obs_val,
        num_classes=num_classes,
        fingerprint=digest,
    )
