"""Torch k-means: recovery, seeding, empty clusters (method §3.3 switch, §10.2)."""

from __future__ import annotations

import pytest
import torch

from rbm_tune.kmeans import _lloyd, kmeans

TRUE_CENTRES = torch.tensor([[10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, -10.0]])


def _blobs(per_cluster: int = 30, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    noise = 0.3 * torch.randn(3, per_cluster, 3, generator=gen)
    return (TRUE_CENTRES[:, None, :] + noise).reshape(-1, 3)


def _sorted_rows(c: torch.Tensor) -> torch.Tensor:
    return c[torch.argsort(c @ torch.tensor([100.0, 10.0, 1.0]))]


def test_recovers_well_separated_clusters() -> None:
    x = _blobs()
    centres = kmeans(x, 3, restarts=3, max_iter=50, seed=1)
    assert centres.shape == (3, 3)
    assert torch.allclose(_sorted_rows(centres), _sorted_rows(TRUE_CENTRES), atol=0.3)


def test_same_seed_same_centres() -> None:
    x = torch.randn(200, 4, generator=torch.Generator().manual_seed(3))
    a = kmeans(x, 5, restarts=2, max_iter=30, seed=7)
    b = kmeans(x, 5, restarts=2, max_iter=30, seed=7)
    assert torch.equal(a, b)


def test_subsample_is_seeded_and_shaped() -> None:
    x = _blobs(per_cluster=100)
    a = kmeans(x, 3, restarts=2, max_iter=30, seed=0, max_rows=40)
    b = kmeans(x, 3, restarts=2, max_iter=30, seed=0, max_rows=40)
    assert a.shape == (3, 3) and torch.equal(a, b)
    assert torch.allclose(_sorted_rows(a), _sorted_rows(TRUE_CENTRES), atol=0.5)


def test_empty_cluster_is_reseeded() -> None:
    x = _blobs()
    far = torch.tensor([[1e3, 1e3, 1e3]])
    start = torch.cat([x[:1], x[1:2], far])  # the third centre is nobody's nearest
    centres, inertia = _lloyd(x, start, max_iter=50, tol=0.0)
    labels = torch.cdist(x, centres).argmin(1)
    assert torch.bincount(labels, minlength=3).min() > 0
    assert centres.abs().max() < 20.0
    assert torch.isfinite(inertia)


def test_duplicate_points_give_finite_centres() -> None:
    # Two distinct points, three clusters: k-means++ must fall back to uniform sampling and the
    # duplicate centre's empty cluster must be re-seeded without NaN.
    x = torch.tensor([[0.0, 1.0]] * 5 + [[1.0, 0.0]] * 5)
    centres = kmeans(x, 3, restarts=2, max_iter=10, seed=0)
    assert torch.isfinite(centres).all()
    assert all(((x - c).abs().sum(1) == 0).any() for c in centres)


def test_too_few_rows_raises() -> None:
    with pytest.raises(ValueError, match="at least num_clusters"):
        kmeans(torch.randn(2, 3), 4)
