"""Routing-by-Memory layer and student (spec §3.3), vectorised as spec §10.3.

Deviations from the reference, all deliberate:

- Vectorised (spec §10.3): the memory EMA as one matmul, the commitment loss without a loop
  over k, cosines as ``(x M̂ᵀ) / ||x||``. Expert dispatch has two paths, both verified against a
  per-expert loop in ``tests/test_rbm_equivalence.py``: *grouped* (:func:`grouped_mix`; the
  (node, expert) pairs sorted by expert, one GEMM per expert on its own rows, k expert FLOPs
  per node, one device-to-host sync) on the CPU and wherever per-pair dropout is active, and
  *dense* (:meth:`ExpertBank.mix`; one GEMM over all E experts, no sync) on accelerators
  otherwise. ``RbMLayer.grouped`` forces one.
- Sparse inputs (:mod:`rbm_tune.models.sparse`): on the CPU, a layer input without gradient
  and with at most 2 % non-zeros (bag-of-words features) reaches the grouped experts as CSR
  rows, and per-pair dropout drops their non-zero values (the same distribution; a different
  random stream from the dense path's). ``RbMLayer.sparse`` forces or forbids it.
- ``expert_dropout="shared"`` (opt-in) shares one dropout mask per node across its experts;
  the default ``"per_pair"`` draws one per (node, chosen expert), as the reference does. The
  grouped path draws an ``nn.Dropout``'s per-pair masks itself, as ``U(0, 1) < p`` on the
  gathered pair rows (same distribution as ``bernoulli_``, a different random stream).
- The memory is overwritten in place (``copy_`` under ``no_grad``) and the self-similarity loss
  reads a clone of it, so a graph built by an earlier forward stays valid after the EMA.
- k-means runs in torch (:func:`rbm_tune.kmeans.kmeans`), seeded per layer with ``seed + l``;
  ``end_pretraining`` restores the previous train/eval mode (the reference always sets train).
- Before the switch the memory holds random unit vectors (the reference: zeros); it is unused
  until the switch overwrites it, and a student built with ``pretraining=False`` routes with it.
- The phase flag is part of the ``state_dict`` (extra state), see :class:`PhasedLayer`.
- ``update_memory = False`` skips the EMA (the "once per clean chunk" variant, spec §10.4).
"""

from __future__ import annotations

import math
import threading
from functools import partial
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from rbm_tune.kmeans import kmeans
from rbm_tune.losses import cv_squared
from rbm_tune.models.base import (
    ExpertBank,
    ExpertStudent,
    PhasedLayer,
    check_expert_args,
    clamped_exp,
)
from rbm_tune.models.sparse import CsrRows, csr_rows, sparse_input

__all__ = ["RbM", "RbMLayer", "grouped_mix"]


_WORKSPACE = threading.local()
_WORKSPACE_MAX = 1 << 24  # elements (64 MiB of float32) per buffer; larger ones are not kept


def _scratch(
    name: str, shape: tuple[int, ...], like: Tensor, dtype: torch.dtype | None = None
) -> Tensor:
    """A reusable buffer for a temporary that never leaves :class:`_GroupedExperts`.

    Fresh tensors above glibc's mmap threshold (32 MiB) are page-faulted in on every call, which
    cost as much as a third of an expert GEMM of a 4096-row chunk on a 2-core CPU; these
    buffers are kept per thread, device and dtype, up to ``_WORKSPACE_MAX`` elements.
    """
    dtype = like.dtype if dtype is None else dtype
    numel = math.prod(shape)
    if numel > _WORKSPACE_MAX:
        return like.new_empty(shape, dtype=dtype)
    pool = _WORKSPACE.__dict__.setdefault("pool", {})
    key = (name, like.device, dtype)
    buf = pool.get(key)
    if buf is None or buf.numel() < numel:
        buf = pool[key] = like.new_empty(numel, dtype=dtype)
    return buf[:numel].view(shape)


