"""The search itself: a Ray Tune ``Tuner`` with OptunaSearch (TPE) and ASHA, fitted once.

:func:`fit_and_summarize` builds (or, with ``resume``, restores) the ``Tuner``: the trainable
(``rbm_tune.study.trainable._trial_fn``) with the slim payload in the object store and its
resources; :class:`~rbm_tune.study.searcher.TrialSearch` drawing each trial from
``SearchSpace.define_by_run``, the space's default point first (warm-started: an earlier study's
trials already in its Optuna study, the earlier best first); ASHA on ``val_acc`` (or the
study's metric) over post-switch epochs; :class:`~rbm_tune.study.mlflow_callback.MlflowTrials`
mirroring every trial into MLflow; :class:`~rbm_tune.study.console.StudyConsole` printing the
study's progress (Ray Tune's own output only with ``verbose`` > 0). After ``fit`` it drains the
MLflow outbox and hands the ``ResultGrid`` to :func:`rbm_tune.study.summary.summarize`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from rbm_tune.errors import RbmTuneError, first_line
from rbm_tune.metrics import POST_SWITCH_EPOCH
from rbm_tune.storage import study_uri
from rbm_tune.study._compat import disable_actor_reuse, replace_restored_callbacks
from rbm_tune.study.console import StudyConsole, quiet_libraries
from rbm_tune.study.mlflow_callback import PENDING_MLFLOW, MlflowTrials
from rbm_tune.study.summary import StudyResult, summarize
from rbm_tune.study.trainable import _trial_fn
from rbm_tune.study.warm_start import write_record

__all__ = ["REMOTE_SYNC_S", "fit_and_summarize"]

REMOTE_SYNC_S = 5  # seconds between uploads of the experiment state to an object store


def fit_and_summarize(
    space: Any,
    graph: Any,
    teacher: Any,
    key: Any,
    tracker: Any,
    trained: bool,
    *,
    name: str,
    trials: int,
    storage: Path,
    resume: bool,
    verbose: int,
    log: Callable[[str], None],
    remote: str | None = None,
    on_cluster: bool = False,
    cache_dir: str | None = None,
    warm: Any = None,
) -> StudyResult:
    import ray

    from rbm_tune.payload import TrialPayload

    study = space.study
    # the compact console (rbm_tune.study.console); its log prints each warning once and never
    # inside a terminal's status line. With verbose > 0 Ray Tune's own output comes too.
    console = StudyConsole(trials, study.metric, study.mode, log=log, live=verbose == 0)
    log = console.log
    with quiet_libraries(verbose == 0):
        gpus_per_trial = study.gpus_per_trial
        if gpus_per_trial > 0 and ray.cluster_resources().get("GPU", 0) == 0:
            if on_cluster:
                # an autoscaling cluster may start with its GPU workers scaled to zero
                log(
                    "rbm-tune: warning: the Ray cluster has no GPU node yet; trials wait until "
                    "the autoscaler adds one (set resources.gpus_per_trial: 0 to run on CPUs)"
                )
            else:
                log(
                    "rbm-tune: warning: the space asks for GPUs but this machine has none; "
                    "using CPUs"
                )
                gpus_per_trial = 0

        # put in the object store once; each trial maps its arrays read-only (payload.py)
        payload = TrialPayload.of(space, graph, teacher)
        trainable = tune.with_resources(
            tune.with_parameters(_trial_fn, space=space, payload=payload, cache_dir=cache_dir),
            {"cpu": study.cpus_per_trial, "gpu": gpus_per_trial},
        )
        mirror = MlflowTrials(
            # a conditional parameter a trial does not draw: its default, unless its model
            # ignores it
            tracker,
            {**space.undrawn_defaults, **space.fixed},
            key.digest,
            storage / name / PENDING_MLFLOW,
            log=log,
        )
        callbacks: list[tune.Callback] = [mirror, console]
        run_config = tune.RunConfig(
            name=name,
            # an object store's URI (rbm_tune.storage): Ray Tune writes the trials there itself
            storage_path=remote or str(storage),
            callbacks=callbacks,
            verbose=verbose,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            # on an object store Ray Tune uploads the driver's experiment state at most every
            # sync_period (default 300 s): a driver killed in between leaves a state minutes
            # old, whose --resume re-runs or adds trials; every REMOTE_SYNC_S instead
            sync_config=tune.SyncConfig(sync_period=REMOTE_SYNC_S) if remote else None,
            failure_config=tune.FailureConfig(max_failures=study.max_failures),
        )
        if resume:
            where = study_uri(remote, name) if remote else str(storage / name)
            tuner = _restored_tuner(where, name, trainable, callbacks, tracker)
        else:
            tuner = _new_tuner(space, trainable, run_config, trials, warm, storage / name)
        grid = tuner.fit()
        mirror.drain(wait_s=float(os.environ.get("RBM_TUNE_MLFLOW_WAIT", "60")))
        return summarize(
            space,
            grid,
            tracker,
            key=key,
            trained=trained,
            name=name,
            storage=storage,
            resume=resume,
            log=log,
        )


def _restored_tuner(where: str, name: str, trainable: Any, callbacks: list, tracker: Any) -> Any:
    """The ``Tuner`` of study ``name`` at ``where`` (a folder or an object store's URI), as Ray
    Tune saved it, with fresh callbacks."""
    try:
        tuner = tune.Tuner.restore(
            where, trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    except Exception as err:  # noqa: BLE001 (whatever Ray's restore raises on bad state)
        tracker.close_orphan(tracker.parent_id, "resume failed: unreadable Ray state")
        raise RbmTuneError(
            f"cannot resume study {name!r}: Ray Tune could not read its state in "
            f"{where} ({first_line(err)}); start it again under a new --name (the teacher "
            "comes from the cache; finished trials stay in MLflow)"
        ) from None
    # a fresh callback: the pickled one holds no run ids
    replace_restored_callbacks(tuner, callbacks)
    # A resumed study does not reuse actors: a reused actor keeps the storage path it was
    # created with, so after a study folder moved its checkpoints went to the old one.
    disable_actor_reuse(tuner)
    return tuner


def _new_tuner(
    space: Any, trainable: Any, run_config: Any, trials: int, warm: Any, folder: Path
) -> Any:
    """A new study's ``Tuner``: TPE (the space's default point first; warm-started, the
    earlier trials already in its Optuna study and the earlier best first) and ASHA."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from rbm_tune.study.searcher import TrialSearch, tpe_sampler

    study = space.study
    if study.objectives:  # TPE handles both single- and multi-objective studies
        metric: Any = [m for m, _ in study.objectives]
        mode: Any = [d for _, d in study.objectives]
    else:
        metric, mode = study.metric, study.mode
    # the first trial is the space's default point (the paper's config in shipped spaces);
    # warm-started, the earlier best comes first
    opening = [space.default_params()]
    if warm is not None and warm.best is not None:
        opening = [warm.best] + [p for p in opening if p != warm.best]
    # OptunaSearch that tells TPE a trial ASHA stopped was pruned, not finished at its rung
    searcher = TrialSearch(
        space=space.define_by_run,
        metric=metric,
        mode=mode,
        sampler=tpe_sampler(space, study.sampler_seed),
        points_to_evaluate=None if warm is not None else opening,
    )
    if warm is not None:
        # the earlier trials first (COMPLETE, before any suggestion), then the first points
        searcher.add_warm_start(warm.trials, opening, warm.record())
        write_record(folder, warm)
    scheduler = (
        ASHAScheduler(
            time_attr=POST_SWITCH_EPOCH,
            metric=study.metric,
            mode=study.mode,
            # +1: reaching the last epoch must not stop a trial before its final report
            max_t=study.asha_max_t + 1,
            grace_period=study.grace_period,
            reduction_factor=study.reduction_factor,
        )
        if study.early_stopping
        else FIFOScheduler()  # every trial runs to its end
    )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=trials,
            max_concurrent_trials=study.max_concurrent,
            # A new trial process costs 2-4 s on a 2-core machine (start, import torch,
            # PyG, unpickle the graph: benchmarks/bench_study.py); a reused one starts the
            # next trial in well under a second. Resumed studies turn this off (above).
            reuse_actors=True,
        ),
        run_config=run_config,
    )
