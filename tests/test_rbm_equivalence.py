"""The vectorised RbM layer equals a plain per-expert loop (acceptance check §11.1, method §10.3).

``LoopRbMLayer`` is the oracle: method §3.3 steps 1-7 written straightforwardly, one expert at a
time with index lists and host-side branching, the way the reference code does it.
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rbm_tune.models.base import ExpertBank
from rbm_tune.models.dropout_mask import keep_mask as _keep_mask
from rbm_tune.models.dropout_mask import quantised as _quantised
from rbm_tune.models.experts import grouped_mix, use_grouped
from rbm_tune.models.moe import MoELayer
from rbm_tune.models.rbm import RbMLayer

ATOL = 1e-5


def _cv_squared(v: Tensor) -> Tensor:
    v = v.float()
    return v.var() / (v.mean() ** 2 + 1e-10)


class LoopRbMLayer(nn.Module):
    """method §3.3 after pretraining, one expert at a time; ``masks`` emulates expert dropout."""

    def __init__(self, layer: RbMLayer) -> None:
        super().__init__()
        self.k = layer.k
        self.num_experts = layer.num_experts
        self.momentum = layer.momentum
        self.coeffs = (layer.vq_coef, layer.sim_coef, layer.load_balance_coef)
        self.memory = nn.Parameter(layer.memory.detach().clone())
        self.experts = nn.ModuleList()
        for e in range(self.num_experts):
            lin = nn.Linear(layer.in_dim, layer.out_dim)
            lin.weight.data.copy_(layer.experts.weight[e].detach())
            lin.bias.data.copy_(layer.experts.bias[e].detach())
            self.experts.append(lin)
        self.scale_logit = nn.Parameter(layer.scale_logit.detach().clone())
        gate = layer.gate_logit
        self.gate_logit = None if gate is None else nn.Parameter(gate.detach().clone())

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``mask``: (k, B, d_in) per (slot, node) dropout masks, or None for no dropout."""
        batch = x.shape[0]
        memory = F.normalize(self.memory, dim=1).detach()  # step 1
        x_hat = F.normalize(x, dim=1)
        cos = x_hat @ memory.T  # step 2
        top_v, top_i = cos.topk(self.k, dim=-1, sorted=True)  # step 3
        w = torch.softmax(top_v, dim=-1)  # step 4
        attention = torch.zeros_like(cos).scatter(1, top_i, w)
        gates = (
            torch.ones_like(self.memory)
            if self.gate_logit is None
            else self.gate_logit.clamp(max=math.log(100)).exp()
        )
        out = x.new_zeros(batch, self.experts[0].out_features)
        for e in range(self.num_experts):  # step 5
            rows, slots = (top_i == e).nonzero(as_tuple=True)
            if rows.numel() == 0:
                continue
            inp = gates[e] * x[rows]
            if mask is not None:
                inp = inp * mask[slots, rows]
            y = attention[rows, e : e + 1].detach() * self.experts[e](inp)
            out = out.index_add(0, rows, y)
        out = out * self.scale_logit.clamp(max=math.log(100)).exp()
        with torch.no_grad():  # step 6
            averages = []
            for e in range(self.num_experts):
                rows = (top_i == e).any(1).nonzero(as_tuple=True)[0]
                a = torch.softmax(attention[rows, e], dim=0)
                averages.append((a[:, None] * x_hat[rows]).sum(0))
            self.memory.data = self.momentum * memory + (1 - self.momentum) * torch.stack(averages)
        vq_coef, sim_coef, lb_coeff = self.coeffs  # step 7
        vq = 0.0
        for j in range(self.k):
            vq = vq + w[:, j] * (-x_hat * memory[top_i[:, j]]).sum(-1)
        aux = vq_coef * vq.mean()
        m = F.normalize(self.memory, dim=1)
        aux = aux + sim_coef * (m @ m.T.detach()).mean()
        aux = aux + lb_coeff * _cv_squared(attention.sum(0))
        return out, aux


