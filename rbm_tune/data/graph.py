"""The one typed object every stage of rbm-tune receives: a graph with its split (method §6)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Graph", "fingerprint"]


def fingerprint(*tensors: Tensor, extra: str = "") -> str:
    """Content hash (sha256, hex) of tensors' dtype, shape and bytes, plus an extra string."""
    h = hashlib.sha256(extra.encode())
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass(frozen=True, eq=False)
class Graph:
    """A node-classification graph, its split and, for the inductive setting, its observed part.

    Node ids in ``x``, ``y``, ``edge_index`` and the ``*_idx`` tensors are full-graph ids.
    The *training graph* is what teachers and students may see: the whole graph when
    transductive, the subgraph induced by ``observed_idx`` when inductive (method §6.3).

    Attributes:
        name: dataset name as the CLI spells it (``cora``, ``ogbn-arxiv``, ...).
        setting: ``transductive`` or ``inductive``.
        seed: the seed that drew the split (where method §6.2 says splits are seeded).
        x: node features, (N, d) float32.
        y: labels, (N,) int64.
        edge_index: full-graph edges, (2, E) int64, self-loops where method §6.1 adds them.
        train_idx, val_idx: labelled train/validation nodes, full-graph ids.
        test_idx: scored nodes: the base test set (transductive) or the held-out inductive
            test nodes (inductive).
        observed_idx: training-graph nodes in full-graph ids, ordered train, val, rest
            (inductive); ``arange(N)`` when transductive.
        observed_edge_index: the training graph's edges in observed (local) ids, (2, E_obs).
        observed_train, observed_val: train/val nodes in observed (local) ids; equal to
            ``train_idx``/``val_idx`` when transductive.
        num_classes: C.
        fingerprint: sha256 of features, edges, labels and the split; keys every cache.
    """

    name: str
    setting: str
    seed: int
    x: Tensor
    y: Tensor
    edge_index: Tensor
    train_idx: Tensor
    val_idx: Tensor
    test_idx: Tensor
    observed_idx: Tensor
    observed_edge_index: Tensor
    observed_train: Tensor
    observed_val: Tensor
    num_classes: int
    fingerprint: str

    @property
    def is_inductive(self) -> bool:
        return self.setting == "inductive"

    @property
    def num_nodes(self) -> int:
        return self.x.size(0)

    @property
    def num_features(self) -> int:
        return self.x.size(1)

    @property
    def num_observed(self) -> int:
        return self.observed_idx.numel()

    def summary(self) -> str:
        return (
            f"{self.name} ({self.setting}, seed {self.seed}): {self.num_nodes} nodes, "
            f"{self.edge_index.size(1)} edges, {self.num_features} features, "
            f"{self.num_classes} classes, train/val/test "
            f"{self.train_idx.numel()}/{self.val_idx.numel()}/{self.test_idx.numel()}"
            + (f", observed {self.num_observed}" if self.is_inductive else "")
        )
