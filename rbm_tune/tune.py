"""Old import path of the study (now the ``rbm_tune.study`` package); kept for resumes.

A study started before the package existed pickled ``rbm_tune.tune._trial_fn`` (its trainable),
``rbm_tune.tune.MlflowTrials`` (its callback) and ``rbm_tune.tune.HeldEpochs`` (in its trials'
results) into its Ray Tune state; ``--resume`` unpickles them through these names. New code
imports from ``rbm_tune.study``.
"""

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
)
from rbm_tune.study import HeldEpochs, StudyResult, run_study, rung_epochs
from rbm_tune.study.mlflow_callback import PENDING_MLFLOW, MlflowTrials
from rbm_tune.study.ray_session import check_address as _check_address
from rbm_tune.study.ray_session import init_ray as _init_ray
from rbm_tune.study.rows import _trial_id
from rbm_tune.study.summary import _close_lost_trial_runs
from rbm_tune.study.trainable import _drop_exit_in_callbacks, _trial_fn, is_out_of_memory

__all__ = [
    "FINAL",
    "HELD_EPOCHS",
    "INFERENCE_MS",
    "MEMORY_ESTIMATE",
    "MEMORY_SHARE",
    "NODE_ID",
    "NUM_PARAMS",
    "PENDING_MLFLOW",
    "POST_SWITCH_EPOCH",
    "RAN_ON_CUDA",
    "SKIPPED",
    "HeldEpochs",
    "MlflowTrials",
    "StudyResult",
    "_check_address",
    "_close_lost_trial_runs",
    "_drop_exit_in_callbacks",
    "_init_ray",
    "_trial_fn",
    "_trial_id",
    "is_out_of_memory",
    "rung_epochs",
    "run_study",
]
