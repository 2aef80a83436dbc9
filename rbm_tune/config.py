"""Typed, frozen trial configuration: the one place a YAML/dict config enters the code.

A trial config has three scalars (``dataset``, ``setting``, ``seed``) and three sections
(``teacher``, ``student``, ``distill``). Every key is one hyperparameter with one name, used
unchanged by the YAML configs, the search spaces, the dataclass fields and the MLflow params
(flattened as ``section.key``). Unknown keys are errors. A few keys of the reference
implementation's ``parameters.yaml`` are accepted as aliases (``lambda``, ``tau``,
``adv_weigth``, ``pretrain_epoch``, ``max_epoch``) so its values can be pasted in, and renamed
keys are read under their old names with a one-line deprecation warning (``vq_coeff`` ->
``vq_coef``, ``sim_coeff`` -> ``sim_coef``: studies logged to MLflow before the rename use them).

The allowed values of every choice field (``NORM_TYPES``, ``ROUTERS``, ...) are defined here,
and the models import them.

This module imports neither torch nor Ray.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from rbm_tune import yamlio
from rbm_tune.errors import ConfigError

__all__ = [
    "CONFIG_DIR",
    "DATASETS",
    "EXPERT_DROPOUTS",
    "FAMILY_KEYS",
    "NORM_TYPES",
    "RENAMED",
    "ROUTERS",
    "SECTIONS",
    "SETTINGS",
    "DistillSpec",
    "StudentSpec",
    "TeacherSpec",
    "TrialConfig",
    "find_config",
    "load_config",
    "shipped_configs",
    "warn_renamed",
]

# The shipped trial configs (``rbm-tune configs`` lists them; tools/generate_configs.py writes
# all but the demo ones).
CONFIG_DIR = Path(__file__).resolve().parent / "configs"

DATASETS = (
    "demo",
    "cora",
    "citeseer",
    "pubmed",
    "amazon-computers",
    "amazon-photo",
    "coauthor-cs",
    "coauthor-physics",
    "ogbn-arxiv",
    "ogbn-products",
)
SETTINGS = ("transductive", "inductive")
NORM_TYPES = ("none", "batch", "layer")
TEACHERS = ("gcn", "sage", "gat")
STUDENTS = ("mlp", "moe", "rbm")
PRECISIONS = ("float32", "tf32", "bf16")
ROUTERS = ("reference", "noisy_topk")  # MoE: as wired in the reference (§3.2), or Shazeer's
EXPERT_DROPOUTS = ("per_pair", "shared")  # one mask per (node, expert) as the reference, or node
# The keys only some student models read (flat name -> those models); the others ignore them.
# A space searching student.model draws such a key only for these (rbm_tune.space.conditions).
FAMILY_KEYS = {
    "student.num_experts": ("moe", "rbm"),
    "student.k": ("moe", "rbm"),
    "student.load_balance_coef": ("moe", "rbm"),
    "student.expert_dropout": ("moe", "rbm"),
    "student.router": ("moe",),
    "student.momentum": ("rbm",),
    "student.vq_coef": ("rbm",),
    "student.sim_coef": ("rbm",),
    "student.input_attention": ("rbm",),
    "distill.pretrain_epochs": ("moe", "rbm"),  # the MLP has no pretraining switch
}

# Keys of the reference implementation's parameters.yaml -> our one name (method §7, §11.5).
ALIASES = {
    "lambda": "label_weight",
    "tau": "temperature",
    "adv_weigth": "adv_weight",
    "pretrain_epoch": "pretrain_epochs",
    "max_epoch": "max_epochs",
}
# Our own keys renamed since a release: old name -> new name. Still read, with a warning.
RENAMED = {"vq_coeff": "vq_coef", "sim_coeff": "sim_coef"}


def warn_renamed(where: str, new: str) -> None:
    """One line: ``where`` (``<file>: student.vq_coeff``) uses an old name; ``new`` replaces it."""
    warnings.warn(
        f"{where} is deprecated: renamed {new}; write {new} (read as {new} until then)",
        FutureWarning,
        stacklevel=3,
    )


def _choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {list(choices)}")


def _in_range(name: str, value: float, lo: float, hi: float) -> None:
    if not (lo <= value <= hi) or (isinstance(value, float) and math.isnan(value)):
        raise ConfigError(f"{name}={value!r} must lie in [{lo}, {hi}]")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _coerce(cls: type, name: str, value: Any) -> Any:
    """Coerce a YAML scalar to the field's declared type, or raise a one-line ConfigError."""
    hint = _hints(cls)[name]
    where = f"{cls.__name__.removesuffix('Spec').lower()}.{name}"
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    return value


