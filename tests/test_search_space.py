"""Search spaces (rbm_tune/search_space.py): shipped files, define-by-run, bounds, bad files.

Pure Python + Optuna: no Ray, no training. Optuna trials come from ``FixedTrial`` or an
in-memory study's ``ask()``.
"""

from __future__ import annotations

import dataclasses
import pickle
import textwrap
from pathlib import Path

import optuna
import pytest
from optuna.trial import FixedTrial

from rbm_tune import yamlio
from rbm_tune.config import TrialConfig, load_config
from rbm_tune.errors import SpaceError
from rbm_tune.search_space import (
    SEARCH_METRICS,
    SHIPPED_DIR,
    SearchSpace,
    StudySettings,
    load_space,
    shipped_spaces,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

CONFIGS = Path(__file__).resolve().parents[1] / "rbm_tune" / "configs"
DATASET_SPACES = {
    "cora.yaml": "cora",
    "citeseer.yaml": "citeseer",
    "pubmed.yaml": "pubmed",
    "amazon-computers.yaml": "amazon-computers",
    "amazon-photo.yaml": "amazon-photo",
    "coauthor-cs.yaml": "coauthor-cs",
    "coauthor-physics.yaml": "coauthor-physics",
    "arxiv.yaml": "ogbn-arxiv",
    "products.yaml": "ogbn-products",
}
# A small valid space; BAD_SPACES below are one-edit variants of it.
GOOD = """\
study:
  num_trials: 4
  asha: {grace_period: 2, reduction_factor: 2}
dataset: demo
setting: transductive
teacher: {model: sage, num_layers: 2, hidden_dim: 32}
student:
  model: rbm
  num_experts: {int: [2, 6]}
  k: {int: [1, num_experts - 1]}
  hidden_dim: {categorical: [32, 64]}
  input_attention: {categorical: [false, true]}
  vq_coef: {float: [1.0e-4, 0.3], log: true, or_zero: true}
distill:
  lr: {float: [1.0e-3, 0.1], log: true}
  max_epochs: 10
  pretrain_epochs: {int: [0, 4], step: 2}
"""


def write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_shipped_file_set() -> None:
    # cora-family.yaml: cora.yaml with student.model searched (tests/test_space_conditions.py)
    assert set(shipped_spaces()) == {"demo.yaml", "cora-family.yaml", *DATASET_SPACES}


@pytest.mark.parametrize("name", sorted({"demo.yaml", "cora-family.yaml", *DATASET_SPACES}))
def test_every_shipped_space_loads(name: str) -> None:
    space = load_space(SHIPPED_DIR / name)
    assert space.path == SHIPPED_DIR / name
    assert space.study.name == name.removesuffix(".yaml")
    assert space.study.metric == "val_acc" and space.study.mode == "max"
    assert space.study.plots is True  # every shipped study ends with its plots
    # ASHA's max_t: the longest trial after the pretraining switch, the largest max_epochs
    assert space.study.asha_max_t == (30 if name == "demo.yaml" else 500)  # post-switch epochs
    names = [p.name for p in space.params]
    assert names.index("student.num_experts") < names.index("student.k")
    assert not set(space.fixed) & set(names)
    assert isinstance(space.default_config(), TrialConfig)


@pytest.mark.parametrize("name", sorted(DATASET_SPACES))
def test_dataset_space_is_its_table_a_base(name: str) -> None:
    """Each dataset space says ``base:`` its Table A trial config and copies none of it: every
    fixed value and default comes from the base (1e-7 coefficients -> 0, scale settings)."""
    dataset = DATASET_SPACES[name]
    base = f"{dataset}-transductive-sage-rbm"
    written = yamlio.read(SHIPPED_DIR / name)[0]
    assert written["base"] == base and not {"dataset", "setting", "seed", "teacher"} & set(written)
    reference = load_config(CONFIGS / f"{base}.yaml").flat()
    for section in ("student", "distill"):
        for key, value in written[section].items():
            copied = value.get("default") if isinstance(value, dict) else value
            assert copied is None or copied != reference[f"{section}.{key}"], (key, value)
    space = load_space(SHIPPED_DIR / name)
    default = space.default_config().flat()
    differ = {k: (v, reference[k]) for k, v in default.items() if v != reference[k]}
    if dataset.startswith("ogbn-"):  # batched, chunked training at scale (issue 20); the
        # model and every other hyperparameter stay Table A's
        scale = {
            "distill.mode": ("fast", "reference"),
            "distill.eval_nodes": ("needed", "all"),
            "distill.batch_size": (4096, -1),
            "distill.eval_batch_size": (16384, 0),
            "distill.precision": ("tf32", "float32"),
        }
        if dataset == "ogbn-products":
            scale["distill.kmeans_max_rows"] = (262144, 0)
        assert {k: differ.pop(k) for k in scale} == scale
    assert all(v == 0.0 and ref == 1e-7 for v, ref in differ.values()), differ
    assert space.fixed["dataset"] == dataset and space.fixed["setting"] == "transductive"
    assert space.study.num_trials == 64 and space.study.grace_period == 20
    assert {p.name for p in space.params} >= {
        "student.num_experts",
        "student.k",
        "student.momentum",
        "student.vq_coef",
        "distill.lr",
        "distill.weight_decay",
        "distill.label_weight",
        "distill.temperature",
        "distill.pretrain_epochs",
    }


def test_trial_config_is_a_space_with_nothing_searched() -> None:
    path = CONFIGS / "cora-transductive-sage-rbm.yaml"
    space = load_space(path)
    assert space.params == ()
    assert space.define_by_run(FixedTrial({})) == {}
    assert space.default_config() == load_config(path)
    assert space.fixed == load_config(path).flat()
    assert space.study.name == "cora-transductive-sage-rbm" and space.study.num_trials == 8


def test_fixed_trial_round_trip(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, GOOD))
    chosen = {
        "student.num_experts": 5,
        "student.k": 3,
        "student.hidden_dim": 64,
        "student.input_attention": True,
        "student.vq_coef.is_zero": False,
        "student.vq_coef": 0.02,
        "distill.lr": 0.005,
        "distill.pretrain_epochs": 2,
    }
    sampled = space.define_by_run(FixedTrial(chosen))
    assert sampled == chosen
    config = space.config_for(sampled)
    assert (config.student.num_experts, config.student.k) == (5, 3)
    assert config.student.hidden_dim == 64 and config.student.input_attention is True
    assert config.student.vq_coef == 0.02 and config.distill.lr == 0.005
    assert config.distill.pretrain_epochs == 2 and config.distill.max_epochs == 10
    assert config.teacher.hidden_dim == 32 and config.dataset == "demo"
    # fixed + final values is exactly the config, under the same flat names (one name, R3)
    finals = {k: v for k, v in sampled.items() if not k.endswith(".is_zero")}
    assert {**space.fixed, **finals} == config.flat()


