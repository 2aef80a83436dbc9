"""The evaluate table's first line: the winner, its margin, and an exact paired test."""

from __future__ import annotations

import pytest

from rbm_tune.config import TrialConfig
from rbm_tune.evaluate import format_table, glnn, plain_mlp
from rbm_tune.verdict import paired_sign_flip_p, verdict_line


def test_sign_flip_p_is_exact_on_small_samples() -> None:
    # five positive differences: only the all-plus and all-minus patterns are as extreme
    assert paired_sign_flip_p([1.0, 2.0, 0.5, 1.5, 3.0]) == pytest.approx(2 / 32)
    # two pairs can never reach 0.05: the smallest two-sided p is 2/4
    assert paired_sign_flip_p([5.0, 4.0]) == pytest.approx(0.5)
    assert paired_sign_flip_p([1.0, -1.0, 1.0, -1.0]) == 1.0
    assert paired_sign_flip_p([]) == 1.0
    # sums of (3, 1, -1) under the 8 sign patterns: 3 5 1 3 -3 -1 -5 -3; six reach |3|
    assert paired_sign_flip_p([3.0, 1.0, -1.0]) == pytest.approx(6 / 8)
    many = [0.5] * 20  # Monte Carlo above 16 pairs, seeded: reproducible and tiny
    assert paired_sign_flip_p(many) == paired_sign_flip_p(many) < 0.001


def _runs(values: list[float], teacher: float = 0.9) -> list[dict]:
    return [
        {"test_acc": v, "val_acc": v, "test_acc_oracle": v + 0.01, "teacher_test_acc": teacher,
         "teacher_val_acc": teacher, "teacher_test_acc_oracle": teacher}
        for v in values
    ]  # fmt: skip


def test_an_rbm_config_that_wins_is_compared_with_glnn_not_the_weaker_mlp() -> None:
    rows = [
        ("teacher", "sage", _runs([0.8, 0.8, 0.8])),
        ("glnn (distilled mlp)", "mlp 2x64", _runs([0.70, 0.72, 0.71])),
        ("mlp (labels only)", "mlp 2x64", _runs([0.50, 0.52, 0.51])),
        ("#1 trial abc", "rbm 2x64, E=8, k=2", _runs([0.74, 0.75, 0.73])),
    ]
    line = verdict_line(rows)
    assert line.startswith("**Verdict:** #1 trial abc wins at 74.00 test accuracy, +3.00 points")
    assert "over glnn (distilled mlp)" in line and "better on 3/3" in line
    assert "p = 0.25, not significant at 0.05" in line
    assert "teacher (with the graph): 90.00" in line


def test_when_glnn_wins_it_is_compared_with_the_best_searched_config() -> None:
    rows = [
        ("teacher", "sage", _runs([0.8] * 5)),
        ("glnn (distilled mlp)", "mlp", _runs([0.80, 0.81, 0.82, 0.80, 0.81])),
        ("mlp (labels only)", "mlp", _runs([0.6] * 5)),
        ("#1 trial a", "rbm", _runs([0.70, 0.71, 0.70, 0.72, 0.70])),
        ("#2 trial b", "rbm", _runs([0.75, 0.76, 0.75, 0.77, 0.75])),
    ]
    line = verdict_line(rows)
    assert "glnn (distilled mlp) wins" in line and "over #2 trial b" in line
    assert "better on 5/5" in line and "p = 0.0625" in line


def test_the_table_opens_with_the_verdict_and_counts_only_searched_configs() -> None:
    rows = [
        ("teacher", "sage", _runs([0.8, 0.8])),
        ("glnn (distilled mlp)", "mlp 2x64", _runs([0.7, 0.7])),
        ("mlp (labels only)", "mlp 2x64", _runs([0.5, 0.5])),
        ("#1 trial abc", "rbm", _runs([0.75, 0.74])),
    ]
    table = format_table("demo", [1, 2], rows).splitlines()
    assert table[0].startswith("**Verdict:** #1 trial abc wins")
    assert table[2] == "### Study demo: 1 best config(s) over seeds 1, 2"


def test_glnn_is_the_same_mlp_distilled_from_the_same_teacher_without_extras() -> None:
    config = TrialConfig.from_mapping(
        {
            "dataset": "demo",
            "teacher": {"model": "sage"},
            "student": {"model": "rbm", "num_layers": 3, "hidden_dim": 64, "num_experts": 4},
            "distill": {"label_weight": 0.3, "temperature": 0.8, "lr": 0.005,
                        "positional_encoding": True, "pretrain_epochs": 5},
        }
    )  # fmt: skip
    g, m = glnn(config), plain_mlp(config)
    assert g.student.model == m.student.model == "mlp"
    assert (g.student.num_layers, g.student.hidden_dim) == (3, 64)
    assert g.teacher == config.teacher and g.seed == config.seed
    assert (g.distill.label_weight, g.distill.temperature, g.distill.lr) == (0.3, 0.8, 0.005)
    assert not g.distill.positional_encoding and g.distill.pretrain_epochs == 0
    assert m.distill.label_weight == 1.0  # labels only: the teacher's term has weight 0
