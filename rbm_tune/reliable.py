"""KRD reliable sampling of distillation pairs (method §4.4, §10.1 item 10).

Wu et al. (2023), "Quantifying the Knowledge in GNNs for Reliable Distillation into MLPs": a
node whose teacher prediction changes much under feature noise (large entropy shift δ) is an
unreliable target, so the edges into it are sampled less often. The sampling power α adapts
during training to how well the student agrees with the teacher as a function of δ.

Deviations from the reference, both where the reference would break: when the agreement ratio
is constant over the bins (its min-max normalisation divides 0 by 0 and α becomes NaN) or the
curve fit fails or returns a non-finite value, α is kept unchanged.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from scipy.optimize import OptimizeWarning, curve_fit
from torch import Tensor

__all__ = ["ReliableSampler", "entropy_shift"]


def entropy_shift(logits: Tensor, noisy_logits: Tensor) -> Tensor:
    """Normalised entropy shift δ of the teacher under feature noise (§4.4).

    ``δ_i = |H(p̃_i) - H(p_i)| / max_j |H(p̃_j) - H(p_j)|`` with ``p = softmax(logits)``,
    ``p̃ = softmax(noisy_logits)`` and H the Shannon entropy in nats. If no entropy moves at
    all (the maximum is 0), every δ is 0.

    Args:
        logits: teacher logits on the clean features, shape (N, C).
        noisy_logits: teacher logits on the features plus N(0, 1) noise, shape (N, C).

    Returns:
        δ, shape (N,), in [0, 1], same dtype and device as ``logits``.
    """
    if logits.dim() != 2 or logits.shape != noisy_logits.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and noisy_logits {tuple(noisy_logits.shape)} must "
            "both have shape (N, C); pass the teacher outputs for the same nodes"
        )

    def entropy(z: Tensor) -> Tensor:
        log_p = torch.log_softmax(z, dim=-1)
        return -(log_p.exp() * log_p).sum(-1)

    shift = (entropy(noisy_logits.to(logits.dtype)) - entropy(logits)).abs()
    top = shift.max() if shift.numel() else shift.new_zeros(())
    return torch.where(top > 0, shift / top.clamp(min=torch.finfo(shift.dtype).tiny), 0.0)


class ReliableSampler:
    """Per-epoch KRD sampling of (student input, teacher target) pairs with an adaptive power.

    Each call of :meth:`sample_pairs` keeps every edge (u, v) of the training graph, self-loops
    excluded, with probability ``ρ_v = 1 - δ_v^α`` (v is the node whose teacher output is the
    target) and appends the self pairs (i, i) of all nodes. :meth:`update` refits α from the
    teacher/student agreement after each evaluation (§4.4). Sampling runs on ``delta``'s device;
    the fit runs on the host with ``bins`` numbers per histogram.

    Args:
        delta: entropy shift per node from :func:`entropy_shift`, shape (N,), in [0, 1].
        edge_index: training-graph edges (source u, target v), shape (2, E).
        num_nodes: N.
        init_power: initial α (``init_power``).
        momentum: m in ``α ← m·α + (1 - m)·a_fit`` (``momentum``), in [0, 1].
        min_update_epoch: the first :meth:`update` call that changes α (``min_update_epoch``).
        update_rate: after that, α changes on every ``update_rate``-th call (``update_rate``).
        bins: equal-width δ bins on [0, 1] for the agreement histograms (``bins_num``).
    """

    def __init__(
        self,
        delta: Tensor,
        edge_index: Tensor,
        num_nodes: int,
        *,
        init_power: float = 1.0,
        momentum: float = 0.99,
        min_update_epoch: int = 50,
        update_rate: int = 1,
        bins: int = 50,
    ) -> None:
        if delta.dim() != 1 or delta.numel() != num_nodes:
            raise ValueError(
                f"delta has shape {tuple(delta.shape)}, expected ({num_nodes},); pass one "
                "entropy shift per training-graph node"
            )
        if not bool(((delta >= 0) & (delta <= 1)).all()):
            raise ValueError("delta must lie in [0, 1] (no NaN); build it with entropy_shift()")
        if edge_index.dim() != 2 or edge_index.size(0) != 2:
            raise ValueError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
        if edge_index.numel() and (edge_index.min() < 0 or edge_index.max() >= num_nodes):
            raise ValueError(f"edge_index holds node ids outside [0, {num_nodes}); fix num_nodes")
        if not math.isfinite(init_power):
            raise ValueError(f"init_power={init_power} must be a finite number")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum={momentum} must lie in [0, 1]")
        if min_update_epoch < 0 or update_rate < 1 or bins < 2:
            raise ValueError(
                f"need min_update_epoch >= 0, update_rate >= 1 and bins >= 2; got "
                f"{min_update_epoch}, {update_rate}, {bins}"
            )
        self.num_nodes = num_nodes
        self.momentum = momentum
        self.min_update_epoch = min_update_epoch
        self.update_rate = update_rate
        self.bins = bins
        self._power = float(init_power)
        self._calls = 0
        self.delta = delta.detach()
        edge_index = edge_index.to(delta.device).long()
        self.edge_index = edge_index[:, edge_index[0] != edge_index[1]]
        # Bin of every node, as np.histogram(delta, bins, range=(0, 1)) assigns it (the last bin
        # is closed): computed once so each update only moves 2 x bins counts to the host.
        edges = np.linspace(0.0, 1.0, bins + 1)
        host_delta = self.delta.double().cpu().numpy()
        bin_of = np.clip(np.searchsorted(edges, host_delta, side="right") - 1, 0, bins - 1)
        self._bin = torch.from_numpy(bin_of).to(delta.device)
        # Reference quirk (§10.1 item 10): x is the left bin edge + 0.05, not the bin centre.
        self._x = edges[:-1] + 0.05

    @property
    def power(self) -> float:
        """The current sampling power α."""
        return self._power

    def sample_pairs(self, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw this epoch's distillation pairs (§4.4).

        Args:
            generator: random source on ``delta``'s device; ``None`` uses torch's global one.

        Returns:
            ``(u, v)``, each of shape (E_kept + N,), long: the kept edges in stored order, then
            the self pairs (i, i) for i = 0..N-1. Feed the student node u, match the teacher on
            node v.
        """
        src, dst = self.edge_index
        keep_prob = 1.0 - self.delta.pow(self._power)
        draw = torch.rand(dst.numel(), generator=generator, device=dst.device)
        kept = draw < keep_prob[dst]
        nodes = torch.arange(self.num_nodes, device=dst.device)
        return torch.cat([src[kept], nodes]), torch.cat([dst[kept], nodes])

    def update(self, teacher_pred: Tensor, student_pred: Tensor) -> None:
        """Count one evaluation and, when due, refit the power α (§4.4).

        The call counter starts at 0 and is incremented first; α changes on the calls where
        ``count >= min_update_epoch`` and ``(count - min_update_epoch) % update_rate == 0``.
        Nodes are split into agreeing and disagreeing ones, their δ are histogrammed into
        ``bins`` bins, ``r_b = agree_b / (agree_b + disagree_b + 1e-6)`` is min-max normalised,
        ``f(x) = 1 - x^a`` is fitted by least squares to (x_b, r_b) from a = α, and
        ``α ← m·α + (1 - m)·a_fit``. A constant r or a failed fit leaves α unchanged.

        Args:
            teacher_pred: teacher class per node, shape (N,), or its scores, shape (N, C).
            student_pred: student class per node, shape (N,), or its scores, shape (N, C).
        """
        self._calls += 1
        due = self._calls - self.min_update_epoch
        if due < 0 or due % self.update_rate:
            return
        teacher = teacher_pred.argmax(-1) if teacher_pred.dim() == 2 else teacher_pred
        student = student_pred.argmax(-1) if student_pred.dim() == 2 else student_pred
        if teacher.shape != (self.num_nodes,) or student.shape != (self.num_nodes,):
            raise ValueError(
                f"predictions must cover all {self.num_nodes} training-graph nodes; got "
                f"{tuple(teacher_pred.shape)} and {tuple(student_pred.shape)}"
            )
        agree = (teacher.to(self._bin.device) == student.to(self._bin.device)).long()
        total = torch.bincount(self._bin, minlength=self.bins)
        agreeing = torch.bincount(self._bin, weights=agree.double(), minlength=self.bins)
        hist_agree = agreeing.cpu().numpy()
        hist_disagree = total.cpu().numpy() - hist_agree
        a_fit = self._fit(hist_agree / (hist_agree + hist_disagree + 1e-6))
        if a_fit is not None:
            self._power = self.momentum * self._power + (1.0 - self.momentum) * a_fit

    def _fit(self, ratio: np.ndarray) -> float | None:
        spread = ratio.max() - ratio.min()
        if not spread > 0:
            return None  # the reference's 0/0: keep α
        target = (ratio - ratio.min()) / spread
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                params, _ = curve_fit(
                    lambda x, a: 1.0 - np.power(x, a), self._x, target, p0=[self._power]
                )
        except (RuntimeError, ValueError):
            return None
        a_fit = float(params[0])
        return a_fit if math.isfinite(a_fit) else None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_nodes={self.num_nodes}, "
            f"num_edges={self.edge_index.size(1)}, power={self._power:.4g}, "
            f"momentum={self.momentum}, min_update_epoch={self.min_update_epoch}, "
            f"update_rate={self.update_rate}, bins={self.bins})"
        )