def test_or_zero_switch_gives_zero_and_skips_the_value(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, GOOD))
    chosen = {p.name: space.default_params()[p.name] for p in space.params if not p.or_zero}
    chosen["student.vq_coef.is_zero"] = True
    sampled = space.define_by_run(FixedTrial(chosen))
    assert sampled == {**chosen, "student.vq_coef": 0.0}
    assert space.config_for(sampled).student.vq_coef == 0.0
    # the switch alone is enough: Ray's config holds what define_by_run returned, but be lenient
    del sampled["student.vq_coef"]
    assert space.config_for(sampled).student.vq_coef == 0.0


def test_config_for_rejects_unknown_and_missing_keys(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, GOOD))
    sampled = space.define_by_run(FixedTrial(space.default_params()))
    with pytest.raises(SpaceError, match="student.num_expert: not searched"):
        space.config_for({**sampled, "student.num_expert": 3})
    with pytest.raises(SpaceError, match="distill.lr: missing"):
        space.config_for({k: v for k, v in sampled.items() if k != "distill.lr"})
    with pytest.raises(SpaceError, match="student.k"):
        space.config_for({**sampled, "student.num_experts": 3, "student.k": 3})


@pytest.mark.parametrize(
    "sampler", [optuna.samplers.RandomSampler(seed=0), optuna.samplers.TPESampler(seed=0)]
)
def test_dependent_bound_holds_for_every_sampled_trial(
    tmp_path: Path, sampler: optuna.samplers.BaseSampler
) -> None:
    space = load_space(SHIPPED_DIR / "cora.yaml")
    study = optuna.create_study(direction="maximize", sampler=sampler)
    zeros = nonzeros = 0
    for _ in range(60):
        trial = study.ask()
        sampled = space.define_by_run(trial)
        config = space.config_for(sampled)
        assert 1 <= config.student.k < config.student.num_experts
        assert config.student.k <= 4 and 2 <= config.student.num_experts <= 16
        assert set(trial.params) <= set(sampled)
        zeros += config.student.vq_coef == 0
        nonzeros += config.student.vq_coef > 0
        # a made-up objective, so TPE leaves its random start-up phase
        study.tell(trial, config.student.num_experts - config.student.k + config.distill.lr)
    assert zeros and nonzeros


