"""Sparse adjacencies for the full-batch teachers: no edges x features tensor (issue 20 item 4).

PyG's convs over ``edge_index`` gather one message row per edge (|E| x features floats per
layer: ~17 GiB for an ogbn-arxiv GraphSAGE 3 x 1024). Here each teacher's propagation matrix is
built once per graph as a native ``torch.sparse_csr_tensor`` ``adj_t`` (row = target, col =
source, as PyG expects of sparse inputs) and a layer aggregates with one sparse-dense product.

- :func:`sage_adjacency`: DGL's ``gcn`` aggregator, the edges plus one appended self-loop per
  node, mean over them: ``adj_t[i, j] = m(j -> i) / (in_degree(i) + 1)`` (multi-edges counted
  ``m`` times, as PyG's mean over ``edge_index`` counts them).
- :func:`gcn_adjacency`: PyG's own ``gcn_norm`` (``add_self_loops=False``) applied once to the
  multiplicity-weighted ``adj_t``: ``D^-1/2 A D^-1/2`` with in-degrees.
- :func:`gat_adjacency`: the edges without self-loops plus one self-loop per node (what
  ``GATConv`` does per call), sorted by target; multi-edges stay repeated entries, because
  attention weighs every edge separately. Only its ``crow_indices`` / ``col_indices`` are read.

The products sum the same terms as PyG's scatter, in another order: equal within float
tolerance (tests/test_teachers_sparse.py checks 1e-5), not bitwise.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

__all__ = ["csr", "gat_adjacency", "gcn_adjacency", "is_adjacency", "sage_adjacency"]


def is_adjacency(edges: Tensor) -> bool:
    """Whether ``edges`` is a prepared sparse ``adj_t`` rather than a ``(2, E)`` edge index."""
    return edges.layout == torch.sparse_csr


def csr(row: Tensor, col: Tensor, value: Tensor, num_nodes: int) -> Tensor:
    """A ``num_nodes`` x ``num_nodes`` CSR tensor from entries already sorted by ``row``.

    Args:
        row: row (target) of every entry, sorted, shape (nnz,), integer.
        col: column (source) of every entry, shape (nnz,), integer.
        value: shape (nnz,), float.
        num_nodes: N.
    """
    # int32 indices while they fit: half the index memory, and torch.sparse.mm takes them
    index_dtype = torch.int32 if max(row.numel(), num_nodes) < 2**31 - 1 else torch.long
    crow = torch.zeros(num_nodes + 1, dtype=index_dtype, device=row.device)
    torch.cumsum(torch.bincount(row, minlength=num_nodes), 0, out=crow[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, col.to(index_dtype), value, (num_nodes, num_nodes))


def _coalesced(
    edge_index: Tensor, num_nodes: int, *, self_loops: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Distinct (target, source) pairs sorted by target, and how often each occurs.

    ``self_loops`` appends one ``(i, i)`` per node before counting.
    """
    src, dst = edge_index[0].long(), edge_index[1].long()
    key = dst * num_nodes + src
    if self_loops:
        loops = torch.arange(num_nodes, device=key.device)
        key = torch.cat([key, loops * (num_nodes + 1)])
    key, counts = torch.unique_consecutive(key.sort().values, return_counts=True)
    return torch.div(key, num_nodes, rounding_mode="floor"), key % num_nodes, counts


def sage_adjacency(edge_index: Tensor, num_nodes: int, dtype: torch.dtype = torch.float) -> Tensor:
    """``adj_t`` of the SAGE teacher: mean over in-edges plus one appended self-loop.

    Args:
        edge_index: COO edges (source, target), shape (2, |E|).
        num_nodes: N.
        dtype: of the values (the features' dtype).

    Returns:
        CSR tensor (N, N); ``adj_t @ h`` is PyG's ``mean`` over the augmented edges.
    """
    row, col, counts = _coalesced(edge_index, num_nodes, self_loops=True)
    deg = torch.bincount(
        row, weights=counts.double(), minlength=num_nodes
    )  # in-degree + 1, as float64
    value = (counts / deg[row]).to(dtype)
    return csr(row, col, value, num_nodes)


def gcn_adjacency(edge_index: Tensor, num_nodes: int, dtype: torch.dtype = torch.float) -> Tensor:
    """``adj_t`` of the GCN teacher: PyG's ``gcn_norm`` without added self-loops, done once.

    Args:
        edge_index: COO edges (source, target), shape (2, |E|).
        num_nodes: N.
        dtype: of the values (the features' dtype).

    Returns:
        CSR tensor (N, N) = ``D^-1/2 A D^-1/2`` (in-degrees; a node without in-edges gets 0).
    """
    from torch_geometric.nn.conv.gcn_conv import gcn_norm

    row, col, counts = _coalesced(edge_index, num_nodes, self_loops=False)
    adj_t = csr(row, col, counts.to(dtype), num_nodes)
    adj_t, _ = gcn_norm(adj_t, None, num_nodes, add_self_loops=False)
    return adj_t


def gat_adjacency(edge_index: Tensor, num_nodes: int) -> Tensor:
    """The edges ``GATConv`` attends over, sorted by target, as a CSR pattern.

    Self-loops of the data are dropped and one per node appended (``GATConv``'s
    ``add_self_loops=True``); multi-edges stay separate entries (values are ones, unused).

    Args:
        edge_index: COO edges (source, target), shape (2, |E|).
        num_nodes: N.

    Returns:
        CSR tensor (N, N) whose ``crow_indices`` / ``col_indices`` list each target's sources.
    """
    src, dst = edge_index[0].long(), edge_index[1].long()
    keep = src != dst
    loops = torch.arange(num_nodes, device=src.device)
    src, dst = torch.cat([src[keep], loops]), torch.cat([dst[keep], loops])
    order = torch.sort(dst, stable=True).indices
    value = torch.ones(order.numel(), device=src.device)
    return csr(dst[order], src[order], value, num_nodes)
