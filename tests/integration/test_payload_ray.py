"""A trial payload in a real local Ray: mapped read-only from the node's shared memory, once.

Two tasks on one node ``ray.get`` the payload as a trial does (``tune.with_parameters`` puts it
once and every trial gets it): their arrays must be read-only views of the same bytes of the
same shared-memory file (Ray's plasma store), the torch tensors rebuilt from them must share
that memory, and reading every byte must not make a private copy.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.support.spaces import TINY_SPACE

pytestmark = pytest.mark.integration

ROWS, COLS = 16_384, 512  # 32 MiB of features: far above Ray's inline-object limit


def _mapping(addr: int) -> tuple[str, str, int, str]:
    """(file, dev:inode, offset in the file, permissions) of the mapping holding ``addr``."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, perms, offset, dev, inode, *path = line.split()
        lo, hi = (int(v, 16) for v in span.split("-"))
        if lo <= addr < hi:
            return " ".join(path), f"{dev}:{inode}", int(offset, 16) + addr - lo, perms
    raise AssertionError(f"address {addr:#x} is in no mapping")


def _private_bytes() -> int:
    """USS: the process's private (not shared) resident bytes."""
    total = 0
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1]) * 1024
    return total


def _hold(refs: list[Any], barrier: str) -> dict[str, Any]:
    """What a trial does with its payload, and where the bytes live."""
    import ray

    import rbm_tune.payload  # noqa: F401 (its imports, torch's included, are not the payload)

    private = _private_bytes()
    payload = ray.get(refs[0])
    graph, teacher = payload.graph(), payload.teacher()
    touched = float(graph.x.sum()) + float(teacher.log_probs.sum())  # read every byte
    grown = _private_bytes() - private
    # both tasks hold their payload at once, in two processes
    Path(barrier, str(os.getpid())).touch()
    deadline = time.monotonic() + 60
    while len(os.listdir(barrier)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    x = payload.arrays["x"]
    return {
        "pid": os.getpid(),
        "read_only": [k for k, a in payload.arrays.items() if not a.flags.writeable],
        "mapping": _mapping(x.ctypes.data),
        "x_shared": graph.x.data_ptr() == x.ctypes.data,
        "log_probs_shared": teacher.log_probs.data_ptr()
        == payload.arrays["log_probs"].ctypes.data,
        "private_growth": grown,
        "touched": touched,
    }


def test_two_tasks_map_one_read_only_copy(tmp_path: Path) -> None:
    import ray

    from rbm_tune.data import make_graph
    from rbm_tune.payload import ALWAYS, TrialPayload
    from rbm_tune.search_space import load_space
    from rbm_tune.study.ray_session import init_ray as _init_ray
    from rbm_tune.teacher import TeacherOutputs

    gen = torch.Generator().manual_seed(0)
    y = torch.randint(4, (ROWS,), generator=gen)
    edges = torch.randint(ROWS, (2, 4 * ROWS), generator=gen)
    graph = make_graph(torch.randn(ROWS, COLS, generator=gen), y, edges, name="big")
    teacher = TeacherOutputs(
        log_probs=torch.randn(ROWS, 4, generator=gen).log_softmax(-1),
        embedding=torch.randn(ROWS, 64, generator=gen),
        krd_delta=torch.rand(ROWS, generator=gen),
        val_acc=0.5,
        test_acc=0.5,
        test_acc_oracle=0.5,
        best_epoch=1,
        epochs=1,
        seconds=0.0,
    )
    path = tmp_path / "space.yaml"
    path.write_text(
        TINY_SPACE.format(
            name="zc", trials=1, concurrent=1, max_failures=0, plots="false", gpus=0, epochs=3
        )
    )
    payload = TrialPayload.of(load_space(path), graph, teacher)
    assert set(payload.arrays) == ALWAYS
    barrier = tmp_path / "barrier"
    barrier.mkdir()

    # the task is this module's function: Ray's workers cannot import a test module by name
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    _init_ray(None, 2, None)  # local, 127.0.0.1
    ref = ray.put(payload)  # once, as tune.with_parameters does
    task = ray.remote(num_cpus=1)(_hold)
    a, b = ray.get([task.remote([ref], str(barrier)), task.remote([ref], str(barrier))])

    assert a["pid"] != b["pid"]
    for got in (a, b):
        assert sorted(got["read_only"]) == sorted(ALWAYS)
        file, _, _, perms = got["mapping"]
        assert file.startswith("/dev/shm/") and perms.endswith("s"), got["mapping"]  # shared
        assert got["x_shared"] and got["log_probs_shared"]
        # 32 MiB of features read: no private copy (a copy would be >= 32 MiB of USS)
        assert got["private_growth"] < payload.arrays["x"].nbytes // 4, got["private_growth"]
        assert got["touched"] == pytest.approx(
            float(graph.x.sum()) + float(teacher.log_probs.sum())
        )
    # the same bytes of the same shared file in both processes
    assert a["mapping"][:3] == b["mapping"][:3]