class FixedMask(nn.Module):
    """A stand-in for ``nn.Dropout`` that multiplies by a given mask (so both sides agree)."""

    def __init__(self, mask: Tensor) -> None:
        super().__init__()
        self.p = 0.5
        self.mask = mask

    def forward(self, x: Tensor) -> Tensor:
        return x * self.mask


def _layer(*, input_attention: bool, k: int = 2, num_experts: int = 4) -> RbMLayer:
    torch.manual_seed(0)
    layer = RbMLayer(
        6,
        5,
        num_experts=num_experts,
        k=k,
        momentum=0.9,
        vq_coef=0.05,
        sim_coef=0.02,
        load_balance_coef=0.03,
        input_attention=input_attention,
        dropout=0.0,
        pretraining=False,
    )
    with torch.no_grad():
        if input_attention:  # gates that differ per expert and feature
            layer.gate_logit.uniform_(-0.5, 0.5)
        layer.scale_logit.fill_(0.3)
    return layer


def _inputs(batch: int, *, starve_last_expert: bool, layer: RbMLayer) -> Tensor:
    x = torch.randn(batch, 6, generator=torch.Generator().manual_seed(1))
    if starve_last_expert:
        x = x.abs() + 0.1  # all inputs in the positive orthant ...
        with torch.no_grad():  # ... and the last expert's memory points away from it
            layer.memory[-1] = -torch.ones(6)
            layer.memory[:-1] = layer.memory[:-1].abs()
    return x


def _compare(layer: RbMLayer, x: Tensor, masks: tuple[Tensor | None, Tensor | None]) -> None:
    """Run both layers on x, backpropagate the same loss, compare everything."""
    oracle = LoopRbMLayer(layer)
    layer.train()
    oracle.train()
    r = torch.randn(x.shape[0], 5, generator=torch.Generator().manual_seed(2))
    x_fast = x.clone().requires_grad_(True)
    x_loop = x.clone().requires_grad_(True)
    if masks[0] is not None:
        layer.dropout = FixedMask(masks[0])
    out_fast, aux_fast = layer(x_fast)
    out_loop, aux_loop = oracle(x_loop, masks[1])
    assert torch.allclose(out_fast, out_loop, atol=ATOL)
    assert torch.allclose(aux_fast, aux_loop, atol=ATOL)
    assert torch.allclose(layer.memory, oracle.memory, atol=ATOL)
    ((out_fast * r).sum() + aux_fast).backward()
    ((out_loop * r).sum() + aux_loop).backward()
    assert torch.allclose(x_fast.grad, x_loop.grad, atol=ATOL)
    assert torch.allclose(layer.memory.grad, oracle.memory.grad, atol=ATOL)
    assert torch.allclose(layer.scale_logit.grad, oracle.scale_logit.grad, atol=ATOL)
    for e, expert in enumerate(oracle.experts):  # an unused loop expert has no grad at all
        for fast, loop in (
            (layer.experts.weight, expert.weight),
            (layer.experts.bias, expert.bias),
        ):
            expected = torch.zeros_like(loop) if loop.grad is None else loop.grad
            assert torch.allclose(fast.grad[e], expected, atol=ATOL)
    if oracle.gate_logit is not None:
        assert torch.allclose(layer.gate_logit.grad, oracle.gate_logit.grad, atol=ATOL)


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("input_attention", [False, True])
@pytest.mark.parametrize("starve_last_expert", [False, True])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_vectorised_layer_equals_loop(
    input_attention: bool, starve_last_expert: bool, k: int, grouped: bool
) -> None:
    layer = _layer(input_attention=input_attention, k=k)
    layer.grouped = grouped  # dense single GEMM, or pairs sorted by expert
    x = _inputs(12, starve_last_expert=starve_last_expert, layer=layer)
    if starve_last_expert:
        chosen = (F.normalize(x, dim=1) @ F.normalize(layer.memory, dim=1).T).topk(k).indices
        assert not (chosen == layer.num_experts - 1).any()  # the case really has an empty expert
    _compare(layer, x, (None, None))


