"""``--set KEY=VALUE`` (rbm_tune/overrides.py) on spaces and trial configs: read like the file.

Pure Python (+ Optuna's ``FixedTrial`` for a space's corner checks): no Ray, no training.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rbm_tune.config import load_config
from rbm_tune.errors import ConfigError, SpaceError
from rbm_tune.overrides import apply, parse_overrides
from rbm_tune.search_space import SHIPPED_DIR, load_space

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "rbm_tune" / "configs"


def test_a_scalar_set_fixes_the_key_and_changes_only_it() -> None:
    plain = load_space("demo")
    changed = load_space("demo", ["distill.max_epochs=12", "study.num_trials=3"])
    assert changed.fixed["distill.max_epochs"] == 12
    assert changed.study.num_trials == 3
    assert changed.study.asha_max_t == 12  # derived from the changed epochs
    # the teacher's max_epochs (100 in the file) is another key: untouched
    assert changed.fixed["teacher.max_epochs"] == plain.fixed["teacher.max_epochs"] == 100
    assert {k: v for k, v in changed.fixed.items() if k != "distill.max_epochs"} == {
        k: v for k, v in plain.fixed.items() if k != "distill.max_epochs"
    }
    assert changed.param_names == plain.param_names
    assert changed.overrides == ("distill.max_epochs=12", "study.num_trials=3")


def test_set_changes_the_digest_and_the_same_set_gives_the_same_one() -> None:
    plain = load_space("demo")
    a = load_space("demo", ["distill.max_epochs=12"])
    assert a.digest != plain.digest
    assert load_space("demo", ["distill.max_epochs=12"]).digest == a.digest
    assert load_space("demo", ["distill.max_epochs=13"]).digest != a.digest


def test_a_flow_mapping_searches_the_key_and_a_scalar_fixes_a_searched_one() -> None:
    space = load_space(
        "demo", ["student.num_layers={int: [1, 3]}", "student.hidden_dim=48", "distill.lr=0.02"]
    )
    names = space.param_names
    assert "student.num_layers" in names
    assert "student.hidden_dim" not in names and space.fixed["student.hidden_dim"] == 48
    assert "distill.lr" not in names and space.fixed["distill.lr"] == 0.02
    # the file's sampling order is kept: num_experts still comes before k, which names it
    assert names.index("student.num_experts") < names.index("student.k")


def test_a_key_only_the_base_writes_can_be_set_and_bounds_still_resolve() -> None:
    # cora.yaml writes num_experts and k (k's bound names num_experts); its base writes epochs
    space = load_space("cora", ["student.num_experts={int: [2, 8]}", "distill.max_epochs=50"])
    assert space.fixed["distill.max_epochs"] == 50
    assert space.study.asha_max_t == 50


def test_seed_sets_the_study_seed_too() -> None:
    space = load_space("demo", ["seed=7"])
    assert space.study.seed == 7 and space.fixed["seed"] == 7
    assert load_space("demo", ["study.seed=5"]).fixed["seed"] == 5


def test_an_alias_replaces_the_key_in_place() -> None:
    data = {"distill": {"lr": 0.1, "label_weight": 0.3, "temperature": 1.0}}
    (change,) = parse_overrides(["distill.lambda=0.5"], space=True)
    out = apply(data, [change], space=True)
    assert list(out["distill"]) == ["lr", "label_weight", "temperature"]
    assert out["distill"]["label_weight"] == 0.5
    assert data["distill"]["label_weight"] == 0.3  # the caller's mapping is not changed


def test_the_later_set_of_a_key_wins() -> None:
    changes = parse_overrides(["distill.max_epochs=5", "distill.max_epochs=9"], space=True)
    assert [str(c) for c in changes] == ["distill.max_epochs=9"]


@pytest.mark.parametrize(
    ("item", "fragments"),
    [
        ("distill.max_epoch_s=10", ["--set distill.max_epoch_s=10", "did you mean", "max_epochs"]),
        ("distill.max_epochs", ["write KEY=VALUE", "--set distill.max_epochs=100"]),
        ("distill.max_epochs=", ["no value"]),
        ("distill.max_epochs=abc", ["--set distill.max_epochs=abc", "not an integer"]),
        ("student.hidden_dim=[64, 128]", ["not a value", "categorical: [64, 128]"]),
        ("student.hidden_dim={categorical: [64, 128}", ["not valid YAML", "quote"]),
        ("student.hidden_dim={categorcal: [64, 128]}", ["--set student", "'categorical'"]),
        ("teacher.hidden_dim={int: [16, 64]}", ["--set teacher.hidden_dim", "fixed"]),
        ("distill=3", ["give one key of distill", "--set distill.lr"]),
        ("study=3", ["give one key of study", "--set study.name"]),
        ("study.asha=3", ["give one key of study.asha", "--set study.asha.grace_period"]),
        ("study.asha.grace_period=50", ["--set study.asha.grace_period=50", "below"]),
        ("datset=cora", ["did you mean 'dataset'"]),
        ("student.k=!!python/object/apply:os.system [ls]", ["remove the tag"]),
    ],
)
def test_bad_sets_are_one_line_naming_the_set(item: str, fragments: list[str]) -> None:
    with pytest.raises(SpaceError) as err:
        load_space("demo", [item])
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("--set "), message
    for fragment in fragments:
        assert fragment in message, message


def test_an_error_elsewhere_caused_by_a_set_names_the_sets() -> None:
    # k's range [1, num_experts - 1] is empty when num_experts is 1: the error is about k
    with pytest.raises(SpaceError) as err:
        load_space("demo", ["student.num_experts=1"])
    message = str(err.value)
    assert "student.k" in message and "(with --set student.num_experts=1)" in message, message


def test_config_set_is_validated_like_the_file() -> None:
    path = DEMO_CONFIG / "demo-transductive-sage-rbm.yaml"
    config = load_config(path, ["distill.max_epochs=7", "student.num_experts=3", "seed=4"])
    assert config.distill.max_epochs == 7 and config.student.num_experts == 3
    assert config.seed == 4
    assert config.teacher.max_epochs == load_config(path).teacher.max_epochs
    for item, fragment in [
        ("distill.max_epochs=abc", "must be an integer"),
        ("distill.lr={float: [0.001, 0.1]}", "searches nothing"),
        ("study.num_trials=3", "search-space key"),
        ("study=3", "search-space key"),
        ("base=cora-transductive-sage-rbm", "search-space key"),
        ("student=3", "give one key of student"),
        ("student.num_expert=3", "did you mean 'student.num_experts'"),
        ("student.dropout=1.5", "must lie in"),
    ]:
        with pytest.raises(ConfigError) as err:
            load_config(path, [item])
        assert str(err.value).startswith(f"--set {item}"), str(err.value)
        assert fragment in str(err.value)


def test_shipped_spaces_take_a_set_of_their_epochs() -> None:
    for file in sorted(SHIPPED_DIR.glob("*.yaml")):
        space = load_space(file, ["distill.max_epochs=40"])
        assert space.fixed["distill.max_epochs"] == 40, file.name


def test_evaluate_applies_the_set_to_each_config_and_names_its_table() -> None:
    from rbm_tune.evaluate import _config, _set_suffix

    trial = load_config(DEMO_CONFIG / "demo-transductive-sage-rbm.yaml").to_dict()
    changes = parse_overrides(["distill.max_epochs=3"], space=False)
    config = _config(trial, changes)
    assert config.distill.max_epochs == 3 and trial["distill"]["max_epochs"] != 3
    assert _set_suffix(()) == ""
    suffix = _set_suffix(changes)
    assert suffix.startswith("-set-") and len(suffix) == 13
    assert suffix != _set_suffix(parse_overrides(["distill.max_epochs=4"], space=False))
    with pytest.raises(ConfigError) as err:
        _config(trial, parse_overrides(["distill.max_epochs=0"], space=False))
    assert str(err.value).startswith("--set distill.max_epochs=0: "), str(err.value)
