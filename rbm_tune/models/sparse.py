"""Sparse input features: the first layer's GEMMs over the non-zeros only, on the CPU.

Bag-of-words features are mostly zeros (non-zero shares: Cora 1.3 %, CiteSeer 0.9 %,
Coauthor CS 0.9 %, Coauthor Physics 0.4 %; Amazon 35 %, ogbn-arxiv and demo dense), and the
first layer, ``d -> h`` with d up to 8,415, is the widest GEMM of a student. When a layer's
input needs no gradient (raw features do not) and at most :data:`SPARSE_MAX_DENSITY` of it is
non-zero, the layer multiplies a CSR copy of its rows (:class:`CsrRows`) instead: the forward
``X W^T + b`` and the weight gradient ``G^T X`` cost ``nnz · h`` instead of ``B · d · h``.
The result is the same function (float sums in another order: equal to ~1e-6 relative);
dropout on such rows drops their non-zero values, which is the same distribution as dropping
every element (a dropped zero is still zero), from a different random stream.

Finding the non-zeros of a dense matrix is a pass over all of it (Coauthor CS: 0.2 s for
18,333 x 6,805, more than the sparse GEMMs themselves). So the caller that owns the features
hands their CSR in explicitly: a student's ``forward(x, csr=...)`` and ``end_pretraining(x,
csr=...)`` take the CSR of exactly the rows of ``x``, and the first layer multiplies it
without touching the dense rows. The training loop keeps one :class:`SparseFeatures` per
feature matrix: the CSR built once, the CSR of the row blocks it feeds (cached, with the
transpose the weight gradient reads) and of gathered rows. A layer input handed in without a
CSR is scanned when it arrives (one counting pass, then :meth:`CsrRows.of`).

Only the CPU takes this path on its own (``torch.sparse`` CSR times dense runs on MKL here; on
a 2-core CPU it breaks even with the dense GEMM near 4 % non-zeros, hence the 2 % threshold);
CUDA keeps the dense GEMMs, which nothing here has measured against cuSPARSE.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = [
    "SPARSE_MAX_DENSITY",
    "CsrRows",
    "SparseFeatures",
    "dropped_linear",
    "forbid_sparse",
    "sparse_input",
    "sparse_linear",
]

SPARSE_MAX_DENSITY = 0.02

# torch warns once per process that CSR support is "beta"; the ops used here are tested
warnings.filterwarnings(
    "ignore", message="Sparse CSR tensor support is in beta", category=UserWarning
)


def _offsets(counts: Tensor) -> Tensor:
    """CSR row offsets from per-row counts: ``[0, c0, c0 + c1, ...]`` (int64)."""
    out = torch.zeros(counts.numel() + 1, dtype=torch.int64, device=counts.device)
    torch.cumsum(counts, 0, out=out[1:])
    return out


def forbid_sparse(model: nn.Module) -> None:
    """Keep every layer of ``model`` on the dense path (``sparse = False``)."""
    for module in model.modules():
        if hasattr(module, "sparse"):
            setattr(module, "sparse", False)  # noqa: B010 (a flag nn.Module does not declare)


class CsrRows:
    """Rows of a matrix as CSR parts (crow, col, val), with its transpose built on demand."""

    __slots__ = ("crow", "col", "val", "width", "_t")

    def __init__(self, crow: Tensor, col: Tensor, val: Tensor, width: int) -> None:
        self.crow, self.col, self.val, self.width = crow, col, val, width
        self._t: Tensor | None = None

    @classmethod
    def of(cls, x: Tensor) -> CsrRows:
        """The CSR parts of a dense (N, d) matrix (a pass over all of it)."""
        rows, cols = x.nonzero(as_tuple=True)
        crow = _offsets(torch.bincount(rows, minlength=x.shape[0]))
        return cls(crow, cols, x[rows, cols], x.shape[1])

    @property
    def rows(self) -> int:
        return self.crow.numel() - 1

    def block(self, start: int, stop: int) -> CsrRows:
        """Rows ``start:stop`` (views of this one's parts, no copy)."""
        if start == 0 and stop == self.rows:
            return self
        a, b = int(self.crow[start]), int(self.crow[stop])
        return CsrRows(self.crow[start : stop + 1] - a, self.col[a:b], self.val[a:b], self.width)

    def take(self, rows: Tensor) -> CsrRows:
        """Rows ``rows`` (any order, repeats allowed); the values are a fresh tensor."""
        starts = self.crow[rows]
        lengths = self.crow[rows + 1] - starts
        crow = _offsets(lengths)
        total = int(crow[-1])
        # position of every gathered non-zero in the source: its row's start + its offset
        shift = torch.repeat_interleave(starts - crow[:-1], lengths, output_size=total)
        pos = shift + torch.arange(total, device=rows.device)
        return CsrRows(crow, self.col[pos], self.val[pos], self.width)

    def matrix(self) -> Tensor:
        """The rows as a sparse CSR tensor (sharing the parts)."""
        return torch.sparse_csr_tensor(
            self.crow, self.col, self.val, (self.rows, self.width), check_invariants=False
        )

    def transposed(self) -> Tensor:
        """The transpose as a sparse CSR tensor (d, rows); built once per object."""
        if self._t is None:
            n = self.rows
            row_of = torch.repeat_interleave(
                torch.arange(n, device=self.crow.device),
                self.crow.diff(),
                output_size=self.col.numel(),
            )
            order = torch.argsort(self.col, stable=True)
            crow = _offsets(torch.bincount(self.col, minlength=self.width))
            self._t = torch.sparse_csr_tensor(
                crow, row_of[order], self.val[order], (self.width, n), check_invariants=False
            )
        return self._t

    def weight_grad(self, grad: Tensor, out: Tensor, alpha: float = 1.0) -> Tensor:
        """``out = alpha · gradᵀ X`` for these rows X and a dense ``grad`` (rows, h); ``out``
        is (h, d)."""
        t = torch.mm(self.transposed(), grad)
        if alpha != 1.0:
            t.mul_(alpha)
        return out.copy_(t.t())


def _dense(x: Tensor) -> bool:
    """More than :data:`SPARSE_MAX_DENSITY` of ``x`` is non-zero (one counting pass)."""
    return int(torch.count_nonzero(x)) > SPARSE_MAX_DENSITY * x.numel()


class SparseFeatures:
    """A feature matrix and, where the CSR path would take it, its CSR, built once.

    The training loop keeps one per feature matrix and hands the first layer the CSR of
    exactly the rows it forwards: :meth:`block` for consecutive rows (cached per block, with
    the transpose its weight gradient reads), :meth:`take` for any rows. Both are None when the
    matrix has no CSR: with ``enabled=False``, off the CPU, not a 2-D float32/float64 matrix,
    empty, or above :data:`SPARSE_MAX_DENSITY` non-zeros (counted once here). The CSR is taken
    at construction: do not write to ``x`` afterwards.

    Args:
        x: the features, shape (N, d).
        enabled: build the CSR at all (False: every lookup is None, nothing is counted).
    """

    __slots__ = ("x", "csr", "_blocks")

    def __init__(self, x: Tensor, *, enabled: bool = True) -> None:
        self.x = x
        eligible = (
            enabled
            and x.dim() == 2
            and x.layout == torch.strided
            and x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.float64)
            and x.numel() > 0
        )
        self.csr = CsrRows.of(x) if eligible and not _dense(x) else None
        self._blocks: dict[tuple[int, int], CsrRows] = {}

    @property
    def is_sparse(self) -> bool:
        """Whether the matrix has a CSR (the first layer then takes the CSR path)."""
        return self.csr is not None

    def block(self, start: int, stop: int) -> CsrRows | None:
        """The CSR of rows ``start:stop`` (``x[start:stop]``), the same object on every call."""
        if self.csr is None:
            return None
        key = (start, stop)
        rows = self._blocks.get(key)
        if rows is None:
            rows = self._blocks[key] = self.csr.block(start, stop)
        return rows

    def take(self, rows: Tensor) -> CsrRows | None:
        """The CSR of ``x[rows]`` (any index ``x[rows]`` accepts: negative, boolean)."""
        if self.csr is None:
            return None
        picked = torch.arange(self.x.shape[0], device=self.x.device)[rows]
        return self.csr.take(picked.to(self.csr.crow.device))

    def gather(self, rows: Tensor) -> SparseFeatures:
        """``x[rows]`` with its CSR taken from this one's (not counted again)."""
        out = SparseFeatures.__new__(SparseFeatures)
        out.x, out.csr, out._blocks = self.x[rows], self.take(rows), {}
        return out

    def __repr__(self) -> str:
        nnz = "dense" if self.csr is None else f"{self.csr.val.numel()} non-zeros"
        return f"{type(self).__name__}({tuple(self.x.shape)}, {nnz})"


