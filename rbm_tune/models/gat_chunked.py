"""PyG's ``GATConv`` forward over target-node chunks of a CSR adjacency (issue 20 item 4).

``GATConv`` over ``edge_index`` holds per layer an |E| x heads x channels message tensor (and
keeps it for backward). :func:`gat_conv_chunked` computes the same layer with the conv's own
parameters, one slice of target rows at a time: each slice holds all in-edges of its targets, so
the softmax over a target's edges is exact in one pass. In training each slice runs under
activation checkpointing, so its edge-wise tensors are freed after the forward and recomputed
(with the same dropout mask: the RNG state is restored) in the backward; what stays alive is
node-sized. A slice holds at most ``max(chunk_bytes, bytes of the layer's node features)`` of
messages.

Deviation: sums run in another order than PyG's scatter; equal within float tolerance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

if TYPE_CHECKING:
    from torch_geometric.nn import GATConv

__all__ = ["CHUNK_BYTES", "gat_conv_chunked"]

CHUNK_BYTES = 256 * 1024**2  # messages per slice, unless the node features are larger


def _check(conv: GATConv) -> None:
    if (
        conv.lin is None
        or conv.res is not None
        or conv.lin_edge is not None
        or not conv.add_self_loops
    ):
        raise ValueError(
            "gat_conv_chunked supports GATConv(in_channels: int, residual=False, edge_dim=None, "
            "add_self_loops=True) only; call the conv on edge_index for other settings"
        )


def _attend(
    x_src: Tensor,
    alpha_src: Tensor,
    alpha_dst: Tensor,
    col: Tensor,
    row: Tensor,
    negative_slope: float,
    dropout: float,
    training: bool,
) -> Tensor:
    """One slice: attention over the in-edges of ``alpha_dst``'s rows, summed messages.

    Shapes: x_src (N, H, C), alpha_src (N, H), alpha_dst (R, H), col / row (E_c,) with row in
    [0, R). Returns (R, H, C).
    """
    rows, heads = alpha_dst.shape
    alpha = F.leaky_relu(alpha_src[col] + alpha_dst[row], negative_slope)
    index = row.unsqueeze(-1).expand(-1, heads)
    amax = alpha.new_full((rows, heads), float("-inf"))
    amax = amax.scatter_reduce(0, index, alpha.detach(), "amax")  # PyG's softmax detaches it
    alpha = (alpha - amax[row]).exp()
    total = alpha.new_zeros(rows, heads).index_add_(0, row, alpha) + 1e-16
    alpha = F.dropout(alpha / total[row], p=dropout, training=training)
    msg = x_src[col] * alpha.unsqueeze(-1)
    return x_src.new_zeros(rows, heads, x_src.size(-1)).index_add_(0, row, msg)


def _bounds(crow: list[int], max_edges: int) -> list[tuple[int, int]]:
    """Consecutive row ranges whose edges number about ``max_edges`` (one row at least)."""
    import bisect

    out, start, n = [], 0, len(crow) - 1
    while start < n:
        stop = bisect.bisect_right(crow, crow[start] + max_edges) - 1
        stop = min(max(stop, start + 1), n)
        out.append((start, stop))
        start = stop
    return out


def gat_conv_chunked(
    conv: GATConv, x: Tensor, adj_t: Tensor, *, chunk_bytes: int = CHUNK_BYTES
) -> Tensor:
    """``conv(x, edge_index)`` computed over slices of target rows of ``adj_t``.

    Args:
        conv: a PyG ``GATConv`` (shared ``lin``, no residual, no edge features, self-loops on).
        x: node features, shape (N, in_channels).
        adj_t: :func:`rbm_tune.models.adjacency.gat_adjacency` of the graph (self-loops in).
        chunk_bytes: message bytes per slice (raised to the node features' size).

    Returns:
        (N, heads * out_channels) when ``conv.concat``, else (N, out_channels).
    """
    _check(conv)
    heads, channels = conv.heads, conv.out_channels
    x_src = conv.lin(x).view(-1, heads, channels)
    alpha_src = (x_src * conv.att_src).sum(dim=-1)
    alpha_dst = (x_src * conv.att_dst).sum(dim=-1)
    crow, col = adj_t.crow_indices(), adj_t.col_indices()
    row_bytes = heads * channels * x_src.element_size()
    max_edges = max(chunk_bytes, x_src.numel() * x_src.element_size()) // row_bytes
    grad = torch.is_grad_enabled() and (x_src.requires_grad or alpha_src.requires_grad)
    parts = []
    for start, stop in _bounds(crow.tolist(), max(1, max_edges)):
        lo, hi = int(crow[start]), int(crow[stop])
        rows = crow[start : stop + 1]
        row = torch.repeat_interleave(
            torch.arange(stop - start, device=x.device), rows[1:] - rows[:-1], output_size=hi - lo
        )
        args = (x_src, alpha_src, alpha_dst[start:stop], col[lo:hi], row)
        extra = (conv.negative_slope, conv.dropout, conv.training)
        if grad:
            parts.append(checkpoint(_attend, *args, *extra, use_reentrant=False))
        else:
            parts.append(_attend(*args, *extra))
    out = torch.cat(parts) if parts else x_src.new_zeros(0, heads, channels)
    out = out.reshape(-1, heads * channels) if conv.concat else out.mean(dim=1)
    if conv.bias is not None:
        out = out + conv.bias
    return out
