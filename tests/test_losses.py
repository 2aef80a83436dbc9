"""Loss terms on hand-sized tensors (method §4.2, §4.6, §3.2; acceptance check §11.3)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rbm_tune.losses import cv_squared, kd_hinton, kd_reference, label_loss, similarity_loss

LOGITS_S = torch.tensor(
    [[1.0, 0.5, -0.3, 0.0], [0.2, 0.1, 2.0, -1.0], [-0.5, 0.3, 0.3, 1.5]], dtype=torch.float64
)
LOGITS_T = torch.tensor(
    [[2.0, -1.0, 0.0, 0.5], [0.0, 0.0, 1.0, 0.0], [1.0, 1.0, -2.0, 0.3]], dtype=torch.float64
)


def _kl_by_hand(p: list[list[float]], log_p: list[list[float]], log_q: list[list[float]]) -> float:
    """Σ_i Σ_c p_ic (log p_ic - log q_ic) / B with plain Python loops."""
    total = 0.0
    for row_p, row_lp, row_lq in zip(p, log_p, log_q):
        total += sum(pc * (lpc - lqc) for pc, lpc, lqc in zip(row_p, row_lp, row_lq))
    return total / len(p)


def test_label_loss_is_mean_nll() -> None:
    logp = F.log_softmax(LOGITS_S, dim=-1)
    y = torch.tensor([0, 2, 3])
    expected = -(logp[0, 0] + logp[1, 2] + logp[2, 3]) / 3
    assert torch.allclose(label_loss(logp, y), expected)


def test_kd_reference_at_tau_one_is_kl_teacher_student() -> None:
    logp_s = F.log_softmax(LOGITS_S, dim=-1)
    logp_t = F.log_softmax(LOGITS_T, dim=-1)
    expected = _kl_by_hand(logp_t.exp().tolist(), logp_t.tolist(), logp_s.tolist())
    assert kd_reference(logp_s, logp_t, 1.0).item() == pytest.approx(expected, rel=1e-12)
    assert kd_hinton(LOGITS_S, logp_t, 1.0).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("tau", [0.6, 1.29])
def test_kd_reference_matches_spec_expression(tau: float) -> None:
    logp_s = F.log_softmax(LOGITS_S, dim=-1)
    logp_t = F.log_softmax(LOGITS_T, dim=-1)
    # method §4.2: 1/(Bτ) Σ_i Σ_c p_T^{1/τ} (log p_T - log p_S); the (1 - λ) is the caller's.
    total = 0.0
    for i in range(3):
        for c in range(4):
            lt, ls = logp_t[i, c].item(), logp_s[i, c].item()
            total += math.exp(lt / tau) * (lt - ls)
    expected = total / (3 * tau)
    got = kd_reference(logp_s, logp_t, tau).item()
    assert got == pytest.approx(expected, rel=1e-12)
    assert kd_hinton(LOGITS_S, logp_t, tau).item() != pytest.approx(got, rel=1e-3)


def test_kd_hinton_matches_softened_kl_times_tau_squared() -> None:
    tau = 2.0
    logp_t = F.log_softmax(LOGITS_T, dim=-1)
    log_p = F.log_softmax(LOGITS_T / tau, dim=-1)  # teacher logits recovered up to a constant
    log_q = F.log_softmax(LOGITS_S / tau, dim=-1)
    expected = tau**2 * _kl_by_hand(log_p.exp().tolist(), log_p.tolist(), log_q.tolist())
    assert kd_hinton(LOGITS_S, logp_t, tau).item() == pytest.approx(expected, rel=1e-12)


def test_cv_squared_known_value() -> None:
    # mean 2.5, unbiased variance 5/3 -> (5/3) / 6.25
    v = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert cv_squared(v).item() == pytest.approx((5 / 3) / (6.25 + 1e-10), rel=1e-6)
    assert cv_squared(torch.tensor([3.0, 3.0, 3.0])).item() == 0.0
    assert cv_squared(torch.tensor([7.0])).item() == 0.0


def test_similarity_loss_known_value() -> None:
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    h = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    # Z Zᵀ = I, H Hᵀ = [[2, 0], [0, 0]] -> differences [[-1, 0], [0, 1]] -> mean of squares 0.5
    assert similarity_loss(z, h).item() == pytest.approx(0.5)
