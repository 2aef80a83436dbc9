"""What ``study.seeds_per_trial`` costs and what it buys, on Cora (transductive, SAGE teacher).

Two measurements, one teacher (seed 0, from the rbm-tune cache or trained once):

1. Cost: one trial of a fixed RbM config trained with ``seeds_per_trial`` n = 1, 2, 4
   (``rbm_tune.multi_seed.train_students``, lockstep), its epochs fixed (patience off): wall
   and CPU time per trial relative to n = 1, the best of two interleaved runs each.
2. Noise: 6 configs (learning rate x hidden width) x S student seeds over the same split and
   teacher, each seed trained alone (a one-seed trial's objective): its best validation
   accuracy per seed, the mean and std over seeds, and how often the config that is best on a
   single seed is the best on the S-seed mean.

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/bench_seeds.py [--data-root DIR]
        [--epochs N] [--seeds S] [--hidden H] [--cost-only] [--out FILE]

(one thread: on a shared 2-core machine, two threads per process spin-wait for each other and
the timings mean nothing.)
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from rbm_tune.config import TrialConfig, load_config
from rbm_tune.data import load_graph
from rbm_tune.distill import train_student
from rbm_tune.multi_seed import spread, train_students
from rbm_tune.teacher import train_teacher
from rbm_tune.teacher_cache import TeacherCache, TeacherKey

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # default --data-root


def _config(epochs: int, **distill: object) -> TrialConfig:
    base = load_config(
        Path(__file__).resolve().parents[1]
        / "rbm_tune"
        / "configs"
        / "cora-transductive-sage-rbm.yaml"
    )
    student = distill.pop("student", {})
    return base.replace(
        student=student,
        distill={"max_epochs": epochs, "pretrain_epochs": 5, "patience": 10**6, "mode": "fast",
                 "eval_nodes": "needed", **distill},
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-root", type=Path, default=Path(os.environ.get("RBM_TUNE_DATA", DATA))
    )
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--cost-only", action="store_true", help="skip the noise table")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_seeds-cora-cpu.md")
    args = parser.parse_args()
    cfg = _config(args.epochs, student={"hidden_dim": args.hidden})
    graph = load_graph("cora", root=args.data_root, setting="transductive", seed=0)
    key = TeacherKey.of(graph, cfg.teacher, seed=0)
    teacher = TeacherCache.in_cache_dir().get_or_train(
        key, lambda: train_teacher(cfg.teacher, graph, seed=0)
    )
    lines = [
        "# bench_seeds: study.seeds_per_trial on Cora (transductive, SAGE teacher)",
        "",
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}; RbM 3x{args.hidden} (noise: 3x64 / 3x256), E=4, k=3, "
        "fast / needed, "
        f"{args.epochs} post-switch epochs (+5 pretraining), patience off.",
        "",
        "## Cost of one trial",
        "",
        "| seeds_per_trial | wall s (best of 2) | x n=1 | CPU s (best of 2) | x n=1 |",
        "| --- | --- | --- | --- | --- |",
    ]
    took: dict[int, tuple[float, float]] = {}
    for n in (1, 2, 4, 1, 2, 4):  # twice, interleaved: a shared machine's load moves
        wall, cpu = time.perf_counter(), time.process_time()
        train_students(cfg, graph, teacher, seeds=n)
        now = (time.perf_counter() - wall, time.process_time() - cpu)
        before = took.get(n, now)
        took[n] = (min(before[0], now[0]), min(before[1], now[1]))
    for n, (wall, cpu) in took.items():
        lines.append(
            f"| {n} | {wall:.1f} | {wall / took[1][0]:.2f} | {cpu:.1f} | {cpu / took[1][1]:.2f} |"
        )
        print(lines[-1], flush=True)
    if args.cost_only:
        args.out.write_text("\n".join(lines) + "\n")
        return
    lines += [
        "",
        f"## Noise: best val acc per student seed (seeds 0-{args.seeds - 1}, one split/teacher)",
        "",
        "| config | per seed | mean | std |",
        "| --- | --- | --- | --- |",
    ]
    table: dict[str, list[float]] = {}
    for lr, width in itertools.product((0.003, 0.01, 0.03), (64, 256)):
        c = _config(args.epochs, lr=lr, student={"hidden_dim": width})
        # each seed alone: what a one-seed trial's objective would be
        vals = [
            train_student(c.replace(seed=s), graph, teacher).val_acc for s in range(args.seeds)
        ]
        name = f"lr {lr:g}, hidden {width}"
        table[name] = vals
        lines.append(
            f"| {name} | {' '.join(f'{100 * v:.1f}' for v in vals)} | "
            f"{100 * statistics.fmean(vals):.2f} | {100 * spread(vals):.2f} |"
        )
        print(lines[-1], flush=True)
    by_mean = max(table, key=lambda k: statistics.fmean(table[k]))
    best_at = [max(table, key=lambda k, s=s: table[k][s]) for s in range(args.seeds)]  # type: ignore[misc]
    agree = sum(b == by_mean for b in best_at)
    lines += [
        "",
        f"The best config by the {args.seeds}-seed mean is `{by_mean}`; the best on a single "
        f"seed is the same config for {agree} of {args.seeds} seeds.",
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-1:]))


if __name__ == "__main__":
    main()
