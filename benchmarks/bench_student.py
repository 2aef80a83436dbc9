"""Student epoch time: per-expert-loop RbM vs rbm-tune's RbM (reference / fast mode) vs an MLP.

One run, side by side, on synthetic graphs of Cora size (2,708 x 1,433, 7 classes, 140/500/1000
split) and ogbn-arxiv size (169,343 x 128, 40 classes, 90,941/29,799/48,603 split), with the
paper's ogbn-arxiv RbM settings: hidden 1024, E = 5 experts, k = 3, 3 layers, batch 4096,
dropout 0.2 (per (node, expert) pair), batch norm, one Adam step per epoch. Variants:

(a) oracle: the per-expert loop of ``tests/test_rbm_equivalence.py`` (``LoopRbMLayer``, method §3.3
    one expert at a time with ``nonzero`` index lists) stacked into a 3-layer student, trained in
    the paper's code style: an epoch is CE chunks over the train nodes + KD chunks over all
    nodes (gradients accumulated, ``loss.item()`` per chunk), one Adam step, then a chunked
    full-graph evaluation (method §4.3).
(b) rbm-tune's RbM through ``rbm_tune.distill.train_student`` in ``reference`` mode (same epoch).
(c) the same in ``fast`` mode (one forward per node per epoch, spec-weighted terms) with
    ``eval_nodes: needed`` (validation nodes each epoch, test nodes at a new best validation
    accuracy, train accuracy on a 4,096-node sample).
(d) an MLP of the same width and depth, ``fast`` mode and ``eval_nodes: needed`` like (c) (its
    own dropout 0.2, batch norm).
(e) (c) with ``precision: bf16`` (bfloat16 autocast; float32 parameters and losses): not part
    of the targets, which compare float32 runs; its GEMM floor is still at the float32 rate.

Epoch times of (b)-(d) come from the ``epoch_seconds`` of ``train_student``'s reports; epoch 1
is dropped (it contains the pretraining switch: k-means, cut down here to one restart on a
subsample, and allocator warm-up). The oracle starts switched (random memory) and runs one
untimed warm-up chunk; all its epochs count. The GEMM floor of a variant is the FLOP count of
its expert/linear matmuls per epoch (forward 2·n·d_in·d_out, backward twice that, no input
gradient for layer 1; k experts per node for RbM; train-node rows forwarded a second time for
the reference epoch; one eval forward of all nodes for (a)/(b), of the validation nodes and the
train sample for (c)/(d), test nodes not counted) divided by the measured float32 matmul rate
(4096x1024 @ 1024x1024, same thread count). Routing, dropout, norms, losses and the
optimiser are not in the floor.

    nice -n 19 python benchmarks/bench_student.py [--sizes cora arxiv] [--epochs N]
        [--oracle-epochs N] [--device cpu|cuda] [--threads T] [--variants a b c d e]
        [--feature-density D [D ...]] [--wait-quiet S] [--out FILE]

``--feature-density 1 0.0127`` adds a table with binary features as sparse as Cora's (1.27 %
non-zero), where rbm-tune's students multiply the first layer's non-zeros only
(``rbm_tune/models/sparse.py``); the oracle, like the paper's code, multiplies dense rows.

On a shared machine pass ``--wait-quiet S``: each variant waits up to S seconds for the machine
to go idle; the "other load" column says how much CPU other processes took during a variant.

Targets (issue 7, on a CPU): (c) at least 2.5x faster than (a), and (c) within 1.3x of k x (d).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from arxiv_synthetic import fake_teacher  # noqa: E402
from test_rbm_equivalence import LoopRbMLayer  # noqa: E402

from rbm_tune.config import DistillSpec, StudentSpec, TrialConfig  # noqa: E402
from rbm_tune.data import Graph, make_graph  # noqa: E402
from rbm_tune.distill import TRAIN_ACC_SAMPLE, train_student  # noqa: E402
from rbm_tune.metrics import EPOCH_SECONDS  # noqa: E402
from rbm_tune.models.norm import make_norm  # noqa: E402
from rbm_tune.models.rbm import RbMLayer  # noqa: E402
from rbm_tune.teacher import TeacherOutputs  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Size:
    """A synthetic graph's shape: nodes, features, classes, train/val/test sizes."""

    dataset: str
    nodes: int
    features: int
    classes: int
    train: int
    val: int
    test: int
    epochs: int  # default epochs per variant (epoch 1 of train_student is dropped)


