"""What reporting every epoch costs a study: the same study with ``study.report_every_s: 0``
(every epoch a Ray Tune report) and with the default (ASHA's rungs plus at most one report a
second; the held-back epochs still reach MLflow), side by side in one run.

Each report blocks the trial until the driver has taken the result (Ray Tune's function API:
the driver's result handling, the MLflow write included), which can cost more than an epoch
of a small graph (milliseconds on a GPU).
Both settings run the real ``rbm-tune`` CLI on a copy of a shipped space (fresh local Ray on
127.0.0.1 and a fresh SQLite MLflow store per study, the teacher trained once beforehand into a
shared cache), alternating, ``--repeats`` times each. Printed per setting: study wall seconds,
Σ over trials of Ray's ``time_total_s`` (the trial's own wall, set-up to last report), Ray
reports, epochs, and the epochs MLflow holds; then whether both made the same decisions: for
the trials that drew the same config, the same epochs, ASHA stops and val_acc: with trials side
by side this differs even between two runs of one setting (async ASHA's timing), so the check
that fails the script runs each setting once more with one trial at a time, where the sampler's
draws and ASHA's decisions are deterministic and must all agree.

    nice -n 19 .venv/bin/python benchmarks/bench_reporting.py [--space demo] [--trials 16]
        [--cpus 2] [--repeats 2] [--max-epochs N] [--data-root DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

SETTINGS = {"every epoch (report_every_s: 0)": 0.0, "default (report_every_s: 1)": 1.0}


def _space(
    base: str, out: Path, name: str, every: float, args: argparse.Namespace, concurrent: int
) -> Path:
    from rbm_tune.search_space import load_space

    data = yaml.safe_load(load_space(base).path.read_text())
    study = data.setdefault("study", {})
    study.update(name=name, num_trials=args.trials, max_concurrent=concurrent)
    study["report_every_s"] = every
    study["resources"] = {"cpus_per_trial": 1, "gpus_per_trial": 0}
    if args.max_epochs is not None:
        data["distill"]["max_epochs"] = args.max_epochs
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _cli(*argv: str, cwd: Path, cache: Path) -> float:
    env = {**os.environ, "RBM_TUNE_CACHE": str(cache)}
    env.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray on 127.0.0.1 only
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "rbm_tune", *argv], cwd=cwd, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(
            f"rbm-tune {' '.join(argv)} failed:\n{(done.stdout + done.stderr)[-3000:]}"
        )
    return time.perf_counter() - start


def _study(folder: Path, name: str) -> dict[str, Any]:
    """Per trial, from Ray's folder: config, reports, epochs, time_total_s; plus MLflow epochs."""
    from mlflow.tracking import MlflowClient

    trials = {}
    for path in (folder / "rbm-tune-runs" / name).glob("*/result.json"):
        lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        last = lines[-1]
        trials[last["trial_id"]] = {
            "config": json.dumps(last["config"], sort_keys=True),
            "reports": len(lines),
            "epochs": int(last["epoch"]),
            "seconds": float(last["time_total_s"]),
            "val_acc": float(last["val_acc"]),
            "stopped": not last.get("final"),
        }
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs(
        [exp.experiment_id], filter_string="tags.`rbm_tune.role` = 'trial'", max_results=1000
    )
    logged = 0
    for run in runs:
        logged += len(client.get_metric_history(run.info.run_id, "val_acc"))
    return {"trials": trials, "mlflow_epochs": logged}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="demo")
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-reporting-"))
    cache = work / "cache"
    extra = ["--data-root", str(Path(args.data_root).resolve())] if args.data_root else []
    first = _space(args.space, work, "warm", 0.0, args, 1)
    took = _cli("teacher", "--space", str(first), "--quiet", *extra, cwd=work, cache=cache)
    print(f"teacher pre-trained in {took:.1f}s", flush=True)
    rows: dict[str, list[dict[str, Any]]] = {label: [] for label in SETTINGS}
    for rep in range(args.repeats):
        order = list(SETTINGS.items())
        for label, every in order if rep % 2 == 0 else order[::-1]:
            folder = work / f"r{rep}-{every:g}"
            folder.mkdir()
            name = "study"
            space = _space(args.space, folder, name, every, args, args.cpus)
            wall = _cli("--space", str(space), "--cpus", str(args.cpus), *extra,
                        cwd=folder, cache=cache)  # fmt: skip
            run = _study(folder, name)
            run["wall"] = wall
            rows[label].append(run)
            t = run["trials"].values()
            trial_s = sum(x["seconds"] for x in t)
            print(
                f"{label} #{rep + 1}: wall {wall:.1f}s, Σ trial {trial_s:.1f}s, reports "
                f"{sum(x['reports'] for x in t)}, epochs {sum(x['epochs'] for x in t)}",
                flush=True,
            )

    lines = [
        "# bench_reporting: a study reporting every epoch vs at ASHA's rungs and at most 1/s",
        "",
        "command: python benchmarks/bench_reporting.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "",
        f"space `{args.space}`, {args.trials} trials, {args.cpus} at a time (1 CPU each), "
        f"{args.repeats} run(s) per setting, alternating; torch threads per trial 1; "
        f"load average at the end {os.getloadavg()[0]:.2f}",
        "",
        "| setting | study wall s | Σ trial s (Ray time_total_s) | Ray reports | epochs "
        "| epochs in MLflow |",
        "| --- | --- | --- | --- | --- | --- |",
    ]

    def mean(label: str, f: Any) -> float:
        return statistics.fmean(f(r) for r in rows[label])

    stats = {}
    for label in SETTINGS:
        wall = mean(label, lambda r: r["wall"])
        trial_s = mean(label, lambda r: sum(t["seconds"] for t in r["trials"].values()))
        reports = mean(label, lambda r: sum(t["reports"] for t in r["trials"].values()))
        epochs = mean(label, lambda r: sum(t["epochs"] for t in r["trials"].values()))
        logged = mean(label, lambda r: r["mlflow_epochs"])
        stats[label] = (wall, trial_s, reports, epochs)
        lines.append(
            f"| {label} | {wall:.1f} | {trial_s:.1f} | {reports:.0f} | {epochs:.0f} "
            f"| {logged:.0f} |"
        )
    every, default = (stats[label] for label in SETTINGS)
    lines += [
        "",
        f"- study wall: every epoch / default = {every[0] / default[0]:.2f}x; Σ trial seconds: "
        f"{every[1] / default[1]:.2f}x; seconds per epoch: "
        f"{(every[1] / every[3]) / (default[1] / default[3]):.2f}x",
    ]

    def agree(a: dict[str, Any], b: dict[str, Any]) -> tuple[int, int]:
        """Trials of ``a`` whose config ``b`` also drew: (same outcome, other outcome)."""
        by_config = {t["config"]: t for t in b["trials"].values()}
        same = differ = 0
        for t in a["trials"].values():
            u = by_config.get(t["config"])
            if u is not None:
                ok = all(t[k] == u[k] for k in ("epochs", "stopped", "val_acc"))
                same, differ = same + ok, differ + (not ok)
        return same, differ

    first, second = (rows[label] for label in SETTINGS)
    across = [agree(a, b) for a, b in zip(first, second, strict=True)]
    within = [agree(r[0], r[1]) for r in (first, second) if len(r) > 1]
    lines.append(
        "- same config, same outcome (epochs, ASHA stop, val_acc), trials: across the settings "
        + ", ".join(f"{s}/{s + d}" for s, d in across)
        + "; between two runs of one setting "
        + (", ".join(f"{s}/{s + d}" for s, d in within) or "-")
        + " (with trials running side by side, async ASHA compares a trial with those that "
        "reached the rung before it, which depends on timing)"
    )
    # one trial at a time, ASHA sees the same rungs in the same order: decisions must agree
    seq = {}
    for label, every in SETTINGS.items():
        folder = work / f"seq-{every:g}"
        folder.mkdir()
        space = _space(args.space, folder, "study", every, args, 1)
        _cli("--space", str(space), "--cpus", "1", *extra, cwd=folder, cache=cache)
        seq[label] = _study(folder, "study")
    same, differ = agree(*seq.values())
    lines.append(
        f"- one trial at a time (deterministic): {same} of {same + differ} trials drew the same "
        f"config in both settings and {'all' if not differ else 'not all'} ended the same"
        + ("" if same == args.trials else f" (expected all {args.trials} to draw the same)")
    )
    differ += args.trials - same - differ
    text = "\n".join(lines)
    print("\n" + text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if differ == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
