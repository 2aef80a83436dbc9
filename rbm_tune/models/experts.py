"""The experts of a mixture layer and the two ways to dispatch rows to them (method §10.3).

- :class:`ExpertBank`: E independent ``Linear(d_in, d_out)`` experts stored as one
  ``(E, d_out, d_in)`` weight tensor. Its :meth:`~ExpertBank.mix` is the *dense* dispatch:
  every expert runs on the whole chunk in one GEMM and the chosen ones are mixed with an
  einsum (E expert FLOPs per node, no Python loop over experts, no device-to-host sync).
- :func:`mix_experts`: the one choice between them for the RbM and MoE layers
  (:func:`use_grouped`).
- :func:`grouped_mix`: the *grouped* dispatch, the same function: the B·k (node, chosen
  expert) pairs are sorted by expert and each expert runs one GEMM on its own rows (k expert
  FLOPs per node, one device-to-host sync), with a hand-written backward
  (:class:`_GroupedExperts`). Its temporaries live in reusable buffers
  (:mod:`rbm_tune.models.scratch`) and it draws per-pair dropout masks itself
  (:mod:`rbm_tune.models.dropout_mask`).

Both take the CSR path of :mod:`rbm_tune.models.sparse` for sparse inputs without gradient.
Both are checked against a per-expert loop in ``tests/test_rbm_equivalence.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from rbm_tune.models.dropout_mask import keep_mask, quantised
from rbm_tune.models.scratch import scratch
from rbm_tune.models.sparse import CsrRows, dropped_linear, sparse_input

__all__ = ["ExpertBank", "grouped_mix", "mix_experts", "use_grouped"]


class ExpertBank(nn.Module):
    """E independent ``Linear(in_dim, out_dim)`` experts stored as stacked tensors.

    Each expert is initialised like ``nn.Linear`` (weights and bias uniform in
    ±1/sqrt(in_dim)), independently.

    Args:
        num_experts: E.
        in_dim: d_in.
        out_dim: d_out.
    """

    def __init__(self, num_experts: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.weight = nn.Parameter(torch.empty(num_experts, out_dim, in_dim))
        self.bias = nn.Parameter(torch.empty(num_experts, out_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw every expert like a fresh ``nn.Linear``."""
        bound = 1.0 / math.sqrt(self.in_dim)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def single(
        self,
        x: Tensor,
        expert: int = 0,
        *,
        dropout: nn.Module | None = None,
        sparse: bool | None = None,
        csr: CsrRows | None = None,
    ) -> Tensor:
        """Apply one expert to ``dropout(x)``: (B, d_in) -> (B, d_out).

        ``sparse``: the CSR path of :func:`~rbm_tune.models.sparse.sparse_input` (None: auto);
        ``csr``: the CSR of ``x``'s rows, if the caller has it (no counting pass).
        """
        return dropped_linear(x, dropout, self.weight[expert], self.bias[expert], sparse, csr)

    @torch.no_grad()
    def copy_first_to_all(self) -> None:
        """Overwrite experts 1..E-1 with expert 0 (the end of pretraining, method §3.3 step 4)."""
        self.weight[1:] = self.weight[0]
        self.bias[1:] = self.bias[0]

    def mix(
        self,
        x: Tensor,
        index: Tensor,
        weight: Tensor,
        *,
        dropout: nn.Dropout,
        per_pair: bool,
        gate: Tensor | None = None,
        sparse: bool | None = None,
        csr: CsrRows | None = None,
    ) -> Tensor:
        """Weighted sum of the chosen experts: ``Σ_j w_ij · (W_e drop(g_e ⊙ x_i) + b_e)``.

        ``e = index[i, j]``. The gates are folded into the weights
        (``Ŵ_e = W_e diag(g_e)``), so every expert runs in one GEMM over the chunk (method §10.3).

        Dropout: with ``per_pair`` (the reference) an independent input mask is drawn for every
        (node, chosen expert) pair; this is done as one batched GEMM over a (k, B, d_in) stack of
        independently dropped copies of the chunk, costing k times the dense FLOPs. Otherwise
        (``shared``, a deviation, method §10.4) one mask per node is shared by its experts and the
        whole layer is a single dense GEMM. Without active dropout (eval mode or p = 0) or with
        k = 1 both are the same and the dense path is used.

        Args:
            x: layer inputs, shape (B, d_in).
            index: chosen experts, shape (B, k), long.
            weight: mixing weights of the chosen experts, shape (B, k) (detach them yourself
                if no gradient should flow, as RbM does).
            dropout: the layer's dropout module (applied to the inputs of every expert).
            per_pair: draw an independent dropout mask per (node, chosen expert).
            gate: optional per-expert input gates g, shape (E, d_in).
            sparse: the single GEMM over a CSR copy of the dropped chunk when it needs no
                gradient (:func:`~rbm_tune.models.sparse.sparse_input`; None: auto).
            csr: the CSR of ``x``'s rows, if the caller has it (no counting pass).

        Returns:
            Shape (B, d_out).
        """
        num_experts, out_dim, in_dim = self.weight.shape
        batch, k = index.shape
        w_stack = self.weight if gate is None else self.weight * gate.unsqueeze(1)
        w_all = w_stack.reshape(num_experts * out_dim, in_dim)
        b_all = self.bias.reshape(num_experts * out_dim)
        # the module flags first: under torch.jit.trace (export, eval mode) ``k`` is a traced
        # size, and comparing it would warn that the trace freezes the branch
        if per_pair and dropout.training and dropout.p > 0 and k > 1:
            # Dropout of an expanded view draws a fresh mask for every (slot, node, feature).
            x_pairs = dropout(x.unsqueeze(0).expand(k, batch, in_dim))
            y = F.linear(x_pairs, w_all, b_all).view(k, batch, num_experts, out_dim)
            pick = index.T.reshape(k, batch, 1, 1).expand(k, batch, 1, out_dim)
            y = y.gather(2, pick).squeeze(2)  # (k, B, d_out): slot j's own expert
            return torch.einsum("bk,kbd->bd", weight, y)
        y = dropped_linear(x, dropout, w_all, b_all, sparse, csr)
        y = y.view(batch, num_experts, out_dim)
        dense = weight.new_zeros(batch, num_experts).scatter(1, index, weight)
        return torch.einsum("be,bed->bd", dense, y)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.num_experts} x {self.in_dim} -> {self.out_dim})"


