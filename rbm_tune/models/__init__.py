"""Students and teachers, built by exact name from their typed specs (method §2-§3, STYLE R7)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rbm_tune.config import StudentSpec, TeacherSpec
from rbm_tune.errors import ConfigError
from rbm_tune.models.base import Student, StudentOutput, TeacherOutput
from rbm_tune.models.mlp import MLP
from rbm_tune.models.moe import MoE
from rbm_tune.models.rbm import RbM

if TYPE_CHECKING:  # teachers import PyG: a process that only trains a student never does
    from rbm_tune.models.teachers import Teacher

__all__ = [
    "MLP",
    "STUDENTS",
    "TEACHERS",
    "GATTeacher",
    "GCNTeacher",
    "MoE",
    "RbM",
    "SAGETeacher",
    "Student",
    "StudentOutput",
    "TeacherOutput",
    "build_student",
    "build_teacher",
]

STUDENTS: dict[str, type[Student]] = {"mlp": MLP, "moe": MoE, "rbm": RbM}
_TEACHER_CLASSES = {"gcn": "GCNTeacher", "sage": "SAGETeacher", "gat": "GATTeacher"}


def __getattr__(name: str) -> Any:
    """The teachers (and ``TEACHERS``) load PyG, ~2 s: only on first use, so that a Ray trial
    process that only trains a student never imports it."""
    import importlib

    teachers = importlib.import_module("rbm_tune.models.teachers")
    if name == "TEACHERS":
        return {k: getattr(teachers, v) for k, v in _TEACHER_CLASSES.items()}
    if name in _TEACHER_CLASSES.values():
        return getattr(teachers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _lookup(kind: str, name: str, registry: dict[str, type]) -> type:
    try:
        return registry[name]
    except KeyError:
        raise ConfigError(f"unknown {kind} {name!r}; choose one of {sorted(registry)}") from None


def build_student(
    spec: StudentSpec, in_dim: int, out_dim: int, *, feature_encoder: bool = False
) -> Student:
    """Build the student named by ``spec.model`` (in its pretraining phase for moe / rbm).

    Args:
        spec: the student's hyperparameters; each field maps to the constructor keyword of the
            same name (fields a model does not use are ignored).
        in_dim: input feature width d (including PE / extra columns).
        out_dim: number of classes C.
        feature_encoder: also create the ``Linear(h, h)`` feature encoder for similarity
            distillation (method §4.6).

    Returns:
        An untrained :class:`Student`; call ``end_pretraining`` at the switch epoch.

    Raises:
        ConfigError: unknown model name.
    """
    cls = _lookup("student", spec.model, STUDENTS)
    common: dict[str, Any] = dict(
        num_layers=spec.num_layers,
        hidden_dim=spec.hidden_dim,
        dropout=spec.dropout,
        norm_type=spec.norm_type,
        feature_encoder=feature_encoder,
    )
    if cls is MLP:
        return MLP(in_dim, out_dim, **common)
    if cls is MoE:
        return MoE(
            in_dim,
            out_dim,
            **common,
            num_experts=spec.num_experts,
            k=spec.k,
            load_balance_coef=spec.load_balance_coef,
            router=spec.router,
            expert_dropout=spec.expert_dropout,
        )
    return RbM(
        in_dim,
        out_dim,
        **common,
        num_experts=spec.num_experts,
        k=spec.k,
        momentum=spec.momentum,
        vq_coef=spec.vq_coef,
        sim_coef=spec.sim_coef,
        load_balance_coef=spec.load_balance_coef,
        input_attention=spec.input_attention,
        expert_dropout=spec.expert_dropout,
    )


def build_teacher(spec: TeacherSpec, in_dim: int, out_dim: int) -> Teacher:
    """Build the GNN teacher named by ``spec.model`` (method §2.1).

    Args:
        spec: the teacher's architecture (training fields are ignored here).
        in_dim: input feature width d.
        out_dim: number of classes C.

    Returns:
        A module with ``forward(x, edge_index) -> TeacherOutput``.

    Raises:
        ConfigError: unknown model name.
    """
    from rbm_tune.models.teachers import GATTeacher

    cls = _lookup("teacher", spec.model, __getattr__("TEACHERS"))
    kwargs: dict[str, Any] = dict(
        num_layers=spec.num_layers,
        hidden_dim=spec.hidden_dim,
        dropout=spec.dropout,
        norm_type=spec.norm_type,
    )
    if cls is GATTeacher:
        return GATTeacher(in_dim, out_dim, **kwargs, heads=spec.heads)
    return cls(in_dim, out_dim, **kwargs)