def _sum_slots(rows: Tensor, inv: Tensor, k: int, name: str) -> Tensor:
    """``Σ_j rows[inv[j·B + i]]`` for every node i: the k slots of each node summed."""
    batch = inv.numel() // k
    out = rows.index_select(0, inv[:batch])
    if k > 1:
        slot = _scratch(name, (batch, rows.shape[1]), rows)
        for j in range(1, k):
            out.add_(torch.index_select(rows, 0, inv[j * batch : (j + 1) * batch], out=slot))
    return out


_BITS = 16  # random bits per dropout decision


def _quantised(p: float) -> float:
    """The drop probability :func:`_keep_mask` realises: p rounded to a multiple of 2^-16."""
    return round(p * 2**_BITS) / 2**_BITS


def _keep_mask(shape: tuple[int, int], p: float, like: Tensor) -> Tensor:
    """Dropout's keep mask: i.i.d., 0 with probability :func:`_quantised` (p); bool (one byte
    an element, kept for backward) on accelerators, 0/1 in ``like``'s dtype on the CPU.

    The CPU keeps four bytes: there, multiplying float32 by a bool mask took 5x as long as by a
    float32 one (42 vs 8 ms for 12,288 x 1,024 on 2 cores, torch 2.13), a measurable share of a
    routed epoch, while a trial's memory there is the host's.

    Each decision reads 16 uniform random bits (four per 64-bit draw of the full int64 range)
    and keeps the element where they are >= p·2^16, so p is realised to within 2^-17 (0.2 ->
    0.199997; the caller scales by 1 / (1 - that p), so the expectation is exact). On a 2-core
    CPU this and a multiply are about 4x faster than ``U(0, 1) < p`` and ``masked_fill_``, and
    8x faster than ``bernoulli_`` (what ``nn.Dropout`` uses); the random stream differs.
    """
    n = shape[0] * shape[1]
    bits = _scratch("bits", ((n + 3) // 4,), like, torch.int64)
    bits.random_(-(2**63), 2**63 - 1)
    lanes = bits.view(torch.int16)[:n].view(shape)
    threshold = round(p * 2**_BITS) - 2 ** (_BITS - 1)  # int16 lanes are offset by -2^15
    keep = like.new_empty(shape, dtype=torch.bool if like.device.type != "cpu" else None)
    return torch.ge(lanes, threshold, out=keep)


class _GroupedExperts(torch.autograd.Function):
    """The expert GEMMs of :func:`grouped_mix` with a hand-written backward.

    Forward, per expert e (its ``counts[e]`` rows of the pairs sorted by expert): gather its pair
    rows ``xs_e = src[gather_e]``, optionally drop them (``p`` > 0: an independent mask per pair
    row, the scale ``1 / (1 - p)`` folded into the GEMM), ``y_q = w_q (W_e xs_q + b_e)``; then
    each node sums its k pairs (slot-major positions ``inv``). Backward mirrors it with row
    gathers only (no scatter): ``gy = w ⊙ g[nodes]``, per-expert GEMMs, ``g_src`` by the inverse
    gather (summed over the slots when ``src`` holds one row per node). Tensors are kept per
    expert and temporaries live in reusable buffers (:func:`_scratch`), so that no tensor of
    k·B rows is freshly allocated.
    """

    @staticmethod
    def forward(  # type: ignore[override]
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
        sparse: bool,
    ) -> Tensor:
        k = inv.numel() // batch
        alpha = 1.0 / (1.0 - _quantised(p))  # the p _keep_mask realises
        needs_w = ctx.needs_input_grad[3]
        shape = (inv.numel(), weight.shape[1])
        y = src.new_empty(shape) if needs_w else _scratch("y", shape, src)
        csr = csr_rows(src) if sparse else None
        inputs, drops, sparse_inputs = [], [], []
        start = 0
        for e, count in enumerate(counts):
            rows = slice(start, start + count)
            drop = None
            if csr is not None:  # the expert's rows as CSR; dropout drops their non-zeros
                part = csr.take(gather[rows])
                if count and p > 0:
                    part.val.mul_(_keep_mask((1, part.val.numel()), p, part.val).view(-1))
                xs = part.matrix()
                sparse_inputs.append(part)
            else:
                xs = src.index_select(0, gather[rows])
                if count and p > 0:
                    drop = _keep_mask(xs.shape, p, xs)
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
        gy = _scratch("gy", (nodes.numel(), grad.shape[1]), grad)
        torch.index_select(grad.contiguous(), 0, nodes, out=gy)
        g_w = (gy * y).sum(1) if need_w else None
        gy.mul_(w_sorted.unsqueeze(1))
        g_xs = _scratch("g_xs", (nodes.numel(), weight.shape[2]), gy) if need_src else None
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
) -> Tensor:
    """``Σ_j w_ij · (W_e drop(g_e ⊙ x_i) + b_e)`` with ``e = index[i, j]``, grouped by expert.

    The same function as :meth:`ExpertBank.mix`, computed the way spec §10.3 calls the exact
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
    w_stack = bank.weight if gate is None else bank.weight * gate.unsqueeze(1)
    w_sorted = weight.t().reshape(-1)[order]
    bias = bank.bias
    device = x.device.type
    use_sparse = gather is nodes and sparse_input(src, sparse)
    if torch.is_autocast_enabled(device) and not use_sparse:  # CSR products stay float32
        # autocast does not reach into the Function (its GEMMs write into preallocated
        # buffers): run it in the autocast dtype explicitly; the casts carry the gradients back
        dtype = torch.get_autocast_dtype(device)
        src, w_stack, bias, w_sorted = (t.to(dtype) for t in (src, w_stack, bias, w_sorted))
    with torch.autocast(device, enabled=False):
        out = _GroupedExperts.apply(
            src, w_stack, bias, w_sorted, gather, nodes, inv, counts, batch, p, use_sparse
        )
    return cast(Tensor, out)


class RbMLayer(PhasedLayer):
    """One RbM layer: E experts, one memory vector per expert, a learned output scale.

    Forward after pretraining, for a chunk X (B × d_in) (spec §3.3 steps 1-7):
    route by cosine to the pre-update memory (top-k, softmax weights w) -> output
    ``s · Σ_j sg(w_ij) (W_j drop(g_j ⊙ x_i) + b_j)`` -> in training, the memory EMA
    ``M ← β M̂ + (1 - β) μ`` -> in training, the aux loss
    ``vq_coef · L_commit + sim_coef · L_sim + load_balance_coef · L_lb`` (each term skipped
    when its coefficient is 0; L_sim reads the post-EMA memory). In eval mode the routing is
    deterministic with the frozen memory and there is no EMA and no aux.

    During pretraining the layer is ``Linear(drop(x))`` with expert 0's weights only: no gate,
    no scale, no aux.

    Args:
        in_dim: d_in (the memory lives in this space).
        out_dim: d_out.
        num_experts: E.
        k: experts per node, ``1 <= k < E``.
        momentum: β of the memory EMA.
        vq_coef: commitment loss weight.
        sim_coef: memory self-similarity loss weight.
        load_balance_coef: load-balance loss weight.
        input_attention: learn per-expert input gates ``g_e = exp(min(Φ_e, ln 100))``, Φ init
            ln 1.1.
        dropout: input dropout of every expert.
        expert_dropout: ``"per_pair"`` (reference) or ``"shared"`` (one mask per node).
        pretraining: start in the pretraining phase (False: switched, with random unit memory
            and independently initialised experts).

    Attributes:
        update_memory: when False, training forwards skip the EMA (default True).
        grouped: force the grouped (True) or dense (False) expert dispatch; None (default)
            picks grouped on the CPU and wherever per-pair dropout is active.
        sparse: force (True) or forbid (False) the CSR path for inputs without gradient
            (:mod:`rbm_tune.models.sparse`; grouped dispatch and the pretraining layer); None
            (default) takes it on the CPU for inputs with at most 2 % non-zeros.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        num_experts: int,
        k: int,
        momentum: float = 0.9,
        vq_coef: float = 0.05,
        sim_coef: float = 0.01,
        load_balance_coef: float = 0.01,
        input_attention: bool = False,
        dropout: float = 0.0,
        expert_dropout: str = "per_pair",
        pretraining: bool = True,
    ) -> None:
        super().__init__(pretraining=pretraining)
        check_expert_args(num_experts=num_experts, k=k, expert_dropout=expert_dropout)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum={momentum} must lie in [0, 1]")
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.num_experts = num_experts
        self.k = k
        self.momentum = momentum
        self.vq_coef = vq_coef
        self.sim_coef = sim_coef
        self.load_balance_coef = load_balance_coef
        self.input_attention = input_attention
        self.expert_dropout = expert_dropout
        self.update_memory = True
        self.grouped: bool | None = None
        self.sparse: bool | None = None
        self.memory = nn.Parameter(torch.empty(num_experts, in_dim))
        self.experts = ExpertBank(num_experts, in_dim, out_dim)
        self.scale_logit = nn.Parameter(torch.empty(()))
        self.gate_logit = (
            nn.Parameter(torch.empty(num_experts, in_dim)) if input_attention else None
        )
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw experts, random unit memory, scale 2, gates 1.1 (the phase is kept)."""
        self.experts.reset_parameters()
        with torch.no_grad():
            self.memory.copy_(F.normalize(torch.randn_like(self.memory), dim=1))
        nn.init.constant_(self.scale_logit, math.log(2.0))
        if self.gate_logit is not None:
            nn.init.constant_(self.gate_logit, math.log(1.1))

    @torch.no_grad()
    def switch(self, memory: Tensor) -> None:
        """End pretraining: set the memory, copy expert 0 into all experts (spec §3.3).

        Args:
            memory: the new memory, shape (E, d_in) (normalised k-means centres).
        """
        self.memory.copy_(memory)
        self.experts.copy_first_to_all()
        self._pretraining = False

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Route, mix, update the memory and compute the aux loss for a chunk.

        Args:
            x: shape (B, d_in).

        Returns:
            Output (B, d_out) and the weighted aux loss (scalar tensor).
        """
        zero = x.new_zeros(())
        if self._pretraining:
            return self.experts.single(x, dropout=self.dropout, sparse=self.sparse), zero
        # Cosines as (x M̂ᵀ) / ||x||: F.normalize's max(||x||, 1e-12) without a B × d_in pass
        inv_norm = x.norm(dim=1, keepdim=True).clamp_min(1e-12).reciprocal()
        with torch.no_grad():
            m_hat = F.normalize(self.memory, dim=1)  # pre-update memory, a constant
        top_v, top_i = ((x @ m_hat.T) * inv_norm).topk(self.k, dim=1)  # (B, k) cosines
        w = torch.softmax(top_v, dim=1)
        gate = clamped_exp(self.gate_logit) if self.gate_logit is not None else None
        per_pair = self.expert_dropout == "per_pair"
        if self._use_grouped(x, per_pair):
            mix = partial(grouped_mix, bank=self.experts, sparse=self.sparse)
        else:
            mix = partial(self.experts.mix, sparse=self.sparse)
        y = mix(x, top_i, w.detach(), dropout=self.dropout, per_pair=per_pair, gate=gate)
        out = clamped_exp(self.scale_logit) * y
        if not self.training:
            return out, zero
        if self.update_memory:
            self._ema(x.detach(), inv_norm.detach(), m_hat, top_i, w.detach())
        aux = zero
        if self.vq_coef > 0:
            aux = aux + self.vq_coef * -(w * top_v).sum(1).mean()
        if self.sim_coef > 0:
            # Clone: the graph keeps the clone, not the parameter the next EMA overwrites.
            m = F.normalize(self.memory.clone(), dim=1)
            aux = aux + self.sim_coef * (m @ m.detach().T).mean()
        if self.load_balance_coef > 0:
            g = w.new_zeros(x.shape[0], self.num_experts).scatter(1, top_i, w)
            aux = aux + self.load_balance_coef * cv_squared(g.sum(0))
        return out, aux

    def _use_grouped(self, x: Tensor, per_pair: bool) -> bool:
        """Grouped dispatch on the CPU, and wherever per-pair dropout is active.

        Grouped costs k/E of the dense FLOPs (1/E of the dense per-pair ones) for one
        device-to-host sync; on an accelerator without per-pair dropout the dense single GEMM
        stays (no sync, static shapes).
        """
        if self.grouped is not None:
            return self.grouped
        active = per_pair and self.training and self.dropout.p > 0 and self.k > 1
        return x.device.type == "cpu" or active

    @torch.no_grad()
    def _ema(self, x: Tensor, inv_norm: Tensor, m_hat: Tensor, index: Tensor, w: Tensor) -> None:
        """``M ← β M̂ + (1 - β) Aᵀ X̂``, A = softmax over the batch of w among routed rows."""
        logits = torch.full(
            (x.shape[0], self.num_experts), -math.inf, dtype=w.dtype, device=w.device
        ).scatter(1, index, w)
        # A column of -inf (an expert no row chose) gives NaN: μ_e = 0 keeps its direction.
        a = torch.softmax(logits, dim=0).nan_to_num(nan=0.0)
        mu = (a * inv_norm).T @ x  # Aᵀ X̂ with X̂ = x / ||x||
        self.memory.copy_(self.momentum * m_hat + (1.0 - self.momentum) * mu)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.in_dim}, {self.out_dim}, num_experts={self.num_experts}"
            f", k={self.k}, input_attention={self.input_attention}, "
            f"pretraining={self._pretraining})"
        )