def sparse_input(x: Tensor, force: bool | None = None, csr: CsrRows | None = None) -> bool:
    """Whether ``x`` (a layer's input) should go through the CSR path.

    It must need no gradient and be a dense float32/float64 matrix, outside
    ``torch.compile`` and ``torch.jit.trace``; then ``force`` decides if given, else: on the
    CPU and at most :data:`SPARSE_MAX_DENSITY` non-zero, which a ``csr`` (the CSR of ``x``'s
    rows, handed in by the caller) vouches for without a pass over ``x``; without one, one
    counting pass decides. Under autocast the CSR products run in the input's dtype (they are
    cheap; bf16 CSR kernels are not), the layers after in autocast's.
    """
    if force is False or x.dim() != 2 or x.layout != torch.strided or x.numel() == 0:
        return False
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False  # it reads a count on the host; compiled / traced graphs stay dense
    if x.requires_grad and torch.is_grad_enabled():
        return False
    if x.dtype not in (torch.float32, torch.float64):
        return False
    if force:
        return True
    if x.device.type != "cpu":
        return False
    return csr is not None or not _dense(x)


class _SparseLinear(torch.autograd.Function):
    """``drop(x) W^T + b`` for an input that needs no gradient, over a CSR copy of ``x``."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, p: float, csr: CsrRows | None
    ) -> Tensor:
        rows = CsrRows.of(x) if csr is None else csr
        if p > 0:  # nn.Dropout's mask and 1/(1-p) scale, on the non-zeros only
            rows = CsrRows(rows.crow, rows.col, F.dropout(rows.val, p), rows.width)
        ctx.rows = rows
        ctx.has_bias = bias is not None
        xs = rows.matrix()
        if bias is None:
            return torch.mm(xs, weight.t())
        return torch.addmm(bias, xs, weight.t())

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        _, need_weight, need_bias, _, _ = ctx.needs_input_grad
        g_weight = g_bias = None
        if need_weight:
            out = grad.new_empty(grad.shape[1], ctx.rows.width)
            g_weight = ctx.rows.weight_grad(grad.contiguous(), out)
        if need_bias and ctx.has_bias:
            g_bias = grad.sum(0)
        return None, g_weight, g_bias, None, None


def sparse_linear(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    p: float = 0.0,
    *,
    csr: CsrRows | None = None,
) -> Tensor:
    """``F.linear(F.dropout(x, p), weight, bias)`` through the CSR path (``x`` must need no
    gradient), multiplying ``csr`` (the CSR of ``x``'s rows) when given, else ``x``'s CSR
    found by a pass over it. Dropout drops the non-zeros only: the same distribution as
    dropping every element, without a dense copy of ``x``. Runs in ``x``'s dtype, also under
    autocast."""
    with torch.autocast(x.device.type, enabled=False):
        return _SparseLinear.apply(x, weight, bias, p, csr)


def dropped_linear(
    x: Tensor,
    dropout: nn.Module | None,
    weight: Tensor,
    bias: Tensor | None,
    sparse: bool | None,
    csr: CsrRows | None = None,
) -> Tensor:
    """``F.linear(dropout(x), weight, bias)``, through the CSR path where
    :func:`sparse_input` (x, sparse, csr) says so and ``dropout`` is None or a plain
    ``nn.Dropout``; ``csr``: the CSR of ``x``'s rows, if the caller has it."""
    plain = dropout is None or type(dropout) is nn.Dropout
    if plain and sparse_input(x, sparse, csr):
        p = dropout.p if isinstance(dropout, nn.Dropout) and dropout.training else 0.0
        return sparse_linear(x, weight, bias, p, csr=csr)
    return F.linear(x if dropout is None else dropout(x), weight, bias)
