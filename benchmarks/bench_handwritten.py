"""rbm-tune vs the Ray Tune script a user would write today: the same students, side by side.

The brief's claim is "faster per trial" than the hand-written Ray Tune script. This runs, in one
process tree, on one space and the same trial configs:

- ``rbm-tune``: the real CLI on a copy of the space (the shipped defaults, ``mode: reference``,
  less Optuna's end-of-study plots, which the scripts do not make), a fresh teacher cache (the
  study trains its teacher once, as a project's first study does);
- ``rbm-tune fast``: the same space with ``distill.mode: fast`` and ``eval_nodes: needed``, the
  teacher from the cache the first study filled (every later study);
- ``script``: ``benchmarks/handwritten_tune.py`` (read its docstring: a function trainable
  that loads the data and trains the teacher in every trial, as the paper's code does, reports
  every epoch, Ray Tune's defaults, ``MLflowLoggerCallback``), given exactly the configs the
  ``rbm-tune`` study drew;
- ``script, teacher file``: the same script with the teacher trained once beforehand and saved
  with ``torch.save`` (the careful user); that training is timed and added to its study;
- ``script, teacher file, no MLflow``: the same without ``MLflowLoggerCallback``, to tell what
  the callback costs from what Ray Tune's per-epoch reports cost;
- ``script, expert``: teacher file, trial actors reused (``reuse_actors=True``) and MLflow
  written from the trial (Ray's ``setup_mlflow``, one batched ``log_metrics`` per epoch): the
  best a user who knows Ray Tune and MLflow well would write without building rbm-tune.

So that both tools train the same students for the same epochs, the copy of the space turns
off early stopping: ``early_stopping: false`` (no ASHA) and the patience exceeds ``max_epochs``, so
every trial runs its pretraining plus ``--max-epochs``. The sampler is the space's own (TPE,
``sampler_seed``); the script replays the ``rbm-tune`` study's draws with ``tune.grid_search``.
``rbm-tune fast`` draws its own (TPE's later draws
follow the results, which fast mode's random streams change), so it is compared by time per
epoch and per trial, not trial by trial. Each study gets a fresh local Ray on 127.0.0.1 and a
fresh SQLite MLflow store; trials get 1 CPU each, ``--cpus`` at a time.

Printed: study wall (the command, imports included), Σ and mean over trials of the trial's
slot time (its function's start to its last result), Σ of Ray's ``time_total_s`` (the trial
function's own time between reports), Ray reports, epochs, best val_acc and its test_acc,
ratios to ``script``, and whether the same config gave the same student in both tools
(val_acc / test_acc / epochs trial by trial). ``--render WORK`` re-reports a finished run.

    nice -n 5 .venv/bin/python benchmarks/bench_handwritten.py --space cora \\
        --data-root ../shared/data [--trials 16] [--max-epochs 50] [--cpus 2] [--out FILE]
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

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ARMS = (
    "rbm-tune",
    "rbm-tune fast",
    "script",
    "script, teacher file",
    "script, teacher file, no MLflow",
    "script, expert",
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray on 127.0.0.1 only
    return env


def _run(cmd: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return took, done.stdout + done.stderr


def write_space(base: str, out: Path, args: argparse.Namespace, fast: bool) -> Path:
    """A copy of ``base`` with no early stopping: every trial runs pretraining + max_epochs."""
    from rbm_tune.search_space import load_space

    data = yaml.safe_load(load_space(base).path.read_text())
    study = data.setdefault("study", {})
    study.update(name="study", num_trials=args.trials, max_concurrent=args.cpus, plots=False)
    study["resources"] = {"cpus_per_trial": 1, "gpus_per_trial": 0}
    data["distill"]["max_epochs"] = args.max_epochs
    data["distill"]["patience"] = args.max_epochs + 1000
    if fast:
        data["distill"]["mode"] = "fast"
        data["distill"]["eval_nodes"] = "needed"
    path = out / "space.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    study["early_stopping"] = False  # FIFO, as the hand-written script (no ASHA)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def rbm_tune_arm(space: Path, folder: Path, cache: Path, args: argparse.Namespace) -> dict:
    """Run the study; its wall and whether it trained the teacher or read it from the cache."""
    extra = ["--data-root", str(Path(args.data_root).resolve())] if args.data_root else []
    wall, out = _run(
        [sys.executable, "-m", "rbm_tune", "--space", str(space), "--cpus", str(args.cpus),
         "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--storage-path", str(folder / "runs"), "--cache-dir", str(cache), *extra],
        cwd=folder,
    )  # fmt: skip
    teacher = "trained" if "(trained)" in out else "from cache" if "(from cache)" in out else "?"
    finished = json.loads((folder / "runs" / "study" / "trials.json").read_text())
    if len(finished) != args.trials:
        raise SystemExit(f"rbm-tune's study finished {len(finished)} of {args.trials} trials")
    return {"wall": wall, "teacher": teacher}


def script_arm(
    configs: list[dict[str, Any]],
    folder: Path,
    args: argparse.Namespace,
    teacher_file: str,
    *options: str,
) -> dict:
    """Run the hand-written script on ``configs``; its wall. Fails unless every trial ended."""
    path = folder / "configs.json"
    path.write_text(json.dumps(configs))
    wall, out = _run(
        [sys.executable, str(HERE / "handwritten_tune.py"), "--configs", str(path),
         "--data-root", str(Path(args.data_root or ".").resolve()),
         "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--storage-path", str(folder / "runs"), "--cpus", str(args.cpus),
         "--teacher-file", teacher_file, *options],
        cwd=folder,
    )  # fmt: skip
    rows = [json.loads(line) for line in out.splitlines() if line.startswith('{"trial"')]
    bad = [r for r in rows if r["error"]]
    if bad or len(rows) != len(configs):
        raise SystemExit(f"the script's study did not finish every trial: {bad or out[-3000:]}")
    return {"wall": wall, "teacher": "per trial" if not teacher_file else "file"}


def ray_trials(runs: Path) -> dict[str, dict[str, Any]]:
    """Per trial id, from Ray Tune's ``result.json``: its slot time, compute, reports, last result.

    ``start``: the first result's timestamp less its ``time_this_iter_s`` (the trial function's
    start); ``end``: the last result's timestamp (Ray stamps whole seconds: ±1 s per trial);
    ``compute``: Ray's ``time_total_s``, the trial function's own time between its reports.
    """
    out = {}
    for path in runs.glob("*/result.json"):
        lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        if not lines:  # a trial that failed before its first report
            continue
        first, last = lines[0], lines[-1]
        out[last["trial_id"]] = {
            "start": first["timestamp"] - first["time_this_iter_s"],
            "end": float(last["timestamp"]),
            "compute": float(last["time_total_s"]),
            "reports": len(lines),
            "last": last,
        }
    return out


def collect(folder: Path, tool: str) -> list[dict[str, Any]]:
    """The arm's trials in order: config, val_acc, test_acc, epochs + ``ray_trials``' timing."""
    if tool == "rbm-tune":
        ray = ray_trials(folder / "runs" / "study")
        rows = json.loads((folder / "runs" / "study" / "trials.json").read_text())
        trials = [
            {**ray[r["trial_id"]], "config": r["config"], "val_acc": r["val_acc"],
             "test_acc": r["test_acc"], "epochs": int(r["epochs"])}
            for r in sorted(rows, key=lambda r: r["trial_id"])
        ]  # fmt: skip
    else:
        ray = ray_trials(folder / "runs" / "handwritten")
        trials = [
            {**t, "config": t["last"]["config"]["trial"], "val_acc": t["last"]["val_acc"],
             "test_acc": t["last"]["test_acc"], "epochs": int(t["last"]["epoch"])}
            for _, t in sorted(ray.items())
        ]  # fmt: skip
    return trials


def save_teacher(config: dict[str, Any], path: Path, data_root: str | None) -> float:
    """What the careful user runs once: the script's own data and teacher steps
    (``handwritten_tune.graph_and_teacher``), then ``torch.save``. Seconds taken."""
    code = (
        "import json, sys, torch\n"
        "torch.set_num_threads(1)  # as in a Ray trial with 1 CPU: the same teacher\n"
        "sys.path.insert(0, sys.argv[4])\n"
        "from handwritten_tune import graph_and_teacher\n"
        "_, _, teacher = graph_and_teacher(json.loads(sys.argv[1]), sys.argv[3])\n"
        "torch.save(teacher, sys.argv[2])\n"
    )
    root = str(Path(data_root).resolve()) if data_root else ""
    cmd = [sys.executable, "-c", code, json.dumps(config), str(path), root, str(HERE)]
    took, _ = _run(cmd, path.parent)
    return took


def summary(wall: float, trials: list[dict[str, Any]], cpus: int) -> dict[str, float]:
    slots = [t["end"] - t["start"] for t in trials]
    epochs = sum(t["epochs"] for t in trials)
    best = max(trials, key=lambda r: r["val_acc"])
    span = max(t["end"] for t in trials) - min(t["start"] for t in trials)
    return {
        "wall": wall,
        "slot_sum": sum(slots),
        "slot_mean": statistics.fmean(slots),
        "compute_sum": sum(t["compute"] for t in trials),
        "reports": sum(t["reports"] for t in trials),
        "epochs": epochs,
        "per_epoch": sum(slots) / max(epochs, 1),
        # slot time with no trial function running, first trial's start to last trial's end
        "between": cpus * span - sum(slots),
        "best_val": best["val_acc"],
        "best_test": best["test_acc"],
    }


def _drawn(config: dict[str, Any]) -> str:
    """A trial's config less the two keys ``rbm-tune fast`` sets, as a comparable string."""
    distill = {k: v for k, v in config["distill"].items() if k not in ("mode", "eval_nodes")}
    return json.dumps({**config, "distill": distill}, sort_keys=True)


