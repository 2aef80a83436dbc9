"""Per-thread reusable buffers for the grouped expert dispatch's temporaries.

Fresh tensors above glibc's mmap threshold (32 MiB) are page-faulted in on every call, which
cost as much as a third of an expert GEMM of a 4096-row chunk on a 2-core CPU. The grouped
dispatch (:mod:`rbm_tune.models.experts`) therefore writes its temporaries (the gathered pair
rows' outputs, the gradient rows, dropout's random bits) into buffers kept per thread, name,
device and dtype, up to :data:`WORKSPACE_MAX` elements each. A buffer is reused by the next
call that asks for the same name: nothing returned here may outlive the call that asked for it.
"""

from __future__ import annotations

import math
import threading

import torch
from torch import Tensor

__all__ = ["WORKSPACE_MAX", "scratch"]

WORKSPACE_MAX = 1 << 24  # elements (64 MiB of float32) per buffer; larger ones are not kept

_WORKSPACE = threading.local()


def scratch(
    name: str, shape: tuple[int, ...], like: Tensor, dtype: torch.dtype | None = None
) -> Tensor:
    """A buffer of ``shape`` on ``like``'s device (``dtype``, default ``like``'s), reused by
    the next call for the same ``name`` on this thread: contents undefined, only for a
    temporary that never leaves its caller. Above :data:`WORKSPACE_MAX` elements a fresh
    tensor is returned and nothing is kept."""
    dtype = like.dtype if dtype is None else dtype
    numel = math.prod(shape)
    if numel > WORKSPACE_MAX:
        return like.new_empty(shape, dtype=dtype)
    pool = _WORKSPACE.__dict__.setdefault("pool", {})
    key = (name, like.device, dtype)
    buf = pool.get(key)
    if buf is None or buf.numel() < numel:
        buf = pool[key] = like.new_empty(numel, dtype=dtype)
    return buf[:numel].view(shape)
