"""MLP student, the GLNN baseline (method §3.1)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from rbm_tune.models.base import Student, StudentOutput, check_student_args
from rbm_tune.models.sparse import CsrRows, dropped_linear

__all__ = ["MLP"]


class MLP(Student):
    """Plain MLP ``d -> h -> ... -> C`` (method §3.1).

    Between layers: optional norm -> ReLU -> dropout; no dropout on the input features.
    The embedding is the first ``Linear``'s output, before norm and ReLU. There is no
    pretraining phase: ``end_pretraining`` is a no-op and ``is_pretraining`` is always False.

    Args:
        in_dim: input feature width d.
        out_dim: number of classes C.
        num_layers: number of Linear layers L (1 maps d -> C directly).
        hidden_dim: hidden width h.
        dropout: dropout probability after each hidden ReLU.
        norm_type: ``"none"``, ``"batch"`` or ``"layer"``.
        pretraining: accepted so every student has the same constructor; ignored.
        feature_encoder: create ``feature_encoder = Linear(D_emb, D_emb)`` for similarity
            distillation (method §4.6); D_emb = h, or C when L = 1.

    Attributes:
        sparse: force (True) or forbid (False) the first layer's CSR path for sparse features
            (:mod:`rbm_tune.models.sparse`); None (default): on the CPU at <= 2 % non-zeros.

    Raises:
        ValueError: a hyperparameter is out of range.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        num_layers: int = 2,
        hidden_dim: int = 256,
        dropout: float = 0.5,
        norm_type: str = "none",
        pretraining: bool = False,
        feature_encoder: bool = False,
    ) -> None:
        super().__init__()
        check_student_args(
            num_layers=num_layers, hidden_dim=hidden_dim, dropout=dropout, norm_type=norm_type
        )
        self._build_stack(
            in_dim,
            out_dim,
            nn.Linear,
            num_layers=num_layers,
            hidden_dim=hidden_dim,
            dropout=dropout,
            norm_type=norm_type,
            feature_encoder=feature_encoder,
            dropout_between=True,
        )
        self.sparse: bool | None = None

    def forward(self, x: Tensor, *, csr: CsrRows | None = None) -> StudentOutput:
        """Run the MLP.

        Args:
            x: node features, shape (B, d).
            csr: the CSR of ``x``'s rows, if the caller has it (sparse features,
                :mod:`rbm_tune.models.sparse`): the first layer multiplies it.

        Returns:
            ``StudentOutput(embedding (B, D_emb), logits (B, C), aux = 0)``.
        """
        h = x
        embedding = x
        for i, layer in enumerate(self.layers):
            if i == 0:  # the features: the CSR path where they are sparse
                first: nn.Linear = layer  # type: ignore[assignment]  # ModuleList items are Modules
                h = dropped_linear(h, None, first.weight, first.bias, self.sparse, csr)
            else:
                h = layer(h)
            if i == 0:
                embedding = h
            if i < self.num_layers - 1:
                h = self.dropout(F.relu(self.norms[i](h)))
        return StudentOutput(embedding, h, h.new_zeros(()))

    @property
    def input_sparse(self) -> bool | None:
        """The first layer's CSR-path switch (here :attr:`sparse`)."""
        return self.sparse

    @input_sparse.setter
    def input_sparse(self, value: bool | None) -> None:
        self.sparse = value

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.in_dim}, {self.out_dim}, num_layers={self.num_layers}, "
            f"hidden_dim={self.hidden_dim}, dropout={self.dropout_p}, "
            f"norm_type={self.norm_type!r})"
        )