def test_default_params_can_be_enqueued(tmp_path: Path) -> None:
    """default_params() suits OptunaSearch(points_to_evaluate=...) / enqueue_trial."""
    space = load_space(SHIPPED_DIR / "pubmed.yaml")
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(space.default_params())
    config = space.config_for(space.define_by_run(study.ask()))
    assert config == space.default_config()
    assert (config.student.num_experts, config.student.k, config.student.sim_coef) == (7, 2, 0)


def test_space_pickles_for_ray(tmp_path: Path) -> None:
    """Ray pickles the searcher, and with it the bound define_by_run, for checkpoints."""
    space = load_space(write(tmp_path, GOOD))
    again = pickle.loads(pickle.dumps(space))
    assert again == space
    assert pickle.loads(pickle.dumps(space.define_by_run)).__self__ == space
    chosen = space.default_params()
    assert again.define_by_run(FixedTrial(chosen)) == space.define_by_run(FixedTrial(chosen))


def test_min_bound_and_digest(tmp_path: Path) -> None:
    text = GOOD.replace("[1, num_experts - 1]", '[1, "min(2, num_experts - 1)"]')
    path = write(tmp_path, text)
    space = load_space(path)
    import hashlib

    assert space.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    ks = {space.define_by_run(study.ask())["student.k"] for _ in range(40)}
    assert ks == {1, 2}


def test_bound_may_name_an_earlier_fixed_value(tmp_path: Path) -> None:
    text = GOOD.replace("num_experts: {int: [2, 6]}", "num_experts: 5")
    space = load_space(write(tmp_path, text))
    assert "student.num_experts" not in space.param_names
    k = next(p for p in space.params if p.name == "student.k")
    assert k.range(space.fixed) == (1, 4)


def test_aliases_and_yaml_1_1_numbers(tmp_path: Path) -> None:
    text = GOOD.replace("  lr: {float: [1.0e-3, 0.1], log: true}", "  lambda: 0.4\n  lr: 1e-2")
    space = load_space(write(tmp_path, text))
    assert space.fixed["distill.label_weight"] == 0.4 and space.fixed["distill.lr"] == 0.01
    text = GOOD.replace("[1.0e-3, 0.1]", "[1e-3, 1e-1]")
    assert load_space(write(tmp_path, text)).params[-2].range({}) == (1e-3, 0.1)


def test_bare_name_lookup_cwd_first_then_shipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("demo", "demo.yaml", "arxiv.yaml"):
        assert load_space(name).path.parent == SHIPPED_DIR
    mine = write(tmp_path, GOOD.replace("num_trials: 4", "num_trials: 3"), "demo.yaml")
    for name in ("demo", "demo.yaml"):
        space = load_space(name)
        assert space.path.resolve() == mine.resolve() and space.study.num_trials == 3
    assert load_space("arxiv").path.parent == SHIPPED_DIR
    with pytest.raises(SpaceError, match=r"nosuch\.yaml: file: .*demo\.yaml"):
        load_space("nosuch.yaml")