def agreement(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> tuple[int, int, float, float]:
    """Trials of ``a`` with a config ``b`` also ran: (how many, same val/test/epochs, max |Δ|s)."""
    by = {_drawn(r["config"]): r for r in b}
    n = same = 0
    dval = dtest = 0.0
    for r in a:
        u = by.get(_drawn(r["config"]))
        if u is None:
            continue
        n += 1
        dv, dt = abs(r["val_acc"] - u["val_acc"]), abs(r["test_acc"] - u["test_acc"])
        same += dv == 0 and dt == 0 and int(r["epochs"]) == int(u["epochs"])
        dval, dtest = max(dval, dv), max(dtest, dt)
    return n, same, dval, dtest


FOLDERS = {arm: arm.replace(", ", "-").replace(" ", "-") for arm in ARMS}
# the script arms that read the teacher file, in the order they run: the script's options
TEACHER_FILE_ARMS = {
    "script, teacher file": (),
    "script, teacher file, no MLflow": ("--mlflow=off",),
    "script, expert": ("--reuse-actors", "--mlflow=in-trial"),
}


def run_arms(work: Path, args: argparse.Namespace, cmd: str) -> dict[str, Any]:
    """Run the studies into ``work``; their walls (and the teacher file's training)."""
    cache = work / "cache"
    done: dict[str, Any] = {}
    for arm in ARMS:
        (work / FOLDERS[arm]).mkdir()
    f = work / FOLDERS["rbm-tune"]
    done["rbm-tune"] = rbm_tune_arm(write_space(args.space, f, args, False), f, cache, args)
    print(f"rbm-tune: {done['rbm-tune']['wall']:.1f}s", flush=True)
    configs = [t["config"] for t in collect(f, "rbm-tune")]
    done["script"] = script_arm(configs, work / FOLDERS["script"], args, "")
    print(f"script: {done['script']['wall']:.1f}s", flush=True)
    teacher = work / "teacher.pt"
    done["teacher_file_s"] = save_teacher(configs[0], teacher, args.data_root)
    for arm, options in TEACHER_FILE_ARMS.items():
        done[arm] = script_arm(configs, work / FOLDERS[arm], args, str(teacher), *options)
        done[arm]["wall"] += done["teacher_file_s"]
        print(f"{arm}: {done[arm]['wall']:.1f}s", flush=True)
    f = work / FOLDERS["rbm-tune fast"]
    done["rbm-tune fast"] = rbm_tune_arm(write_space(args.space, f, args, True), f, cache, args)
    print(f"rbm-tune fast: {done['rbm-tune fast']['wall']:.1f}s", flush=True)
    done["args"] = vars(args) | {"out": None, "render": None}
    done["load_average"] = os.getloadavg()[0]
    done["cpu_count"] = os.cpu_count()
    done["command"] = cmd
    (work / "walls.json").write_text(json.dumps(done, indent=1))
    return done


def report(work: Path, done: dict[str, Any]) -> str:
    args = argparse.Namespace(**done["args"])
    trials = {
        arm: collect(work / FOLDERS[arm], "rbm-tune" if arm.startswith("rbm") else "script")
        for arm in ARMS
    }
    stats = {arm: summary(done[arm]["wall"], trials[arm], args.cpus) for arm in ARMS}
    base = stats["script"]
    lines = [
        "# bench_handwritten: rbm-tune vs the Ray Tune script a user would write today",
        "",
        f"command: `{done['command']}`",
        "",
        f"space `{args.space}`, {args.trials} trials, each its pretraining + {args.max_epochs} "
        f"epochs (no early stopping), {args.cpus} at a time with 1 CPU each; {done['cpu_count']} "
        f"CPUs, load average at the end {done['load_average']:.2f}. The teacher: rbm-tune "
        f"{done['rbm-tune']['teacher']} in its study; rbm-tune fast "
        f"{done['rbm-tune fast']['teacher']}; script: trained in every trial; script, teacher "
        f"file: trained once beforehand in {done['teacher_file_s']:.1f} s (in the wall of each "
        "study that reads it). rbm-tune's studies run without Optuna's plots (`study.plots: "
        "false`), which the scripts do not make.",
        "",
        "| | study wall s | script / this | Σ trial s | mean trial s | script / this "
        "| Σ compute s | slot s between trials | Ray reports | epochs | trial s per epoch "
        "| best val_acc (its test_acc) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arm in ARMS:
        s = stats[arm]
        lines.append(
            f"| {arm} | {s['wall']:.1f} | {base['wall'] / s['wall']:.2f} | {s['slot_sum']:.1f} "
            f"| {s['slot_mean']:.2f} | {base['slot_mean'] / s['slot_mean']:.2f} "
            f"| {s['compute_sum']:.1f} | {s['between']:.1f} | {s['reports']} | {s['epochs']} "
            f"| {s['per_epoch']:.3f} | {s['best_val']:.4f} ({s['best_test']:.4f}) |"
        )
    lines.append("")
    for arm in ARMS[1:]:
        n, same, dval, dtest = agreement(trials["rbm-tune"], trials[arm])
        lines.append(
            f"- rbm-tune vs {arm}: {n} of {args.trials} configs in both; {same} gave the same "
            f"student (val_acc, test_acc, epochs); max |Δ val_acc| {dval:.4f}, "
            f"|Δ test_acc| {dtest:.4f}"
        )
    lines += [
        "",
        "Study wall: the whole command (imports, Ray start, MLflow store, teacher, trials, "
        "wrap-up). Trial s: a trial's slot time, from its function's start to its last result "
        "(Ray's timestamps, whole seconds); Σ compute s: Ray's time_total_s, the trial "
        "function's own time between its reports (a report that waits on the driver is in the "
        "slot time, not here); the script's trials include loading the data and training the "
        "teacher, rbm-tune's get both from Ray's object store. Slot s between trials: "
        f"{args.cpus} slots × (last trial's end − first trial's start) − Σ trial s (starting "
        "each trial's process, scheduling). Trial s per epoch: Σ trial s / epochs.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="cora")
    p.add_argument("--data-root", default=None)
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--max-epochs", type=int, default=50)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--render", type=Path, default=None, help="re-report a finished work folder")
    args = p.parse_args(argv)
    cmd = "python benchmarks/bench_handwritten.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    if args.render:
        work = args.render
        done = json.loads((work / "walls.json").read_text())
    else:
        work = Path(tempfile.mkdtemp(prefix="bench-handwritten-"))
        done = run_arms(work, args, cmd)
    text = report(work, done)
    out = args.out or RESULTS / f"bench_handwritten-{done['args']['space']}-cpu.md"
    print("\n" + text)
    out.write_text(text + "\n")
    print(f"\nwritten to {out}; work folder {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