class RbM(ExpertStudent):
    """RbM student: every layer (input, hidden, output) is an :class:`RbMLayer` (spec §3.3).

    Between layers: optional norm -> ReLU (dropout sits inside the experts). Embedding = first
    layer's output, before norm/ReLU. aux = sum of the layers' aux losses.

    Args:
        in_dim: input feature width d.
        out_dim: number of classes C.
        num_layers: L.
        hidden_dim: h.
        dropout: input dropout of every expert (and of the pretraining linear layers).
        norm_type: ``"none"``, ``"batch"`` or ``"layer"``.
        num_experts: E per layer.
        k: experts per node, ``1 <= k < E``.
        momentum: β of the memory EMA.
        vq_coef: commitment loss weight.
        sim_coef: memory self-similarity loss weight.
        load_balance_coef: load-balance loss weight.
        input_attention: per-expert learned input gates.
        expert_dropout: ``"per_pair"`` (reference) or ``"shared"`` (fast, a deviation).
        pretraining: start as a plain MLP; call :meth:`end_pretraining` to switch.
        feature_encoder: create ``feature_encoder = Linear(D_emb, D_emb)`` (spec §4.6).

    Raises:
        ValueError: a hyperparameter is out of range, e.g. k >= num_experts.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        num_layers: int = 2,
        hidden_dim: int = 256,
        dropout: float = 0.5,
        norm_type: str = "none",
        num_experts: int = 4,
        k: int = 2,
        momentum: float = 0.9,
        vq_coef: float = 0.05,
        sim_coef: float = 0.01,
        load_balance_coef: float = 0.01,
        input_attention: bool = False,
        expert_dropout: str = "per_pair",
        pretraining: bool = True,
        feature_encoder: bool = False,
    ) -> None:
        super().__init__(
            in_dim,
            out_dim,
            partial(
                RbMLayer,
                num_experts=num_experts,
                k=k,
                momentum=momentum,
                vq_coef=vq_coef,
                sim_coef=sim_coef,
                load_balance_coef=load_balance_coef,
                input_attention=input_attention,
                dropout=dropout,
                expert_dropout=expert_dropout,
                pretraining=pretraining,
            ),
            num_layers=num_layers,
            hidden_dim=hidden_dim,
            dropout=dropout,
            norm_type=norm_type,
            num_experts=num_experts,
            k=k,
            expert_dropout=expert_dropout,
            feature_encoder=feature_encoder,
        )
        self.input_attention = input_attention

    @property
    def rbm_layers(self) -> list[RbMLayer]:
        """The layers, typed."""
        return cast("list[RbMLayer]", list(self.layers))

    @property
    def update_memory(self) -> bool:
        """Whether training forwards run the memory EMA (set on every layer)."""
        return all(layer.update_memory for layer in self.rbm_layers)

    @update_memory.setter
    def update_memory(self, value: bool) -> None:
        for layer in self.rbm_layers:
            layer.update_memory = value

    def end_pretraining(
        self,
        x_all: Tensor | None = None,
        *,
        batch_size: int = -1,
        seed: int = 0,
        kmeans_restarts: int = 10,
        kmeans_max_iter: int = 300,
        kmeans_max_rows: int = 0,
    ) -> None:
        """Switch every layer from a plain linear layer to RbM routing (spec §3.3).

        Layer by layer, in eval mode and without gradient: compute the layer's inputs for all
        rows of ``x_all`` through the already-switched earlier layers (chunks of
        ``batch_size``; no aux, no EMA) followed by norm and ReLU; L2-normalise them; k-means
        with E clusters (seed ``seed + l`` for layer l); memory = normalised centres; copy
        expert 0 into experts 1..E-1. Layers already switched are left alone. The previous
        train/eval mode is restored.

        Args:
            x_all: features of every training-graph node, shape (N, d); moved to the model's
                device (k-means runs there).
            batch_size: rows per chunk for the forward passes; -1 = all at once.
            seed: k-means seed.
            kmeans_restarts: k-means restarts.
            kmeans_max_iter: Lloyd iterations per restart.
            kmeans_max_rows: fit k-means on at most this many sampled rows (0: all).

        Raises:
            ValueError: ``x_all`` is missing or has fewer rows than experts.
        """
        if not self.is_pretraining:
            return
        if x_all is None:
            raise ValueError("RbM.end_pretraining needs x_all, the features of every node")
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                layers = self.rbm_layers
                h = x_all.to(layers[0].memory.device)
                for i, layer in enumerate(layers):
                    if layer.is_pretraining:
                        centres = kmeans(
                            h,
                            self.num_experts,
                            restarts=kmeans_restarts,
                            max_iter=kmeans_max_iter,
                            seed=seed + i,
                            max_rows=kmeans_max_rows,
                            normalize=True,  # after the subsample: no (N, d) normalised copy
                        )
                        layer.switch(F.normalize(centres, dim=1))
                    if i < self.num_layers - 1:
                        # the next inputs, chunk by chunk into one buffer (no list + cat)
                        step = batch_size if batch_size > 0 else h.shape[0]
                        nxt = h.new_empty(h.shape[0], layer.out_dim)
                        for start in range(0, h.shape[0], step):
                            nxt[start : start + step] = self._after(
                                i, layer(h[start : start + step])[0]
                            )
                        h = nxt
        finally:
            self.train(was_training)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.in_dim}, {self.out_dim}, num_layers={self.num_layers}, "
            f"hidden_dim={self.hidden_dim}, num_experts={self.num_experts}, k={self.k}, "
            f"input_attention={self.input_attention}, pretraining={self.is_pretraining})"
        )
