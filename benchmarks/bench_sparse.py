"""Sparse features on the real datasets: student epoch time with ``distill.sparse_features: auto``
(the first layer multiplies a CSR copy of its rows when at most 2 % of the features are
non-zero, rbm_tune/models/sparse.py) vs ``off`` (dense GEMMs), side by side in one run.

For each dataset the shipped transductive SAGE config of each student (``rbm_tune/configs``:
its width, depth, experts, k, dropout, full-batch chunks) runs through
``rbm_tune.distill.train_student`` in ``mode: fast`` with ``eval_nodes: needed``, 1
pretraining epoch (k-means cut to one restart on 4,096 rows) and ``--epochs`` timed epochs after
it; the two settings alternate, ``--repeats`` times each, and the s/epoch is the median of
the ``epoch_seconds`` the runs report after the switch. The teacher is a stand-in (soft labels
around the true class, random embedding): distillation costs the same whatever the teacher
knows, and no GNN has to be trained. Amazon Computers (35 % non-zero) is the control: ``auto``
keeps it dense, so its ratio should be 1.

    nice -n 5 .venv/bin/python benchmarks/bench_sparse.py --data-root ../shared/data \
        [--datasets cora citeseer coauthor-cs coauthor-physics amazon-computers]
        [--students rbm mlp] [--epochs 4] [--repeats 2] [--threads 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from arxiv_synthetic import fake_teacher

from rbm_tune.config import load_config
from rbm_tune.data import load_graph
from rbm_tune.distill import train_student
from rbm_tune.metrics import EPOCH_SECONDS, IS_PRETRAINING
from rbm_tune.models.sparse import sparse_input

CONFIGS = Path(__file__).resolve().parents[1] / "rbm_tune" / "configs"
RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = ("auto", "off")


def epoch_seconds(config, graph, teacher) -> tuple[list[float], float]:
    """The post-switch epochs' seconds of one run, and its best validation accuracy."""
    result = train_student(config, graph, teacher)
    times = [m[EPOCH_SECONDS] for m in result.history if not m[IS_PRETRAINING]]
    return times[1:] if len(times) > 1 else times, result.val_acc  # first: allocator warm-up


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", required=True)
    p.add_argument(
        "--datasets",
        nargs="+",
        default=["cora", "citeseer", "coauthor-cs", "coauthor-physics", "amazon-computers"],
    )
    p.add_argument("--students", nargs="+", choices=["rbm", "moe", "mlp"], default=["rbm", "mlp"])
    p.add_argument("--epochs", type=int, default=4, help="timed epochs after the switch (+1)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--out", type=Path, default=RESULTS / "bench_sparse-cpu.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    lines: list[str] = []

    def emit(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    emit("# Sparse features: student s/epoch, sparse_features auto vs off (CPU)")
    emit("")
    emit(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; shipped transductive "
        f"SAGE configs, mode fast, eval_nodes needed, {args.epochs} timed epochs after the "
        f"switch, {args.repeats} alternating runs per setting, median s/epoch."
    )
    emit(f"command: python benchmarks/bench_sparse.py {' '.join(argv or sys.argv[1:])}".rstrip())
    emit("")
    emit(
        "| dataset | nodes x features | non-zero | CSR path | student (width, E, k) "
        "| off s/epoch | auto s/epoch | off / auto | best val off / auto |"
    )
    emit("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in args.datasets:
        graph = load_graph(name, root=args.data_root)
        teacher = fake_teacher(graph.num_nodes, graph.num_classes, 64, labels=graph.y)
        density = float((graph.x != 0).float().mean())
        taken = sparse_input(graph.x)
        for student in args.students:
            base = load_config(CONFIGS / f"{name}-transductive-sage-{student}.yaml")
            times: dict[str, list[float]] = {s: [] for s in SETTINGS}
            vals: dict[str, list[float]] = {s: [] for s in SETTINGS}
            for _ in range(args.repeats):
                for setting in SETTINGS:
                    cfg = base.replace(
                        distill={
                            "mode": "fast",
                            "eval_nodes": "needed",
                            "max_epochs": args.epochs + 1,
                            "pretrain_epochs": 0 if student == "mlp" else 1,
                            "patience": 10 * args.epochs,
                            "kmeans_restarts": 1,
                            "kmeans_max_rows": 4096,
                            "sparse_features": setting,
                        }
                    )
                    t0 = time.perf_counter()
                    seconds, val = epoch_seconds(cfg, graph, teacher)
                    times[setting] += seconds
                    vals[setting].append(val)
                    print(
                        f"  {name} {student} {setting}: {[round(s, 3) for s in seconds]} s/epoch "
                        f"(run {time.perf_counter() - t0:.1f} s)",
                        file=sys.stderr,
                        flush=True,
                    )
            auto, off = (statistics.median(times[s]) for s in SETTINGS)
            s = base.student
            shape = f"{s.hidden_dim}" + ("" if student == "mlp" else f", {s.num_experts}, {s.k}")
            emit(
                f"| {name} | {graph.num_nodes:,} x {graph.num_features:,} | {100 * density:.2f} % "
                f"| {'yes' if taken else 'no'} | {student} ({shape}) | {off:.3f} | {auto:.3f} "
                f"| {off / auto:.2f} | {statistics.mean(vals['off']):.3f} / "
                f"{statistics.mean(vals['auto']):.3f} |"
            )
    emit("")
    emit(
        "Best val: mean over the runs of the best validation accuracy after the short run (a "
        "check that both settings train alike: dropout masks differ, per-pair masks on the "
        "non-zeros vs on every element, so the values are close, not equal)."
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
