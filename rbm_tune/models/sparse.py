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

Finding the non-zeros of a dense matrix is a pass over all of it (Coauthor CS: 0.2 s for
18,333 x 6,805, more than the sparse GEMMs themselves), so the training loop registers its
feature matrices (:func:`registered`): a layer input that is a block of consecutive rows of a
registered matrix (the chunks ``x[a:b]``, the full batch) reuses the matrix's CSR, and its
transpose for the weight gradient, without touching the dense rows; :func:`gathered` does the
same for a fixed set of rows (the evaluated nodes). Anything else is scanned when it arrives.

Only the CPU takes this path on its own (``torch.sparse`` CSR times dense runs on MKL here; on
a 2-core CPU it breaks even with the dense GEMM near 4 % non-zeros, hence the 2 % threshold);
CUDA keeps the dense GEMMs, which nothing here has measured against cuSPARSE.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = [
    "SPARSE_MAX_DENSITY",
    "CsrRows",
    "csr_rows",
    "dropped_linear",
    "forbid_sparse",
    "gathered",
    "registered",
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
            module.sparse = False


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


# -- registered feature matrices ----------------------------------------------------------------
class _Entry:
    """A registered matrix: its CSR (None: too dense) and the CSR of row blocks asked for."""

    __slots__ = ("tensor", "version", "csr", "blocks")

    def __init__(self, tensor: Tensor, csr: CsrRows | None) -> None:
        self.tensor, self.version, self.csr = tensor, tensor._version, csr
        self.blocks: dict[tuple[int, int], CsrRows] = {}


_LOCAL = threading.local()


def _entries() -> list[_Entry]:
    return _LOCAL.__dict__.setdefault("entries", [])


def _find(x: Tensor) -> tuple[_Entry, int] | None:
    """The registered matrix ``x`` is a block of consecutive rows of, and the first row."""
    if x.dim() != 2 or x.layout != torch.strided:
        return None
    for entry in _entries():
        base = entry.tensor
        width = base.shape[1]
        if (
            x.dtype != base.dtype
            or x.device != base.device
            or x.shape[1] != width
            or (width > 1 and x.stride(1) != 1)  # a column or a broadcast is not a row block
            or (x.shape[0] > 1 and x.stride(0) != width)
            or base._version != entry.version  # written to since: its CSR is stale
            or x.untyped_storage().data_ptr() != base.untyped_storage().data_ptr()
        ):
            continue
        offset = x.storage_offset() - base.storage_offset()
        if offset % width == 0 and 0 <= offset // width <= base.shape[0] - x.shape[0]:
            return entry, offset // width
    return None


def _register(x: Tensor, csr: CsrRows | None) -> _Entry:
    entry = _Entry(x, csr)
    _entries().append(entry)
    return entry


def _unregister(entry: _Entry) -> None:
    entries = _entries()
    for i, e in enumerate(entries):
        if e is entry:
            del entries[i]
            return


def _dense(x: Tensor) -> bool:
    return int(torch.count_nonzero(x)) > SPARSE_MAX_DENSITY * x.numel()


@contextmanager
def registered(*matrices: Tensor) -> Iterator[None]:
    """While active, layer inputs that are row blocks of these CPU matrices find their CSR
    (and its transpose) without a pass over the dense rows. Each matrix is counted once here:
    above :data:`SPARSE_MAX_DENSITY` non-zeros it is registered as dense (no CSR is built).
    A matrix written to in place afterwards is ignored (its version changed); writes that
    bypass autograd's version counter (``.data``, a NumPy view of it) are not noticed, so do
    not make them while it is registered. Inference-mode tensors (no version counter) are
    not registered: they are scanned on each use."""
    added = []
    for x in matrices:
        if x.dim() != 2 or x.layout != torch.strided or x.device.type != "cpu" or x.numel() == 0:
            continue
        if x.dtype not in (torch.float32, torch.float64) or not x.is_contiguous():
            continue
        if x.is_inference():  # no version counter: an in-place write could not be noticed
            continue
        if _find(x) is not None:
            continue
        added.append(_register(x, None if _dense(x) else CsrRows.of(x)))
    try:
        yield
    finally:
        for entry in added:
            _unregister(entry)


@contextmanager
def gathered(base: Tensor, rows: Tensor) -> Iterator[Tensor]:
    """``base[rows]``, registered while the block is active when ``base`` is (row block of) a
    registered matrix, with its CSR gathered from the matrix's instead of scanned."""
    x = base[rows]
    hit = _find(base)
    if hit is None:
        yield x
        return
    entry, start = hit
    csr = None
    if entry.csr is not None:
        # what base[rows] selects (negative indices, a boolean mask) as plain row numbers
        picked = torch.arange(base.shape[0], device=base.device)[rows]
        csr = entry.csr.take(picked.to(entry.csr.crow.device) + start)
    mine = _register(x, csr)  # holds x: its address is not reused while registered
    try:
        yield x
    finally:
        _unregister(mine)


def csr_rows(x: Tensor) -> CsrRows:
    """``x``'s CSR: from the registry when ``x`` is a row block of a registered sparse matrix
    (cached per block, with its transpose), else by a pass over ``x``."""
    hit = _find(x)
    if hit is not None and hit[0].csr is not None:
        entry, start = hit
        key = (start, start + x.shape[0])
        block = entry.blocks.get(key)
        if block is None:
            block = entry.blocks[key] = entry.csr.block(*key)
        return block
    return CsrRows.of(x)


def sparse_input(x: Tensor, force: bool | None = None) -> bool:
    """Whether ``x`` (a layer's input) should go through the CSR path.

    It must need no gradient and be a dense float32/float64 matrix, outside
    ``torch.compile`` and ``torch.jit.trace``; then ``force`` decides if given, else: on the
    CPU and at most :data:`SPARSE_MAX_DENSITY` non-zero (known for registered matrices,
    otherwise one counting pass over ``x``). Under autocast the CSR products run in the
    input's dtype (they are cheap; bf16 CSR kernels are not), the layers after in autocast's.
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
    hit = _find(x)
    if hit is not None:
        return hit[0].csr is not None
    return not _dense(x)


class _SparseLinear(torch.autograd.Function):
    """``drop(x) W^T + b`` for an input that needs no gradient, over a CSR copy of ``x``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, p: float
    ) -> Tensor:
        rows = csr_rows(x)
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
        _, need_weight, need_bias, _ = ctx.needs_input_grad
        g_weight = g_bias = None
        if need_weight:
            out = grad.new_empty(grad.shape[1], ctx.rows.width)
            g_weight = ctx.rows.weight_grad(grad.contiguous(), out)
        if need_bias and ctx.has_bias:
            g_bias = grad.sum(0)
        return None, g_weight, g_bias, None


def sparse_linear(x: Tensor, weight: Tensor, bias: Tensor | None, p: float = 0.0) -> Tensor:
    """``F.linear(F.dropout(x, p), weight, bias)`` through the CSR path (``x`` must need no
    gradient). Dropout drops the non-zeros only: the same distribution as dropping every
    element, without a dense copy of ``x``. Runs in ``x``'s dtype, also under autocast."""
    with torch.autocast(x.device.type, enabled=False):
        return _SparseLinear.apply(x, weight, bias, p)  # type: ignore[no-any-return]


def dropped_linear(
    x: Tensor,
    dropout: nn.Module | None,
    weight: Tensor,
    bias: Tensor | None,
    sparse: bool | None,
) -> Tensor:
    """``F.linear(dropout(x), weight, bias)``, through the CSR path where
    :func:`sparse_input` (x, sparse) says so and ``dropout`` is None or a plain
    ``nn.Dropout``."""
    plain = dropout is None or type(dropout) is nn.Dropout
    if plain and sparse_input(x, sparse):
        p = dropout.p if isinstance(dropout, nn.Dropout) and dropout.training else 0.0
        return sparse_linear(x, weight, bias, p)
    return F.linear(x if dropout is None else dropout(x), weight, bias)
