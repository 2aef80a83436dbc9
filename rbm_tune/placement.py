"""Which device a trial, an evaluate task or a teacher task runs on: the one Ray assigned.

Ray 2.60 no longer blanks ``CUDA_VISIBLE_DEVICES`` for a worker given no GPU, so
``torch.cuda.is_available()`` says nothing about what Ray accounted for: a zero-GPU task that
picked CUDA would land on physical GPU 0, outside Ray's accounting, while the other GPUs idle.
The rule (:func:`decide`, a pure function tested over a table of cases):

- Ray assigned GPU ids and this process sees CUDA: ``cuda:0``, the first of its visible set
  (Ray sets ``CUDA_VISIBLE_DEVICES`` to the assigned ids);
- Ray assigned GPU ids but CUDA is not there (a driver or torch-build mismatch): an error in
  one line, unless the space says ``study.cpu_fallback: true`` (then the CPUs, with a warning);
- no GPU assigned: the CPU, with the CPUs Ray gave the task as torch's threads.

:func:`from_ray` reads the assignment inside a Ray worker and applies the decision. Imports
neither torch nor Ray at module level.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rbm_tune.errors import RbmTuneError

__all__ = ["NoCudaError", "Placement", "decide", "from_ray"]


class NoCudaError(RbmTuneError):
    """Ray gave this task a GPU, but CUDA is not available in its process."""


@dataclass(frozen=True)
class Placement:
    """Where to run: ``device`` (``cuda:0`` or ``cpu``), torch's thread count (None: leave
    torch's default), and a warning to print (None: nothing to say)."""

    device: str
    threads: int | None = None
    warning: str | None = None


def decide(
    *,
    gpu_ids: Sequence[str],
    cuda_devices: int,
    cpus: float | None,
    cpu_fallback: bool = False,
    what: str = "trial",
    node: str = "",
) -> Placement:
    """The device for a task Ray assigned ``gpu_ids`` and ``cpus``, in a process that sees
    ``cuda_devices`` CUDA devices (module docstring).

    Raises:
        NoCudaError: GPUs were assigned, no CUDA device is visible and ``cpu_fallback`` is off.
    """
    threads = max(1, int(cpus)) if cpus else None
    if gpu_ids:
        if cuda_devices > 0:
            return Placement("cuda:0", threads)
        where = f" on node {node}" if node else ""
        if cpu_fallback:
            return Placement(
                "cpu",
                threads,
                f"rbm-tune: warning: this {what} was given GPU {','.join(gpu_ids)}{where} but "
                "CUDA is not available there; running on its CPUs (study.cpu_fallback: true)",
            )
        raise NoCudaError(
            f"this {what} was given GPU {','.join(gpu_ids)}{where} but CUDA is not available "
            "there (torch.cuda.is_available() is False: check the node's NVIDIA driver and that "
            "the CUDA build of torch is installed), or set study.cpu_fallback: true in the space "
            "to train on the CPUs instead"
        )
    return Placement("cpu", threads)


def from_ray(*, cpu_fallback: bool = False, what: str = "trial") -> Placement:
    """:func:`decide` for the current Ray worker (outside Ray: no GPU assigned, the CPU), and
    apply its thread count to torch."""
    import torch

    gpu_ids: list[str] = []
    cpus: float | None = None
    node = ""
    try:
        import ray

        if ray.is_initialized():
            context = ray.get_runtime_context()
            gpu_ids = [str(i) for i in context.get_accelerator_ids().get("GPU", [])]
            cpus = context.get_assigned_resources().get("CPU")
            node = str(context.get_node_id())
    except ImportError:  # ray is a dependency; a bare install of the model code runs without
        pass
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    placement = decide(
        gpu_ids=gpu_ids,
        cuda_devices=cuda,
        cpus=cpus,
        cpu_fallback=cpu_fallback,
        what=what,
        node=node[:12],
    )
    if placement.threads:
        torch.set_num_threads(placement.threads)
    return placement
