"""Search quality (issue 25 item 4): which selection rule gives a verdict that holds on new seeds?

Per shipped space (cora by default), on a fixed budget of trial-epochs:

- ``search``: a study of ``--trials`` trials; its verdict is its best trial by one seed's
  validation accuracy (what a study picks today);
- ``mean-val``: the same study, then its ``--select-top`` best configs re-run over
  ``--select-seeds`` new seeds (``rbm-tune evaluate``); the verdict is the config with the best
  *mean validation* accuracy over those seeds (test accuracy never chooses);
- ``seeds2``: a study with ``study.seeds_per_trial: 2`` and half the trials (the same
  trial-epochs); its verdict is its best trial by the two seeds' mean validation accuracy.
  Skipped, with a note, where this rbm-tune has no ``seeds_per_trial``.
- ``family`` (with ``--family``): a study of the same trials with ``student.model`` searched
  among mlp, moe and rbm (the family's own keys drawn only where they exist); its verdict is its
  best trial by one seed's validation accuracy, whichever family that is.

Each verdict is then scored over ``--score-seeds`` seeds that neither the search nor the
selection saw (``rbm-tune evaluate --set seed=<score base>``: new splits where the dataset's
split is seeded, new teachers, new students), beside GLNN (the distilled MLP of the same
teacher, same seeds) and the teacher: mean ± std test accuracy at the best-validation epoch,
the paired difference over seeds and its exact / Monte-Carlo sign-flip p-value
(rbm_tune/verdict.py), and the CPU hours the arm spent choosing (study + selection; wall
seconds x CPUs given to Ray).

    nice -n 19 .venv/bin/python benchmarks/search_quality.py --data-root /work/shared/data \\
        [--spaces cora amazon-photo] [--trials 32] [--max-epochs N] [--select-top 3] \\
        [--select-seeds 3] [--score-seeds 10] [--family] [--arms search family] [--cpus 2] \\
        [--workdir DIR] [--out FILE.md]

A quick check: ``--trials 4 --max-epochs 20 --select-top 2 --select-seeds 2 --score-seeds 3``.
With ``--workdir``, a study or evaluation already finished there is read back, not run again.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from warm_start import local_ray_workdir, write_space  # benchmarks/ (run as a script)

from rbm_tune.config import STUDENTS  # --family: student.model searched among these
from rbm_tune.verdict import GLNN, TEACHER  # the evaluate table's row labels

SPACES = Path(__file__).resolve().parents[1] / "rbm_tune" / "search_spaces"
ARMS = ("search", "mean-val", "seeds2", "family")
SCORE_BASE = 1000  # scoring seeds: SCORE_BASE + 1 .. SCORE_BASE + --score-seeds


def _wall(workdir: Path, key: str, seconds: float | None = None) -> float:
    """A run's wall seconds, kept in ``walls.json`` so a read-back run reports them too."""
    path = workdir / "walls.json"
    walls = json.loads(path.read_text()) if path.is_file() else {}
    if seconds is not None:
        walls[key] = seconds
        path.write_text(json.dumps(walls, indent=1))
    return float(walls.get(key, 0.0))


def study(label: str, space_file: Path, workdir: Path, args: argparse.Namespace) -> float:
    """Run the study ``label`` (or read it back); its wall seconds (0 when read back)."""
    import ray

    from rbm_tune.search_space import load_space
    from rbm_tune.study import run_study

    if (workdir / "runs" / label / "trials.json").is_file():
        return _wall(workdir, label)
    if ray.is_initialized():
        ray.shutdown()
    start = time.time()
    run_study(
        load_space(space_file),
        cpus=args.cpus,
        gpus=0,
        data_root=args.data_root,
        cache_dir=workdir / "cache",
        tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}",
        storage_path=workdir / "runs",
        verbose=0,
        log=lambda line: print(f"[{label}] {line}", flush=True),
    )
    ray.shutdown()
    return _wall(workdir, label, time.time() - start)


