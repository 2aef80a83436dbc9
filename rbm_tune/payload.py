"""What a trial receives: only the graph and teacher fields its space can use, as numpy arrays.

A study hands every trial the data through Ray's object store (``tune.with_parameters`` puts
it there once). Torch tensors pickle in-band, so each trial process used to deserialise its
own full copy of the ``Graph`` and the ``TeacherOutputs`` (ogbn-products: 2 GB of edges and
1.25 GB of teacher embedding per trial). A :class:`TrialPayload` instead holds

- only the fields a trial of the space can read (:func:`needed_fields`): features, labels,
  split indices and teacher log-probabilities always; the edges only when KRD
  (``distill.reliable_sampling``) or DeepWalk (``distill.positional_encoding``) can be on, the
  teacher embedding only with ``distill.similarity_distill``, ``krd_delta`` only with KRD;
  never the teacher's weights;
- as numpy arrays, which Ray serialises out of band: ``ray.get`` in a trial maps them
  read-only from the node's shared memory, so every trial on a node reads one copy.

:meth:`TrialPayload.graph` and :meth:`TrialPayload.teacher` rebuild the typed objects around
those arrays with ``torch.from_numpy`` (no copy). The tensors are then views of read-only
shared memory: nothing in a trial may write into them in place (the student's training only
reads them; indexing makes copies). A field left out is an empty 1-D tensor, which every reader
of it rejects loudly (an edge list must be ``(2, E)``, ``krd_delta`` ``(N,)``, and the
embedding is indexed by node), never silently as "no edges".
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rbm_tune.data import Graph
from rbm_tune.teacher import TeacherOutputs

__all__ = ["ALWAYS", "TrialPayload", "can_be_on", "needed_fields"]

GRAPH_ARRAYS = (
    "x",
    "y",
    "edge_index",
    "train_idx",
    "val_idx",
    "test_idx",
    "observed_idx",
    "observed_edge_index",
    "observed_train",
    "observed_val",
)
TEACHER_ARRAYS = ("log_probs", "embedding", "krd_delta")
TEACHER_NUMBERS = ("val_acc", "test_acc", "test_acc_oracle", "best_epoch", "epochs", "seconds")
# what every trial reads: student inputs, labels, the split, the teacher's soft labels
ALWAYS = frozenset(
    {
        "x",
        "y",
        "train_idx",
        "val_idx",
        "test_idx",
        "observed_idx",
        "observed_train",
        "observed_val",
        "log_probs",
    }
)
_NOT_WRITABLE = "The given NumPy array is not writable"


def can_be_on(space: Any, name: str) -> bool:
    """Whether a trial of ``space`` can have the boolean switch ``name`` (a flat name such as
    ``distill.similarity_distill``) on: fixed true, or searched with true among its choices."""
    for param in space.params:
        if param.name == name:
            return param.kind != "categorical" or any(c is True for c in param.choices)
    return bool(space.fixed.get(name, False))


def needed_fields(space: Any, *, inductive: bool) -> frozenset[str]:
    """The ``Graph`` and ``TeacherOutputs`` array fields some trial of ``space`` reads.

    ``observed_edge_index``: KRD samples its pairs over the training graph's edges, DeepWalk
    walks them (``trial.student_features``); ``edge_index``: DeepWalk in the inductive setting
    (held-out nodes get their full-graph neighbours' mean embedding); ``embedding``: the
    similarity loss; ``krd_delta``: KRD's sampling probabilities.
    """
    krd = can_be_on(space, "distill.reliable_sampling")
    pe = can_be_on(space, "distill.positional_encoding")
    fields = set(ALWAYS)
    if krd or pe:
        fields.add("observed_edge_index")
    if pe and inductive:
        fields.add("edge_index")
    if can_be_on(space, "distill.similarity_distill"):
        fields.add("embedding")
    if krd:
        fields.add("krd_delta")
    return frozenset(fields)


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().contiguous().numpy()


def _tensor(a: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy`` without a copy, also of a read-only array (Ray's shared memory)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NOT_WRITABLE, category=UserWarning)
        return torch.from_numpy(a)


@dataclass(frozen=True)
class TrialPayload:
    """The data of a study's trials: plain values and numpy arrays (see the module docstring).

    Attributes:
        graph_info: the ``Graph``'s plain fields (name, setting, seed, num_classes, fingerprint).
        teacher_info: the ``TeacherOutputs``' numbers (accuracies, epochs, seconds).
        arrays: the fields :func:`needed_fields` keeps, by ``Graph``/``TeacherOutputs`` name.
        dtypes: the torch dtype of every array field (kept or not), by name.
    """

    graph_info: dict[str, Any]
    teacher_info: dict[str, Any]
    arrays: dict[str, np.ndarray]
    dtypes: dict[str, torch.dtype]

    @classmethod
    def of(cls, space: Any, graph: Graph, teacher: TeacherOutputs) -> TrialPayload:
        """The payload of ``space``'s trials: what they can read of ``graph`` and ``teacher``."""
        keep = needed_fields(space, inductive=graph.is_inductive)
        sources = {
            **{k: getattr(graph, k) for k in GRAPH_ARRAYS},
            **{k: getattr(teacher, k) for k in TEACHER_ARRAYS},
        }
        return cls(
            graph_info={
                "name": graph.name,
                "setting": graph.setting,
                "seed": graph.seed,
                "num_classes": graph.num_classes,
                "fingerprint": graph.fingerprint,
            },
            teacher_info={k: getattr(teacher, k) for k in TEACHER_NUMBERS},
            arrays={k: _array(t) for k, t in sources.items() if k in keep},
            dtypes={k: t.dtype for k, t in sources.items()},
        )

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())

    def _field(self, name: str) -> torch.Tensor:
        if name in self.arrays:
            return _tensor(self.arrays[name])
        return torch.empty(0, dtype=self.dtypes[name])  # left out: see the module docstring

    def graph(self) -> Graph:
        """The ``Graph``, its tensors sharing the payload's arrays."""
        arrays: dict[str, Any] = {k: self._field(k) for k in GRAPH_ARRAYS}
        return Graph(**self.graph_info, **arrays)

    def teacher(self) -> TeacherOutputs:
        """The ``TeacherOutputs`` (without ``state_dict``), sharing the payload's arrays."""
        arrays: dict[str, Any] = {k: self._field(k) for k in TEACHER_ARRAYS}
        return TeacherOutputs(**arrays, **self.teacher_info, state_dict=None)
