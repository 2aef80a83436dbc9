"""Reproduce the reference configurations: teacher, MLP, MoE and RbM over several seeds.

For each dataset and setting, the shipped configs ``<dataset>-<setting>-<teacher>-{mlp,moe,rbm}``
(method §7, Tables A/B/C) are run for every seed; a teacher is trained once per
(teacher config, seed) and shared by the students whose configs ask for the same teacher. A
``plain-mlp`` row trains the MLP config on labels only (``label_weight: 1``), the no-distillation
baseline. Writes a markdown table: mean ± std over seeds of the test accuracy at the best
validation epoch (primary) and of the max-over-epochs oracle (what the reference reports), plus
seconds per trial.

    python benchmarks/reproduce.py --datasets cora citeseer --settings transductive inductive \
        --seeds 5 --data-root ../shared/data --out benchmarks/results/reproduce.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from rbm_tune.commands import resolve_config_path
from rbm_tune.config import TrialConfig, load_config
from rbm_tune.data import load_graph
from rbm_tune.teacher import TeacherOutputs, train_teacher
from rbm_tune.trial import resolve_device, run_trial

STUDENTS = ("mlp", "moe", "rbm")


def _fmt(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values) * 100
    std = statistics.pstdev(values) * 100 if len(values) > 1 else 0.0
    return f"{mean:.2f} ± {std:.2f}"


def run(args: argparse.Namespace, on_progress=None) -> list[dict]:
    device = resolve_device(args.device)
    rows: list[dict] = []
    for dataset in args.datasets:
        for setting in args.settings:
            configs: dict[str, TrialConfig] = {}
            for student in STUDENTS:
                name = f"{dataset}-{setting}-{args.teacher}-{student}"
                configs[student] = load_config(resolve_config_path(name))
            for overrides in args.set or []:
                key, _, value = overrides.partition("=")
                section, _, field = key.partition(".")
                for s, c in configs.items():
                    configs[s] = c.replace(**{section: {field: json.loads(value)}})
            configs["plain-mlp"] = configs["mlp"].replace(distill={"label_weight": 1.0})
            for seed in range(args.seeds):
                graph = load_graph(dataset, root=args.data_root, setting=setting, seed=seed)
                teachers: dict[str, TeacherOutputs] = {}
                for student, cfg in configs.items():
                    cfg = cfg.replace(seed=seed)
                    key = json.dumps(cfg.teacher.to_dict(), sort_keys=True)
                    if key not in teachers:
                        teachers[key] = train_teacher(cfg.teacher, graph, seed=seed, device=device)
                        t = teachers[key]
                        rows.append(
                            dict(
                                dataset=dataset,
                                setting=setting,
                                model=f"teacher-{args.teacher}",
                                seed=seed,
                                test_acc=t.test_acc,
                                oracle=t.test_acc_oracle,
                                seconds=t.seconds,
                                epochs=t.epochs,
                                teacher_key=key,
                            )
                        )
                        print(
                            f"  {dataset}/{setting} seed {seed} teacher: {t.test_acc:.4f}",
                            file=sys.stderr,
                            flush=True,
                        )
                    tick = time.perf_counter()
                    r = run_trial(cfg, graph=graph, teacher=teachers[key], device=device)
                    rows.append(
                        dict(
                            dataset=dataset,
                            setting=setting,
                            model=student,
                            seed=seed,
                            test_acc=r.test_acc,
                            oracle=r.test_acc_oracle,
                            seconds=time.perf_counter() - tick,
                            epochs=r.epochs,
                            teacher_key=key,
                        )
                    )
                    print(
                        f"  {dataset}/{setting} seed {seed} {student}: {r.test_acc:.4f} "
                        f"({r.epochs} epochs, {rows[-1]['seconds']:.1f}s)",
                        file=sys.stderr,
                        flush=True,
                    )
                if on_progress is not None:
                    on_progress(rows)
    return rows


def table(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [
        f"Seeds 0..{args.seeds - 1} (n = seeds finished), {args.teacher.upper()} teacher, "
        f"device {args.device}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads. Accuracy ×100, mean ± "
        "population std over seeds. `test@best-val` = test accuracy at the best validation "
        "epoch (primary); `oracle` = max test accuracy over epochs (the reference's number).",
        "",
        "| dataset | setting | model | n | test@best-val | oracle (max over epochs) | s / trial |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    order = [f"teacher-{args.teacher}", "plain-mlp", "mlp", "moe", "rbm"]
    for dataset in args.datasets:
        for setting in args.settings:
            for model in order:
                sel = [
                    r
                    for r in rows
                    if (r["dataset"], r["setting"], r["model"]) == (dataset, setting, model)
                ]
                if not sel:
                    continue
                secs = statistics.fmean(r["seconds"] for r in sel)
                label = {"mlp": "mlp (distilled)", "plain-mlp": "mlp (labels only)"}.get(
                    model, model
                )
                lines.append(
                    f"| {dataset} | {setting} | {label} | {len(sel)} "
                    f"| {_fmt([r['test_acc'] for r in sel])} "
                    f"| {_fmt([r['oracle'] for r in sel])} | {secs:.1f} |"
                )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["cora", "citeseer"])
    p.add_argument("--settings", nargs="+", default=["transductive", "inductive"])
    p.add_argument("--teacher", default="sage")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--set",
        nargs="*",
        metavar="SECTION.KEY=JSON",
        help="override a key in every config, e.g. distill.mode='\"fast\"'",
    )
    p.add_argument("--out", type=Path, help="write the markdown table (and a .json) here")
    args = p.parse_args(argv)
    start = time.perf_counter()

    def write(rows: list[dict]) -> str:
        text = table(rows, args) + f"\nTotal {time.perf_counter() - start:.0f} s.\n"
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text)
            args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
        return text

    print(write(run(args, on_progress=write)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
