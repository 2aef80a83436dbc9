"""One trial, inside its Ray worker: sampled constants -> TrialConfig -> ``train_student``.

:func:`_trial_fn` is the Ray Tune function trainable (its name is in every trial folder's name,
``_trial_fn_<id>_...``, which resumed studies and ``rbm-tune evaluate`` read). It is a thin
adapter over ``rbm_tune.distill.train_student``, whose ``report`` callable sends validation
metrics only to ``ray.tune.report``: at every ASHA rung (:func:`rung_epochs`) and otherwise at
most every ``study.report_every_s``; the epochs in between ride along as :class:`HeldEpochs`
and reach MLflow each at its own step. A finished trial reports once more with its test
accuracy at the best-validation epoch and its best weights as a checkpoint. With
``study.seeds_per_trial: n`` > 1 it trains n students in lockstep (``rbm_tune.multi_seed``) and
reports their means, ``val_acc_std`` beside; ``student.pt`` is the first seed's.

Before training, a trial compares its memory estimate (``rbm_tune.memory``) with its share and
reports itself skipped instead of starting when it would not fit; an out-of-memory error while
training is recorded the same way and not retried.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ray import tune

from rbm_tune.metrics import (
    FINAL,
    HELD_EPOCHS,
    INFERENCE_MS,
    MEMORY_ESTIMATE,
    MEMORY_SHARE,
    NODE_ID,
    NUM_PARAMS,
    POST_SWITCH_EPOCH,
    RAN_ON_CUDA,
    SKIPPED,
    SKIPPED_BECAUSE,
    WARNING,
)
from rbm_tune.placement import NoCudaError, from_ray

__all__ = ["HeldEpochs", "is_out_of_memory", "rung_epochs"]


class HeldEpochs(tuple[dict[str, Any], ...]):
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


def _trial_fn(
    config: dict[str, Any], *, space: Any, payload: Any, cache_dir: str | None = None
) -> None:
    """One trial: sampled constants -> TrialConfig -> train_student, reporting to Ray Tune.

    ``payload``: a ``rbm_tune.payload.TrialPayload``, read-only arrays shared by the node's
    trials; ``graph`` and ``teacher`` hold only the fields the space can use. ``cache_dir``: the
    study's ``--cache-dir`` (DeepWalk embeddings), None for the default cache.
    """
    import torch

    from rbm_tune import metrics as M
    from rbm_tune.distill import DistillResult, train_student
    from rbm_tune.multi_seed import final_metrics, other_students, train_students
    from rbm_tune.testing import faults
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
    node = _node_id()
    try:  # the device Ray assigned, not whatever CUDA this process happens to see
        placement = from_ray(cpu_fallback=space.study.cpu_fallback)
    except NoCudaError as err:  # fails in one line, not retried (a retry finds no CUDA either)
        tune.report(_skipped("no_cuda", space.study, 0, 0, node, why=str(err)))
        return
    # the driver prints it, once per study (its console), not each trial process
    warned = {WARNING: placement.warning} if placement.warning else {}
    device = torch.device(placement.device)
    pretrain = cfg.distill.pretrain_epochs if cfg.student.model != "mlp" else 0

    need, share = _memory_need_and_share(cfg, graph, device, space.study)
    if need > share:  # never started: PRUNED in Optuna, tagged in MLflow, no retry
        tune.report(_skipped("memory", space.study, need, share, node))
        return
    features = student_features(cfg, graph, cache_dir)  # DeepWalk columns: cached there
    # a multi-objective study's cost objectives, in every report (an ASHA-stopped trial too)
    costs = _costs(cfg, graph, features, device) if space.study.objectives else {}

    # Every report blocks the trial until the driver has taken it (Ray Tune's function API;
    # benchmarks/bench_study.py: ~35 ms per report on cora, 2 CPUs), more than an epoch of a
    # small graph on a GPU. So a trial reports at every ASHA rung (same decisions
    # as reporting every epoch) and otherwise at most every study.report_every_s seconds; the
    # epochs in between ride along (HELD_EPOCHS) and MlflowTrials logs each at its own step.
    study = space.study
    rungs = (
        rung_epochs(study.grace_period, study.reduction_factor, study.asha_max_t + 1)
        if study.early_stopping
        else frozenset()
    )
    every = float(study.report_every_s)
    held: list[dict[str, float]] = []
    last = time.monotonic()

    def send(m: dict[str, float]) -> None:
        nonlocal last
        rows = HeldEpochs(held[:-1])
        held.clear()
        last = time.monotonic()
        post = m[M.EPOCH] - pretrain
        tune.report(
            {**m, POST_SWITCH_EPOCH: post, NODE_ID: node, **costs, **warned, HELD_EPOCHS: rows}
        )

    def report(m: dict[str, float]) -> None:
        faults.fire("trial_epoch", int(m[M.EPOCH]))
        held.append({**m, **costs})
        # every <= 0: always due
        if time.monotonic() - last >= every or int(m[M.EPOCH]) - pretrain in rungs:
            send(m)

    seeds = int(getattr(study, "seeds_per_trial", 1))  # a study pickled before it: 1
    result: DistillResult
    try:
        if seeds > 1:  # n students in lockstep, reporting their means (rbm_tune.multi_seed)
            result = train_students(
                cfg, graph, teacher, seeds=seeds, report=report, features=features,
                device=device, keep_model=True,
            )  # fmt: skip
        else:
            result = train_student(
                cfg, graph, teacher, report=report, features=features, device=device,
                keep_model=True,
            )  # fmt: skip
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
        **final_metrics(result),  # seeds_per_trial > 1: the spreads over the students
        M.BEST_EPOCH: result.best_epoch,
        NUM_PARAMS: sum(p.numel() for p in model.parameters()),
        INFERENCE_MS: inference,
        RAN_ON_CUDA: int(device.type == "cuda"),
        **costs,  # the objectives keep the values the searcher saw in every report
        **warned,
        HELD_EPOCHS: HeldEpochs(),
        FINAL: 1,
        # which Ray node trained it (several nodes of one cluster may share an IP and host name)
        NODE_ID: node,
    }
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(model.cpu().state_dict(), Path(tmp) / "student.pt")
        for file, student in other_students(result):
            torch.save(student.state_dict(), Path(tmp) / file)
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

    students = int(getattr(study, "seeds_per_trial", 1))  # lockstep: n x parameters + Adam
    need = estimate(cfg, GraphSizes.of(graph), device.type, students)
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


def _skipped(
    kind: str, study: Any, need: int, share: int, node: str, *, why: str = ""
) -> dict[str, Any]:
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
        **({SKIPPED_BECAUSE: why} if why else {}),
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
