"""The search: Ray Tune + OptunaSearch (TPE) + ASHA over a validated ``SearchSpace``.

With ``rbm_tune.searcher``, the only module that imports ``ray.tune``. The data flow
(STYLE.md §4):

1. the space is validated and the tracking store checked *before* Ray starts;
2. Ray is joined (``address``) or started locally on 127.0.0.1;
3. the teacher is resolved once — loaded from the teacher cache by the driver, or else (a miss,
   or a cache only the cluster can read) loaded or trained as one Ray task — and handed to
   every trial through the object store (``tune.with_parameters``): only the fields the
   space can use, as numpy arrays each node's trials share (``rbm_tune.payload``);
4. OptunaSearch (``searcher.TrialSearch``: a trial ASHA stopped ends PRUNED in Optuna, not
   COMPLETE at its rung's value) draws each trial's hyperparameters with
   ``SearchSpace.define_by_run``; the trial function is a thin adapter over
   ``distill.train_student`` whose ``report`` calls ``ray.tune.report`` with validation metrics
   only, at every ASHA rung and otherwise at most every ``study.report_every_s`` (the epochs in
   between ride along to MLflow);
5. ASHA compares ``val_acc`` at its rungs, counting epochs *after* the pretraining switch
   (``post_switch_epoch``), so a student is never judged on its MLP warm-up;
6. a finished trial reports its test accuracy at the best-validation epoch exactly once, with
   its best weights as a checkpoint; the searcher reads only ``val_acc``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune

from rbm_tune.errors import RbmTuneError, TrackingError, first_line

__all__ = ["HeldEpochs", "StudyResult", "rung_epochs", "run_study"]

POST_SWITCH_EPOCH = "post_switch_epoch"
NUM_PARAMS = "num_params"
INFERENCE_MS = "inference_ms_per_1k_nodes"
RAN_ON_CUDA = "ran_on_cuda"
FINAL = "final"
NODE_ID = "node_id"
PENDING_MLFLOW = "mlflow-pending.json"
HELD_EPOCHS = "held_epochs"
# a trial that was not trained: "memory" (its estimate exceeds its share) or "oom" (it ran out
# of memory while training; not retried)
SKIPPED = "skipped"
MEMORY_ESTIMATE = "memory_estimate_bytes"
MEMORY_SHARE = "memory_share_bytes"


class HeldEpochs(tuple):  # type: ignore[type-arg]
    """The per-epoch metrics a trial held back since its previous report (see :func:`_trial_fn`).

    A tuple of metric dicts that prints as ``<n epochs>``, so Ray Tune's result tables,
    progress output and ``progress.csv`` stay readable (``result.json`` keeps them all, as a
    list); a tuple, not a list, because Ray's TensorBoard logger tries to draw a list as a
    histogram and warns.
    """

    def __repr__(self) -> str:
        return f"<{len(self)} epochs>"

    __str__ = __repr__


def rung_epochs(grace_period: int, reduction_factor: float, max_t: int) -> frozenset[int]:
    """Post-switch epochs at which ASHA compares a trial: the first integer epoch at or past
    each of Ray Tune's rungs.

    Ray Tune's ASHA (one bracket) has ``int(log(max_t / grace) / log(rf) + 1)`` rungs at
    ``grace · rf**k`` (floats, computed as here) and records a trial at a rung on its first
    report with ``time_attr`` >= the rung; a trial that reports at exactly these epochs (and
    maybe others) meets every rung at the same epoch as one that reports every epoch, so ASHA
    decides the same. (A rung like 50 · 1.1 = 55.000000000000007 is first met at epoch 56.)
    """
    import numpy as np  # Ray's own arithmetic (np.log), so that the rung count is the same

    count = int(np.log(max_t / grace_period) / np.log(reduction_factor) + 1)
    return frozenset(math.ceil(grace_period * reduction_factor**k) for k in range(count))


@dataclass(frozen=True)
class StudyResult:
    """Where a finished study's results are and what was best."""

    name: str
    storage_path: Path
    experiment_url: str
    best_config: dict[str, Any]
    best_val_acc: float
    best_test_acc: float | None
    table: list[dict[str, Any]]
    teacher_digest: str
    teacher_trained: bool
    failed: tuple[str, ...] = ()  # trials that errored with no retries left
    skipped: tuple[str, ...] = ()  # trials not trained for memory, or that ran out of it


def _drop_exit_in_callbacks(unraisable: Any) -> None:
    """``sys.unraisablehook`` of a trial process.

    When the driver ends a trial's actor, Ray's SIGTERM handler raises SystemExit in whatever
    Python code the process runs at that moment; inside a weakref callback or a ``__del__``
    Python cannot raise it, so it prints "Exception ignored in ... SystemExit: 1" with a
    traceback, which Ray forwards to the driver's console after a study that went well. Those
    are dropped; anything else goes to Python's default hook.
    """
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, SystemExit):
        return
    sys.__unraisablehook__(unraisable)


def _trial_device(requested_gpus: float) -> Any:
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda")
    if requested_gpus > 0:
        warnings.warn(
            "rbm-tune: a trial was given a GPU but CUDA is not available here; running on CPU",
            stacklevel=2,
        )
    return torch.device("cpu")


def _inference_ms(model: Any, x: Any) -> float:
    """Wall-clock milliseconds per 1,000 nodes of one eval-mode forward (synchronised).

    Timed on at most 16,384 nodes: all of an arxiv-size graph in one forward took 8.9 GiB
    (benchmarks/bench_memory.py), more than the trial's training.
    """
    import time

    import torch

    x = x[:16384]
    model.eval()
    with torch.no_grad():
        model(x[: min(len(x), 4096)])  # warm-up
        if x.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(x)
        if x.is_cuda:
            torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1000 / max(len(x), 1) * 1000


