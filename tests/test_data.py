"""Real loaders on the real files in ../shared/data: sizes, splits, inductive hygiene."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
import torch

from rbm_tune.data import Graph, load_graph
from rbm_tune.errors import DataError

# name -> (nodes after preprocessing, features, classes, PyG's directed raw edge count)
SIZES = {
    "cora": (2708, 1433, 7, 10556),
    "citeseer": (3327, 3703, 6, 9104),
    "amazon-computers": (13381, 767, 10, None),
    "amazon-photo": (7487, 745, 8, None),
    "coauthor-cs": (18333, 6805, 15, 163788),
    "coauthor-physics": (34493, 8415, 5, 495924),
}
PLANETOID_SPLIT = {"cora": (140, 500, 1000), "citeseer": (120, 500, 1000)}


@cache
def _load(name: str, root: str, setting: str = "transductive", seed: int = 0) -> Graph:
    return load_graph(name, root=root, setting=setting, seed=seed)


def _edges_without_loops(g: Graph) -> int:
    return int((g.edge_index[0] != g.edge_index[1]).sum())


@pytest.mark.parametrize("name", sorted(SIZES))
def test_real_dataset_sizes(name: str, shared_data: Path) -> None:
    nodes, features, classes, raw_edges = SIZES[name]
    g = _load(name, str(shared_data))
    assert (g.num_nodes, g.num_features, g.num_classes) == (nodes, features, classes)
    assert g.y.shape == (nodes,) and g.x.dtype == torch.float32
    assert g.edge_index.max() < nodes
    loops = int((g.edge_index[0] == g.edge_index[1]).sum())
    if name in PLANETOID_SPLIT:
        assert loops == nodes  # method §6.1: exactly one self-loop per node
        assert _edges_without_loops(g) == raw_edges
        assert torch.allclose(g.x.sum(1)[g.x.sum(1) > 0], torch.tensor(1.0))  # row-normalised
    else:
        assert loops == 0  # no self-loops on Amazon/Coauthor
        if raw_edges is not None:  # Coauthor graphs are connected: LCC keeps every edge
            assert g.edge_index.size(1) == raw_edges
    # undirected
    rev = torch.sparse_coo_tensor(g.edge_index.flip(0), torch.ones(g.edge_index.size(1)))
    fwd = torch.sparse_coo_tensor(g.edge_index, torch.ones(g.edge_index.size(1)))
    assert (fwd - rev).coalesce().values().abs().sum() == 0


@pytest.mark.parametrize("name", sorted(SIZES))
def test_splits_are_disjoint_with_spec_sizes(name: str, shared_data: Path) -> None:
    g = _load(name, str(shared_data))
    train, val, test = g.train_idx, g.val_idx, g.test_idx
    sets = [set(train.tolist()), set(val.tolist()), set(test.tolist())]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    if name in PLANETOID_SPLIT:
        assert (train.numel(), val.numel(), test.numel()) == PLANETOID_SPLIT[name]
    else:
        c = g.num_classes
        assert torch.equal(torch.bincount(g.y[train], minlength=c), torch.full((c,), 20))
        assert torch.equal(torch.bincount(g.y[val], minlength=c), torch.full((c,), 30))
        assert train.numel() + val.numel() + test.numel() == g.num_nodes


@pytest.mark.parametrize("name", ["amazon-photo", "coauthor-cs"])
def test_seeded_split_is_reproducible(name: str, shared_data: Path) -> None:
    a = _load(name, str(shared_data), seed=0)
    b = load_graph(name, root=shared_data, seed=0)
    c = _load(name, str(shared_data), seed=1)
    assert torch.equal(a.train_idx, b.train_idx) and torch.equal(a.val_idx, b.val_idx)
    assert a.fingerprint == b.fingerprint
    assert not torch.equal(a.train_idx, c.train_idx)
    assert a.fingerprint != c.fingerprint


def test_planetoid_split_is_fixed_across_seeds(shared_data: Path) -> None:
    a, b = _load("cora", str(shared_data), seed=0), _load("cora", str(shared_data), seed=3)
    assert torch.equal(a.train_idx, b.train_idx) and torch.equal(a.test_idx, b.test_idx)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_inductive_hides_heldout_nodes(name: str, shared_data: Path) -> None:
    full = _load(name, str(shared_data))
    g = _load(name, str(shared_data), setting="inductive")
    held = set(g.test_idx.tolist())
    observed = g.observed_idx
    assert not held & set(observed.tolist())
    assert observed.numel() + g.test_idx.numel() == g.num_nodes
    if name in PLANETOID_SPLIT:
        assert torch.equal(g.test_idx.sort().values, full.test_idx.sort().values)
    else:
        assert g.test_idx.numel() == int(0.2 * full.test_idx.numel())
    # observed order is train, val, rest; local train/val ids point at the same nodes
    assert torch.equal(observed[g.observed_train], g.train_idx)
    assert torch.equal(observed[g.observed_val], g.val_idx)
    # no edge of the training graph touches a held-out node
    src, dst = observed[g.observed_edge_index[0]], observed[g.observed_edge_index[1]]
    touched = set(src.tolist()) | set(dst.tolist())
    assert not touched & held
    # and every full-graph edge among observed nodes survives
    mask = torch.zeros(g.num_nodes, dtype=torch.bool)
    mask[observed] = True
    inner = mask[g.edge_index[0]] & mask[g.edge_index[1]]
    assert int(inner.sum()) == g.observed_edge_index.size(1)


def test_demo_is_embedded_and_seeded() -> None:
    a = load_graph("demo", root="/nonexistent/anywhere")
    b = load_graph("demo", seed=0)
    c = load_graph("demo", seed=1)
    assert a.num_nodes >= 2000 and a.num_classes >= 3
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert torch.equal(a.x, c.x)  # the graph is fixed, the split is seeded
    # homophilous: most edges join same-class nodes
    same = (a.y[a.edge_index[0]] == a.y[a.edge_index[1]]).float().mean()
    assert same > 0.6


def test_unknown_dataset_lists_choices() -> None:
    with pytest.raises(DataError, match="choose one of"):
        load_graph("corra")


def test_missing_root_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--data-root"):
        load_graph("cora", root=tmp_path / "nope")
    (tmp_path / "Cora" / "raw").mkdir(parents=True)
    with pytest.raises(DataError, match=r"missing .*ind\.cora\.x.*--download"):
        load_graph("cora", root=tmp_path)


def test_truncated_file_is_a_data_error(shared_data: Path, tmp_path: Path) -> None:
    raw = tmp_path / "Photo" / "raw"
    raw.mkdir(parents=True)
    src = shared_data / "Photo" / "raw" / "amazon_electronics_photo.npz"
    (raw / src.name).write_bytes(src.read_bytes()[: 1 << 20])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_graph("amazon-photo", root=tmp_path)


def test_shared_data_is_left_untouched(shared_data: Path) -> None:
    _load("cora", str(shared_data))
    assert not (shared_data / "Cora" / "processed").exists()


# --- datasets that cannot be had here: their real loaders on synthetic files --------------------
# (tests/synthetic_files.py writes the exact on-disk layout of the real downloads)


def test_pubmed_through_planetoid(tmp_path: Path) -> None:
    from tests.support.synthetic_files import PUBMED_NUM_NODES, write_planetoid_pubmed

    write_planetoid_pubmed(tmp_path, num_features=20)
    g = load_graph("pubmed", root=tmp_path)
    assert (g.num_nodes, g.num_features, g.num_classes) == (PUBMED_NUM_NODES, 20, 3)
    assert (g.train_idx.numel(), g.val_idx.numel(), g.test_idx.numel()) == (60, 500, 1000)
    assert int((g.edge_index[0] == g.edge_index[1]).sum()) == g.num_nodes
    ind = load_graph("pubmed", root=tmp_path, setting="inductive")
    assert torch.equal(ind.test_idx.sort().values, g.test_idx.sort().values)
    assert ind.num_observed == PUBMED_NUM_NODES - 1000


def test_truncated_planetoid_index_is_caught(tmp_path: Path) -> None:
    from tests.support.synthetic_files import write_planetoid_pubmed

    folder = write_planetoid_pubmed(tmp_path)
    index = folder / "raw" / "ind.pubmed.test.index"
    lines = index.read_text().splitlines()
    index.write_text("\n".join(lines[: len(lines) // 2]) + "\n")  # loads silently in PyG
    with pytest.raises(DataError, match="instead of 500/1000"):
        load_graph("pubmed", root=tmp_path)


def test_ogbn_arxiv_through_ogb(tmp_path: Path) -> None:
    from tests.support.synthetic_files import arxiv_split_sizes, write_ogbn_arxiv

    write_ogbn_arxiv(tmp_path, num_nodes=600, num_features=16, num_classes=5)
    g = load_graph("ogbn-arxiv", root=tmp_path)
    assert (g.num_nodes, g.num_features, g.num_classes) == (600, 16, 5)
    sizes = (g.train_idx.numel(), g.val_idx.numel(), g.test_idx.numel())
    assert sizes == arxiv_split_sizes(600)
    # made undirected, then one self-loop per node (method §6.1)
    assert int((g.edge_index[0] == g.edge_index[1]).sum()) == 600
    fwd = set(map(tuple, g.edge_index.t().tolist()))
    assert all((b, a) in fwd for a, b in fwd)
    raw = (tmp_path / "ogbn_arxiv" / "raw" / "edge.csv.gz").stat().st_size
    assert raw > 0 and not (tmp_path / "ogbn_arxiv" / "processed").exists()  # root untouched
    ind = load_graph("ogbn-arxiv", root=tmp_path, setting="inductive", seed=1)
    assert ind.test_idx.numel() == int(0.2 * sizes[2])


def test_ogbn_products_through_ogb(tmp_path: Path) -> None:
    from tests.support.synthetic_files import products_split_sizes, write_ogbn_products

    write_ogbn_products(tmp_path, num_nodes=600, num_features=12, num_classes=6)
    g = load_graph("ogbn-products", root=tmp_path)
    assert (g.num_nodes, g.num_features, g.num_classes) == (600, 12, 6)
    sizes = (g.train_idx.numel(), g.val_idx.numel(), g.test_idx.numel())
    assert sizes == products_split_sizes(600)
    assert int((g.edge_index[0] == g.edge_index[1]).sum()) == 600


def test_ogb_missing_release_file_is_a_data_error(tmp_path: Path) -> None:
    from tests.support.synthetic_files import write_ogbn_arxiv

    (write_ogbn_arxiv(tmp_path) / "RELEASE_v1.txt").unlink()
    with pytest.raises(DataError, match="missing RELEASE_v1.txt"):
        load_graph("ogbn-arxiv", root=tmp_path)


def _assert_edge_ops_match_pyg(edges: torch.Tensor, n: int, nodes: torch.Tensor) -> None:
    from torch_geometric import utils as pyg

    from rbm_tune.data.splits import (
        add_self_loops,
        coalesce,
        remove_self_loops,
        subgraph,
        to_undirected,
    )

    assert torch.equal(coalesce(edges, n), pyg.coalesce(edges, num_nodes=n))
    assert torch.equal(to_undirected(edges, n), pyg.to_undirected(edges, num_nodes=n))
    assert torch.equal(remove_self_loops(edges), pyg.remove_self_loops(edges)[0])
    assert torch.equal(add_self_loops(edges, n), pyg.add_self_loops(edges, num_nodes=n)[0])
    expected = pyg.subgraph(nodes, edges, relabel_nodes=True, num_nodes=n)[0]
    assert torch.equal(subgraph(edges, nodes, n), expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_edge_ops_match_pyg(seed: int) -> None:
    """rbm_tune's torch-only edge operations give PyG's results (same edges, same order)."""
    from torch_geometric import utils as pyg

    from rbm_tune.data.splits import coalesce, to_undirected

    gen = torch.Generator().manual_seed(seed)
    n = 50 + 25 * seed
    edges = torch.randint(n, (2, 6 * n), generator=gen)  # duplicates, loops, one direction
    edges[:, :5] = edges[:, :1]  # a repeated edge
    edges[1, 5:9] = edges[0, 5:9]  # self-loops
    nodes = torch.randperm(n, generator=gen)[: n // 2]  # unsorted, as inductive splits are
    _assert_edge_ops_match_pyg(edges, n, nodes)
    empty = torch.empty(2, 0, dtype=torch.long)
    assert torch.equal(coalesce(empty, n), pyg.coalesce(empty, num_nodes=n))
    assert torch.equal(to_undirected(empty, n), pyg.to_undirected(empty, num_nodes=n))


def test_edge_ops_match_pyg_on_cora(shared_data: Path) -> None:
    """The same, on cora's real edges and its inductive observed nodes, shuffled."""
    from rbm_tune.data import SOURCES
    from rbm_tune.data.sources import read_source
    from rbm_tune.paths import default_cache_dir

    raw = read_source(SOURCES["cora"], shared_data, default_cache_dir(), download=False)
    observed = _load("cora", str(shared_data), setting="inductive").observed_idx
    observed = observed[
        torch.randperm(observed.numel(), generator=torch.Generator().manual_seed(0))
    ]
    _assert_edge_ops_match_pyg(raw.edge_index.long(), raw.x.size(0), observed)