def evaluate(
    label: str, workdir: Path, args: argparse.Namespace, top: int, seeds: int, base: int | None
) -> tuple[dict[str, Any], float]:
    """``rbm-tune evaluate`` of study ``label`` (or its file read back): its per-run numbers
    and wall seconds."""
    import ray

    from rbm_tune.evaluate import evaluate_study

    sets = [] if base is None else [f"seed={base}"]
    runs = workdir / "runs"
    pattern = f"evaluate-top{top}-seeds{seeds}{'-set-*' if sets else ''}.json"
    found = sorted((runs / label).glob(pattern))
    if found:
        return json.loads(found[0].read_text()), _wall(workdir, found[0].name)
    if ray.is_initialized():
        ray.shutdown()
    start = time.time()
    evaluate_study(
        label,
        top=top,
        seeds=seeds,
        storage=runs,
        data_root=args.data_root,
        cache_dir=str(workdir / "cache"),
        tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}",
        cpus=args.cpus,
        overrides=sets,
        log=lambda line: print(f"[{label} evaluate] {line}", flush=True),
    )
    ray.shutdown()
    (path,) = sorted((runs / label).glob(pattern))
    return json.loads(path.read_text()), _wall(workdir, path.name, time.time() - start)


def row(evaluation: dict[str, Any], model: str) -> list[dict[str, float]]:
    """The per-seed runs of the row whose model label starts with ``model``."""
    return next(r["runs"] for r in evaluation["rows"] if r["model"].startswith(model))


def rivals(evaluation: dict[str, Any]) -> dict[str, list[dict[str, float]]]:
    """GLNN's and the teacher's per-seed runs in an evaluation, the rivals of its verdict."""
    return {"GLNN": row(evaluation, GLNN), "teacher": row(evaluation, TEACHER)}


def mean_val_choice(selection: dict[str, Any]) -> int:
    """1-based rank (in the search's order) of the config with the best mean validation
    accuracy over the selection seeds; ties go to the search's order. Test never chooses."""
    configs = [r for r in selection["rows"] if r["model"].startswith("#")]
    means = [statistics.fmean(run["val_acc"] for run in r["runs"]) for r in configs]
    return max(range(len(means)), key=lambda i: (means[i], -i)) + 1


def score_line(
    dataset: str, arm: str, runs: list[dict[str, float]], against: dict[str, list], hours: float
) -> str:
    from rbm_tune.verdict import paired_sign_flip_p

    test = [r["test_acc"] for r in runs]
    spread = f"{100 * statistics.fmean(test):.2f} ± {100 * statistics.stdev(test):.2f}"
    cells = [dataset, arm, spread]
    for rival in against.values():
        diffs = [a - b["test_acc"] for a, b in zip(test, rival, strict=True)]
        p = paired_sign_flip_p(diffs)
        cells.append(f"{100 * statistics.fmean(diffs):+.2f} (p={p:.3f})")
    cells.append(f"{hours:.2f}")
    return "| " + " | ".join(cells) + " |"


