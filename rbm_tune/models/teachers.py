"""GNN teachers: thin wrappers over PyG's own GCN / GraphSAGE / GAT models (spec §2.1).

The convolutions are PyG's (``torch_geometric.nn.models``); the wrappers only walk the model's
``convs`` themselves, with their own norms (``norm="layer"`` in PyG would normalise over the whole
graph), to expose the last hidden layer's output as the teacher embedding.

Deviations from the reference's DGL layers:

- GCN: PyG's ``gcn_norm`` uses the in-degree on both sides of an edge where DGL uses the source's
  out-degree; identical on the symmetric graphs of every dataset here. A node without in-edges
  gets only the bias where DGL would raise.
- A 1-layer GCN has no output activation (the reference's has a ReLU); spec §2.1 says none.
- GAT is not in the reference; it uses PyG's defaults (self-loops, attention dropout = dropout,
  heads concatenated in hidden layers and averaged in the last).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rbm_tune.models.base import TeacherOutput, reset_modules
from rbm_tune.models.norm import make_norm

if TYPE_CHECKING:  # PyG is imported when a teacher is built, so students never pay for it
    from torch_geometric.nn.models import GAT, GCN, GraphSAGE

__all__ = ["GATTeacher", "GCNTeacher", "SAGETeacher"]


class _Teacher(nn.Module):
    """Walks a PyG ``BasicGNN``'s convs with our norms; subclasses choose the model."""

    gnn: GCN | GraphSAGE | GAT
    # True: ReLU, then the embedding is taken (GCN's ReLU is inside the conv in DGL).
    act_before_embedding: bool = False

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        num_layers: int,
        hidden_dim: int,
        dropout: float,
        norm_type: str,
    ) -> None:
        super().__init__()
        if num_layers < 1 or hidden_dim < 1:
            raise ValueError(f"num_layers={num_layers} and hidden_dim={hidden_dim} must be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} must lie in [0, 1)")
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.dropout_p = dropout
        self.norm_type = norm_type
        self.norms = nn.ModuleList(make_norm(norm_type, hidden_dim) for _ in range(num_layers - 1))

    def reset_parameters(self) -> None:
        """Re-initialise the PyG model and the norms."""
        reset_modules(self.gnn, *self.norms)

    def _edges(self, edge_index: Tensor, num_nodes: int) -> Tensor:
        return edge_index

    def forward(self, x: Tensor, edge_index: Tensor) -> TeacherOutput:
        """Full-graph forward.

        Args:
            x: node features, shape (N, d).
            edge_index: COO edges (source, target), shape (2, |E|), long.

        Returns:
            ``TeacherOutput(logits (N, C), embedding (N, h))``; the embedding is the last
            hidden layer's output before norm and dropout (x itself for a 1-layer model).
        """
        edges = self._edges(edge_index, x.shape[0])
        h = x
        embedding = x
        for i, conv in enumerate(self.gnn.convs):
            h = conv(h, edges)
            if i == self.num_layers - 1:
                break
            if self.act_before_embedding:
                h = F.relu(h)
                embedding = h
                h = self.norms[i](h)
            else:
                embedding = h
                h = F.relu(self.norms[i](h))
            h = self.gnn.dropout(h)
        return TeacherOutput(h, embedding)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.in_dim}, {self.out_dim}, num_layers={self.num_layers}, "
            f"hidden_dim={self.hidden_dim}, dropout={self.dropout_p}, "
            f"norm_type={self.norm_type!r})"
        )