def test_study_settings() -> None:
    from rbm_tune import metrics  # imports torch; the space module must not

    assert set(SEARCH_METRICS) == {
        metrics.VAL_ACC,
        metrics.BEST_VAL_ACC,
        metrics.TRAIN_ACC,
        metrics.TRAIN_LOSS,
    }
    study = load_space("demo").study
    assert study.asha_max_t == 30 and study.sampler_seed == study.seed == 0
    assert study.replace(num_trials=2).num_trials == 2
    with pytest.raises(SpaceError, match="study.num_trials"):
        study.replace(num_trials=0)
    with pytest.raises(SpaceError, match="study.resources.gpus_per_trial"):
        study.replace(gpus_per_trial=1.5)
    assert study.replace(gpus_per_trial=0.25).gpus_per_trial == 0.25
    assert isinstance(study, StudySettings)


# (name, edit of GOOD as (old, new), the key the one-line error must name)
BAD_SPACES = [
    ("yaml syntax", ("  num_trials: 4", "  num_trials: [4"), "line "),
    ("duplicate key", ("  model: rbm", "  model: rbm\n  model: mlp"), "duplicate key"),
    ("unknown top-level key", ("dataset: demo", "dataset: demo\ndatset: demo"), "datset"),
    (
        "unknown student key",
        ("  model: rbm", "  model: rbm\n  num_expert: 4"),
        "student.num_expert",
    ),
    ("unknown study key", ("  num_trials: 4", "  num_trails: 4"), "study.num_trails"),
    ("unknown asha key", ("grace_period: 2", "grace: 2"), "study.asha.grace"),
    (
        "string for a float",
        ("  max_epochs: 10", "  max_epochs: 10\n  weight_decay: lots"),
        "distill.weight_decay",
    ),
    (
        "float range on an int field",
        ("num_experts: {int: [2, 6]}", "num_experts: {float: [2, 6]}"),
        "student.num_experts",
    ),
    (
        "bool with a float range",
        ("{categorical: [false, true]}", "{float: [0, 1]}"),
        "student.input_attention",
    ),
    ("empty range", ("[1.0e-3, 0.1]", "[0.1, 0.1]"), "distill.lr"),
    ("reversed range", ("[1.0e-3, 0.1]", "[0.1, 1.0e-3]"), "distill.lr"),
    ("log with lo 0", ("[1.0e-3, 0.1]", "[0, 0.1]"), "distill.lr"),
    ("step not dividing", ("[0, 4], step: 2", "[0, 5], step: 2"), "distill.pretrain_epochs"),
    ("empty categorical", ("{categorical: [32, 64]}", "{categorical: []}"), "student.hidden_dim"),
    (
        "two distribution kinds",
        ("{categorical: [32, 64]}", "{categorical: [32], int: [1, 2]}"),
        "student.hidden_dim",
    ),
    ("unknown option", ("log: true}", "log: true, logg: true}"), "distill.lr"),
    ("list as a value", ("  max_epochs: 10", "  max_epochs: [10, 20]"), "distill.max_epochs"),
    ("bound names an unknown param", ("num_experts - 1", "num_expert - 1"), "student.k"),
    (
        "bound names a later param",
        (
            "  num_experts: {int: [2, 6]}\n  k: {int: [1, num_experts - 1]}",
            "  k: {int: [1, num_experts - 1]}\n  num_experts: {int: [2, 6]}",
        ),
        "student.k",
    ),
    ("k can reach num_experts", ("[1, num_experts - 1]", "[1, 4]"), "student.k"),
    (
        "dynamic range can be empty",
        (
            "num_experts: {int: [2, 6]}",
            "num_experts: {int: [2, 6]}\n  num_layers: {int: [1, num_experts - 4]}",
        ),
        "student.num_layers",
    ),
    (
        "searched teacher",
        ("hidden_dim: 32}", "hidden_dim: {int: [16, 32]}}"),
        "teacher.hidden_dim",
    ),
    (
        "reachable invalid value",
        ("  model: rbm", "  model: rbm\n  dropout: {float: [0.5, 1.5]}"),
        "student.dropout",
    ),
    (
        "metric test_acc",
        ("  num_trials: 4", "  num_trials: 4\n  metric: test_acc"),
        "study.metric",
    ),
    ("unknown dataset", ("dataset: demo", "dataset: ogbn-papers100M"), "dataset"),
    ("unknown precision", ("  max_epochs: 10", "  max_epochs: 10\n  precision: fp8"), "precision"),
    (
        "unknown eval_nodes",
        ("  max_epochs: 10", "  max_epochs: 10\n  eval_nodes: {categorical: [all, some]}"),
        "eval_nodes",
    ),
    ("num_trials 0", ("num_trials: 4", "num_trials: 0"), "study.num_trials"),
    (
        "negative report interval",
        ("num_trials: 4", "num_trials: 4\n  report_every_s: -1"),
        "study.report_every_s",
    ),
    ("plots not a boolean", ("num_trials: 4", "num_trials: 4\n  plots: sometimes"), "study.plots"),
    (
        "grace period beyond max_t",
        ("grace_period: 2", "grace_period: 50"),
        "study.asha.grace_period",
    ),
    (
        "fractional gpus above 1",
        ("asha:", "resources: {gpus_per_trial: 1.5}\n  asha:"),
        "study.resources.gpus_per_trial",
    ),
]


