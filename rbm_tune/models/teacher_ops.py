"""Memory-lean autograd ops for the full-batch teachers' sparse path (issue 20 item 4).

A full-batch epoch keeps every activation autograd saves for backward; at ogbn-products size
one (N, 128) float tensor is 1.2 GiB. Two ops keep the same function with fewer saved tensors:

- :func:`sparse_linear`: ``(adj_t @ h) W^T + b`` (SAGEConv with mean aggregation, no root
  weight) saving ``h`` only, not the aggregate: ``h`` is the previous layer's output, which
  :func:`relu_dropout` keeps anyway. The backward uses ``adj_t``'s transpose, built once per
  adjacency (:func:`transposed`) instead of a CSC-to-CSR conversion per call.
- :func:`relu_dropout`: ``dropout(relu(x))`` saving only its output (the kept, positive entries
  are exactly those where the output is > 0), not the ReLU output and the dropout mask. The
  mask is drawn by ``F.dropout`` on a tensor of ones of the same shape, so a seed gives the
  same mask as ``F.dropout(F.relu(x))``.

Gradients equal those of the plain ops within float tolerance (sums in another order).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["relu_dropout", "sparse_linear", "spmm", "transposed"]


def transposed(adj_t: Tensor) -> Tensor:
    """``adj_t.T`` as a CSR tensor, computed once per ``adj_t`` object (kept on it)."""
    cached = getattr(adj_t, "_rbm_transposed", None)
    if cached is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            crow, col = adj_t.crow_indices(), adj_t.col_indices()
            n = adj_t.size(0)
            row = torch.repeat_interleave(
                torch.arange(n, device=crow.device, dtype=crow.dtype),
                (crow[1:] - crow[:-1]).long(),
                output_size=col.numel(),
            )
            order = torch.sort(col, stable=True).indices
            counts = torch.bincount(col.long(), minlength=adj_t.size(1))
            ccol = torch.zeros(adj_t.size(1) + 1, dtype=crow.dtype, device=crow.device)
            torch.cumsum(counts, 0, out=ccol[1:])
            cached = torch.sparse_csr_tensor(
                ccol, row[order], adj_t.values()[order], (adj_t.size(1), n)
            )
        adj_t._rbm_transposed = cached  # type: ignore[attr-defined]
    return cached


def spmm(adj_t: Tensor, h: Tensor) -> Tensor:
    """``adj_t @ h`` for a CSR ``adj_t`` (values cast to ``h``'s dtype when they differ)."""
    if adj_t.dtype != h.dtype:
        adj_t = adj_t.to(h.dtype)
    return torch.sparse.mm(adj_t, h)


class _SparseLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, adj_t: Tensor, h: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.adj_t = adj_t
        ctx.has_bias = bias is not None
        ctx.save_for_backward(h, weight)
        return F.linear(spmm(adj_t, h), weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        h, weight = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        grad_h = grad_w = None
        if need_h or weight.size(0) <= weight.size(1):
            # one product with adj_t.T, as wide as the output: g = adj_t.T @ grad
            g = spmm(transposed(ctx.adj_t), grad)
            grad_w = g.t() @ h if need_w else None
            grad_h = g @ weight if need_h else None
        elif need_w:  # the input needs no gradient and is narrower: recompute the aggregate
            grad_w = grad.t() @ spmm(ctx.adj_t, h)
        grad_b = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[3] else None
        return None, grad_h, grad_w, grad_b


def sparse_linear(adj_t: Tensor, h: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``F.linear(adj_t @ h, weight, bias)`` saving ``h`` rather than ``adj_t @ h``.

    Args:
        adj_t: CSR (N, N), no gradient.
        h: (N, d_in).
        weight: (d_out, d_in).
        bias: (d_out,) or ``None``.
    """
    return _SparseLinear.apply(adj_t, h, weight, bias)


class _ReluScaled(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, noise: Tensor, scale: float) -> Tensor:
        out = F.relu(x).mul_(noise)
        ctx.scale = scale
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        (out,) = ctx.saved_tensors
        return torch.where(out > 0, grad * ctx.scale, 0.0), None, None


def relu_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """``F.dropout(F.relu(x), p, training)`` that saves only its output for backward.

    Args:
        x: any shape.
        p: drop probability in [0, 1).
        training: dropout is the identity when False.
    """
    if not training or p == 0.0 or not torch.is_grad_enabled():
        return F.dropout(F.relu(x), p, training)
    # The mask F.dropout would draw for x (in place: no third (N, h) tensor while drawing).
    noise = F.dropout(torch.ones_like(x), p, True, inplace=True)
    return _ReluScaled.apply(x, noise, 1.0 / (1.0 - p))
