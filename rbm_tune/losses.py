"""Loss terms of student training (method §4.2, §4.6, §3.2): pure functions, no state.

Every function returns the *unweighted* term. The weights are applied by the caller
(:mod:`rbm_tune.student_trainer`): ``label_weight`` (the paper's λ) times :func:`label_loss`,
``1 - label_weight`` times the KD term, ``feat_distill_weight`` times
:func:`similarity_loss`. The students' own auxiliary losses already carry their coefficients.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "cv_squared",
    "kd_hinton",
    "kd_reference",
    "label_loss",
    "similarity_loss",
]


def label_loss(logp: Tensor, y: Tensor) -> Tensor:
    """Mean negative log-likelihood of the true classes (method §4.2, L_CE without λ).

    Args:
        logp: student log-probabilities (log-softmax of logits), shape (B, C).
        y: class indices, shape (B,), dtype long.

    Returns:
        Scalar tensor: ``mean_i -logp[i, y_i]``.
    """
    return F.nll_loss(logp, y)


def kd_reference(logp_student: Tensor, logp_teacher: Tensor, temperature: float) -> Tensor:
    """The reference implementation's KD term, exactly (method §4.2, L_KD without 1 - λ).

    ``F.kl_div(logp_s / τ, logp_t / τ, log_target=True, reduction="batchmean")``, i.e.
    ``1/B Σ_i Σ_c p_T^{1/τ} (log p_T - log p_S) / τ``. τ divides *log-probabilities*, so the
    target is unnormalised for τ ≠ 1 and there is no τ² factor; at τ = 1 this is KL(p_T ‖ p_S)
    averaged over the batch. Kept as the faithful default because the configs were tuned with it
    (method §10.1 item 2).

    Args:
        logp_student: student log-softmax outputs, shape (B, C).
        logp_teacher: teacher log-probabilities of the matched nodes, shape (B, C).
        temperature: τ > 0.

    Returns:
        Scalar tensor.
    """
    return F.kl_div(
        logp_student / temperature,
        logp_teacher / temperature,
        log_target=True,
        reduction="batchmean",
    )


def kd_hinton(logits_student: Tensor, logp_teacher: Tensor, temperature: float) -> Tensor:
    """Textbook (Hinton) KD: ``τ² · KL(softmax(t/τ) ‖ softmax(s/τ))``, batch mean (§10.4 variant).

    The teacher logits ``t`` are recovered from its log-probabilities: ``log p_T`` differs from
    the logits by a per-row constant, which the softmax ignores.

    Args:
        logits_student: student logits, shape (B, C).
        logp_teacher: teacher log-probabilities, shape (B, C).
        temperature: τ > 0.

    Returns:
        Scalar tensor.
    """
    log_q = F.log_softmax(logits_student / temperature, dim=-1)
    log_p = F.log_softmax(logp_teacher / temperature, dim=-1)
    kl = F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")
    return kl * temperature**2


def cv_squared(v: Tensor) -> Tensor:
    """Squared coefficient of variation ``Var(v) / (mean(v)² + 1e-10)`` (method §3.2).

    Uses the unbiased variance, as the reference does; a one-element ``v`` gives 0.

    Args:
        v: shape (E,), e.g. per-expert importance or load.

    Returns:
        Scalar float32 tensor.
    """
    v = v.float()
    if v.numel() == 1:
        return v.new_zeros(())
    return v.var() / (v.mean() ** 2 + 1e-10)


def similarity_loss(z_student: Tensor, h_teacher: Tensor) -> Tensor:
    """Gram-matrix similarity distillation term ``mean((Z Zᵀ - H Hᵀ)²)`` (method §4.6).

    The Gram matrices are B × B, so the student and teacher widths may differ.

    Args:
        z_student: encoded student embeddings (after the feature encoder), shape (B, d_s).
        h_teacher: teacher embeddings of the same nodes, shape (B, d_t).

    Returns:
        Scalar tensor (without ``feat_distill_weight``).
    """
    s_student = z_student @ z_student.T
    s_teacher = h_teacher @ h_teacher.T
    return (s_student - s_teacher).pow(2).mean()