def _trial_fn(config: dict[str, Any], *, space: Any, payload: Any) -> None:
    """One trial: sampled constants -> TrialConfig -> train_student, reporting to Ray Tune.

    ``payload``: a ``rbm_tune.payload.TrialPayload``, read-only arrays shared by the node's
    trials; ``graph`` and ``teacher`` hold only the fields the space can use.
    """
    import torch

    from rbm_tune import faults
    from rbm_tune import metrics as M
    from rbm_tune.distill import train_student
    from rbm_tune.trial import seed_everything, student_features

    graph, teacher = payload.graph(), payload.teacher()
    sys.unraisablehook = _drop_exit_in_callbacks
    # Ray Train logs every checkpoint it persists at INFO from this worker; streamed to the
    # driver, such a line can land after the study's summary (the checkpoint is in the results)
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as ckpt:
            done = Path(ckpt) / "final.json"
            if done.is_file():
                # The trial had finished when the driver died, before Tune recorded it: hand
                # back its result instead of training it a second time.
                tune.report(json.loads(done.read_text()), checkpoint=restored)
                return
    cfg = space.config_for(config)
    seed_everything(cfg.seed)
    device = _trial_device(space.study.gpus_per_trial)
    pretrain = cfg.distill.pretrain_epochs if cfg.student.model != "mlp" else 0

    node = _node_id()
    need, share = _memory_need_and_share(cfg, graph, device, space.study)
    if need > share:  # never started: PRUNED in Optuna, tagged in MLflow, no retry
        tune.report(_skipped("memory", space.study, need, share, node))
        return
    features = student_features(cfg, graph)
    # a multi-objective study's cost objectives, in every report (an ASHA-stopped trial too)
    costs = _costs(cfg, graph, features, device) if space.study.objectives else {}

    # Every report blocks the trial until the driver has taken it (Ray Tune's function API;
    # benchmarks/bench_study.py: ~35 ms per report on cora, 2 CPUs), more than an epoch of a
    # small graph on a GPU. So a trial reports at every ASHA rung (same decisions
    # as reporting every epoch) and otherwise at most every study.report_every_s seconds; the
    # epochs in between ride along (HELD_EPOCHS) and MlflowTrials logs each at its own step.
    study = space.study
    rungs = rung_epochs(study.grace_period, study.reduction_factor, study.asha_max_t + 1)
    every = float(study.report_every_s)
    held: list[dict[str, float]] = []
    last = time.monotonic()

    def send(m: dict[str, float]) -> None:
        nonlocal last
        rows = HeldEpochs(held[:-1])
        held.clear()
        last = time.monotonic()
        post = m[M.EPOCH] - pretrain
        tune.report({**m, POST_SWITCH_EPOCH: post, NODE_ID: node, **costs, HELD_EPOCHS: rows})

    def report(m: dict[str, float]) -> None:
        faults.fire("trial_epoch", int(m[M.EPOCH]))
        held.append({**m, **costs})
        # every <= 0: always due
        if time.monotonic() - last >= every or int(m[M.EPOCH]) - pretrain in rungs:
            send(m)

    try:
        result = train_student(
            cfg, graph, teacher, report=report, features=features, device=device, keep_model=True
        )
    except Exception as err:
        if not is_out_of_memory(err):
            raise
        # out of memory: recorded as such, not retried (a retry would run out again)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if held:
            send(held[-1])
        tune.report(_skipped("oom", space.study, need, share, node))
        return
    if held:  # the epochs since the last report: before the final result, in order
        send(held[-1])
    model = result.model
    assert model is not None
    x = features.to(device)
    inference = _inference_ms(model.to(device), x)
    # The search metric may be any per-epoch metric (SEARCH_METRICS); Ray Tune requires it in
    # every result, the searcher takes a finished trial's value from this one: the returned
    # model's, i.e. the best-validation epoch's (its best_val_acc is its val_acc).
    at_best = next(
        (row for row in result.history if row[M.EPOCH] == result.best_epoch),
        result.history[-1] if result.history else {},
    )
    final = {
        **{k: at_best[k] for k in (M.TRAIN_LOSS, M.TRAIN_ACC) if k in at_best},
        M.BEST_VAL_ACC: result.val_acc,
        M.EPOCH: result.epochs,
        POST_SWITCH_EPOCH: result.epochs - pretrain,
        M.VAL_ACC: result.val_acc,
        M.TEST_ACC: result.test_acc,
        M.TEST_ACC_ORACLE: result.test_acc_oracle,
        M.BEST_EPOCH: result.best_epoch,
        NUM_PARAMS: sum(p.numel() for p in model.parameters()),
        INFERENCE_MS: inference,
        RAN_ON_CUDA: int(device.type == "cuda"),
        **costs,  # the objectives keep the values the searcher saw in every report
        HELD_EPOCHS: HeldEpochs(),
        FINAL: 1,
        # which Ray node trained it (several nodes of one cluster may share an IP and host name)
        NODE_ID: node,
    }
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(model.cpu().state_dict(), Path(tmp) / "student.pt")
        shapes = {  # what rbm-tune export needs to rebuild the student (rbm_tune/export.py)
            "in_dim": int(x.shape[1]),
            "num_features": graph.num_features,
            "num_classes": graph.num_classes,
            "num_nodes": graph.num_nodes,
        }
        (Path(tmp) / "student.json").write_text(json.dumps(shapes))
        (Path(tmp) / "final.json").write_text(json.dumps(final))
        tune.report(final, checkpoint=tune.Checkpoint.from_directory(tmp))


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an allocation failure: CUDA's ``OutOfMemoryError``, or the CPU
    allocator's ``RuntimeError`` ("DefaultCPUAllocator: can't allocate memory")."""
    import torch

    if isinstance(err, torch.OutOfMemoryError | MemoryError):
        return True
    return isinstance(err, RuntimeError) and "can't allocate memory" in str(err)


