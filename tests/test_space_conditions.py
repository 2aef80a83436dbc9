"""Conditional parameters: ``when:``, the student family's implied conditions, their corners,
their Optuna draws (define-by-run skips what a trial does not use) and what MLflow logs."""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import FixedTrial

from rbm_tune.config import FAMILY_KEYS, STUDENTS, StudentSpec
from rbm_tune.errors import SpaceError
from rbm_tune.search_space import SHIPPED_DIR, load_space
from rbm_tune.space.conditions import ignored_by_model
from rbm_tune.space.params import effective_values

optuna.logging.set_verbosity(optuna.logging.WARNING)

FAMILY = """\
study: {num_trials: 4, asha: {grace_period: 2}}
dataset: demo
teacher: {model: sage, num_layers: 2, hidden_dim: 32}
student:
  model: {categorical: [mlp, moe, rbm]}
  hidden_dim: {categorical: [32, 64]}
  num_experts: {int: [2, 6]}
  k: {int: [1, num_experts - 1]}
  router: {categorical: [reference, noisy_topk]}
  momentum: {float: [0.5, 0.99]}
  vq_coef: {float: [1.0e-4, 0.3], log: true, or_zero: true}
distill:
  lr: {float: [1.0e-3, 0.1], log: true}
  max_epochs: 10
  reliable_sampling: {categorical: [false, true]}
  krd_bins: {int: [10, 60], when: {reliable_sampling: [true]}}
"""
MLP_ONLY = {"student.model", "student.hidden_dim", "distill.lr", "distill.reliable_sampling"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_family_keys_are_drawn_only_for_the_models_that_read_them(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, FAMILY))
    when = {p.name: p.when for p in space.params}
    model = "student.model"
    assert when["student.model"] == when["student.hidden_dim"] == when["distill.lr"] == ()
    assert when["student.num_experts"] == when["student.k"] == ((model, ("moe", "rbm")),)
    assert when["student.router"] == ((model, ("moe",)),)
    assert when["student.momentum"] == when["student.vq_coef"] == ((model, ("rbm",)),)
    assert when["distill.krd_bins"] == (("distill.reliable_sampling", (True,)),)
    assert space.conditional and not load_space(SHIPPED_DIR / "demo.yaml").conditional
    # every family key is a StudentSpec / DistillSpec field read by some model, not all
    for name, models in FAMILY_KEYS.items():
        assert set(models) < {"mlp", "moe", "rbm"}, name
    assert hasattr(StudentSpec(), "router")


def test_fixed_trial_of_an_mlp_draws_no_expert_parameter(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, FAMILY))
    trial = FixedTrial(
        {
            "student.model": "mlp",
            "student.hidden_dim": 32,
            "student.num_experts": 5,  # given, but an MLP does not draw it
            "distill.lr": 0.01,
            "distill.reliable_sampling": False,
        }
    )
    sampled = space.define_by_run(trial)
    assert set(sampled) == MLP_ONLY
    config = space.config_for(sampled)
    # the parameters not drawn hold the schema's defaults, which an MLP ignores
    assert config.student.model == "mlp"
    assert config.student.num_experts == StudentSpec.num_experts
    assert config.student.router == StudentSpec.router
    # MLflow's params of the trial (as rbm_tune.study.mlflow_callback builds them): the fixed
    # values and what it drew, nothing it did not use, fixed keys its model ignores neither
    drawn = effective_values(sampled)
    ignored = ignored_by_model(drawn)
    fixed = {**space.undrawn_defaults, **space.fixed}  # as rbm_tune.study.tuner passes it
    logged = {k: v for k, v in {**fixed, **drawn}.items() if k not in ignored}
    assert "student.num_experts" not in logged and "student.k" not in logged
    assert "student.vq_coef" not in logged
    # not drawn but used: logged at the value the trial trained with, the schema's default
    assert logged["distill.krd_bins"] == config.distill.krd_bins == 50
    assert "student.sim_coef" in space.fixed and "student.sim_coef" not in logged  # fixed
    assert logged["student.model"] == "mlp" and logged["student.dropout"] == 0.5
    assert ignored_by_model({"student.model": "moe"}) == {
        "student.momentum",
        "student.vq_coef",
        "student.sim_coef",
        "student.input_attention",
    }
    assert ignored_by_model({"student.hidden_dim": 32}) == set()  # student.model not searched
    # an inactive parameter passed to config_for is an error, not silently trained with
    with pytest.raises(SpaceError, match=r"student\.num_experts: drawn only when"):
        space.config_for({**sampled, "student.num_experts": 3})


