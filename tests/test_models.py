"""Contract suite over every student and teacher (method §2.1, §3; acceptance check §11.2)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from rbm_tune.config import StudentSpec, TeacherSpec
from rbm_tune.errors import ConfigError
from rbm_tune.kmeans import kmeans
from rbm_tune.models import (
    STUDENTS,
    TEACHERS,
    MoE,
    RbM,
    StudentOutput,
    TeacherOutput,
    build_student,
    build_teacher,
)
from rbm_tune.models.teachers import GCNTeacher, SAGETeacher

IN_DIM, OUT_DIM, HIDDEN, ROWS = 10, 3, 16, 48

# (name, StudentSpec overrides): every student, plus the variants with their own code paths.
VARIANTS = {
    "mlp": {"model": "mlp"},
    "moe": {"model": "moe"},
    "moe-noisy_topk": {"model": "moe", "router": "noisy_topk"},
    "moe-shared": {"model": "moe", "expert_dropout": "shared"},
    "rbm": {"model": "rbm"},
    "rbm-input_attention": {"model": "rbm", "input_attention": True},
    "rbm-shared": {"model": "rbm", "expert_dropout": "shared"},
    "rbm-k1-layer": {"model": "rbm", "k": 1, "norm_type": "layer", "num_layers": 3},
    "mlp-batch": {"model": "mlp", "norm_type": "batch"},
    "moe-batch": {"model": "moe", "norm_type": "batch"},
    "rbm-batch": {"model": "rbm", "norm_type": "batch"},
}
KMEANS = {"kmeans_restarts": 2, "kmeans_max_iter": 20}


def _spec(variant: str, **extra: object) -> StudentSpec:
    values = {
        "hidden_dim": HIDDEN,
        "num_experts": 4,
        "k": 2,
        "dropout": 0.2,
        "vq_coef": 0.05,
        "sim_coef": 0.01,
        "load_balance_coef": 0.01,
        **VARIANTS[variant],
        **extra,
    }
    return StudentSpec.from_mapping(values)


def _features(device: torch.device, rows: int = ROWS, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, IN_DIM, generator=torch.Generator().manual_seed(seed)).to(device)


def _switched(variant: str, device: torch.device, **extra: object) -> torch.nn.Module:
    model = build_student(_spec(variant, **extra), IN_DIM, OUT_DIM, feature_encoder=True)
    model = model.to(device)
    model.end_pretraining(_features(device), **KMEANS)
    return model


def _check_output(out: StudentOutput, model: torch.nn.Module, rows: int) -> None:
    assert isinstance(out, StudentOutput)
    assert out.embedding.shape == (rows, model.embedding_dim)
    assert out.logits.shape == (rows, OUT_DIM)
    assert out.aux.shape == ()
    for t in out:
        assert torch.isfinite(t).all()


def test_registry_names() -> None:
    assert sorted(STUDENTS) == ["mlp", "moe", "rbm"]
    assert sorted(TEACHERS) == ["gat", "gcn", "sage"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_student_shapes_in_every_phase_and_mode(variant: str, device: torch.device) -> None:
    torch.manual_seed(0)
    model = build_student(_spec(variant), IN_DIM, OUT_DIM).to(device)
    x = _features(device)
    assert model.is_pretraining == (VARIANTS[variant]["model"] != "mlp")
    _check_output(model(x), model, ROWS)
    model.end_pretraining(x, **KMEANS)
    assert not model.is_pretraining
    assert model.training  # the switch restores the mode
    out = model(x)
    _check_output(out, model, ROWS)
    if VARIANTS[variant]["model"] == "mlp":
        assert out.aux.item() == 0.0
    else:
        assert out.aux.item() != 0.0
    model.eval()
    out = model(x)
    _check_output(out, model, ROWS)
    assert out.aux.item() == 0.0
    assert f"({IN_DIM}, {OUT_DIM}" in repr(model)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_gradients_reach_every_parameter(variant: str, device: torch.device) -> None:
    torch.manual_seed(0)
    model = _switched(variant, device)
    model.train()
    out = model(_features(device, seed=1))
    z = model.similarity_features(out.embedding)
    loss = out.logits.logsumexp(-1).mean() + out.aux + z.pow(2).mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_same_seed_same_outputs(variant: str, device: torch.device) -> None:
    def run() -> list[torch.Tensor]:
        torch.manual_seed(123)
        model = _switched(variant, device)
        model.train()
        first = model(_features(device))
        second = model(_features(device))  # after one memory update
        return [*first, *second]

    for a, b in zip(run(), run()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cls", [MoE, RbM])
@pytest.mark.parametrize("k", [0, 4, 5])
def test_k_out_of_range_raises(cls: type, k: int) -> None:
    with pytest.raises(ValueError, match="lower k or raise num_experts"):
        cls(IN_DIM, OUT_DIM, num_experts=4, k=k)


def test_k_not_below_experts_is_a_config_error_and_unknown_names_list_choices() -> None:
    with pytest.raises(ConfigError, match="lower k"):
        StudentSpec(model="rbm", num_experts=3, k=3)
    spec = StudentSpec(model="mlp")
    object.__setattr__(spec, "model", "gnn")
    with pytest.raises(ConfigError, match=r"choose one of \['mlp', 'moe', 'rbm'\]"):
        build_student(spec, IN_DIM, OUT_DIM)
    teacher = TeacherSpec()
    object.__setattr__(teacher, "model", "gin")
    with pytest.raises(ConfigError, match=r"choose one of \['gat', 'gcn', 'sage'\]"):
        build_teacher(teacher, IN_DIM, OUT_DIM)


@pytest.mark.parametrize("variant", ["mlp-batch", "moe-batch", "rbm-batch"])
def test_batchnorm_student_accepts_one_row_chunk(variant: str, device: torch.device) -> None:
    model = build_student(_spec(variant), IN_DIM, OUT_DIM).to(device)
    model.train()
    x = _features(device)
    _check_output(model(x[:1]), model, 1)
    model.end_pretraining(x, **KMEANS)
    _check_output(model(x[:1]), model, 1)


@pytest.mark.parametrize("input_attention", [False, True])
def test_switch_scales_each_layer_by_s_and_gate(
    input_attention: bool, device: torch.device
) -> None:
    """method §11.2: after the switch, layer(h) = s · linear_pretrained(g · h), s = 2, g = 1.1."""
    torch.manual_seed(0)
    model = RbM(
        IN_DIM,
        OUT_DIM,
        num_layers=3,
        hidden_dim=HIDDEN,
        dropout=0.0,
        num_experts=4,
        k=2,
        input_attention=input_attention,
    ).to(device)
    before = copy.deepcopy(model)
    model.end_pretraining(_features(device), **KMEANS)
    model.eval()
    before.eval()
    gain = 1.1 if input_attention else 1.0
    for layer, old in zip(model.layers, before.layers):
        h = torch.randn(20, layer.in_dim, device=device)
        expected = 2.0 * old(gain * h)[0]
        assert torch.allclose(layer(h)[0], expected, atol=1e-5)


def test_switch_inputs_follow_switched_layers(device: torch.device) -> None:
    """Layer l's memory is clustered from the outputs of the already switched layers < l."""
    torch.manual_seed(0)
    model = RbM(IN_DIM, OUT_DIM, num_layers=2, hidden_dim=HIDDEN, dropout=0.0, num_experts=3, k=1)
    model = model.to(device)
    x = _features(device)
    model.end_pretraining(x, batch_size=7, **KMEANS)
    model.eval()
    h = F.relu(model.layers[0](x)[0])
    # layer 2's memory: the normalised k-means centres (seed 0 + 1) of its inputs, i.e. of the
    # switched layer 1's outputs after ReLU
    memory = model.layers[1].memory
    centres = kmeans(F.normalize(h, dim=1), 3, restarts=2, max_iter=20, seed=1)
    assert torch.allclose(memory, F.normalize(centres, dim=1), atol=1e-5)
    assert torch.allclose(memory.norm(dim=1), torch.ones(3, device=device), atol=1e-5)


