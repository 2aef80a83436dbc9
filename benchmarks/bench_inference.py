"""Inference latency at ogbn-arxiv size: the RbM student vs its GNN teacher (eval, no_grad).

Models are the shipped ogbn-arxiv configs with untrained weights (latency does not depend on
them): the teacher of ``ogbn-arxiv-transductive-sage-rbm.yaml`` (GraphSAGE 3 x 1024, batch norm;
``--teachers sage gcn`` adds the GCN 3 x 2048 of the gcn config) and its student (RbM 3 x 1024,
5 experts, k 3, batch norm), switched out of pretraining (k-means on a 20k-row sample), plus the
MLP student of the sage-mlp config for reference. The graph is ``arxiv_synthetic.arxiv_graph``.

Measured, each the median of ``--repeats`` runs after a warm-up:

- teacher, full graph: ``rbm_tune``'s own forward walks PyG's convs over ``edge_index`` and
  materialises one message per edge (2.5M x 1024 floats, ~10 GB per hidden layer), so by
  default the same layers run on a row-normalised CSR adjacency (``torch.sparse.mm``), checked
  against the ``edge_index`` forward on a small graph first; ``--edge-index`` also times the
  shipped path (needs ~12 GB free);
- teacher, one node: its 3-hop subgraph (``k_hop_subgraph``) and a forward on it;
- student, full graph: every node in chunks of ``--chunk`` rows (features only, no edges);
- student, a batch of 1 and of 1,024 random nodes: per-node latency = time / batch.

    nice -n 19 .venv/bin/python benchmarks/bench_inference.py [--device cpu|cuda] [--threads T]
        [--repeats 3] [--teachers sage gcn] [--edge-index] [--out FILE]

Goal (issue 7 item 4): the student at least 50x faster than the teacher's full-graph inference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from arxiv_synthetic import ARXIV, arxiv_graph, scaled  # noqa: E402

from rbm_tune.config import load_config  # noqa: E402
from rbm_tune.models import build_student, build_teacher  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "rbm_tune" / "configs"
RESULTS = Path(__file__).resolve().parent / "results"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall seconds of ``fn`` over ``repeats`` calls after one warm-up call."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# -- the teacher on a CSR adjacency ------------------------------------------------------------
def teacher_adjacency(teacher: nn.Module, edge_index: Tensor, n: int) -> Tensor:
    """The teacher's propagation matrix (target x source) as a CSR tensor.

    SAGE (DGL ``gcn`` aggregator): the edges plus one appended self-loop per node, mean over
    them. GCN (``add_self_loops=False``, normalised): ``D^-1/2 A D^-1/2`` with in-degrees.
    """
    from rbm_tune.models import GCNTeacher, SAGETeacher

    if isinstance(teacher, SAGETeacher):
        loops = torch.arange(n, device=edge_index.device).expand(2, -1)
        ei = torch.cat([edge_index, loops], dim=1)
        src, dst = ei[0], ei[1]
        deg = torch.bincount(dst, minlength=n).float()
        val = 1.0 / deg[dst]
    elif isinstance(teacher, GCNTeacher):
        src, dst = edge_index[0], edge_index[1]
        deg = torch.bincount(dst, minlength=n).float()
        inv = deg.pow(-0.5).masked_fill(deg == 0, 0.0)
        val = inv[src] * inv[dst]
    else:
        raise SystemExit(f"no CSR path for {type(teacher).__name__}; use sage or gcn")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        adj = torch.sparse_coo_tensor(torch.stack([dst, src]), val, (n, n)).coalesce()
        return adj.to_sparse_csr()


def csr_forward(teacher: nn.Module, x: Tensor, adj: Tensor) -> Tensor:
    """``teacher(x, edge_index).logits`` with every propagation as ``adj @ h`` (same layers)."""
    from torch_geometric.nn import GCNConv, SAGEConv

    h = x
    convs = teacher.gnn.convs
    for i, conv in enumerate(convs):
        if isinstance(conv, SAGEConv):  # mean aggregation, root_weight=False: lin_l(mean)
            h = conv.lin_l(torch.sparse.mm(adj, h))
        elif isinstance(conv, GCNConv):
            h = torch.sparse.mm(adj, conv.lin(h)) + conv.bias
        else:
            raise SystemExit(f"no CSR path for {type(conv).__name__}")
        if i == len(convs) - 1:
            break
        if teacher.act_before_embedding:
            h = teacher.norms[i](F.relu(h))
        else:
            h = F.relu(teacher.norms[i](h))
        h = teacher.gnn.dropout(h)
    return h


def check_csr(model: str, spec: object, device: torch.device) -> float:
    """Max |difference| of the CSR forward vs rbm_tune's edge_index forward on a small graph."""
    from torch_geometric.utils import add_self_loops, coalesce, to_undirected

    gen = torch.Generator().manual_seed(1)
    n = 2000
    x = torch.randn(n, ARXIV.features, generator=gen).to(device)
    ei = to_undirected(torch.randint(n, (2, 8000), generator=gen), num_nodes=n)
    ei = coalesce(add_self_loops(ei, num_nodes=n)[0], num_nodes=n).to(device)
    torch.manual_seed(0)
    teacher = build_teacher(spec, ARXIV.features, ARXIV.classes).to(device).eval()  # type: ignore[arg-type]
    with torch.no_grad():
        ref = teacher(x, ei).logits
        out = csr_forward(teacher, x, teacher_adjacency(teacher, ei, n))
    err = float((ref - out).abs().max())
    if err > 1e-3 * max(1.0, float(ref.abs().max())):
        raise SystemExit(f"the CSR forward of the {model} teacher differs by {err}; not timed")
    return err