def test_empty_expert_keeps_its_direction() -> None:
    layer = _layer(input_attention=False)
    x = _inputs(12, starve_last_expert=True, layer=layer)
    before = F.normalize(layer.memory.detach().clone(), dim=1)[-1]
    layer.train()
    layer(x)
    assert torch.allclose(layer.memory[-1], 0.9 * before, atol=1e-6)


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("input_attention", [False, True])
def test_per_pair_dropout_masks_each_node_expert_pair(
    input_attention: bool, grouped: bool
) -> None:
    layer = _layer(input_attention=input_attention, k=3)
    layer.grouped = grouped
    x = _inputs(10, starve_last_expert=False, layer=layer)
    gen = torch.Generator().manual_seed(5)
    mask = (torch.rand(3, 10, 6, generator=gen) > 0.5).float() * 2.0
    _compare(layer, x, (mask, mask))


@pytest.mark.parametrize("grouped", [False, True])
def test_shared_dropout_uses_one_mask_per_node(grouped: bool) -> None:
    layer = _layer(input_attention=True, k=2)
    layer.grouped = grouped
    layer.expert_dropout = "shared"
    x = _inputs(10, starve_last_expert=False, layer=layer)
    mask = (torch.rand(10, 6, generator=torch.Generator().manual_seed(6)) > 0.5).float() * 2.0
    _compare(layer, x, (mask, mask.expand(2, 10, 6)))


def test_real_dropout_per_pair_masks_differ_between_a_nodes_experts() -> None:
    """Identity experts on all-ones input: output = 2 Σ_j w_ij m_ij per feature (p = 0.5).

    One shared mask per node gives only 0 or 2; independent per-pair masks also give 2 w_ij.
    """
    layer = RbMLayer(
        8,
        8,
        num_experts=3,
        k=2,
        vq_coef=0.0,
        sim_coef=0.0,
        load_balance_coef=0.0,
        dropout=0.5,
        pretraining=False,
    )
    with torch.no_grad():
        layer.experts.weight.copy_(torch.eye(8).expand(3, 8, 8))
        layer.experts.bias.zero_()
    layer.train()
    x = torch.ones(64, 8)

    def all_or_nothing(y: Tensor) -> bool:
        return bool(
            (torch.isclose(y, torch.zeros(())) | torch.isclose(y, torch.full((), 2.0))).all()
        )

    torch.manual_seed(0)
    per_pair = layer(x)[0] / 2.0  # s = 2
    layer.expert_dropout = "shared"
    shared = layer(x)[0] / 2.0
    assert all_or_nothing(shared)
    assert not all_or_nothing(per_pair)


@pytest.mark.parametrize("per_pair", [False, True])
def test_grouped_mix_equals_dense_mix_with_differentiable_weights(per_pair: bool) -> None:
    """The grouped dispatch's hand-written backward, also for the mixing weights and gates."""
    torch.manual_seed(0)
    bank = ExpertBank(4, 5, 3).double()
    index = torch.stack([torch.randperm(3)[:2] for _ in range(7)])  # expert 3 gets no row
    leaves = [
        torch.randn(7, 5, dtype=torch.double, requires_grad=True),  # x
        torch.rand(7, 2, dtype=torch.double, requires_grad=True),  # mixing weights
        bank.weight,
        bank.bias,
        torch.rand(4, 5, dtype=torch.double, requires_grad=True),  # gates
    ]
    no_dropout = nn.Dropout(0.0)

    def grouped(x: Tensor, w: Tensor, weight: Tensor, bias: Tensor, gate: Tensor) -> Tensor:
        fake = nn.Module()
        fake.weight, fake.bias, fake.num_experts = weight, bias, 4
        return grouped_mix(
            x, index, w, bank=fake, dropout=no_dropout, per_pair=per_pair, gate=gate
        )

    x, w, _, _, gate = leaves
    dense = bank.mix(x, index, w, dropout=no_dropout, per_pair=per_pair, gate=gate)
    assert torch.allclose(grouped(*leaves), dense, atol=1e-12)
    assert torch.autograd.gradcheck(grouped, tuple(leaves))


