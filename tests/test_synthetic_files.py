"""The synthetic dataset files are read by the REAL loaders (PyG Planetoid, OGB), offline."""

from __future__ import annotations

import builtins
import collections
import filecmp
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
from torch_geometric.data.storage import GlobalStorage
from torch_geometric.utils import contains_self_loops, degree, is_undirected

from tests.support.synthetic_files import (
    PUBMED_NUM_ALLX,
    PUBMED_NUM_NODES,
    PUBMED_NUM_TEST,
    arxiv_split_sizes,
    products_split_sizes,
    write_ogbn_arxiv,
    write_ogbn_products,
    write_planetoid_pubmed,
)

# ogb's torch.load of its processed file runs with weights_only=True on torch >= 2.6: its
# loads here allow PyG's classes for the call only (torch.serialization.safe_globals), so that
# no other test in this process passes because this file registered them for good
PYG_GLOBALS = [DataEdgeAttr, DataTensorAttr, GlobalStorage]

pytestmark = pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")


class InputCalled(Exception):
    pass


@pytest.fixture(autouse=True)
def no_interactive_input(monkeypatch):
    """ogb asks input() when RELEASE_v1.txt is missing; make that a hard, visible failure."""

    def refuse(prompt=""):
        raise InputCalled(prompt)

    monkeypatch.setattr(builtins, "input", refuse)


def _planetoid(root: Path):
    from torch_geometric.datasets import Planetoid

    return Planetoid(str(root), "PubMed")


def _ogb(name: str, root: Path):
    from ogb.nodeproppred import PygNodePropPredDataset

    with torch.serialization.safe_globals(PYG_GLOBALS):
        return PygNodePropPredDataset(name, root=str(root))


def _all_files(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())


def _read_gz_ints(path: Path) -> np.ndarray:
    return np.loadtxt(path, dtype=np.int64, delimiter=",", ndmin=1)


# --------------------------------------------------------------------------- writers


@pytest.mark.parametrize(
    "writer",
    [write_planetoid_pubmed, write_ogbn_arxiv, write_ogbn_products],
    ids=lambda w: w.__name__,
)
def test_writer_is_deterministic_and_small(tmp_path, writer):
    """Same seed, same bytes; another seed, other data. The stand-ins stay small (under 1 MiB
    in all) so the tests that load them stay quick; that is checked by size, not by a clock,
    which on a loaded CI machine made this test fail for nothing."""
    a = writer(tmp_path / "a", seed=3)
    b = writer(tmp_path / "b", seed=3)
    c = writer(tmp_path / "c", seed=4)

    assert sum((a / f).stat().st_size for f in _all_files(a)) < 1 << 20
    files = _all_files(a)
    assert files == _all_files(b) == _all_files(c)
    _, mismatch, errors = filecmp.cmpfiles(a, b, [str(f) for f in files], shallow=False)
    assert mismatch == [] and errors == []
    _, mismatch, _ = filecmp.cmpfiles(a, c, [str(f) for f in files], shallow=False)
    assert mismatch, "another seed must give other data"


def test_pubmed_raw_files_have_the_planetoid_layout(tmp_path):
    folder = write_planetoid_pubmed(tmp_path, num_features=20)
    raw = folder / "raw"
    assert folder == tmp_path / "PubMed"
    names = ["x", "tx", "allx", "y", "ty", "ally", "graph", "test.index"]
    assert sorted(p.name for p in raw.iterdir()) == sorted(f"ind.pubmed.{n}" for n in names)

    def load(name):
        with open(raw / f"ind.pubmed.{name}", "rb") as f:
            return pickle.load(f, encoding="latin1")

    for name, rows in (("x", 60), ("allx", PUBMED_NUM_ALLX), ("tx", PUBMED_NUM_TEST)):
        m = load(name)
        assert sp.issparse(m) and m.shape == (rows, 20)
        assert (m.getnnz(axis=1) > 0).all()
    for name, rows in (("y", 60), ("ally", PUBMED_NUM_ALLX), ("ty", PUBMED_NUM_TEST)):
        y = load(name)
        assert isinstance(y, np.ndarray) and y.shape == (rows, 3)
        assert (y.sum(axis=1) == 1).all()
    assert (load("x") != load("allx")[:60]).nnz == 0
    assert (load("y") == load("ally")[:60]).all()

    graph = load("graph")
    assert isinstance(graph, collections.defaultdict)
    assert sorted(graph) == list(range(PUBMED_NUM_NODES))
    assert all(graph[v] for v in graph)

    test_index = np.loadtxt(raw / "ind.pubmed.test.index", dtype=np.int64)
    assert sorted(test_index) == list(range(PUBMED_NUM_ALLX, PUBMED_NUM_NODES))
    assert not (np.diff(test_index) > 0).all(), "the real test.index is not sorted"