def test_optuna_trials_hold_only_the_parameters_they_used(tmp_path: Path) -> None:
    """A real TPE study (the sampler rbm-tune gives a conditional space): MoE trials have a
    router and no momentum, RbM trials the reverse, MLP trials neither; with the MLP the best
    family, TPE finds it."""
    from rbm_tune.study.searcher import tpe_sampler

    space = load_space(write(tmp_path, FAMILY))
    sampler = tpe_sampler(space, 0)
    assert sampler._multivariate and sampler._group
    assert not load_space(SHIPPED_DIR / "demo.yaml").conditional
    plain = tpe_sampler(load_space(SHIPPED_DIR / "demo.yaml"), 0)
    assert not plain._multivariate

    def objective(trial: optuna.trial.Trial) -> float:
        config = space.config_for(space.define_by_run(trial))
        return {"mlp": 0.9, "moe": 0.5, "rbm": 0.6}[config.student.model] + config.distill.lr

    study = optuna.create_study(direction="maximize", sampler=sampler)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "falls back to independent sampling" warnings
        study.optimize(objective, n_trials=30)
    by_model: dict[str, list[set[str]]] = {"mlp": [], "moe": [], "rbm": []}
    for trial in study.trials:
        by_model[trial.params["student.model"]].append(set(trial.params))
    assert all(by_model.values())
    for names in by_model["mlp"]:
        assert not {"student.num_experts", "student.k", "student.router"} & names
        assert not {n for n in names if n.startswith("student.vq_coef")}
    assert all("student.router" in n and "student.momentum" not in n for n in by_model["moe"])
    assert all("student.momentum" in n and "student.router" not in n for n in by_model["rbm"])
    assert study.best_params["student.model"] == "mlp"
    assert len(by_model["mlp"]) > len(by_model["moe"]) + len(by_model["rbm"])


def test_corners_reach_every_familys_parameters_at_their_ends(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, FAMILY))
    configs = [config for _, config in space.corners()]
    seen = {(c.student.model, c.student.num_experts) for c in configs}
    for model in ("moe", "rbm"):
        assert {(model, 2), (model, 6)} <= seen, model
    assert ("moe", "noisy_topk") in {(c.student.model, c.student.router) for c in configs}
    momenta = {c.student.momentum for c in configs if c.student.model == "rbm"}
    assert {0.5, 0.99} <= momenta
    assert {c.distill.krd_bins for c in configs if c.distill.reliable_sampling} >= {10, 60}
    labels = [label for label, _ in space.corners()]
    assert "high, student.model=mlp" in labels
    assert any("student.model=moe, student.router=noisy_topk" in label for label in labels)
    # the default point is the first choice: an MLP
    assert space.default_config().student.model == "mlp"
    assert "student.num_experts" not in space.default_params()


def test_a_corner_of_one_family_that_breaks_is_named(tmp_path: Path) -> None:
    # k's upper bound reaches num_experts only for the MoE/RbM students: the corner says so
    text = FAMILY.replace("num_experts - 1]", "num_experts]")
    with pytest.raises(SpaceError) as err:
        load_space(write(tmp_path, text))
    message = str(err.value)
    assert "\n" not in message and "student.k" in message and "num_experts - 1" in message


WHEN_ERRORS = [
    (
        "unknown name",
        ("{categorical: [reference, noisy_topk]}", "{categorical: [reference], when: {x: [1]}}"),
        "student.router: when names 'x', which is not searched above it",
    ),
    (
        "a later parameter",
        (
            "hidden_dim: {categorical: [32, 64]}",
            "hidden_dim: {categorical: [32, 64], when: {distill.reliable_sampling: [true]}}",
        ),
        "when names 'distill.reliable_sampling', which is not searched above it",
    ),
    (
        "a range",
        (
            "{int: [10, 60], when: {reliable_sampling: [true]}}",
            "{int: [10, 60], when: {distill.lr: [0.01]}}",
        ),
        "a float range; a condition needs a categorical",
    ),
    (
        "a choice it lacks",
        ("when: {reliable_sampling: [true]}", "when: {reliable_sampling: [maybe]}"),
        "true or false",
    ),
    (
        "a model that ignores the key",
        ("num_experts: {int: [2, 6]}", "num_experts: {int: [2, 6], when: {model: [mlp, rbm]}}"),
        "student.num_experts: when lists ['mlp'] for student.model, but such a student ignores",
    ),
    (
        "not a mapping",
        ("when: {reliable_sampling: [true]}", "when: [reliable_sampling]"),
        "when must map an earlier categorical parameter",
    ),
    (
        "no model reads it",
        ("model: {categorical: [mlp, moe, rbm]}", "model: {categorical: [mlp, moe]}"),
        "student.momentum: no choice of student.model ['mlp', 'moe'] reads it",
    ),
    (
        "a bound on a parameter drawn more rarely",
        ("k: {int: [1, num_experts - 1]}", "k: {int: [1, num_experts - 1], when: {model: [moe]}}"),
        # k is drawn only where num_experts is, but an RbM's k is then the default 2
        "student.k: with student.model=rbm and every other parameter at its lower end, "
        "student.k=2 must satisfy 1 <= k < num_experts=2; student.k is not drawn there",
    ),
    (
        "both drawn for the MoE only",  # an RbM gets the defaults 4 and 2: fine
        (
            "num_experts: {int: [2, 6]}\n  k: {int: [1, num_experts - 1]}",
            "num_experts: {int: [2, 6], when: {model: [moe]}}\n"
            "  k: {int: [1, num_experts - 1], when: {model: [moe]}}",
        ),
        "",
    ),
    (
        "a bound naming a conditional parameter",
        ("  max_epochs: 10", "  max_epochs: {int: [6, student.num_experts + 8]}"),
        "distill.max_epochs: a bound names student.num_experts, drawn only when",
    ),
]


