"""The one YAML dialect (rbm_tune/yamlio.py), through both of its readers: spaces and configs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from rbm_tune import yamlio
from rbm_tune.config import load_config
from rbm_tune.errors import ConfigError, SpaceError
from rbm_tune.search_space import load_space

CONFIG = """\
dataset: demo
student:
  model: rbm
  num_experts: 4
  k: 2
distill:
  lr: 1e-3
  weight_decay: 5E-4
  max_epochs: 20
"""
SPACE = """\
dataset: demo
student:
  model: rbm
  num_experts: {int: [2, 6]}
  k: {int: [1, num_experts - 1]}
distill:
  lr: {float: [1e-3, 1e-1], log: true}
  weight_decay: 5e-4
  max_epochs: 20
"""


def write(tmp_path: Path, text: str, name: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_exponent_without_a_dot_is_a_number() -> None:
    assert yaml.safe_load("lr: 1e-4") == {"lr": "1e-4"}  # plain YAML 1.1: a string
    values = yamlio.parse("a: 1e-4\nb: 5E3\nc: -2e+2\nd: .5e-3\ne: 1.0e-4\nf: 1e\ng: e3\nh: 7")
    expected = {"a": 1e-4, "b": 5e3, "c": -200.0, "d": 5e-4, "e": 1e-4, "f": "1e", "g": "e3"}
    assert values == {**expected, "h": 7}
    assert isinstance(values["b"], float) and isinstance(values["h"], int)
    assert yaml.safe_load("lr: 1e-4") == {"lr": "1e-4"}  # SafeLoader itself is untouched


def test_config_reads_yaml_1_1_numbers(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, CONFIG, "c.yaml"))
    assert config.distill.lr == 1e-3 and config.distill.weight_decay == 5e-4


def test_space_reads_yaml_1_1_numbers(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, SPACE, "s.yaml"))
    lr = next(p for p in space.params if p.name == "distill.lr")
    assert lr.range({}) == (1e-3, 0.1) and space.fixed["distill.weight_decay"] == 5e-4


@pytest.mark.parametrize(
    ("text", "error", "loader"),
    [(CONFIG, ConfigError, load_config), (SPACE, SpaceError, load_space)],
    ids=["config", "space"],
)
def test_duplicate_key_names_the_key_and_line(
    tmp_path: Path, text: str, error: type[Exception], loader: object
) -> None:
    text = text.replace("  max_epochs: 20\n", "  max_epochs: 20\n  max_epochs: 30\n")
    path = write(tmp_path, text, "dup.yaml")
    line = text.splitlines().index("  max_epochs: 30") + 1
    with pytest.raises(error) as info:
        loader(path)  # type: ignore[operator]
    message = str(info.value)
    assert message == f"{path}: line {line}: duplicate key 'max_epochs'; keep one"
    # nested mappings too, and a flow mapping
    path.write_text("dataset: demo\nteacher: {model: sage, model: gcn}\n")
    with pytest.raises(error, match=r"line 2: duplicate key 'model'; keep one"):
        loader(path)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("error", "loader", "what"),
    [(ConfigError, load_config, "config"), (SpaceError, load_space, "space")],
    ids=["config", "space"],
)
def test_syntax_errors_and_tags_are_one_line(
    tmp_path: Path, error: type[Exception], loader: object, what: str
) -> None:
    path = write(tmp_path, "dataset: demo\nstudent: [1, 2\n", "bad.yaml")
    with pytest.raises(error) as info:
        loader(path)  # type: ignore[operator]
    message = str(info.value)
    assert message.startswith(f"{path}: line ") and "\n" not in message
    assert "not valid YAML" in message and message.endswith("; fix the YAML syntax")
    path.write_text("dataset: !!python/name:os.system\n")
    with pytest.raises(error, match=f"a {what} is plain YAML.*; remove the tag$"):
        loader(path)  # type: ignore[operator]
    with pytest.raises(error, match=r"nope\.yaml: file: cannot read it .*; check the path"):
        yamlio.read(tmp_path / "nope.yaml", error, what)  # type: ignore[arg-type]
