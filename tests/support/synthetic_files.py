"""Small synthetic stand-ins for PubMed, ogbn-arxiv and ogbn-products, on disk in the real layout.

rbm-tune loads PubMed through ``torch_geometric.datasets.Planetoid(root, "PubMed")`` and the OGB
graphs through ``ogb.nodeproppred.PygNodePropPredDataset(name, root)``. The real files cannot be
fetched in tests (no network, and they are far too big for CI), yet the tests must run those
real, unpatched loaders: the point is to catch mistakes in how the product calls them (roots,
splits, the ``torch.load`` allow-list, ``processed/`` caching, offline behaviour). So the writers
below reproduce the files of the real downloads byte-format for byte-format, only smaller:

* **Planetoid / PubMed** (``<root>/PubMed/raw/``) -- the eight files of the Planetoid release
  (kimiyoung/planetoid): ``ind.pubmed.{x,tx,allx}`` pickled ``scipy.sparse.csr_matrix`` feature
  matrices, ``ind.pubmed.{y,ty,ally}`` pickled one-hot ``numpy`` arrays,
  ``ind.pubmed.graph`` a pickled ``collections.defaultdict(list)`` adjacency dict (symmetric,
  with one self loop and one duplicated entry, as the real one has) and ``ind.pubmed.test.index``
  a text file of the test node ids, one per line, in shuffled order. ``x``/``y`` are the first
  60 rows of ``allx``/``ally``; row ``k`` of ``tx``/``ty`` belongs to node ``test.index[k]``;
  the test ids are the range just after ``allx``. The public split PyG derives from this is the
  real one: 60 train (20 per class), 500 val (nodes 60..559), 1000 test.
* **OGB node property prediction** (``<root>/ogbn_arxiv/``, ``<root>/ogbn_products/``) -- the
  unpacked ``arxiv.zip`` / ``products.zip`` as ogb leaves them: ``RELEASE_v1.txt`` (without it
  ogb asks ``input()`` whether to delete the folder), ``raw/*.csv.gz`` (headerless CSV: ``edge``
  one ``src,dst`` per line, ``node-feat`` floats, ``node-label`` one int, ``num-node-list`` /
  ``num-edge-list`` one int each, plus ``node_year`` for arxiv), ``split/<name>/{train,valid,
  test}.csv.gz`` (one node index per line; ``time`` for arxiv, ``sales_ranking`` for products)
  and ``mapping/`` (which ogb does not read). As in ``ogb/nodeproppred/master.csv``, arxiv has
  ``add_inverse_edge=False`` (a *directed* citation graph: here a DAG, every paper cites
  earlier ones) and products ``add_inverse_edge=True`` (each undirected co-purchase edge is
  stored once, ogb appends the reverse when processing).

Note that ``PygNodePropPredDataset.num_classes`` comes from ``master.csv`` (40 for arxiv, 47 for
products), not from the labels written here.

All writers are deterministic for a given seed (gzip headers carry no timestamp) and take well
under a second. Split sizes are given by :func:`arxiv_split_sizes` and
:func:`products_split_sizes`.
"""

from __future__ import annotations

import collections
import gzip
import io
import pickle
from pathlib import Path

import numpy as np
import scipy.sparse as sp

__all__ = [
    "PUBMED_NUM_ALLX",
    "PUBMED_NUM_CLASSES",
    "PUBMED_NUM_NODES",
    "PUBMED_NUM_TEST",
    "PUBMED_NUM_TRAIN",
    "PUBMED_NUM_VAL",
    "arxiv_split_sizes",
    "products_split_sizes",
    "write_ogbn_arxiv",
    "write_ogbn_products",
    "write_planetoid_pubmed",
]

PUBMED_NUM_CLASSES = 3
PUBMED_NUM_TRAIN = 60  # 20 per class, the first rows of allx (Planetoid's public split)
PUBMED_NUM_VAL = 500  # Planetoid hard-codes the 500 nodes after the training ones
PUBMED_NUM_TEST = 1000
PUBMED_NUM_ALLX = 700  # labelled + unlabelled non-test nodes (real PubMed: 18717)
PUBMED_NUM_NODES = PUBMED_NUM_ALLX + PUBMED_NUM_TEST  # 1700 (real PubMed: 19717)


def arxiv_split_sizes(num_nodes: int) -> tuple[int, int, int]:
    """(train, valid, test) sizes :func:`write_ogbn_arxiv` writes: papers of 2019 are test,
    of 2018 valid, of 2017 and before train (the real 'time' split, here 60/20/20)."""
    test = num_nodes // 5
    valid = num_nodes // 5
    return num_nodes - valid - test, valid, test


