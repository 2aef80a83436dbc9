"""Sparse input features: the first layer's GEMMs over the non-zeros only, on the CPU.

Bag-of-words features are mostly zeros (non-zero shares: Cora 1.3 %, CiteSeer 0.9 %,
Coauthor CS 0.9 %, Coauthor Physics 0.4 %; Amazon 35 %, ogbn-arxiv and demo dense), and the
first layer, ``d -> h`` with d up to 8,415, is the widest GEMM of a student. When a layer's
input needs no gradient (raw features do not) and at most :data:`SPARSE_MAX_DENSITY` of it is
non-zero, the layer multiplies a CSR copy of its rows instead: the forward
``X W^T + b`` and the weight gradient ``G^T X`` cost ``nnz · h`` instead of ``B · d · h``.
The result is the same function (float sums in another order: equal to ~1e-6 relative);
dropout on such rows drops their non-zero values, which is the same distribution as dropping
every element (a dropped zero is still zero), from a different random stream.

Only the CPU takes this path on its own (``torch.sparse`` CSR times dense runs on MKL here; on
a 2-core CPU it breaks even with the dense GEMM near 4 % non-zeros, hence the 2 % threshold);
CUDA keeps the dense GEMMs, which nothing here has measured against cuSPARSE.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["SPARSE_MAX_DENSITY", "CsrRows", "sparse_input", "sparse_linear"]

SPARSE_MAX_DENSITY = 0.02

# torch warns once per process that CSR support is "beta"; the ops used here are tested
warnings.filterwarnings(
    "ignore", message="Sparse CSR tensor support is in beta", category=UserWarning
)


def sparse_input(x: Tensor, force: bool | None = None) -> bool:
    """Whether ``x`` (a layer's input) should go through the CSR path.

    It must need no gradient and be a dense float32/float64 matrix, outside autocast,
    ``torch.compile`` and ``torch.jit.trace``; then ``force`` decides if given, else: on the
    CPU and at most :data:`SPARSE_MAX_DENSITY` non-zero (one counting pass over ``x``).
    """
    if force is False or x.dim() != 2 or x.layout != torch.strided or x.numel() == 0:
        return False
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False  # it reads a count on the host; compiled / traced graphs stay dense
    if x.requires_grad and torch.is_grad_enabled():
        return False
    if x.dtype not in (torch.float32, torch.float64):
        return False
    if torch.is_autocast_enabled(x.device.type):
        return False
    if force:
        return True
    if x.device.type != "cpu":
        return False
    return int(torch.count_nonzero(x)) <= SPARSE_MAX_DENSITY * x.numel()


class CsrRows(NamedTuple):
    """A dense matrix's non-zeros in CSR parts, for gathering rows as sparse matrices."""

    crow: Tensor
    col: Tensor
    val: Tensor
    width: int

    @classmethod
    def of(cls, x: Tensor) -> CsrRows:
        """The CSR parts of a dense (N, d) matrix (row-major order of the non-zeros)."""
        rows, cols = x.nonzero(as_tuple=True)
        crow = torch.zeros(x.shape[0] + 1, dtype=torch.int64, device=x.device)
        torch.cumsum(torch.bincount(rows, minlength=x.shape[0]), 0, out=crow[1:])
        return cls(crow, cols, x[rows, cols], x.shape[1])

    def take(self, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """CSR parts (crow, col, val) of ``x[rows]``; ``val`` is a fresh tensor."""
        starts = self.crow[rows]
        lengths = self.crow[rows + 1] - starts
        crow = torch.zeros(rows.numel() + 1, dtype=torch.int64, device=rows.device)
        torch.cumsum(lengths, 0, out=crow[1:])
        total = int(crow[-1])
        # position of every gathered non-zero in the source: its row's start + its offset
        shift = torch.repeat_interleave(starts - crow[:-1], lengths, output_size=total)
        pos = shift + torch.arange(total, device=rows.device)
        return crow, self.col[pos], self.val[pos]

    def matrix(self, crow: Tensor, col: Tensor, val: Tensor) -> Tensor:
        """A sparse CSR tensor from :meth:`take`'s parts."""
        return torch.sparse_csr_tensor(
            crow, col, val, (crow.numel() - 1, self.width), check_invariants=False
        )


def weight_grad(xs: Tensor, grad: Tensor, out: Tensor, alpha: float = 1.0) -> Tensor:
    """``out = alpha · gradᵀ xs`` for a sparse CSR ``xs`` (B, d) and dense ``grad`` (B, h).

    Computed as ``(xsᵀ grad)ᵀ`` (CSC times dense, MKL), written into ``out`` (h, d).
    """
    t = torch.mm(xs.t(), grad)
    if alpha != 1.0:
        t.mul_(alpha)
    return out.copy_(t.t())


class _SparseLinear(torch.autograd.Function):
    """``x W^T + b`` for an input that needs no gradient, over a CSR copy of ``x``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # type: ignore[override]
        csr = CsrRows.of(x)
        xs = csr.matrix(csr.crow, csr.col, csr.val)
        ctx.xs = xs
        ctx.has_bias = bias is not None
        if bias is None:
            return torch.mm(xs, weight.t())
        return torch.addmm(bias, xs, weight.t())

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        _, need_weight, need_bias = ctx.needs_input_grad
        g_weight = g_bias = None
        if need_weight:
            out = grad.new_empty(grad.shape[1], ctx.xs.shape[1])
            g_weight = weight_grad(ctx.xs, grad.contiguous(), out)
        if need_bias and ctx.has_bias:
            g_bias = grad.sum(0)
        return None, g_weight, g_bias


def sparse_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``F.linear(x, weight, bias)`` through the CSR path (``x`` must need no gradient)."""
    return _SparseLinear.apply(x, weight, bias)  # type: ignore[no-any-return]