def test_grouped_mix_draws_per_pair_dropout_inside_with_a_consistent_backward() -> None:
    """Real ``nn.Dropout``, per pair: the mask drawn inside the grouped step; gradcheck with a
    fixed seed (same mask on every call), and the kept share and the 1/(1-p) scale are right."""
    torch.manual_seed(0)
    bank = ExpertBank(4, 6, 3).double()
    index = torch.stack([torch.randperm(4)[:3] for _ in range(9)])
    dropout = nn.Dropout(0.5)
    x = torch.randn(9, 6, dtype=torch.double, requires_grad=True)
    w = torch.rand(9, 3, dtype=torch.double, requires_grad=True)

    def grouped(x: Tensor, w: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        torch.manual_seed(1)
        fake = nn.Module()
        fake.weight, fake.bias, fake.num_experts = weight, bias, 4
        return grouped_mix(x, index, w, bank=fake, dropout=dropout, per_pair=True)

    assert torch.autograd.gradcheck(grouped, (x, w, bank.weight, bank.bias))
    # identity experts, zero bias, one-hot weights on slot 0: output = drop(x) of one pair
    ones = nn.Module()
    ones.weight = torch.eye(64).expand(4, 64, 64)
    ones.bias, ones.num_experts = torch.zeros(4, 64), 4
    pick = torch.zeros(2000, 3)
    pick[:, 0] = 1.0
    chosen = torch.stack([torch.randperm(4)[:3] for _ in range(2000)])
    out = grouped_mix(
        torch.ones(2000, 64), chosen, pick, bank=ones, dropout=dropout, per_pair=True
    )
    assert set(out.unique().tolist()) == {0.0, 2.0}
    assert abs((out == 0).float().mean().item() - 0.5) < 0.01


@pytest.mark.parametrize("p", [0.05, 0.2, 0.5])
def test_keep_mask_drops_each_element_independently_with_probability_p(p: float) -> None:
    """16 random bits per decision: each of the 4 lanes of a 64-bit draw drops with probability
    p (within 5 standard errors), neighbours independently, p realised to within 2^-17."""
    torch.manual_seed(0)
    keep = _keep_mask((4096, 1001), p, torch.empty(0))  # 1001 columns: lanes straddle rows
    assert keep.dtype == torch.float32 and set(keep.unique().tolist()) == {0.0, 1.0}
    assert abs(_quantised(p) - p) <= 2**-17
    flat = 1.0 - keep.view(-1)
    quarter = flat.numel() // 4
    se = math.sqrt(p * (1 - p) / quarter)
    for lane in range(4):
        assert abs(flat[lane::4].mean().item() - p) < 5 * se, lane
    both = (flat[:-1] * flat[1:]).mean().item()  # neighbours: P(both dropped) = p^2
    assert abs(both - p * p) < 5 * math.sqrt(p * p * (1 - p * p) / quarter)
    again = _keep_mask((4096, 1001), p, torch.empty(0))
    assert not torch.equal(keep, again)  # a fresh mask per call
    torch.manual_seed(0)
    assert torch.equal(keep, _keep_mask((4096, 1001), p, torch.empty(0)))  # seeded


def test_grouped_mix_under_bf16_autocast_runs_in_bf16_with_float32_gradients() -> None:
    torch.manual_seed(0)
    bank = ExpertBank(5, 64, 32)
    x = torch.randn(300, 64, requires_grad=True)
    index = torch.stack([torch.randperm(5)[:3] for _ in range(300)])
    w = torch.softmax(torch.randn(300, 3), 1)
    dropout = nn.Dropout(0.0)
    exact = grouped_mix(x, index, w, bank=bank, dropout=dropout, per_pair=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = grouped_mix(x, index, w, bank=bank, dropout=dropout, per_pair=True)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), exact, atol=0.05, rtol=0.02)
    out.float().sum().backward()
    assert bank.weight.grad is not None and bank.weight.grad.dtype == torch.float32
    assert x.grad is not None and x.grad.dtype == torch.float32
    (g_exact,) = torch.autograd.grad(exact.sum(), bank.weight)
    assert torch.allclose(bank.weight.grad, g_exact, atol=0.5, rtol=0.05)


