"""Every metric name, defined once (STYLE R4), and accuracy. Imports nothing heavy.

Per-epoch reports carry :data:`EPOCH`, :data:`TRAIN_LOSS`, :data:`TRAIN_ACC`, :data:`VAL_ACC`,
:data:`BEST_VAL_ACC` and :data:`IS_PRETRAINING` — never a test accuracy, so nothing derived from
the test set can reach a searcher or scheduler. Test accuracy is reported once, at the end:
:data:`TEST_ACC` at the best-validation epoch (the honest, primary number) and
:data:`TEST_ACC_ORACLE`, the maximum over epochs that the reference code reports (method §6.5).

A study's trials add the keys below the training loop's (``rbm_tune.study.trainable``): what
Ray Tune, ASHA, the searcher, MLflow and ``results.csv`` read. Loading a search space imports
this module for :data:`SEARCH_METRICS` / :data:`COST_METRICS`, so it never imports torch
(``accuracy`` only calls methods of the tensors it is given).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

# -- the training loop's per-epoch report (rbm_tune.distill) ----------------------------------
EPOCH = "epoch"  # 1-based, pretraining included
TRAIN_LOSS = "train_loss"
TRAIN_ACC = "train_acc"
VAL_ACC = "val_acc"
BEST_VAL_ACC = "best_val_acc"
IS_PRETRAINING = "is_pretraining"
EPOCH_SECONDS = "epoch_seconds"
# study.seeds_per_trial > 1 (rbm_tune.multi_seed): the per-epoch metrics above are means over the
# trial's students; this is the sample std of their val_acc (0.0 for one student)
VAL_ACC_STD = "val_acc_std"

# -- once, at the end of training --------------------------------------------------------------
TEST_ACC = "test_acc"
TEST_ACC_ORACLE = "test_acc_max_over_epochs_oracle"
BEST_EPOCH = "best_epoch"
# study.seeds_per_trial > 1: the std over the students of their test_acc at the best mean epoch,
# and how many students the trial trained
TEST_ACC_STD = "test_acc_std"
SEEDS = "seeds_per_trial"

# -- a study's trial results (rbm_tune.study) ---------------------------------------------------
POST_SWITCH_EPOCH = "post_switch_epoch"  # ASHA's time: epochs after the pretraining switch
NUM_PARAMS = "num_params"
INFERENCE_MS = "inference_ms_per_1k_nodes"
RAN_ON_CUDA = "ran_on_cuda"
FINAL = "final"  # 1 in a trial's last result (its best-validation epoch's metrics)
NODE_ID = "node_id"  # the Ray node that trained the trial
HELD_EPOCHS = "held_epochs"  # the epochs a trial held back since its previous report
# a trial that was not trained: "memory" (its estimate exceeds its share), "oom" (it ran out
# of memory while training) or "no_cuda" (Ray gave it a GPU its process cannot see); never
# retried
SKIPPED = "skipped"
SKIPPED_BECAUSE = "skipped_because"  # the one-line reason, where there is more to say
MEMORY_ESTIMATE = "memory_estimate_bytes"
MEMORY_SHARE = "memory_share_bytes"
# A trial's objective: its validation accuracy at its best-validation epoch, the value the
# searcher ranks (a finished trial's final result has val_acc == best_val_acc), under one name
# in the CLI summary, results.csv, MLflow (the last value of every trial run's best_val_acc,
# the parent run's best_val_acc metric and tags) and trials.json. The per-epoch val_acc is that
# epoch's value only; an ASHA-stopped trial's objective is its best epoch before it stopped.
OBJECTIVE = BEST_VAL_ACC
# an "rbm-tune: warning: ..." line of a trial's process (e.g. a GPU it could not use): handed to
# the driver in the trial's results, which prints each text once (rbm_tune.study.console)
WARNING = "rbm_tune_warning"
# the same number as OBJECTIVE, logged once on a finished trial's run; kept for the studies
# and MLflow comparisons made before OBJECTIVE was logged at the end
FINAL_VAL_ACC = "final_val_acc"

# -- what a study may optimise --------------------------------------------------------------
# a per-epoch metric a searcher and ASHA may follow, with its natural direction; a test
# accuracy is never one of them
SEARCH_METRICS = {VAL_ACC: "max", BEST_VAL_ACC: "max", TRAIN_ACC: "max", TRAIN_LOSS: "min"}
# cost objectives of a multi-objective study: measured on the trial's architecture before it
# trains and reported with every epoch. Always minimised.
COST_METRICS = {NUM_PARAMS: "min", INFERENCE_MS: "min"}

__all__ = [
    "BEST_EPOCH",
    "BEST_VAL_ACC",
    "COST_METRICS",
    "EPOCH",
    "EPOCH_SECONDS",
    "FINAL",
    "FINAL_VAL_ACC",
    "HELD_EPOCHS",
    "INFERENCE_MS",
    "IS_PRETRAINING",
    "MEMORY_ESTIMATE",
    "MEMORY_SHARE",
    "NODE_ID",
    "NUM_PARAMS",
    "OBJECTIVE",
    "POST_SWITCH_EPOCH",
    "RAN_ON_CUDA",
    "SEEDS",
    "SEARCH_METRICS",
    "SKIPPED",
    "SKIPPED_BECAUSE",
    "TEST_ACC",
    "TEST_ACC_ORACLE",
    "TEST_ACC_STD",
    "TRAIN_ACC",
    "TRAIN_LOSS",
    "VAL_ACC",
    "VAL_ACC_STD",
    "accuracy",
]


def accuracy(logits: Tensor, y: Tensor) -> float:
    """Share of rows whose argmax equals the label; 0.0 for no rows."""
    if y.numel() == 0:
        return 0.0
    return float((logits.argmax(dim=-1) == y).float().mean())