class _Section:
    """Shared ``from_mapping`` / ``to_dict`` for the frozen spec dataclasses."""

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None, *, source: str = "") -> Any:
        """A validated section; ``source`` (``"<file>: "``) prefixes a deprecation warning."""
        values = dict(values or {})
        section = cls.__name__.removesuffix("Spec").lower()
        for old, new in (*ALIASES.items(), *RENAMED.items()):
            if old in values:
                if new in values:
                    raise ConfigError(
                        f"both {old!r} and its new name {new!r} are set; keep {new!r}"
                    )
                if old in RENAMED:
                    warn_renamed(f"{source}{section}.{old}", new)
                values[new] = values.pop(old)
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown {section} keys {unknown}; allowed: {sorted(names)}")
        coerced = {k: _coerce(cls, k, v) for k, v in values.items()}
        return cls(**coerced)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def replace(self, **changes: Any) -> Any:
        return self.from_mapping({**self.to_dict(), **changes})


@dataclass(frozen=True)
class TeacherSpec(_Section):
    """The GNN teacher (method §2). Trained full-batch with Adam and best-val selection."""

    model: str = "sage"
    num_layers: int = 2
    hidden_dim: int = 256
    dropout: float = 0.5
    norm_type: str = "none"
    heads: int = 4  # GAT only
    lr: float = 0.01
    weight_decay: float = 5e-4
    max_epochs: int = 500
    patience: int = 50

    def __post_init__(self) -> None:
        _choice("teacher.model", self.model, TEACHERS)
        _choice("teacher.norm_type", self.norm_type, NORM_TYPES)
        _in_range("teacher.num_layers", self.num_layers, 1, 16)
        _in_range("teacher.dropout", self.dropout, 0.0, 0.99)
        if self.hidden_dim < 1 or self.heads < 1 or self.max_epochs < 1 or self.patience < 1:
            raise ConfigError("teacher hidden_dim, heads, max_epochs and patience must be >= 1")


@dataclass(frozen=True)
class StudentSpec(_Section):
    """The node-wise student: MLP (§3.1), vanilla MoE (§3.2) or RbM (§3.3)."""

    model: str = "rbm"
    num_layers: int = 2
    hidden_dim: int = 256
    dropout: float = 0.5
    norm_type: str = "none"
    num_experts: int = 4
    k: int = 2
    momentum: float = 0.9  # beta of the memory EMA
    vq_coef: float = 0.05  # commitment loss weight (was vq_coeff)
    sim_coef: float = 0.01  # memory self-similarity loss weight (was sim_coeff)
    load_balance_coef: float = 0.01
    input_attention: bool = False
    router: str = "reference"  # MoE only: one of ROUTERS
    expert_dropout: str = "per_pair"  # RbM/MoE: one of EXPERT_DROPOUTS ("shared" is fast)

    def __post_init__(self) -> None:
        _choice("student.model", self.model, STUDENTS)
        _choice("student.norm_type", self.norm_type, NORM_TYPES)
        _choice("student.router", self.router, ROUTERS)
        _choice("student.expert_dropout", self.expert_dropout, EXPERT_DROPOUTS)
        _in_range("student.num_layers", self.num_layers, 1, 16)
        _in_range("student.dropout", self.dropout, 0.0, 0.99)
        _in_range("student.momentum", self.momentum, 0.0, 1.0)
        if self.hidden_dim < 1:
            raise ConfigError(f"student.hidden_dim={self.hidden_dim} must be >= 1")
        if self.model in ("moe", "rbm"):
            if self.num_experts < 2:
                raise ConfigError(
                    f"student.num_experts={self.num_experts} must be >= 2 for a {self.model} "
                    "student; raise num_experts or use model: mlp"
                )
            if not 1 <= self.k < self.num_experts:
                raise ConfigError(
                    f"student.k={self.k} must satisfy 1 <= k < num_experts={self.num_experts}; "
                    "lower k or raise num_experts"
                )
        for name in ("vq_coef", "sim_coef", "load_balance_coef"):
            if getattr(self, name) < 0:
                raise ConfigError(f"student.{name} must be >= 0")