@pytest.mark.parametrize(("case", "edit", "key"), BAD_SPACES, ids=[c[0] for c in BAD_SPACES])
def test_bad_space_is_one_line_naming_file_and_key(
    tmp_path: Path, case: str, edit: tuple[str, str], key: str
) -> None:
    old, new = edit
    assert GOOD.count(old) == 1, case
    path = write(tmp_path, GOOD.replace(old, new), "bad.yaml")
    with pytest.raises(SpaceError) as info:
        load_space(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message
    assert key in message, message
    assert "; " in message, message  # what is wrong; what to do


def test_k_error_names_both_and_the_fix(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("[1, num_experts - 1]", "[1, 4]"))
    with pytest.raises(SpaceError) as info:
        load_space(path)
    message = str(info.value)
    assert message.startswith(f"{path}: student.k: ")
    assert "num_experts" in message and "k: {int: [1, num_experts - 1]}" in message


def test_bad_space_fails_before_anything_else(tmp_path: Path) -> None:
    """The good base space really is good, so each BAD_SPACES failure is its edit's."""
    space = load_space(write(tmp_path, GOOD))
    assert isinstance(space, SearchSpace) and len(space.params) == 7


def test_study_defaults_are_the_field_defaults(tmp_path: Path) -> None:
    """StudySettings' fields are the one place a study default is written (keys included)."""
    import dataclasses

    from rbm_tune.search_space import STUDY_KEYS

    assert STUDY_KEYS == {
        **{k: None for k in ("name", "num_trials", "seed", "seeds_per_trial", "sampler_seed")},
        **{k: None for k in ("metric", "mode")},
        **{k: None for k in ("max_concurrent", "max_failures", "report_every_s")},
        "objectives": None,
        "plots": None,
        "early_stopping": None,
        "cpu_fallback": None,
        "asha": ("grace_period", "reduction_factor"),
        "resources": ("cpus_per_trial", "gpus_per_trial", "memory_per_trial", "teacher_cpus"),
    }
    # max_epochs above the default grace period (10), which must be below it
    bare = GOOD.split("dataset: demo", 1)[1].replace("  max_epochs: 10\n", "  max_epochs: 12\n")
    space = load_space(write(tmp_path, "dataset: demo" + bare, "bare.yaml"))
    expected = StudySettings(name="bare", asha_max_t=space.study.asha_max_t)
    assert space.study == expected
    defaults = {f.name: f.default for f in dataclasses.fields(StudySettings)}
    got = space.study.to_dict()
    assert all(got[k] == v for k, v in defaults.items() if k not in ("name", "asha_max_t"))
    # the defaults that depend on the file: sampler_seed follows seed, mode follows metric
    text = "study: {seed: 3, metric: train_loss}\ndataset: demo" + bare
    study = load_space(write(tmp_path, text, "derived.yaml")).study
    assert (study.seed, study.sampler_seed, study.metric, study.mode) == (
        3,
        3,
        "train_loss",
        "min",
    )
    text = "study: {objectives: {best_val_acc: max, num_params: min}}\ndataset: demo" + bare
    study = load_space(write(tmp_path, text, "multi.yaml")).study
    assert (study.metric, study.mode) == ("best_val_acc", "max")
    text = "study: {resources: {memory_per_trial: 1GiB}}\ndataset: demo" + bare
    assert load_space(write(tmp_path, text, "mem.yaml")).study.memory_per_trial == 2**30


def test_renamed_keys_in_a_space_and_in_resumed_trials(tmp_path: Path) -> None:
    """vq_coeff (before the rename) is read as vq_coef, with one warning naming the file."""
    path = write(tmp_path, GOOD.replace("  vq_coef:", "  vq_coeff:"), "old.yaml")
    with pytest.warns(FutureWarning, match=f"{path}: student.vq_coeff is deprecated"):
        space = load_space(path)
    new = load_space(write(tmp_path, GOOD))
    assert (space.params, space.fixed) == (new.params, new.fixed)
    assert "student.vq_coef" in space.param_names
    # a trial sampled before the rename, as a resumed study's Ray config holds it
    sampled = space.define_by_run(FixedTrial(space.default_params()))
    old = {k.replace("vq_coef", "vq_coeff"): v for k, v in sampled.items()}
    assert "student.vq_coeff.is_zero" in old
    assert space.config_for(old) == space.config_for(sampled)
    from rbm_tune.plots import study_from_trials  # the end-of-study plots replay the trials

    (trial,) = study_from_trials(space, [(old, [0.5])], ["maximize"]).trials
    assert trial.params == {k: v for k, v in sampled.items() if k in trial.params}
    assert "student.vq_coef.is_zero" in trial.params


def test_old_import_path_and_pickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A searcher pickled before the split names rbm_tune.search_space.SearchSpace & co."""
    import rbm_tune.search_space as old
    from rbm_tune import space as package

    for name in package.__all__:
        assert getattr(old, name) is getattr(package, name), name
    space = load_space(write(tmp_path, GOOD))
    for cls in (SearchSpace, StudySettings, old.Param, old.Bound):
        monkeypatch.setattr(cls, "__module__", "rbm_tune.search_space")
    data = pickle.dumps(space)
    monkeypatch.undo()
    assert b"rbm_tune.search_space" in data and b"rbm_tune.space." not in data
    assert pickle.loads(data) == space


def test_space_modules_stay_small() -> None:
    from rbm_tune import space

    folder = Path(space.__file__).parent
    sizes = {p.name: len(p.read_text().splitlines()) for p in folder.glob("*.py")}
    assert len(sizes) >= 6 and max(sizes.values()) <= 400, sizes


@pytest.mark.parametrize("name", sorted({"demo.yaml", *DATASET_SPACES}))
def test_shipped_space_defaults_unchanged_by_base(name: str) -> None:
    """The default point of every shipped space, as it was before the spaces said ``base:``
    (tests/data/shipped_space_defaults.json: written from the spaces at commit 882a7dc, with
    vq_coeff / sim_coeff renamed)."""
    import json

    before = json.loads(
        (Path(__file__).parent / "data" / "shipped_space_defaults.json").read_text()
    )
    space = load_space(SHIPPED_DIR / name)
    assert space.default_params() == before[name]["default_params"]
    assert space.default_config().flat() == before[name]["default_config"]


BASE_SPACE = """\
study: {num_trials: 4, asha: {grace_period: 4}}
base: BASE
student:
  hidden_dim: 32
  num_experts: {int: [2, 6]}
  k: {int: [1, num_experts - 1]}
  dropout: {float: [0.0, 0.5], default: 0.1}
distill:
  lr: {float: [1.0e-3, 0.1], log: true}
  max_epochs: 10
"""


def test_base_by_name_and_by_path(tmp_path: Path) -> None:
    shipped = "demo-transductive-sage-rbm"
    base = load_config(CONFIGS / f"{shipped}.yaml")
    space = load_space(write(tmp_path, BASE_SPACE.replace("BASE", shipped)))
    default = space.default_config()
    # not written: the base's; a scalar overrides; a searched key defaults to the base's value
    assert default.teacher == base.teacher and default.dataset == base.dataset
    assert default.student.momentum == base.student.momentum
    assert default.student.hidden_dim == 32 and default.distill.max_epochs == 10
    assert default.student.num_experts == base.student.num_experts == 4
    assert default.distill.lr == base.distill.lr and default.student.dropout == 0.1
    assert space.fixed["student.vq_coef"] == base.student.vq_coef
    # a path, relative to the space file, and the digest covers the base
    (tmp_path / "bases").mkdir()
    mine = tmp_path / "bases" / "mine.yaml"
    mine.write_text((CONFIGS / f"{shipped}.yaml").read_text().replace("k: 2", "k: 1"))
    other = load_space(write(tmp_path, BASE_SPACE.replace("BASE", "bases/mine.yaml"), "o.yaml"))
    assert other.default_config().student.k == 1 and other.digest != space.digest
    assert other.params == tuple(
        dataclasses.replace(p, default=1) if p.name == "student.k" else p for p in space.params
    )


def test_bound_may_name_a_base_value(tmp_path: Path) -> None:
    text = BASE_SPACE.replace("BASE", "demo-transductive-sage-rbm")
    text = text.replace("  num_experts: {int: [2, 6]}\n", "")
    space = load_space(write(tmp_path, text))
    k = next(p for p in space.params if p.name == "student.k")
    assert k.range(space.fixed) == (1, 3) and space.fixed["student.num_experts"] == 4


@pytest.mark.parametrize(
    ("base", "edit", "message"),
    [
        (
            "nosuch-config",
            ("", ""),
            "base: no trial config 'nosuch-config' next to this file or among the shipped ones; "
            "write a path relative to this file or a name 'rbm-tune configs' lists",
        ),
        ("demo.yaml", ("", ""), "base: "),  # a space is not a trial config
        (
            "demo-transductive-sage-rbm",
            ("[0.0, 0.5], default: 0.1", "[0.4, 0.5]"),
            "student.dropout: the base's value 0.3 lies off [0.4, 0.5]; widen the range or "
            "write default: <a value in the range>",
        ),
        (
            "demo-transductive-sage-rbm",
            ("hidden_dim: 32", "hidden_dim: {categorical: [16, 32]}"),
            "student.hidden_dim: the base's value 64 is not a choice",
        ),
    ],
    ids=["unknown", "a-space", "off-range", "not-a-choice"],
)
def test_bad_base_is_one_line(
    tmp_path: Path, base: str, edit: tuple[str, str], message: str
) -> None:
    if base == "demo.yaml":
        (tmp_path / "demo.yaml").write_text((SHIPPED_DIR / "demo.yaml").read_text())
    text = BASE_SPACE.replace("BASE", base).replace(*edit)
    path = write(tmp_path, text, "bad.yaml")
    with pytest.raises(SpaceError) as info:
        load_space(path)
    text = str(info.value)
    assert text.startswith(f"{path}: {message}") and "\n" not in text and "; " in text, text


def test_asha_counts_post_switch_epochs_and_early_stopping_may_be_off(tmp_path: Path) -> None:
    """ASHA's time is epochs after the pretraining switch: the longest trial is max_epochs, and
    a grace period at or past it (which ASHA could only meet at a trial's last epoch) is an
    error naming the fix; early_stopping: false runs every trial to its end (no rung)."""
    text = BASE_SPACE.replace("BASE", "demo-transductive-sage-rbm")  # pretrain_epochs: 3
    space = load_space(write(tmp_path, text))
    assert space.study.asha_max_t == 10 and space.study.early_stopping
    late = text.replace("grace_period: 4", "grace_period: 10")
    with pytest.raises(
        SpaceError,
        match=r"grace_period: 10 is not below the longest trial "
        r"\(10 epochs after the pretraining switch",
    ):
        load_space(write(tmp_path, late, "late.yaml"))
    fifo = late.replace("study: {", "study: {early_stopping: false, ")
    assert not load_space(write(tmp_path, fifo, "fifo.yaml")).study.early_stopping
