"""What a study's MLflow parent run says about it: settings as params, the best trial as tags,
and a markdown description (MLflow's ``mlflow.note.content`` tag, shown on the run's page).

Pure functions of the space and the summary's rows; :mod:`rbm_tune.study.run` logs
:func:`study_params` when the study starts, :mod:`rbm_tune.study.summary` sets
:func:`best_tags` when it ends. Imports nothing heavy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rbm_tune.metrics import OBJECTIVE, TEST_ACC

__all__ = ["NOTE_TAG", "best_tags", "describe", "study_params"]

NOTE_TAG = "mlflow.note.content"  # the run's description in MLflow's UI


def study_params(space: Any, *, name: str, trials: int) -> dict[str, Any]:
    """The parent run's params: the data, the budget, the searcher and scheduler settings,
    each trial's resources (MLflow params are write-once: a resumed study keeps the first)."""
    study = space.study
    fixed = space.fixed
    params: dict[str, Any] = {
        "dataset": fixed.get("dataset"),
        "setting": fixed.get("setting"),
        "seed": study.seed,
        "study.name": name,
        "study.space": Path(space.path).name,
        "study.num_trials": trials,
        "study.searcher": "optuna-tpe",
        "study.sampler_seed": study.sampler_seed,
        "study.metric": study.metric,
        "study.mode": study.mode,
        "study.objective": OBJECTIVE,
        "study.scheduler": "asha" if study.early_stopping else "fifo",
        "study.max_concurrent": study.max_concurrent,
        "study.max_failures": study.max_failures,
        "study.cpus_per_trial": study.cpus_per_trial,
        "study.gpus_per_trial": study.gpus_per_trial,
        "study.memory_per_trial": study.memory_per_trial,
        "study.searched": ", ".join(p.name for p in space.params) or "-",
    }
    if study.early_stopping:
        params.update(
            {
                "study.asha.grace_period": study.grace_period,
                "study.asha.reduction_factor": study.reduction_factor,
                "study.asha.max_t": study.asha_max_t,
            }
        )
    if getattr(study, "seeds_per_trial", 1) > 1:  # only then: the params of older studies stay
        params["study.seeds_per_trial"] = study.seeds_per_trial
    if study.objectives:
        params["study.objectives"] = ", ".join(f"{m}:{d}" for m, d in study.objectives)
    return params


def _range(p: Any) -> str:
    when = getattr(p, "when", ())  # drawn only where it holds ("-" in the table otherwise)
    text = _distribution(p)
    return text + "".join(f"; when {name} in {list(allowed)}" for name, allowed in when)


def _distribution(p: Any) -> str:
    if p.kind == "categorical":
        return f"one of {list(p.choices)}"
    assert p.low is not None and p.high is not None
    text = f"{p.kind} [{p.low.text}, {p.high.text}]"
    if p.log:
        text += ", log"
    if p.step:
        text += f", step {p.step:g}"
    return text + (", or 0" if p.or_zero else "")


def describe(
    space: Any,
    *,
    name: str,
    trials: int,
    best: dict[str, Any],
    values: dict[str, Any],
    storage: Path,
) -> str:
    """The parent run's markdown description: what was searched, the best trial, the commands
    that reproduce it. ``values``: the best trial's hyperparameters under the YAML names."""
    study = space.study
    fixed = space.fixed
    searched = "\n".join(
        f"| `{p.name}` | {_range(p)} | {values.get(p.name, '-')} |" for p in space.params
    )
    test = best.get(TEST_ACC)
    scheduler = (
        f"ASHA on `{study.metric}` (grace {study.grace_period}, reduction "
        f"{study.reduction_factor:g}, max_t {study.asha_max_t})"
        if study.early_stopping
        else "no early stopping"
    )
    space_file = Path(space.path)
    conditional = getattr(space, "conditional", False)
    lines = [
        f"**Study `{name}`**: {trials} trials of Optuna TPE ("
        + ("multivariate, grouped: conditional parameters; " if conditional else "")
        + f"seed {study.sampler_seed}) and "
        f"{scheduler} over `{space_file.name}` on `{fixed.get('dataset')}` "
        f"({fixed.get('setting')}), ranked by `{study.metric}` ({study.mode}).",
        "",
        f"**Best trial `{best['trial_id']}`**: `{OBJECTIVE}` **{best[OBJECTIVE]:.4f}** (its "
        "validation accuracy at its best-validation epoch: the objective)"
        + ("" if test is None else f", `test_acc` {test:.4f} at that epoch")
        + ".",
        "",
        "| parameter | searched over | best trial |",
        "| --- | --- | --- |",
        searched or "| (nothing searched) | | |",
        "",
        "Reproduce:",
        "",
        "```bash",
        f"rbm-tune --space {space_file} --name {name} --storage-path {storage}",
        f"rbm-tune best --name {name} --storage-path {storage} > best.yaml",
        "rbm-tune train --config best.yaml",
        f"rbm-tune evaluate --name {name} --storage-path {storage}",
        f"rbm-tune export --name {name} --storage-path {storage} --out student.pt",
        "```",
    ]
    return "\n".join(lines) + "\n"


def best_tags(
    space: Any,
    *,
    name: str,
    trials: int,
    best: dict[str, Any],
    run_id: str | None,
    storage: Path,
) -> dict[str, str]:
    """The parent run's tags naming the best trial, its objective and the description."""
    from rbm_tune.space.params import effective_values

    values = effective_values(best.get("config") or {})
    tags = {
        "rbm_tune.best_trial_id": str(best["trial_id"]),
        "rbm_tune.objective": OBJECTIVE,
        f"rbm_tune.{OBJECTIVE}": str(float(best[OBJECTIVE])),
        NOTE_TAG: describe(
            space, name=name, trials=trials, best=best, values=values, storage=storage
        ),
    }
    if best.get(TEST_ACC) is not None:
        tags["rbm_tune.best_test_acc"] = str(float(best[TEST_ACC]))
    if run_id:
        tags["rbm_tune.best_run_id"] = run_id
    return tags
