"""Several students of one config over seeds, in lockstep: ``study.seeds_per_trial`` (method §6.5).

A trial with ``seeds_per_trial: n`` trains its config's student with the seeds
:func:`student_seeds` gives (``seed, seed + 1, ..., seed + n - 1``) over *one* data split,
teacher and DeepWalk embedding (those of ``seed``): the noise it averages is the student's own
(initialisation, dropout, k-means, sampling), not the split's. The students advance epoch by
epoch together, so every per-epoch report is that epoch's *mean* over the seeds
(``val_acc``, ``train_acc``, ``train_loss``) with the spread :data:`VAL_ACC_STD` beside it, and
ASHA can stop the trial after any epoch as it stops a one-seed trial.

Selection is the one-seed rule applied to the mean curve: the best epoch is the post-switch
epoch with the highest mean validation accuracy (ties: the later), patience counts epochs
without a new best mean, and the trial's test accuracy is the mean over the seeds of each
student's test accuracy at that epoch (never looked at before the epoch is chosen).

Each student keeps its own torch / numpy / python random state, swapped in around its
epochs, so student ``k`` trains exactly as ``train_student`` would alone with seed
``seed + k`` on the same graph and teacher: the first student of an n-seed trial is the
one-seed trial's student, and ``n: 1`` runs :func:`rbm_tune.distill.train_student` itself.
"""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rbm_tune.config import TrialConfig
from rbm_tune.data import Graph
from rbm_tune.distill import DistillResult, Report, StudentRun, tf32_matmuls
from rbm_tune.metrics import (
    BEST_VAL_ACC,
    EPOCH,
    EPOCH_SECONDS,
    IS_PRETRAINING,
    SEEDS,
    TEST_ACC_STD,
    TRAIN_ACC,
    TRAIN_LOSS,
    VAL_ACC,
    VAL_ACC_STD,
)
from rbm_tune.teacher import TeacherOutputs

__all__ = [
    "SeedsResult",
    "final_metrics",
    "other_students",
    "spread",
    "student_seeds",
    "train_students",
]


def student_seeds(seed: int, n: int) -> list[int]:
    """The seeds of a trial's ``n`` students: ``seed, seed + 1, ..., seed + n - 1`` (``n: 1``:
    the trial's own seed, as before the option existed)."""
    if n < 1:
        raise ValueError(f"seeds_per_trial must be >= 1, got {n}")
    return [seed + k for k in range(n)]


def spread(values: list[float]) -> float:
    """Sample standard deviation (0.0 for one value)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


@dataclass
class SeedsResult(DistillResult):
    """A :class:`DistillResult` over several students: ``val_acc``, ``test_acc`` and
    ``test_acc_oracle`` are means (the oracle is the maximum of the mean test curve),
    ``model`` is the first seed's student; the rest is per seed, at the best mean epoch."""

    seeds: list[int] = field(default_factory=list)
    val_accs: list[float] = field(default_factory=list)
    test_accs: list[float] = field(default_factory=list)
    models: list[nn.Module] = field(default_factory=list)

    @property
    def val_acc_std(self) -> float:
        return spread(self.val_accs)

    @property
    def test_acc_std(self) -> float:
        return spread(self.test_accs)