def _memory_need_and_share(cfg: Any, graph: Any, device: Any, study: Any) -> tuple[int, int]:
    """This trial's estimated peak (rbm_tune.memory) and the memory it may use.

    On a GPU the share is ``gpus_per_trial`` x the card, and the process caps its CUDA
    allocator there (``set_per_process_memory_fraction``), so a trial that overruns its
    estimate fails alone instead of taking a neighbour on the same card down with it. On a CPU
    it is ``study.memory_per_trial``, else the node's memory / the trials that fit its CPUs.
    """
    import torch

    from rbm_tune.memory import GraphSizes, estimate, trial_share

    need = estimate(cfg, GraphSizes.of(graph), device.type)
    if device.type == "cuda":
        fraction = min(study.gpus_per_trial or 1.0, 1.0)
        torch.cuda.set_per_process_memory_fraction(fraction, device)
        card = torch.cuda.get_device_properties(device).total_memory
        return need, trial_share(study, "cuda", card_memory=card)
    return need, trial_share(study, "cpu", node_cpus=_node_cpus())


def _node_cpus() -> float | None:
    """The CPUs Ray counts on this trial's node (None outside Ray)."""
    import ray

    try:
        node = ray.get_runtime_context().get_node_id()
        for info in ray.nodes():
            if info.get("NodeID") == node:
                return float(info.get("Resources", {}).get("CPU", 0)) or None
    except Exception:  # noqa: BLE001 (outside Ray, or the GCS does not answer: os.cpu_count)
        return None
    return None


def _skipped(kind: str, study: Any, need: int, share: int, node: str) -> dict[str, Any]:
    """The one result of a trial that was not trained (or ran out of memory): epoch 0, so
    neither ASHA nor TPE reads a value from it; its metrics are NaN (Ray Tune requires them)."""
    from rbm_tune import metrics as M

    names = [m for m, _ in study.objectives] if study.objectives else [study.metric]
    return {
        **{name: math.nan for name in names},
        M.VAL_ACC: math.nan,
        M.EPOCH: 0,
        POST_SWITCH_EPOCH: 0,
        SKIPPED: kind,
        MEMORY_ESTIMATE: need,
        MEMORY_SHARE: share,
        HELD_EPOCHS: HeldEpochs(),
        NODE_ID: node,
    }


def _costs(cfg: Any, graph: Any, features: Any, device: Any) -> dict[str, float]:
    """Parameter count and inference time of the trial's architecture, before it trains.

    Measured on a fresh student switched out of pretraining (routing with random memory):
    the same shapes and FLOPs as the trained one, so every report of the trial, including an
    ASHA-stopped one's last, carries the cost objectives.
    """
    from rbm_tune.models import build_student
    from rbm_tune.models.base import PhasedLayer

    model = build_student(
        cfg.student,
        features.shape[1],
        graph.num_classes,
        feature_encoder=cfg.distill.similarity_distill,
    )
    for module in model.modules():
        if isinstance(module, PhasedLayer):
            module.set_extra_state(False)
    return {
        NUM_PARAMS: float(sum(p.numel() for p in model.parameters())),
        INFERENCE_MS: _inference_ms(model.to(device), features.to(device)),
    }


def _node_id() -> str:
    import ray

    try:
        return str(ray.get_runtime_context().get_node_id())
    except Exception:  # noqa: BLE001 (outside Ray: no node)
        return ""


def _check_address(address: str, timeout: float = 5.0) -> None:
    """Fail in one line when a ``host:port`` Ray address does not accept connections.

    ``ray.init`` itself retries an unreachable address for minutes.
    """
    import socket

    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except (OSError, ValueError) as err:
        reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
        raise RbmTuneError(
            f"cannot reach the Ray cluster at {address} ({reason}); start it "
            "(ray start --head --dashboard-host 127.0.0.1) "
            "or fix --address (host:port of the head's GCS, ray://host:10001, or auto)"
        ) from None


def _loopback_only() -> None:
    """Make a local Ray use 127.0.0.1 instead of the machine's public address (STACK.md).

    Ray reads ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` once, when ``ray`` is imported, and this
    module imports it: setting the variable here only reaches the processes Ray starts, so the
    driver's own copy of the flag is set too. A user who exported the variable keeps it.
    """
    from ray._private import ray_constants

    value = os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray_constants.ENABLE_RAY_CLUSTER = value.strip().lower() in ("1", "true", "yes")


