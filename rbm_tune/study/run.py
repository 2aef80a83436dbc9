"""``run_study``: everything that can fail fast, then Ray, MLflow, the teacher once, the search.

The data flow (STYLE.md §4):

1. the space is validated, ``--warm-start`` studies read and fitted to it, and the tracking store
   checked *before* Ray starts; on this machine,
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
from rbm_tune.study.finished import check_not_finished
from rbm_tune.study.ray_session import (
    check_address,
    init_ray,
    refuse_ray_client,
    wait_for_gpus,
)
from rbm_tune.study.summary import StudyResult
from rbm_tune.study.tuner import fit_and_summarize
from rbm_tune.study.warm_start import check_resume, load_warm_start

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
    warm_start: list[str] | None = None,
) -> StudyResult:
    """Run (or resume) a study over ``space``. See the module docstring for the data flow.

    ``warm_start``: earlier studies (names in the storage path, study folders or their
    ``results.csv``) whose finished trials the searcher gets first (rbm_tune.study.warm_start).
    ``verbose``: 0, the compact console (rbm_tune.study.console); 1 or 2, Ray Tune's own output
    at that level too, and the output of Ray's worker processes.

    Raises:
        RbmTuneError: a bad space, missing data, an unreachable tracking store or Ray cluster,
            a study that already exists (without ``resume``) or does not (with it).
    """
    from rbm_tune.data import load_graph
    from rbm_tune.paths import resolve_storage
    from rbm_tune.storage import open_study, remote_storage, study_uri
    from rbm_tune.teacher_cache import TeacherKey, check_cache_dir
    from rbm_tune.tracking import (
        ARTIFACTS_DIR,
        Tracker,
        check_reachable,
        git_sha,
        resolve_tracking_uri,
    )
    from rbm_tune.tracking.study_run import study_params

    study = space.study
    name = name or study.name
    trials = num_trials or study.num_trials
    storage = resolve_storage(storage_path)  # an object store's: its local mirror
    experiment_dir = storage / name
    remote = remote_storage(storage_path)  # s3://... (rbm_tune.storage), else None
    exists = open_study(remote, name, experiment_dir) if remote else experiment_dir.exists()
    # where Ray Tune keeps the study: the folder, or the URI the trials write to
    ray_dir = study_uri(remote, name) if remote else str(experiment_dir)
    uri = resolve_tracking_uri(tracking_uri)

    if resume:  # a study that ended: nothing to do, nothing written (rbm_tune.study.finished)
        check_not_finished(
            experiment_dir, name, None if storage_path is None else str(storage_path)
        )

    # -- everything that can fail fast, before Ray -------------------------------------------
    if name == ARTIFACTS_DIR:
        raise RbmTuneError(
            f"study name {name!r} is the folder of the studies' MLflow artifacts in {storage}; "
            "pass another --name"
        )
    refuse_ray_client(address)
    check_versions()
    warm = None
    if warm_start and not resume:
        for source in warm_start:  # names of studies in the bucket: into its mirror
            if remote and "/" not in source and not Path(source).expanduser().exists():
                open_study(remote, source, storage / source)
        warm = load_warm_start(warm_start, storage, space, *_objectives(study))
        log(warm.note)
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

    if resume and not Tuner.can_restore(ray_dir):
        raise RbmTuneError(
            f"no study {name!r} to resume in {remote or storage}; run without --resume to start it"
        )
    if resume:
        _check_state_files(experiment_dir, remote)
    if resume and warm_start:
        log(check_resume(experiment_dir, warm_start, storage))
    if not resume and exists:
        raise RbmTuneError(
            f"study {name!r} already exists in {remote or storage}; pass --resume to continue "
            "it or --name to start a new one"
        )
    cache = check_cache_dir(cache_dir)
    if not address:
        _check_fits(space, graph, cpus, log)

    # -- Ray, then MLflow (nothing is written before both are there), then the teacher, once --
    # without --verbose, trial processes' own output stays in their logs: what a trial has to
    # say comes through its results (rbm_tune.study.console)
    init_ray(address, cpus, gpus, verbose=verbose > 0)

    if address and address != "local":  # every node must see what the driver reads back
        from rbm_tune.paths import cache_subdir
        from rbm_tune.study.storage_check import check_storage_visible

        teachers = cache_subdir(cache_dir, "teachers")
        check_storage_visible({"storage path": remote or storage, "teacher cache": teachers})
        # GPUs a trial asks for that the cluster lacks: a bounded wait, not trials pending forever
        wait_for_gpus(study.gpus_per_trial, study.cpus_per_trial, address=address, log=log)

    tracker = Tracker(
        uri,
        name,
        study_tags={
            "rbm_tune.study": name,
            "rbm_tune.space_digest": space.digest,
            "rbm_tune.git_sha": git_sha(),
            "rbm_tune.dataset": base.dataset,
            # the --set KEY=VALUE changes to the space file (also in the digest)
            **({"rbm_tune.set": " ".join(space.overrides)} if space.overrides else {}),
        },
        # a local store's artifacts: in the storage path, not in whatever the cwd is
        artifact_root=storage / ARTIFACTS_DIR,
    )
    tracker.log_params(tracker.parent_id, study_params(space, name=name, trials=trials))
    tracker.log_artifact(tracker.parent_id, Path(space.path))
    if warm is not None:
        tracker.set_tags(tracker.parent_id, warm.tags())

    key = TeacherKey.of(graph, base.teacher, seed=base.seed)
    # read here by the driver, or trained by one Ray task and written back (study/teacher_task)
    from rbm_tune.study.teacher_task import resolve_teacher

    try:
        teacher, trained = resolve_teacher(
            cache,
            key,
            base.teacher,
            graph,
            base.seed,
            cpu_fallback=study.cpu_fallback,
            cpus=study.teacher_cpus,
            log=log,
        )
    except NoCudaError as err:  # before any trial: one line, exit 2
        tracker.close_orphan(tracker.parent_id, "the teacher task found no CUDA")
        raise RbmTuneError(str(err)) from None
    _log_teacher(tracker, key, teacher, trained)
    log(
        f"teacher {key.digest[:12]} ({'trained' if trained else 'from cache'}): test_acc "
        f"{teacher.test_acc:.4f} at best val_acc {teacher.val_acc:.4f}"
    )
    if remote:  # the mirror's study folder: the outbox and the summary are written there
        experiment_dir.mkdir(parents=True, exist_ok=True)
    try:
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
            remote=remote,
            resume=resume,
            verbose=verbose,
            log=log,
            on_cluster=bool(address) and address != "local",
            cache_dir=None if cache_dir is None else str(cache_dir),
            warm=warm,
        )
    finally:  # the summary (or, if the study stopped, its MLflow outbox) up to the bucket
        if remote:
            from rbm_tune.storage import push

            push(experiment_dir, remote, name)


def _objectives(study: Any) -> tuple[list[str], list[str]]:
    """The study's metric(s) and mode(s), as lists."""
    if study.objectives:
        return [m for m, _ in study.objectives], [d for _, d in study.objectives]
    return [study.metric], [study.mode]


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
    students = space.study.seeds_per_trial
    needs = [
        (label, student_estimate(cfg, sizes, device, students).total)
        for label, cfg in space.corners()
    ]
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


def _check_state_files(experiment_dir: Path, remote: str | None = None) -> None:
    """Refuse, before anything is written, to resume from an unreadable experiment state (in
    the study folder, or for an object-store storage path, in ``<remote>/<study>/``)."""
    if remote:
        from rbm_tune.storage import remote_study_files

        states = remote_study_files(remote, experiment_dir.name, "experiment_state*.json")
    else:
        states = [
            (str(p), _read(p)) for p in sorted(experiment_dir.glob("experiment_state*.json"))
        ]
    for path, data in states:
        try:
            if data is None:
                raise OSError("unreadable")
            json.loads(data)
        except (OSError, ValueError) as err:
            raise RbmTuneError(
                f"cannot resume study {experiment_dir.name!r}: its Ray Tune state {path} is "
                f"damaged ({type(err).__name__}); start it again under a new --name (the teacher "
                "comes from the cache; finished trials stay in MLflow and their results in "
                f"{remote or experiment_dir})"
            ) from None


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


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
