"""The end of a study's output: its top trials, the best one, its files, the next commands.

:func:`summary_lines` is what ``rbm-tune --space FILE`` prints once the study's summary is
written (``rbm_tune.study.summary``); the next commands carry the options the study was given
that they need to find it again (:func:`next_commands`).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from rbm_tune.metrics import OBJECTIVE

__all__ = ["NEXT_OPTIONS", "next_commands", "summary_lines"]

# the options each next command takes again (rbm_tune/cli.py), of those a study was given
NEXT_OPTIONS = {
    "best": ("--storage-path",),
    "evaluate": ("--storage-path", "--tracking-uri", "--data-root", "--cache-dir", "--address"),
    "export": ("--storage-path",),
}


def next_commands(name: str, experiment_url: str, options: dict[str, str]) -> list[str]:
    """The commands to run after a study, with the options (``{"--storage-path": DIR}``) the
    study was given that they need to find it again; last, MLflow's UI for a local store."""

    def command(sub: str, *extra: str) -> str:
        given = [f"{o} {shlex.quote(options[o])}" for o in NEXT_OPTIONS[sub] if o in options]
        return " ".join(["rbm-tune", sub, "--name", shlex.quote(name), *extra, *given])

    out = [
        f"{command('best')}  # the best config, as trial YAML",
        f"{command('evaluate')}  # the top configs over new seeds, beside the MLP and teacher",
        f"{command('export', '--out', shlex.quote(f'{name}-student.pt'))}  # TorchScript",
    ]
    if _is_ui_command(experiment_url):
        out.append(experiment_url)
    return out


def summary_lines(result: Any, metric: str, options: dict[str, str]) -> list[str]:
    """The end of a study's output: its top trials, the best one, where its files are, and the
    commands to run next (:func:`next_commands`). ``result``: a ``StudyResult``."""
    folder = Path(result.storage_path)
    lines = [
        "",
        f"study {result.name}: top trials by {metric} (test_acc at the best-val epoch)",
        # each trial's objective: its val_acc at its best-validation epoch (rbm_tune.metrics)
        f"{'trial':<22} {OBJECTIVE:>12} {'test_acc':>9} {'epochs':>6}  stopped_by_asha",
    ]
    for row in result.table[:10]:
        test = "-" if row["test_acc"] is None else f"{row['test_acc']:.4f}"
        lines.append(
            f"{row['trial_id']:<22} {row[OBJECTIVE]:>12.4f} {test:>9} {row['epochs']!s:>6}  "
            f"{'yes' if row['asha_stopped'] else 'no'}"
        )
    if len(result.table) > 10:
        lines.append(f"... {len(result.table) - 10} more in {folder / 'results.csv'}")
    if result.failed:
        lines.append(
            f"{len(result.failed)} trial(s) failed after their retries (study.max_failures): "
            f"{', '.join(result.failed)}; their errors are in {folder}/*/error.txt"
        )
    finished = [r for r in result.table if not r["asha_stopped"]] or result.table
    best = f" (trial {finished[0]['trial_id']})" if finished else ""
    lines.append(f"best config{best}: {folder / 'best_config.yaml'}")
    if (folder / "plots").is_dir():
        lines.append(f"plots: {folder / 'plots'}")
    lines.append(f"Ray results: {folder}")
    if not _is_ui_command(result.experiment_url):
        lines.append(f"MLflow: {result.experiment_url}")
    lines.append("next:")
    lines += [f"  {line}" for line in next_commands(result.name, result.experiment_url, options)]
    return lines


def _is_ui_command(experiment_url: str) -> bool:
    """Whether the study's MLflow "URL" is the UI command for a local store (rbm_tune.tracking
    writes it with ``--host 127.0.0.1``), not an http address."""
    return experiment_url.split()[:2] == ["mlflow", "ui"]
