"""study.seeds_per_trial: the seed rule, its validation and the lockstep students
(rbm_tune.multi_seed) against single-seed runs on a tiny graph."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from rbm_tune.config import TeacherSpec, TrialConfig
from rbm_tune.data import Graph
from rbm_tune.distill import train_student
from rbm_tune.errors import SpaceError
from rbm_tune.metrics import EPOCH, TEST_ACC_STD, VAL_ACC, VAL_ACC_STD
from rbm_tune.multi_seed import final_metrics, spread, student_seeds, train_students
from rbm_tune.space.study import study_settings
from rbm_tune.teacher import TeacherOutputs, train_teacher

TEACHER = {"model": "sage", "num_layers": 2, "hidden_dim": 16, "max_epochs": 30, "patience": 20}


def config(**distill: object) -> TrialConfig:
    return TrialConfig.from_mapping(
        {
            "dataset": "demo",
            "seed": 3,
            "teacher": TEACHER,
            "student": {"model": "rbm", "hidden_dim": 16, "num_experts": 4, "k": 2},
            "distill": {"max_epochs": 6, "pretrain_epochs": 2, "lr": 0.01, **distill},
        }
    )


@pytest.fixture(scope="module")
def teacher(tiny_graph: Graph) -> TeacherOutputs:
    return train_teacher(TeacherSpec.from_mapping(TEACHER), tiny_graph, seed=3)


def _strip(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in history]


def test_seed_rule_keeps_one_seed_as_before() -> None:
    assert student_seeds(7, 1) == [7]
    assert student_seeds(7, 3) == [7, 8, 9]
    with pytest.raises(ValueError):
        student_seeds(0, 0)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_seeds_per_trial_validated_in_one_line(bad: object) -> None:
    with pytest.raises(SpaceError) as err:
        study_settings(Path("s.yaml"), {"seeds_per_trial": bad}, 0, 20)
    text = str(err.value)
    assert "study.seeds_per_trial" in text and "integer >= 1" in text and "\n" not in text


def test_seeds_per_trial_default_and_given() -> None:
    assert study_settings(Path("s.yaml"), {}, 0, 20).seeds_per_trial == 1
    assert study_settings(Path("s.yaml"), {"seeds_per_trial": 3}, 0, 20).seeds_per_trial == 3


def test_lockstep_students_are_the_single_seed_runs(tiny_graph: Graph, teacher) -> None:
    """Each lockstep student trains exactly as train_student alone with its seed (own random
    state), every report is the mean over the students, and the selection is the mean curve's."""
    cfg = config(patience=100)
    seen: list[dict[str, float]] = []
    got = train_students(cfg, tiny_graph, teacher, seeds=2, report=seen.append, keep_model=True)
    alone = [train_student(cfg.replace(seed=s), tiny_graph, teacher) for s in (3, 4)]
    assert got.seeds == [3, 4]
    assert [m[EPOCH] for m in seen] == [m[EPOCH] for m in alone[0].history]
    assert all("test" not in k for m in seen for k in m)
    for epoch, m in enumerate(seen):
        vals = [a.history[epoch][VAL_ACC] for a in alone]
        assert m[VAL_ACC] == pytest.approx(statistics.fmean(vals))
        assert m[VAL_ACC_STD] == pytest.approx(spread(vals))
    post = [m for m in seen if not m["is_pretraining"]]
    best = max(post, key=lambda m: (m[VAL_ACC], m[EPOCH]))  # ties: the later epoch
    assert got.best_epoch == best[EPOCH] and got.val_acc == pytest.approx(best[VAL_ACC])
    assert len(got.models) == 2 and got.model is got.models[0]
    assert final_metrics(got)[TEST_ACC_STD] == pytest.approx(spread(got.test_accs))
    # the first student is the one-seed trial's student: the same curve
    assert got.val_accs[0] == pytest.approx(alone[0].history[got.best_epoch - 1][VAL_ACC])


def test_test_accuracy_never_picks_the_epoch(tiny_graph: Graph, teacher) -> None:
    """The best epoch depends on validation only: the mean test accuracy reported is at the
    best mean-val epoch, which may be below the best mean test over epochs (the oracle)."""
    got = train_students(config(eval_nodes="all"), tiny_graph, teacher, seeds=2)
    assert got.test_acc == pytest.approx(statistics.fmean(got.test_accs))
    assert got.test_acc <= got.test_acc_oracle + 1e-12


def test_memory_counts_each_students_parameters_and_adam() -> None:
    """Lockstep: n x parameters + Adam resident, data and teacher once, one student's peak."""
    from rbm_tune.memory import GraphSizes, student_estimate

    sizes = GraphSizes.for_dataset("cora")
    one, three = (student_estimate(config(), sizes, "cpu", n) for n in (1, 3))
    per_student = one.resident["parameters + Adam"]
    assert three.resident["parameters + Adam"] == 3 * per_student
    assert three.total - one.total == 2 * per_student
    assert three.phases == one.phases and three.resident["features"] == one.resident["features"]


def test_lockstep_with_krd_and_similarity_matches_alone(tiny_graph: Graph, teacher) -> None:
    """The shared teacher tensors (KRD's delta, the embedding) serve every student."""
    cfg = config(reliable_sampling=True, similarity_distill=True, krd_min_update_epoch=1)
    got = train_students(cfg, tiny_graph, teacher, seeds=2)
    alone = [train_student(cfg.replace(seed=s), tiny_graph, teacher) for s in (3, 4)]
    for epoch, m in enumerate(got.history):
        vals = [a.history[epoch][VAL_ACC] for a in alone]
        assert m[VAL_ACC] == pytest.approx(statistics.fmean(vals))