class _PlainTeacher(_Teacher):
    """A teacher whose constructor takes only the shared hyperparameters.

    Subclasses build their PyG model in ``_build_gnn``, after the norms are registered.
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
    ) -> None:
        super().__init__(
            in_dim,
            out_dim,
            num_layers=num_layers,
            hidden_dim=hidden_dim,
            dropout=dropout,
            norm_type=norm_type,
        )
        self.gnn = self._build_gnn()

    def _build_gnn(self) -> GCN | GraphSAGE:
        raise NotImplementedError


class GCNTeacher(_PlainTeacher):
    """GCN: ``GCNConv(add_self_loops=False, normalize=True)``; hidden: ReLU -> norm -> dropout.

    Self-loops come only from the data (spec §2.1, §10.1 item 13). Embedding: after the ReLU.

    Args:
        in_dim: d.
        out_dim: C.
        num_layers: L graph layers.
        hidden_dim: h.
        dropout: dropout after each hidden layer.
        norm_type: ``"none"``, ``"batch"`` or ``"layer"``.
    """

    act_before_embedding = True

    def _build_gnn(self) -> GCN:
        from torch_geometric.nn.models import GCN

        return GCN(
            self.in_dim,
            self.hidden_dim,
            self.num_layers,
            self.out_dim,
            dropout=self.dropout_p,
            add_self_loops=False,
            normalize=True,
        )


class SAGETeacher(_PlainTeacher):
    """GraphSAGE with DGL's ``gcn`` aggregator (spec §2.1).

    ``SAGEConv(aggr="mean", root_weight=False)`` over the edges plus one appended self-loop per
    node: ``W · (Σ_neighbours h + h_self) / (in_degree + 1) + b``. A node whose graph already has
    a self-loop is counted twice, as in DGL. Hidden: norm -> ReLU -> dropout; embedding before
    the norm. The augmented edge index is cached for the last ``edge_index`` object seen.

    Args:
        in_dim: d.
        out_dim: C.
        num_layers: L graph layers.
        hidden_dim: h.
        dropout: dropout after each hidden layer.
        norm_type: ``"none"``, ``"batch"`` or ``"layer"``.
    """

    def _build_gnn(self) -> GraphSAGE:
        from torch_geometric.nn.models import GraphSAGE

        self._loop_cache: tuple[Any, int, int, Tensor] | None = None
        return GraphSAGE(
            self.in_dim,
            self.hidden_dim,
            self.num_layers,
            self.out_dim,
            dropout=self.dropout_p,
            aggr="mean",
            root_weight=False,
        )

    def _edges(self, edge_index: Tensor, num_nodes: int) -> Tensor:
        cache = self._loop_cache
        if (
            cache is not None
            and cache[0]() is edge_index
            and cache[1] == edge_index._version
            and cache[2] == num_nodes
        ):
            return cache[3]
        loops = torch.arange(num_nodes, device=edge_index.device, dtype=edge_index.dtype)
        edges = torch.cat([edge_index, loops.expand(2, -1)], dim=1)
        self._loop_cache = (weakref.ref(edge_index), edge_index._version, num_nodes, edges)
        return edges

    def __getstate__(self) -> dict[str, Any]:
        # Deep copies and pickles (e.g. best-val snapshots) must not carry the edge cache.
        state = super().__getstate__()
        state = dict(state)
        state["_loop_cache"] = None
        return state


class GATTeacher(_Teacher):
    """GAT with ``heads`` attention heads (PyG defaults); hidden: norm -> ReLU -> dropout.

    Embedding before the norm. Not part of the reference (spec §2).

    Args:
        in_dim: d.
        out_dim: C.
        num_layers: L graph layers.
        hidden_dim: h (total width of the concatenated heads; divisible by ``heads``).
        dropout: feature dropout after each hidden layer and attention dropout.
        norm_type: ``"none"``, ``"batch"`` or ``"layer"``.
        heads: attention heads per layer.
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
        heads: int = 4,
    ) -> None:
        super().__init__(
            in_dim,
            out_dim,
            num_layers=num_layers,
            hidden_dim=hidden_dim,
            dropout=dropout,
            norm_type=norm_type,
        )
        if heads < 1 or (num_layers > 1 and hidden_dim % heads):
            raise ValueError(
                f"hidden_dim={hidden_dim} must be a multiple of heads={heads}; change either"
            )
        self.heads = heads
        from torch_geometric.nn.models import GAT

        self.gnn = GAT(in_dim, hidden_dim, num_layers, out_dim, dropout=dropout, heads=heads)
