"""The epoch loop on tiny graphs: reports, determinism, selection, every switch, weighting."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from rbm_tune.config import TeacherSpec, TrialConfig
from rbm_tune.data import Graph, load_graph
from rbm_tune.distill import train_student
from rbm_tune.metrics import EPOCH, IS_PRETRAINING, VAL_ACC
from rbm_tune.teacher import TeacherOutputs, train_teacher

TEACHER = {"model": "sage", "num_layers": 2, "hidden_dim": 16, "max_epochs": 40, "patience": 20}


def config(student: dict | None = None, distill: dict | None = None) -> TrialConfig:
    return TrialConfig.from_mapping(
        {
            "dataset": "demo",
            "teacher": TEACHER,
            "student": {
                "model": "rbm",
                "hidden_dim": 16,
                "num_experts": 4,
                "k": 2,
                **(student or {}),
            },
            "distill": {"max_epochs": 8, "pretrain_epochs": 2, "lr": 0.01, **(distill or {})},
        }
    )


@pytest.fixture(scope="module")
def teacher(tiny_graph: Graph) -> TeacherOutputs:
    return train_teacher(TeacherSpec.from_mapping(TEACHER), tiny_graph, seed=0)


def test_teacher_outputs(tiny_graph: Graph, teacher: TeacherOutputs) -> None:
    n, c = tiny_graph.num_nodes, tiny_graph.num_classes
    assert teacher.log_probs.shape == (n, c)
    assert torch.allclose(teacher.log_probs.exp().sum(1), torch.ones(n), atol=1e-5)
    assert teacher.embedding.shape == (n, 16)
    assert teacher.krd_delta.min() >= 0 and teacher.krd_delta.max() <= 1
    assert teacher.val_acc > 1 / c + 0.2  # it learned something
    assert teacher.test_acc <= teacher.test_acc_oracle


@pytest.mark.parametrize("student", ["mlp", "moe", "rbm"])
def test_reports_every_epoch_and_never_test(student: str, tiny_graph: Graph, teacher) -> None:
    seen: list[dict[str, float]] = []
    cfg = config({"model": student})
    result = train_student(cfg, tiny_graph, teacher, report=seen.append)
    pretrain = 0 if student == "mlp" else 2
    assert [m[EPOCH] for m in seen] == list(range(1, 8 + pretrain + 1))
    assert all("test" not in key for m in seen for key in m)
    assert [m[IS_PRETRAINING] for m in seen[:pretrain]] == [1.0] * pretrain
    assert all(m[IS_PRETRAINING] == 0.0 for m in seen[pretrain:])
    # best-val selection only over post-switch epochs
    assert result.best_epoch > pretrain
    assert result.val_acc == max(m[VAL_ACC] for m in seen[pretrain:])
    assert 0 <= result.test_acc <= result.test_acc_oracle <= 1


def test_same_seed_same_metrics(tiny_graph: Graph, teacher) -> None:
    cfg = config({"dropout": 0.3})
    a = train_student(cfg, tiny_graph, teacher)
    b = train_student(cfg, tiny_graph, teacher)
    c = train_student(cfg.replace(seed=1), tiny_graph, teacher)
    assert all(0 < m["epoch_seconds"] < math.inf for m in a.history + b.history)
    strip = lambda h: [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in h]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    assert strip(a.history) != strip(c.history)


# (base, switch): each switch is compared with the same run without it
SWITCHES = [
    ({}, {"reliable_sampling": True, "krd_min_update_epoch": 2}),
    ({}, {"positional_encoding": True, "pe_dim": 8, "pe_walk_length": 10, "pe_num_walks": 2}),
    ({}, {"adv_augment": True, "adv_iters": 2}),
    ({"adv_augment": True, "adv_iters": 2}, {"memory_update": "clean_once"}),
    ({}, {"similarity_distill": True}),
    ({}, {"kd_form": "hinton", "temperature": 2.0}),
    ({}, {"memory_weight_decay": False}),
    ({}, {"batch_size": 16}),
    ({}, {"mode": "fast"}),
    ({"mode": "fast"}, {"adv_augment": True, "adv_iters": 2, "similarity_distill": True}),
    ({"mode": "fast"}, {"reliable_sampling": True, "krd_min_update_epoch": 1}),
]


def _switch_id(base: dict, switch: dict) -> str:
    """``adv_augment=True+adv_iters=2`` (on top of ``mode=fast``: ``...@mode=fast``)."""
    name = "+".join(f"{k}={v}" for k, v in switch.items())
    return name + "".join(f"@{k}={v}" for k, v in base.items())


@pytest.fixture(scope="module")
def teachers(tiny_graph: Graph, tiny_inductive_graph: Graph, teacher) -> dict[str, tuple]:
    """setting -> (graph, its teacher)."""
    spec = TeacherSpec.from_mapping(TEACHER)
    return {
        "transductive": (tiny_graph, teacher),
        "inductive": (tiny_inductive_graph, train_teacher(spec, tiny_inductive_graph, seed=0)),
    }


@pytest.fixture(scope="module")
def trained() -> Callable[..., tuple]:
    """``trained(setting, graph, teacher, distill)`` -> (DistillResult, reports), once each."""
    from rbm_tune.trial import student_features

    done: dict[tuple, tuple] = {}

    def train(setting: str, graph: Graph, teacher: TeacherOutputs, distill: dict) -> tuple:
        key = (setting, repr(sorted(distill.items())))
        if key not in done:
            cfg = config(distill=distill)
            seen: list[dict] = []
            features = student_features(cfg, graph)
            result = train_student(
                cfg, graph, teacher, report=seen.append, features=features, keep_model=True
            )
            done[key] = (result, seen)
        return done[key]

    return train


@pytest.mark.parametrize(
    ("base", "switch"), SWITCHES, ids=[_switch_id(base, switch) for base, switch in SWITCHES]
)
@pytest.mark.parametrize("setting", ["transductive", "inductive"])
def test_every_switch_trains(base: dict, switch: dict, setting: str, teachers, trained) -> None:
    """Each distillation switch trains a student that beats the majority class on validation
    by a margin, and it changes the student: the best-validation weights differ from those of
    the same run without the switch (same seed)."""
    graph, teacher = teachers[setting]
    result, seen = trained(setting, graph, teacher, {**base, **switch})
    without, _ = trained(setting, graph, teacher, base)
    assert len(seen) == result.epochs >= 3
    assert all(math.isfinite(m["train_loss"]) for m in seen)
    majority = torch.bincount(graph.y[graph.val_idx]).max().item() / graph.val_idx.numel()
    assert result.val_acc >= majority + 0.2, (result.val_acc, majority)
    a, b = result.model.state_dict(), without.model.state_dict()
    assert a.keys() != b.keys() or any(
        a[k].shape != b[k].shape or not torch.equal(a[k], b[k]) for k in a
    ), "the switch left every weight as it was without it"


@pytest.mark.parametrize(
    "distill",
    [
        {},
        {"mode": "fast"},
        {"mode": "fast", "reliable_sampling": True, "krd_min_update_epoch": 1},
    ],
)
@pytest.mark.parametrize("setting", ["transductive", "inductive"])
def test_needed_evaluation_selects_the_same_epoch_and_test_accuracy(
    distill: dict, setting: str, tiny_graph, tiny_inductive_graph, teacher
) -> None:
    """``eval_nodes: needed`` forwards fewer nodes but trains and selects exactly as ``all``:
    same per-epoch val accuracy, best epoch and test accuracy; train_acc equal while the train
    set fits the sample; no oracle (NaN)."""
    graph = tiny_graph if setting == "transductive" else tiny_inductive_graph
    tea = (
        teacher
        if setting == "transductive"
        else train_teacher(TeacherSpec.from_mapping(TEACHER), graph, seed=0)
    )
    every = train_student(config({"dropout": 0.3}, {"max_epochs": 12, **distill}), graph, tea)
    needed = train_student(
        config({"dropout": 0.3}, {"max_epochs": 12, "eval_nodes": "needed", **distill}), graph, tea
    )
    strip = lambda h: [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in h]  # noqa: E731
    assert strip(needed.history) == strip(every.history)
    assert (needed.best_epoch, needed.val_acc, needed.test_acc) == (
        every.best_epoch,
        every.val_acc,
        every.test_acc,
    )
    assert math.isnan(needed.test_acc_oracle) and not math.isnan(every.test_acc_oracle)


def test_needed_evaluation_reports_train_accuracy_of_a_fixed_sample(
    tiny_graph: Graph, teacher, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rbm_tune import distill

    monkeypatch.setattr(distill, "TRAIN_ACC_SAMPLE", 7)  # the tiny graph has 15 train nodes
    cfg = config({"dropout": 0.3}, {"eval_nodes": "needed", "max_epochs": 12})
    seen: list[dict] = []
    train_student(cfg, tiny_graph, teacher, report=seen.append)
    assert all(round(m["train_acc"] * 7, 6) == round(m["train_acc"] * 7) for m in seen)
    # some accuracy lies strictly between 0 and 1, where the multiple-of-1/7 check can fail
    assert any(0 < m["train_acc"] < 1 for m in seen), [m["train_acc"] for m in seen]
    again: list[dict] = []
    train_student(cfg, tiny_graph, teacher, report=again.append)
    assert [m["train_acc"] for m in seen] == [m["train_acc"] for m in again]


@pytest.mark.parametrize("student", ["mlp", "moe", "rbm"])
@pytest.mark.parametrize("mode", ["reference", "fast"])
def test_bf16_precision_trains_close_to_float32(student: str, mode: str, tiny_graph, teacher):
    """``precision: bf16`` (autocast) learns like float32 and keeps float32 parameters."""
    base = {"mode": mode, "max_epochs": 20, "lr": 0.02}
    full = train_student(config({"model": student}, base), tiny_graph, teacher, keep_model=True)
    half = train_student(
        config({"model": student}, {**base, "precision": "bf16"}),
        tiny_graph,
        teacher,
        keep_model=True,
    )
    assert half.model is not None
    assert all(p.dtype == torch.float32 for p in half.model.parameters())
    assert all(math.isfinite(m["train_loss"]) for m in half.history)
    assert half.val_acc > 1 / tiny_graph.num_classes + 0.2  # it learned
    assert abs(half.val_acc - full.val_acc) <= 0.15
    losses = lambda r: [m["train_loss"] for m in r.history]  # noqa: E731
    assert losses(half) != losses(full)  # it did run in another precision


def test_compiled_student_trains_like_eager(tiny_graph: Graph, teacher) -> None:
    """``compile: true`` (torch.compile, Inductor on the CPU): same losses as eager without
    dropout, across the pretraining switch (a recompile) and the RbM's grouped dispatch."""
    student = {"model": "rbm", "dropout": 0.0}
    base = {"max_epochs": 4, "pretrain_epochs": 2}
    eager = train_student(config(student, base), tiny_graph, teacher)
    compiled = train_student(config(student, {**base, "compile": True}), tiny_graph, teacher)
    loss = lambda r: [m["train_loss"] for m in r.history]  # noqa: E731
    assert loss(compiled) == pytest.approx(loss(eager), rel=1e-4, abs=1e-5)
    assert compiled.best_epoch == eager.best_epoch and compiled.val_acc == eager.val_acc