def _init_ray(address: str | None, cpus: int | None, gpus: float | None) -> None:
    import ray

    if ray.is_initialized():
        return
    try:
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            _loopback_only()
            ray.init(num_cpus=cpus, num_gpus=gpus, include_dashboard=False)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as err:
        first = first_line(err)
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise RbmTuneError(
            f"cannot start or join {where} ({first}); check --address (e.g. ray://head:10001 or "
            "auto) and that 'ray status' works there"
        ) from None


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
    verbose: int = 1,
    log: Callable[[str], None] = print,
) -> StudyResult:
    """Run (or resume) a study over ``space``. See the module docstring for the data flow.

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
    check_reachable(uri)
    if address:
        _check_address(address)
    base = space.default_config()
    graph = load_graph(
        base.dataset, root=data_root, setting=base.setting, seed=base.seed, download=download
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
    _init_ray(address, cpus, gpus)
    import ray

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
        gpu_for_teacher = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(num_cpus=1, num_gpus=gpu_for_teacher)(_resolve_teacher)
        teacher, trained = ray.get(task.remote(cache, key, base.teacher, graph, base.seed))
    _log_teacher(tracker, key, teacher, trained)
    log(
        f"teacher {key.digest[:12]} ({'trained' if trained else 'from cache'}): test_acc "
        f"{teacher.test_acc:.4f} at best val_acc {teacher.val_acc:.4f}"
    )
    return _tune(
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


def _resolve_teacher(cache: Any, key: Any, spec: Any, graph: Any, seed: int) -> tuple[Any, bool]:
    """Runs as one Ray task: the cached teacher, or train it (exactly once, under its lock)."""
    from rbm_tune.teacher import train_teacher
    from rbm_tune.trial import resolve_device

    trained: list[bool] = []

    def train() -> Any:
        trained.append(True)
        return train_teacher(spec, graph, seed=seed, device=resolve_device("auto"))

    return cache.get_or_train(key, train), bool(trained)


def _log_teacher(tracker: Any, key: Any, teacher: Any, trained: bool) -> None:
    tracker.log_teacher(
        key.digest,
        {f"teacher.{k}": v for k, v in key.fields()["teacher"].items()},
        {
            "val_acc": teacher.val_acc,
            "test_acc": teacher.test_acc,
            "test_acc_max_over_epochs_oracle": teacher.test_acc_oracle,
        },
        step=teacher.best_epoch,
        trained=trained,
    )


_LOGGED = (
    "train_loss",
    "train_acc",
    "val_acc",
    "best_val_acc",
    "is_pretraining",
    "epoch_seconds",
    NUM_PARAMS,  # per epoch only in a multi-objective study (its cost objectives)
    INFERENCE_MS,
)
_FINAL_LOGGED = (
    "val_acc",
    "test_acc",
    "test_acc_max_over_epochs_oracle",
    "best_epoch",
    NUM_PARAMS,
    INFERENCE_MS,
    RAN_ON_CUDA,
)


def _logged(metrics: dict[str, Any]) -> dict[str, Any]:
    """The per-epoch metrics MLflow gets from one epoch's report."""
    return {k: metrics[k] for k in _LOGGED if k in metrics}


def _skip_tags(result: dict[str, Any]) -> dict[str, str]:
    """MLflow tags of a trial that was not trained, or ran out of memory."""
    from rbm_tune.memory import format_bytes

    kind = str(result[SKIPPED])
    need, share = result.get(MEMORY_ESTIMATE, 0), result.get(MEMORY_SHARE, 0)
    why = {
        "memory": "its estimated memory exceeds its share; not trained",
        "oom": "it ran out of memory while training; not retried",
    }.get(kind, kind)
    return {
        "rbm_tune.skipped": kind,
        "rbm_tune.skipped_because": why,
        "rbm_tune.memory_estimate": format_bytes(need),
        "rbm_tune.memory_share": format_bytes(share),
    }


