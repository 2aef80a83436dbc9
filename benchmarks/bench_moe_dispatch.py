"""Vanilla MoE student: grouped vs dense expert dispatch, side by side in one process.

Full-batch training steps (forward, backward, Adam) and one eval forward of a switched
:class:`rbm_tune.models.moe.MoE` on Cora-sized binary features (2,708 x 1,433 at 1.27 %
non-zeros, 7 classes), dropout 0.5 per (node, expert) pair, for the configurations a family
study draws. The two runs differ only in ``MoELayer.grouped`` (True: each expert multiplies its
own rows, k + 1 per node with the reference router; False: every expert on every row, the
dispatch the MoE used before); the script prints median seconds per call and dense / grouped.

    nice -n 5 python benchmarks/bench_moe_dispatch.py [--device cpu|cuda] [--repeats 5]
        [--threads T] [--out FILE]
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_inference import median_time  # noqa: E402

from rbm_tune.config import StudentSpec  # noqa: E402
from rbm_tune.models import build_student  # noqa: E402

# (experts, k, layers, hidden): the cora family study's pick first, then smaller ones
CONFIGS = [(16, 3, 3, 512), (8, 2, 2, 256), (4, 1, 2, 128)]


def measure(
    config: tuple[int, int, int, int], grouped: bool, x: torch.Tensor, repeats: int
) -> tuple[float, float]:
    """Median seconds per training step and per eval forward with the dispatch forced."""
    experts, k, layers, hidden = config
    spec = StudentSpec(
        model="moe", num_layers=layers, hidden_dim=hidden, dropout=0.5, num_experts=experts, k=k
    )
    torch.manual_seed(0)
    student = build_student(spec, x.shape[1], 7).to(x.device)
    student.end_pretraining()
    for module in student.modules():
        if hasattr(module, "grouped"):
            module.grouped = grouped  # MoELayer.grouped
    opt = torch.optim.Adam(student.parameters())

    def step() -> None:
        student.train()
        out = student(x)
        loss = out.logits.square().mean() + out.aux
        opt.zero_grad()
        loss.backward()
        opt.step()

    def evaluate() -> None:
        student.eval()
        with torch.no_grad():
            student(x)

    return median_time(step, x.device, repeats), median_time(evaluate, x.device, repeats)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", help="also write the table to this file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(2708, 1433, generator=gen) < 0.0127).float().to(device)
    lines = [
        f"MoE dispatch on {device.type} ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads), 2,708 x 1,433 binary features, dropout 0.5:",
        "",
        "| E | k | layers x hidden | train step dense s | grouped s | dense / grouped "
        "| eval dense s | grouped s | dense / grouped |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for config in CONFIGS:
        dense_train, dense_eval = measure(config, False, x, args.repeats)
        grouped_train, grouped_eval = measure(config, True, x, args.repeats)
        experts, k, layers, hidden = config
        lines.append(
            f"| {experts} | {k} | {layers}x{hidden} | {dense_train:.3f} | {grouped_train:.3f} "
            f"| {dense_train / grouped_train:.2f} | {dense_eval:.3f} | {grouped_eval:.3f} "
            f"| {dense_eval / grouped_eval:.2f} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