@dataclass(frozen=True)
class DistillSpec(_Section):
    """How the student is trained (method §4). Defaults are the reference behaviour."""

    lr: float = 0.01
    weight_decay: float = 5e-4
    max_epochs: int = 500  # epochs after pretraining
    pretrain_epochs: int = 0
    patience: int = 50
    label_weight: float = 0.3  # the paper's lambda: CE weight; KD gets 1 - label_weight
    temperature: float = 1.0  # the paper's tau (reference semantics, §4.2)
    kd_form: str = "reference"  # or "hinton" (softened logits, tau^2 factor)
    mode: str = "reference"  # §4.3 chunked accumulation; "fast": one forward per node per epoch
    # "all": every node evaluated each epoch (§4.3 step 8); "needed": val nodes each epoch, test
    # nodes only at a new best val, train accuracy on a fixed sample (see rbm_tune.distill)
    eval_nodes: str = "all"
    # "bf16": student forwards under bfloat16 autocast (CPU with AMX/AVX512-BF16, or a GPU);
    # parameters, optimiser state and losses stay float32. "tf32": float32 tensors, CUDA
    # matmuls on TF32 tensor cores (Ampere and later; the same as float32 on a CPU)
    precision: str = "float32"
    # torch.compile the student's forward (Inductor: a C++ compiler on CPU, Triton on GPU)
    compile: bool = False
    # "auto": on the CPU a layer whose input needs no gradient (the features: the first layer)
    # multiplies only its non-zeros when at most 2 % are (bag-of-words: Cora, CiteSeer,
    # Coauthor); "off": dense GEMMs always
    sparse_features: str = "auto"
    batch_size: int = -1  # -1: one chunk of every row
    # rows per evaluation forward (no gradient); 0: as batch_size, -1: every row at once
    eval_batch_size: int = 0
    memory_update: str = "every_forward"  # or "clean_once": EMA once per clean chunk
    memory_weight_decay: bool = True
    kmeans_restarts: int = 10
    kmeans_max_iter: int = 300
    kmeans_max_rows: int = 0  # 0: all rows; else a seeded subsample of at most this many rows
    # KRD reliable sampling (§4.4)
    reliable_sampling: bool = False
    krd_init_power: float = 1.0
    krd_momentum: float = 0.99
    krd_min_update_epoch: int = 50
    krd_update_rate: int = 1
    krd_bins: int = 50
    # DeepWalk positional encoding (§4.7)
    positional_encoding: bool = False
    pe_walk_length: int = 50
    pe_num_walks: int = 5
    pe_window: int = 5
    pe_epochs: int = 1
    pe_dim: int = 64
    # adversarial feature augmentation (§4.5)
    adv_augment: bool = False
    adv_eps: float = 0.04
    adv_weight: float = 0.05
    adv_iters: int = 5
    # similarity distillation (§4.6)
    similarity_distill: bool = False
    feat_distill_weight: float = 0.1

    def __post_init__(self) -> None:
        _choice("distill.kd_form", self.kd_form, ("reference", "hinton"))
        _choice("distill.mode", self.mode, ("reference", "fast"))
        _choice("distill.eval_nodes", self.eval_nodes, ("all", "needed"))
        _choice("distill.precision", self.precision, PRECISIONS)
        _choice("distill.sparse_features", self.sparse_features, ("auto", "off"))
        _choice("distill.memory_update", self.memory_update, ("every_forward", "clean_once"))
        _in_range("distill.label_weight", self.label_weight, 0.0, 1.0)
        if self.temperature <= 0:
            raise ConfigError(f"distill.temperature={self.temperature} must be > 0")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError("distill.lr must be > 0 and distill.weight_decay >= 0")
        if self.max_epochs < 1 or self.patience < 1 or self.pretrain_epochs < 0:
            raise ConfigError("distill.max_epochs and patience must be >= 1, pretrain_epochs >= 0")
        if self.batch_size == 0 or self.batch_size < -1:
            raise ConfigError(f"distill.batch_size={self.batch_size}: use -1 (full) or >= 1")
        if self.eval_batch_size < -1:
            raise ConfigError(
                f"distill.eval_batch_size={self.eval_batch_size}: use 0 (as batch_size), "
                "-1 (every row) or >= 1"
            )
        if self.kmeans_restarts < 1 or self.kmeans_max_iter < 1 or self.kmeans_max_rows < 0:
            raise ConfigError("distill.kmeans_restarts/max_iter must be >= 1, max_rows >= 0")
        if self.krd_bins < 2 or self.krd_update_rate < 1:
            raise ConfigError("distill.krd_bins must be >= 2 and krd_update_rate >= 1")
        if self.adv_iters < 1 or self.adv_eps < 0:
            raise ConfigError("distill.adv_iters must be >= 1 and adv_eps >= 0")
        if (
            min(
                self.pe_walk_length, self.pe_num_walks, self.pe_window, self.pe_epochs, self.pe_dim
            )
            < 1
        ):
            raise ConfigError("distill.pe_* values must be >= 1")


