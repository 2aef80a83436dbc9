"""Metric names, defined once (STYLE R4), and accuracy.

Per-epoch reports carry :data:`EPOCH`, :data:`TRAIN_LOSS`, :data:`TRAIN_ACC`, :data:`VAL_ACC`,
:data:`BEST_VAL_ACC` and :data:`IS_PRETRAINING` — never a test accuracy, so nothing derived from
the test set can reach a searcher or scheduler. Test accuracy is reported once, at the end:
:data:`TEST_ACC` at the best-validation epoch (the honest, primary number) and
:data:`TEST_ACC_ORACLE`, the maximum over epochs that the reference code reports (spec §6.5).
"""

from __future__ import annotations

from torch import Tensor

EPOCH = "epoch"
TRAIN_LOSS = "train_loss"
TRAIN_ACC = "train_acc"
VAL_ACC = "val_acc"
BEST_VAL_ACC = "best_val_acc"
IS_PRETRAINING = "is_pretraining"
EPOCH_SECONDS = "epoch_seconds"

TEST_ACC = "test_acc"
TEST_ACC_ORACLE = "test_acc_max_over_epochs_oracle"
BEST_EPOCH = "best_epoch"

__all__ = [
    "BEST_EPOCH",
    "BEST_VAL_ACC",
    "EPOCH",
    "EPOCH_SECONDS",
    "IS_PRETRAINING",
    "TEST_ACC",
    "TEST_ACC_ORACLE",
    "TRAIN_ACC",
    "TRAIN_LOSS",
    "VAL_ACC",
    "accuracy",
]


def accuracy(logits: Tensor, y: Tensor) -> float:
    """Share of rows whose argmax equals the label; 0.0 for no rows."""
    if y.numel() == 0:
        return 0.0
    return float((logits.argmax(dim=-1) == y).float().mean())
