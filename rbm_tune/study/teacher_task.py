"""The teacher of one key, once: read from the cache by the driver, else trained by one Ray task
and written back to the cache the driver reads.

Studies (``study/run.py``, one key) and ``rbm-tune evaluate`` (one key per seed) resolve their
teachers here. The task trains under the key's lock, on a GPU when the cluster has one (as
``cuda:0`` of what Ray assigned it, rbm_tune.placement), else with the CPUs of the largest node
(or ``study.teacher_cpus``). The task writes to the cache *it* sees; on a cluster whose nodes do
not share the driver's cache folder that is another machine's disk, so the driver stores the
returned teacher too: the next study on the same key trains nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from rbm_tune.placement import NoCudaError


def teacher_cpus(wanted: float | None = None) -> float:
    """The CPUs a CPU teacher task asks for: ``wanted`` (``study.teacher_cpus``), else all of
    the largest alive node's (nothing else runs before the teacher exists)."""
    import ray

    if wanted:
        return float(wanted)
    sizes = [n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    return float(max(sizes, default=1) or 1)


def resolve_teacher(
    cache: Any,
    key: Any,
    spec: Any,
    graph: Any,
    seed: int,
    *,
    cpu_fallback: bool = False,
    cpus: float | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[Any, bool]:
    """``(teacher, trained)``: the cached teacher of ``key``, or one trained by a Ray task. The
    task's placement warning (e.g. a GPU without CUDA, falling back) goes to ``log`` (default
    stderr): a task's own output reaches the console only with ``--verbose``.

    Raises:
        NoCudaError: Ray gave the task a GPU but its process has no CUDA (one line).
    """
    teacher = cache.get(key)
    if teacher is not None:  # read right here: no Ray worker to start (~3 s)
        return teacher, False
    import ray

    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    task = ray.remote(num_cpus=1 if gpus else teacher_cpus(cpus), num_gpus=gpus)(train_or_read)
    try:
        teacher, trained, warning = ray.get(
            task.remote(cache, key, spec, graph, seed, cpu_fallback)
        )
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, NoCudaError):
            raise NoCudaError(str(err.cause)) from None
        raise
    if warning:
        (log or (lambda line: print(line, file=sys.stderr)))(warning)
    write_back(cache, key, teacher)
    return teacher, trained


def write_back(cache: Any, key: Any, teacher: Any) -> bool:
    """Store ``teacher`` in the driver's cache unless it already holds ``key``; whether it
    wrote (the task ran where the driver's cache folder is not, e.g. another node's disk)."""
    if cache.contains(key):
        return False
    cache.put(key, teacher)
    return True


def train_or_read(
    cache: Any, key: Any, spec: Any, graph: Any, seed: int, cpu_fallback: bool = False
) -> tuple[Any, bool, str | None]:
    """Runs as one Ray task: the cached teacher, or train it (exactly once, under its lock) on
    the device Ray gave the task (rbm_tune.placement); whether it trained, and the placement's
    warning for the driver to print."""
    import torch

    from rbm_tune.placement import from_ray
    from rbm_tune.teacher import train_teacher

    trained: list[bool] = []
    warnings: list[str] = []

    def train() -> Any:
        trained.append(True)
        placement = from_ray(cpu_fallback=cpu_fallback, what="teacher task")
        if placement.warning:
            warnings.append(placement.warning)
        device = torch.device(placement.device)
        return train_teacher(spec, graph, seed=seed, device=device)

    return cache.get_or_train(key, train), bool(trained), warnings[0] if warnings else None