def test_memory_update_switch_and_eval_freeze(device: torch.device) -> None:
    model = _switched("rbm", device)
    x = _features(device, seed=2)
    memory = [layer.memory.detach().clone() for layer in model.layers]
    model.eval()
    model(x)
    assert all(torch.equal(m, layer.memory) for m, layer in zip(memory, model.layers))
    model.train()
    model.update_memory = False
    model(x)
    assert all(torch.equal(m, layer.memory) for m, layer in zip(memory, model.layers))
    model.update_memory = True
    model(x)
    assert not any(torch.equal(m, layer.memory) for m, layer in zip(memory, model.layers))


def test_two_forwards_then_one_backward(device: torch.device) -> None:
    """The EMA of a later forward must not invalidate an earlier forward's graph."""
    model = _switched("rbm", device)
    x = _features(device)
    loss = model(x).aux + model(x).aux
    loss.backward()
    assert all(layer.memory.grad is not None for layer in model.layers)


@pytest.mark.parametrize("variant", ["moe", "rbm"])
def test_phase_travels_with_state_dict(variant: str) -> None:
    pre = build_student(_spec(variant), IN_DIM, OUT_DIM, feature_encoder=True)
    snapshot = {k: v.detach().clone() for k, v in pre.state_dict().items()}
    post = _switched(variant, torch.device("cpu"))
    post.load_state_dict(snapshot)
    assert post.is_pretraining


