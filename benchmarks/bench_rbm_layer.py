"""Vectorised RbM layer (rbm_tune.models.rbm) vs a per-expert loop like the reference code.

Both run a training forward + backward (EMA, aux losses, dropout off) on the same inputs, side
by side in one process; the script prints seconds per call and the loop/vectorised ratio. The
loop is the test oracle of tests/test_rbm_equivalence.py (method §3.3 one expert at a time, with
``nonzero`` index lists, i.e. a device-to-host sync per expert, as the reference does).

    python benchmarks/bench_rbm_layer.py [--device cuda] [--rows 2708] [--in-dim 1433]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_rbm_equivalence import LoopRbMLayer  # noqa: E402

from rbm_tune.models.rbm import RbMLayer  # noqa: E402


def _time(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--rows", type=int, default=2708)
    p.add_argument("--in-dim", type=int, default=1433)
    p.add_argument("--out-dim", type=int, default=512)
    p.add_argument("--experts", type=int, nargs="+", default=[4, 8, 12])
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"B={args.rows}, d_in={args.in_dim}, d_out={args.out_dim}, k={args.k}"
    )
    print("| experts | vectorised s | per-expert loop s | loop / vectorised |")
    print("| --- | --- | --- | --- |")
    for experts in args.experts:
        torch.manual_seed(0)
        layer = RbMLayer(
            args.in_dim,
            args.out_dim,
            num_experts=experts,
            k=args.k,
            dropout=0.0,
            pretraining=False,
        ).to(device)
        loop = LoopRbMLayer(layer).to(device)
        x = torch.randn(args.rows, args.in_dim, device=device, requires_grad=True)

        def vec(layer: RbMLayer = layer, x: torch.Tensor = x) -> None:
            out, aux = layer(x)
            (out.square().mean() + aux).backward()

        def ref(loop: LoopRbMLayer = loop, x: torch.Tensor = x) -> None:
            out, aux = loop(x)
            (out.square().mean() + aux).backward()

        t_vec, t_loop = _time(vec, device, args.repeats), _time(ref, device, args.repeats)
        print(f"| {experts} | {t_vec:.4f} | {t_loop:.4f} | {t_loop / t_vec:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
