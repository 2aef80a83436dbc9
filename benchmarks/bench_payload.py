"""Memory of a node's trials holding their data: full torch objects vs the slim shared payload.

At ogbn-arxiv size (``arxiv_synthetic.arxiv_graph``; teacher outputs random with the shapes of
the shipped GraphSAGE 3 x 1024 teacher: log-probs 169,343 x 40, embedding 169,343 x 1024, KRD
δ, and its weights), ``--actors`` Ray actors on one local node each receive the data the way a
trial does (put in the object store once by the driver, ``ray.get`` in the trial process) and
hold it, after reading every byte (what training does):

- ``old``: the ``Graph`` and the ``TeacherOutputs`` themselves, as ``tune.with_parameters``
  shipped them before (two objects; torch storages pickle in-band, so each process
  deserialises a private copy);
- ``slim``: ``rbm_tune.payload.TrialPayload`` of the shipped ``arxiv`` space (every optional
  switch off: features, labels, split, log-probs), numpy arrays mapped read-only from the
  node's shared memory;
- ``slim+all``: the same with KRD, DeepWalk and similarity distillation searched (edges,
  embedding and δ travel too), to show the sharing apart from the slimming.

Per actor, the growth from just before ``ray.get`` to holding the data (its imports done
before): RSS (shared pages count), PSS (shared pages divided among the processes mapping
them) and USS (private pages only), from ``/proc/PID/smaps_rollup``; and the seconds of the
``ray.get``. Per node: the object store's one copy plus the actors' private memory, and the
drop of ``MemAvailable`` from before the put to all actors holding (noisy on a shared machine).

    flock /tmp/rbm-heavy.lock nice -n 5 .venv/bin/python benchmarks/bench_payload.py
        [--actors 4] [--scale 1.0] [--arms old slim slim+all]

Goal (issue 20 item 5): graph and teacher outputs held once per node, not once per trial.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MIB = 1024**2


def smaps(pid: int) -> dict[str, int]:
    """Rss, Pss and USS (Private_Clean + Private_Dirty) of a process in bytes."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        fields[key] = int(value.split()[0]) * 1024
    return {
        "rss": fields["Rss"],
        "pss": fields["Pss"],
        "uss": fields["Private_Clean"] + fields["Private_Dirty"],
    }


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


