"""Vanilla sparse MoE student, as the reference wires it (method §3.2).

Deviations from the reference, all deliberate:

- The dispatch is the RbM layer's (method §10.3,
  :func:`rbm_tune.models.experts.mix_experts`): *grouped* on the CPU and wherever per-pair
  dropout is active (:func:`rbm_tune.models.experts.grouped_mix`: each expert multiplies only
  its own rows, k + 1 expert FLOPs per node, one device-to-host sync), otherwise *dense*
  (:meth:`rbm_tune.models.experts.ExpertBank.mix`: every expert on the whole chunk in one GEMM,
  mixed with ``G = π ⊙ mask``, no sync). Both are the same function; with per-pair dropout
  they draw their masks from different random streams. ``MoELayer.grouped`` forces one.
- ``router="noisy_topk"`` offers the real Shazeer-style router the reference defines but never
  uses (method §10.1 item 9); the default ``"reference"`` is the cosine router actually wired.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rbm_tune.config import ROUTERS
from rbm_tune.losses import cv_squared
from rbm_tune.models.base import ExpertStudent, PhasedLayer, check_expert_args, clamped_exp
from rbm_tune.models.experts import ExpertBank, mix_experts
from rbm_tune.models.sparse import CsrRows

__all__ = ["ROUTERS", "CosineRouter", "MoE", "MoELayer", "NoisyTopKRouter", "Route"]


class Route(NamedTuple):
    """A router's decision for a chunk of B rows.

    Attributes:
        experts: chosen experts, shape (B, k'), long.
        weight: their mixing weights, shape (B, k'), differentiable.
        importance: per-expert importance, shape (E,).
        load: per-expert load, shape (E,).
    """

    experts: Tensor
    weight: Tensor
    importance: Tensor
    load: Tensor


class CosineRouter(nn.Module):
    """The router the reference actually uses (method §3.2), despite its "noisy top-k" label.

    ``ℓ = s_r · norm(P x)ᵀ norm(K)``; in training ``ℓ += ε`` with ε ~ N(0, (1/E)²) (fixed std);
    the top ``min(k + 1, E)`` experts are chosen and weighted by ``softmax(ℓ)`` over **all** E
    experts (not renormalised). importance = Σ_i π_i, load = Σ_i mask_i (a count).

    Args:
        in_dim: d_in.
        router_dim: width h of the projection P (the student's hidden_dim at every layer).
        num_experts: E.
        k: the configured k; k + 1 experts are used, as in the reference.
    """

    def __init__(self, in_dim: int, router_dim: int, num_experts: int, k: int) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.num_selected = min(k + 1, num_experts)
        self.proj = nn.Linear(in_dim, router_dim)
        self.keys = nn.Parameter(torch.empty(router_dim, num_experts))
        self.scale_logit = nn.Parameter(torch.empty(()))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Projection like ``nn.Linear``, keys N(0, 0.01²), scale 2."""
        self.proj.reset_parameters()
        nn.init.normal_(self.keys, 0.0, 0.01)
        nn.init.constant_(self.scale_logit, math.log(2.0))

    def forward(self, x: Tensor) -> Route:
        """Route a chunk x of shape (B, d_in)."""
        z = F.normalize(self.proj(x), dim=1)
        logits = z @ F.normalize(self.keys, dim=0) * clamped_exp(self.scale_logit)
        if self.training:
            logits = logits + torch.randn_like(logits) / self.num_experts
        index = logits.topk(self.num_selected, dim=-1).indices
        probs = torch.softmax(logits, dim=-1)
        mask = torch.zeros_like(probs).scatter(1, index, 1.0)
        return Route(index, probs.gather(1, index), probs.sum(0), mask.sum(0))


class NoisyTopKRouter(nn.Module):
    """Shazeer et al. (2017) noisy top-k gating, the other router (method §3.2, §10.1 item 9).

    ``H = x W_g + ξ · (softplus(x W_n) + 0.01)`` with ξ ~ N(0, 1) in training only; the top k
    entries of H are kept and renormalised with a softmax. importance = Σ_i G_i; load (training)
    is Shazeer's smooth estimate Σ_i Φ((x W_g - threshold) / noise_std) with the standard normal
    CDF Φ (std 1, not the reference's 1/E); in eval mode it is the selection count. W_g and W_n
    start at zero, as in the paper.

    Args:
        in_dim: d_in.
        num_experts: E.
        k: experts per row (k < E).
    """

    def __init__(self, in_dim: int, num_experts: int, k: int) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.k = k
        self.w_gate = nn.Parameter(torch.zeros(in_dim, num_experts))
        self.w_noise = nn.Parameter(torch.zeros(in_dim, num_experts))

    def reset_parameters(self) -> None:
        """Zero both weight matrices."""
        nn.init.zeros_(self.w_gate)
        nn.init.zeros_(self.w_noise)

    def forward(self, x: Tensor) -> Route:
        """Route a chunk x of shape (B, d_in)."""
        k = self.k
        clean = x @ self.w_gate
        if not self.training:
            top_val, index = clean.topk(k, dim=-1)
            weight = torch.softmax(top_val, dim=-1)
            gates = torch.zeros_like(clean).scatter(1, index, weight)
            load = (gates > 0).to(clean.dtype).sum(0)
            return Route(index, weight, gates.sum(0), load)
        noise_std = F.softplus(x @ self.w_noise) + 1e-2
        noisy = clean + torch.randn_like(clean) * noise_std
        top_val, top_idx = noisy.topk(k + 1, dim=-1)
        index = top_idx[:, :k]
        weight = torch.softmax(top_val[:, :k], dim=-1)
        gates = torch.zeros_like(clean).scatter(1, index, weight)
        # P(expert e is still chosen if its own noise were redrawn): compare its clean logit
        # with the k-th largest of the *other* noisy logits.
        threshold_in = top_val[:, k : k + 1]
        threshold_out = top_val[:, k - 1 : k]
        is_in = noisy > threshold_in
        prob_in = torch.special.ndtr((clean - threshold_in) / noise_std)
        prob_out = torch.special.ndtr((clean - threshold_out) / noise_std)
        load = torch.where(is_in, prob_in, prob_out).sum(0)
        return Route(index, weight, gates.sum(0), load)


def _slice_experts(batch: int, num_experts: int, device: torch.device) -> Tensor:
    """Expert of each row when a chunk is cut into E contiguous slices (``tensor_split``)."""
    q, r = divmod(batch, num_experts)
    rows = torch.arange(batch, device=device)
    head = r * (q + 1)
    return torch.where(rows < head, rows // (q + 1), r + (rows - head) // max(q, 1))


class MoELayer(PhasedLayer):
    """One MoE layer: E experts ``Dropout(p) -> Linear(d_in, d_out)``, a router, a scale.

    Output ``y = s_l · Σ_{chosen e} π_e · expert_e(x)`` with ``s_l = exp(min(θ_l, ln 100))``,
    θ_l init ln 2. During pretraining the chunk is cut into E contiguous slices, slice e goes to
    expert e with weight 1 (no router, no aux); ``s_l`` is applied in both phases, as in the
    reference. Balance loss ``coef · (CV²(importance) + CV²(load))`` in training mode after
    pretraining, skipped when coef = 0.

    Args:
        in_dim: d_in.
        out_dim: d_out.
        num_experts: E.
        k: the configured k.
        router_dim: projection width of the reference router.
        dropout: input dropout of every expert.
        load_balance_coef: weight of the balance loss.
        router: ``"reference"`` (:class:`CosineRouter`) or ``"noisy_topk"``.
        expert_dropout: ``"per_pair"`` or ``"shared"`` (see :meth:`ExpertBank.mix`).
        pretraining: start in the pretraining phase.

    Attributes:
        grouped: force the grouped (True) or dense (False) expert dispatch; None (default)
            picks grouped on the CPU and wherever per-pair dropout is active (as
            :class:`rbm_tune.models.rbm.RbMLayer`).
        sparse: force (True) or forbid (False) the CSR path for inputs without gradient; None
            (default) takes it on the CPU for inputs with at most 2 % non-zeros.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        num_experts: int,
        k: int,
        router_dim: int,
        dropout: float = 0.0,
        load_balance_coef: float = 0.01,
        router: str = "reference",
        expert_dropout: str = "per_pair",
        pretraining: bool = True,
    ) -> None:
        super().__init__(pretraining=pretraining)
        check_expert_args(num_experts=num_experts, k=k, expert_dropout=expert_dropout)
        if router not in ROUTERS:
            raise ValueError(f"router={router!r} is not one of {list(ROUTERS)}")
        self.num_experts = num_experts
        self.k = k
        self.load_balance_coef = load_balance_coef
        self.expert_dropout = expert_dropout
        self.experts = ExpertBank(num_experts, in_dim, out_dim)
        self.dropout = nn.Dropout(dropout)
        self.router: CosineRouter | NoisyTopKRouter = (
            CosineRouter(in_dim, router_dim, num_experts, k)
            if router == "reference"
            else NoisyTopKRouter(in_dim, num_experts, k)
        )
        self.scale_logit = nn.Parameter(torch.empty(()))
        self.grouped: bool | None = None
        self.sparse: bool | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw experts and router; scale back to 2."""
        self.experts.reset_parameters()
        self.router.reset_parameters()
        nn.init.constant_(self.scale_logit, math.log(2.0))

    def end_pretraining(self) -> None:
        """Switch the learned router on; nothing is copied or re-initialised (method §3.2)."""
        self._pretraining = False

    def forward(self, x: Tensor, csr: CsrRows | None = None) -> tuple[Tensor, Tensor]:
        """Mix the experts for a chunk.

        Args:
            x: shape (B, d_in).
            csr: the CSR of ``x``'s rows, if the caller has it (the first layer on sparse
                features, :mod:`rbm_tune.models.sparse`): the experts multiply it.

        Returns:
            Output (B, d_out) and the weighted balance loss (scalar tensor).
        """
        zero = x.new_zeros(())
        scale = clamped_exp(self.scale_logit)
        mix = partial(
            mix_experts, bank=self.experts, dropout=self.dropout, grouped=self.grouped,
            training=self.training, sparse=self.sparse, csr=csr,
        )  # fmt: skip
        if self._pretraining:
            index = _slice_experts(x.shape[0], self.num_experts, x.device).unsqueeze(1)
            y = mix(x, index, x.new_ones(x.shape[0], 1), per_pair=False)
            return scale * y, zero
        route = self.router(x)
        y = mix(x, route.experts, route.weight, per_pair=self.expert_dropout == "per_pair")
        aux = zero
        if self.training and self.load_balance_coef > 0:
            balance = cv_squared(route.importance) + cv_squared(route.load)
            aux = self.load_balance_coef * balance
        return scale * y, aux


class MoE(ExpertStudent):
    """Vanilla MoE student: every layer (input, hidden, output) is a :class:`MoELayer`.

    Between layers: optional norm -> ReLU (the dropout sits inside the experts, so it also
    applies to the raw input features). Embedding = first layer's output, before norm/ReLU.

    Args:
        in_dim: input feature width d.
        out_dim: number of classes C.
        num_layers: L.
        hidden_dim: hidden width h (also the router projection width at every layer).
        dropout: input dropout of every expert.
        norm_type: ``"none"``, ``"batch"`` or ``"layer"``.
        num_experts: E per layer.
        k: the configured k (the reference router uses k + 1 experts).
        load_balance_coef: weight of each layer's balance loss.
        router: ``"reference"`` or ``"noisy_topk"``.
        expert_dropout: ``"per_pair"`` (reference) or ``"shared"`` (fast, a deviation).
        pretraining: start in the slice-dispatch pretraining phase (call ``end_pretraining``).
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
        load_balance_coef: float = 0.01,
        router: str = "reference",
        expert_dropout: str = "per_pair",
        pretraining: bool = True,
        feature_encoder: bool = False,
    ) -> None:
        super().__init__(
            in_dim,
            out_dim,
            partial(
                MoELayer,
                num_experts=num_experts,
                k=k,
                router_dim=hidden_dim,
                dropout=dropout,
                load_balance_coef=load_balance_coef,
                router=router,
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
        self.router_name = router

    @property
    def moe_layers(self) -> list[MoELayer]:
        """The layers, typed."""
        return cast("list[MoELayer]", list(self.layers))

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
        """Switch every layer's router on (method §3.2); the arguments are ignored."""
        for layer in self.moe_layers:
            layer.end_pretraining()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.in_dim}, {self.out_dim}, num_layers={self.num_layers}, "
            f"hidden_dim={self.hidden_dim}, num_experts={self.num_experts}, k={self.k}, "
            f"router={self.router_name!r}, pretraining={self.is_pretraining})"
        )