def test_ogb_files_have_the_release_layout(tmp_path):
    arxiv = write_ogbn_arxiv(tmp_path)
    products = write_ogbn_products(tmp_path)
    assert arxiv == tmp_path / "ogbn_arxiv" and products == tmp_path / "ogbn_products"
    common = [
        "RELEASE_v1.txt",
        "raw/edge.csv.gz",
        "raw/node-feat.csv.gz",
        "raw/node-label.csv.gz",
        "raw/num-edge-list.csv.gz",
        "raw/num-node-list.csv.gz",
    ]
    arxiv_files = {str(p) for p in _all_files(arxiv)}
    products_files = {str(p) for p in _all_files(products)}
    assert arxiv_files >= set(common) | {"raw/node_year.csv.gz"}
    assert products_files >= set(common)
    for split in ("train", "valid", "test"):
        assert f"split/time/{split}.csv.gz" in arxiv_files
        assert f"split/sales_ranking/{split}.csv.gz" in products_files
    edge = _read_gz_ints(arxiv / "raw" / "edge.csv.gz")
    assert edge.ndim == 2 and edge.shape[1] == 2  # headerless "src,dst"
    assert _read_gz_ints(arxiv / "raw" / "num-edge-list.csv.gz").tolist() == [edge.shape[0]]
    assert _read_gz_ints(arxiv / "raw" / "num-node-list.csv.gz").tolist() == [600]


# --------------------------------------------------------------------------- PubMed


def test_planetoid_reads_pubmed_offline(tmp_path):
    folder = write_planetoid_pubmed(tmp_path, num_features=37, seed=1)
    ds = _planetoid(tmp_path)
    data = ds[0]

    assert data.num_nodes == PUBMED_NUM_NODES == 1700
    assert ds.num_features == 37 and data.x.shape == (1700, 37)
    assert ds.num_classes == 3
    assert int(data.train_mask.sum()) == 60
    assert int(data.val_mask.sum()) == 500
    assert int(data.test_mask.sum()) == 1000
    assert not (data.train_mask & data.val_mask).any()
    assert not ((data.train_mask | data.val_mask) & data.test_mask).any()
    assert torch.bincount(data.y[data.train_mask], minlength=3).tolist() == [20, 20, 20]

    # tx/ty row k belongs to node test.index[k]
    test_index = torch.from_numpy(np.loadtxt(folder / "raw" / "ind.pubmed.test.index", dtype=int))
    with open(folder / "raw" / "ind.pubmed.ty", "rb") as f:
        ty = pickle.load(f)
    assert torch.equal(data.y[test_index], torch.from_numpy(ty.argmax(axis=1)))
    assert data.test_mask[test_index].all()

    ei = data.edge_index
    assert is_undirected(ei, num_nodes=1700)
    assert not contains_self_loops(ei)  # the planted self loop is dropped by PyG
    assert (degree(ei[0], 1700) > 0).all()
    homophily = (data.y[ei[0]] == data.y[ei[1]]).float().mean().item()
    assert homophily > 0.6

    processed = folder / "processed" / "data.pt"
    assert processed.is_file()
    mtime = processed.stat().st_mtime_ns
    again = _planetoid(tmp_path)[0]  # from processed/
    assert processed.stat().st_mtime_ns == mtime
    for key in ("x", "y", "edge_index", "train_mask", "val_mask", "test_mask"):
        assert torch.equal(again[key], data[key])


# --------------------------------------------------------------------------- OGB


def _check_split(ds, folder: Path, split_name: str, sizes: tuple[int, int, int], n: int):
    split = ds.get_idx_split()
    assert [split[k].numel() for k in ("train", "valid", "test")] == list(sizes)
    for key in ("train", "valid", "test"):
        assert split[key].dtype == torch.long
        written = _read_gz_ints(folder / "split" / split_name / f"{key}.csv.gz")
        assert split[key].tolist() == written.tolist()
    everything = torch.cat([split["train"], split["valid"], split["test"]])
    assert sorted(everything.tolist()) == list(range(n))
    return split


