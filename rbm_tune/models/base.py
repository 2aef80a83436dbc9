"""Shared pieces of the students: output tuples, argument checks, the phased layer and the
student base classes (the layer stack, similarity features, the mixture students' forward).

The experts themselves and their dispatch live in :mod:`rbm_tune.models.experts`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rbm_tune.config import EXPERT_DROPOUTS
from rbm_tune.models.experts import ExpertBank  # its former home: old imports keep working
from rbm_tune.models.norm import NORM_TYPES, make_norm
from rbm_tune.models.sparse import CsrRows

__all__ = [
    "EXPERT_DROPOUTS",
    "LOG_100",
    "ExpertBank",
    "ExpertStudent",
    "PhasedLayer",
    "Student",
    "StudentOutput",
    "TeacherOutput",
    "check_expert_args",
    "check_student_args",
    "clamped_exp",
    "reset_modules",
]

LOG_100 = math.log(100.0)


class StudentOutput(NamedTuple):
    """What every student returns (method §3).

    Attributes:
        embedding: output of the first layer before norm and activation, shape (B, D_emb)
            (D_emb = hidden_dim, or out_dim for a 1-layer student).
        logits: class logits, shape (B, C).
        aux: the student's auxiliary loss (already weighted by its coefficients), a scalar
            tensor; 0 for the MLP, in eval mode and during pretraining.
    """

    embedding: Tensor
    logits: Tensor
    aux: Tensor


class TeacherOutput(NamedTuple):
    """What every teacher returns (method §2.1).

    Attributes:
        logits: class logits, shape (N, C).
        embedding: the last hidden layer's output before norm and dropout, shape (N, H)
            (the input features for a 1-layer teacher, as in the reference).
    """

    logits: Tensor
    embedding: Tensor


def clamped_exp(theta: Tensor) -> Tensor:
    """``exp(min(theta, ln 100))``: the learnable scales and gates of method §3.2-§3.3."""
    return theta.clamp(max=LOG_100).exp()


def reset_modules(*modules: nn.Module | None) -> None:
    """Call ``reset_parameters()`` on every given module that has one (None is skipped)."""
    for module in modules:
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()


def check_student_args(
    *, num_layers: int, hidden_dim: int, dropout: float, norm_type: str
) -> None:
    """Validate the hyperparameters every student shares; raise ValueError naming the fix."""
    if num_layers < 1:
        raise ValueError(f"num_layers={num_layers} must be >= 1")
    if hidden_dim < 1:
        raise ValueError(f"hidden_dim={hidden_dim} must be >= 1")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout} must lie in [0, 1)")
    if norm_type not in NORM_TYPES:
        raise ValueError(f"norm_type={norm_type!r} is not one of {list(NORM_TYPES)}")


def check_expert_args(*, num_experts: int, k: int, expert_dropout: str) -> None:
    """Validate the mixture hyperparameters: ``1 <= k < num_experts`` (method §3.3, strict)."""
    if num_experts < 2:
        raise ValueError(f"num_experts={num_experts} must be >= 2; raise it or use the MLP")
    if not 1 <= k < num_experts:
        raise ValueError(
            f"k={k} must satisfy 1 <= k < num_experts={num_experts}; lower k or raise num_experts"
        )
    if expert_dropout not in EXPERT_DROPOUTS:
        raise ValueError(
            f"expert_dropout={expert_dropout!r} is not one of {list(EXPERT_DROPOUTS)}"
        )


class PhasedLayer(nn.Module):
    """A mixture layer with a pretraining phase (method §3.2-§3.3).

    The phase flag is a Python bool, so ``forward`` never syncs with the device to read it, and
    it travels in the ``state_dict`` as extra state: reloading a checkpoint taken during
    pretraining brings the phase back with the weights (method §10.1 item 8).

    Args:
        pretraining: start in the pretraining phase.
    """

    def __init__(self, *, pretraining: bool) -> None:
        super().__init__()
        self._pretraining = pretraining

    @property
    def is_pretraining(self) -> bool:
        """Whether the layer is still in its pretraining phase."""
        return self._pretraining

    def get_extra_state(self) -> Tensor:
        return torch.tensor(self._pretraining)

    def set_extra_state(self, state: Any) -> None:
        self._pretraining = bool(state)


class Student(nn.Module):
    """Behaviour shared by the node-wise students (method §3).

    Subclasses build their layer stack with :meth:`_build_stack`, which sets ``self.dropout_p``,
    ``self.embedding_dim`` and ``self.feature_encoder`` (a ``Linear(D_emb, D_emb)`` for
    similarity distillation, or None).
    """

    feature_encoder: nn.Linear | None
    dropout_p: float
    num_layers: int

    def _build_stack(
        self,
        in_dim: int,
        out_dim: int,
        make_layer: Callable[[int, int], nn.Module],
        *,
        num_layers: int,
        hidden_dim: int,
        dropout: float,
        norm_type: str,
        feature_encoder: bool,
        dropout_between: bool = False,
    ) -> None:
        """Record the shared hyperparameters and build ``d -> h -> ... -> C`` (arguments checked).

        Registers, in this order: ``layers`` (``make_layer(d_in, d_out)`` per layer), ``norms``
        (one per hidden layer), ``dropout`` (an ``nn.Dropout`` between layers, only with
        ``dropout_between``) and ``feature_encoder`` (``Linear(D_emb, D_emb)`` or None), with
        D_emb the first layer's output width.
        """
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.dropout_p = dropout
        self.norm_type = norm_type
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(make_layer(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.norms = nn.ModuleList(make_norm(norm_type, hidden_dim) for _ in dims[1:-1])
        if dropout_between:
            self.dropout = nn.Dropout(dropout)
        self.embedding_dim = dims[1]
        self.feature_encoder = (
            nn.Linear(self.embedding_dim, self.embedding_dim) if feature_encoder else None
        )

    def reset_parameters(self) -> None:
        """Re-initialise every layer, norm and the feature encoder (a phase is kept)."""
        reset_modules(*self.layers, *self.norms, self.feature_encoder)

    @property
    def is_pretraining(self) -> bool:
        """Whether the student is still in its pretraining phase (never for the MLP)."""
        return False

    @property
    def input_sparse(self) -> bool | None:
        """Force (True) or forbid (False) the first layer's CSR path for the features
        (:mod:`rbm_tune.models.sparse`); None (default): decided per input. A caller that
        knows its features are dense sets False: no counting pass per chunk."""
        raise NotImplementedError

    @input_sparse.setter
    def input_sparse(self, value: bool | None) -> None:
        raise NotImplementedError

    def end_pretraining(
        self,
        x_all: Tensor | None = None,
        *,
        csr: CsrRows | None = None,
        batch_size: int = -1,
        seed: int = 0,
        kmeans_restarts: int = 10,
        kmeans_max_iter: int = 300,
        kmeans_max_rows: int = 0,
    ) -> None:
        """Leave the pretraining phase (method §4.3 step 1). A no-op unless overridden."""

    def similarity_features(self, embedding: Tensor) -> Tensor:
        """``dropout(ReLU(F · embedding))`` for similarity distillation (method §4.6).

        Args:
            embedding: ``StudentOutput.embedding``, shape (B, D_emb).

        Returns:
            Shape (B, D_emb).

        Raises:
            RuntimeError: the student was built without ``feature_encoder=True``.
        """
        if self.feature_encoder is None:
            raise RuntimeError(
                "this student has no feature encoder; build it with feature_encoder=True"
            )
        z = F.relu(self.feature_encoder(embedding))
        return F.dropout(z, p=self.dropout_p, training=self.training)


class ExpertStudent(Student):
    """A student whose every layer (input, hidden, output) is a :class:`PhasedLayer` mixture.

    Each layer maps a chunk to ``(output, aux)``. Between layers: optional norm -> ReLU (the
    dropout sits inside the experts, so it also applies to the raw input features). Embedding =
    first layer's output, before norm/ReLU; aux = sum of the layers' aux losses.

    Args:
        in_dim: input feature width d.
        out_dim: number of classes C.
        make_layer: builds the layer ``(d_in, d_out) -> PhasedLayer``.
        num_layers: L.
        hidden_dim: h.
        dropout: input dropout of every expert.
        norm_type: ``"none"``, ``"batch"`` or ``"layer"``.
        num_experts: E per layer.
        k: the configured k.
        expert_dropout: ``"per_pair"`` or ``"shared"``.
        feature_encoder: create ``feature_encoder = Linear(D_emb, D_emb)`` (method §4.6).

    Raises:
        ValueError: a hyperparameter is out of range, e.g. k >= num_experts.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        make_layer: Callable[[int, int], PhasedLayer],
        *,
        num_layers: int,
        hidden_dim: int,
        dropout: float,
        norm_type: str,
        num_experts: int,
        k: int,
        expert_dropout: str,
        feature_encoder: bool,
    ) -> None:
        super().__init__()
        check_student_args(
            num_layers=num_layers, hidden_dim=hidden_dim, dropout=dropout, norm_type=norm_type
        )
        check_expert_args(num_experts=num_experts, k=k, expert_dropout=expert_dropout)
        self.num_experts = num_experts
        self.k = k
        self._build_stack(
            in_dim,
            out_dim,
            make_layer,
            num_layers=num_layers,
            hidden_dim=hidden_dim,
            dropout=dropout,
            norm_type=norm_type,
            feature_encoder=feature_encoder,
        )

    @property
    def is_pretraining(self) -> bool:
        """Whether any layer is still in its pretraining phase."""
        return any(cast("PhasedLayer", layer).is_pretraining for layer in self.layers)

    @property
    def input_sparse(self) -> bool | None:
        """The first layer's CSR-path switch (its ``sparse``)."""
        first: Any = self.layers[0]
        return cast("bool | None", first.sparse)

    @input_sparse.setter
    def input_sparse(self, value: bool | None) -> None:
        first: Any = self.layers[0]
        first.sparse = value

    def _after(self, index: int, h: Tensor) -> Tensor:
        """Norm and ReLU after layer ``index`` (none after the last)."""
        if index < self.num_layers - 1:
            h = F.relu(self.norms[index](h))
        return h

    def forward(self, x: Tensor, *, csr: CsrRows | None = None) -> StudentOutput:
        """Run the student.

        Args:
            x: node features, shape (B, d).
            csr: the CSR of ``x``'s rows, if the caller has it (sparse features,
                :mod:`rbm_tune.models.sparse`): the first layer multiplies it.

        Returns:
            ``StudentOutput(embedding (B, D_emb), logits (B, C), aux)``, aux = Σ layer losses.
        """
        h = x
        embedding = x
        aux = x.new_zeros(())
        for i, layer in enumerate(self.layers):
            h, layer_aux = layer(h, csr) if i == 0 else layer(h)
            aux = aux + layer_aux
            if i == 0:
                embedding = h
            h = self._after(i, h)
        return StudentOutput(embedding, h, aux)