def test_moe_dense_dispatch_equals_loop() -> None:
    torch.manual_seed(0)
    layer = MoELayer(6, 5, num_experts=4, k=2, router_dim=8, dropout=0.0, pretraining=False)
    layer.eval()  # deterministic routing: no router noise
    x = torch.randn(12, 6)
    route = layer.router(x)
    expected = torch.zeros(12, 5)
    for e in range(4):
        rows, slots = (route.experts == e).nonzero(as_tuple=True)
        y = route.weight[rows, slots, None] * layer.experts.single(x[rows], e)
        expected = expected.index_add(0, rows, y)
    expected = expected * layer.scale_logit.exp()
    assert torch.allclose(layer(x)[0], expected, atol=ATOL)
    assert route.experts.shape == (12, 3)  # the reference router uses k + 1 experts


@pytest.mark.parametrize("router", ["reference", "noisy_topk"])
def test_moe_grouped_dispatch_equals_dense_with_router_gradients(router: str) -> None:
    """The MoE layer's grouped dispatch (the CPU default) computes what the dense one does:
    outputs, balance loss and every gradient (the router's through the mixing weights), in
    pretraining, training (router noise seeded alike) and eval."""
    torch.manual_seed(0)
    grouped = MoELayer(6, 5, num_experts=4, k=2, router_dim=8, dropout=0.0, router=router)
    dense = MoELayer(6, 5, num_experts=4, k=2, router_dim=8, dropout=0.0, router=router)
    dense.load_state_dict(grouped.state_dict())
    grouped.grouped, dense.grouped = True, False
    if router == "noisy_topk":  # W_g = 0 at init would tie every logit
        for layer in (grouped, dense):
            torch.manual_seed(3)
            nn.init.normal_(layer.router.w_gate, 0.0, 0.5)
            nn.init.normal_(layer.router.w_noise, 0.0, 0.5)
    x = torch.randn(40, 6)
    for switched, training in [(False, True), (True, True), (True, False)]:
        results = []
        for layer in (grouped, dense):
            if switched:
                layer.end_pretraining()
            layer.train(training)
            torch.manual_seed(1)
            y, aux = layer(x)
            loss = (y * torch.linspace(-1, 1, 5)).square().sum() + aux
            params = [p for p in layer.parameters() if p.requires_grad]
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            results.append([y.detach(), aux.detach(), *[g for g in grads if g is not None]])
        assert len(results[0]) == len(results[1]) >= 4
        for a, b in zip(*results):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    pick = partial(use_grouped, x=x, training=True, dropout=grouped.dropout, k=3)
    assert pick(grouped.grouped, per_pair=True) and not pick(dense.grouped, per_pair=True)
    assert pick(None, per_pair=False)  # auto: grouped on the CPU


def test_moe_pretraining_sends_contiguous_slices_to_experts() -> None:
    torch.manual_seed(0)
    layer = MoELayer(6, 5, num_experts=4, k=2, router_dim=8, dropout=0.0)
    x = torch.randn(10, 6)
    slices = torch.tensor_split(torch.arange(10), 4)
    expected = torch.cat([layer.experts.single(x[s], e) for e, s in enumerate(slices)]) * 2.0
    out, aux = layer(x)
    assert torch.allclose(out, expected, atol=ATOL)
    assert aux.item() == 0.0


def test_tracing_the_eval_mix_raises_no_tracer_warning() -> None:
    """``rbm-tune export`` traces the student in eval mode: the per-pair dropout branch is
    decided by module flags before any traced size is compared (no TracerWarning)."""
    import warnings

    class Mix(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bank, self.dropout = ExpertBank(4, 6, 3), nn.Dropout(0.5)
            self.register_buffer("index", torch.tensor([[0, 1], [2, 3], [1, 0]]))
            self.register_buffer("weight", torch.full((3, 2), 0.5))

        def forward(self, x: Tensor) -> Tensor:
            return self.bank.mix(
                x, self.index, self.weight, dropout=self.dropout, per_pair=True, sparse=False
            )

    mix = Mix().eval()

    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)
        with torch.no_grad():
            traced = torch.jit.trace(mix, torch.rand(3, 6), check_trace=False)
    x = torch.rand(3, 6)
    assert torch.allclose(traced(x), mix(x))
