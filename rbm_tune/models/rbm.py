"""Routing-by-Memory layer and student (method §3.3), vectorised as method §10.3.

Deviations from the reference, all deliberate:

- Vectorised (method §10.3): the memory EMA as one matmul, the commitment loss without a loop
  over k, cosines as ``(x M̂ᵀ) / ||x||``. The experts and their two dispatch paths live in
  :mod:`rbm_tune.models.experts`: *grouped* (:func:`~rbm_tune.models.experts.grouped_mix`,
  k expert FLOPs per node, one device-to-host sync) on the CPU and wherever per-pair dropout
  is active, *dense* (:meth:`~rbm_tune.models.experts.ExpertBank.mix`, one GEMM over all E
  experts, no sync) on accelerators otherwise. ``RbMLayer.grouped`` forces one.
- Sparse inputs (:mod:`rbm_tune.models.sparse`): on the CPU, a layer input without gradient
  and with at most 2 % non-zeros (bag-of-words features) reaches the grouped experts as CSR
  rows (the first layer's from the caller, ``forward(x, csr=...)``), and per-pair dropout
  drops their non-zero values (the same distribution; a different random stream from the
  dense path's). ``RbMLayer.sparse`` forces or forbids it.
- ``expert_dropout="shared"`` (opt-in) shares one dropout mask per node across its experts;
  the default ``"per_pair"`` draws one per (node, chosen expert), as the reference does. The
  grouped path draws an ``nn.Dropout``'s per-pair masks itself on the gathered pair rows
  (:mod:`rbm_tune.models.dropout_mask`: the same distribution as ``bernoulli_``, a different
  random stream).
- The memory is overwritten in place (``copy_`` under ``no_grad``) and the self-similarity loss
  reads a clone of it, so a graph built by an earlier forward stays valid after the EMA.
- k-means runs in torch (:func:`rbm_tune.kmeans.kmeans`), seeded per layer with ``seed + l``;
  ``end_pretraining`` restores the previous train/eval mode (the reference always sets train).
- Before the switch the memory holds random unit vectors (the reference: zeros); it is unused
  until the switch overwrites it, and a student built with ``pretraining=False`` routes with it.
- The phase flag is part of the ``state_dict`` (extra state), see :class:`PhasedLayer`.
- ``update_memory = False`` skips the EMA (the "once per clean chunk" variant, method §10.4).
"""

from __future__ import annotations

import math
from functools import partial
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rbm_tune.kmeans import kmeans
from rbm_tune.losses import cv_squared
from rbm_tune.models.base import ExpertStudent, PhasedLayer, check_expert_args, clamped_exp

# the kernels' helpers under their names from before they left this module (old imports)
from rbm_tune.models.experts import ExpertBank, grouped_mix, mix_experts
from rbm_tune.models.sparse import CsrRows

__all__ = ["RbM", "RbMLayer", "grouped_mix"]


class RbMLayer(PhasedLayer):
    """One RbM layer: E experts, one memory vector per expert, a learned output scale.

    Forward after pretraining, for a chunk X (B × d_in) (method §3.3 steps 1-7):
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
        """End pretraining: set the memory, copy expert 0 into all experts (method §3.3).

        Args:
            memory: the new memory, shape (E, d_in) (normalised k-means centres).
        """
        self.memory.copy_(memory)
        self.experts.copy_first_to_all()
        self._pretraining = False

    def forward(self, x: Tensor, csr: CsrRows | None = None) -> tuple[Tensor, Tensor]:
        """Route, mix, update the memory and compute the aux loss for a chunk.

        Args:
            x: shape (B, d_in).
            csr: the CSR of ``x``'s rows, if the caller has it (the first layer on sparse
                features, :mod:`rbm_tune.models.sparse`): the experts multiply it.

        Returns:
            Output (B, d_out) and the weighted aux loss (scalar tensor).
        """
        zero = x.new_zeros(())
        if self._pretraining:
            single = self.experts.single(x, dropout=self.dropout, sparse=self.sparse, csr=csr)
            return single, zero
        # Cosines as (x M̂ᵀ) / ||x||: F.normalize's max(||x||, 1e-12) without a B × d_in pass
        inv_norm = x.norm(dim=1, keepdim=True).clamp_min(1e-12).reciprocal()
        with torch.no_grad():
            m_hat = F.normalize(self.memory, dim=1)  # pre-update memory, a constant
        top_v, top_i = ((x @ m_hat.T) * inv_norm).topk(self.k, dim=1)  # (B, k) cosines
        w = torch.softmax(top_v, dim=1)
        gate = clamped_exp(self.gate_logit) if self.gate_logit is not None else None
        per_pair = self.expert_dropout == "per_pair"
        y = mix_experts(
            x, top_i, w.detach(), bank=self.experts, dropout=self.dropout, per_pair=per_pair,
            grouped=self.grouped, training=self.training, gate=gate, sparse=self.sparse, csr=csr,
        )  # fmt: skip
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
    """RbM student: every layer (input, hidden, output) is an :class:`RbMLayer` (method §3.3).

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
        feature_encoder: create ``feature_encoder = Linear(D_emb, D_emb)`` (method §4.6).

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
        csr: CsrRows | None = None,
        batch_size: int = -1,
        seed: int = 0,
        kmeans_restarts: int = 10,
        kmeans_max_iter: int = 300,
        kmeans_max_rows: int = 0,
    ) -> None:
        """Switch every layer from a plain linear layer to RbM routing (method §3.3).

        Layer by layer, in eval mode and without gradient: compute the layer's inputs for all
        rows of ``x_all`` through the already-switched earlier layers (chunks of
        ``batch_size``; no aux, no EMA) followed by norm and ReLU; L2-normalise them; k-means
        with E clusters (seed ``seed + l`` for layer l); memory = normalised centres; copy
        expert 0 into experts 1..E-1. Layers already switched are left alone. The previous
        train/eval mode is restored.

        Args:
            x_all: features of every training-graph node, shape (N, d); moved to the model's
                device (k-means runs there).
            csr: the CSR of ``x_all``'s rows (on its device), if the caller has it: the first
                layer's forwards multiply its blocks (:mod:`rbm_tune.models.sparse`).
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
                            stop = min(start + step, h.shape[0])
                            rows = csr.block(start, stop) if i == 0 and csr is not None else None
                            nxt[start:stop] = self._after(i, layer(h[start:stop], rows)[0])
                        h = nxt
        finally:
            self.train(was_training)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.in_dim}, {self.out_dim}, num_layers={self.num_layers}, "
            f"hidden_dim={self.hidden_dim}, num_experts={self.num_experts}, k={self.k}, "
            f"input_attention={self.input_attention}, pretraining={self.is_pretraining})"
        )
