"""``run_study``: everything that can fail fast, then Ray, MLflow, the teacher once, the search.

The data flow (STYLE.md §4):

1. the space is validated and the tracking store checked *before* Ray starts; on this machine,
   a space none of whose corners fits a trial's memory share is refused (``rbm_tune.memory``);
2. Ray is joined (``address``) or started locally on 127.0.0.1 (``ray_session``);
3. the teacher is resolved once — loaded from the teacher cache by the driver, or else (a miss,
   or a cache only the cluster can read) loaded or trained as one Ray task — and handed to
   every trial through the object store: only the fields the space can use, as numpy arrays
   each node's trials share (``rbm_tune.payload``);
4. the search runs (``tuner.fit_and_summarize``) and its summary is written (``summary``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rbm_tune.errors import RbmTuneError
from rbm_tune.metrics import TEST_ACC, TEST_ACC_ORACLE, VAL_ACC
from rbm_tune.placement import NoCudaError
from rbm_tune.study._compat import check_versions
from rbm_tune.study.ray_session import check_address, init_ray, refuse_ray_client
from rbm_tune.study.summary import StudyResult
from rbm_tune.study.tuner import fit_and_summarize

__all__ = ["run_study"]


def run_study(
    space: Any,
    *,
    gpus: float | None = None,
    cpus: int | None = None,
    num_trials: int | None = None,
    name: str | None = None,
    resume: bool = False,
    data_root: str | Path | None = None,
    download: bool = False,
    cache_dir: str | Path | None = None,
    tracking_uri: str | None = None,
    address: str | None = None,
    storage_path: str | Path | None = None,
    verbose: int = 0,
    log: Callable[[str], None] = print,
) -> StudyResult:
    """Run (or resume) a study over ``space``. See the module docstring for the data flow.

    ``verbose``: 0, the compact console (rbm_tune.study.console); 1 or 2, Ray Tune's own output
    at that level too, and the output of Ray's worker processes.

    Raises:
        RbmTuneError: a bad space, missing data, an unreachable tracking store or Ray cluster,
            a study that already exists (without ``resume``) or does not (with it).
    """
    from rbm_tune.data import load_graph
    from rbm_tune.paths import resolve_storage
    from rbm_tune.teacher_cache import TeacherKey, check_cache_dir
    from rbm_tune.tracking import Tracker, check_reachable, git_sha, resolve_tracking_uri

    study = space.study
    name = name or study.name
    trials = num_trials or study.num_trials
    storage = resolve_storage(storage_path)
    experiment_dir = storage / name
    uri = resolve_tracking_uri(tracking_uri)

    # -- everything that can fail fast, before Ray -------------------------------------------
    refuse_ray_client(address)
    check_versions()
    check_reachable(uri)
    if address:
        check_address(address)
    base = space.default_config()
    graph = load_graph(
        base.dataset,
        root=data_root,
        setting=base.setting,
        seed=base.seed,
        download=download,
        cache_dir=cache_dir,
    )
    from ray.tune import Tuner

    if resume and not Tuner.can_restore(str(experiment_dir)):
        raise RbmTuneError(
            f"no study {name!r} to resume in {storage}; run without --resume to start it"
        )
    if resume:
        _check_state_files(experiment_dir)
    if not resume and experiment_dir.exists():
        raise RbmTuneError(
            f"study {name!r} already exists in {storage}; pass --resume to continue it or "
            "--name to start a new one"
        )
    cache = check_cache_dir(cache_dir)
    if not address:
        _check_fits(space, graph, cpus, log)

    # -- Ray, then MLflow (nothing is written before both are there), then the teacher, once --
    # without --verbose, trial processes' own output stays in their logs: what a trial has to
    # say comes through its results (rbm_tune.study.console)
    init_ray(address, cpus, gpus, verbose=verbose > 0)
    import ray

    if address and address != "local":  # every node must see what the driver reads back
        from rbm_tune.paths import cache_subdir
        from rbm_tune.study.storage_check import check_storage_visible

        check_storage_visible(
            {"storage path": storage, "teacher cache": cache_subdir(cache_dir, "teachers")}
        )

    tracker = Tracker(
        uri,
        name,
        study_tags={
            "rbm_tune.study": name,
            "rbm_tune.space_digest": space.digest,
            "rbm_tune.git_sha": git_sha(),
            "rbm_tune.dataset": base.dataset,
        },
    )
    tracker.log_artifact(tracker.parent_id, Path(space.path))

    key = TeacherKey.of(graph, base.teacher, seed=base.seed)
    # A cached teacher is read right here (no Ray worker to start: ~3 s of every study); a
    # miss (or a cache only the cluster's nodes can read) goes to one Ray task, which trains
    # it under the key's lock on a GPU if the cluster has one.
    teacher, trained = cache.get(key), False
    if teacher is None:
        log(f"teacher {key.digest[:12]}: not cached here; a Ray task trains it (once) or loads it")
        gpu_for_teacher = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(
            num_cpus=1 if gpu_for_teacher else _teacher_cpus(study), num_gpus=gpu_for_teacher
        )(_resolve_teacher)
        fallback = study.cpu_fallback
        try:
            teacher, trained, warning = ray.get(
                task.remote(cache, key, base.teacher, graph, base.seed, fallback)
            )
        except ray.exceptions.RayTaskError as err:
            if isinstance(err.cause, NoCudaError):  # before any trial: one line, exit 2
                tracker.close_orphan(tracker.parent_id, "the teacher task found no CUDA")
                raise RbmTuneError(str(err.cause)) from None
            raise
        if warning:  # printed here: a task's own output reaches the console only with --verbose
            log(warning)
    _log_teacher(tracker, key, teacher, trained)
    log(
        f"teacher {key.digest[:12]} ({'trained' if trained else 'from cache'}): test_acc "
        f"{teacher.test_acc:.4f} at best val_acc {teacher.val_acc:.4f}"
    )
    return fit_and_summarize(
        space,
        graph,
        teacher,
        key,
        tracker,
        trained,
        name=name,
        trials=trials,
        storage=storage,
        resume=resume,
        verbose=verbose,
        log=log,
        on_cluster=bool(address) and address != "local",
        cache_dir=None if cache_dir is None else str(cache_dir),
    )


def _check_fits(space: Any, graph: Any, cpus: int | None, log: Callable[[str], None]) -> None:
    """On this machine, before Ray starts: refuse a space none of whose corners fits a
    trial's share (rbm_tune.memory), and say so when its default point does not (the study's
    first trial, which would then be skipped)."""
    import torch

    from rbm_tune.memory import GraphSizes, format_bytes, student_estimate, trial_share

    study = space.study
    on_gpu = study.gpus_per_trial > 0 and torch.cuda.is_available()
    device = "cuda" if on_gpu else "cpu"
    if on_gpu:
        card = torch.cuda.get_device_properties(0).total_memory
        share = trial_share(study, device, card_memory=card)
    else:
        share = trial_share(study, device, node_cpus=cpus)
    sizes = GraphSizes.of(graph)
    needs = [(label, student_estimate(cfg, sizes, device).total) for label, cfg in space.corners()]
    smallest = min(needs, key=lambda item: item[1])
    fix = (
        f"see 'rbm-tune plan --space {Path(space.path).name}'; lower the space's settings "
        "(hidden_dim, num_experts, k, batch_size, eval_batch_size) or give each trial more "
        "memory (resources.gpus_per_trial, resources.memory_per_trial, fewer trials at once)"
    )
    if smallest[1] > share:
        raise RbmTuneError(
            f"no trial of this space fits its memory share on this machine: its smallest "
            f"corner ({smallest[0]}) needs about {format_bytes(smallest[1])}, a trial may use "
            f"{format_bytes(share)}; {fix}"
        )
    if needs[0][1] > share:
        log(
            f"rbm-tune: warning: the space's default point needs about "
            f"{format_bytes(needs[0][1])}, more than a trial's {format_bytes(share)}: it and "
            f"draws like it are skipped (PRUNED); {fix}"
        )


def _check_state_files(experiment_dir: Path) -> None:
    """Refuse, before anything is written, to resume from an unreadable experiment state."""
    for path in sorted(experiment_dir.glob("experiment_state*.json")):
        try:
            json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise RbmTuneError(
                f"cannot resume study {experiment_dir.name!r}: its Ray Tune state {path} is "
                f"damaged ({type(err).__name__}); start it again under a new --name (the teacher "
                "comes from the cache; finished trials stay in MLflow and their results in "
                f"{experiment_dir})"
            ) from None


def _teacher_cpus(study: Any) -> float:
    """The CPUs a CPU teacher task asks for: ``study.teacher_cpus``, else all of the largest
    alive node's (nothing else runs before the teacher exists)."""
    import ray

    wanted = study.teacher_cpus
    if wanted:
        return float(wanted)
    sizes = [n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    return float(max(sizes, default=1) or 1)


def _resolve_teacher(
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


def _log_teacher(tracker: Any, key: Any, teacher: Any, trained: bool) -> None:
    tracker.log_teacher(
        key.digest,
        {f"teacher.{k}": v for k, v in key.fields()["teacher"].items()},
        {
            VAL_ACC: teacher.val_acc,
            TEST_ACC: teacher.test_acc,
            TEST_ACC_ORACLE: teacher.test_acc_oracle,
        },
        step=teacher.best_epoch,
        trained=trained,
    )
