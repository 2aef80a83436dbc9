"""Split protocols of method §6.2-6.3 and the largest-connected-component preprocessing."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components
from torch import Tensor

from rbm_tune.errors import DataError

__all__ = [
    "add_self_loops",
    "coalesce",
    "inductive_split",
    "largest_component",
    "per_class_split",
    "remove_self_loops",
    "subgraph",
    "to_undirected",
]


# -- edge-list operations -------------------------------------------------------------------------
# Kept on purpose instead of torch_geometric.utils: the same results, bit for bit
# (tests/test_data.py checks coalesce, to_undirected, the self-loop helpers and subgraph against
# PyG on random graphs and on real cora; cora, citeseer, amazon-computers and coauthor-physics all
# matched too), in plain torch. Measured on this project's 2-core machine (torch 2.13, PyG 2.8.1,
# fresh processes, best of 3): `import torch, rbm_tune.data` takes 4.1 s wall / 4.3 s CPU, adding
# `import torch_geometric.utils` makes it 8.9 s / 7.9 s, i.e. +4.8 s wall and +3.6 s of CPU per
# process (PyG's package import pulls in torch._dynamo; `python -X importtime` put
# torch_geometric.utils at 3.8-9.4 s cumulative over 4 runs on the loaded machine). Real datasets
# pay for PyG anyway (its loaders), but the demo dataset's path does not: a study's driver on
# `demo`, and `rbm-tune train` with a cached teacher, never import PyG, and the ops themselves
# take milliseconds (0.01-0.3 s on coauthor-physics, as fast as PyG's).


def coalesce(edge_index: Tensor, num_nodes: int) -> Tensor:
    """Edges sorted by (source, target), duplicates removed."""
    if edge_index.numel() == 0:
        return edge_index.view(2, 0)
    keys = torch.unique(edge_index[0] * num_nodes + edge_index[1])  # sorted
    return torch.stack([keys // num_nodes, keys % num_nodes])


def to_undirected(edge_index: Tensor, num_nodes: int) -> Tensor:
    """Every edge in both directions, coalesced."""
    both = torch.cat([edge_index, edge_index.flip(0)], dim=1)
    return coalesce(both, num_nodes)


def remove_self_loops(edge_index: Tensor) -> Tensor:
    """The edges whose source and target differ, in their order."""
    return edge_index[:, edge_index[0] != edge_index[1]]


def add_self_loops(edge_index: Tensor, num_nodes: int) -> Tensor:
    """``edge_index`` followed by one loop (i, i) per node, not coalesced (PyG's order)."""
    loops = torch.arange(num_nodes, dtype=edge_index.dtype).repeat(2, 1)
    return torch.cat([edge_index, loops], dim=1)


def per_class_split(
    y: Tensor, num_classes: int, *, seed: int, train_per_class: int = 20, val_per_class: int = 30
) -> tuple[Tensor, Tensor, Tensor]:
    """CPF/GLNN-style random split (method §6.2): per class 20 train, then 30 val; rest test.

    Seeded with ``numpy.random.default_rng(seed)``; the same seed gives the same split.

    Returns:
        train, val, test indices (sorted int64 tensors).
    """
    rng = np.random.default_rng(seed)
    labels = y.numpy()
    train, val = [], []
    for c in range(num_classes):
        nodes = np.flatnonzero(labels == c)
        need = train_per_class + val_per_class
        if nodes.size < need:
            raise DataError(
                f"class {c} has {nodes.size} nodes, fewer than the {need} the split needs; "
                "this dataset cannot use the 20/30-per-class protocol"
            )
        nodes = rng.permutation(nodes)
        train.append(nodes[:train_per_class])
        val.append(nodes[train_per_class:need])
    train_idx = np.sort(np.concatenate(train))
    val_idx = np.sort(np.concatenate(val))
    rest = np.ones(labels.size, dtype=bool)
    rest[train_idx] = False
    rest[val_idx] = False
    return (
        torch.from_numpy(train_idx).long(),
        torch.from_numpy(val_idx).long(),
        torch.from_numpy(np.flatnonzero(rest)).long(),
    )


def inductive_split(
    num_nodes: int,
    train: Tensor,
    val: Tensor,
    test: Tensor,
    *,
    seed: int,
    heldout_all_test: bool,
    split_rate: float = 0.2,
) -> tuple[Tensor, Tensor]:
    """Split nodes into observed ones and held-out inductive test nodes (method §6.3).

    Args:
        heldout_all_test: Planetoid protocol: the held-out set is the whole official test set
            and every other non-train, non-val node is observed.
        split_rate: otherwise the base test set is shuffled (torch ``randperm`` seeded with
            ``seed``) and its first ``floor(split_rate * |test|)`` nodes are held out.

    Returns:
        observed ids ordered train, val, rest; held-out ids.
    """
    if heldout_all_test:
        heldout = test
        mask = torch.ones(num_nodes, dtype=torch.bool)
        mask[train] = False
        mask[val] = False
        mask[test] = False
        rest = mask.nonzero().view(-1)
    else:
        gen = torch.Generator().manual_seed(seed)
        perm = test[torch.randperm(test.numel(), generator=gen)]
        n_held = int(split_rate * test.numel())
        heldout, rest = perm[:n_held], perm[n_held:]
    return torch.cat([train, val, rest]), heldout


def subgraph(edge_index: Tensor, nodes: Tensor, num_nodes: int) -> Tensor:
    """Edges among ``nodes``, relabelled to positions in ``nodes`` (which may be unsorted)."""
    local = torch.full((num_nodes,), -1, dtype=torch.long)
    local[nodes] = torch.arange(nodes.numel())
    src, dst = local[edge_index[0]], local[edge_index[1]]
    keep = (src >= 0) & (dst >= 0)
    return torch.stack([src[keep], dst[keep]])


def largest_component(edge_index: Tensor, num_nodes: int) -> Tensor:
    """Sorted node ids of the largest (weakly) connected component."""
    row, col = edge_index.numpy()
    adj = sp.coo_matrix((np.ones(row.size), (row, col)), shape=(num_nodes, num_nodes))
    _, labels = connected_components(adj, directed=False)
    biggest = np.bincount(labels).argmax()
    return torch.from_numpy(np.flatnonzero(labels == biggest)).long()
