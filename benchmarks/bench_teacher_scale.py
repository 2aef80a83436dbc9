"""Peak memory of one full-batch teacher epoch at ogbn-products and ogbn-arxiv size (issue 20).

Arms, each in a fresh child process (``--arms``):

- ``products``: a synthetic graph of ogbn-products' size (2,449,029 nodes x 100 features, 47
  classes, 123,718,280 directed edges, the official 196,615 training nodes; uniform random
  features, labels and edges from a fixed seed, written chunk by chunk into preallocated
  tensors), the teacher of ``rbm_tune/search_spaces/products.yaml`` (GraphSAGE 3 x 128, batch
  norm, dropout 0.6, Adam lr 0.01 / wd 5e-4) on its sparse adjacency. Goal: the epoch completes
  with a peak <= 16 GiB.
- ``arxiv-before`` / ``arxiv-after``: ``arxiv_synthetic.arxiv_graph`` and the shipped arxiv
  GraphSAGE 3 x 1024 teacher, one epoch through PyG's convs over ``edge_index``
  (``forward_edge_index``, the former path) and through the sparse adjacency (``forward``).
  Goal: after >= 3x lower peak than before.

An epoch is what ``rbm_tune.teacher.train_teacher`` runs per epoch: a training forward, NLL on
the training nodes, backward, Adam step, then an eval forward (no grad). The sparse arms build
the adjacency once, before the epoch, and drop ``edge_index`` (the graph's adjacency replaces
it). The child reports its peak RSS (``VmHWM``; ``/proc/self/clear_refs`` resets it per phase)
and seconds per phase; "peak" is the maximum over the child's life, imports and data included.
The parent polls the child's RSS and kills it above ``--limit-gib`` (never more than what the
machine has available at the start, less 1.5 GiB: the machine is shared); a killed arxiv arm is
rerun at ``--extrapolate-scales`` of the graph and its peak extrapolated linearly.

    nice -n 19 flock /tmp/rbm-heavy.lock .venv/bin/python benchmarks/bench_teacher_scale.py
        [--arms products arxiv-before arxiv-after] [--limit-gib 20] [--scale 1] [--threads T]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_memory import GIB, _reset_peak, _status  # noqa: E402

CONFIG = HERE.parents[0] / "rbm_tune" / "configs"
ARMS = ("products", "arxiv-before", "arxiv-after")
# ogbn-products: nodes, features, classes, directed edges (2 x 61,859,140), training nodes
PRODUCTS = (2_449_029, 100, 47, 123_718_280, 196_615)
CHUNK = 1 << 22


def products_graph(scale: float = 1.0, seed: int = 0):  # -> (x, y, edge_index, train_idx)
    """Random features / labels / directed edges with ogbn-products' counts (times ``scale``),
    generated in chunks of ``CHUNK`` rows straight into their final tensors."""
    import torch

    n, f, c, e, t = PRODUCTS
    n, e, t = (max(c, int(v * scale)) for v in (n, e, t))
    gen = torch.Generator().manual_seed(seed)
    x = torch.empty(n, f)
    for a in range(0, n, CHUNK):
        torch.randn(min(CHUNK, n - a), f, generator=gen, out=x[a : a + CHUNK])
    y = torch.randint(c, (n,), generator=gen)
    edge_index = torch.empty(2, e, dtype=torch.long)
    for row in (0, 1):
        for a in range(0, e, CHUNK):
            torch.randint(
                n, (min(CHUNK, e - a),), generator=gen, out=edge_index[row, a : a + CHUNK]
            )
    train_idx = torch.randperm(n, generator=gen)[:t].sort().values
    return x, y, edge_index, train_idx


def child(args: argparse.Namespace) -> int:
    phases: list[dict[str, object]] = []

    def phase(name: str, start: float, **extra: object) -> None:
        st = _status()
        row = {"phase": name, "peak": st.get("VmHWM", 0), "rss": st.get("VmRSS", 0)}
        row.update(seconds=time.perf_counter() - start, **extra)
        phases.append(row)
        print("PHASE " + json.dumps(row), flush=True)
        _reset_peak()

    t = time.perf_counter()
    _reset_peak()
    import torch
    import torch.nn.functional as F

    if args.threads:
        torch.set_num_threads(args.threads)
    from rbm_tune.config import load_config
    from rbm_tune.models import build_teacher

    phase("imports", t)
    t = time.perf_counter()
    if args.arm == "products":
        x, y, edge_index, train_idx = products_graph(args.scale)
        spec = load_config(CONFIG / "ogbn-products-transductive-sage-rbm.yaml").teacher
        classes = PRODUCTS[2]
    else:
        from arxiv_synthetic import ARXIV, arxiv_graph, scaled

        graph = arxiv_graph(scaled(ARXIV, args.scale))
        x, y, edge_index, train_idx = graph.x, graph.y, graph.edge_index, graph.train_idx
        del graph
        spec = load_config(CONFIG / "ogbn-arxiv-transductive-sage-rbm.yaml").teacher
        classes = ARXIV.classes
    n = x.shape[0]
    phase("synthetic graph", t, nodes=n, edges=edge_index.size(1))
    torch.manual_seed(0)
    model = build_teacher(spec, x.shape[1], classes)
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    before = args.arm == "arxiv-before"
    t = time.perf_counter()
    if before:
        edges = edge_index

        def forward(h):  # the former path: PyG's convs over edge_index
            return model.forward_edge_index(h, edges)
    else:
        adj_t = model.adjacency(edge_index, n)
        del edge_index  # the adjacency replaces it

        def forward(h):
            return model(h, adj_t)

        phase("adjacency (once per graph)", t, nnz=adj_t.values().numel())
    t = time.perf_counter()
    model.train()
    opt.zero_grad()
    out = forward(x)
    loss = F.nll_loss(F.log_softmax(out.logits[train_idx], dim=-1), y[train_idx])
    del out
    loss.backward()
    opt.step()
    phase("train step (forward, backward, Adam)", t, loss=float(loss))
    t = time.perf_counter()
    model.eval()
    with torch.no_grad():
        forward(x)
    phase("eval forward", t)
    print("DONE", flush=True)
    return 0


def run_arm(arm: str, args: argparse.Namespace, scale: float) -> dict[str, object]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", arm, "--scale", str(scale)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    available = _meminfo().get("MemAvailable", 0)
    limit = min(args.limit_gib * GIB, available + _status().get("VmRSS", 0) - 1.5 * GIB)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    polled, killed = 0, False
    while proc.poll() is None:
        rss = _status(proc.pid).get("VmRSS", 0)
        polled = max(polled, rss)
        if rss > limit:
            proc.kill()
            killed = True
            break
        time.sleep(0.05)
    proc.wait()
    reader.join(timeout=10)
    phases = [json.loads(x[6:]) for x in lines if x.startswith("PHASE ")]
    for ph in phases:
        print(
            f"  {arm} @ {scale:g}: {ph['phase']}: peak {ph['peak'] / GIB:.2f} GiB, "
            f"{ph['seconds']:.1f} s",
            flush=True,
        )
    if proc.returncode and not killed:
        print("".join(lines[-30:]), file=sys.stderr)
    return {
        "arm": arm,
        "scale": scale,
        "phases": phases,
        "peak": max([int(p["peak"]) for p in phases] + [polled]),
        "limit": limit,
        "killed": killed,
        "returncode": proc.returncode,
        "wall": time.perf_counter() - start,
    }


def _meminfo() -> dict[str, int]:
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = int(value.split()[0]) * 1024
    return out


def _seconds(r: dict[str, object], name: str) -> float:
    return sum(float(p["seconds"]) for p in r["phases"] if str(p["phase"]).startswith(name))  # type: ignore[union-attr]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    p.add_argument("--limit-gib", type=float, default=20.0, help="kill a child above this RSS")
    p.add_argument("--scale", type=float, default=1.0, help="shrink the graphs (quick checks)")
    p.add_argument("--extrapolate-scales", type=float, nargs=2, default=[0.25, 0.5])
    p.add_argument("--threads", type=int, default=None, help="torch threads in the child")
    p.add_argument("--out", default=None, help="also write the JSON results here")
    p.add_argument("--child", choices=ARMS, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        args.arm = args.child
        return child(args)

    results = {}
    for arm in args.arms:
        r = run_arm(arm, args, args.scale)
        if r["killed"] and arm.startswith("arxiv"):
            small = [run_arm(arm, args, args.scale * s) for s in args.extrapolate_scales]
            if not any(v["killed"] or v["returncode"] for v in small):
                (s0, m0), (s1, m1) = ((float(v["scale"]), int(v["peak"])) for v in small)
                r["extrapolated"] = m1 + (m1 - m0) / (s1 - s0) * (args.scale - s1)
        results[arm] = r

    print(f"\nbench_teacher_scale (scale {args.scale:g}; peak = child's VmHWM over its life)")
    for arm, r in results.items():
        if r["killed"]:
            est = r.get("extrapolated")
            what = f"over the limit ({int(r['limit']) / GIB:.1f} GiB)"  # type: ignore[call-overload]
            if est is not None:
                what += f", linear estimate {est / GIB:.1f} GiB"
        elif r["returncode"]:
            what = f"failed (exit {r['returncode']})"
        else:
            what = f"peak {int(r['peak']) / GIB:.2f} GiB"  # type: ignore[call-overload]
        print(
            f"- {arm}: {what}; train step {_seconds(r, 'train'):.1f} s, eval forward "
            f"{_seconds(r, 'eval'):.1f} s, adjacency {_seconds(r, 'adjacency'):.1f} s, "
            f"child wall {float(r['wall']):.0f} s"  # type: ignore[arg-type]
        )
    if "products" in results:
        r = results["products"]
        ok = not r["killed"] and not r["returncode"] and int(r["peak"]) <= 16 * GIB  # type: ignore[call-overload]
        print(f"  products goal (epoch completes, peak <= 16 GiB): {'PASS' if ok else 'FAIL'}")
    if "arxiv-before" in results and "arxiv-after" in results:
        b, a = results["arxiv-before"], results["arxiv-after"]
        before = float(b.get("extrapolated", b["peak"]))  # type: ignore[arg-type]
        after = float(a["peak"])  # type: ignore[arg-type]
        bound = "at least " if b["killed"] and "extrapolated" not in b else ""
        ratio = before / after if after else float("nan")
        verdict = "PASS" if ratio >= 3 and not a["killed"] and not a["returncode"] else "FAIL"
        print(
            f"  arxiv SAGE 3x1024 peak before / after: {bound}{ratio:.2f}x ({verdict}, goal >= 3x)"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