def seeds2_arm(dataset: str, base: Path, workdir: Path, args: argparse.Namespace) -> list[str]:
    """Arm (c): a ``seeds_per_trial: 2`` study of half the trials, its #1 scored."""
    c = f"{dataset}-seeds2"
    try:
        space_c = write_space(base, workdir, c, max(1, args.trials // 2), args.max_epochs, 2)
        wall_c = study(c, space_c, workdir, args)
    except Exception as err:  # noqa: BLE001 (an rbm-tune without seeds_per_trial refuses it)
        return [f"| {dataset} | seeds_per_trial 2 | skipped: {str(err).splitlines()[0]} |"]
    scores_c, _ = evaluate(c, workdir, args, 1, args.score_seeds, SCORE_BASE)
    arm = "seeds_per_trial 2 (half the trials)"
    hours = wall_c * args.cpus / 3600
    return [score_line(dataset, arm, row(scores_c, "#1 "), rivals(scores_c), hours)]


def one_space(name: str, workdir: Path, args: argparse.Namespace) -> list[str]:
    base = Path(name) if Path(name).is_file() else SPACES / f"{name}.yaml"
    if not base.is_file():
        raise SystemExit(f"no space {name!r}")
    dataset = base.stem
    k, s_sel, s_score = args.select_top, args.select_seeds, args.score_seeds
    lines: list[str] = []
    # (a) and (b): one study, two selection rules
    a = f"{dataset}-search"
    wall_a = study(a, write_space(base, workdir, a, args.trials, args.max_epochs), workdir, args)
    chosen, wall_sel = 1, 0.0
    if "mean-val" in args.arms:
        selection, wall_sel = evaluate(a, workdir, args, k, s_sel, None)
        chosen = mean_val_choice(selection)
    scores, _ = evaluate(a, workdir, args, max(chosen, 1), s_score, SCORE_BASE)
    rivals_a = rivals(scores)
    cpu_h = args.cpus / 3600
    top1 = row(scores, "#1 ")
    lines.append(score_line(dataset, "search (1 seed)", top1, rivals_a, wall_a * cpu_h))
    if "mean-val" in args.arms:
        lines.append(
            score_line(
                dataset,
                f"mean val over {s_sel} seeds (top {k}: picked #{chosen})",
                row(scores, f"#{chosen} "),
                rivals_a,
                (wall_a + wall_sel) * cpu_h,
            )
        )
    # (c): two seeds per trial, half the trials
    if "seeds2" in args.arms:
        lines += seeds2_arm(dataset, base, workdir, args)
    # (d): the student family searched too (mlp / moe / rbm), the same trials; its #1 by val
    if "family" in args.arms:
        d = f"{dataset}-family"
        space_d = write_space(base, workdir, d, args.trials, args.max_epochs, models=STUDENTS)
        wall_d = study(d, space_d, workdir, args)
        scores_d, _ = evaluate(d, workdir, args, 1, s_score, SCORE_BASE)
        picked = next(r for r in scores_d["rows"] if r["model"].startswith("#1 "))
        arm = f"family searched (mlp/moe/rbm): picked {picked['config']}"
        lines.append(score_line(dataset, arm, picked["runs"], rivals(scores_d), wall_d * cpu_h))
    glnn = [r["test_acc"] for r in rivals_a["GLNN"]]
    teacher = [r["test_acc"] for r in rivals_a["teacher"]]
    lines.append(
        f"| {dataset} | GLNN (distilled MLP) / teacher | "
        f"{100 * statistics.fmean(glnn):.2f} ± {100 * statistics.stdev(glnn):.2f} / "
        f"{100 * statistics.fmean(teacher):.2f} ± {100 * statistics.stdev(teacher):.2f} | | | |"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spaces", nargs="+", default=["cora"], help="shipped space names or YAMLs")
    p.add_argument("--data-root", default=None, help="dataset folder (e.g. /work/shared/data)")
    p.add_argument("--trials", type=int, default=32, help="trials of the single-seed study")
    p.add_argument("--max-epochs", type=int, default=None, help="override distill.max_epochs")
    p.add_argument("--select-top", type=int, default=3, help="configs re-run for selection")
    p.add_argument("--select-seeds", type=int, default=3, help="seeds of the selection re-runs")
    p.add_argument("--score-seeds", type=int, default=10, help="seeds scoring each verdict")
    p.add_argument(
        "--family", action="store_true", help="also a study with student.model searched"
    )
    p.add_argument(
        "--arms",
        nargs="+",
        choices=ARMS,
        default=None,
        help="arms to run (the search always runs; default: search mean-val seeds2, and "
        "family with --family)",
    )
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--workdir", default=None, help="keep the runs here (default: a temp dir)")
    p.add_argument("--out", default=None, help="also write the table here (markdown)")
    args = p.parse_args(argv)
    args.arms = set(args.arms or ARMS[:3]) | {"search"} | ({"family"} if args.family else set())
    if args.score_seeds < 2 or args.select_seeds < 1 or args.select_top < 1:
        p.error("--score-seeds >= 2 (a spread), --select-seeds and --select-top >= 1")

    workdir = local_ray_workdir(args.workdir, "rbmq-")

    seeds = f"{SCORE_BASE + 1}..{SCORE_BASE + args.score_seeds}"
    lines = [
        f"# search quality: {args.trials} trials, max_epochs {args.max_epochs or 'as the space'}, "
        f"verdicts scored over seeds {seeds}",
        "",
        "| dataset | selection | verdict test acc | vs GLNN (paired, p) | vs teacher (paired, p) "
        "| CPU h to choose |",
        "|---|---|---|---|---|---|",
    ]
    for name in args.spaces:
        lines += one_space(name, workdir, args)
    lines += [
        "",
        "Test accuracy at each run's best-validation epoch (x100), mean ± std over the scoring "
        "seeds; paired differences in points, two-sided sign-flip p over seeds.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
