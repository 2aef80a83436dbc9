"""Search spaces: a YAML file -> a validated :class:`SearchSpace` -> an Optuna define-by-run.

A space file mirrors a trial config (``rbm_tune/configs/*.yaml``), so every trial config is a
valid space with nothing searched. A scalar is fixed; a mapping is searched::

    study:                       # every key optional; the defaults are StudySettings' fields
      name: cora                 # left out: the file's stem (MLflow experiment, Ray folder)
      num_trials: 64
      seed: 0                    # data split / teacher / student seed of every trial
      sampler_seed: 0            # the TPE seed; left out: seed
      metric: val_acc            # a per-epoch metric: val_acc, best_val_acc, train_acc, train_loss
      mode: max                  # left out: max for accuracies, min for train_loss
      max_concurrent: null       # null: as many trials at once as resources allow
      max_failures: 2            # a trial that raises or dies is retried this many times
      report_every_s: 1.0        # a trial reports to Ray Tune at most this often, and at every
                                 # ASHA rung; MLflow still gets every epoch (0: every epoch)
      objectives: null           # two objectives, e.g. {val_acc: max, num_params: min}
      plots: true                # Optuna's plots of the trials at the end (false: skip them)
      asha: {grace_period: 20, reduction_factor: 2}
      resources: {cpus_per_trial: 1, gpus_per_trial: 0.25}   # fractional GPUs pack trials
                                 # memory_per_trial: 8GiB caps a CPU trial (default: the
                                 # host's memory / the trials at once); see rbm-tune plan
    base: cora-transductive-sage-rbm   # optional: start from this trial config
    dataset: cora                # required without a base
    setting: transductive
    teacher: {model: sage, num_layers: 3, hidden_dim: 512}   # fixed: trained once, cached
    student:
      model: rbm
      num_experts: {int: [2, 16], default: 4}
      k: {int: [1, num_experts - 1]}        # a bound may name an earlier parameter
      hidden_dim: {categorical: [64, 128, 256]}
    distill:
      lr: {float: [5.0e-4, 2.0e-2], log: true}
      pretrain_epochs: {int: [0, 50], step: 5}
      weight_decay: {float: [1.0e-5, 1.0e-2], log: true, or_zero: true}

Rules:

- ``base:`` names a trial config: a path (relative to the space file) or the name of a shipped
  one (``rbm-tune configs`` lists them). Every value of the base is fixed unless the file
  writes the key again: a scalar overrides it, a mapping searches it, and the base's value is
  then the default of that distribution unless it says ``default:``. The base's values come
  before the file's in the sampling order, so a bound may name any of them.
- A distribution is a mapping with exactly one of ``int: [lo, hi]``, ``float: [lo, hi]`` or
  ``categorical: [choice, ...]``, plus optional ``log`` (true/false), ``step`` (not with
  ``log``), ``or_zero`` (method §9's "{0} ∪ range") and ``default`` (the value
  :meth:`SearchSpace.default_params` proposes; without one, the base's value, else the first
  choice or the (geometric) middle of the range). Anything else (a list, null, an unknown
  option) is an error.
- A bound is a number, ``name``, ``name + n``, ``name - n`` or ``min(...)`` / ``max(...)`` of
  those, where ``name`` is a parameter set *earlier in the file* (``num_experts`` in the same
  section, or ``section.key``). Quote a ``min``/``max`` bound: YAML splits flow lists at commas
  (``k: {int: [1, "min(4, num_experts - 1)"]}``).
- A ``float`` distribution on an integer field is an error; an ``int`` one on a float field is
  fine; a true/false field is searched with ``categorical: [false, true]``. ``dataset``,
  ``setting``, ``seed`` and the whole ``teacher`` section are fixed: the teacher is trained once
  per study and shared by every trial.
- Keys are the trial-config keys (reference aliases such as ``lambda`` are accepted and renamed;
  renamed keys such as ``vq_coeff`` are read with a deprecation warning). Optuna and MLflow see
  the flat names ``student.num_experts``; the file order is the sampling order. The YAML
  dialect is :mod:`rbm_tune.yamlio`'s: ``1e-4`` is a number and a key written twice is an
  error. ``seed`` may also sit at the top level, as in a trial config.
- ``when: {name: [choice, ...]}`` draws a parameter only where an earlier categorical
  parameter took one of those choices; where ``student.model`` is searched, the keys only some
  models read (``num_experts``, ``k``, ``router``, ...) get that condition implied
  (:mod:`rbm_tune.space.conditions`). A parameter not drawn is absent from the trial's Optuna
  parameters and MLflow params; its trial config holds the schema's default.
- ``or_zero`` is encoded for Optuna as two parameters, so define-by-run needs only ``suggest_*``
  calls and TPE sees a clean conditional space: ``<name>.is_zero`` (categorical
  ``[False, True]``) and, only when it is False, ``<name>`` itself. The dict
  :meth:`SearchSpace.define_by_run` returns always holds the final value under ``<name>``.
  MLflow logs ``<name>`` only, with that value (:func:`~rbm_tune.space.params.effective_values`);
  the switch's name lives on in the searcher's state of running studies: never rename it.
- ASHA's ``max_t`` is derived, never written: the largest reachable ``distill.max_epochs``
  (``time_attr`` is ``post_switch_epoch``: pretraining epochs do not count). A grace period
  must be below it; ``early_stopping: false`` turns ASHA off (every trial runs to its end).
- ``cpu_fallback: true`` lets a trial Ray gave a GPU train on its CPUs when its process has no
  CUDA (default: it fails in one line); ``resources.teacher_cpus`` sizes a CPU teacher's task.

``load_space(file, ["distill.max_epochs=100"])`` reads the file as if it said those values (the
CLI's ``--set KEY=VALUE``, :mod:`rbm_tune.overrides`); they are part of the space's digest.

:func:`load_space` validates the whole file before anything runs: syntax, unknown keys, types,
ranges, bounds, the study block, and every reachable corner of the space (all parameters low,
all high, each parameter's every extreme or choice with the others low and then high) is built
into a :class:`~rbm_tune.config.TrialConfig` through ``optuna.trial.FixedTrial``. Every error is
a one-line :class:`~rbm_tune.errors.SpaceError`: ``<file>: <key>: <what is wrong>; <fix>``.

Modules: :mod:`~rbm_tune.space.parser` (the file's keys, values and distributions),
:mod:`~rbm_tune.space.params` (``Param``, ``Bound``), :mod:`~rbm_tune.space.conditions`
(``when:``), :mod:`~rbm_tune.space.corners` (the
reachability checks), :mod:`~rbm_tune.space.study` (the ``study:`` block),
:mod:`~rbm_tune.space.searchspace` and :mod:`~rbm_tune.space.load`. This package imports
neither torch nor Ray; Optuna only when a file is validated.
"""

from __future__ import annotations

from rbm_tune.space.load import SHIPPED_DIR, load_space, shipped_spaces
from rbm_tune.space.params import Bound, Param
from rbm_tune.space.searchspace import SearchSpace
from rbm_tune.space.study import COST_METRICS, SEARCH_METRICS, StudySettings

__all__ = [
    "COST_METRICS",
    "SEARCH_METRICS",
    "SHIPPED_DIR",
    "Bound",
    "Param",
    "SearchSpace",
    "StudySettings",
    "load_space",
    "shipped_spaces",
]