class MlflowTrials(tune.Callback):
    """Driver-side Ray Tune callback mirroring every trial into a nested MLflow run.

    Every write is an operation in an outbox, written in order. When MLflow does not answer
    (server restarting, network), the operations wait and are retried at most every
    ``retry_s`` seconds while the trials keep training; the outbox is also kept in
    ``pending_path``, so a driver that dies during an outage, or a study that ends before
    MLflow is back, loses nothing: ``--resume`` writes what is left (see :meth:`drain`).

    A trial attempt that fails and is retried (``study.max_failures``) ends as a FAILED run;
    the retry gets a run of its own. Picklable (Ray saves callbacks with the Tuner): it keeps
    only the tracker's settings and opens the MLflow client lazily.
    """

    def __init__(
        self,
        tracker: Any,
        fixed: dict[str, Any],
        teacher_digest: str,
        pending_path: Path,
        *,
        log: Callable[[str], None] = print,
        retry_s: float = 10.0,
    ) -> None:
        self.tracker_args = (tracker.uri, tracker.experiment_name, tracker.study_tags)
        self._tracker = tracker
        self.fixed = dict(fixed)
        self.teacher_digest = teacher_digest
        self.pending_path = Path(pending_path)
        self.log = log
        self.retry_s = retry_s
        self.runs: dict[str, str] = {}
        self.started: set[str] = set()
        self.finished: set[str] = set()
        self.start_ms: dict[str, int] = {}
        self.pending: list[list[Any]] = []
        if self.pending_path.is_file():  # left by an outage or a crash: written first
            self.pending = json.loads(self.pending_path.read_text())
        self.down_since: float | None = None
        self.next_try = 0.0
        self.results = 0
        self.completed = 0
        self.skipped: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "_tracker": None,
            "log": print,
            "runs": {},
            "started": set(),
            "finished": set(),
            "start_ms": {},
            "pending": [],
            "skipped": set(),
        }

    @property
    def tracker(self) -> Any:
        if self._tracker is None:
            from rbm_tune.tracking import Tracker

            uri, experiment, tags = self.tracker_args
            self._tracker = Tracker(uri, experiment, study_tags=tags)
        return self._tracker

    # -- the outbox ----------------------------------------------------------------------
    def _send(self, *op: Any) -> None:
        self.pending.append(list(op))
        self.flush()

    def flush(self, *, force: bool = False) -> bool:
        """Write pending operations in order; False when MLflow still does not answer."""
        import time

        if not self.pending:
            return True
        if not force and self.down_since is not None and time.monotonic() < self.next_try:
            return False
        written = 0
        while self.pending:
            try:
                self._apply(self.pending[0])
            except Exception as err:  # noqa: BLE001 (any client/server failure: keep, retry)
                if self.down_since is None:
                    self.down_since = time.monotonic()
                    first = first_line(err, 160)
                    self.log(
                        f"rbm-tune: warning: MLflow at {self.tracker_args[0]} does not answer "
                        f"({first}); trials go on, their runs are written when it is back"
                    )
                self.next_try = time.monotonic() + self.retry_s
                self._save_pending()
                return False
            self.pending.pop(0)
            written += 1
        if self.down_since is not None:
            self.log(f"rbm-tune: MLflow answers again; wrote {written} buffered update(s)")
            self.down_since = None
        self._save_pending()
        return True

    def _save_pending(self) -> None:
        if self.pending:
            self.pending_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.pending_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.pending))
            os.replace(tmp, self.pending_path)
        elif self.pending_path.exists():
            self.pending_path.unlink()

    def _run_id(self, trial_id: str) -> str:
        if trial_id not in self.runs:  # an outbox left by an earlier driver: adopt its run
            self.runs[trial_id] = self.tracker.start_trial(trial_id, {}, {}, replace_partial=False)
        return self.runs[trial_id]

    def _apply(self, op: list[Any]) -> None:
        kind, trial_id, *args = op
        if kind == "start":
            params, tags, adopt, start_ms = args
            self.runs[trial_id] = self.tracker.start_trial(
                trial_id, params, tags, replace_partial=not adopt, start_time=start_ms
            )
        elif kind == "metrics":  # one step: outboxes written before "rows" existed
            metrics, step = args
            self.tracker.log_metrics(self._run_id(trial_id), metrics, step=step)
        elif kind == "rows":  # [[metrics, step], ...]: one request per 1,000 values
            self.tracker.log_metric_rows(self._run_id(trial_id), args[0])
        elif kind == "tags":
            self.tracker.set_tags(self._run_id(trial_id), args[0])
        elif kind == "end":
            self.tracker.end(self._run_id(trial_id), args[0])
            self.runs.pop(trial_id, None)  # a retried attempt gets a run of its own

    def drain(self, wait_s: float) -> None:
        """At the end of a study: retry the outbox for up to ``wait_s`` seconds.

        Raises:
            TrackingError: MLflow is still down; the outbox stays in ``pending_path``.
        """
        deadline = time.monotonic() + wait_s
        while not self.flush(force=True):
            if time.monotonic() >= deadline:
                raise TrackingError(
                    f"MLflow at {self.tracker_args[0]} stopped answering during the study; "
                    f"every trial finished and its results are safe in {self.pending_path.parent}"
                    f", and {len(self.pending)} MLflow update(s) wait in "
                    f"{self.pending_path.name}; rerun the same command with --resume once "
                    "MLflow answers, to write them"
                )
            time.sleep(min(self.retry_s, 5.0))

    # -- Ray Tune's hooks ----------------------------------------------------------------
    def _ensure_started(self, trial: Any, *, adopt: bool = False, failed: bool = False) -> None:
        """Open the trial's run; ``adopt``: keep the run an earlier driver left unfinished.

        ``failed``: opened by the failure of an attempt that never reported (trials hold
        epochs back between reports); Ray Tune has already counted that failure in
        ``num_failures``, so the attempt is ``num_failures``, not ``num_failures + 1``.
        """
        tid = trial.trial_id
        if tid in self.started:
            return
        self.started.add(tid)
        failures = getattr(trial, "num_failures", 0)
        tags = {
            "rbm_tune.teacher_key": self.teacher_digest,
            "rbm_tune.trial_name": str(trial),
            "rbm_tune.attempt": str(failures if failed else failures + 1),
        }
        start_ms = self.start_ms.pop(tid, None)
        self._send("start", tid, {**self.fixed, **trial.config}, tags, adopt, start_ms)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # the run opens at the first result (a trial restored finished adopts its old run),
        # but starts when the trial did
        import time

        self.start_ms[trial.trial_id] = int(time.time() * 1000)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        from rbm_tune import faults

        # a trial whose first result here is its final one finished under a driver that died
        # before recording it (_trial_fn hands back the stored result): its run is complete
        self._ensure_started(trial, adopt=bool(result.get(FINAL)))
        tid, step = trial.trial_id, int(result["epoch"])
        # the epochs the trial held back, then this result's own: one MLflow request
        rows = [[_logged(row), int(row["epoch"])] for row in result.get(HELD_EPOCHS) or ()]
        if result.get(SKIPPED):  # not trained (memory), or ran out of memory: tags, no value
            self.__dict__.setdefault("skipped", set()).add(tid)
            if rows:
                self._send("rows", tid, rows)
            self._send("tags", tid, _skip_tags(result))
            self.results += 1
            return
        if result.get(FINAL):
            final = {f"final_{k}" if k == "val_acc" else k: result[k] for k in _FINAL_LOGGED}
            rows.append([final, step])
            self.finished.add(tid)
        else:
            rows.append([_logged(result), step])
        self._send("rows", tid, rows)
        self.results += 1
        faults.fire("driver_result", self.results)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        from rbm_tune import faults

        self._ensure_started(trial)
        tid = trial.trial_id
        skipped = tid in self.__dict__.get("skipped", ())
        stopped = tid not in self.finished and not skipped
        tags = {"rbm_tune.asha_stopped": str(stopped).lower()}
        node = (getattr(trial, "last_result", None) or {}).get(NODE_ID)
        if node:
            tags["rbm_tune.node_id"] = str(node)
        self._send("tags", tid, tags)
        self._send("end", tid, "FINISHED")
        self.completed += 1
        faults.fire("driver_complete", self.completed)

    def _failed(self, trial: Any, why: str) -> None:
        self._ensure_started(trial, failed=True)
        error = getattr(trial, "error_file", None) or ""
        self._send(
            "tags", trial.trial_id, {"rbm_tune.ended_by": why, "rbm_tune.error_file": error}
        )
        self._send("end", trial.trial_id, "FAILED")
        self.started.discard(trial.trial_id)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._failed(trial, "the attempt failed; Ray Tune retries the trial")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._failed(trial, "the trial failed and has no retries left (study.max_failures)")


