"""The embedded ``demo`` dataset: a contextual stochastic block model generated from a seed.

It lets every command run on a fresh machine with no files at all, and fast: a few thousand
nodes, class-dependent Gaussian features (weak enough that an MLP alone is clearly worse than a
GNN) and homophilous edges (so a GNN teacher has something to teach).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rbm_tune.data.splits import coalesce, remove_self_loops, to_undirected

__all__ = ["DEMO_SIZES", "make_demo"]

DEMO_SIZES: dict[str, Any] = {
    "nodes": 3000,
    "features": 32,
    "classes": 5,
    "degree": 8,
    "homophily": 0.75,
}


def make_demo(
    *,
    seed: int = 0,
    num_nodes: int = DEMO_SIZES["nodes"],
    num_features: int = DEMO_SIZES["features"],
    num_classes: int = DEMO_SIZES["classes"],
    degree: int = DEMO_SIZES["degree"],
    homophily: float = DEMO_SIZES["homophily"],
    signal: float = 0.3,
) -> tuple[Tensor, Tensor, Tensor]:
    """Generate a contextual SBM.

    Each node draws ``degree // 2`` out-edges; each goes to a node of its own class with
    probability ``homophily`` and to a uniformly random node otherwise; the graph is then made
    undirected without self-loops. Features are ``N(mean_c, I)`` with class means of norm
    ``signal * sqrt(num_features)`` in random directions.

    Returns:
        x (N, d) float32, y (N,) int64, edge_index (2, E) int64.
    """
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(num_classes, (num_nodes,), generator=gen)
    y[:num_classes] = torch.arange(num_classes)  # every class present
    means = torch.randn(num_classes, num_features, generator=gen)
    means = means / means.norm(dim=1, keepdim=True) * signal * num_features**0.5
    x = means[y] + torch.randn(num_nodes, num_features, generator=gen)

    by_class = [torch.nonzero(y == c).view(-1) for c in range(num_classes)]
    sizes = torch.tensor([len(b) for b in by_class])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)[:-1]])
    members = torch.cat(by_class)

    per_node = max(1, degree // 2)
    src = torch.arange(num_nodes).repeat_interleave(per_node)
    same = torch.rand(src.numel(), generator=gen) < homophily
    cls = y[src]
    pick = (torch.rand(src.numel(), generator=gen) * sizes[cls]).long()
    dst_same = members[offsets[cls] + pick]
    dst_any = torch.randint(num_nodes, (src.numel(),), generator=gen)
    dst = torch.where(same, dst_same, dst_any)
    edge_index = remove_self_loops(torch.stack([src, dst]))
    edge_index = coalesce(to_undirected(edge_index, num_nodes), num_nodes)
    return x.float(), y.long(), edge_index