def test_patience_counts_epochs_without_improvement(tiny_graph: Graph, teacher) -> None:
    # a huge learning rate makes validation accuracy fall: stop `patience` epochs after the best
    cfg = config(distill={"max_epochs": 200, "patience": 3, "lr": 5.0, "pretrain_epochs": 4})
    result = train_student(cfg, tiny_graph, teacher)
    assert result.epochs < 204
    assert result.epochs - result.best_epoch == 3
    assert result.best_epoch > 4  # selection ignores pretraining epochs


def test_validation_ties_reset_patience(tiny_graph: Graph, teacher) -> None:
    # reference tie rule (method §4.3 step 10): val >= best moves the checkpoint, resets patience
    cfg = config(distill={"max_epochs": 20, "patience": 3, "lr": 1e-12, "pretrain_epochs": 2})
    result = train_student(cfg, tiny_graph, teacher)
    assert result.epochs == 22
    assert result.best_epoch == 22


def test_fast_mode_reproduces_the_reference_weighting(tiny_graph: Graph, teacher) -> None:
    """With equal-sized chunks and no dropout, one fast epoch = one reference epoch."""
    params = {}
    for mode in ("reference", "fast"):
        cfg = config(
            {"model": "mlp", "dropout": 0.0},
            {"mode": mode, "batch_size": 5, "max_epochs": 1, "label_weight": 0.4},
        )
        result = train_student(cfg, tiny_graph, teacher, keep_model=True)
        params[mode] = torch.cat([p.detach().flatten() for p in result.model.parameters()])
    assert tiny_graph.train_idx.numel() % 5 == 0 and tiny_graph.num_nodes % 5 == 0
    assert torch.allclose(params["reference"], params["fast"], atol=1e-6)
    # and the weighting matters: a different chunk size gives a different step
    cfg = config({"model": "mlp", "dropout": 0.0}, {"batch_size": -1, "max_epochs": 1})
    other = train_student(cfg, tiny_graph, teacher, keep_model=True).model
    assert not torch.allclose(
        params["reference"], torch.cat([p.detach().flatten() for p in other.parameters()])
    )


@pytest.mark.integration
def test_demo_trial_rises_well_above_chance() -> None:
    from rbm_tune.commands import resolve_config_path
    from rbm_tune.config import load_config
    from rbm_tune.trial import run_trial

    graph = load_graph("demo")
    cfg = load_config(resolve_config_path("demo-transductive-sage-rbm"))
    cfg = cfg.replace(teacher={"max_epochs": 30}, distill={"max_epochs": 15, "pretrain_epochs": 3})
    seen: list[dict] = []
    result = run_trial(cfg, graph=graph, device="cpu", report=seen.append)
    chance = 1 / graph.num_classes
    assert result.teacher_val_acc > chance + 0.5
    assert result.val_acc > chance + 0.3
    assert seen[-1][VAL_ACC] > seen[0][VAL_ACC]
