"""A finished study's trials as an Optuna study, and Optuna's own plots of it.

Ray Tune's OptunaSearch keeps its Optuna study inside the searcher; after a resume, or for a
study of another driver, it is not at hand. So the study is rebuilt from the results: each
finished trial's sampled constants are replayed through ``SearchSpace.define_by_run`` on an
``optuna.trial.FixedTrial``, which records the exact parameters and distributions Optuna drew,
and the trial is added with its objective value(s) (the searcher's metric, never a test metric).

Deviation: a distribution whose bound depends on another parameter (``k`` in
``[1, num_experts - 1]``) differs from trial to trial, and Optuna's importance evaluators and
parallel-coordinate plot only use parameters whose distribution is the same in every trial; such
a parameter is given the union of its ranges, so it is plotted and ranked like the others.

Plots (PNG through Optuna's matplotlib backend, and HTML through its plotly backend when plotly
is installed): optimisation history, parameter importances, parallel coordinates; for two
objectives, the Pareto front.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rbm_tune.errors import first_line

__all__ = ["pareto_front", "study_from_trials", "write_plots"]


def study_from_trials(
    space: Any,
    trials: Iterable[tuple[Mapping[str, Any], Sequence[float]]],
    directions: Sequence[str],
    *,
    names: Sequence[str] | None = None,
) -> Any:
    """An in-memory Optuna study holding one COMPLETE trial per ``(config, values)``.

    Args:
        space: the study's ``SearchSpace``.
        trials: each trial's sampled constants (a ``define_by_run`` dict, i.e. Ray's
            ``result.config``) and its objective values, one per direction.
        directions: ``"maximize"`` / ``"minimize"`` per objective.
        names: the objectives' metric names (Optuna's ``metric_names``), for the plots' axes.
    """
    import optuna
    from optuna.distributions import FloatDistribution, IntDistribution
    from optuna.trial import FixedTrial, create_trial

    from rbm_tune.space.corners import current_name

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    drawn: list[tuple[dict, dict, list[float]]] = []
    for config, values in trials:
        # a trial sampled before a key's rename (a resumed study) under its current name
        fixed = FixedTrial({current_name(k): v for k, v in config.items()})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FixedTrial warns about out-of-range zeros
            space.define_by_run(fixed)
        drawn.append((fixed.params, dict(fixed.distributions), [float(v) for v in values]))

    union: dict[str, Any] = {}
    for _, dists, _ in drawn:
        for name, dist in dists.items():
            old = union.get(name)
            if old is None or old == dist:
                union[name] = dist
            elif isinstance(dist, (IntDistribution, FloatDistribution)) and type(old) is type(
                dist
            ):
                kind: Any = type(dist)  # low/high are int for IntDistribution, float otherwise
                union[name] = kind(
                    low=min(old.low, dist.low),
                    high=max(old.high, dist.high),
                    log=dist.log,
                    step=dist.step if old.step == dist.step else None,
                )
    objectives: list[Any] = list(directions)  # Optuna checks the strings ("maximize"/"minimize")
    study = optuna.create_study(directions=objectives)
    if names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning
            study.set_metric_names(list(names))
    for params, dists, values in drawn:
        dists = {k: union[k] for k in dists}
        params = {
            k: v if dists[k]._contains(dists[k].to_internal_repr(v)) else _clip(dists[k], v)
            for k, v in params.items()
        }
        study.add_trial(create_trial(params=params, distributions=dists, values=values))
    return study


def _clip(dist: Any, value: Any) -> Any:
    """A value a dynamic bound let through but the union does not (never, but stay valid)."""
    return min(max(value, dist.low), dist.high)


def pareto_front(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of the points no other point dominates (ties in every objective both stay)."""
    signs = [1.0 if d == "maximize" else -1.0 for d in directions]
    scored = [[s * v for s, v in zip(signs, p, strict=True)] for p in points]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b, strict=True)) and any(
            x > y for x, y in zip(a, b, strict=True)
        )

    return [
        i
        for i, p in enumerate(scored)
        if not any(dominates(q, p) for j, q in enumerate(scored) if j != i)
    ]


def write_plots(study: Any, out_dir: Path, log: Callable[[str], None] = print) -> list[Path]:
    """Optuna's plots of ``study`` as PNG files (and HTML where plotly is installed).

    A plot Optuna cannot draw for this study (importances of a study with one trial, say) is
    skipped with one line through ``log``; a plot never fails a study.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization as vis
    import optuna.visualization.matplotlib as vis_mpl

    out_dir.mkdir(parents=True, exist_ok=True)
    multi = len(study.directions) > 1
    first = (lambda t: t.values[0]) if multi else None
    importances: dict[str, Any] = {"evaluator": _evaluated_once()}
    if multi:
        importances["target"] = first
    kinds: list[tuple[str, Callable[..., Any], Callable[..., Any], dict[str, Any]]] = [
        ("optimization_history", vis_mpl.plot_optimization_history,
         vis.plot_optimization_history, {"target": first} if multi else {}),
        ("param_importances", vis_mpl.plot_param_importances, vis.plot_param_importances,
         importances),
        ("parallel_coordinate", vis_mpl.plot_parallel_coordinate, vis.plot_parallel_coordinate,
         {"target": first} if multi else {}),
    ]  # fmt: skip
    if multi:
        kinds.append(("pareto_front", vis_mpl.plot_pareto_front, vis.plot_pareto_front, {}))
    try:
        import plotly  # noqa: F401

        html = True
    except ImportError:
        html = False
    written: list[Path] = []
    for name, mpl_plot, plotly_plot, kwargs in kinds:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna's ExperimentalWarning
                ax = mpl_plot(study, **kwargs)
                fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                path = out_dir / f"{name}.png"
                fig.savefig(path, dpi=110, bbox_inches="tight")
                plt.close(fig)
                written.append(path)
                if html:
                    page = out_dir / f"{name}.html"
                    plotly_plot(study, **kwargs).write_html(str(page), include_plotlyjs="cdn")
                    written.append(page)
        except Exception as err:  # noqa: BLE001 (a plot is a bonus, never a failure)
            log(f"rbm-tune: note: no {name} plot ({first_line(err, 160)})")
    return written


def _evaluated_once() -> Any:
    """Optuna's fANOVA importance evaluator, seeded, computing each study's importances once.

    The PNG and the HTML plot draw the same importances; fANOVA fits a random forest each
    time it is asked (about a second per plot on 2 cores), and unseeded it gives slightly
    different numbers in the two files.
    """
    from optuna.importance import BaseImportanceEvaluator, FanovaImportanceEvaluator

    class Once(BaseImportanceEvaluator):
        def __init__(self) -> None:
            self._inner = FanovaImportanceEvaluator(seed=0)
            self._done: dict[Any, dict[str, float]] = {}

        def evaluate(self, study: Any, params: Any = None, *, target: Any = None) -> Any:
            key = (id(study), tuple(params) if params else None, id(target))
            if key not in self._done:
                self._done[key] = self._inner.evaluate(study, params=params, target=target)
            return dict(self._done[key])

    return Once()