def _tune(
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
    on_cluster: bool = False,
) -> StudyResult:
    import optuna
    import ray
    import yaml
    from ray.tune.schedulers import ASHAScheduler

    from rbm_tune import faults
    from rbm_tune.metrics import TEST_ACC, VAL_ACC
    from rbm_tune.searcher import TrialSearch

    study = space.study
    gpus_per_trial = study.gpus_per_trial
    if gpus_per_trial > 0 and ray.cluster_resources().get("GPU", 0) == 0:
        if on_cluster:
            # an autoscaling cluster may start with its GPU workers scaled to zero: keep asking
            log(
                "rbm-tune: warning: the Ray cluster has no GPU node yet; trials wait until the "
                "autoscaler adds one (set resources.gpus_per_trial: 0 to run on CPUs)"
            )
        else:
            log("rbm-tune: warning: the space asks for GPUs but this machine has none; using CPUs")
            gpus_per_trial = 0
    from rbm_tune.payload import TrialPayload

    # put in the object store once; each trial maps its arrays read-only (rbm_tune/payload.py)
    payload = TrialPayload.of(space, graph, teacher)
    trainable = tune.with_resources(
        tune.with_parameters(_trial_fn, space=space, payload=payload),
        {"cpu": study.cpus_per_trial, "gpu": gpus_per_trial},
    )
    mirror = MlflowTrials(
        tracker, space.fixed, key.digest, storage / name / PENDING_MLFLOW, log=log
    )
    callbacks = [mirror]
    run_config = tune.RunConfig(
        name=name,
        storage_path=str(storage),
        callbacks=callbacks,
        verbose=verbose,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        failure_config=tune.FailureConfig(max_failures=study.max_failures),
    )
    if resume:
        try:
            tuner = tune.Tuner.restore(
                str(storage / name),
                trainable=trainable,
                resume_unfinished=True,
                resume_errored=True,
            )
        except Exception as err:  # noqa: BLE001 (whatever Ray's restore raises on bad state)
            tracker.close_orphan(tracker.parent_id, "resume failed: unreadable Ray state")
            first = first_line(err)
            raise RbmTuneError(
                f"cannot resume study {name!r}: Ray Tune could not read its state in "
                f"{storage / name} ({first}); start it again under a new --name (the teacher "
                "comes from the cache; finished trials stay in MLflow)"
            ) from None
        # a fresh callback: the pickled one holds no run ids
        tuner._local_tuner.get_run_config().callbacks = callbacks  # noqa: SLF001
        # A resumed study does not reuse actors: a reused actor keeps the storage path it was
        # created with, so after a study folder moved its checkpoints went to the old one.
        tuner._local_tuner._tune_config.reuse_actors = False  # noqa: SLF001
    else:
        if study.objectives:  # TPE handles both single- and multi-objective studies
            metric: Any = [m for m, _ in study.objectives]
            mode: Any = [d for _, d in study.objectives]
        else:
            metric, mode = study.metric, study.mode
        # OptunaSearch that tells TPE a trial ASHA stopped was pruned, not finished at its rung
        searcher = TrialSearch(
            space=space.define_by_run,
            metric=metric,
            mode=mode,
            sampler=optuna.samplers.TPESampler(seed=study.sampler_seed),
            # the first trial is the space's default point (the paper's config in shipped spaces)
            points_to_evaluate=[space.default_params()],
        )
        scheduler = ASHAScheduler(
            time_attr=POST_SWITCH_EPOCH,
            metric=study.metric,
            mode=study.mode,
            # +1: reaching the last epoch must not stop a trial before its final report
            max_t=study.asha_max_t + 1,
            grace_period=study.grace_period,
            reduction_factor=study.reduction_factor,
        )
        tuner = tune.Tuner(
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
    grid = tuner.fit()
    mirror.drain(wait_s=float(os.environ.get("RBM_TUNE_MLFLOW_WAIT", "60")))

    rows = []
    for result in grid:
        m = result.metrics or {}
        rows.append(
            {
                "trial_id": _trial_id(result),
                VAL_ACC: m.get(VAL_ACC),
                TEST_ACC: m.get(TEST_ACC),
                "epochs": m.get("epoch"),
                "asha_stopped": not m.get(FINAL, False),
                NODE_ID: m.get(NODE_ID) or "",
                "config": result.config or {},
                "checkpoint": result.checkpoint,
                "error": str(result.error).splitlines()[0] if result.error else None,
                "metrics": {k: v for k, v in m.items() if isinstance(v, (int, float))},
                SKIPPED: m.get(SKIPPED),
            }
        )
    skipped = [r for r in rows if r[SKIPPED]]
    for line in _skipped_lines(skipped):
        log(line)
    # the summary's MLflow writes (closing lost runs, artifacts, the parent run's end): MLflow
    # failing here is the same outage as during the study, with the same way out
    with _summary_outage(tracker.uri, storage / name):
        _close_lost_trial_runs({r["trial_id"] for r in rows}, tracker, log, resumed=resume)
        # an errored trial (no retries left) never counts, whatever it reported before failing
        done = [r for r in rows if r[VAL_ACC] is not None and not r["error"] and not r[SKIPPED]]
        if not done and skipped:
            raise RbmTuneError(
                f"every trial of study {name!r} that reported was skipped for memory; see "
                f"'rbm-tune plan --space {Path(space.path).name}' and lower the space's largest "
                "settings (hidden_dim, num_experts, batch_size) or give each trial more "
                "(resources.gpus_per_trial, resources.memory_per_trial)"
            )
        if not done:
            raise RbmTuneError(
                f"no trial of study {name!r} reported a result; see the Ray logs in "
                f"{storage / name}"
            )
        # by the study's metric (val_acc unless the space chose another per-epoch metric)
        done.sort(
            key=lambda r: r["metrics"].get(study.metric, r[VAL_ACC]), reverse=study.mode == "max"
        )
        finished = [r for r in done if not r["asha_stopped"]] or done
        best = finished[0]
        best_config = space.config_for(best["config"]).to_dict()
        out_dir = storage / name
        best_yaml = out_dir / "best_config.yaml"
        best_yaml.write_text(yaml.safe_dump(best_config, sort_keys=False))
        faults.fire("driver_summary", 1)
        tracker.log_artifact(tracker.parent_id, best_yaml)
        table = out_dir / "results.csv"
        table.write_text(
            "trial_id,val_acc,test_acc,epochs,asha_stopped,node_id\n"
            + "".join(
                f"{r['trial_id']},{r[VAL_ACC]},{r[TEST_ACC]},{r['epochs']},{r['asha_stopped']},"
                f"{r[NODE_ID]}\n"
                for r in done
            )
        )
        tracker.log_artifact(tracker.parent_id, table)
        _write_trials(space, done, out_dir / "trials.json")
        tracker.log_artifact(tracker.parent_id, out_dir / "trials.json")
        for path in _plots(space, done, study, out_dir / "plots", log):
            tracker.log_artifact(tracker.parent_id, path, "plots")
        pareto = _pareto(done, study, out_dir / "pareto.md") if study.objectives else []
        if pareto:
            tracker.log_artifact(tracker.parent_id, out_dir / "pareto.md")
        if best["checkpoint"] is not None:
            with best["checkpoint"].as_directory() as ckpt:
                tracker.log_artifact(tracker.parent_id, Path(ckpt) / "student.pt")
        tracker.log_metrics(tracker.parent_id, {"best_val_acc": best[VAL_ACC]}, step=0)
        tracker.end(tracker.parent_id)
    return StudyResult(
        name=name,
        storage_path=out_dir,
        experiment_url=tracker.experiment_url,
        best_config=best_config,
        best_val_acc=float(best[VAL_ACC]),
        best_test_acc=None if best[TEST_ACC] is None else float(best[TEST_ACC]),
        table=[{k: v for k, v in r.items() if k not in ("checkpoint", "metrics")} for r in done],
        teacher_digest=key.digest,
        teacher_trained=trained,
        failed=tuple(str(r["trial_id"]) for r in rows if r["error"]),
        skipped=tuple(str(r["trial_id"]) for r in skipped),
    )


def _skipped_lines(skipped: list[dict[str, Any]]) -> list[str]:
    """One summary line per kind of skipped trial: how many, the largest need, their ids."""
    from rbm_tune.memory import format_bytes

    lines = []
    for kind, what in (
        ("memory", "not trained: estimated memory above the trial's share"),
        ("oom", "ran out of memory while training (not retried)"),
    ):
        these = [r for r in skipped if r[SKIPPED] == kind]
        if not these:
            continue
        worst = max(these, key=lambda r: r["metrics"].get(MEMORY_ESTIMATE, 0))
        need = worst["metrics"].get(MEMORY_ESTIMATE, 0)
        share = worst["metrics"].get(MEMORY_SHARE, 0)
        ids = ", ".join(str(r["trial_id"]) for r in these)
        lines.append(
            f"rbm-tune: {len(these)} trial(s) {what} (largest estimate {format_bytes(need)}, "
            f"share {format_bytes(share)}; MLflow tag rbm_tune.skipped={kind}): {ids}"
        )
    return lines


@contextmanager
def _summary_outage(uri: str, folder: Path) -> Iterator[None]:
    """Turn an MLflow client failure inside the block into a ``TrackingError`` naming the fix.

    After the outbox is drained, the study's summary is written to MLflow directly; a server
    that stops answering then (or refuses a write) would otherwise end the study in a traceback
    from deep inside MLflow's client. Every trial finished and its results are on disk, and
    ``--resume`` writes the summary again (Ray Tune restores the finished study, the driver
    redoes the summary). Other errors pass through unchanged.
    """
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, ConnectionError, TimeoutError) as err:
        first = first_line(err)
        raise TrackingError(
            f"MLflow at {uri} stopped answering while the study's summary was written "
            f"({first}); every trial finished and its results are safe in {folder}; rerun the "
            "same command with --resume once MLflow answers, to write the summary"
        ) from None