def _sum_slots(rows: Tensor, inv: Tensor, k: int, name: str) -> Tensor:
    """``Σ_j rows[inv[j·B + i]]`` for every node i: the k slots of each node summed."""
    batch = inv.numel() // k
    out = rows.index_select(0, inv[:batch])
    if k > 1:
        slot = scratch(name, (batch, rows.shape[1]), rows)
        for j in range(1, k):
            out.add_(torch.index_select(rows, 0, inv[j * batch : (j + 1) * batch], out=slot))
    return out


class _GroupedExperts(torch.autograd.Function):
    """The expert GEMMs of :func:`grouped_mix` with a hand-written backward.

    Forward, per expert e (its ``counts[e]`` rows of the pairs sorted by expert): gather its pair
    rows ``xs_e = src[gather_e]``, optionally drop them (``p`` > 0: an independent mask per pair
    row, the scale ``1 / (1 - p)`` folded into the GEMM), ``y_q = w_q (W_e xs_q + b_e)``; then
    each node sums its k pairs (slot-major positions ``inv``). Backward mirrors it with row
    gathers only (no scatter): ``gy = w ⊙ g[nodes]``, per-expert GEMMs, ``g_src`` by the inverse
    gather (summed over the slots when ``src`` holds one row per node). Tensors are kept per
    expert and temporaries live in reusable buffers (:mod:`rbm_tune.models.scratch`), so that
    no tensor of k·B rows is freshly allocated.
    """

    @staticmethod
    def forward(
        ctx: Any,
        src: Tensor,
        weight: Tensor,
        bias: Tensor,
        w_sorted: Tensor,
        gather: Tensor,
        nodes: Tensor,
        inv: Tensor,
        counts: list[int],
        batch: int,
        p: float,
        csr: CsrRows | None,
    ) -> Tensor:
        k = inv.numel() // batch
        alpha = 1.0 / (1.0 - quantised(p))  # the p keep_mask realises
        needs_w = ctx.needs_input_grad[3]
        shape = (inv.numel(), weight.shape[1])
        y = src.new_empty(shape) if needs_w else scratch("y", shape, src)
        inputs, drops, sparse_inputs = [], [], []
        start = 0
        for e, count in enumerate(counts):
            rows = slice(start, start + count)
            drop = None
            if csr is not None:  # the expert's rows as CSR; dropout drops their non-zeros
                part = csr.take(gather[rows])
                if count and p > 0:
                    part.val.mul_(keep_mask((1, part.val.numel()), p, part.val).view(-1))
                xs = part.matrix()
                sparse_inputs.append(part)
            else:
                xs = src.index_select(0, gather[rows])
                if count and p > 0:
                    drop = keep_mask((xs.shape[0], xs.shape[1]), p, xs)
                    xs.mul_(drop)
                inputs.append(xs)
            if count:
                torch.addmm(bias[e], xs, weight[e].t(), alpha=alpha, out=y[rows])
            drops.append(drop)
            start += count
        ctx.save_for_backward(weight, w_sorted, nodes, inv, y if needs_w else None, *inputs)
        # CSR inputs (they need no gradient) stay on ctx: save_for_backward takes strided ones
        ctx.sparse_inputs = sparse_inputs
        ctx.drops, ctx.counts, ctx.k, ctx.src_rows, ctx.alpha = (
            drops,
            counts,
            k,
            src.shape[0],
            alpha,
        )
        y = y * w_sorted.unsqueeze(1) if needs_w else y.mul_(w_sorted.unsqueeze(1))
        return _sum_slots(y, inv, k, "slot_out")

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        weight, w_sorted, nodes, inv, y, *inputs = ctx.saved_tensors
        inputs = inputs or ctx.sparse_inputs
        need_src, need_weight, need_bias, need_w = ctx.needs_input_grad[:4]
        alpha = ctx.alpha
        gy = scratch("gy", (nodes.numel(), grad.shape[1]), grad)
        torch.index_select(grad.contiguous(), 0, nodes, out=gy)
        g_w = (gy * y).sum(1) if need_w else None
        gy.mul_(w_sorted.unsqueeze(1))
        g_xs = scratch("g_xs", (nodes.numel(), weight.shape[2]), gy) if need_src else None
        # every expert's slice is written below; only experts without rows need zeros
        g_weight = torch.empty_like(weight) if need_weight else None
        g_bias = weight.new_empty(weight.shape[:2]) if need_bias else None
        for e, count in enumerate(ctx.counts):
            if count == 0:
                for g in (g_weight, g_bias):
                    if g is not None:
                        g[e].zero_()
        start = 0
        for e, (count, xs, drop) in enumerate(zip(ctx.counts, inputs, ctx.drops)):
            if count:
                rows = slice(start, start + count)
                if g_xs is not None:
                    out = g_xs[rows]
                    torch.addmm(out, gy[rows], weight[e], beta=0, alpha=alpha, out=out)
                    if drop is not None:
                        out.mul_(drop)
                if g_weight is not None and isinstance(xs, CsrRows):
                    xs.weight_grad(gy[rows], g_weight[e], alpha)
                elif g_weight is not None:
                    out = g_weight[e]
                    torch.addmm(out, gy[rows].t(), xs, beta=0, alpha=alpha, out=out)
                if g_bias is not None:
                    torch.sum(gy[rows], 0, out=g_bias[e])
            start += count
        g_src = None
        if g_xs is not None:
            if ctx.src_rows == inv.numel():  # one src row per pair, slot-major
                g_src = g_xs.index_select(0, inv)
            else:  # one src row per node: sum its k slots
                g_src = _sum_slots(g_xs, inv, ctx.k, "slot_in")
        return g_src, g_weight, g_bias, g_w, None, None, None, None, None, None, None


