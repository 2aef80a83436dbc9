"""The ``study:`` block of a space file: :class:`StudySettings`, its keys and its checks.

The field defaults of :class:`StudySettings` are the only place a study default is written:
the keys a space file may set (:data:`STUDY_KEYS`) and the values it gets when it leaves one
out both come from :func:`dataclasses.fields`. Four defaults depend on the rest of the file and
are filled in by :func:`study_settings`: ``name`` (the file's stem), ``sampler_seed`` (the
study's ``seed``), ``metric`` (the first objective's, if objectives are given) and ``mode`` (the
metric's direction).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from rbm_tune.errors import ConfigError, SpaceError
from rbm_tune.metrics import COST_METRICS, SEARCH_METRICS  # imports no torch
from rbm_tune.space.values import is_int, is_num, one_line

__all__ = [
    "COST_METRICS",
    "SEARCH_METRICS",
    "STUDY_KEYS",
    "STUDY_NAME",
    "StudySettings",
    "study_settings",
]

# What may name a study: it becomes a folder and an MLflow experiment (no '/', no leading '.').
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

_BLOCK = "block"  # field metadata: the sub-mapping of ``study:`` the key is written in
_DERIVED = "derived"  # field metadata: computed from the file, never written in it


@dataclass(frozen=True)
class StudySettings:
    """The ``study:`` block, flattened (``asha.grace_period`` -> ``grace_period``).

    ``asha_max_t`` is derived: the longest reachable trial in ASHA's time, the epochs after the
    pretraining switch (``post_switch_epoch``), i.e. the largest reachable
    ``distill.max_epochs``: a rung past it would never be met.
    """

    name: str  # left out of the file: the file's stem (MLflow experiment, Ray folder)
    num_trials: int = 8
    seed: int = 0  # data split / teacher / student seed of every trial
    # students per trial, seeded seed, seed+1, ... and trained in lockstep over one shared
    # split and teacher (rbm_tune.study.seeds); the trial reports their mean
    seeds_per_trial: int = 1
    sampler_seed: int = 0  # the TPE seed; left out of the file: ``seed``
    metric: str = "val_acc"  # left out of the file: the first objective's metric, if any
    mode: str = "max"  # left out of the file: the metric's direction (SEARCH_METRICS)
    max_concurrent: int | None = None  # None: as many trials at once as resources allow
    max_failures: int = 2  # a trial that raises or dies is retried this many times
    # a trial reports to Ray Tune at most this often, and at every ASHA rung; MLflow still gets
    # every epoch (0: every epoch)
    report_every_s: float = 1.0
    objectives: tuple[tuple[str, str], ...] = ()  # () or ((metric, mode), (cost, "min"))
    plots: bool = True  # Optuna's plots of the trials at the end
    # false: no ASHA, every trial runs to its end (the FIFO baseline of benchmarks/)
    early_stopping: bool = True
    # a trial (or teacher task) Ray gave a GPU whose process finds no CUDA: false fails it in one
    # line (not retried); true trains it on its CPUs with a warning
    cpu_fallback: bool = False
    grace_period: int = field(default=10, metadata={_BLOCK: "asha"})
    reduction_factor: float = field(default=2, metadata={_BLOCK: "asha"})
    asha_max_t: int = field(default=1, metadata={_DERIVED: True})
    cpus_per_trial: float = field(default=1, metadata={_BLOCK: "resources"})
    gpus_per_trial: float = field(default=0, metadata={_BLOCK: "resources"})  # 0.25: 4 a GPU
    # bytes a CPU trial may use (0: the host's memory / the trials that run at once on it);
    # a trial whose estimate (rbm_tune.memory) exceeds its share is not trained. Written in the
    # file as a size, e.g. 8GiB.
    memory_per_trial: int = field(default=0, metadata={_BLOCK: "resources"})
    # CPUs of a teacher trained on CPUs by its Ray task (0: all of the largest node's)
    teacher_cpus: float = field(default=0, metadata={_BLOCK: "resources"})

    def __post_init__(self) -> None:
        metric, gpus, grace = self.metric, self.gpus_per_trial, self.grace_period
        factor = self.reduction_factor
        direction = SEARCH_METRICS.get(metric) if isinstance(metric, str) else None
        positive = "is not an integer >= 1; use a positive integer"
        checks = [
            ("name", isinstance(self.name, str) and STUDY_NAME.fullmatch(self.name),
             "cannot name an MLflow experiment; use letters, digits, '.', '_' and '-'"),
            ("num_trials", is_int(self.num_trials) and self.num_trials >= 1, positive),
            ("seed", is_int(self.seed) and self.seed >= 0, "is not an integer >= 0; use e.g. 0"),
            ("seeds_per_trial", is_int(self.seeds_per_trial) and self.seeds_per_trial >= 1,
             "is not an integer >= 1; use e.g. 3 (1: one student per trial)"),
            ("sampler_seed", is_int(self.sampler_seed) and self.sampler_seed >= 0,
             "is not an integer >= 0; use e.g. 0"),
            ("metric", not (isinstance(metric, str) and metric.startswith("test")),
             "is a test metric, which must never steer the search (method §9); use val_acc"),
            ("metric", direction is not None, f"is unknown; choose one of {list(SEARCH_METRICS)}"),
            ("mode", self.mode == direction, f"does not fit {metric}; use {direction} (or omit)"),
            ("max_concurrent", self.max_concurrent is None
             or (is_int(self.max_concurrent) and self.max_concurrent >= 1),
             "is not null or an integer >= 1; use null to fill the resources"),
            ("max_failures", is_int(self.max_failures) and self.max_failures >= 0,
             "is not an integer >= 0; use e.g. 2 (0: a failed trial is not retried)"),
            ("report_every_s", is_num(self.report_every_s) and self.report_every_s >= 0,
             "is not a number >= 0; use e.g. 1.0 (0: report every epoch)"),
            ("objectives", not self.objectives or (
                len(self.objectives) == 2 and self.objectives[0] == (metric, self.mode)
                and self.objectives[1][0] in COST_METRICS and self.objectives[1][1] == "min"),
             f"must be two: the search metric first ({metric}: {self.mode}), then one of "
             f"{sorted(COST_METRICS)} with min, e.g. {{{metric}: {self.mode}, num_params: min}}"),
            ("plots", isinstance(self.plots, bool),
             "is not true or false; use false to end a study without Optuna's plots"),
            ("early_stopping", isinstance(self.early_stopping, bool),
             "is not true or false; use false to run every trial to its end (no ASHA)"),
            ("cpu_fallback", isinstance(self.cpu_fallback, bool),
             "is not true or false; use true to train on CPUs where a GPU has no CUDA"),
            ("resources.teacher_cpus", is_num(self.teacher_cpus) and self.teacher_cpus >= 0,
             "is not a number >= 0; use e.g. 8 (0: all of the largest node's CPUs)"),
            ("asha.grace_period", is_int(grace) and grace >= 1, positive),
            ("asha.grace_period",
             not is_int(grace) or not self.early_stopping or grace < self.asha_max_t,
             f"is not below the longest trial ({self.asha_max_t} epochs after the pretraining "
             "switch: distill.max_epochs), so ASHA would never stop a trial early; use at most "
             f"{self.asha_max_t - 1}, or early_stopping: false to run every trial to its end"),
            ("asha.reduction_factor", is_num(factor) and factor > 1,
             "is not a number > 1; use e.g. 2"),
            ("resources.cpus_per_trial", is_num(self.cpus_per_trial) and self.cpus_per_trial > 0,
             "is not a number > 0; use e.g. 1"),
            ("resources.gpus_per_trial",
             is_num(gpus) and gpus >= 0 and (gpus <= 1 or gpus == int(gpus)),
             "is not 0, a fraction of one GPU or a whole number; e.g. 0.25 packs 4 on a GPU"),
        ]  # fmt: skip
        for key, ok, message in checks:
            if not ok:
                value = getattr(self, key.rpartition(".")[2])
                raise SpaceError(one_line(f"study.{key}: {value!r} {message}"))

    def replace(self, **changes: Any) -> StudySettings:
        """A validated copy with ``changes`` (e.g. the CLI's ``--trials`` or ``--name``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _study_keys() -> dict[str, tuple[str, ...] | None]:
    """Key -> None, or sub-mapping -> its keys: what the ``study:`` block may hold."""
    keys: dict[str, tuple[str, ...] | None] = {}
    for f in fields(StudySettings):
        block = f.metadata.get(_BLOCK)
        if f.metadata.get(_DERIVED):
            continue
        if block is None:
            keys[f.name] = None
        else:
            keys[block] = (*(keys.get(block) or ()), f.name)
    return keys


_FIELDS = {f.name: f for f in fields(StudySettings)}
# {"name": None, ..., "asha": ("grace_period", "reduction_factor"), "resources": (...)}
STUDY_KEYS = _study_keys()


def _objectives(path: Path, value: Any) -> tuple[tuple[str, str], ...]:
    """``study.objectives`` (a mapping metric -> max/min, in order) as ((metric, mode), ...)."""
    if value is None:
        return ()
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and v in ("max", "min") for k, v in value.items()
    ):
        raise SpaceError(
            one_line(
                f"{path}: study.objectives: {value!r} is not a mapping of metric to max/min; "
                "e.g. objectives: {val_acc: max, num_params: min}"
            )
        )
    return tuple(value.items())


