"""``rbm-tune evaluate``'s table: the verdict line, then one row per model with its test
accuracy at the best-validation epoch (mean ± std over the seeds), and every run's numbers
for the JSON beside it."""

from __future__ import annotations

import statistics
from typing import Any

from rbm_tune.verdict import BASELINES, TEACHER, verdict_line

__all__ = ["describe_config", "format_table", "per_run"]


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.2f} ± {100 * std:.2f}"


_ACCURACIES = ("test_acc", "val_acc", "test_acc_oracle")


def _accuracies(label: str, run: dict[str, Any]) -> dict[str, float]:
    """A run's test / val / oracle accuracy for the table row ``label``: the teacher's row
    reads the run's teacher numbers (``teacher_test_acc``, ...)."""
    prefix = "teacher_" if label == TEACHER else ""
    return {k: float(run[prefix + k]) for k in _ACCURACIES}


def format_table(
    name: str, seeds: list[int], rows: list[tuple[str, str, list[dict[str, Any]]]]
) -> str:
    """Markdown: one row per model; test accuracy at best validation (×100), mean ± std."""
    configs = sum(1 for label, _, _ in rows if label not in (TEACHER, *BASELINES))
    lines = [
        verdict_line(rows),
        "",
        f"### Study {name}: {configs} best config(s) over seeds {', '.join(map(str, seeds))}",
        "",
        "| model | config | n | test acc @ best val | val acc | oracle (max over epochs) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, what, runs in rows:
        accs = [_accuracies(label, r) for r in runs]
        test, val, oracle = ([a[k] for a in accs] for k in _ACCURACIES)
        lines.append(
            f"| {label} | {what} | {len(runs)} | {_mean_std(test)} | {_mean_std(val)} | "
            f"{_mean_std(oracle)} |"
        )
    lines += [
        "",
        "Test accuracy is read at each run's best-validation epoch; the oracle column (max test "
        "accuracy over epochs) is shown for comparison with the paper's code and never used to "
        "choose anything.",
    ]
    return "\n".join(lines)


def per_run(
    name: str, seeds: list[int], rows: list[tuple[str, str, list[dict[str, Any]]]]
) -> dict[str, Any]:
    """The table's numbers before averaging: per model, per seed, test / val / oracle acc."""
    out = [
        {
            "model": label,
            "config": what,
            "runs": [
                {"seed": seed, **_accuracies(label, r)}
                for seed, r in zip(seeds, runs, strict=True)
            ],
        }
        for label, what, runs in rows
    ]
    return {"study": name, "seeds": seeds, "rows": out}


def describe_config(config: Any) -> str:
    s = config.student
    if s.model == "mlp":
        return f"mlp {s.num_layers}x{s.hidden_dim}"
    return f"{s.model} {s.num_layers}x{s.hidden_dim}, E={s.num_experts}, k={s.k}"
