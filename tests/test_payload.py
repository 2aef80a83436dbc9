"""What a trial receives (rbm_tune.payload): the fields a space can use, and the same students.

The zero-copy sharing through Ray's object store is in tests/integration/test_payload_ray.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rbm_tune.config import TeacherSpec, TrialConfig
from rbm_tune.data import Graph
from rbm_tune.distill import train_student
from rbm_tune.payload import ALWAYS, TrialPayload, can_be_on, needed_fields
from rbm_tune.search_space import load_space
from rbm_tune.teacher import TeacherOutputs, train_teacher
from rbm_tune.trial import student_features
from tests.support.spaces import TINY_SPACE

EDGES = {"observed_edge_index"}
KRD = {"observed_edge_index", "krd_delta"}


def _cora_with(tmp_path: Path, old: str, new: str) -> object:
    """The shipped cora space with the distill key ``old`` (``key: value``, its base's value)
    written as ``new``."""
    space = load_space("cora")
    key, _, value = old.partition(": ")
    assert str(space.fixed[f"distill.{key}"]).lower() == value, old
    text = space.path.read_text()
    assert f"{key}:" not in text and text.rpartition("\ndistill:\n")[2].startswith("  ")
    path = tmp_path / "cora.yaml"
    path.write_text(text + f"  {new}\n")  # distill: is the last section
    return load_space(path)


def test_shipped_cora_space_gets_no_edges_no_embedding_no_delta() -> None:
    space = load_space("cora")
    assert needed_fields(space, inductive=False) == ALWAYS
    assert needed_fields(space, inductive=True) == ALWAYS


def test_reliable_sampling_fixed_true_gets_edges_and_delta(tmp_path: Path) -> None:
    space = _cora_with(tmp_path, "reliable_sampling: false", "reliable_sampling: true")
    assert can_be_on(space, "distill.reliable_sampling")
    assert needed_fields(space, inductive=False) == ALWAYS | KRD
    assert needed_fields(space, inductive=True) == ALWAYS | KRD  # KRD: training graph only


def test_searched_similarity_distill_gets_the_embedding(tmp_path: Path) -> None:
    space = _cora_with(
        tmp_path,
        "similarity_distill: false",
        "similarity_distill: {categorical: [false, true]}",
    )
    assert "distill.similarity_distill" in space.param_names
    assert not space.default_config().distill.similarity_distill  # off at the default point
    assert needed_fields(space, inductive=False) == ALWAYS | {"embedding"}


def test_searched_switch_that_is_only_ever_false_gets_nothing(tmp_path: Path) -> None:
    space = _cora_with(
        tmp_path, "similarity_distill: false", "similarity_distill: {categorical: [false]}"
    )
    assert "distill.similarity_distill" in space.param_names
    assert needed_fields(space, inductive=False) == ALWAYS


def test_positional_encoding_gets_the_full_edges_only_when_inductive(tmp_path: Path) -> None:
    space = _cora_with(
        tmp_path, "positional_encoding: false", "positional_encoding: {categorical: [false, true]}"
    )
    assert needed_fields(space, inductive=False) == ALWAYS | EDGES
    assert needed_fields(space, inductive=True) == ALWAYS | EDGES | {"edge_index"}


def _space(tmp_path: Path, distill: str) -> object:
    path = tmp_path / "tiny.yaml"
    text = TINY_SPACE.format(
        name="tiny", trials=1, concurrent=1, max_failures=0, plots="false", gpus=0, epochs=5
    )
    path.write_text(text + distill)
    return load_space(path)


TEACHER = {"model": "sage", "num_layers": 2, "hidden_dim": 16, "max_epochs": 30, "patience": 20}


def _teacher(graph: Graph) -> TeacherOutputs:
    return train_teacher(TeacherSpec.from_mapping(TEACHER), graph, seed=0)


def test_left_out_fields_are_not_in_the_payload_and_fail_loudly(
    tmp_path: Path, tiny_graph: Graph
) -> None:
    teacher = _teacher(tiny_graph)
    assert teacher.state_dict is not None
    payload = TrialPayload.of(_space(tmp_path, ""), tiny_graph, teacher)
    assert set(payload.arrays) == ALWAYS
    graph, slim = payload.graph(), payload.teacher()
    assert slim.state_dict is None
    assert graph.edge_index.shape == (0,) and slim.embedding.shape == (0,)
    # the graph's plain fields and the derived sizes a trial reads are kept
    assert (graph.num_nodes, graph.num_features, graph.num_classes, graph.num_observed) == (
        tiny_graph.num_nodes,
        tiny_graph.num_features,
        tiny_graph.num_classes,
        tiny_graph.num_observed,
    )
    assert graph.fingerprint == tiny_graph.fingerprint and graph.name == tiny_graph.name
    assert slim.val_acc == teacher.val_acc and slim.best_epoch == teacher.best_epoch
    # a switch the space cannot turn on fails at once, instead of running on "no edges"
    cfg = TrialConfig.from_mapping({"dataset": "demo", "distill": {"reliable_sampling": True}})
    with pytest.raises(ValueError, match="shape"):
        train_student(cfg, graph, slim)


@pytest.mark.parametrize("setting", ["transductive", "inductive"])
def test_payload_trains_the_same_student_and_nothing_writes_into_it(
    setting: str, tmp_path: Path, tiny_graph: Graph, tiny_inductive_graph: Graph
) -> None:
    """Every switch that reads an optional field on, read-only arrays as Ray maps them: the
    same per-epoch metrics as with the full objects, and the arrays are unchanged after."""
    full = tiny_graph if setting == "transductive" else tiny_inductive_graph
    teacher = _teacher(full)
    space = _space(
        tmp_path,
        "  reliable_sampling: true\n  krd_min_update_epoch: 1\n  positional_encoding: true\n"
        "  pe_dim: 8\n  pe_walk_length: 10\n  pe_num_walks: 2\n  similarity_distill: true\n",
    )
    payload = TrialPayload.of(space, full, teacher)
    expected = ALWAYS | KRD | {"embedding"} | ({"edge_index"} if setting == "inductive" else set())
    assert set(payload.arrays) == expected
    before = {k: a.copy() for k, a in payload.arrays.items()}
    for a in payload.arrays.values():
        a.flags.writeable = False
    graph, slim = payload.graph(), payload.teacher()
    assert graph.x.data_ptr() == payload.arrays["x"].ctypes.data  # no copy
    cfg = space.default_config()

    def run(g: Graph, t: TeacherOutputs, cache: str) -> list[dict[str, float]]:
        features = student_features(cfg, g, tmp_path / cache)  # own DeepWalk cache: computed
        result = train_student(cfg, g, t, features=features)
        return [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in result.history]

    assert run(graph, slim, "slim") == run(full, teacher, "full")
    for name, a in payload.arrays.items():
        assert np.array_equal(a, before[name]), f"{name} was written to"
    assert torch.equal(graph.x, full.x) and torch.equal(slim.log_probs, teacher.log_probs)