class _Rng:
    """A student's own random state (torch CPU and the device's CUDA, numpy, python)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self.save()

    def save(self) -> None:
        self.torch = torch.get_rng_state()
        self.gpu = torch.cuda.get_rng_state(self.device) if self.cuda else None
        self.numpy = np.random.get_state()
        self.python = random.getstate()

    def load(self) -> None:
        torch.set_rng_state(self.torch)
        if self.gpu is not None:
            torch.cuda.set_rng_state(self.gpu, self.device)
        np.random.set_state(self.numpy)
        random.setstate(self.python)


def _on_device(
    config: TrialConfig, teacher: TeacherOutputs, features: Tensor, device: torch.device
) -> tuple[TeacherOutputs, Tensor]:
    """Features and the teacher tensors the students read moved once, so their trainers share
    them (a tensor already on the device is not copied again); the others stay where they are."""
    d = config.distill
    moved = dataclasses.replace(
        teacher,
        log_probs=teacher.log_probs.to(device),
        embedding=teacher.embedding.to(device) if d.similarity_distill else teacher.embedding,
        krd_delta=teacher.krd_delta.to(device) if d.reliable_sampling else teacher.krd_delta,
    )
    return moved, features.to(device)


def train_students(
    config: TrialConfig,
    graph: Graph,
    teacher: TeacherOutputs,
    *,
    seeds: int,
    report: Report | None = None,
    features: Tensor | None = None,
    device: torch.device | str = "cpu",
    keep_model: bool = False,
) -> SeedsResult:
    """Train ``seeds`` students of ``config`` in lockstep (module docstring).

    ``report`` gets one dict per epoch, keyed as :func:`rbm_tune.distill.train_student`'s,
    with means over the students and :data:`VAL_ACC_STD`; never a test accuracy.
    """
    start = time.perf_counter()
    device = torch.device(device)
    teacher, x = _on_device(config, teacher, graph.x if features is None else features, device)
    runs: list[StudentRun] = []
    rngs: list[_Rng] = []
    for s in student_seeds(config.seed, seeds):
        runs.append(StudentRun(config.replace(seed=s), graph, teacher, x, device))
        rngs.append(_Rng(device))  # right after StudentRun seeded and built its student
    first = runs[0]
    best_val, best_epoch, test_max = -1.0, 0, 0.0
    val_at_best: list[float] = []
    test_at_best: list[float] = []
    states: list[dict[str, Tensor]] = []
    since_best = -first.pretrain
    history: list[dict[str, float]] = []
    epoch = 0
    with tf32_matmuls(config.distill.precision == "tf32"):
        for epoch in range(1, first.last_epoch + 1):
            tick = time.perf_counter()
            outs = []
            for run, rng in zip(runs, rngs, strict=True):
                rng.load()
                outs.append(run.epoch(epoch))
                rng.save()
            vals = [o.val_acc for o in outs]
            val = statistics.fmean(vals)
            if all(o.test_acc is not None for o in outs):
                test_max = max(test_max, statistics.fmean(o.test_acc or 0.0 for o in outs))
            switched = all(o.switched for o in outs)
            if switched and val >= best_val:
                best_val, best_epoch, since_best, val_at_best = val, epoch, 0, vals
                test_at_best = [
                    o.test_acc if o.test_acc is not None else r.test_accuracy()
                    for o, r in zip(outs, runs, strict=True)
                ]
                if keep_model:
                    states = [r.state() for r in runs]
            else:
                since_best += 1
            metrics = {
                EPOCH: epoch,
                TRAIN_LOSS: statistics.fmean(o.loss for o in outs),
                TRAIN_ACC: statistics.fmean(o.train_acc for o in outs),
                VAL_ACC: val,
                VAL_ACC_STD: spread(vals),
                BEST_VAL_ACC: max(best_val, 0.0),
                IS_PRETRAINING: float(not switched),
                EPOCH_SECONDS: time.perf_counter() - tick,
            }
            history.append(metrics)
            if report is not None:
                report(dict(metrics))
            if since_best >= config.distill.patience:
                break
    models: list[Any] = []
    for run, state in zip(runs, states, strict=False):
        run.model.load_state_dict(state)
        models.append(run.model.cpu().eval())
    return SeedsResult(
        val_acc=best_val,
        test_acc=statistics.fmean(test_at_best) if test_at_best else 0.0,
        test_acc_oracle=test_max if first.every_node else math.nan,
        best_epoch=best_epoch,
        epochs=epoch,
        seconds=time.perf_counter() - start,
        history=history,
        model=models[0] if models else None,
        seeds=student_seeds(config.seed, seeds),
        val_accs=list(val_at_best),
        test_accs=[float(t) for t in test_at_best],
        models=models,
    )


def final_metrics(result: DistillResult) -> dict[str, float]:
    """What a trial's final result adds for several students (nothing for one):
    :data:`VAL_ACC_STD`, :data:`TEST_ACC_STD` at the best mean epoch and :data:`SEEDS`."""
    if not isinstance(result, SeedsResult) or len(result.seeds) < 2:
        return {}
    return {
        VAL_ACC_STD: result.val_acc_std,
        TEST_ACC_STD: result.test_acc_std,
        SEEDS: len(result.seeds),
    }


def other_students(result: DistillResult) -> list[tuple[str, nn.Module]]:
    """The checkpoint files of the students after the first (``student.pt`` stays the first
    seed's, the one ``rbm-tune export`` and ``best`` -> ``train`` reproduce):
    ``student-seed<seed>.pt``."""
    if not isinstance(result, SeedsResult):
        return []
    pairs = zip(result.seeds[1:], result.models[1:], strict=False)
    return [(f"student-seed{seed}.pt", model) for seed, model in pairs]
