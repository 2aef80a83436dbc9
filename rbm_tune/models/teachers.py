"""GNN teachers: thin wrappers over PyG's own GCN / GraphSAGE / GAT models (method §2.1).

The convolutions are PyG's (``torch_geometric.nn.models``); the wrappers only walk the model's
``convs`` themselves, with their own norms (``norm="layer"`` in PyG would normalise over the whole
graph), to expose the last hidden layer's output as the teacher embedding.

Deviations from the reference's DGL layers:

- GCN: PyG's ``gcn_norm`` uses the in-degree on both sides of an edge where DGL uses the source's
  out-degree; identical on the symmetric graphs of every dataset here. A node without in-edges
  gets only the bias where DGL would raise.
- A 1-layer GCN has no output activation (the reference's has a ReLU); method §2.1 says none.
- GAT is not in the reference; it uses PyG's defaults (self-loops, attention dropout = dropout,
  heads concatenated in hidden layers and averaged in the last).

Sparse propagation (issue 20 item 4): ``forward`` takes the graph as a prepared sparse ``adj_t``
(:meth:`Teacher.adjacency`, built once per graph) or as an ``edge_index``, which it turns into
one (cached for the last ``edge_index`` object). GCN and SAGE layers are then the conv's own
linear maps around one ``adj_t @ h`` product, GAT runs ``GATConv`` over target-row chunks
(``gat_chunked``): no edges x features tensor. SAGE's aggregate-then-linear and every
ReLU-then-dropout use ops that save fewer activations for backward (``teacher_ops``). Same
function as PyG's convs over ``edge_index`` (kept as :meth:`Teacher.forward_edge_index`, the
reference); the sums run in another order, so outputs agree within float tolerance, not
bitwise. Parameters and state dicts are unchanged.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rbm_tune.models.adjacency import gat_adjacency, gcn_adjacency, is_adjacency, sage_adjacency
from rbm_tune.models.base import TeacherOutput, reset_modules
from rbm_tune.models.gat_chunked import gat_conv_chunked
from rbm_tune.models.norm import make_norm
from rbm_tune.models.teacher_ops import relu_dropout, sparse_linear, spmm, transposed

if TYPE_CHECKING:  # PyG is imported when a teacher is built, so students never pay for it
    from torch_geometric.nn.models import GAT, GCN, GraphSAGE

__all__ = ["GATTeacher", "GCNTeacher", "SAGETeacher"]


class Teacher(nn.Module):
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
        self._adj_cache: tuple[Any, int, int, Tensor] | None = None

    def reset_parameters(self) -> None:
        """Re-initialise the PyG model and the norms."""
        reset_modules(self.gnn, *self.norms)

    def _edges(self, edge_index: Tensor, num_nodes: int) -> Tensor:
        """The ``edge_index`` the PyG convs get on the reference path."""
        return edge_index

    def adjacency(self, edge_index: Tensor, num_nodes: int) -> Tensor:
        """This teacher's sparse ``adj_t`` (CSR, row = target) of a graph: build once per graph.

        Args:
            edge_index: COO edges (source, target), shape (2, |E|).
            num_nodes: N.
        """
        raise NotImplementedError

    def _propagate(self, conv: nn.Module, h: Tensor, adj_t: Tensor) -> Tensor:
        """``conv(h, edge_index)`` computed from ``adj_t``."""
        raise NotImplementedError

    def _per_graph(
        self, name: str, edge_index: Tensor, num_nodes: int, build: Callable[[], Tensor]
    ) -> Tensor:
        """``build()``, kept in ``self.<name>`` while the same, unmodified ``edge_index`` and
        node count come back (a weak reference: the cache never keeps a graph alive)."""
        cache = getattr(self, name, None)
        if (
            cache is not None
            and cache[0]() is edge_index
            and cache[1] == edge_index._version
            and cache[2] == num_nodes
        ):
            return cache[3]
        value = build()
        setattr(self, name, (weakref.ref(edge_index), edge_index._version, num_nodes, value))
        return value

    def _adjacency_of(self, edge_index: Tensor, num_nodes: int) -> Tensor:
        return self._per_graph(
            "_adj_cache", edge_index, num_nodes, lambda: self.adjacency(edge_index, num_nodes)
        )

    def forward(self, x: Tensor, edge_index: Tensor) -> TeacherOutput:
        """Full-graph forward through the sparse adjacency.

        Args:
            x: node features, shape (N, d).
            edge_index: the prepared ``adj_t`` of :meth:`adjacency` (sparse CSR, (N, N)), or
                COO edges (source, target), shape (2, |E|), long, turned into it here.

        Returns:
            ``TeacherOutput(logits (N, C), embedding (N, h))``; the embedding is the last
            hidden layer's output before norm and dropout (x itself for a 1-layer model).
        """
        if is_adjacency(edge_index):
            adj_t = edge_index
        else:
            adj_t = self._adjacency_of(edge_index, x.shape[0])
        if adj_t.device != x.device:
            raise ValueError(f"adj_t is on {adj_t.device}, x on {x.device}; move adj_t with .to")
        return self._walk(x, lambda conv, h: self._propagate(conv, h, adj_t), lean=True)

    def forward_edge_index(self, x: Tensor, edge_index: Tensor) -> TeacherOutput:
        """The reference: PyG's convs over ``edge_index`` (one message row per edge and layer).

        Same arguments and result as :meth:`forward` with an ``edge_index``; for tests and the
        before/after benchmark (benchmarks/bench_teacher_scale.py).
        """
        edges = self._edges(edge_index, x.shape[0])
        return self._walk(x, lambda conv, h: conv(h, edges))

    def _walk(
        self, x: Tensor, layer: Callable[[nn.Module, Tensor], Tensor], *, lean: bool = False
    ) -> TeacherOutput:
        # lean: ReLU and dropout as one op that saves only its output (teacher_ops.relu_dropout)
        h = x
        embedding = x
        for i, conv in enumerate(self.gnn.convs):
            h = layer(conv, h)
            if i == self.num_layers - 1:
                break
            if self.act_before_embedding:
                h = F.relu(h)
                embedding = h
                h = self.norms[i](h)
            elif lean:
                embedding = h
                h = relu_dropout(self.norms[i](h), self.gnn.dropout.p, self.training)
                continue
            else:
                embedding = h
                h = F.relu(self.norms[i](h))
            h = self.gnn.dropout(h)
        return TeacherOutput(h, embedding)

    def __getstate__(self) -> dict[str, Any]:
        # Deep copies and pickles (e.g. best-val snapshots) must not carry the graph caches.
        state = dict(super().__getstate__())
        for name in ("_adj_cache", "_loop_cache"):
            if name in state:
                state[name] = None
        return state

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.in_dim}, {self.out_dim}, num_layers={self.num_layers}, "
            f"hidden_dim={self.hidden_dim}, dropout={self.dropout_p}, "
            f"norm_type={self.norm_type!r})"
        )


class _PlainTeacher(Teacher):
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

    Self-loops come only from the data (method §2.1, §10.1 item 13). Embedding: after the ReLU.

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

    def adjacency(self, edge_index: Tensor, num_nodes: int) -> Tensor:
        """``D^-1/2 A D^-1/2`` (in-degrees, no added self-loops) as CSR ``adj_t``."""
        return gcn_adjacency(edge_index, num_nodes)

    def _propagate(self, conv: Any, h: Tensor, adj_t: Tensor) -> Tensor:
        # GCNConv.forward with the normalisation done once: lin, propagate, bias.
        out = spmm(adj_t, conv.lin(h))
        return out if conv.bias is None else out + conv.bias


class SAGETeacher(_PlainTeacher):
    """GraphSAGE with DGL's ``gcn`` aggregator (method §2.1).

    ``SAGEConv(aggr="mean", root_weight=False)`` over the edges plus one appended self-loop per
    node: ``W · (Σ_neighbours h + h_self) / (in_degree + 1) + b``. A node whose graph already has
    a self-loop is counted twice, as in DGL. Hidden: norm -> ReLU -> dropout; embedding before
    the norm. The reference path caches its augmented edge index for the last ``edge_index``.

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
        def with_loops() -> Tensor:
            loops = torch.arange(num_nodes, device=edge_index.device, dtype=edge_index.dtype)
            return torch.cat([edge_index, loops.expand(2, -1)], dim=1)

        return self._per_graph("_loop_cache", edge_index, num_nodes, with_loops)

    def adjacency(self, edge_index: Tensor, num_nodes: int) -> Tensor:
        """Mean over in-edges plus one appended self-loop per node, as CSR ``adj_t``.

        Its transpose (for the backward) is built here too, before training needs the memory.
        """
        adj_t = sage_adjacency(edge_index, num_nodes)
        transposed(adj_t)
        return adj_t

    def _propagate(self, conv: Any, h: Tensor, adj_t: Tensor) -> Tensor:
        # SAGEConv.forward for aggr="mean", root_weight=False, project=False, normalize=False:
        # lin_l(mean of the neighbours), the mean being adj_t's weights (multi-edges included).
        if conv.project or conv.root_weight or conv.normalize:
            raise ValueError("the sparse SAGE path needs SAGEConv(root_weight=False), as built")
        return sparse_linear(adj_t, h, conv.lin_l.weight, conv.lin_l.bias)


class GATTeacher(Teacher):
    """GAT with ``heads`` attention heads (PyG defaults); hidden: norm -> ReLU -> dropout.

    Embedding before the norm. Not part of the reference (method §2).

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

    def adjacency(self, edge_index: Tensor, num_nodes: int) -> Tensor:
        """The attended edges (data self-loops replaced by one per node), CSR by target."""
        return gat_adjacency(edge_index, num_nodes)

    def _propagate(self, conv: nn.Module, h: Tensor, adj_t: Tensor) -> Tensor:
        return gat_conv_chunked(conv, h, adj_t)
