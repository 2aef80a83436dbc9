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

__all__ = [
    "DistillResult",
    "EpochOutcome",
    "Report",
    "StudentRun",
    "tf32_matmuls",
    "train_student",
]

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


@dataclass(frozen=True)
class EpochOutcome:
    """One epoch of a :class:`StudentRun`: its summed loss, train / validation accuracy,
    whether the student has left pretraining, and the test accuracy where the epoch measured
    it (``eval_nodes: all``; None with ``needed``: ask :meth:`StudentRun.test_accuracy`)."""

    loss: float
    train_acc: float
    val_acc: float
    switched: bool
    test_acc: float | None


class StudentRun:
    """One student's epoch loop without the selection: :func:`train_student` (one student)
    and :func:`rbm_tune.multi_seed.train_students` (several, in lockstep) drive it and keep
    the best epoch themselves. Seeds torch with ``config.seed`` and builds the
    :class:`StudentTrainer`, as the loop always did."""

    def __init__(
        self,
        config: TrialConfig,
        graph: Graph,
        teacher: TeacherOutputs,
        features: Tensor,
        device: torch.device | str,
    ) -> None:
        torch.manual_seed(config.seed)
        self.config = config
        self.trainer = StudentTrainer(
            config, graph, teacher, features, torch.device(device),
            train_acc_sample=TRAIN_ACC_SAMPLE,
        )  # fmt: skip
        d, self.model = config.distill, self.trainer.model
        # MoE/RbM start in pretraining; the MLP has no switch
        self.has_switch = bool(self.model.is_pretraining)
        self.pretrain = d.pretrain_epochs if self.has_switch else 0
        self.last_epoch = d.max_epochs + self.pretrain
        self.every_node = d.eval_nodes == "all"
        self._step = self.trainer.epoch_fast if d.mode == "fast" else self.trainer.epoch_reference

    def epoch(self, epoch: int) -> EpochOutcome:
        """Train epoch ``epoch`` (1-based; the switch happens before the first post-pretraining
        one) and measure it."""
        d, model, trainer = self.config.distill, self.model, self.trainer
        if self.has_switch and epoch - 1 == self.pretrain:
            model.end_pretraining(
                trainer.x,
                csr=trainer.rows.csr,
                batch_size=d.batch_size,
                seed=self.config.seed,
                kmeans_restarts=d.kmeans_restarts,
                kmeans_max_iter=d.kmeans_max_iter,
                kmeans_max_rows=d.kmeans_max_rows,
            )
        model.train()
        loss = self._step()
        if not math.isfinite(loss):
            raise FloatingPointError(f"student loss became {loss} at epoch {epoch}")
        switched = not getattr(model, "is_pretraining", False)
        pred: Tensor | None
        test_acc: float | None = None
        if self.every_node:
            train_acc, val_acc, test_acc, pred = trainer.evaluate()
        else:
            train_acc, val_acc, pred = trainer.evaluate_needed()
        if trainer.sampler is not None:
            assert pred is not None  # evaluate_needed predicts every node for KRD
            trainer.sampler.update(trainer.teacher_pred, pred)
        return EpochOutcome(loss, train_acc, val_acc, switched, test_acc)

    def test_accuracy(self) -> float:
        """The current student's test accuracy."""
        return float(self.trainer.test_accuracy())

    def state(self) -> dict[str, Tensor]:
        """A CPU copy of the current student's weights."""
        return {k: t.detach().to("cpu", copy=True) for k, t in self.model.state_dict().items()}


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
    run = StudentRun(config, graph, teacher, graph.x if features is None else features, device)
    model, every_node = run.model, run.every_node
    best_val, best_epoch, test_at_best, test_max = -1.0, 0, 0.0, 0.0
    best_state: dict[str, Tensor] | None = None
    since_best = -run.pretrain  # pretraining epochs do not use up patience (§4.3 step 10)
    history: list[dict[str, float]] = []
    epoch = 0
    with tf32_matmuls(config.distill.precision == "tf32"):
        for epoch in range(1, run.last_epoch + 1):
            tick = time.perf_counter()
            out = run.epoch(epoch)
            if out.test_acc is not None:
                test_max = max(test_max, out.test_acc)
            if out.switched and out.val_acc >= best_val:
                test_acc = out.test_acc if out.test_acc is not None else run.test_accuracy()
                best_val, best_epoch, test_at_best, since_best = out.val_acc, epoch, test_acc, 0
                if keep_model:
                    best_state = run.state()
            else:
                since_best += 1
            metrics = {
                EPOCH: epoch,
                TRAIN_LOSS: out.loss,
                TRAIN_ACC: out.train_acc,
                VAL_ACC: out.val_acc,
                BEST_VAL_ACC: max(best_val, 0.0),
                IS_PRETRAINING: float(not out.switched),
                EPOCH_SECONDS: time.perf_counter() - tick,
            }
            history.append(metrics)
            if report is not None:
                report(dict(metrics))
            if since_best >= config.distill.patience:
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