def grouped_mix(
    x: Tensor,
    index: Tensor,
    weight: Tensor,
    *,
    bank: ExpertBank,
    dropout: nn.Module,
    per_pair: bool,
    gate: Tensor | None = None,
    sparse: bool | None = None,
    csr: CsrRows | None = None,
) -> Tensor:
    """``Σ_j w_ij · (W_e drop(g_e ⊙ x_i) + b_e)`` with ``e = index[i, j]``, grouped by expert.

    The same function as :meth:`ExpertBank.mix`, computed the way method §10.3 calls the exact
    path: the B·k (node, chosen expert) pairs are sorted by expert and each expert runs one GEMM
    on its own rows, so the expert FLOPs are k per node (the dense path: E, and k·E with
    per-pair dropout). Costs one device-to-host sync (the per-expert row counts).

    Dropout: with ``per_pair`` (and k > 1) every (node, chosen expert) pair gets its own mask.
    A plain ``nn.Dropout`` is not called: its i.i.d. mask is drawn directly on the gathered pair
    rows (same distribution, no k-fold copy of the chunk; the random stream differs from
    :meth:`ExpertBank.mix`'s). Any other dropout module is applied, as in
    :meth:`ExpertBank.mix`, to a (k, B, d_in) expanded view with slot j of node i at ``[j, i]``.
    Otherwise one mask per node is shared by its experts.

    Args:
        x: layer inputs, shape (B, d_in).
        index: chosen experts, shape (B, k), long.
        weight: mixing weights of the chosen experts, shape (B, k).
        bank: the experts.
        dropout: the layer's dropout module.
        per_pair: draw an independent dropout mask per (node, chosen expert).
        gate: optional per-expert input gates g, shape (E, d_in).
        sparse: multiply CSR copies of the expert rows (:mod:`rbm_tune.models.sparse`); None
            (default) decides by :func:`~rbm_tune.models.sparse.sparse_input`: inputs that need
            no gradient with at most 2 % non-zeros, on the CPU. Forced on, it still needs an
            input without gradient. Under autocast the CSR products run in float32.
        csr: the CSR of ``x``'s rows, if the caller has it: the CSR path then needs no
            counting pass and multiplies it (not used where the rows reaching the experts are
            not ``x``'s own, e.g. dropped by a shared mask).

    Returns:
        Shape (B, d_out).
    """
    batch, k = index.shape
    flat = index.t().reshape(-1)  # pair p = j * B + i: slot j of node i
    order = torch.argsort(flat, stable=True)  # pairs sorted by expert
    inv = torch.empty_like(order)
    inv[order] = torch.arange(order.numel(), device=order.device)
    counts = torch.bincount(flat, minlength=bank.num_experts).tolist()
    nodes = order % batch
    p = 0.0
    if per_pair and k > 1 and type(dropout) is nn.Dropout:
        # i.i.d. masks: drawn on the gathered pair rows inside the GEMM step (no k-fold copy)
        src, gather, p = x, nodes, dropout.p if dropout.training else 0.0
    elif per_pair and k > 1:
        src = dropout(x.unsqueeze(0).expand(k, batch, x.shape[1])).reshape(k * batch, -1)
        gather = order
    else:
        src, gather = dropout(x), nodes
    w_stack: Tensor = bank.weight if gate is None else bank.weight * gate.unsqueeze(1)
    w_sorted = weight.t().reshape(-1)[order]
    bias: Tensor = bank.bias
    device = x.device.type
    csr = csr if src is x else None  # the CSR of x describes only x itself
    use_sparse = gather is nodes and sparse_input(src, sparse, csr)
    if torch.is_autocast_enabled(device) and not use_sparse:  # CSR products stay float32
        # autocast does not reach into the Function (its GEMMs write into preallocated
        # buffers): run it in the autocast dtype explicitly; the casts carry the gradients back
        dtype = torch.get_autocast_dtype(device)
        src, w_stack, bias, w_sorted = (t.to(dtype) for t in (src, w_stack, bias, w_sorted))
    rows = (CsrRows.of(src) if csr is None else csr) if use_sparse else None
    with torch.autocast(device, enabled=False):
        out = _GroupedExperts.apply(
            src, w_stack, bias, w_sorted, gather, nodes, inv, counts, batch, p, rows
        )
    return cast(Tensor, out)


