"""The search: Ray Tune + OptunaSearch (TPE) + ASHA over a validated ``SearchSpace``.

The only package that imports ``ray.tune``. Read it in the order a study runs:

- ``run``: :func:`run_study`, what is checked before Ray starts, the teacher resolved once;
- ``ray_session``: joining or starting Ray (loopback only);
- ``tuner``: the ``Tuner`` with the searcher, ASHA and the MLflow callback, fitted;
- ``trainable``: one trial inside its Ray worker, a thin adapter over
  ``rbm_tune.distill.train_student`` reporting validation metrics only;
- ``searcher``: OptunaSearch that ends ASHA-stopped trials PRUNED;
- ``mlflow_callback``: every trial mirrored into MLflow through ``rbm_tune.tracking.outbox``;
- ``summary``: the best trial and the study folder's files;
- ``_compat``: every private Ray / Optuna name used, checked against the pinned versions.

``rbm_tune.tune`` and ``rbm_tune.searcher`` keep the names studies started before this package
pickled (``--resume`` reads them).
"""

from rbm_tune.study.run import run_study
from rbm_tune.study.summary import StudyResult
from rbm_tune.study.trainable import HeldEpochs, rung_epochs

__all__ = ["HeldEpochs", "StudyResult", "rung_epochs", "run_study"]