def _write_trials(space: Any, done: list[dict[str, Any]], path: Path) -> None:
    """Every trial that reported, best first: id, metrics, sampled constants, full config.

    What ``rbm-tune evaluate`` and ``rbm-tune export`` read back; the checkpoint is the trial's
    folder in Ray Tune's results.
    """
    from rbm_tune.metrics import TEST_ACC, VAL_ACC

    rows = []
    for r in done:
        checkpoint = r["checkpoint"]
        rows.append(
            {
                "trial_id": r["trial_id"],
                "val_acc": r[VAL_ACC],
                "test_acc": r[TEST_ACC],
                "epochs": r["epochs"],
                "asha_stopped": r["asha_stopped"],
                "metrics": r["metrics"],
                "sampled": r["config"],
                "config": space.config_for(r["config"]).to_dict(),
                "checkpoint": None if checkpoint is None else str(checkpoint.path),
            }
        )
    path.write_text(json.dumps(rows, indent=1, default=str))


def _plots(
    space: Any, done: list[dict[str, Any]], study: Any, out: Path, log: Callable[[str], None]
) -> list[Path]:
    """Optuna's plots of the study's reported trials (rbm_tune.plots), none where the space
    says ``study.plots: false``; never fails a study."""
    if not study.plots:
        return []
    from rbm_tune.plots import study_from_trials, write_plots

    try:
        objectives = study.objectives or ((study.metric, study.mode),)
        names = [m for m, _ in objectives]
        directions = ["maximize" if d == "max" else "minimize" for _, d in objectives]
        # a multi-objective front is drawn over finished trials only: an ASHA-stopped trial's
        # accuracy is from an early epoch
        rows = [r for r in done if not (study.objectives and r["asha_stopped"])]
        values = [[r["metrics"].get(n, r.get(n)) for n in names] for r in rows]
        optuna_study = study_from_trials(
            space,
            [(r["config"], v) for r, v in zip(rows, values, strict=True)],
            directions,
            names=names,
        )
        return write_plots(optuna_study, out, log=log)
    except Exception as err:  # noqa: BLE001 (plots are a bonus)
        log(f"rbm-tune: note: no plots ({type(err).__name__}: {err})")
        return []


