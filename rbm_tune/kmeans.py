"""K-means in torch, on whatever device the data lives (method §3.3 switch, §10.2).

Replaces the reference's scikit-learn call (1.0.2 defaults: greedy k-means++ init, 10 restarts,
up to 300 Lloyd iterations, relative tolerance 1e-4). Deviations: seeded through a
``torch.Generator`` rather than numpy's global RNG, so centres are reproducible per seed and
device but not bit-identical to scikit-learn's; an empty cluster is moved to the point farthest
from its centre (scikit-learn does the same, with a slightly different bookkeeping); optional
fitting on a seeded subsample of at most ``max_rows`` rows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["kmeans"]


def _sq_dist(x: Tensor, centres: Tensor, x_sq: Tensor | None = None) -> Tensor:
    """Squared Euclidean distances, shape (N, E), clamped at 0."""
    if x_sq is None:
        x_sq = (x * x).sum(1)
    d = x_sq[:, None] - 2.0 * (x @ centres.T) + (centres * centres).sum(1)[None, :]
    return d.clamp_min_(0.0)


def _kmeans_plusplus(x: Tensor, num_clusters: int, gen: torch.Generator) -> Tensor:
    """Greedy k-means++ seeding (2 + ln E candidates per centre), shape (E, d)."""
    n = x.shape[0]
    trials = 2 + int(math.log(num_clusters))
    x_sq = (x * x).sum(1)
    centres = x.new_empty(num_clusters, x.shape[1])
    first = torch.randint(n, (1,), generator=gen, device=x.device)
    centres[0] = x[first[0]]
    closest = _sq_dist(x, centres[:1], x_sq).squeeze(1)
    for c in range(1, num_clusters):
        # When every point already sits on a centre the potential is 0: sample uniformly.
        weights = torch.where(closest.sum() > 0, closest, torch.ones_like(closest))
        cand = torch.multinomial(weights, trials, replacement=True, generator=gen)
        cand_dist = torch.minimum(closest[None, :], _sq_dist(x, x[cand], x_sq).T)
        best = cand_dist.sum(1).argmin()
        centres[c] = x[cand[best]]
        closest = cand_dist[best]
    return centres


def _lloyd(x: Tensor, centres: Tensor, max_iter: int, tol: float) -> tuple[Tensor, Tensor]:
    """Lloyd iterations from ``centres``; returns final centres (E, d) and inertia (scalar).

    Stops when the labels stop changing or the total squared centre shift is ``<= tol``.
    A cluster that receives no point is re-seeded at the points farthest from their centres.
    """
    num_clusters = centres.shape[0]
    x_sq = (x * x).sum(1)
    labels = None
    for _ in range(max_iter):
        dist, new_labels = _sq_dist(x, centres, x_sq).min(1)
        # One-hot GEMM rather than index_add_: deterministic on CUDA (no float atomics).
        one_hot = F.one_hot(new_labels, num_clusters).to(x.dtype)
        counts = one_hot.sum(0)
        new_centres = (one_hot.T @ x) / counts.clamp_min(1)[:, None]
        empty = counts == 0
        num_empty = int(empty.sum())
        if num_empty:
            far = dist.topk(num_empty).indices
            new_centres[empty] = x[far]
        shift = float(((new_centres - centres) ** 2).sum())
        converged = labels is not None and bool((labels == new_labels).all()) and not num_empty
        centres, labels = new_centres, new_labels
        if converged or shift <= tol:
            break
    inertia = _sq_dist(x, centres, x_sq).min(1).values.sum()
    return centres, inertia


def kmeans(
    x: Tensor,
    num_clusters: int,
    *,
    restarts: int = 10,
    max_iter: int = 300,
    seed: int = 0,
    max_rows: int = 0,
    tol: float = 1e-4,
    normalize: bool = False,
) -> Tensor:
    """Cluster the rows of ``x`` into ``num_clusters`` groups; keep the best of the restarts.

    Args:
        x: data, shape (N, d); any float dtype (computed in float32 at least), any device.
        num_clusters: E.
        restarts: independent k-means++ initialisations; the lowest inertia wins.
        max_iter: Lloyd iterations per restart.
        seed: seeds the subsample and every restart's initialisation.
        max_rows: fit on a seeded random subsample of at most this many rows (0: all rows).
        tol: relative tolerance, scaled by the mean per-feature variance (as scikit-learn).
        normalize: cluster the L2-normalised rows (normalised after the subsample: the same
            rows as normalising all of ``x`` first, without an (N, d) copy).

    Returns:
        Cluster centres, shape (E, d), in ``x``'s dtype and on its device.

    Raises:
        ValueError: fewer rows than clusters, or a non-positive count.
    """
    if x.ndim != 2:
        raise ValueError(f"kmeans expects a 2-D tensor (N, d), got shape {tuple(x.shape)}")
    if num_clusters < 1 or restarts < 1 or max_iter < 1 or max_rows < 0:
        raise ValueError("num_clusters, restarts and max_iter must be >= 1 and max_rows >= 0")
    n = x.shape[0]
    if n < num_clusters:
        raise ValueError(
            f"kmeans needs at least num_clusters={num_clusters} rows, got {n}; "
            "pass more rows or use fewer experts"
        )
    gen = torch.Generator(device=x.device)
    gen.manual_seed(seed)
    data = x.detach()
    if data.dtype not in (torch.float32, torch.float64):
        data = data.float()
    if 0 < max_rows < n:
        data = data[
            torch.randperm(n, generator=gen, device=x.device)[: max(max_rows, num_clusters)]
        ]
    if normalize:
        data = torch.nn.functional.normalize(data, dim=1)
    tol_abs = tol * float(data.var(dim=0).mean()) if data.shape[0] > 1 else 0.0
    best, best_inertia = None, math.inf
    for _ in range(restarts):
        centres, inertia = _lloyd(
            data, _kmeans_plusplus(data, num_clusters, gen), max_iter, tol_abs
        )
        value = float(inertia)
        if best is None or value < best_inertia:
            best, best_inertia = centres, value
    assert best is not None
    return best.to(x.dtype)
