"""Peak memory of one ogbn-arxiv-size RbM trial, to pack trials (issue 7 item 5).

Each variant runs in a fresh child process that does what a trial process does
(``rbm_tune.study.trainable._trial_fn``): import it (Ray Tune included), hold the graph and
the teacher's outputs (as the worker's deserialised copies from the object store),
``train_student`` with ``keep_model=True``, then ``_inference_ms`` (one forward of 16,384 nodes).
The graph is ``arxiv_synthetic.arxiv_graph``; the teacher outputs are random with the shapes of
the shipped GraphSAGE 3 x 1024 teacher (log-probs 169k x 40, embedding 169k x 1024). The
student is ``ogbn-arxiv-transductive-sage-rbm.yaml`` (RbM 3 x 1024, 5 experts, k 3, batch
norm, ``distill.mode`` from ``--mode``: reference, or fast with ``eval_nodes: needed``) for one
pretraining-free epoch (``pretrain_epochs: 0``:
k-means on a 20k-row sample, 1 restart, then one routed epoch, i.e. the peak phase) with
``batch_size`` 4096 (the paper's) and -1 (the shipped config: every row in one chunk).

The child reports its peak RSS (``VmHWM``, reset per phase through ``/proc/self/clear_refs``)
after each phase; the parent polls the child's ``VmRSS`` and kills it above ``--limit-gib`` (the
machine is shared), reporting the variant as "over the limit". On ``--device cuda`` the child
also reports ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved`` and the fraction of
an 80 GB card.

    nice -n 19 .venv/bin/python benchmarks/bench_memory.py [--batch-sizes 4096 -1]
        [--mode reference|fast] [--device cpu|cuda] [--threads T] [--limit-gib 10] [--out FILE]

Goal: 4 concurrent trials fit a 24 GiB machine (peak ≤ 6 GiB per trial, before the OS and Ray).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CONFIG = Path(__file__).resolve().parents[1] / "rbm_tune" / "configs"
GIB = 1024**3
CARD = 80e9  # "an 80 GB card", in bytes


def _status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS / VmHWM of a process in bytes (0 when it is gone)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    return out


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


# -- the child: one trial's work ----------------------------------------------------------------
def child(args: argparse.Namespace) -> int:
    phases: list[dict[str, object]] = []

    def phase(name: str, start: float, **extra: object) -> None:
        st = _status()
        row: dict[str, object] = {
            "phase": name,
            "peak": st.get("VmHWM", 0),
            "rss": st.get("VmRSS", 0),
            "seconds": time.perf_counter() - start,
            **extra,
        }
        if args.device == "cuda":
            import torch

            row["cuda_alloc"] = torch.cuda.max_memory_allocated()
            row["cuda_reserved"] = torch.cuda.max_memory_reserved()
        phases.append(row)
        print("PHASE " + json.dumps(row), flush=True)
        _reset_peak()

    t = time.perf_counter()
    _reset_peak()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import rbm_tune.study.trainable as T  # noqa: F401  (what a trial process has loaded: Ray Tune too)
    from rbm_tune.config import load_config
    from rbm_tune.distill import train_student
    from rbm_tune.study.trainable import _inference_ms

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from arxiv_synthetic import ARXIV, arxiv_graph, fake_teacher, scaled

    phase("imports (torch, rbm_tune.study.trainable, Ray Tune)", t)
    t = time.perf_counter()
    sizes = scaled(ARXIV, args.scale)
    cfg = load_config(CONFIG / "ogbn-arxiv-transductive-sage-rbm.yaml")
    graph = arxiv_graph(sizes)
    teacher = fake_teacher(sizes.nodes, sizes.classes, cfg.teacher.hidden_dim)
    tensors = [graph.x, graph.y, graph.edge_index, teacher.log_probs, teacher.embedding]
    data_bytes = sum(x.numel() * x.element_size() for x in tensors)
    phase("graph + teacher outputs in memory", t, data_bytes=data_bytes)
    cfg = cfg.replace(
        distill={
            "batch_size": args.batch_size,
            "mode": args.mode,
            "eval_nodes": "needed" if args.mode == "fast" else "all",
            "max_epochs": 1,
            "pretrain_epochs": 0,
            "kmeans_restarts": 1,
            "kmeans_max_iter": 10,
            "kmeans_max_rows": 20_000,
        }
    )
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    epochs: list[float] = []
    result = train_student(
        cfg,
        graph,
        teacher,
        device=device,
        keep_model=True,
        report=lambda m: epochs.append(m["epoch_seconds"]),
    )
    phase("train_student (switch + 1 routed epoch)", t, epoch_seconds=epochs)
    assert result.model is not None
    t = time.perf_counter()
    ms = _inference_ms(result.model.to(device), graph.x.to(device))
    phase("_inference_ms (16,384 nodes in one forward)", t, ms_per_1k=ms)
    print("DONE " + json.dumps(phases), flush=True)
    return 0


def teacher_child(args: argparse.Namespace) -> int:
    """One training step + one eval forward of the shipped arxiv GraphSAGE teacher, full batch
    (given ``edge_index``, the teacher builds its sparse adjacency; before issue 20 item 4 this
    measured PyG's convs over ``edge_index``: see benchmarks/bench_teacher_scale.py)."""
    t = time.perf_counter()
    _reset_peak()
    import torch
    import torch.nn.functional as F

    if args.threads:
        torch.set_num_threads(args.threads)
    from rbm_tune.config import load_config
    from rbm_tune.models import build_teacher

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from arxiv_synthetic import ARXIV, arxiv_graph, scaled

    sizes = scaled(ARXIV, args.scale)
    graph = arxiv_graph(sizes)
    spec = load_config(CONFIG / "ogbn-arxiv-transductive-sage-rbm.yaml").teacher
    model = build_teacher(spec, graph.num_features, graph.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr)
    base = _status().get("VmRSS", 0)
    _reset_peak()
    model.train()
    out = model(graph.x, graph.edge_index)
    loss = F.nll_loss(F.log_softmax(out.logits[graph.train_idx], -1), graph.y[graph.train_idx])
    loss.backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        model(graph.x, graph.edge_index)
    st = _status()
    row = {
        "phase": "teacher step",
        "scale": args.scale,
        "edges": graph.edge_index.size(1),
        "base": base,
        "peak": st.get("VmHWM", 0),
        "seconds": time.perf_counter() - t,
    }
    print("PHASE " + json.dumps(row), flush=True)
    return 0


# -- the parent -------------------------------------------------------------------------------
def run_variant(
    args: argparse.Namespace, batch: int, *, teacher: bool = False, scale: float | None = None
) -> dict[str, object]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--batch-size",
        str(batch),
        "--device",
        args.device,
        "--scale",
        str(args.scale if scale is None else scale),
        "--mode",
        args.mode,
    ]
    if teacher:
        cmd.append("--teacher")
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak_polled, killed = 0, False
    lines: list[str] = []
    import threading

    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    while proc.poll() is None:
        rss = _status(proc.pid).get("VmRSS", 0)
        peak_polled = max(peak_polled, rss)
        if rss > args.limit_gib * GIB:
            proc.kill()
            killed = True
            break
        time.sleep(0.05)
    proc.wait()
    reader.join(timeout=10)
    phases = [json.loads(x[6:]) for x in lines if x.startswith("PHASE ")]
    if proc.returncode and not killed:
        print("".join(lines[-30:]), file=sys.stderr)
    return {
        "batch_size": batch,
        "phases": phases,
        "peak": max([int(p["peak"]) for p in phases] + [peak_polled]),
        "killed": killed,
        "returncode": proc.returncode,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[4096, -1])
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--mode",
        choices=["reference", "fast"],
        default="reference",
        help="distill.mode of the trial (fast also sets eval_nodes: needed)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads in the child")
    p.add_argument("--limit-gib", type=float, default=10.0, help="kill a child above this RSS")
    p.add_argument("--machine-gib", type=float, default=24.0, help="RAM of the target machine")
    p.add_argument("--scale", type=float, default=1.0, help="shrink the graph (quick checks)")
    p.add_argument(
        "--extrapolate-scales",
        type=float,
        nargs="*",
        default=[0.1, 0.2],
        help="a variant killed at the limit is run again at these scales, and its peak "
        "extrapolated linearly",
    )
    p.add_argument("--out", default=None, help="default results/bench_memory-<device>.md")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=4096, help=argparse.SUPPRESS)
    p.add_argument("--teacher", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--teacher-scales",
        type=float,
        nargs="*",
        default=[0.05, 0.1],
        help="also measure one training step of the shipped arxiv SAGE teacher on graphs of "
        "these fractions of arxiv's size, extrapolated linearly to the full size",
    )
    args = p.parse_args(argv)
    if args.child:
        return teacher_child(args) if args.teacher else child(args)

    import torch

    out = Path(args.out or RESULTS / f"bench_memory-{args.device}.md")
    lines = [
        "# bench_memory: peak memory of one ogbn-arxiv-size RbM trial",
        "",
        "```bash",
        "nice -n 19 .venv/bin/python benchmarks/bench_memory.py " + " ".join(sys.argv[1:]),
        "```",
        "",
        f"torch {torch.__version__}, device {args.device}, {os.cpu_count()} CPUs; distill.mode "
        f"{args.mode}; scale "
        f"{args.scale}; a fresh child process per variant; peaks are VmHWM (resident set), per "
        "phase; the parent kills a child above "
        f"{args.limit_gib:g} GiB.",
        "",
    ]
    results = []
    for batch in args.batch_sizes:
        print(f"batch_size {batch} ...", flush=True)
        r = run_variant(args, batch)
        if r["killed"] and len(args.extrapolate_scales) >= 2:
            small = [run_variant(args, batch, scale=sc) for sc in args.extrapolate_scales[-2:]]
            if any(v["killed"] or v["returncode"] for v in small):
                results.append(r)
                continue
            peaks = [(sc, int(v["peak"])) for sc, v in zip(args.extrapolate_scales[-2:], small)]
            (s0, m0), (s1, m1) = peaks
            r["extrapolated"] = m1 + (m1 - m0) / (s1 - s0) * (args.scale - s1)
            r["extrapolated_from"] = peaks
        results.append(r)
    for r in results:
        lines += [
            f"## distill.batch_size {r['batch_size']}"
            + (" (the shipped config)" if r["batch_size"] == -1 else " (the paper's)"),
            "",
            "| phase | peak RSS GiB | RSS after GiB | s | note |",
            "| --- | --- | --- | --- | --- |",
        ]
        for ph in r["phases"]:  # type: ignore[union-attr]
            note = ""
            if "data_bytes" in ph:
                note = f"graph + teacher tensors {ph['data_bytes'] / GIB:.2f} GiB"
            if "epoch_seconds" in ph:
                note = "epoch s " + ", ".join(f"{s:.1f}" for s in ph["epoch_seconds"])
            if "cuda_alloc" in ph:
                note += (
                    f"; CUDA max allocated {ph['cuda_alloc'] / GIB:.2f} GiB, reserved "
                    f"{ph['cuda_reserved'] / GIB:.2f} GiB = "
                    f"{ph['cuda_reserved'] / CARD:.1%} of an 80 GB card"
                )
            lines.append(
                f"| {ph['phase']} | {ph['peak'] / GIB:.2f} | {ph['rss'] / GIB:.2f} | "
                f"{ph['seconds']:.1f} | {note} |"
            )
        if r["killed"]:
            lines.append(
                f"| killed: RSS passed {args.limit_gib:g} GiB | > {args.limit_gib:g} | | | |"
            )
            if "extrapolated" in r:
                pts = ", ".join(
                    f"{v / GIB:.2f} GiB at scale {sc:g}"
                    for sc, v in r["extrapolated_from"]  # type: ignore[union-attr]
                )
                lines += [
                    "",
                    f"The same variant on smaller graphs: peak {pts}; linear extrapolation to "
                    f"scale {args.scale:g}: **≈ {int(r['extrapolated']) / GIB:.1f} GiB** "  # type: ignore[call-overload]
                    "per trial.",
                ]
        elif r["returncode"]:
            lines.append(f"| failed with exit code {r['returncode']} | | | | |")
        lines.append("")
    teacher_runs = [
        run_variant(args, 0, teacher=True, scale=sc) for sc in args.teacher_scales or []
    ]
    points = [r["phases"][0] for r in teacher_runs if r["phases"]]  # type: ignore[index]
    if points:
        lines += [
            "## The teacher task: one training step of the shipped arxiv GraphSAGE (3 x 1024)",
            "",
            "rbm_tune's teacher (PyG convs over `edge_index`, one message row per edge) on "
            "smaller synthetic graphs, peak RSS above the process's RSS before the step:",
            "",
            "| scale | directed edges | peak − before GiB | s |",
            "| --- | --- | --- | --- |",
        ]
        for ph in points:
            lines.append(
                f"| {ph['scale']:g} | {ph['edges']:,} | {(ph['peak'] - ph['base']) / GIB:.2f} | "
                f"{ph['seconds']:.1f} |"
            )
        if len(points) >= 2:
            (s0, m0), (s1, m1) = ((p["scale"], p["peak"] - p["base"]) for p in points[-2:])
            slope = (m1 - m0) / (s1 - s0)
            full = m1 + slope * (1.0 - s1)
            lines += [
                "",
                f"Linear extrapolation to the full size (scale 1): **{full / GIB:.1f} GiB** for "
                "the teacher's training step (on top of the process's own RSS).",
            ]
        lines.append("")
    lines += ["## Goal (issue 7 item 5): 4 concurrent trials on a 24 GiB machine", ""]
    for r in results:
        peak = int(r.get("extrapolated", r["peak"])) / GIB  # type: ignore[call-overload]
        fits = int(args.machine_gib // peak) if peak else 0
        verdict = "PASS" if fits >= 4 and not r["killed"] and not r["returncode"] else "FAIL"
        what = f"> {args.limit_gib:g}" if r["killed"] else f"{peak:.2f}"
        if "extrapolated" in r:
            what += f" (≈ {peak:.1f} extrapolated)"
            fits = int(args.machine_gib // max(peak, args.limit_gib))
        lines.append(
            f"- {verdict}: batch_size {r['batch_size']}: peak {what} GiB per trial → "
            f"{fits} trial(s) in {args.machine_gib:g} GiB "
            "(nothing left for the OS, Ray's object store and the driver)."
        )
        cuda = [ph for ph in r["phases"] if "cuda_reserved" in ph]  # type: ignore[union-attr]
        if cuda:
            frac = max(int(ph["cuda_reserved"]) for ph in cuda) / CARD
            lines.append(
                f"  - GPU: {frac:.1%} of an 80 GB card per trial → gpus_per_trial "
                f"≥ {frac:.2f} ({int(1 // frac) if frac else 0} per card)."
            )
    lines.append("")
    text = "\n".join(lines)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
