"""What each ``rbm-tune`` subcommand does, behind the argument parsing in ``cli.py``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from rbm_tune.config import find_config, shipped_configs
from rbm_tune.errors import ConfigError
from rbm_tune.paths import resolve_storage
from rbm_tune.space.study import STUDY_NAME
from rbm_tune.storage import local_study, remote_storage

__all__ = [
    "check_device",
    "check_ray_address",
    "check_study_name",
    "check_tracking_uri",
    "list_configs",
    "list_datasets",
    "resolve_config_path",
    "train",
]


# -- checks that run before anything is written or started -----------------------------------


def check_study_name(name: str | None) -> None:
    """``--name`` becomes a folder and an MLflow experiment: refuse paths and odd characters."""
    if name is not None and not STUDY_NAME.fullmatch(name):
        raise ConfigError(
            f"--name {name!r} cannot name a study (a folder and an MLflow experiment); use "
            "letters, digits, '.', '_' and '-', starting with a letter or digit"
        )


def check_ray_address(address: str | None) -> None:
    """A Ray address is ``auto``, ``local``, ``HOST:PORT`` or ``ray://HOST:PORT``.

    Checked by shape only: nothing is resolved or contacted here.
    """
    if address is None or address in ("auto", "local"):
        return
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    ok = (
        "://" not in rest
        and sep
        and host
        and "/" not in host
        and port.isdigit()
        and 0 < int(port) < 65536
    )
    if not ok:
        raise ConfigError(
            f"--address {address!r} is not a Ray address; give auto, HOST:PORT of the head's GCS "
            "(e.g. 10.0.0.5:6379) or ray://HOST:10001 (for 'rbm-tune submit' it is the "
            "dashboard, http://HEAD:8265)"
        )


def check_tracking_uri(tracking_uri: str | None) -> str:
    """Resolve the MLflow URI and check that MLflow knows its scheme and the store is usable.

    Returns:
        The resolved URI.
    """
    from rbm_tune.tracking import check_reachable, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    check_reachable(uri)
    return uri


def check_device(device: str) -> None:
    """``--device``: auto, cpu, cuda or cuda:N where that GPU exists."""
    if device == "auto":
        return
    import torch

    fix = "use --device cpu, cuda, cuda:N or auto"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {device!r} is not a device; {fix}") from None
    if dev.type == "cpu":
        return
    if dev.type != "cuda":
        raise ConfigError(f"--device {device!r}: rbm-tune runs on CPUs and CUDA GPUs; {fix}")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"--device {device}: CUDA is not available on this machine; use --device cpu or auto"
        )
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise ConfigError(
            f"--device {device}: this machine has {count} CUDA device(s), cuda:0 to "
            f"cuda:{count - 1}; pick one of them or use --device cuda"
        )


def _check_cache_dir(cache_dir: str | None) -> None:
    from rbm_tune.teacher_cache import check_cache_dir

    check_cache_dir(cache_dir)


def list_datasets(data_root: str | None) -> int:
    """Print every dataset, whether its files are present under the data root, and its sizes."""
    from rbm_tune.data import SOURCES, dataset_status, resolve_data_root

    root = resolve_data_root(data_root)
    print(f"data root: {root}")
    header = f"{'dataset':<18} {'present':<8} {'nodes':>9} {'features':>8} {'classes':>7}  folder"
    print(header)
    for name, source in SOURCES.items():
        present, missing = dataset_status(name, root)
        folder = "(embedded)" if source.kind == "demo" else str(root / source.folder)
        note = "" if present else f"  missing {len(missing)} file(s)"
        print(
            f"{name:<18} {'yes' if present else 'no':<8} {source.nodes:>9} "
            f"{source.features:>8} {source.classes:>7}  {folder}{note}"
        )
    return 0


def list_configs() -> int:
    """Print the names of the shipped trial configs."""
    for name in shipped_configs():
        print(name)
    return 0


def resolve_config_path(value: str) -> Path:
    """A path to a YAML file, or the name of a shipped config (``cora-transductive-sage-rbm``)."""
    found = find_config(value)
    if found is not None:
        return found
    raise ConfigError(
        f"no config file {value!r}; give a path to a YAML file or a name listed by "
        "'rbm-tune configs'"
    )


def train(args: argparse.Namespace) -> int:
    """One trial without Ray: teacher, then student; live progress, final metrics."""
    from rbm_tune.config import load_config

    # validate the config before paying for the torch import
    config = load_config(resolve_config_path(args.config), args.overrides or ())
    if args.seed is not None:
        config = config.replace(seed=args.seed)
    _check_cache_dir(args.cache_dir)
    check_device(args.device)

    from rbm_tune.trial import run_trial

    def progress(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    result = run_trial(
        config,
        data_root=args.data_root,
        download=args.download,
        device=args.device,
        log=progress,
        cache_dir=args.cache_dir,
    )
    print(result.format())
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=2))
    return 0


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _freeze_imports() -> None:
    """``gc.freeze()`` once the study's libraries are loaded (only in ``rbm-tune``'s own process:
    :func:`rbm_tune.cli.run`): later full collections skip their ~600k long-lived objects."""
    import gc

    import mlflow  # noqa: F401  (run_study imports them all; loaded here only to freeze them)
    import optuna  # noqa: F401
    import torch  # noqa: F401

    gc.collect()
    gc.freeze()


LOGICAL_GPUS_ENV = "RBM_TUNE_LOGICAL_GPUS"


def check_gpus(gpus: float | None, address: str | None) -> None:
    """``--gpus`` declares a local Ray's GPUs: an error with ``--address`` (a cluster's GPUs are
    its nodes'), and above this machine's CUDA devices (Ray would hand trials GPUs they cannot
    use) unless ``$RBM_TUNE_LOGICAL_GPUS`` is set (logical GPUs on purpose, e.g. a test)."""
    if gpus is None:
        return
    if address:
        raise ConfigError(
            f"--gpus {gpus:g} with --address: a cluster's GPUs are the ones its nodes have; "
            "remove --gpus (resources.gpus_per_trial in the space sets each trial's share)"
        )
    if gpus == 0 or os.environ.get(LOGICAL_GPUS_ENV):
        return
    import torch

    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus > cuda:
        raise ConfigError(
            f"--gpus {gpus:g}: this machine has {cuda} CUDA device(s); give at most {cuda} "
            f"(or leave --gpus out: Ray counts them), or set {LOGICAL_GPUS_ENV}=1 to declare "
            "logical GPUs on purpose"
        )


def _already_finished(space: Any, args: argparse.Namespace) -> bool:
    """``--resume`` of a study that ended: say so in one line, touch nothing (no Ray, no
    MLflow write; :mod:`rbm_tune.study.finished`)."""
    from rbm_tune.study.finished import StudyAlreadyFinished, check_not_finished

    name = args.name or space.study.name
    try:
        check_not_finished(local_study(args.storage_path, name), name, args.storage_path)
    except StudyAlreadyFinished as done:
        print(done)
        return True
    return False


def search(args: argparse.Namespace) -> int:
    """``rbm-tune --space FILE``: validate everything, then run (or resume) the study."""
    from rbm_tune.search_space import load_space

    # fails here, in one line, before Ray is touched
    space = load_space(args.space, args.overrides or ())
    if args.trials is not None and args.trials < 1:
        raise ConfigError(f"--trials {args.trials}: give at least 1")
    if args.gpus is not None and args.gpus < 0:
        raise ConfigError(f"--gpus {args.gpus}: give 0 or more")
    if args.cpus is not None and args.cpus < 1:
        raise ConfigError(f"--cpus {args.cpus}: give at least 1")
    if args.address is None and args.gpus is not None and args.gpus != int(args.gpus):
        raise ConfigError(
            f"--gpus {args.gpus:g}: a local Ray declares whole GPUs; give 0, 1, 2, ... (the "
            "space's resources.gpus_per_trial, e.g. 0.25, packs several trials on one GPU)"
        )
    check_gpus(args.gpus, args.address)
    # Everything else that can be checked without writing: run_study writes the MLflow
    # experiment before it starts Ray and opens the teacher cache.
    check_study_name(args.name)
    check_ray_address(args.address)
    if args.address and args.address.startswith("ray://"):
        from rbm_tune.study.ray_session import refuse_ray_client

        refuse_ray_client(args.address)
    _check_cache_dir(args.cache_dir)
    if args.resume and _already_finished(space, args):  # before MLflow is even opened
        return 0
    check_tracking_uri(args.tracking_uri)
    from rbm_tune.study import run_study

    if args.own_process:
        _freeze_imports()
    result = run_study(
        space,
        gpus=args.gpus,
        cpus=args.cpus,
        num_trials=args.trials,
        name=args.name,
        resume=args.resume,
        data_root=args.data_root,
        download=args.download,
        cache_dir=args.cache_dir,
        tracking_uri=args.tracking_uri,
        address=args.address,
        storage_path=args.storage_path,
        warm_start=args.warm_start,
        verbose=1 if getattr(args, "verbose", False) else 0,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    from rbm_tune.study.report import summary_lines

    for line in summary_lines(result, space.study.metric, _next_args(args)):
        print(line)
    return 0


def _next_args(args: argparse.Namespace) -> dict[str, str]:
    """The options of this study command that its next commands (best, evaluate, export) need
    again to find the same study, as the user gave them."""
    given = {
        "--storage-path": args.storage_path,
        "--tracking-uri": args.tracking_uri,
        "--data-root": args.data_root,
        "--cache-dir": args.cache_dir,
        "--address": args.address,
    }
    return {option: str(value) for option, value in given.items() if value is not None}


def best(args: argparse.Namespace) -> int:
    """``rbm-tune best --name STUDY``: the best config, as YAML ready for ``rbm-tune train``,
    under a comment naming the rule that chose it (rbm_tune.selection)."""
    check_study_name(args.name)
    storage = remote_storage(args.storage_path) or resolve_storage(args.storage_path)
    path = local_study(args.storage_path, args.name) / "best_config.yaml"
    if not path.is_file():
        raise ConfigError(
            f"no finished study {args.name!r} in {storage}; check --name / --storage-path, or "
            "finish it with rbm-tune --space FILE --name NAME --resume"
        )
    from rbm_tune.selection import chosen_by

    # a YAML comment: the output stays a config for rbm-tune train
    print(f"# {chosen_by(path.parent)}")
    print(path.read_text(), end="")
    return 0
