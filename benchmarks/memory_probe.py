"""Measure one student trial's peak memory next to ``rbm_tune.memory``'s estimate.

Run as a child process (one measurement per process, so peaks do not mix):

    python benchmarks/memory_probe.py --nodes 20000 --features 128 --classes 40 \
        --set student.hidden_dim=256 --set distill.batch_size=2048 [--device cpu|cuda]

It builds a synthetic transductive graph of those sizes (random features, labels and split,
one edge per node: a student never reads edges unless a switch needs them), random teacher
outputs of the right shapes, and trains the student (base: the shipped ogbn-arxiv RbM config,
or ``--space NAME``'s default point) for one pretraining epoch, the switch and ``--epochs``
routed epochs, with a 20k-row k-means sample.

Measured: on the CPU the peak resident set (``VmHWM``) minus the resident set after the imports
(so the figure holds the tensors, as the estimate's ``tensors`` does); on CUDA
``torch.cuda.max_memory_allocated``. Prints one JSON line: measured and estimated bytes, the
estimate's peak phase, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "rbm_tune" / "configs" / "ogbn-arxiv-transductive-sage-rbm.yaml"


def rss(key: str = "VmRSS") -> int:
    """This process's resident set (or ``VmHWM``, its peak) in bytes, from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0]) * 1024
    return 0


def _value(text: str) -> object:
    return yaml.safe_load(text)


def config_with(overrides: list[str], *, epochs: int = 2, space: str | None = None) -> dict:
    """The base trial config (as a dict: the arxiv trial config, or a space's default point)
    with ``section.key=value`` overrides."""
    if space:
        from rbm_tune.search_space import load_space

        cfg = load_space(space).default_config().to_dict()
    else:
        cfg = yaml.safe_load(BASE.read_text())
    cfg["distill"].update(
        max_epochs=epochs, pretrain_epochs=1, kmeans_restarts=1, kmeans_max_rows=20_000,
        patience=epochs + 1,
    )  # fmt: skip
    for item in overrides:
        key, _, text = item.partition("=")
        section, _, name = key.partition(".")
        cfg[section][name] = _value(text)
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--features", type=int, default=128)
    parser.add_argument("--classes", type=int, default=40)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--space", default=None, help="base: this space's default point")
    parser.add_argument("--epochs", type=int, default=2, help="routed epochs after the switch")
    args = parser.parse_args(argv)

    import torch

    from rbm_tune.config import TrialConfig
    from rbm_tune.distill import train_student
    from rbm_tune.memory import GraphSizes, student_estimate

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrialConfig.from_mapping(config_with(args.set, epochs=args.epochs, space=args.space))
    device = torch.device(args.device)
    # warm-up on a tiny graph: lazy imports, thread pools and autograd's engine are the
    # runtime's (rbm_tune.memory.RUNTIME_BYTES), not the trial's tensors
    tiny = cfg.replace(student={"hidden_dim": 8}, distill={"batch_size": 64})
    graph, teacher = _synthetic(200, args.features, args.classes, cfg)
    train_student(tiny, graph, teacher, device=device)
    del graph, teacher
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    base = rss()
    graph, teacher = _synthetic(args.nodes, args.features, args.classes, cfg)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result = train_student(cfg, graph, teacher, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        measured = torch.cuda.max_memory_allocated()
    else:
        measured = rss("VmHWM") - base
    est = student_estimate(cfg, GraphSizes.of(graph), device.type)
    print(
        json.dumps(
            {
                "measured": measured,
                "estimate": est.tensors,
                "ratio": est.tensors / measured,
                "phase": est.peak_phase,
                "phases": est.phases,
                "resident": est.resident,
                "epochs": result.epochs,
                # per epoch: the pretraining epoch first, then the routed ones
                "epoch_seconds": [row["epoch_seconds"] for row in result.history],
                "seconds": result.seconds,
                "device": device.type,
            }
        )
    )
    return 0


def _synthetic(n: int, features: int, c: int, cfg):  # -> (Graph, TeacherOutputs)
    import torch
    import torch.nn.functional as F

    from rbm_tune.data import make_graph
    from rbm_tune.teacher import TeacherOutputs

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, features, generator=gen)
    y = torch.randint(c, (n,), generator=gen)
    ring = torch.arange(n)
    edges = torch.stack([ring, (ring + 1) % n])
    perm = torch.randperm(n, generator=gen)
    a, b = n // 2, n // 2 + n // 5
    split = tuple(p.sort().values for p in (perm[:a], perm[a:b], perm[b:]))
    graph = make_graph(x, y, edges, name="probe", split=split)
    width = cfg.teacher.hidden_dim if cfg.distill.similarity_distill else 1
    teacher = TeacherOutputs(
        log_probs=F.log_softmax(torch.randn(n, c, generator=gen), -1),
        embedding=torch.randn(n, width, generator=gen),
        krd_delta=torch.rand(n, generator=gen),
        val_acc=0.0, test_acc=0.0, test_acc_oracle=0.0, best_epoch=0, epochs=0, seconds=0.0,
    )  # fmt: skip
    return graph, teacher


if __name__ == "__main__":
    sys.exit(main())
