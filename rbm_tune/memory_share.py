"""Memory sizes and shares: ``"24GiB"`` <-> bytes, this host's memory, a trial's share.

:func:`trial_share` is the memory a trial may use: ``gpus_per_trial`` x the card on a GPU; on a
CPU ``study.memory_per_trial`` or the host's memory divided among the trials that run at once.
:mod:`rbm_tune.memory` (the estimates) re-exports all four. Imports neither torch nor Ray.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

from rbm_tune.errors import ConfigError

__all__ = ["format_bytes", "host_memory", "parse_bytes", "trial_share"]

_UNITS = {
    "": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip


def parse_bytes(text: Any, what: str = "a memory size") -> int:
    """``"80GB"``, ``"24 GiB"``, ``"512MiB"`` or a number of bytes -> bytes.

    Raises:
        ConfigError: not a positive size.
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
        if not match or match.group(2).lower() not in _UNITS:
            raise ConfigError(f"{what} {text!r} is not a size; write e.g. 80GB, 24GiB or 512MiB")
        value, unit = float(match.group(1)), match.group(2).lower()
    size = value * _UNITS[unit]
    if not math.isfinite(size) or size <= 0:
        raise ConfigError(f"{what} {text!r} must be more than 0 bytes; write e.g. 24GiB")
    return int(size)


def format_bytes(n: float) -> str:
    """Bytes as GiB with two decimals (MiB below 1 GiB)."""
    if abs(n) < 2**30:
        return f"{n / 2**20:.0f} MiB"
    return f"{n / 2**30:.2f} GiB"


def host_memory() -> int:
    """This host's memory in bytes: the cgroup's limit where one is set, else MemTotal."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path).read().strip()  # noqa: SIM115 (a one-line read)
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            return int(text)
    return total


def trial_share(
    study: Any,
    device: str,
    *,
    card_memory: int | None = None,
    host_bytes: int | None = None,
    node_cpus: float | None = None,
) -> int:
    """The memory one trial may use.

    On a GPU: ``gpus_per_trial`` (at most 1) x ``card_memory``. On a CPU: the study's
    ``memory_per_trial`` if set, else the host's memory divided by the trials that run at once
    on it (``node_cpus / cpus_per_trial``, at most ``max_concurrent``).
    """
    if str(device).startswith("cuda"):
        if card_memory is None:
            raise ValueError("card_memory is needed for a GPU share")
        return int(min(study.gpus_per_trial or 1, 1) * card_memory)
    if study.memory_per_trial:
        return int(study.memory_per_trial)
    host = host_memory() if host_bytes is None else host_bytes
    cpus = node_cpus if node_cpus is not None else float(os.cpu_count() or 1)
    at_once = max(1, int(cpus // study.cpus_per_trial))
    if study.max_concurrent:
        at_once = min(at_once, study.max_concurrent)
    return host // at_once
