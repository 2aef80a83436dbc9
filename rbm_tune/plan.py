"""``rbm-tune plan``: will a space's trials fit, and how many share a card or a host?

For the space's default point and every corner :func:`rbm_tune.search_space.load_space` checks,
the estimate of one trial (:mod:`rbm_tune.memory`, from the dataset's published sizes: no data
files needed) against the trial's share: ``gpus_per_trial`` x the card's memory on GPUs, the
host's memory / the trials at once (or ``memory_per_trial``) on CPUs. Prints the default point,
the largest and smallest corners, and names every corner that does not fit (a study does not
train those: they end PRUNED, tagged ``rbm_tune.skipped = memory``), then the teacher's estimate.

Imports neither torch nor Ray.
"""

from __future__ import annotations

import argparse
from typing import Any

from rbm_tune.memory import (
    Estimate,
    GraphSizes,
    format_bytes,
    host_memory,
    parse_bytes,
    student_estimate,
    teacher_estimate,
    trial_share,
)

__all__ = ["plan_command", "plan_lines"]

CARDS = (24 * 10**9, 80 * 10**9, 141 * 10**9)


def _per(capacity: int, need: int) -> int:
    return int(capacity // need) if need > 0 else 0


def plan_lines(
    space: Any, *, gpu_memory: int | None = None, host_bytes: int | None = None
) -> tuple[list[str], bool]:
    """The plan's lines, and whether the default point fits its share."""
    study = space.study
    base = space.default_config()
    sizes = GraphSizes.for_dataset(base.dataset)
    on_gpu = study.gpus_per_trial > 0
    device = "cuda" if on_gpu else "cpu"
    card = gpu_memory or CARDS[1]
    host = host_bytes or host_memory()
    if on_gpu:
        share = trial_share(study, device, card_memory=card)
        where = f"{study.gpus_per_trial:g} x a {card / 1e9:g} GB card = {format_bytes(share)}"
    else:
        share = trial_share(study, device, host_bytes=host)
        where = (
            f"memory_per_trial {format_bytes(share)}" if study.memory_per_trial
            else f"this host's {format_bytes(host)} / the trials at once = {format_bytes(share)}"
        )  # fmt: skip
    students = space.study.seeds_per_trial  # lockstep students: n x parameters + Adam
    rows = [
        (label, student_estimate(cfg, sizes, device, students)) for label, cfg in space.corners()
    ]
    lines = [
        f"plan for {space.path.name}: {base.dataset} ({sizes.num_nodes:,} nodes x "
        f"{sizes.num_features} features, {sizes.num_classes} classes), trials on "
        f"{'GPUs' if on_gpu else 'CPUs'}",
        f"share per trial: {where}",
        "",
        "| point | estimate | peak phase | fits its share | trials per 24 / 80 / 141 GB card "
        "| per 32 / 64 GiB host |",
        "| --- | --- | --- | --- | --- | --- |",
    ]

    def row(label: str, est: Estimate) -> str:
        cards = " / ".join(str(_per(c, est.total)) for c in CARDS)
        hosts = " / ".join(str(_per(h * 2**30, est.total)) for h in (32, 64))
        ok = "yes" if est.total <= share else "NO"
        return (
            f"| {label} | {format_bytes(est.total)} | {est.peak_phase} | {ok} | {cards} | "
            f"{hosts} |"
        )

    default = rows[0][1]
    largest = max(rows, key=lambda r: r[1].total)
    smallest = min(rows, key=lambda r: r[1].total)
    lines.append(row("default", default))
    lines.append(row(f"largest ({largest[0]})", largest[1]))
    lines.append(row(f"smallest ({smallest[0]})", smallest[1]))
    over = [(label, est) for label, est in rows if est.total > share]
    lines.append("")
    if over:
        named: dict[int, str] = {}  # corners that differ only in what memory ignores: one name
        for label, est in over:
            named.setdefault(est.total, label)
        lines.append(
            f"{len(over)} of {len(rows)} corners do not fit (a study skips such draws: PRUNED, "
            f"tagged rbm_tune.skipped=memory): "
            + "; ".join(f"{label} ({format_bytes(total)})" for total, label in named.items())
        )
    else:
        lines.append(f"every one of the {len(rows)} corners fits its share")
    teacher = teacher_estimate(base.teacher, sizes, device)
    t = base.teacher
    lines.append(
        f"teacher ({t.model} {t.num_layers}x{t.hidden_dim}, full batch, sparse adjacency): "
        f"{format_bytes(teacher.total)}; over edge_index: "
        f"{format_bytes(teacher_estimate(t, sizes, device, sparse=False).total)}"
    )
    lines.append(
        "estimates are tensors (rbm_tune.memory) plus the runtime "
        f"({format_bytes(default.runtime)}); measured within 25 % "
        "(benchmarks/bench_memory_model.py)"
    )
    return lines, default.total <= share


def plan_command(args: argparse.Namespace) -> int:
    """``rbm-tune plan --space FILE [--gpu-memory 80GB] [--host-memory 64GiB]``."""
    from rbm_tune.search_space import load_space

    space = load_space(args.space, getattr(args, "overrides", None) or ())
    gpu = parse_bytes(args.gpu_memory, "--gpu-memory") if args.gpu_memory else None
    host = parse_bytes(args.host_memory, "--host-memory") if args.host_memory else None
    lines, _ = plan_lines(space, gpu_memory=gpu, host_bytes=host)
    print("\n".join(lines))
    return 0