@pytest.mark.parametrize(
    ("case", "edit", "expected"), WHEN_ERRORS, ids=[c[0] for c in WHEN_ERRORS]
)
def test_when_errors_are_one_line(
    tmp_path: Path, case: str, edit: tuple[str, str], expected: str
) -> None:
    old, new = edit
    assert old in FAMILY, case
    path = write(tmp_path, FAMILY.replace(old, new, 1))
    if not expected:
        assert load_space(path).params
        return
    with pytest.raises(SpaceError) as err:
        load_space(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    assert expected in message, message


def test_a_fixed_model_implies_nothing(tmp_path: Path) -> None:
    text = FAMILY.replace("model: {categorical: [mlp, moe, rbm]}", "model: rbm").replace(
        "  router: {categorical: [reference, noisy_topk]}\n", ""
    )
    space = load_space(write(tmp_path, text))
    assert [p.name for p in space.params if p.when] == ["distill.krd_bins"]


def test_shipped_family_space_defaults_to_the_papers_rbm() -> None:
    space = load_space(SHIPPED_DIR / "cora-family.yaml")
    cora = load_space(SHIPPED_DIR / "cora.yaml")
    assert space.study.name == "cora-family" and space.conditional
    assert space.default_config() == cora.default_config()
    models = {config.student.model for _, config in space.corners()}
    assert models == {"mlp", "moe", "rbm"}


def test_warm_start_replays_an_mlp_trial_without_expert_parameters(tmp_path: Path) -> None:
    from rbm_tune.study.warm_start import _replay

    space = load_space(write(tmp_path, FAMILY))
    sampled = {
        "student.model": "mlp",
        "student.hidden_dim": 64,
        "student.num_experts": 4,  # an earlier, unconditional space drew it: ignored here
        "distill.lr": 0.02,
        "distill.reliable_sampling": True,
        "distill.krd_bins": 20,
    }
    drawn = _replay(space, sampled)
    assert not isinstance(drawn, str)
    params, dists = drawn
    assert set(params) == set(dists) == MLP_ONLY | {"distill.krd_bins"}
    # an RbM trial of an earlier space without student.model: the family space draws the
    # model, so it is missing
    assert _replay(space, {"student.hidden_dim": 64, "distill.lr": 0.02}) == "missing"


def test_mlflow_description_names_each_condition(tmp_path: Path) -> None:
    from rbm_tune.metrics import OBJECTIVE
    from rbm_tune.tracking.study_run import describe

    space = load_space(write(tmp_path, FAMILY))
    best = {"trial_id": "t1", OBJECTIVE: 0.9, "config": {}}
    text = describe(
        space, name="s", trials=4, best=best, values={"student.model": "mlp"}, storage=tmp_path
    )
    assert "multivariate, grouped" in text
    row = next(line for line in text.splitlines() if "`student.num_experts`" in line)
    assert "when student.model in ['moe', 'rbm']" in row and row.endswith("| - |")


@pytest.mark.parametrize(
    "name", sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml") if p.stem != "cora-family")
)
def test_every_shipped_space_takes_the_family_as_one_more_key(name: str, tmp_path: Path) -> None:
    """``student.model: {categorical: [mlp, moe, rbm]}`` set in a shipped space (what
    benchmarks/search_quality.py --family does) loads, and its expert keys become conditional."""
    data = yaml.safe_load((SHIPPED_DIR / f"{name}.yaml").read_text())
    rest = {k: v for k, v in data["student"].items() if k != "model"}  # demo fixes model: rbm
    data["student"] = {"model": {"categorical": list(STUDENTS)}, **rest}
    space = load_space(write(tmp_path, yaml.safe_dump(data, sort_keys=False)))
    when = {p.name: dict(p.when) for p in space.params}
    assert space.conditional and when["student.model"] == {}
    assert when["student.num_experts"] == {"student.model": ("moe", "rbm")}
