"""The teachers' sparse path (issue 20 item 4): same function and gradients as PyG's convs over
``edge_index``, no edges x features tensor kept for backward, the adjacency built once."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from rbm_tune.config import TeacherSpec
from rbm_tune.models import build_teacher
from rbm_tune.models.adjacency import gat_adjacency, is_adjacency
from rbm_tune.models.gat_chunked import _bounds, gat_conv_chunked
from rbm_tune.models.teachers import GCNTeacher, SAGETeacher
from rbm_tune.teacher import train_teacher
from rbm_tune.teacher_cache import TEACHER_CODE_VERSION

N, LINKED, IN_DIM, OUT_DIM, HIDDEN = 40, 32, 7, 4, 12  # nodes LINKED..N-1 are isolated
KINDS = ["directed", "symmetric", "no-self-loops", "all-self-loops"]


def random_graph(kind: str, seed: int = 0, edges: int = 150) -> tuple[Tensor, Tensor]:
    """Features (N, IN_DIM) and random edges among the first LINKED nodes: multi-edges and some
    self-loops included unless ``kind`` says otherwise; the last N - LINKED nodes isolated."""
    gen = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(LINKED, (2, edges), generator=gen)
    edge_index[:, :10] = edge_index[:, 10:20]  # ten duplicate edges
    edge_index[1, 20:25] = edge_index[0, 20:25]  # five self-loops
    if kind == "symmetric":
        edge_index = torch.cat([edge_index, edge_index.flip(0)], dim=1)
    elif kind == "no-self-loops":
        edge_index = edge_index[:, edge_index[0] != edge_index[1]]
    elif kind == "all-self-loops":
        loops = torch.arange(N).expand(2, -1)
        edge_index = torch.cat([edge_index[:, edge_index[0] != edge_index[1]], loops], dim=1)
    perm = torch.randperm(edge_index.size(1), generator=gen)
    return torch.randn(N, IN_DIM, generator=gen), edge_index[:, perm]


def _pair(name: str, num_layers: int, norm: str, dropout: float, device: torch.device):
    spec = TeacherSpec(
        model=name,
        num_layers=num_layers,
        hidden_dim=HIDDEN,
        heads=3,
        dropout=dropout,
        norm_type=norm,
    )
    torch.manual_seed(1)
    model = build_teacher(spec, IN_DIM, OUT_DIM).to(device)
    return model, copy.deepcopy(model)


def _assert_same(sparse: torch.nn.Module, ref: torch.nn.Module, run) -> None:
    out_s, out_r = run(sparse, "sparse"), run(ref, "ref")
    assert torch.allclose(out_s.logits, out_r.logits, atol=1e-5, rtol=1e-5)
    assert torch.allclose(out_s.embedding, out_r.embedding, atol=1e-5, rtol=1e-5)
    loss_s = out_s.logits.logsumexp(-1).sum() + out_s.embedding.square().mean()
    loss_r = out_r.logits.logsumexp(-1).sum() + out_r.embedding.square().mean()
    loss_s.backward()
    loss_r.backward()
    grads = dict(ref.named_parameters())
    for pname, p in sparse.named_parameters():
        g_ref = grads[pname].grad
        assert p.grad is not None and g_ref is not None, pname
        assert torch.allclose(p.grad, g_ref, atol=1e-5, rtol=1e-5), pname


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["gcn", "sage", "gat"])
@pytest.mark.parametrize("num_layers,norm", [(1, "none"), (2, "batch"), (3, "layer")])
@pytest.mark.parametrize("train", [False, True])
def test_sparse_path_equals_edge_index_path(
    kind: str, name: str, num_layers: int, norm: str, train: bool, device: torch.device
) -> None:
    x, edge_index = (t.to(device) for t in random_graph(kind, seed=num_layers))
    # Feature dropout draws the same masks on both paths (same seed, same order); GAT's
    # attention dropout draws one per edge in another order, so it is compared without.
    dropout = 0.4 if train and name != "gat" else 0.0
    sparse, ref = _pair(name, num_layers, norm, dropout, device)
    sparse.train(train)
    ref.train(train)
    adj_t = sparse.adjacency(edge_index, N)
    assert is_adjacency(adj_t)

    def run(model, path):
        torch.manual_seed(5)
        if path == "sparse":
            return model(x, adj_t)
        return model.forward_edge_index(x, edge_index)

    _assert_same(sparse, ref, run)
    # An edge_index goes through the same sparse path (converted once, cached).
    torch.manual_seed(5)
    again = sparse(x, edge_index).logits
    torch.manual_seed(5)
    assert torch.allclose(again, sparse(x, adj_t).logits, atol=1e-6)
    assert sparse._adjacency_of(edge_index, N) is sparse._adjacency_of(edge_index, N)
    assert copy.deepcopy(sparse)._adj_cache is None


def _saved_numels(model: torch.nn.Module, x: Tensor, edges: Tensor, ref: bool) -> list[int]:
    """Sizes of every tensor autograd keeps for the backward of one training forward."""
    sizes: list[int] = []

    def pack(t: Tensor) -> Tensor:
        sizes.append(t.numel())
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model.forward_edge_index(x, edges) if ref else model(x, edges)
    out.logits.sum().backward()
    return sizes


@pytest.mark.parametrize("name", ["gcn", "sage", "gat"])
def test_no_edges_x_features_tensor_is_kept_for_backward(name: str) -> None:
    x, edge_index = random_graph("directed", edges=3000)  # |E| >> N
    edges = edge_index.size(1)
    model, ref = _pair(name, 2, "batch", 0.5, torch.device("cpu"))
    # Every feature width the layers see is >= IN_DIM: an |E| x width tensor has this many.
    edge_rows = edges * IN_DIM
    assert max(_saved_numels(ref, x, edge_index, ref=True)) >= edge_rows  # PyG's messages
    assert max(_saved_numels(model, x, model.adjacency(edge_index, N), ref=False)) < edge_rows


def test_gat_chunks_equal_one_chunk_and_pyg(device: torch.device) -> None:
    from torch_geometric.nn import GATConv

    x, edge_index = (t.to(device) for t in random_graph("symmetric"))
    torch.manual_seed(0)
    conv = GATConv(IN_DIM, 5, heads=3, concat=True).to(device)
    adj_t = gat_adjacency(edge_index, N)
    crow = adj_t.crow_indices().tolist()
    assert len(_bounds(crow, 16)) > 5  # 16 edges a slice: many slices
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref = conv(x1, edge_index)
    # chunk_bytes is raised to the node features' size: a tiny budget means slices of about
    # N * heads * channels / (heads * channels) = N edges
    out = gat_conv_chunked(conv, x2, adj_t, chunk_bytes=1)
    assert torch.allclose(out, ref, atol=1e-5)
    ref.square().sum().backward()
    out.square().sum().backward()
    assert x1.grad is not None and x2.grad is not None
    assert torch.allclose(x2.grad, x1.grad, atol=1e-5)


def test_gat_chunked_training_dropout_matches_in_backward() -> None:
    """Recomputed slices draw the same attention-dropout mask: the gradient equals that of the
    forward that was taken (checked against a finite difference of the same seeded forward)."""
    from torch_geometric.nn import GATConv

    x, edge_index = random_graph("directed")
    x = x.double()
    torch.manual_seed(0)
    conv = GATConv(IN_DIM, 4, heads=2, dropout=0.5).double().train()
    adj_t = gat_adjacency(edge_index, N)
    xg = x.clone().requires_grad_()
    torch.manual_seed(3)
    gat_conv_chunked(conv, xg, adj_t, chunk_bytes=1).sum().backward()
    assert xg.grad is not None
    eps, (i, j) = 1e-6, (3, 2)
    values = []
    for sign in (1, -1):
        xp = x.clone()
        xp[i, j] += sign * eps
        torch.manual_seed(3)
        with torch.no_grad():
            values.append(gat_conv_chunked(conv, xp, adj_t, chunk_bytes=1).sum())
    assert abs(float((values[0] - values[1]) / (2 * eps)) - float(xg.grad[i, j])) < 1e-6


def test_train_teacher_builds_each_adjacency_once(
    tiny_graph, tiny_inductive_graph, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    original = SAGETeacher.adjacency

    def counting(self, edge_index: Tensor, num_nodes: int) -> Tensor:
        calls.append(num_nodes)
        return original(self, edge_index, num_nodes)

    monkeypatch.setattr(SAGETeacher, "adjacency", counting)
    spec = TeacherSpec(model="sage", num_layers=2, hidden_dim=16, max_epochs=4, patience=10)
    out = train_teacher(spec, tiny_graph, seed=0)
    assert out.epochs == 4 and calls == [tiny_graph.num_nodes]
    calls.clear()
    train_teacher(spec, tiny_inductive_graph, seed=0)
    assert sorted(calls) == sorted([len(tiny_inductive_graph.observed_idx), 120])


def test_train_teacher_outputs_match_the_edge_index_path(tiny_graph) -> None:
    """What the cache stores is the same function as before: teacher outputs of the trained
    model agree with its reference path, so the cache key (code version) stays."""
    assert TEACHER_CODE_VERSION == 1  # bump only when what teachers compute changes
    spec = TeacherSpec(model="gcn", num_layers=2, hidden_dim=16, max_epochs=3, patience=10)
    out = train_teacher(spec, tiny_graph, seed=0)
    assert out.state_dict is not None
    model = GCNTeacher(
        tiny_graph.num_features,
        tiny_graph.num_classes,
        num_layers=2,
        hidden_dim=16,
        dropout=spec.dropout,
        norm_type=spec.norm_type,
    )
    model.load_state_dict(out.state_dict)
    model.eval()
    with torch.no_grad():
        ref = model.forward_edge_index(tiny_graph.x, tiny_graph.edge_index)
    assert torch.allclose(out.log_probs, F.log_softmax(ref.logits, -1), atol=1e-5)
    assert torch.allclose(out.embedding, ref.embedding, atol=1e-5)


def _saved_activations(model: torch.nn.Module, x: Tensor, edges: Tensor, ref: bool) -> int:
    """Distinct (N, HIDDEN) tensors autograd keeps for the backward of a training forward."""
    ptrs: set[int] = set()

    def pack(t: Tensor) -> Tensor:
        if t.layout == torch.strided and tuple(t.shape) == (N, HIDDEN):
            ptrs.add(t.data_ptr())
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.forward_edge_index(x, edges) if ref else model(x, edges)
    return len(ptrs)


def test_sage_keeps_two_activations_per_hidden_layer() -> None:
    """Batch norm's input and the ReLU-dropout output (the next layer's input): not the
    aggregate, the ReLU output and the dropout mask as well (PyG's path keeps four)."""
    x, edge_index = random_graph("symmetric")
    model, ref = _pair("sage", 3, "batch", 0.5, torch.device("cpu"))
    assert _saved_activations(model, x, model.adjacency(edge_index, N), ref=False) == 2 * 2
    assert _saved_activations(ref, x, edge_index, ref=True) >= 4 * 2