def _tiny_graph(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    src = torch.randint(0, 30, (80,), generator=gen)
    dst = torch.randint(0, 30, (80,), generator=gen)
    ring = torch.arange(30)
    edge_index = torch.cat(
        [torch.stack([src, dst]), torch.stack([dst, src]), torch.stack([ring, (ring + 1) % 30])]
        + [torch.stack([(ring + 1) % 30, ring])],
        dim=1,
    )
    x = torch.randn(30, IN_DIM, generator=gen)
    return x.to(device), edge_index.to(device)


@pytest.mark.parametrize("name", sorted(TEACHERS))
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_teacher_contract(name: str, num_layers: int, device: torch.device) -> None:
    x, edge_index = _tiny_graph(device)
    spec = TeacherSpec(model=name, num_layers=num_layers, hidden_dim=HIDDEN, heads=2, dropout=0.3)

    def run() -> tuple[torch.nn.Module, TeacherOutput]:
        torch.manual_seed(0)
        teacher = build_teacher(spec, IN_DIM, OUT_DIM).to(device)
        return teacher, teacher(x, edge_index)

    teacher, out = run()
    width = HIDDEN if num_layers > 1 else IN_DIM
    assert isinstance(out, TeacherOutput)
    assert out.logits.shape == (30, OUT_DIM) and out.embedding.shape == (30, width)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.embedding).all()
    again = run()[1].logits
    # PyG aggregates with float atomics on CUDA: equal up to summation order there.
    assert torch.equal(again, out.logits) or (
        device.type == "cuda" and torch.allclose(again, out.logits, atol=1e-6)
    )
    out.logits.logsumexp(-1).mean().backward()
    for pname, p in teacher.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


def _mean_aggregate(x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """DGL 'gcn' aggregator by hand: (Σ_in-neighbours x + x_self) / (in_degree + 1)."""
    n = x.shape[0]
    adj = torch.zeros(n, n, device=x.device)
    adj.index_put_(
        (edge_index[1], edge_index[0]),
        torch.ones(edge_index.shape[1], device=x.device),
        accumulate=True,
    )
    return (adj @ x + x) / (adj.sum(1, keepdim=True) + 1)


def test_sage_reproduces_dgl_gcn_aggregator_with_double_self_loop(device: torch.device) -> None:
    x, edge_index = _tiny_graph(device)
    loops = torch.arange(5, device=device).expand(2, -1)  # nodes 0-4 already have a self-loop
    edge_index = torch.cat([edge_index, loops], dim=1)
    teacher = SAGETeacher(IN_DIM, OUT_DIM, num_layers=2, hidden_dim=HIDDEN, dropout=0.0).to(device)
    teacher.eval()
    out = teacher(x, edge_index)
    lin0, lin1 = teacher.gnn.convs[0].lin_l, teacher.gnn.convs[1].lin_l
    hidden = lin0(_mean_aggregate(x, edge_index))
    assert torch.allclose(out.embedding, hidden, atol=1e-5)  # before the ReLU
    logits = lin1(_mean_aggregate(F.relu(hidden), edge_index))
    assert torch.allclose(out.logits, logits, atol=1e-5)
    assert teacher._edges(edge_index, 30) is teacher._edges(edge_index, 30)  # cached
    assert copy.deepcopy(teacher)._loop_cache is None


def test_gcn_uses_symmetric_norm_without_added_self_loops(device: torch.device) -> None:
    x, edge_index = _tiny_graph(device)
    teacher = GCNTeacher(IN_DIM, OUT_DIM, num_layers=2, hidden_dim=HIDDEN, dropout=0.0).to(device)
    teacher.eval()
    n = x.shape[0]
    adj = torch.zeros(n, n, device=device)
    adj.index_put_(
        (edge_index[1], edge_index[0]),
        torch.ones(edge_index.shape[1], device=device),
        accumulate=True,
    )
    d = adj.sum(1).pow(-0.5)
    a_hat = d[:, None] * adj * d[None, :]
    conv = teacher.gnn.convs[0]
    hidden = F.relu(a_hat @ conv.lin(x) + conv.bias)
    out = teacher(x, edge_index)
    assert torch.allclose(out.embedding, hidden, atol=1e-5)  # after the ReLU
