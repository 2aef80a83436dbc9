"""Joining or starting Ray for a study: a reachable address checked first, loopback only.

A local Ray binds 127.0.0.1 (STACK.md "Loopback only"); an ``--address`` is checked with one
TCP connection before ``ray.init`` (which retries an unreachable address for minutes), and
every failure is one ``RbmTuneError`` line naming the fix. On a joined cluster that lacks the
GPUs a trial asks for, :func:`wait_for_gpus` waits a bounded time for them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from rbm_tune.errors import RbmTuneError, first_line

__all__ = ["check_address", "init_ray", "refuse_ray_client", "split_address", "wait_for_gpus"]


def split_address(address: str) -> tuple[str, int]:
    """``host:port``, ``ray://host:port``, ``[::1]:port`` or ``ray://[::1]:port`` -> (host,
    port) as ``socket`` takes them (no brackets; an empty host is 127.0.0.1).

    Raises:
        ValueError: no port, or a port that is not a number.
    """
    rest = address.removeprefix("ray://")
    if rest.startswith("["):
        host, sep, port = rest[1:].partition("]:")
        if not sep:
            raise ValueError(f"no port after the IPv6 address in {address!r}")
    else:
        host, _, port = rest.rpartition(":")
    return host or "127.0.0.1", int(port)


def refuse_ray_client(address: str | None) -> None:
    """A study's driver does not run through Ray Client (``ray://``): Ray Client has no local
    Tuner to restore (``--resume``) and the driver's paths (storage, cache, MLflow's SQLite
    default) would be this machine's, not the cluster's. One line pointing to the ways that
    work."""
    if address and address.startswith("ray://"):
        raise RbmTuneError(
            f"--address {address}: a study's driver cannot run through Ray Client (ray://); "
            "use 'rbm-tune submit --address http://HEAD:8265 ...' from this machine, or run "
            "rbm-tune on a cluster node with --address auto (or HEAD:6379)"
        )


def check_address(address: str, timeout: float = 5.0) -> None:
    """Fail in one line when a ``host:port`` Ray address does not accept connections.

    ``ray.init`` itself retries an unreachable address for minutes.
    """
    import socket

    if address in ("auto", "local"):
        return
    try:
        socket.create_connection(split_address(address), timeout=timeout).close()
    except (OSError, ValueError) as err:
        reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
        raise RbmTuneError(
            f"cannot reach the Ray cluster at {address} ({reason}); start it "
            "(ray start --head --dashboard-host 127.0.0.1) "
            "or fix --address (host:port of the head's GCS, ray://host:10001, [::1]:6379, or "
            "auto)"
        ) from None


def _loopback_only() -> None:
    """Make a local Ray use 127.0.0.1 instead of the machine's public address (STACK.md).

    Ray reads ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` once, when ``ray`` is imported, and this
    module imports it: setting the variable here only reaches the processes Ray starts, so the
    driver's own copy of the flag is set too. A user who exported the variable keeps it.
    """
    from rbm_tune.study._compat import set_driver_cluster_flag

    value = os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    set_driver_cluster_flag(value.strip().lower() in ("1", "true", "yes"))


def init_ray(
    address: str | None, cpus: int | None, gpus: float | None, *, verbose: bool = True
) -> None:
    """Join ``address`` or start a local Ray (module docstring). Without ``verbose``, the
    output of Ray's worker processes is not streamed to this one and Ray's driver logs only
    errors (not its start-up and token-authentication notices)."""
    import logging

    import ray

    if ray.is_initialized():
        return
    quiet: dict[str, Any] = {}
    if not verbose:
        quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            _loopback_only()
            # whole GPUs (the CLI refuses a fraction for a local Ray)
            num_gpus = None if gpus is None else int(gpus)
            ray.init(
                num_cpus=cpus,
                num_gpus=num_gpus,
                include_dashboard=False,
                **quiet,
            )
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as err:
        first = first_line(err)
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise RbmTuneError(
            f"cannot start or join {where} ({first}); check --address (e.g. ray://head:10001 or "
            "auto) and that 'ray status' works there"
        ) from None


GPU_WAIT_ENV = "RBM_TUNE_GPU_WAIT_S"
GPU_WAIT_DEFAULT_S = 900.0


def wait_for_gpus(
    need: float,
    cpus: float,
    *,
    address: str,
    timeout_s: float | None = None,
    log: Callable[[str], None] = print,
    poll_s: float = 2.0,
) -> None:
    """On a joined cluster whose GPUs are fewer than one trial asks for: ask the autoscaler for
    one trial's bundle (``ray.autoscaler.sdk.request_resources``; a no-op where there is none,
    as on SLURM) and wait at most ``timeout_s`` (``$RBM_TUNE_GPU_WAIT_S``, default 900 s) for
    them, instead of letting every trial wait forever. Needs ``ray.init`` done.

    Raises:
        RbmTuneError: the GPUs never appeared (one line naming the fixes).
    """
    import ray

    if need <= 0 or ray.cluster_resources().get("GPU", 0) >= need:
        return
    if timeout_s is None:
        raw = os.environ.get(GPU_WAIT_ENV, "")
        try:
            timeout_s = float(raw) if raw else GPU_WAIT_DEFAULT_S
        except ValueError:
            raise RbmTuneError(
                f"{GPU_WAIT_ENV}={raw!r} is not a number of seconds; set it to e.g. 900"
            ) from None
    try:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[{"GPU": need, "CPU": cpus}])
    except Exception:  # noqa: BLE001 - no autoscaler to ask: waiting is all there is
        pass
    log(
        f"rbm-tune: the Ray cluster has no GPU for a trial yet (each asks for {need:g}); "
        f"waiting up to {timeout_s:.0f} s for one ({GPU_WAIT_ENV})"
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ray.cluster_resources().get("GPU", 0) >= need:
            return
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
    have = ray.cluster_resources().get("GPU", 0)
    if have >= need:
        return
    raise RbmTuneError(
        f"the Ray cluster at {address} has {have:g} GPU(s) after {timeout_s:.0f} s, but each "
        f"trial asks for {need:g} (resources.gpus_per_trial); add GPU nodes (SLURM: "
        f"--gpus-per-node or --gres=gpu:N), give a slow autoscaler longer ({GPU_WAIT_ENV}), or "
        "set resources.gpus_per_trial: 0 to run on CPUs"
    )