def _pareto(done: list[dict[str, Any]], study: Any, path: Path) -> list[dict[str, Any]]:
    """The finished trials no other finished trial dominates, as a markdown table at ``path``."""
    from rbm_tune.metrics import TEST_ACC
    from rbm_tune.plots import pareto_front

    names = [m for m, _ in study.objectives]
    directions = ["maximize" if d == "max" else "minimize" for _, d in study.objectives]
    rows = [r for r in done if not r["asha_stopped"]]
    points = [[float(r["metrics"][n]) for n in names] for r in rows]
    front = sorted(
        (rows[i] for i in pareto_front(points, directions)),
        key=lambda r: r["metrics"][names[0]],
        reverse=directions[0] == "maximize",
    )
    lines = [
        f"| trial | {' | '.join(names)} | test_acc (at best val) |",
        "| --- |" + " --- |" * (len(names) + 1),
    ]
    for r in front:
        cells = " | ".join(f"{r['metrics'][n]:.6g}" for n in names)
        lines.append(f"| {r['trial_id']} | {cells} | {r[TEST_ACC]:.4f} |")
    path.write_text(
        f"Pareto front of {len(front)} of {len(rows)} finished trials "
        f"({', '.join(f'{n} {d}' for n, d in study.objectives)}):\n\n" + "\n".join(lines) + "\n"
    )
    return front


def _trial_id(result: Any) -> str:
    """A Ray Tune ``Result``'s trial id: from its metrics, else from its trial folder's name
    (``_trial_fn_<id>_<n>_...``: a trial that failed before its first report has no metrics)."""
    import re

    tid = (result.metrics or {}).get("trial_id")
    if tid:
        return str(tid)
    name = Path(str(result.path)).name
    found = re.match(r"_trial_fn_([0-9a-f]+)_", name)
    return found.group(1) if found else name


def _close_lost_trial_runs(
    known: set[str], tracker: Any, log: Callable[[str], None], *, resumed: bool
) -> None:
    """Close, as KILLED, every trial run of the study whose trial is not in ``known`` (the
    trial ids of the study's ``ResultGrid``, :func:`_trial_id`).

    After a driver crash, a trial created after Ray Tune's last experiment snapshot is unknown
    to the restored Tuner, which runs a new trial in its place. Its run is lost in one of two
    states: still RUNNING (it was cut short) or FINISHED (it ended, even ASHA stopped it, before
    the snapshot caught up: snapshots are throttled, so this happens whenever a short trial is
    created and ends between two of them). Either would otherwise count as one of the study's
    trials in MLflow. Run after the outbox is drained, so every live trial's run is FINISHED or
    FAILED by then; FAILED and KILLED runs are already history and stay as they are. FINISHED
    runs are only checked in a resumed study (a fresh one has no earlier driver) and only when
    the trials could be identified (``known`` is not empty).
    """
    from rbm_tune.tracking import TRIAL_TAG

    runs = tracker.trial_runs()
    lost = [
        (run, "lost when the study's driver was killed")
        for run in runs
        if run.info.status in ("RUNNING", "SCHEDULED")
    ]
    lost += [
        (
            run,
            "finished after Ray Tune's last snapshot before the study's driver was killed; the "
            "resumed study ran another trial in its place",
        )
        for run in runs
        if resumed
        and known
        and run.info.status == "FINISHED"
        and run.data.tags.get(TRIAL_TAG) not in known
    ]
    for run, why in lost:
        tracker.close_orphan(run.info.run_id, why)
    if lost:
        log(
            f"closed {len(lost)} MLflow run(s) of trials lost when the study was killed, as KILLED"
        )