def use_grouped(
    grouped: bool | None,
    x: Tensor,
    *,
    training: bool,
    dropout: nn.Dropout,
    per_pair: bool,
    k: int,
) -> bool:
    """Whether a mixture layer dispatches grouped (method §10.3): ``grouped`` if forced (not
    None), else on the CPU and wherever per-pair dropout is active (training, p > 0, k > 1).

    Grouped costs k/E of the dense FLOPs (1/E of the dense per-pair ones) for one
    device-to-host sync; on an accelerator without per-pair dropout the dense single GEMM stays
    (no sync, static shapes). A forced value is returned before any size is compared (export
    traces with ``grouped=False``).
    """
    if grouped is not None:
        return grouped
    active = per_pair and training and dropout.p > 0 and k > 1
    return x.device.type == "cpu" or active


def mix_experts(
    x: Tensor,
    index: Tensor,
    weight: Tensor,
    *,
    bank: ExpertBank,
    dropout: nn.Dropout,
    per_pair: bool,
    grouped: bool | None,
    training: bool,
    gate: Tensor | None = None,
    sparse: bool | None = None,
    csr: CsrRows | None = None,
) -> Tensor:
    """The chosen experts mixed by :func:`grouped_mix` or :meth:`ExpertBank.mix`, whichever
    :func:`use_grouped` picks (k = ``index.shape[1]`` experts a row); the other arguments are
    theirs."""
    k = index.shape[1]
    mix: Callable[..., Tensor] = bank.mix
    if use_grouped(grouped, x, training=training, dropout=dropout, per_pair=per_pair, k=k):
        mix = partial(grouped_mix, bank=bank)
    return mix(
        x, index, weight, dropout=dropout, per_pair=per_pair, gate=gate, sparse=sparse, csr=csr
    )