def gemm_flops(model: nn.Module, n: int, *, experts_per_node: int = 1) -> float:
    """2 * n * Σ d_in * d_out over the model's linear maps (x experts_per_node for RbM)."""
    total = 0.0
    for mod in model.modules():
        if isinstance(mod, nn.Linear):
            total += mod.in_features * mod.out_features
        elif type(mod).__name__ == "Linear" and hasattr(mod, "in_channels"):  # PyG's Linear
            total += mod.in_channels * mod.out_channels
        elif type(mod).__name__ == "ExpertBank":
            total += experts_per_node * mod.in_dim * mod.out_dim
    return 2.0 * n * total


def bench_teacher(
    model_name: str,
    x: Tensor,
    edge_index: Tensor,
    device: torch.device,
    args: argparse.Namespace,
    gen: torch.Generator,
) -> tuple[list[tuple[str, float, float, str]], float, float]:
    """The teacher's rows: full graph (CSR; edge_index with --edge-index), one node."""
    from torch_geometric.utils import k_hop_subgraph

    n = x.size(0)
    spec = load_config(CONFIGS / f"ogbn-arxiv-transductive-{model_name}-rbm.yaml").teacher
    err = check_csr(model_name, spec, device)
    torch.manual_seed(0)
    teacher = build_teacher(spec, x.size(1), ARXIV.classes).to(device).eval()
    label = f"teacher {model_name} {spec.num_layers}x{spec.hidden_dim} ({spec.norm_type})"
    flops = gemm_flops(teacher, n)
    adj = teacher_adjacency(teacher, edge_index, n)
    t_full = median_time(lambda: csr_forward(teacher, x, adj), device, args.repeats)
    rows = [
        (
            f"{label}, full graph (CSR adjacency)",
            t_full,
            n,
            f"{flops / 1e9:.0f} GFLOP dense; CSR vs edge_index max err {err:.1e}",
        )
    ]
    if args.edge_index:
        t = median_time(lambda: teacher(x, edge_index), device, args.repeats)
        rows.append((f"{label}, full graph (rbm_tune forward, edge_index)", t, n, ""))
    sizes: list[int] = []

    def one_node() -> Tensor:
        node = int(torch.randint(n, (1,), generator=gen))
        subset, sub_ei, mapping, _ = k_hop_subgraph(
            node, spec.num_layers, edge_index, relabel_nodes=True, num_nodes=n
        )
        sizes.append(subset.numel())
        return teacher(x[subset], sub_ei).logits[mapping]

    t = median_time(one_node, device, max(args.repeats, 10))
    rows.append(
        (
            f"{label}, 1 node via its {spec.num_layers}-hop subgraph",
            t,
            1,
            f"median subgraph {int(statistics.median(sizes)):,} nodes (k_hop_subgraph included)",
        )
    )
    return rows, t_full, t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--teachers", nargs="+", default=["sage"], choices=["sage", "gcn"])
    p.add_argument("--chunk", type=int, default=4096, help="student rows per forward")
    p.add_argument("--edge-index", action="store_true", help="also time rbm_tune's edge path")
    p.add_argument("--scale", type=float, default=1.0, help="shrink the graph (quick checks)")
    p.add_argument("--out", default=None, help="default results/bench_inference-<device>.md")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    out_path = Path(args.out or RESULTS / f"bench_inference-{device.type}.md")
    lines: list[str] = []

    def emit(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    graph = arxiv_graph(scaled(ARXIV, args.scale))
    n = graph.num_nodes
    x = graph.x.to(device)
    edge_index = graph.edge_index.to(device)
    cfg = load_config(CONFIGS / "ogbn-arxiv-transductive-sage-rbm.yaml")
    mlp_cfg = load_config(CONFIGS / "ogbn-arxiv-transductive-sage-mlp.yaml")
    gen = torch.Generator().manual_seed(0)

    emit("# bench_inference: student vs GNN teacher at ogbn-arxiv size")
    emit()
    emit("```bash")
    emit("nice -n 19 .venv/bin/python benchmarks/bench_inference.py " + " ".join(sys.argv[1:]))
    emit("```")
    emit()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    emit(
        f"{where}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.2f} at the start; other jobs "
        f"shared the machine); synthetic graph {n:,} nodes x {graph.num_features}, "
        f"{graph.edge_index.size(1):,} directed edges with self-loops, {graph.num_classes} "
        f"classes; eval mode, no_grad, untrained weights; median of {args.repeats} after a "
        "warm-up."
    )
    emit()

    rows: list[tuple[str, float, float, str]] = []  # name, seconds, nodes, note
    teacher_full: dict[str, list[float]] = {}  # model -> [full graph s, one node s]
    student_t: dict[tuple[str, object], float] = {}
    with torch.no_grad():
        for model_name in args.teachers:
            teacher_rows, *teacher_full[model_name] = bench_teacher(
                model_name, x, edge_index, device, args, gen
            )
            rows += teacher_rows

        students = {}
        for name, c in (("rbm", cfg), ("mlp", mlp_cfg)):
            torch.manual_seed(0)
            s = build_student(c.student, graph.num_features, graph.num_classes).to(device)
            s.eval()
            if s.is_pretraining:
                s.end_pretraining(
                    x,
                    batch_size=args.chunk,
                    seed=0,
                    kmeans_restarts=1,
                    kmeans_max_iter=10,
                    kmeans_max_rows=20_000,
                )
            students[name] = s
        for name, s in students.items():
            st = cfg.student if name == "rbm" else mlp_cfg.student
            desc = f"{name} {st.num_layers}x{st.hidden_dim}"
            if name == "rbm":
                desc += f", E={st.num_experts}, k={st.k}"
            flops = gemm_flops(s, n, experts_per_node=st.k if name == "rbm" else 1)

            def full(s: nn.Module = s) -> None:
                for i in range(0, n, args.chunk):
                    s(x[i : i + args.chunk])

            t = student_t[(name, "full")] = median_time(full, device, args.repeats)
            rows.append(
                (
                    f"student {desc}, full graph ({args.chunk}-row chunks)",
                    t,
                    n,
                    f"{flops / 1e9:.0f} GFLOP in expert/linear GEMMs",
                )
            )
            for batch in (1, 1024):
                idx = [torch.randint(n, (batch,), generator=gen).to(device) for _ in range(64)]
                it = iter(range(10**9))

                def one(s: nn.Module = s, idx: list[Tensor] = idx, it: object = it) -> None:
                    s(x[idx[next(it) % len(idx)]])  # type: ignore[call-overload]

                reps = max(args.repeats, 50 if batch == 1 else 10)
                t = student_t[(name, batch)] = median_time(one, device, reps)
                rows.append((f"student {desc}, batch of {batch:,}", t, batch, ""))

    emit("| what | latency | per node | note |")
    emit("| --- | --- | --- | --- |")
    for name, t, nodes, note in rows:
        emit(f"| {name} | {_fmt(t)} | {_fmt(t / nodes)} | {note} |")
    emit()
    rbm_full, rbm_b1, rbm_b1k = (student_t[("rbm", key)] for key in ("full", 1, 1024))
    emit("## Goal (issue 7 item 4): student ≥ 50× faster than the teacher, full graph")
    emit()
    for model_name, (t_full, t_node) in teacher_full.items():
        ratio = t_full / rbm_full
        emit(
            f"- {'PASS' if ratio >= 50 else 'FAIL'}: full graph vs full graph ({model_name} "
            f"teacher): {_fmt(t_full)} / {_fmt(rbm_full)} = {ratio:.2f}×."
        )
        emit(
            f"- per query: teacher full graph / student batch of 1 = {t_full / rbm_b1:,.0f}× "
            f"({'≥' if t_full / rbm_b1 >= 50 else '<'} 50); / student batch of 1,024 = "
            f"{t_full / rbm_b1k:,.1f}×; teacher on one node's 3-hop subgraph / student batch "
            f"of 1 = {t_node / rbm_b1:,.0f}×."
        )
    emit()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("\n".join(lines) + "\n")
    print(f"wrote {out_path}")
    return 0


def _fmt(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


if __name__ == "__main__":
    sys.exit(main())
