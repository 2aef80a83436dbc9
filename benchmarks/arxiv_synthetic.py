"""A synthetic graph with ogbn-arxiv's sizes, for the inference and memory benchmarks.

No download: random features, labels and edges with the real counts (169,343 nodes x 128
features, 40 classes, 1,166,243 undirected edges, the official 90,941 / 29,799 / 48,603 split
sizes), preprocessed as rbm_tune.data does for arxiv (made undirected, self-loops added,
coalesced: about 2.5M directed entries). Uniform random edges have no hubs, so an L-hop
neighbourhood is smaller than on the real graph; full-graph costs depend on the counts only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ARXIV", "Sizes", "arxiv_graph", "fake_teacher", "scaled"]


@dataclass(frozen=True)
class Sizes:
    nodes: int
    features: int
    classes: int
    undirected_edges: int
    train: int
    val: int
    test: int


ARXIV = Sizes(169_343, 128, 40, 1_166_243, 90_941, 29_799, 48_603)


def scaled(sizes: Sizes, factor: float) -> Sizes:
    """Every count times ``factor`` (features and classes kept): quick runs of the scripts."""
    if factor == 1.0:
        return sizes

    def f(v: int) -> int:
        return max(sizes.classes, int(v * factor))

    return Sizes(
        f(sizes.nodes),
        sizes.features,
        sizes.classes,
        f(sizes.undirected_edges),
        f(sizes.train),
        f(sizes.val),
        f(sizes.test),
    )


def arxiv_graph(sizes: Sizes = ARXIV, *, seed: int = 0):  # -> rbm_tune.data.Graph
    """The synthetic graph as a transductive ``Graph`` (random split of the official sizes)."""
    from torch_geometric.utils import add_self_loops, coalesce, remove_self_loops, to_undirected

    from rbm_tune.data import make_graph

    gen = torch.Generator().manual_seed(seed)
    n = sizes.nodes
    x = torch.randn(n, sizes.features, generator=gen)
    y = torch.randint(sizes.classes, (n,), generator=gen)
    y[: sizes.classes] = torch.arange(sizes.classes)
    edges = torch.randint(n, (2, sizes.undirected_edges), generator=gen)
    edges, _ = remove_self_loops(to_undirected(edges, num_nodes=n))
    edges, _ = add_self_loops(edges, num_nodes=n)
    edges = coalesce(edges, num_nodes=n)
    perm = torch.randperm(n, generator=gen)
    a, b = sizes.train, sizes.train + sizes.val
    split = tuple(p.sort().values for p in (perm[:a], perm[a:b], perm[b : b + sizes.test]))
    return make_graph(x, y, edges, name="ogbn-arxiv-synthetic", split=split)


def fake_teacher(
    n: int, classes: int, embedding_dim: int, *, seed: int = 0, labels: Tensor | None = None
):
    """``TeacherOutputs`` of the right shapes, as a trained teacher would hand over: random
    logits, or with ``labels`` soft labels around the true class (a student then learns)."""
    from rbm_tune.teacher import TeacherOutputs

    gen = torch.Generator().manual_seed(seed)
    logits: Tensor = 2 * torch.randn(n, classes, generator=gen)
    if labels is not None:
        logits = 3.0 * F.one_hot(labels, classes).float() + logits / 2
    return TeacherOutputs(
        log_probs=F.log_softmax(logits, -1),
        embedding=torch.randn(n, embedding_dim, generator=gen),
        krd_delta=torch.rand(n, generator=gen),
        val_acc=0.0,
        test_acc=0.0,
        test_acc_oracle=0.0,
        best_epoch=0,
        epochs=0,
        seconds=0.0,
    )
