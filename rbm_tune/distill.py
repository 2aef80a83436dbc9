"""Train a node-wise student from a teacher's outputs (method §4). Knows nothing of Ray/MLflow.

``train_student`` runs the epoch loop and reports one plain dict per epoch through ``report``;
the caller decides what a report means (print it, hand it to Ray Tune, append it to a list).
One epoch, the losses and the evaluation are :class:`rbm_tune.student_trainer.StudentTrainer`'s
(the ``reference`` and ``fast`` epoch semantics, ``eval_nodes``, the speed options and the
sparse-feature path are described there).

Selection: best validation accuracy over post-switch epochs only (method §10.1 item 8); the
primary result is the test accuracy at that epoch; the max-over-epochs test accuracy is kept
under a name that says it is an oracle. Test accuracy never appears in a per-epoch report.
With ``eval_nodes: needed`` the reported ``train_acc`` is that of a fixed seeded sample of at
most :data:`TRAIN_ACC_SAMPLE` training nodes. ``precision: tf32`` lets CUDA run float32
matmuls on TF32 tensor cores while the loop runs (:func:`tf32_matmuls`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from rbm_tune.config import TrialConfig
from rbm_tune.data import Graph
from rbm_tune.metrics import (
    BEST_VAL_ACC,
    EPOCH,
    EPOCH_SECONDS,
    IS_PRETRAINING,
    TRAIN_ACC,
    TRAIN_LOSS,
    VAL_ACC,
)
from rbm_tune.student_trainer import StudentTrainer
from rbm_tune.teacher import TeacherOutputs

__all__ = ["DistillResult", "Report", "tf32_matmuls", "train_student"]

Report = Callable[[dict[str, float]], object]

TRAIN_ACC_SAMPLE = 4096  # training nodes behind train_acc with eval_nodes: needed


@dataclass
class DistillResult:
    """Outcome of one student training run.

    Attributes:
        val_acc: best post-switch validation accuracy.
        test_acc: test accuracy at that epoch (primary).
        test_acc_oracle: maximum test accuracy over all epochs (the reference's number); NaN
            with ``eval_nodes: needed``, which does not evaluate every epoch's test nodes.
        best_epoch: 1-based epoch of ``val_acc``; epochs: epochs run; seconds: wall time.
        history: the per-epoch reports.
        model: the student with its best-val weights loaded (CPU), if kept.
    """

    val_acc: float
    test_acc: float
    test_acc_oracle: float
    best_epoch: int
    epochs: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    model: nn.Module | None = None


@contextmanager
def tf32_matmuls(on: bool) -> Iterator[None]:
    """While active (``on``), CUDA float32 matmuls may use TF32 tensor cores
    (``precision: tf32``); the previous setting comes back after. No effect on a CPU."""
    if not on:
        yield
        return
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    matmul.fp32_precision = "tf32"
    try:
        yield
    finally:
        matmul.fp32_precision = before


def train_student(
    config: TrialConfig,
    graph: Graph,
    teacher: TeacherOutputs,
    *,
    report: Report | None = None,
    features: Tensor | None = None,
    device: torch.device | str = "cpu",
    keep_model: bool = False,
) -> DistillResult:
    """Distil ``teacher`` into the student ``config.student`` (method §4).

    Args:
        config: the trial (student and distill sections are used; ``seed`` seeds everything).
        graph: the dataset and split.
        teacher: the teacher's outputs on the training graph (observed order).
        report: called once per epoch with a dict keyed by ``rbm_tune.metrics`` names:
            epoch (1-based), train_loss, train_acc, val_acc, best_val_acc, is_pretraining,
            epoch_seconds. Never a test accuracy.
        features: student inputs for every node, (N, d'); default ``graph.x`` (pass the
            features with positional encodings concatenated to use them).
        device: where to train.
        keep_model: return the best-val student (on the CPU) in the result.

    Returns:
        DistillResult with the test accuracy at the best post-switch validation epoch.
    """
    start = time.perf_counter()
    device = torch.device(device)
    torch.manual_seed(config.seed)
    trainer = StudentTrainer(
        config,
        graph,
        teacher,
        graph.x if features is None else features,
        device,
        train_acc_sample=TRAIN_ACC_SAMPLE,
    )
    d, model = config.distill, trainer.model
    has_switch = model.is_pretraining  # MoE/RbM start in pretraining; the MLP has no switch
    pretrain = d.pretrain_epochs if has_switch else 0
    step = trainer.epoch_fast if d.mode == "fast" else trainer.epoch_reference
    every_node = d.eval_nodes == "all"

    best_val, best_epoch, test_at_best, test_max = -1.0, 0, 0.0, 0.0
    best_state: dict[str, Tensor] | None = None
    since_best = -pretrain  # pretraining epochs do not use up patience (§4.3 step 10)
    history: list[dict[str, float]] = []
    epoch = 0
    with tf32_matmuls(d.precision == "tf32"):
        for epoch in range(1, d.max_epochs + pretrain + 1):
            tick = time.perf_counter()
            if has_switch and epoch - 1 == pretrain:
                model.end_pretraining(
                    trainer.x,
                    csr=trainer.rows.csr,
                    batch_size=d.batch_size,
                    seed=config.seed,
                    kmeans_restarts=d.kmeans_restarts,
                    kmeans_max_iter=d.kmeans_max_iter,
                    kmeans_max_rows=d.kmeans_max_rows,
                )
            model.train()
            loss = step()
            if not math.isfinite(loss):
                raise FloatingPointError(f"student loss became {loss} at epoch {epoch}")
            switched = not getattr(model, "is_pretraining", False)
            pred: Tensor | None
            if every_node:
                train_acc, val_acc, test_acc, pred = trainer.evaluate()
                test_max = max(test_max, test_acc)
            else:
                train_acc, val_acc, pred = trainer.evaluate_needed()
            if trainer.sampler is not None:
                assert pred is not None  # evaluate_needed predicts every node for KRD
                trainer.sampler.update(trainer.teacher_pred, pred)
            if switched and val_acc >= best_val:
                if not every_node:
                    test_acc = trainer.test_accuracy()
                best_val, best_epoch, test_at_best, since_best = val_acc, epoch, test_acc, 0
                if keep_model:
                    best_state = {
                        k: t.detach().to("cpu", copy=True) for k, t in model.state_dict().items()
                    }
            else:
                since_best += 1
            metrics = {
                EPOCH: epoch,
                TRAIN_LOSS: loss,
                TRAIN_ACC: train_acc,
                VAL_ACC: val_acc,
                BEST_VAL_ACC: max(best_val, 0.0),
                IS_PRETRAINING: float(not switched),
                EPOCH_SECONDS: time.perf_counter() - tick,
            }
            history.append(metrics)
            if report is not None:
                report(dict(metrics))
            if since_best >= d.patience:
                break

    kept = None
    if keep_model and best_state is not None:
        model.load_state_dict(best_state)
        kept = model.cpu().eval()
    return DistillResult(
        val_acc=best_val,
        test_acc=test_at_best,
        test_acc_oracle=test_max if every_node else math.nan,
        best_epoch=best_epoch,
        epochs=epoch,
        seconds=time.perf_counter() - start,
        history=history,
        model=kept,
    )