# The sections of a trial config, by their YAML key.
SECTIONS: dict[str, type[TeacherSpec | StudentSpec | DistillSpec]] = {
    "teacher": TeacherSpec,
    "student": StudentSpec,
    "distill": DistillSpec,
}


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial needs: data, teacher, student, distillation."""

    dataset: str = "demo"
    setting: str = "transductive"
    seed: int = 0
    teacher: TeacherSpec = field(default_factory=TeacherSpec)
    student: StudentSpec = field(default_factory=StudentSpec)
    distill: DistillSpec = field(default_factory=DistillSpec)

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r}; choose one of {list(DATASETS)}")
        _choice("setting", self.setting, SETTINGS)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed={self.seed!r} must be a non-negative integer")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, source: str = "") -> TrialConfig:
        """A validated config; ``source`` (``"<file>: "``) prefixes a deprecation warning."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"a trial config must be a mapping, got {type(values).__name__}")
        allowed = {"dataset", "setting", "seed", "teacher", "student", "distill"}
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise ConfigError(f"unknown top-level keys {unknown}; allowed: {sorted(allowed)}")
        for section in SECTIONS:
            sub = values.get(section)
            if sub is not None and not isinstance(sub, Mapping):
                raise ConfigError(f"{section} must be a mapping of keys to values")
        seed = values.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"seed={seed!r} must be a non-negative integer")
        return cls(
            dataset=str(values.get("dataset", "demo")),
            setting=str(values.get("setting", "transductive")),
            seed=seed,
            teacher=TeacherSpec.from_mapping(values.get("teacher"), source=source),
            student=StudentSpec.from_mapping(values.get("student"), source=source),
            distill=DistillSpec.from_mapping(values.get("distill"), source=source),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "setting": self.setting,
            "seed": self.seed,
            "teacher": self.teacher.to_dict(),
            "student": self.student.to_dict(),
            "distill": self.distill.to_dict(),
        }

    def flat(self) -> dict[str, Any]:
        """``section.key -> value``: the names MLflow params and search spaces use."""
        out: dict[str, Any] = {"dataset": self.dataset, "setting": self.setting, "seed": self.seed}
        for section in ("teacher", "student", "distill"):
            for key, value in getattr(self, section).to_dict().items():
                out[f"{section}.{key}"] = value
        return out

    def replace(self, **changes: Any) -> TrialConfig:
        data = self.to_dict()
        for key, value in changes.items():
            if isinstance(value, Mapping):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return TrialConfig.from_mapping(data)


def shipped_configs() -> list[str]:
    """Names of the shipped trial configs (``cora-transductive-sage-rbm``, ...), sorted."""
    return sorted(path.stem for path in CONFIG_DIR.glob("*.yaml"))


def find_config(value: str | Path, folder: Path | None = None) -> Path | None:
    """A trial config file: ``value`` as a path (relative to ``folder``, by default the working
    directory), else a shipped config's name (with or without ``.yaml``); None if neither."""
    path = Path(value)
    if not path.is_absolute() and folder is not None:
        path = folder / path
    if path.is_file():
        return path
    shipped = CONFIG_DIR / f"{str(value).removesuffix('.yaml')}.yaml"
    return shipped if Path(value).name == str(value) and shipped.is_file() else None


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> TrialConfig:
    """Read a trial config YAML file (the dialect of :mod:`rbm_tune.yamlio`).

    Args:
        path: the file.
        overrides: ``KEY=VALUE`` changes (the CLI's ``--set``, :mod:`rbm_tune.overrides`),
            validated as if the file said them.
    Raises:
        ConfigError: the file is missing, is not YAML, writes a key twice, or holds invalid
            values; one line naming the file (or the ``--set`` that caused it).
    """
    from rbm_tune.overrides import apply, blame, parse_overrides

    path = Path(path)
    changes = parse_overrides(overrides, space=False)
    values, _ = yamlio.read(path, ConfigError, "config")
    if changes:
        values = apply(values, changes, space=False)
    try:
        return TrialConfig.from_mapping(values or {}, source=f"{path}: ")
    except ConfigError as err:
        raise blame(ConfigError(f"{path}: {err}"), changes, str(path)) from None