def products_split_sizes(num_nodes: int) -> tuple[int, int, int]:
    """(train, valid, test) sizes :func:`write_ogbn_products` writes: the real 'sales_ranking'
    split's proportions, top 8% of products by sales train, next 2% valid, the rest test."""
    train = num_nodes * 8 // 100
    valid = num_nodes * 2 // 100
    return train, valid, num_nodes - train - valid


# --------------------------------------------------------------------------- helpers


def _write_gz(path: Path, text: str) -> None:
    """gzip ``text`` to ``path`` with a fixed header (no name, mtime 0): same bytes per seed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
        f.write(text.encode("ascii"))


def _ints_csv(values: np.ndarray) -> str:
    """One int per line (a 1-D array) or comma-separated ints per row (2-D), no header."""
    buf = io.StringIO()
    np.savetxt(buf, np.asarray(values, dtype=np.int64), fmt="%d", delimiter=",")
    return buf.getvalue()


def _floats_csv(values: np.ndarray) -> str:
    buf = io.StringIO()
    np.savetxt(buf, values, fmt="%.6f", delimiter=",")
    return buf.getvalue()


def _labels_with_every_class(rng: np.random.Generator, n: int, num_classes: int) -> np.ndarray:
    """``n`` labels, class ``c`` appearing ``n // num_classes`` (+1) times, shuffled."""
    return rng.permutation(np.arange(n) % num_classes)


def _gaussian_features(
    rng: np.random.Generator, labels: np.ndarray, num_features: int, num_classes: int
) -> np.ndarray:
    """Class centroid + noise, so a model can learn something (float32 like OGB's node-feat)."""
    centroids = rng.normal(0.0, 1.0, size=(num_classes, num_features))
    noise = rng.normal(0.0, 1.0, size=(labels.size, num_features))
    return (0.1 * (centroids[labels] + noise)).astype(np.float32)


def _pick(rng: np.random.Generator, pool: np.ndarray, exclude: int) -> int | None:
    """A random member of ``pool`` other than ``exclude`` (None if there is none)."""
    if pool.size == 0 or (pool.size == 1 and pool[0] == exclude):
        return None
    while True:
        v = int(pool[rng.integers(pool.size)])
        if v != exclude:
            return v


def _homophilous_undirected_edges(
    rng: np.random.Generator,
    labels: np.ndarray,
    *,
    max_new_per_node: int,
    p_same: float,
) -> list[tuple[int, int]]:
    """Undirected edges (each pair once, random orientation), no self loops, every node with
    degree >= 1; an endpoint shares the other's class with probability ~``p_same``."""
    n = labels.size
    by_class = [np.flatnonzero(labels == c) for c in range(int(labels.max()) + 1)]
    everyone = np.arange(n)
    seen: set[tuple[int, int]] = set()
    edges: list[tuple[int, int]] = []
    for u in range(n):
        for _ in range(int(rng.integers(1, max_new_per_node + 1))):
            pool = by_class[labels[u]] if rng.random() < p_same else everyone
            v = _pick(rng, pool, u)
            if v is None:
                v = _pick(rng, everyone, u)
            key = (min(u, v), max(u, v))
            if key in seen:
                continue
            seen.add(key)
            edges.append((u, v) if rng.random() < 0.5 else (v, u))
    return edges


def _write_release(folder: Path, name: str) -> None:
    # ogb only checks that RELEASE_v<version>.txt exists; the text is what ogb's DatasetSaver
    # writes into the release note.
    (folder / "RELEASE_v1.txt").write_text(f"# Release note for {name}\n\n### v1: 2020-05-01")


# --------------------------------------------------------------------------- PubMed


