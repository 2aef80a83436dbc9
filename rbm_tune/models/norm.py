"""Normalisation layers between the hidden layers of students and teachers (method §3, §2.1)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from rbm_tune.config import NORM_TYPES

__all__ = ["NORM_TYPES", "SafeBatchNorm1d", "make_norm"]


class SafeBatchNorm1d(nn.BatchNorm1d):
    """``BatchNorm1d`` that normalises a chunk of fewer than 2 rows with its running statistics.

    Plain BatchNorm raises on a 1-row chunk in training mode; the reference wraps it so that such
    a chunk is normalised as in eval mode (running statistics, no statistics update) instead
    (method §3). The row count is a static shape, so the check costs no device sync.

    Args:
        num_features: width D of the input, shape (B, D).
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] < 2:
            return F.batch_norm(
                x,
                self.running_mean,
                self.running_var,
                self.weight,
                self.bias,
                training=False,
                momentum=0.0,
                eps=self.eps,
            )
        return super().forward(x)


def make_norm(norm_type: str, dim: int) -> nn.Module:
    """Build the norm named ``norm_type`` for features of width ``dim``.

    Args:
        norm_type: ``"none"`` (identity), ``"batch"`` (:class:`SafeBatchNorm1d`) or ``"layer"``
            (per-row ``nn.LayerNorm``).
        dim: feature width.

    Returns:
        The module.

    Raises:
        ValueError: unknown ``norm_type``.
    """
    if norm_type == "none":
        return nn.Identity()
    if norm_type == "batch":
        return SafeBatchNorm1d(dim)
    if norm_type == "layer":
        return nn.LayerNorm(dim)
    raise ValueError(f"norm_type={norm_type!r} is not one of {list(NORM_TYPES)}")