class Holder:
    """A trial process: imports done at start, then receives and holds the data."""

    def __init__(self) -> None:
        import torch  # noqa: F401

        import rbm_tune.data  # noqa: F401
        import rbm_tune.payload  # noqa: F401
        import rbm_tune.teacher  # noqa: F401

        self.held: Any = None

    def pid(self) -> int:
        return os.getpid()

    def hold(self, refs: dict[str, Any]) -> float:
        """``ray.get`` as ``tune.with_parameters`` does, rebuild what ``_trial_fn`` uses, read
        every byte; returns the seconds of the get and the rebuild."""
        import ray
        import torch

        start = time.perf_counter()
        got = {k: ray.get(v) for k, v in refs.items()}
        if "payload" in got:
            graph, teacher = got["payload"].graph(), got["payload"].teacher()
        else:
            graph, teacher = got["graph"], got["teacher"]
        seconds = time.perf_counter() - start
        tensors = [v for v in (*vars(graph).values(), *vars(teacher).values())]
        tensors += list((teacher.state_dict or {}).values())
        for t in tensors:
            if isinstance(t, torch.Tensor) and t.numel():
                t.reshape(-1)[:: max(1, 4096 // t.element_size())].sum()  # one read per page
        self.held = (got, graph, teacher)
        return seconds


def teacher_state(features: int, classes: int, hidden: int = 1024) -> dict[str, Any]:
    """Random weights with the shapes of a 3-layer GraphSAGE (lin_l, lin_r per layer, BN)."""
    import torch

    dims = [features, hidden, hidden, classes]
    state = {}
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        state[f"convs.{i}.lin_l.weight"] = torch.randn(b, a)
        state[f"convs.{i}.lin_l.bias"] = torch.randn(b)
        state[f"convs.{i}.lin_r.weight"] = torch.randn(b, a)
        if i < 2:
            for name in ("weight", "bias", "running_mean", "running_var"):
                state[f"norms.{i}.{name}"] = torch.randn(hidden)
    return state


def all_switches_space(folder: Path) -> Any:
    from rbm_tune.search_space import load_space

    space = load_space("arxiv")
    text = space.path.read_text()  # distill: is its last section; the switches are its base's
    assert text.rstrip().rpartition("\ndistill:\n")[2].startswith("  ")
    for switch in ("reliable_sampling", "positional_encoding", "similarity_distill"):
        assert f"{switch}:" not in text and space.fixed[f"distill.{switch}"] is False, switch
        text += f"  {switch}: {{categorical: [false, true]}}\n"
    path = folder / "arxiv-all.yaml"
    path.write_text(text)
    return load_space(path)


def run_arm(arm: str, graph: Any, teacher: Any, actors: int, folder: Path) -> dict[str, Any]:
    import ray

    from rbm_tune.payload import TrialPayload
    from rbm_tune.search_space import load_space

    cls = ray.remote(num_cpus=0.5)(Holder)
    holders = [cls.remote() for _ in range(actors)]
    pids = ray.get([h.pid.remote() for h in holders])
    available = mem_available()
    if arm == "old":
        objects = {"graph": graph, "teacher": teacher}
        size = sum(_torch_bytes(o) for o in objects.values())
    else:
        space = load_space("arxiv") if arm == "slim" else all_switches_space(folder)
        objects = {"payload": TrialPayload.of(space, graph, teacher)}
        size = objects["payload"].nbytes
    refs = {k: ray.put(v) for k, v in objects.items()}  # once, as with_parameters does
    before = {pid: smaps(pid) for pid in pids}
    seconds = ray.get([h.hold.remote(refs) for h in holders])
    after = {pid: smaps(pid) for pid in pids}
    drop = available - mem_available()
    grown = {k: [after[p][k] - before[p][k] for p in pids] for k in ("rss", "pss", "uss")}
    for h in holders:
        ray.kill(h)
    del refs
    return {
        "arm": arm,
        "data": size,
        "seconds": max(seconds),
        **{f"{k}_mean": sum(v) / len(v) for k, v in grown.items()},
        "uss_sum": sum(grown["uss"]),
        "node": size + sum(grown["uss"]),
        "available_drop": drop,
    }


def _torch_bytes(obj: Any) -> int:
    import torch

    values = list(vars(obj).values()) + list((getattr(obj, "state_dict", None) or {}).values())
    seen = {id(v.untyped_storage()): v.untyped_storage().nbytes() for v in values
            if isinstance(v, torch.Tensor)}  # fmt: skip
    return sum(seen.values())


def _ratio(old: dict[str, Any], new: dict[str, Any], key: str) -> str:
    """old / new, or n/a where the new value is within a few pages of zero."""
    return f"{old[key] / new[key]:.1f}x" if new[key] > 4 * MIB else "n/a (new ~0)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, default=4)
    parser.add_argument("--scale", type=float, default=1.0, help="graph size factor (quick runs)")
    parser.add_argument("--arms", nargs="+", default=["old", "slim", "slim+all"])
    args = parser.parse_args(argv)

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from dataclasses import replace

    import ray
    from arxiv_synthetic import ARXIV, arxiv_graph, fake_teacher, scaled

    from rbm_tune.study.ray_session import init_ray as _init_ray

    sizes = scaled(ARXIV, args.scale)
    graph = arxiv_graph(sizes)
    teacher = fake_teacher(graph.num_nodes, graph.num_classes, 1024, labels=graph.y)
    teacher = replace(teacher, state_dict=teacher_state(graph.num_features, graph.num_classes))
    print(f"{graph.summary()}; teacher embedding {tuple(teacher.embedding.shape)}", flush=True)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arm in args.arms:
            _init_ray(None, args.actors, None)
            rows.append(run_arm(arm, graph, teacher, args.actors, Path(tmp)))
            ray.shutdown()
            time.sleep(2)

    def mib(v: float) -> str:
        return f"{v / MIB:,.0f}"

    head = (
        "| arm | data put once (MiB) | get+rebuild s | per actor: RSS / PSS / USS growth (MiB) "
        f"| Σ USS, {args.actors} actors | node: store + Σ USS | MemAvailable drop |"
    )
    print(head)
    print("|" + " --- |" * 7)
    for r in rows:
        print(
            f"| {r['arm']} | {mib(r['data'])} | {r['seconds']:.2f} | {mib(r['rss_mean'])} / "
            f"{mib(r['pss_mean'])} / {mib(r['uss_mean'])} | {mib(r['uss_sum'])} | "
            f"{mib(r['node'])} | {mib(r['available_drop'])} |"
        )
    by = {r["arm"]: r for r in rows}
    if "old" in by:
        for arm in (a for a in by if a != "old"):
            o, n = by["old"], by[arm]
            print(
                f"old / {arm}: node memory {_ratio(o, n, 'node')}, per-actor USS "
                f"{_ratio(o, n, 'uss_mean')}, per-actor PSS {_ratio(o, n, 'pss_mean')}, "
                f"MemAvailable drop {_ratio(o, n, 'available_drop')}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