SIZES = {
    "cora": Size("cora", 2708, 1433, 7, 140, 500, 1000, epochs=6),
    "arxiv": Size("ogbn-arxiv", 169_343, 128, 40, 90_941, 29_799, 48_603, epochs=3),
}

# The paper's ogbn-arxiv RbM student (hidden, E, k, layers as in the issue; dropout / norm /
# coefficients / lr / λ from rbm_tune/configs/ogbn-arxiv-transductive-sage-rbm.yaml).
HIDDEN, EXPERTS, K, LAYERS, BATCH = 1024, 5, 3, 3, 4096
DROPOUT, NORM = 0.2, "batch"
COEFFS = dict(momentum=0.9, vq_coef=0.05, sim_coef=0.01, load_balance_coef=1e-7)
LR, LABEL_WEIGHT, TEMPERATURE = 0.005, 0.2, 1.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine from /proc/stat, or None off Linux."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    return sum(values) - values[3] - values[4], sum(values)


class OtherLoad:
    """Share of the machine's CPU time used by *other* processes while a variant ran.

    ``(busy jiffies of the machine - this process's CPU time) / total jiffies``: 0 on an idle
    machine; on a 2-core machine 0.5 means another process held about one core throughout.
    """

    def __enter__(self) -> OtherLoad:
        self.start, self.cpu = _cpu_jiffies(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        end, cpu = _cpu_jiffies(), time.process_time()
        self.share = float("nan")
        if self.start is not None and end is not None and end[1] > self.start[1]:
            tick = os.sysconf("SC_CLK_TCK")
            busy = end[0] - self.start[0] - (cpu - self.cpu) * tick
            self.share = max(busy, 0.0) / (end[1] - self.start[1])


def wait_quiet(limit_s: float, log: Callable[[str], None], threshold: float = 0.1) -> None:
    """Wait (at most ``limit_s``) until the machine is idle for two 5 s windows in a row."""
    deadline, quiet = time.monotonic() + limit_s, 0
    while limit_s > 0 and time.monotonic() < deadline:
        a = _cpu_jiffies()
        time.sleep(5)
        b = _cpu_jiffies()
        if a is None or b is None:
            return
        quiet = quiet + 1 if (b[0] - a[0]) / max(b[1] - a[1], 1) < threshold else 0
        if quiet >= 2:
            return
    if limit_s > 0:
        log(f"  machine still busy after {limit_s:.0f} s; measuring anyway")


@dataclass
class Timing:
    """Per-epoch wall-clock seconds and this process's CPU seconds (all threads)."""

    wall: list[float]
    cpu: list[float]


# -- synthetic data --------------------------------------------------------------------------
def synthetic(size: Size, seed: int = 0, density: float = 1.0) -> tuple[Graph, TeacherOutputs]:
    """Random features/labels of the given size, a split of the standard sizes, fake teacher.

    ``density`` 1: standard normal features; below 1: binary bag-of-words-like features, each
    element 1 with that probability (Cora's share of non-zeros is 0.0127).
    """
    gen = torch.Generator().manual_seed(seed)
    n = size.nodes
    if density >= 1.0:
        x = torch.randn(n, size.features, generator=gen)
    else:
        x = (torch.rand(n, size.features, generator=gen) < density).float()
    y = torch.randint(size.classes, (n,), generator=gen)
    y[: size.classes] = torch.arange(size.classes)
    perm = torch.randperm(n, generator=gen)
    a, b = size.train, size.train + size.val
    split = tuple(part.sort().values for part in (perm[:a], perm[a:b], perm[b : b + size.test]))
    ring = torch.arange(n)
    edges = torch.stack([ring, (ring + 1) % n])  # unused by the students; Graph needs edges
    graph = make_graph(x, y, edges, name=size.dataset, split=split)
    teacher = fake_teacher(n, size.classes, 16, seed=seed + 1)
    return graph, teacher


# -- (a) the per-expert loop oracle, paper code style ----------------------------------------
class OracleLayer(LoopRbMLayer):
    """``LoopRbMLayer`` with the reference's per-(node, expert) input dropout and an eval path.

    Training: the oracle's forward (method §3.3 steps 1-7, one expert at a time) with a fresh
    dropout mask per (slot, node) — one independent mask per chosen (node, expert) pair, as the
    reference's ``Dropout`` inside each expert draws. Eval: steps 1-5 with the frozen memory (the
    same loop), no EMA, no aux.
    """

    def __init__(self, layer: RbMLayer, dropout: float) -> None:
        super().__init__(layer)
        self.p = dropout

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.training:
            if self.p > 0:
                shape = (self.k, x.shape[0], x.shape[1])
                mask = x.new_empty(shape).bernoulli_(1 - self.p).div_(1 - self.p)
            return super().forward(x, mask)
        memory = F.normalize(self.memory, dim=1)
        top_v, top_i = (F.normalize(x, dim=1) @ memory.T).topk(self.k, dim=-1)
        w = torch.softmax(top_v, dim=-1)
        out = x.new_zeros(x.shape[0], self.experts[0].out_features)
        for e in range(self.num_experts):
            rows, slots = (top_i == e).nonzero(as_tuple=True)
            if rows.numel() == 0:
                continue
            out = out.index_add(0, rows, w[rows, slots, None] * self.experts[e](x[rows]))
        return out * self.scale_logit.clamp(max=math.log(100)).exp(), x.new_zeros(())


class OracleStudent(nn.Module):
    """3-layer RbM student of :class:`OracleLayer` s; between layers norm -> ReLU (method §3.3)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        dims = [in_dim] + [HIDDEN] * (LAYERS - 1) + [out_dim]
        layers = []
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            rbm = RbMLayer(
                d_in, d_out, num_experts=EXPERTS, k=K, dropout=DROPOUT, pretraining=False, **COEFFS
            )
            layers.append(OracleLayer(rbm, DROPOUT))
        self.layers = nn.ModuleList(layers)
        self.norms = nn.ModuleList(make_norm(NORM, HIDDEN) for _ in dims[1:-1])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        aux = x.new_zeros(())
        for i, layer in enumerate(self.layers):
            x, layer_aux = layer(x)
            aux = aux + layer_aux
            if i < len(self.layers) - 1:
                x = F.relu(self.norms[i](x))
        return x, aux


def oracle_epochs(
    graph: Graph, teacher: TeacherOutputs, device: torch.device, epochs: int
) -> Timing:
    """Per-epoch seconds of the oracle, trained like the reference's ``main_distill.py``."""
    torch.manual_seed(0)
    model = OracleStudent(graph.num_features, graph.num_classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    x, y = graph.x.to(device), graph.y.to(device)
    train, val = graph.train_idx.to(device), graph.val_idx.to(device)
    logp_t = teacher.log_probs.to(device)
    n = x.shape[0]
    model.train()  # warm-up, not timed: one chunk forward + backward, one eval chunk
    logits, aux = model(x[:BATCH])
    (logits.logsumexp(-1).mean() + aux).backward()
    model.eval()
    with torch.no_grad():
        model(x[:BATCH])
    times = Timing([], [])
    for _ in range(epochs):
        _sync(device)
        tick, cpu = time.perf_counter(), time.process_time()
        model.train()
        opt.zero_grad()
        total = 0.0
        for s in range(0, train.numel(), BATCH):  # phase A: CE chunks over the train nodes
            rows = train[s : s + BATCH]
            logits, aux = model(x[rows])
            loss = LABEL_WEIGHT * F.nll_loss(F.log_softmax(logits, -1), y[rows]) + aux
            loss.backward()
            total += loss.item()
        for s in range(0, n, BATCH):  # phase B: KD chunks over all nodes
            rows = torch.arange(s, min(s + BATCH, n), device=device)
            if rows.numel() < 2:
                continue
            logits, aux = model(x[rows])
            logp = F.log_softmax(logits, -1) / TEMPERATURE
            kd = F.kl_div(logp, logp_t[rows] / TEMPERATURE, log_target=True, reduction="batchmean")
            loss = (1 - LABEL_WEIGHT) * kd + aux
            loss.backward()
            total += loss.item()
        opt.step()
        model.eval()  # full-graph evaluation, chunked
        with torch.no_grad():
            logits = torch.cat([model(x[s : s + BATCH])[0] for s in range(0, n, BATCH)])
            acc = [float((logits[i].argmax(-1) == y[i]).float().mean()) for i in (train, val)]
        _sync(device)
        times.wall.append(time.perf_counter() - tick)
        times.cpu.append(time.process_time() - cpu)
        if not math.isfinite(total) or not all(math.isfinite(a) for a in acc):
            raise FloatingPointError("oracle diverged")
    return times


# -- (b)-(d) through rbm_tune.distill.train_student ------------------------------------------
def trial(
    size: Size, model: str, mode: str, epochs: int, precision: str = "float32"
) -> TrialConfig:
    student = StudentSpec(
        model=model,
        num_layers=LAYERS,
        hidden_dim=HIDDEN,
        dropout=DROPOUT,
        norm_type=NORM,
        num_experts=EXPERTS,
        k=K,
        **COEFFS,
    )
    distill = DistillSpec(
        lr=LR,
        weight_decay=0.0,
        max_epochs=epochs,
        pretrain_epochs=0,
        patience=10 * epochs,
        label_weight=LABEL_WEIGHT,
        temperature=TEMPERATURE,
        mode=mode,
        eval_nodes="needed" if mode == "fast" else "all",  # (b) keeps §4.3's full evaluation
        precision=precision,
        batch_size=BATCH,
        kmeans_restarts=1,  # the switch (epoch 1, not timed) kept cheap
        kmeans_max_iter=10,
        kmeans_max_rows=4096,
    )
    return TrialConfig(dataset=size.dataset, student=student, distill=distill)


def student_epochs(
    config: TrialConfig, graph: Graph, teacher: TeacherOutputs, device: torch.device
) -> Timing:
    """Per-epoch seconds reported by ``train_student``, epoch 1 (the switch) dropped."""
    seen: list[dict[str, float]] = []
    cpu = [time.process_time()]

    def report(metrics: dict[str, float]) -> None:
        cpu.append(time.process_time())
        seen.append(metrics)

    train_student(config, graph, teacher, report=report, device=device)
    wall = [m[EPOCH_SECONDS] for m in seen]
    cpu_s = [b - a for a, b in zip(cpu[:-1], cpu[1:])]
    skip = 1 if len(wall) > 1 else 0
    return Timing(wall[skip:], cpu_s[skip:])


# -- GEMM floor -------------------------------------------------------------------------------
def matmul_rate(device: torch.device, repeats: int = 10) -> float:
    """Measured float32 GFLOP/s of a 4096x1024 @ 1024x1024 matmul (median of ``repeats``)."""
    a = torch.randn(4096, 1024, device=device)
    b = torch.randn(1024, 1024, device=device)
    for _ in range(3):
        torch.mm(a, b)
    times = []
    for _ in range(repeats):
        _sync(device)
        tick = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        times.append(time.perf_counter() - tick)
    return 2 * 4096 * 1024 * 1024 / statistics.median(times) / 1e9


def epoch_flops(
    size: Size, *, experts_per_node: int, train_rows: int, eval_rows: int | None = None
) -> float:
    """Matmul FLOPs of one epoch: fwd+bwd over ``train_rows`` rows, one eval forward of
    ``eval_rows`` rows (default: all nodes)."""
    dims = [size.features] + [HIDDEN] * (LAYERS - 1) + [size.classes]
    fwd = sum(2 * a * b for a, b in zip(dims[:-1], dims[1:]))
    bwd = 2 * fwd - 2 * dims[0] * dims[1]  # weight grads everywhere, input grads after layer 1
    eval_rows = size.nodes if eval_rows is None else eval_rows
    return experts_per_node * (train_rows * (fwd + bwd) + eval_rows * fwd)


# -- driver -----------------------------------------------------------------------------------
NAMES = {
    "a": "(a) per-expert loop oracle",
    "b": "(b) rbm-tune RbM, reference mode",
    "c": "(c) rbm-tune RbM, fast mode",
    "d": "(d) MLP, same width, fast mode",
    "e": "(e) = (c) with precision: bf16",
}


def bench_size(
    size: Size,
    epochs: int,
    oracle_epochs_n: int,
    variants: list[str],
    device: torch.device,
    wait_s: float,
    log: Callable[[str], None],
    density: float = 1.0,
) -> list[str]:
    """Time the variants on one synthetic graph; return the markdown lines for it."""
    graph, teacher = synthetic(size, density=density)
    data = (graph, teacher, device)
    ref_rows = size.train + size.nodes  # CE chunks + KD chunks
    # eval_nodes: needed — val nodes and the train sample (test nodes only at a new best val)
    needed = size.val + min(size.train, TRAIN_ACC_SAMPLE)
    flops = {
        "a": epoch_flops(size, experts_per_node=K, train_rows=ref_rows),
        "b": epoch_flops(size, experts_per_node=K, train_rows=ref_rows),
        "c": epoch_flops(size, experts_per_node=K, train_rows=size.nodes, eval_rows=needed),
        "d": epoch_flops(size, experts_per_node=1, train_rows=size.nodes, eval_rows=needed),
        "e": epoch_flops(size, experts_per_node=K, train_rows=size.nodes, eval_rows=needed),
    }
    runs: dict[str, Callable[[], Timing]] = {
        "a": lambda: oracle_epochs(graph, teacher, device, oracle_epochs_n),
        "b": lambda: student_epochs(trial(size, "rbm", "reference", epochs), *data),
        "c": lambda: student_epochs(trial(size, "rbm", "fast", epochs), *data),
        "d": lambda: student_epochs(trial(size, "mlp", "fast", epochs), *data),
        "e": lambda: student_epochs(trial(size, "rbm", "fast", epochs, "bf16"), *data),
    }
    timing: dict[str, Timing] = {}
    other: dict[str, float] = {}
    rates = []
    for v in variants:
        wait_quiet(wait_s, log)
        rates.append(matmul_rate(device))
        with OtherLoad() as load:
            timing[v] = runs[v]()
        other[v] = load.share
        log(
            f"  {size.dataset} {NAMES[v]}: epochs {[round(t, 3) for t in timing[v].wall]} s "
            f"(CPU {[round(t, 2) for t in timing[v].cpu]} s), other processes' CPU share "
            f"{other[v]:.2f}"
        )
    rate = statistics.median(rates)
    wall = {v: statistics.mean(t.wall) for v, t in timing.items()}
    cpu = {v: statistics.mean(t.cpu) for v, t in timing.items()}
    k_mlp = K * wall["d"] if "d" in wall else float("nan")
    features = (
        "standard normal features"
        if density >= 1.0
        else f"binary features, {100 * density:.2f} % non-zero (the CSR first layer of "
        "rbm_tune.models.sparse in (b)-(d); GEMM floors still count dense FLOPs)"
    )
    lines = [
        f"### {size.dataset} size: {size.nodes:,} nodes x {size.features:,} features, "
        f"{size.classes} classes, train/val/test {size.train:,}/{size.val:,}/{size.test:,}",
        "",
        f"{features}",
        "",
        f"float32 matmul 4096x1024 @ 1024x1024, measured before each variant: median "
        f"{rate:.1f} GFLOP/s (range {min(rates):.1f}-{max(rates):.1f})",
        "",
        "| variant | s/epoch | CPU s/epoch | (a) / this | this / (k x (d)) | GEMM floor s "
        "| this / floor | other load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for v in variants:
        t = wall[v]
        floor = flops[v] / (rate * 1e9)
        vs_a = wall["a"] / t if "a" in wall else float("nan")
        lines.append(
            f"| {NAMES[v]} | {t:.3f} | {cpu[v]:.2f} | {vs_a:.2f} | {t / k_mlp:.2f} "
            f"| {floor:.3f} | {t / floor:.2f} | {other[v]:.2f} |"
        )
    if "d" in wall:
        lines.append(f"| k x (d), k = {K} | {k_mlp:.3f} | {K * cpu['d']:.2f} | | 1.00 | | | |")
    lines.append("")
    if "c" in wall and "a" in wall:
        speedup = wall["a"] / wall["c"]
        verdict = "PASS" if speedup >= 2.5 else "FAIL"
        lines.append(
            f"- {verdict}: (c) is {speedup:.2f}x faster than (a) (target >= 2.5x; "
            f"by CPU time {cpu['a'] / cpu['c']:.2f}x)"
        )
    if "c" in wall and "d" in wall:
        ratio = wall["c"] / k_mlp
        verdict = "PASS" if ratio <= 1.3 else "FAIL"
        lines.append(
            f"- {verdict}: (c) takes {ratio:.2f}x k x (d) (target <= 1.3x; "
            f"by CPU time {cpu['c'] / (K * cpu['d']):.2f}x)"
        )
    lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    p.add_argument(
        "--epochs", type=int, help="train_student epochs per variant (default: per size)"
    )
    p.add_argument("--oracle-epochs", type=int, default=1, help="timed epochs of (a)")
    p.add_argument(
        "--feature-density",
        type=float,
        nargs="+",
        default=[1.0],
        metavar="D",
        help="1: normal features (default); below 1: binary features with that share of "
        "non-zeros (Cora: 0.0127), one table per value",
    )
    p.add_argument("--variants", nargs="+", choices=list("abcde"), default=list("abcde"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="before each variant wait up to S seconds for the machine to be idle",
    )
    p.add_argument("--out", type=Path, help="also write the output here (default: results/)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    out_lines: list[str] = []

    def emit(line: str = "") -> None:
        print(line, flush=True)
        out_lines.append(line)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    emit("# Student epoch time: per-expert-loop RbM vs rbm-tune RbM vs MLP")
    emit("")
    emit(
        f"device {device} ({name or platform.machine()}, {os.cpu_count()} CPUs), torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads"
    )
    emit(
        f"RbM: hidden {HIDDEN}, E = {EXPERTS}, k = {K}, {LAYERS} layers, batch {BATCH}, dropout "
        f"{DROPOUT} per (node, expert), norm {NORM}; MLP: hidden {HIDDEN}, {LAYERS} layers, "
        f"dropout {DROPOUT}, norm {NORM}. s/epoch = training epoch + evaluation (every node "
        "for (a)/(b); eval_nodes: needed for (c)-(e))."
    )
    emit(f"command: python benchmarks/bench_student.py {' '.join(argv or sys.argv[1:])}".rstrip())
    emit("")
    for key in args.sizes:
        size = SIZES[key]
        epochs = args.epochs or size.epochs
        for density in args.feature_density:
            lines = bench_size(
                size,
                epochs,
                args.oracle_epochs,
                args.variants,
                device,
                args.wait_quiet,
                log,
                density,
            )
            for line in lines:
                emit(line)
    emit(
        f"(a): {args.oracle_epochs} timed epoch(s) after a one-chunk warm-up; (b)-(d): epochs 2.. "
        "of train_student (epoch 1 holds the pretraining switch). Means over the timed epochs; "
        "ratios use wall-clock s/epoch. CPU s/epoch: this process's CPU time (all threads). "
        "GEMM floor: the epoch's expert/linear matmul FLOPs at the measured matmul rate. Other "
        "load: share of the machine's CPU time used by other processes during the variant "
        "(0 = idle machine; 0.5 = another process held one of 2 cores throughout)."
    )
    out = args.out or RESULTS / f"bench_student-{device.type}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(out_lines) + "\n")
    log(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