def write_planetoid_pubmed(root: Path, *, num_features: int = 50, seed: int = 0) -> Path:
    """Write ``root/PubMed/raw/ind.pubmed.*`` (all eight Planetoid files); return ``root/PubMed``.

    1700 nodes, ``num_features`` TF-IDF-like sparse features, 3 classes, homophilous symmetric
    edges (every node has one). ``Planetoid(root, "PubMed")`` then yields the public split with
    the real sizes: 60 train (20 per class), 500 val, 1000 test.
    """
    if num_features < PUBMED_NUM_CLASSES:
        raise ValueError("num_features must be >= 3")
    rng = np.random.default_rng(seed)
    n, c = PUBMED_NUM_NODES, PUBMED_NUM_CLASSES

    # Final node ids: 0..59 train, 60..559 val, 560..699 unlabelled-for-training, 700.. test.
    labels = rng.integers(0, c, size=n)
    labels[:PUBMED_NUM_TRAIN] = _labels_with_every_class(rng, PUBMED_NUM_TRAIN, c)

    # Sparse bag-of-words features: most words drawn from the class's own vocabulary block.
    block = np.array_split(np.arange(num_features), c)
    rows, cols = [], []
    for node in range(n):
        k = int(rng.integers(3, 9))
        own = rng.random(k) < 0.75
        words = np.where(
            own,
            rng.choice(block[labels[node]], size=k),
            rng.integers(0, num_features, size=k),
        )
        words = np.unique(words)
        rows.append(np.full(words.size, node))
        cols.append(words)
    r, cl = np.concatenate(rows), np.concatenate(cols)
    vals = rng.uniform(0.01, 0.2, size=r.size)
    features = sp.csr_matrix((vals, (r, cl)), shape=(n, num_features), dtype=np.float64)
    onehot = np.eye(c, dtype=np.int32)[labels]

    # Test ids: the range after allx, stored shuffled; tx/ty row k is node test_index[k].
    test_index = PUBMED_NUM_ALLX + rng.permutation(PUBMED_NUM_TEST)

    edges = _homophilous_undirected_edges(rng, labels, max_new_per_node=2, p_same=0.8)
    graph: collections.defaultdict[int, list[int]] = collections.defaultdict(list)
    for node in range(n):
        graph[node]  # every node has a key, like the real dict
    for u, v in edges:
        graph[u].append(v)
        graph[v].append(u)
    # The real PubMed graph has a few self loops and duplicated entries; PyG drops them.
    graph[0].append(0)
    graph[1].append(graph[1][0])

    items = {
        "x": features[:PUBMED_NUM_TRAIN],
        "y": onehot[:PUBMED_NUM_TRAIN],
        "allx": features[:PUBMED_NUM_ALLX],
        "ally": onehot[:PUBMED_NUM_ALLX],
        "tx": features[test_index],
        "ty": onehot[test_index],
        "graph": graph,
    }
    folder = Path(root) / "PubMed"
    raw = folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, obj in items.items():
        with open(raw / f"ind.pubmed.{name}", "wb") as f:
            pickle.dump(obj, f, protocol=2)  # the originals were pickled by Python 2
    (raw / "ind.pubmed.test.index").write_text("".join(f"{i}\n" for i in test_index))
    return folder


# --------------------------------------------------------------------------- ogbn-arxiv


def write_ogbn_arxiv(
    root: Path,
    *,
    num_nodes: int = 600,
    num_features: int = 16,
    num_classes: int = 5,
    seed: int = 0,
) -> Path:
    """Write ``root/ogbn_arxiv/`` as unpacked from ogb's ``arxiv.zip``; return that folder.

    Directed citation edges (``add_inverse_edge=False`` in ogb): a DAG in which each paper cites
    1-3 papers that are not newer (mostly of its own class); every node has an edge. Years
    2008-2019 in ``raw/node_year.csv.gz``; ``split/time`` is train <= 2017, valid 2018, test 2019
    with sizes :func:`arxiv_split_sizes` ``(num_nodes)``. Every class occurs in train.
    """
    n_train, n_valid, n_test = arxiv_split_sizes(num_nodes)
    if n_train < num_classes or n_valid < 1 or n_test < 1:
        raise ValueError("num_nodes too small for the split / classes")
    rng = np.random.default_rng(seed)

    perm = rng.permutation(num_nodes)  # node ids are not ordered by year, as in the real data
    train_idx = np.sort(perm[:n_train])
    valid_idx = np.sort(perm[n_train : n_train + n_valid])
    test_idx = np.sort(perm[n_train + n_valid :])
    year = np.empty(num_nodes, dtype=np.int64)
    year[train_idx] = rng.integers(2008, 2018, size=n_train)
    year[valid_idx] = 2018
    year[test_idx] = 2019

    labels = rng.integers(0, num_classes, size=num_nodes)
    labels[train_idx] = _labels_with_every_class(rng, n_train, num_classes)
    x = _gaussian_features(rng, labels, num_features, num_classes)

    # Publication order: by year, ties broken at random. A paper cites only earlier ones.
    order = np.lexsort((rng.random(num_nodes), year))
    rank = np.empty(num_nodes, dtype=np.int64)
    rank[order] = np.arange(num_nodes)
    edges: list[tuple[int, int]] = []
    for r in range(1, num_nodes):
        u = int(order[r])
        earlier = order[:r]
        same = earlier[labels[earlier] == labels[u]]
        cited: set[int] = set()
        for _ in range(int(rng.integers(1, 4))):
            pool = same if same.size and rng.random() < 0.8 else earlier
            v = int(pool[rng.integers(pool.size)])
            if v not in cited:
                cited.add(v)
                edges.append((u, v))
    cited_ever = {v for _, v in edges}
    first = int(order[0])
    if first not in cited_ever:  # the oldest paper cites nothing; make sure someone cites it
        edges.append((int(order[1 + rng.integers(num_nodes - 1)]), first))
    edge = np.array(edges, dtype=np.int64)

    folder = Path(root) / "ogbn_arxiv"
    raw = folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    _write_release(folder, "ogbn-arxiv")
    _write_gz(raw / "edge.csv.gz", _ints_csv(edge))
    _write_gz(raw / "node-feat.csv.gz", _floats_csv(x))
    _write_gz(raw / "node-label.csv.gz", _ints_csv(labels))
    _write_gz(raw / "node_year.csv.gz", _ints_csv(year))
    _write_gz(raw / "num-node-list.csv.gz", f"{num_nodes}\n")
    _write_gz(raw / "num-edge-list.csv.gz", f"{edge.shape[0]}\n")
    split = folder / "split" / "time"
    for name, idx in (("train", train_idx), ("valid", valid_idx), ("test", test_idx)):
        _write_gz(split / f"{name}.csv.gz", _ints_csv(idx))
    mapping = folder / "mapping"
    mapping.mkdir(parents=True, exist_ok=True)
    (mapping / "README.md").write_text(
        "Synthetic stand-in for ogbn-arxiv (rbm-tune tests).\n"
        "nodeidx2paperid: node index -> MAG paper id; "
        "labelidx2arxivcategeory: label index -> arXiv subject area.\n"
    )
    _write_gz(
        mapping / "labelidx2arxivcategeory.csv.gz",
        "label idx,arxiv category\n" + "".join(f"{i},arxiv cs c{i}\n" for i in range(num_classes)),
    )
    _write_gz(
        mapping / "nodeidx2paperid.csv.gz",
        "node idx,paper id\n" + "".join(f"{i},{1000000 + 7 * i}\n" for i in range(num_nodes)),
    )
    return folder