def test_ogb_reads_ogbn_arxiv_offline(tmp_path):
    folder = write_ogbn_arxiv(tmp_path, num_nodes=600, num_features=16, num_classes=5)
    ds = _ogb("ogbn-arxiv", tmp_path)
    data = ds[0]

    assert data.num_nodes == 600
    assert data.x.shape == (600, 16) and data.x.dtype == torch.float32
    assert data.y.shape == (600, 1) and data.y.dtype == torch.long
    assert data.node_year.shape == (600, 1)
    assert ds.num_classes == 40  # ogb reads it from master.csv, not from the labels
    assert int(data.y.max()) + 1 == 5

    split = _check_split(ds, folder, "time", arxiv_split_sizes(600), 600)
    assert split["train"].numel() == 360
    year = data.node_year.view(-1)
    assert (year[split["train"]] <= 2017).all()
    assert (year[split["valid"]] == 2018).all()
    assert (year[split["test"]] == 2019).all()
    assert set(data.y.view(-1)[split["train"]].tolist()) == set(range(5))

    # Directed: ogb keeps the raw edges as they are (add_inverse_edge=False).
    ei = data.edge_index
    raw = _read_gz_ints(folder / "raw" / "edge.csv.gz")
    assert torch.equal(ei, torch.from_numpy(raw).t())
    assert not is_undirected(ei, num_nodes=600)
    pairs = set(map(tuple, ei.t().tolist()))
    assert not any((v, u) in pairs for u, v in pairs), "a citation DAG has no reciprocal edges"
    assert not contains_self_loops(ei)
    assert (year[ei[0]] >= year[ei[1]]).all(), "papers cite older or same-year papers"
    assert (degree(ei[0], 600) + degree(ei[1], 600) > 0).all()

    processed = folder / "processed" / "geometric_data_processed.pt"
    assert processed.is_file()
    mtime = processed.stat().st_mtime_ns
    again = _ogb("ogbn-arxiv", tmp_path)  # from processed/
    assert processed.stat().st_mtime_ns == mtime
    for key in ("x", "y", "edge_index", "node_year"):
        assert torch.equal(again[0][key], data[key])
    assert {k: v.numel() for k, v in again.get_idx_split().items()} == {
        k: v.numel() for k, v in split.items()
    }


def test_ogb_reads_ogbn_products_offline(tmp_path):
    folder = write_ogbn_products(tmp_path, num_nodes=600, num_features=12, num_classes=6)
    ds = _ogb("ogbn-products", tmp_path)
    data = ds[0]

    assert data.num_nodes == 600
    assert data.x.shape == (600, 12) and data.x.dtype == torch.float32
    assert data.y.shape == (600, 1) and data.y.dtype == torch.long
    assert ds.num_classes == 47  # ogb reads it from master.csv, not from the labels
    assert int(data.y.max()) + 1 == 6

    split = _check_split(ds, folder, "sales_ranking", products_split_sizes(600), 600)
    assert [split[k].numel() for k in ("train", "valid", "test")] == [48, 12, 540]
    assert set(data.y.view(-1)[split["train"]].tolist()) == set(range(6))

    # Stored once, ogb appends each reverse edge (add_inverse_edge=True).
    ei = data.edge_index
    raw = _read_gz_ints(folder / "raw" / "edge.csv.gz")
    assert ei.size(1) == 2 * raw.shape[0]
    assert torch.equal(ei[:, 0::2], torch.from_numpy(raw).t())
    assert torch.equal(ei[:, 1::2], torch.from_numpy(raw).t().flip(0))
    assert is_undirected(ei, num_nodes=600)
    assert ei.t().unique(dim=0).size(0) == ei.size(1), "no duplicated edges"
    assert not contains_self_loops(ei)
    assert (degree(ei[0], 600) > 0).all()
    homophily = (data.y[ei[0]] == data.y[ei[1]]).float().mean().item()
    assert homophily > 0.6

    processed = folder / "processed" / "geometric_data_processed.pt"
    assert processed.is_file()
    mtime = processed.stat().st_mtime_ns
    again = _ogb("ogbn-products", tmp_path)  # from processed/
    assert processed.stat().st_mtime_ns == mtime
    for key in ("x", "y", "edge_index"):
        assert torch.equal(again[0][key], data[key])


@pytest.mark.parametrize(
    ("name", "writer"), [("ogbn-arxiv", write_ogbn_arxiv), ("ogbn-products", write_ogbn_products)]
)
def test_ogb_other_sizes(tmp_path, name, writer):
    sizes = arxiv_split_sizes if name == "ogbn-arxiv" else products_split_sizes
    writer(tmp_path, num_nodes=1000, num_features=5, num_classes=3, seed=7)
    ds = _ogb(name, tmp_path)
    assert ds[0].num_nodes == 1000 and ds[0].x.shape == (1000, 5)
    assert int(ds[0].y.max()) + 1 == 3
    split = ds.get_idx_split()
    assert tuple(split[k].numel() for k in ("train", "valid", "test")) == sizes(1000)


@pytest.mark.parametrize(
    ("name", "writer"), [("ogbn-arxiv", write_ogbn_arxiv), ("ogbn-products", write_ogbn_products)]
)
def test_ogb_prompts_without_release_file(tmp_path, name, writer):
    """Documents the trap the writers avoid: no RELEASE_v1.txt -> ogb calls input()."""
    folder = writer(tmp_path)
    (folder / "RELEASE_v1.txt").unlink()
    with pytest.raises(InputCalled, match="update the dataset"):
        _ogb(name, tmp_path)