def _memory_per_trial(path: Path, value: Any) -> int:
    from rbm_tune.memory import parse_bytes

    try:
        return parse_bytes(value, "study.resources.memory_per_trial")
    except ConfigError as err:
        raise SpaceError(one_line(f"{path}: {err}")) from None


def study_settings(path: Path, block: Mapping[str, Any], seed: int, longest: int) -> StudySettings:
    """The validated settings of a (key-checked) ``study:`` block.

    Args:
        path: the space file (the default name is its stem; errors name it).
        block: the ``study:`` mapping as written.
        seed: the study's seed (``study.seed`` or the top-level ``seed``).
        longest: the longest reachable trial in epochs (``asha_max_t``).
    Raises:
        SpaceError: one line naming the file and the key.
    """
    given: dict[str, Any] = {}
    for key, sub_keys in STUDY_KEYS.items():
        if sub_keys is None and key in block:
            given[key] = block[key]
        elif sub_keys is not None:
            given.update((k, v) for k, v in (block.get(key) or {}).items() if k in sub_keys)
    given["objectives"] = _objectives(path, given.get("objectives"))
    if given.get("memory_per_trial") is None:
        given.pop("memory_per_trial", None)
    else:
        given["memory_per_trial"] = _memory_per_trial(path, given["memory_per_trial"])
    given.setdefault("name", path.stem)
    given["seed"] = seed
    given.setdefault("sampler_seed", seed)
    if given["objectives"]:
        given.setdefault("metric", given["objectives"][0][0])
    metric = given.get("metric", _FIELDS["metric"].default)
    if "mode" not in given and isinstance(metric, str) and metric in SEARCH_METRICS:
        given["mode"] = SEARCH_METRICS[metric]
    try:
        return StudySettings(**given, asha_max_t=longest)
    except SpaceError as err:
        raise SpaceError(f"{path}: {err}") from None
