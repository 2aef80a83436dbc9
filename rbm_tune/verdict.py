"""The first line of ``rbm-tune evaluate``'s table: which graph-free student wins, by how much,
and whether the seeds agree (an exact paired sign-flip test; no SciPy).

Rows are ``(label, config, runs)`` with one run per seed, in the same seed order for every row.
The teacher's row (it reads the graph) is reported beside the verdict, never in it. The verdict
compares the best student row with the strongest row of the other kind: an RbM (or MoE) config
against GLNN, the distilled MLP of the same teacher, or GLNN / the labels-only MLP against the
best searched config.
"""

from __future__ import annotations

import itertools
import random
import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["BASELINES", "paired_sign_flip_p", "verdict_line"]

GLNN = "glnn (distilled mlp)"
PLAIN_MLP = "mlp (labels only)"
TEACHER = "teacher"
BASELINES = (GLNN, PLAIN_MLP)
_EXACT_UP_TO = 16  # 2**16 sign patterns; above that a seeded Monte Carlo estimate


def paired_sign_flip_p(diffs: Sequence[float], samples: int = 20_000) -> float:
    """Two-sided p-value of "the mean paired difference is 0": the share of sign patterns
    whose mean is at least as far from 0 as the observed one (exact up to 16 pairs)."""
    n = len(diffs)
    if n == 0:
        return 1.0
    observed = abs(sum(diffs)) - 1e-12
    if n <= _EXACT_UP_TO:
        patterns: Any = itertools.product((1, -1), repeat=n)
        total = 2**n
    else:
        rng = random.Random(0)
        patterns = ([rng.choice((1, -1)) for _ in range(n)] for _ in range(samples))
        total = samples
    extreme = sum(
        1 for signs in patterns if abs(sum(s * d for s, d in zip(signs, diffs))) >= observed
    )
    return extreme / total


def _test_accs(label: str, runs: list[dict[str, Any]]) -> list[float]:
    key = "teacher_test_acc" if label == TEACHER else "test_acc"
    return [100 * float(r[key]) for r in runs]


def verdict_line(rows: Sequence[tuple[str, str, list[dict[str, Any]]]]) -> str:
    """One markdown line: the winning student row, its margin over the strongest other kind,
    the paired test over seeds, and the teacher for reference."""
    accs = {label: _test_accs(label, runs) for label, _, runs in rows}
    students = [label for label in accs if label != TEACHER]
    if not students:
        return "**Verdict:** no student row to compare."
    mean = {label: statistics.fmean(v) for label, v in accs.items() if v}
    best = max(students, key=lambda label: mean[label])
    if best in BASELINES:
        others = [label for label in students if label not in BASELINES]
    else:
        others = [label for label in students if label in BASELINES]
        others = [GLNN] if GLNN in others else others
    teacher = f"; the teacher (with the graph): {mean[TEACHER]:.2f}" if TEACHER in mean else ""
    if not others:
        return f"**Verdict:** {best} at {mean[best]:.2f} test accuracy{teacher}."
    rival = max(others, key=lambda label: mean[label])
    diffs = [a - b for a, b in zip(accs[best], accs[rival], strict=True)]
    wins = sum(d > 0 for d in diffs)
    p = paired_sign_flip_p(diffs)
    margin = statistics.fmean(diffs)
    return (
        f"**Verdict:** {best} wins at {mean[best]:.2f} test accuracy, {margin:+.2f} points over "
        f"{rival} (paired over {len(diffs)} seeds: better on {wins}/{len(diffs)}, sign-flip "
        f"p = {p:.3g}{', not significant at 0.05' if p >= 0.05 else ''}){teacher}."
    )
