"""Warm start vs cold start (issue 24 item 2): does ``--warm-start`` reach a good config sooner?

Three studies of one shipped space (cora by default), same ``seed`` and ``sampler_seed``, each
on a fresh local Ray (127.0.0.1) with its own SQLite MLflow store, the teacher trained once into
the runs' shared cache:

- ``cold-S``: ``--trials-source`` trials (32), the source study;
- ``warm-N``: ``--trials`` trials (16), ``--warm-start`` from ``cold-S`` (its finished trials are
  in the searcher before the first suggestion, its best is the first trial);
- ``cold-N``: ``--trials`` trials, cold.

It prints, per study, the best val_acc (finished trials, as the study's summary picks it), its
test_acc, and the trial (1-based, creation order) at which the study's running best first
reaches ``cold-S``'s best val_acc ("never" if it does not). For ``warm-N`` that counts only its
own trials: the source's points are not trials of it.

    nice -n 19 .venv/bin/python benchmarks/warm_start.py --data-root /work/shared/data \\
        [--space cora] [--trials-source 32] [--trials 16] [--max-epochs N] [--cpus 2] \\
        [--workdir DIR] [--out FILE.md]

A quick check: ``--trials-source 4 --trials 2 --max-epochs 30``. With ``--workdir``, a study
already finished there is read back instead of run again. The issue's size (32 + 16 + 16 cora
trials) with ``--max-epochs 100`` took 31 min on 2 busy CPUs (docs/benchmarks.md); with the
space's own 500 epochs, hours.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

SPACES = Path(__file__).resolve().parents[1] / "rbm_tune" / "search_spaces"


def write_space(
    base: Path,
    out: Path,
    name: str,
    trials: int,
    max_epochs: int | None,
    seeds: int = 1,
    models: tuple[str, ...] = (),
) -> Path:
    """A copy of ``base`` named ``name`` with ``trials`` trials, 1 CPU and no GPU per trial
    (and ``seeds`` students per trial where > 1; ``student.model`` searched among ``models``
    where given, the family's own keys drawn only where they exist)."""
    data = yaml.safe_load(base.read_text())
    if models:
        rest = {k: v for k, v in data.get("student", {}).items() if k != "model"}
        data["student"] = {"model": {"categorical": list(models)}, **rest}
    study = data.setdefault("study", {})
    study.update(name=name, num_trials=trials)
    if seeds > 1:
        study["seeds_per_trial"] = seeds
    study["resources"] = {"cpus_per_trial": 1, "gpus_per_trial": 0}
    if max_epochs is not None:
        data.setdefault("distill", {})["max_epochs"] = max_epochs
        asha = study.get("asha") or {}
        if asha.get("grace_period", 0) >= max_epochs:  # a rung past the last epoch is refused
            study["asha"] = {**asha, "grace_period": max(1, max_epochs // 4)}
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def local_ray_workdir(workdir: str | None, prefix: str) -> Path:
    """A local Ray on loopback (no token, no usage stats, no outside address or tracking URI)
    with its temp dir inside the runs' folder ``workdir`` (default: a new temp dir)."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.pop("RAY_ADDRESS", None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    folder = Path(workdir or tempfile.mkdtemp(prefix=prefix, dir="/tmp")).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray-", dir=str(folder))
    return folder


def trial_index(folder: Path, trial_id: str) -> int:
    """1-based creation index of a trial: Ray names its folder ``_trial_fn_<id>_<n>_...``."""
    for path in folder.glob(f"_trial_fn_{trial_id}_*"):
        found = re.match(rf"_trial_fn_{trial_id}_(\d+)_", path.name)
        if found:
            return int(found.group(1))
    raise SystemExit(f"no trial folder of {trial_id} in {folder}")


def first_reaching(folder: Path, rows: list[dict[str, Any]], target: float) -> int | None:
    """The trial (1-based) at which the running best of finished trials reaches ``target``."""
    done = sorted(
        (trial_index(folder, r["trial_id"]), r["val_acc"]) for r in rows if not r["asha_stopped"]
    )
    return next((i for i, acc in done if acc is not None and acc >= target - 1e-12), None)


def run(
    label: str, space_file: Path, workdir: Path, args: argparse.Namespace, **kw: Any
) -> dict[str, Any]:
    import ray

    from rbm_tune.search_space import load_space
    from rbm_tune.study import run_study

    folder = workdir / "runs" / label
    if (folder / "trials.json").is_file():  # a finished run of this --workdir: reported again
        rows = json.loads((folder / "trials.json").read_text())
        best = next(r for r in rows if not r["asha_stopped"])
        return {"label": label, "folder": folder, "trials": len(rows), "rows": rows,
                "best_val_acc": best["val_acc"], "best_test_acc": best["test_acc"],
                "wall_s": None}  # fmt: skip
    if ray.is_initialized():
        ray.shutdown()
    start = time.time()
    result = run_study(
        load_space(space_file),
        cpus=args.cpus,
        gpus=0,
        data_root=args.data_root,
        cache_dir=workdir / "cache",
        tracking_uri=f"sqlite:///{workdir / f'mlflow-{label}.db'}",
        storage_path=workdir / "runs",
        verbose=0,
        log=lambda line: print(f"[{label}] {line}", flush=True),
        **kw,
    )
    ray.shutdown()
    rows = json.loads((result.storage_path / "trials.json").read_text())
    return {
        "label": label,
        "folder": result.storage_path,
        "trials": len(rows),
        "best_val_acc": result.best_val_acc,
        "best_test_acc": result.best_test_acc,
        "rows": rows,
        "wall_s": time.time() - start,
    }


def report(runs: list[dict[str, Any]], target: float) -> list[str]:
    lines = [
        f"target: the cold source study's best val_acc {target:.4f}",
        "",
        "| study | trials | best val_acc | its test_acc | first trial reaching target | wall s |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        reached = first_reaching(r["folder"], r["rows"], target)
        test = "-" if r["best_test_acc"] is None else f"{r['best_test_acc']:.4f}"
        wall = "-" if r["wall_s"] is None else f"{r['wall_s']:.0f}"
        lines.append(
            f"| {r['label']} | {r['trials']} | {r['best_val_acc']:.4f} | {test} | "
            f"{reached if reached is not None else 'never'} | {wall} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="cora", help="a shipped space's name or a YAML path")
    p.add_argument("--data-root", default=None, help="dataset folder (e.g. /work/shared/data)")
    p.add_argument("--trials-source", type=int, default=32, help="the source study's trials")
    p.add_argument("--trials", type=int, default=16, help="the compared studies' trials")
    p.add_argument("--max-epochs", type=int, default=None, help="override distill.max_epochs")
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--workdir", default=None, help="keep the runs here (default: a temp dir)")
    p.add_argument("--out", default=None, help="also write the table here (markdown)")
    args = p.parse_args(argv)
    base = Path(args.space) if Path(args.space).is_file() else SPACES / f"{args.space}.yaml"
    if not base.is_file():
        p.error(f"no space {args.space!r}")

    workdir = local_ray_workdir(args.workdir, "rbmw-")

    s, n = args.trials_source, args.trials
    source = f"cold-{s}"
    spaces = {
        label: write_space(base, workdir, label, trials, args.max_epochs)
        for label, trials in ((source, s), (f"warm-{n}", n), (f"cold-{n}", n))
    }
    runs = [run(source, spaces[source], workdir, args)]
    runs.append(run(f"warm-{n}", spaces[f"warm-{n}"], workdir, args, warm_start=[source]))
    runs.append(run(f"cold-{n}", spaces[f"cold-{n}"], workdir, args))
    lines = [
        f"# warm start vs cold start: {base.stem}, max_epochs {args.max_epochs or 'as the space'}",
        "",
        *report(runs, runs[0]["best_val_acc"]),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
