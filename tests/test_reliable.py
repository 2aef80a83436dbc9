"""KRD reliable sampling (method §4.4): entropy shift, pair sampling, power update."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import curve_fit

from rbm_tune.reliable import ReliableSampler, entropy_shift

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def entropy2(p: float) -> float:
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def ring(n: int) -> torch.Tensor:
    """Both directions of the cycle 0-1-...-(n-1)-0."""
    src = torch.arange(n)
    dst = (src + 1) % n
    return torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], dim=1)


def test_entropy_shift_hand_computed() -> None:
    ln3, ln9 = math.log(3.0), math.log(9.0)
    logits = torch.tensor([[0.0, 0.0], [1.0, 2.0], [ln9, 0.0]], dtype=torch.float64)
    noisy = torch.tensor([[ln3, 0.0], [1.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    shift0 = math.log(2) - entropy2(0.75)  # H(1/2, 1/2) -> H(3/4, 1/4)
    shift2 = math.log(2) - entropy2(0.9)  # H(9/10, 1/10) -> H(1/2, 1/2), the largest
    expected = torch.tensor([shift0 / shift2, 0.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(entropy_shift(logits, noisy), expected)


def test_entropy_shift_without_any_shift_is_zero_not_nan() -> None:
    logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(entropy_shift(logits, logits.clone()), torch.zeros(5))


def test_entropy_shift_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        entropy_shift(torch.zeros(4, 3), torch.zeros(4, 2))


@pytest.mark.parametrize("device", DEVICES)
def test_zero_delta_keeps_every_edge_and_drops_self_loops(device: str) -> None:
    edges = torch.tensor([[0, 1, 2, 2, 3, 1], [1, 0, 2, 3, 2, 1]])  # (2, 2), (1, 1): self-loops
    sampler = ReliableSampler(torch.zeros(4, device=device), edges, 4)
    u, v = sampler.sample_pairs(torch.Generator(device=device).manual_seed(0))
    assert u.device.type == device and v.device.type == device
    assert u.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert v.tolist() == [1, 0, 3, 2, 0, 1, 2, 3]


@pytest.mark.parametrize("device", DEVICES)
def test_full_delta_at_power_one_keeps_only_self_pairs(device: str) -> None:
    sampler = ReliableSampler(torch.ones(6, device=device), ring(6), 6, init_power=1.0)
    u, v = sampler.sample_pairs()
    assert u.tolist() == v.tolist() == list(range(6))


def test_keep_probability_uses_the_target_node() -> None:
    delta = torch.tensor([1.0, 0.0, 0.0])  # node 0's teacher output is unreliable
    edges = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    u, v = ReliableSampler(delta, edges, 3).sample_pairs()
    assert list(zip(u.tolist(), v.tolist())) == [(0, 1), (1, 2), (2, 1), (0, 0), (1, 1), (2, 2)]


def test_half_reliable_edges_are_kept_about_half_the_time() -> None:
    n = 1000
    sampler = ReliableSampler(torch.full((n,), 0.5), ring(n), n, init_power=1.0)
    u, _ = sampler.sample_pairs(torch.Generator().manual_seed(0))
    kept = u.numel() - n
    assert 0.45 * 2 * n < kept < 0.55 * 2 * n
    again, _ = sampler.sample_pairs(torch.Generator().manual_seed(0))
    assert torch.equal(u, again)


def spread_delta(n: int = 100) -> torch.Tensor:
    return (torch.arange(n, dtype=torch.float64) + 0.5) / n  # two nodes in each of 50 bins


def agree_below(delta: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    teacher = torch.zeros(delta.numel(), dtype=torch.long)
    return teacher, (delta >= threshold).long()  # student agrees exactly where delta is low


def test_update_waits_for_min_update_epoch_then_follows_update_rate() -> None:
    delta = spread_delta()
    sampler = ReliableSampler(delta, ring(100), 100, min_update_epoch=4, update_rate=2)
    teacher, student = agree_below(delta, 0.5)
    powers = []
    for _ in range(7):
        sampler.update(teacher, student)
        powers.append(sampler.power)
    assert powers[:3] == [1.0, 1.0, 1.0]  # calls 1-3: nothing
    assert powers[3] != 1.0  # call 4 = min_update_epoch: first update
    assert powers[4] == powers[3] and powers[5] != powers[4] and powers[6] == powers[5]


@pytest.mark.parametrize(("threshold", "direction"), [(0.5, 1), (0.1, -1)])
def test_power_moves_towards_the_agreement_curve(threshold: float, direction: int) -> None:
    delta = spread_delta()
    sampler = ReliableSampler(delta, ring(100), 100, min_update_epoch=1, momentum=0.9)
    sampler.update(*agree_below(delta, threshold))
    # agreement up to delta 0.5 is a sharper knee than 1 - x: alpha grows; up to 0.1, it shrinks
    assert (sampler.power - 1.0) * direction > 0.01
    assert math.isfinite(sampler.power)
    # with momentum 0.9 alpha moved a tenth of the way to the fitted exponent
    fitted = ReliableSampler(delta, ring(100), 100, min_update_epoch=1, momentum=0.0)
    fitted.update(*agree_below(delta, threshold))
    assert sampler.power == pytest.approx(0.9 + 0.1 * fitted.power, rel=1e-3)


def test_update_accepts_scores_instead_of_classes() -> None:
    delta = spread_delta()
    teacher, student = agree_below(delta, 0.5)
    by_class = ReliableSampler(delta, ring(100), 100, min_update_epoch=1)
    by_score = ReliableSampler(delta, ring(100), 100, min_update_epoch=1)
    by_class.update(teacher, student)
    by_score.update(torch.nn.functional.one_hot(teacher, 2), torch.nn.functional.one_hot(student))
    assert by_class.power == by_score.power


@pytest.mark.parametrize("agree", [True, False])
def test_constant_agreement_ratio_leaves_power_unchanged(agree: bool) -> None:
    delta = (torch.arange(50, dtype=torch.float64) + 0.5) / 50  # one node per bin
    sampler = ReliableSampler(delta, ring(50), 50, init_power=1.3, min_update_epoch=1)
    teacher = torch.zeros(50, dtype=torch.long)
    sampler.update(teacher, teacher if agree else teacher + 1)
    assert sampler.power == 1.3


def test_sampler_validates_its_inputs() -> None:
    with pytest.raises(ValueError, match="entropy_shift"):
        ReliableSampler(torch.tensor([0.2, 1.5]), ring(2), 2)
    with pytest.raises(ValueError, match="one entropy shift per"):
        ReliableSampler(torch.zeros(3), ring(2), 2)
    with pytest.raises(ValueError, match="num_nodes"):
        ReliableSampler(torch.zeros(2), torch.tensor([[0], [2]]), 2)
    sampler = ReliableSampler(torch.zeros(2), ring(2), 2, min_update_epoch=0)
    with pytest.raises(ValueError, match="all 2 training-graph nodes"):
        sampler.update(torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("bins", [50, 7])
def test_update_matches_a_direct_numpy_transcription_of_the_spec(bins: int) -> None:
    rng = np.random.default_rng(bins)
    delta = rng.random(300)
    delta[:30] = np.round(delta[:30] * bins) / bins  # values on bin edges, 0 and 1 included
    agree = rng.random(300) < 1 - delta**1.7
    h_agree, _ = np.histogram(delta[agree], bins=bins, range=(0, 1))
    h_disagree, _ = np.histogram(delta[~agree], bins=bins, range=(0, 1))
    ratio = h_agree / (h_agree + h_disagree + 1e-6)
    ratio = (ratio - ratio.min()) / (ratio.max() - ratio.min())
    x = np.linspace(0, 1, bins + 1)[:-1] + 0.05
    (a_fit,), _ = curve_fit(lambda x, a: 1 - x**a, x, ratio, p0=[1.0])

    sampler = ReliableSampler(torch.tensor(delta), ring(300), 300, min_update_epoch=1, bins=bins)
    sampler.update(torch.zeros(300, dtype=torch.long), torch.tensor((~agree).astype(np.int64)))
    assert sampler.power == pytest.approx(0.99 * 1.0 + 0.01 * a_fit, rel=1e-12)