# --------------------------------------------------------------------------- ogbn-products


def write_ogbn_products(
    root: Path,
    *,
    num_nodes: int = 600,
    num_features: int = 12,
    num_classes: int = 6,
    seed: int = 0,
) -> Path:
    """Write ``root/ogbn_products/`` as unpacked from ogb's ``products.zip``; return that folder.

    Undirected homophilous co-purchase edges, each stored ONCE in ``raw/edge.csv.gz`` (ogb's
    ``add_inverse_edge=True`` doubles them on processing, interleaving each reverse edge);
    no self loops, every node has an edge. ``split/sales_ranking`` has the real proportions
    (:func:`products_split_sizes`: 8% / 2% / 90%). Every class occurs in train.
    """
    n_train, n_valid, n_test = products_split_sizes(num_nodes)
    if n_train < num_classes or n_valid < 1 or n_test < 1:
        raise ValueError("num_nodes too small for the split / classes")
    rng = np.random.default_rng(seed)

    by_sales = rng.permutation(num_nodes)  # best-selling first
    train_idx = np.sort(by_sales[:n_train])
    valid_idx = np.sort(by_sales[n_train : n_train + n_valid])
    test_idx = np.sort(by_sales[n_train + n_valid :])

    labels = rng.integers(0, num_classes, size=num_nodes)
    labels[train_idx] = _labels_with_every_class(rng, n_train, num_classes)
    x = _gaussian_features(rng, labels, num_features, num_classes)
    edge = np.array(
        _homophilous_undirected_edges(rng, labels, max_new_per_node=3, p_same=0.85),
        dtype=np.int64,
    )

    folder = Path(root) / "ogbn_products"
    raw = folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    _write_release(folder, "ogbn-products")
    _write_gz(raw / "edge.csv.gz", _ints_csv(edge))
    _write_gz(raw / "node-feat.csv.gz", _floats_csv(x))
    _write_gz(raw / "node-label.csv.gz", _ints_csv(labels))
    _write_gz(raw / "num-node-list.csv.gz", f"{num_nodes}\n")
    _write_gz(raw / "num-edge-list.csv.gz", f"{edge.shape[0]}\n")
    split = folder / "split" / "sales_ranking"
    for name, idx in (("train", train_idx), ("valid", valid_idx), ("test", test_idx)):
        _write_gz(split / f"{name}.csv.gz", _ints_csv(idx))
    mapping = folder / "mapping"
    mapping.mkdir(parents=True, exist_ok=True)
    (mapping / "README.md").write_text(
        "Synthetic stand-in for ogbn-products (rbm-tune tests).\n"
        "nodeidx2asin: node index -> Amazon ASIN; "
        "labelidx2productcategory: label index -> product category.\n"
    )
    _write_gz(
        mapping / "labelidx2productcategory.csv.gz",
        "label idx,product category\n"
        + "".join(f"{i},Category {i}\n" for i in range(num_classes)),
    )
    _write_gz(
        mapping / "nodeidx2asin.csv.gz",
        "node idx,asin\n" + "".join(f"{i},B{i:09d}\n" for i in range(num_nodes)),
    )
    return folder
