"""What finished studies say about a search space's ranges and defaults (issue 25 item 5).

Reads the ``trials.json`` of one or more study folders (every trial that reported, its sampled
constants and its objective: the best-validation accuracy the searcher saw; an ASHA-stopped
trial's is from before it stopped, and being stopped is itself part of the verdict) and prints,
per searched parameter:

- a number: Spearman's rank correlation with the objective over all reported trials, and the
  range the top quarter of trials drew it from (and, for ``or_zero``, how often zero was drawn
  among all trials and among the top quarter);
- a choice: per choice, how many trials drew it, their mean and best objective.

Test accuracy never enters. Several folders (say the ``search`` and ``family`` studies of
benchmarks/search_quality.py) are pooled; with ``--model rbm`` only trials of that student
family count (a family study's mlp trials have no experts).

    .venv/bin/python benchmarks/space_evidence.py /tmp/sq-cora/runs/cora-search \\
        [/tmp/sq-cora/runs/cora-family --model rbm] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from rbm_tune.metrics import OBJECTIVE  # trials.json's key for the searcher's metric
from rbm_tune.space.params import ZERO_SUFFIX as ZERO  # an ``or_zero`` parameter's switch


def ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties given their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's rho (Pearson's r of the ranks); None where either side is constant."""
    rx, ry = ranks(xs), ranks(ys)
    if len(xs) < 3 or len(set(rx)) < 2 or len(set(ry)) < 2:
        return None
    return statistics.correlation(rx, ry)


def load(folders: list[Path], model: str | None) -> list[dict[str, Any]]:
    """Every reported trial of the folders (pooled), as ``{"sampled": ..., "objective": ...}``;
    with ``model``, only that student family's trials."""
    rows = []
    for folder in folders:
        path = folder / "trials.json" if folder.is_dir() else folder
        for trial in json.loads(path.read_text()):
            if model and trial["config"]["student"]["model"] != model:
                continue
            rows.append({"sampled": trial["sampled"], "objective": float(trial[OBJECTIVE])})
    return rows


def evidence(rows: list[dict[str, Any]], top_share: float = 0.25) -> list[str]:
    """Markdown lines: one table row per searched parameter (see the module's docstring)."""
    best = sorted(rows, key=lambda r: -r["objective"])
    top = best[: max(1, round(top_share * len(best)))]
    names = sorted({k.removesuffix(ZERO) for r in rows for k in r["sampled"]})
    lines = [
        f"{len(rows)} reported trials; top quarter: {len(top)} trials, objective "
        f"{top[-1]['objective']:.4f}..{top[0]['objective']:.4f}",
        "",
        "| parameter | n | Spearman vs objective | top quarter drew | per choice: n, mean, best |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        have = [r for r in rows if name in r["sampled"]]
        values = [r["sampled"][name] for r in have]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            rho = spearman([float(v) for v in values], [r["objective"] for r in have])
            drawn = [r["sampled"][name] for r in top if name in r["sampled"]]
            span = f"{min(drawn):.4g}..{max(drawn):.4g}" if drawn else "-"
            if any(name + ZERO in r["sampled"] for r in have):
                zeros = sum(r["sampled"][name] == 0 for r in have)
                top_zeros = sum(v == 0 for v in drawn)
                span += f"; zero in {top_zeros}/{len(drawn)} (all: {zeros}/{len(have)})"
            cell = "-" if rho is None else f"{rho:+.2f}"
            lines.append(f"| `{name}` | {len(have)} | {cell} | {span} | |")
            continue
        per = []
        for choice in sorted({str(v) for v in values}):
            objs = [r["objective"] for r in have if str(r["sampled"][name]) == choice]
            per.append(f"{choice}: {len(objs)}, {statistics.fmean(objs):.3f}, {max(objs):.3f}")
        lines.append(f"| `{name}` | {len(have)} | | | {'; '.join(per)} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", type=Path, help="study folders (or trials.json files)")
    p.add_argument("--model", default=None, help="only trials of this student.model")
    p.add_argument("--out", default=None, help="also write the table here (markdown)")
    args = p.parse_args(argv)
    rows = load(args.folders, args.model)
    if len(rows) < 4:
        p.error(f"{len(rows)} reported trials: too few to say anything")
    names = [(f if f.is_dir() else f.parent).name for f in args.folders]  # the studies' names
    what = ", ".join(names) + (f" (model {args.model})" if args.model else "")
    text = "\n".join([f"# space evidence: {what}", "", *evidence(rows)]) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
