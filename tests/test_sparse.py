"""The CSR path for sparse input features (rbm_tune/models/sparse.py): when it is taken, and
that it computes the same function and gradients as the dense GEMMs."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rbm_tune.config import TrialConfig
from rbm_tune.data import load_graph
from rbm_tune.distill import train_student
from rbm_tune.models import build_student
from rbm_tune.models.base import ExpertBank
from rbm_tune.models.rbm import grouped_mix
from rbm_tune.models.sparse import (
    SPARSE_MAX_DENSITY,
    CsrRows,
    SparseFeatures,
    forbid_sparse,
    sparse_input,
    sparse_linear,
)
from rbm_tune.teacher import TeacherOutputs


def bag_of_words(
    rows: int, cols: int, density: float, seed: int = 0, dtype=torch.double
) -> Tensor:
    """Sparse non-negative features with the given share of non-zeros, some rows empty."""
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(rows, cols, generator=gen) < density).to(dtype)
    x *= torch.rand(rows, cols, generator=gen, dtype=dtype) + 0.5
    x[::7] = 0.0  # rows without any non-zero
    return x


def ran_csr(fn) -> bool:
    """Whether ``fn()`` built a sparse CSR tensor (the profiler's record of the ops it ran)."""
    with torch.profiler.profile() as prof:
        fn()
    return any("sparse_compressed_tensor" in e.name for e in prof.events())


def test_sparse_input_takes_sparse_inputs_without_gradient_only() -> None:
    x = bag_of_words(200, 500, 0.01, dtype=torch.float32)
    assert float((x != 0).float().mean()) <= SPARSE_MAX_DENSITY
    assert sparse_input(x)
    assert not sparse_input(torch.randn(200, 500))  # dense features
    assert not sparse_input(x, force=False)
    assert sparse_input(torch.randn(200, 500), force=True)
    assert not sparse_input(x.clone().requires_grad_())  # a hidden layer's input
    with torch.no_grad():
        assert sparse_input(x.clone().requires_grad_())  # evaluation: no gradient needed
    assert not sparse_input(x.half())
    assert not sparse_input(x[:0])
    assert not sparse_input(x.unsqueeze(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert sparse_input(x)  # the CSR products then run in float32
    just_above = torch.zeros(100, 100)
    just_above.view(-1)[: int(SPARSE_MAX_DENSITY * 10_000) + 1] = 1.0
    assert not sparse_input(just_above)
    just_above.view(-1)[0] = 0.0
    assert sparse_input(just_above)


def test_csr_rows_gathers_any_rows() -> None:
    x = bag_of_words(50, 40, 0.1)
    csr = CsrRows.of(x)
    assert csr.val.numel() == int((x != 0).sum())
    for rows in (
        torch.arange(50),
        torch.tensor([3, 3, 0, 49, 7, 14]),
        torch.tensor([], dtype=torch.long),
    ):
        assert torch.equal(csr.take(rows).matrix().to_dense(), x[rows])
    empty = CsrRows.of(torch.zeros(5, 4))
    assert torch.equal(empty.take(torch.tensor([1, 2])).matrix().to_dense(), torch.zeros(2, 4))


def test_sparse_linear_equals_linear_with_gradients() -> None:
    x = bag_of_words(60, 30, 0.05)
    for bias in (True, False):
        layer = nn.Linear(30, 8, bias=bias).double()
        dense = layer(x)
        (g_dense,) = torch.autograd.grad((dense * dense).sum(), [layer.weight])
        assert ran_csr(partial(sparse_linear, x, layer.weight, layer.bias))
        out = sparse_linear(x, layer.weight, layer.bias)
        assert torch.allclose(out, dense, atol=1e-12)
        assert torch.autograd.gradcheck(
            lambda w, b: sparse_linear(x, w, b), (layer.weight, layer.bias)
        )
        (g,) = torch.autograd.grad((out * out).sum(), [layer.weight])
        assert torch.allclose(g, g_dense, atol=1e-10)


@pytest.mark.parametrize("per_pair", [False, True])
def test_grouped_mix_sparse_equals_dense_with_gradients(per_pair: bool) -> None:
    """No dropout: the CSR path is the dense path's function, gradients to the experts, the
    gates and the mixing weights included; an expert without rows is handled."""
    torch.manual_seed(0)
    bank = ExpertBank(5, 300, 16).double()
    x = bag_of_words(90, 300, 0.015)
    index = torch.stack([torch.randperm(4)[:3] for _ in range(90)])  # expert 4 gets no row
    w = torch.softmax(torch.randn(90, 3, dtype=torch.double), 1).requires_grad_()
    gate = torch.rand(5, 300, dtype=torch.double, requires_grad=True)
    no_dropout = nn.Dropout(0.0)
    leaves = [bank.weight, bank.bias, gate, w]

    def run(sparse: bool) -> list[Tensor]:
        out = grouped_mix(
            x, index, w, bank=bank, dropout=no_dropout, per_pair=per_pair, gate=gate, sparse=sparse
        )
        loss = (out * torch.linspace(-1, 1, 16, dtype=torch.double)).sum() + (out**2).sum()
        return [out.detach(), *torch.autograd.grad(loss, leaves)]

    assert ran_csr(lambda: run(True)) and not ran_csr(lambda: run(False))
    for a, b in zip(run(True), run(False)):
        assert torch.allclose(a, b, atol=1e-10)

    # gradcheck of the CSR path on a smaller layer
    small = ExpertBank(5, 60, 3).double()
    xs = bag_of_words(30, 60, 0.05)
    idx = torch.stack([torch.randperm(4)[:3] for _ in range(30)])
    mix = torch.rand(30, 3, dtype=torch.double, requires_grad=True)
    g = torch.rand(5, 60, dtype=torch.double, requires_grad=True)

    def fn(weight: Tensor, bias: Tensor, gates: Tensor, m: Tensor) -> Tensor:
        fake = nn.Module()
        fake.weight, fake.bias, fake.num_experts = weight, bias, 5
        return grouped_mix(
            xs, idx, m, bank=fake, dropout=no_dropout, per_pair=per_pair, gate=gates, sparse=True
        )

    assert torch.autograd.gradcheck(fn, (small.weight, small.bias, g, mix))


def test_grouped_mix_sparse_dropout_drops_non_zeros_per_pair() -> None:
    """Per-pair dropout on CSR rows: each (node, expert) pair's non-zeros dropped i.i.d. with
    probability p and the rest scaled by 1/(1-p); a fixed seed gives a consistent backward."""
    p = 0.5
    dropout = nn.Dropout(p)
    ones = nn.Module()
    ones.weight = torch.eye(64).expand(4, 64, 64)
    ones.bias, ones.num_experts = torch.zeros(4, 64), 4
    x = bag_of_words(6000, 64, 0.015, dtype=torch.float32)
    x = (x != 0).float()
    pick = torch.zeros(6000, 3)
    pick[:, 0] = 1.0  # output = the dropped input of slot 0's pair
    chosen = torch.stack([torch.randperm(4)[:3] for _ in range(6000)])
    torch.manual_seed(0)
    out = grouped_mix(x, chosen, pick, bank=ones, dropout=dropout, per_pair=True, sparse=True)
    assert set(out.unique().tolist()) == {0.0, 2.0}
    assert torch.all(out[x == 0] == 0)  # zeros stay zero
    kept = (out[x != 0] != 0).float()
    se = math.sqrt(p * (1 - p) / kept.numel())
    assert kept.numel() > 4000 and abs(kept.mean().item() - (1 - p)) < 5 * se
    # gradients of the experts and the mixing weights under a fixed mask
    bank = ExpertBank(4, 64, 5).double()
    xd = x[:40].double()
    index = chosen[:40]
    w = torch.rand(40, 3, dtype=torch.double, requires_grad=True)

    def fn(weight: Tensor, bias: Tensor, mix: Tensor) -> Tensor:
        torch.manual_seed(1)
        fake = nn.Module()
        fake.weight, fake.bias, fake.num_experts = weight, bias, 4
        return grouped_mix(xd, index, mix, bank=fake, dropout=dropout, per_pair=True, sparse=True)

    assert torch.autograd.gradcheck(fn, (bank.weight, bank.bias, w))


@pytest.mark.parametrize("model", ["rbm", "mlp", "moe"])
def test_students_on_sparse_features_match_dense_in_training_and_eval(model: str) -> None:
    """A student's forward and parameter gradients with the CSR path (auto) equal those with
    it forbidden, before and after the RbM/MoE switch, in train and eval mode (no dropout)."""
    from rbm_tune.config import StudentSpec

    spec = StudentSpec(model=model, num_layers=3, hidden_dim=32, dropout=0.0, num_experts=4, k=2)
    x = bag_of_words(120, 400, 0.012, dtype=torch.float32)
    torch.manual_seed(0)
    auto = build_student(spec, 400, 5)
    off = build_student(spec, 400, 5)
    off.load_state_dict(auto.state_dict())
    forbid_sparse(off)
    phases = [False, True] if model != "mlp" else [False]
    for switched in phases:
        if switched:
            for student in (auto, off):
                student.end_pretraining(x, seed=0, kmeans_restarts=1, kmeans_max_iter=5)
        for training in (True, False):
            results = []
            for student in (auto, off):
                student.train(training)
                state = {k: v.clone() for k, v in student.state_dict().items()}
                torch.manual_seed(1)  # the MoE router noise: the same draws for both
                out = student(x)
                loss = out.logits.square().sum() + out.aux
                grads = torch.autograd.grad(
                    loss, [p for p in student.parameters() if p.requires_grad], allow_unused=True
                )
                results.append([out.logits.detach(), *[g for g in grads if g is not None]])
                student.load_state_dict(state)  # the EMA moved the memory: undo it
            assert len(results[0]) == len(results[1])
            for a, b in zip(*results):
                assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    auto.train()
    assert ran_csr(lambda: auto(x))
    assert not ran_csr(lambda: off(x))


@pytest.mark.parametrize(
    "distill",
    [
        {"mode": "fast", "eval_nodes": "all"},
        {"mode": "fast", "eval_nodes": "needed", "batch_size": 1000},  # chunks: row blocks
        {"mode": "reference", "eval_nodes": "needed", "batch_size": 1000},  # gathered chunks
    ],
)
def test_train_student_on_cora_sparse_auto_matches_off(shared_data, cache_dir, distill) -> None:
    """Real Cora (1.3 % non-zeros): ``sparse_features: auto`` runs the CSR path and trains
    like ``off`` (no dropout: the same random stream; float sums in another order), whole
    batch or chunks, reference or fast epochs, every node or the needed ones evaluated."""
    graph = load_graph("cora", root=shared_data, cache_dir=cache_dir)
    assert sparse_input(graph.x)
    n, c = graph.num_nodes, graph.num_classes
    gen = torch.Generator().manual_seed(0)
    # a teacher that knows the labels (soft): training targets without training a GNN here
    logits = 3.0 * F.one_hot(graph.y, c).float() + torch.randn(n, c, generator=gen)
    teacher = TeacherOutputs(
        log_probs=logits.log_softmax(1),
        embedding=torch.randn(n, 8, generator=gen),
        krd_delta=torch.zeros(n),
        val_acc=1.0,
        test_acc=1.0,
        test_acc_oracle=1.0,
        best_epoch=1,
        epochs=1,
        seconds=0.0,
    )
    runs = {}
    for mode in ("auto", "off"):
        cfg = TrialConfig.from_mapping(
            {
                "dataset": "cora",
                "student": {
                    "model": "rbm",
                    "hidden_dim": 32,
                    "num_experts": 4,
                    "k": 2,
                    "dropout": 0.0,
                },
                "distill": {
                    "max_epochs": 8,
                    "pretrain_epochs": 2,
                    "lr": 0.05,
                    **distill,
                    "sparse_features": mode,
                    "kmeans_restarts": 1,
                },
            }
        )
        used = ran_csr(
            partial(lambda m, c: runs.__setitem__(m, train_student(c, graph, teacher)), mode, cfg)
        )
        assert used == (mode == "auto")
    a, b = runs["auto"].history, runs["off"].history
    assert len(a) == len(b) == 10
    for ma, mb in zip(a, b):
        assert math.isclose(ma["train_loss"], mb["train_loss"], rel_tol=1e-4)
        assert abs(ma["val_acc"] - mb["val_acc"]) <= 0.004  # at most 2 of 500 nodes
    assert runs["auto"].val_acc > 0.5  # it learned (chance: 1/7)


def test_sparse_features_hand_out_the_csr_of_row_blocks_and_gathered_rows() -> None:
    x = bag_of_words(100, 300, 0.01, dtype=torch.float32)
    features = SparseFeatures(x)
    assert features.is_sparse
    assert torch.equal(features.csr.matrix().to_dense(), x)
    block = features.block(20, 60)
    assert features.block(20, 60) is block  # cached per block, with its transpose
    assert torch.equal(block.matrix().to_dense(), x[20:60])
    assert torch.equal(block.transposed().to_dense(), x[20:60].t())
    assert features.block(0, 100) is features.csr
    for rows in (torch.tensor([89, 3, 3, 0, 42]), torch.tensor([-2, 3, -100]), x[:, 0] == 0):
        assert torch.equal(features.take(rows).matrix().to_dense(), x[rows])
        gathered = features.gather(rows)
        assert torch.equal(gathered.x, x[rows])
        assert torch.equal(gathered.block(1, 3).matrix().to_dense(), x[rows][1:3])
    # no CSR (every lookup None): dense, switched off, off the CPU's dtypes, empty
    for off in (
        SparseFeatures(torch.randn(50, 300)),
        SparseFeatures(x, enabled=False),
        SparseFeatures(x.half()),
        SparseFeatures(x[:0]),
    ):
        pick = torch.arange(off.x.shape[0])[:1]
        assert not off.is_sparse and off.block(0, 5) is None
        assert off.take(pick) is None and off.gather(pick).csr is None
    with torch.inference_mode():  # no version counter needed any more: usable as any tensor
        frozen = bag_of_words(50, 200, 0.01, dtype=torch.float32)
    assert torch.equal(SparseFeatures(frozen).block(5, 9).matrix().to_dense(), frozen[5:9])


def test_sparse_linear_dropout_drops_only_non_zeros() -> None:
    x = (bag_of_words(3000, 64, 0.015, dtype=torch.float32) != 0).float()
    eye = torch.eye(64)
    torch.manual_seed(0)
    out = sparse_linear(x, eye, None, 0.5)
    assert set(out.unique().tolist()) <= {0.0, 2.0}
    assert torch.all(out[x == 0] == 0)
    kept = (out[x != 0] != 0).float()
    assert abs(kept.mean().item() - 0.5) < 5 * math.sqrt(0.25 / kept.numel())
    w = torch.randn(5, 64, dtype=torch.double, requires_grad=True)
    b = torch.randn(5, dtype=torch.double, requires_grad=True)
    xd = x[:50].double()

    def fn(weight: Tensor, bias: Tensor) -> Tensor:
        torch.manual_seed(1)
        return sparse_linear(xd, weight, bias, 0.3)

    assert torch.autograd.gradcheck(fn, (w, b))


def test_bf16_autocast_keeps_the_csr_first_layer_in_float32() -> None:
    """Under bf16 autocast the sparse first layer still takes the CSR path (in float32) and
    the layers after it run in bf16: the logits are close to float32's."""
    from rbm_tune.config import StudentSpec

    x = bag_of_words(200, 500, 0.012, dtype=torch.float32)
    for model in ("rbm", "mlp"):
        spec = StudentSpec(
            model=model, num_layers=3, hidden_dim=64, dropout=0.0, num_experts=4, k=2
        )
        torch.manual_seed(0)
        student = build_student(spec, 500, 5)
        if model == "rbm":
            student.end_pretraining(x, seed=0, kmeans_restarts=1, kmeans_max_iter=5)
        student.eval()
        exact = student(x).logits

        def half(net: nn.Module = student) -> Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return net(x).logits

        assert ran_csr(half)
        out = half()
        assert out.dtype == torch.bfloat16
        assert torch.allclose(out.float(), exact, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("model", ["rbm", "mlp", "moe"])
def test_a_csr_handed_in_gives_the_outputs_of_the_scanned_path_without_a_scan(model: str) -> None:
    """No registry: a student handed ``csr=`` (the CSR of x's rows) computes exactly what it
    computes from x alone (the CSR found by a scan) — outputs, aux and gradients bit for bit,
    dropout included (the same random draws) — and close to the dense path; with the CSR it
    counts no non-zeros, without it the first layer does; in eval and through the switch too."""
    from rbm_tune.config import StudentSpec

    spec = StudentSpec(model=model, num_layers=3, hidden_dim=32, dropout=0.3, num_experts=4, k=2)
    x = bag_of_words(120, 400, 0.012, dtype=torch.float32)
    features = SparseFeatures(x)
    torch.manual_seed(0)
    student = build_student(spec, 400, 5)
    twin = build_student(spec, 400, 5)
    twin.load_state_dict(student.state_dict())
    if model != "mlp":  # the switch: its layer-1 forwards with the CSR handed in or scanned
        kmeans = dict(batch_size=50, seed=0, kmeans_restarts=1, kmeans_max_iter=5)
        student.end_pretraining(x, csr=features.csr, **kmeans)
        twin.end_pretraining(x, **kmeans)
        assert not student.is_pretraining
        for a, b in zip(student.state_dict().values(), twin.state_dict().values()):
            assert torch.equal(a, b)
    dense = build_student(spec, 400, 5)
    dense.load_state_dict(student.state_dict())
    forbid_sparse(dense)

    def run(rows: slice, csr: CsrRows | None, training: bool, net: nn.Module = student):
        net.train(training)
        state = {k: v.clone() for k, v in net.state_dict().items()}
        torch.manual_seed(1)
        out = net(x[rows], csr=csr)
        found = [out.logits.detach(), out.aux.detach()]
        if training:
            loss = out.logits.square().sum() + out.aux
            grads = torch.autograd.grad(loss, list(net.parameters()), allow_unused=True)
            found += [g for g in grads if g is not None]
        net.load_state_dict(state)  # the EMA moved the memory: undo it
        return found

    def counts_non_zeros(fn) -> bool:
        with torch.profiler.profile() as prof:
            fn()
        return any("count_nonzero" in e.name for e in prof.events())

    for rows in (slice(0, 120), slice(30, 90)):
        handed = features.block(rows.start, rows.stop)
        for training in (True, False):
            with_csr = run(rows, handed, training)
            scanned = run(rows, None, training)
            assert len(with_csr) == len(scanned) > 1
            for a, b in zip(with_csr, scanned):
                assert torch.equal(a, b)
            if not training:  # no dropout: the dense path is the same function
                for a, b in zip(with_csr, run(rows, None, training, dense)):
                    assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
        # in training too: on the CPU the expert students' dispatch is grouped, which
        # draws the per-pair dropout on the CSR's values
        assert ran_csr(partial(run, rows, handed, True))
        assert not counts_non_zeros(partial(run, rows, handed, True))
        assert counts_non_zeros(partial(run, rows, None, True))
