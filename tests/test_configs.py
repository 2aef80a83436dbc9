"""Shipped trial configs (rbm_tune/configs/*.yaml): they load, match method §7, regenerate."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from rbm_tune.config import CONFIG_DIR, TrialConfig, load_config
from rbm_tune.errors import ConfigError

GENERATOR = Path(__file__).resolve().parents[1] / "tools" / "generate_configs.py"
_spec = importlib.util.spec_from_file_location("generate_configs", GENERATOR)
assert _spec is not None and _spec.loader is not None
_generate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_generate)
DEMO_FILES = {
    "demo-transductive-sage-rbm.yaml",
    "demo-transductive-sage-mlp.yaml",
    "demo-transductive-sage-moe.yaml",
    "demo-inductive-sage-rbm.yaml",
}
ALL_FILES = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))
GENERATED_FILES = sorted(set(ALL_FILES) - DEMO_FILES)


def _load(name: str) -> TrialConfig:
    return load_config(CONFIG_DIR / name)


@pytest.mark.parametrize("name", ALL_FILES)
def test_every_config_loads(name: str) -> None:
    config = _load(name)
    dataset, setting, teacher, student = name.removesuffix(".yaml").rsplit("-", 3)
    assert (config.dataset, config.setting) == (dataset, setting)
    assert (config.teacher.model, config.student.model) == (teacher, student)
    assert config.seed == 0


def test_file_set() -> None:
    assert DEMO_FILES <= set(ALL_FILES)
    assert len(GENERATED_FILES) == 81
    assert len(_generate.TABLE_A) == len(_generate.TABLE_B) == len(_generate.TABLE_C) == 27
    assert len(_generate.TABLE_D) == 9
    for student in ("rbm", "mlp", "moe"):
        assert sum(n.endswith(f"-{student}.yaml") for n in GENERATED_FILES) == 27


def test_generator_reproduces_shipped_files(tmp_path: Path) -> None:
    assert _generate.main(tmp_path) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == GENERATED_FILES
    for name in written:
        assert (tmp_path / name).read_bytes() == (CONFIG_DIR / name).read_bytes(), name


@pytest.mark.parametrize("name", GENERATED_FILES)
def test_generated_header_and_components_off(name: str) -> None:
    text = (CONFIG_DIR / name).read_text()
    assert text.startswith("# Generated from method §7 Table ")
    assert "python tools/generate_configs.py" in text.splitlines()[2]
    distill = _load(name).distill
    assert not (
        distill.reliable_sampling
        or distill.positional_encoding
        or distill.adv_augment
        or distill.similarity_distill
    )
    assert (distill.patience, distill.batch_size) == (50, -1)


def test_spot_values_against_spec_tables() -> None:
    physics = _load("coauthor-physics-transductive-gcn-rbm.yaml")  # Table A
    assert (physics.student.num_experts, physics.student.k) == (12, 3)
    assert (physics.distill.label_weight, physics.distill.temperature) == (0.1, 1.2)
    assert physics.student.vq_coef == 0.02
    assert physics.distill.pe_walk_length == 70  # Table D, academic-physics

    products = _load("ogbn-products-inductive-sage-moe.yaml")  # Table C, §7.5
    assert (products.student.num_layers, products.student.hidden_dim) == (2, 256)
    assert (products.teacher.num_layers, products.teacher.hidden_dim) == (3, 128)
    assert products.student.norm_type == products.teacher.norm_type == "batch"

    assert _load("citeseer-inductive-sage-rbm.yaml").teacher.weight_decay == 1e-4
    assert _load("citeseer-inductive-sage-mlp.yaml").teacher.weight_decay == 5e-4
    assert _load("citeseer-inductive-sage-moe.yaml").teacher.weight_decay == 5e-4
    assert _load("pubmed-inductive-sage-rbm.yaml").teacher.weight_decay == 1e-4
    assert _load("amazon-computers-transductive-gcn-mlp.yaml").teacher.weight_decay == 0.0

    cora_moe = _load("cora-transductive-gcn-moe.yaml")
    assert cora_moe.distill.max_epochs == 1000
    assert cora_moe.distill.pretrain_epochs == 50
    assert cora_moe.distill.krd_min_update_epoch == 10
    assert _load("cora-transductive-sage-moe.yaml").distill.krd_min_update_epoch == 50
    assert _load("cora-transductive-gcn-rbm.yaml").distill.krd_min_update_epoch == 50

    assert _load("cora-inductive-sage-mlp.yaml").teacher.dropout == 0.5  # §7.5
    assert _load("cora-inductive-sage-rbm.yaml").teacher.dropout == 0.6
    assert _load("coauthor-cs-transductive-gcn-rbm.yaml").teacher.dropout == 0.4
    assert _load("coauthor-cs-transductive-gcn-mlp.yaml").teacher.dropout == 0.5

    arxiv = _load("ogbn-arxiv-inductive-sage-rbm.yaml")
    assert arxiv.distill.krd_momentum == 0.9  # Table D: 0.9 for ogbn-arxiv only
    assert arxiv.distill.pe_dim == 128
    assert arxiv.student.sim_coef == 1e-7

    pubmed = _load("pubmed-transductive-sage-rbm.yaml")
    assert pubmed.student.input_attention is True
    assert (pubmed.student.num_experts, pubmed.student.k) == (7, 2)
    assert pubmed.distill.pretrain_epochs == 10
    assert _load("ogbn-products-transductive-sage-rbm.yaml").distill.temperature == 0.9
    assert _load("ogbn-products-transductive-sage-mlp.yaml").distill.temperature == 1.1

    mlp = _load("cora-transductive-gcn-mlp.yaml")
    assert (mlp.distill.pretrain_epochs, mlp.distill.max_epochs) == (0, 500)
    assert mlp.distill.label_weight == 0.3  # Table B; 0.5 in Tables A and C (§7.5)


def test_moe_and_mlp_leave_rbm_keys_out() -> None:
    moe = yaml.safe_load((CONFIG_DIR / "cora-transductive-gcn-moe.yaml").read_text())
    assert {"vq_coef", "sim_coef", "momentum", "input_attention"}.isdisjoint(moe["student"])
    mlp = yaml.safe_load((CONFIG_DIR / "cora-transductive-gcn-mlp.yaml").read_text())
    assert set(mlp["student"]) == {"model", "num_layers", "hidden_dim", "dropout", "norm_type"}


def test_demo_configs_are_small() -> None:
    for name in DEMO_FILES:
        config = _load(name)
        assert config.dataset == "demo"
        assert (config.teacher.num_layers, config.teacher.hidden_dim) == (2, 64)
        assert (config.student.num_layers, config.student.hidden_dim) == (2, 64)
        assert config.teacher.max_epochs <= 100 and config.distill.max_epochs <= 60


def test_k_not_below_num_experts_is_rejected(tmp_path: Path) -> None:
    values = yaml.safe_load((CONFIG_DIR / "cora-transductive-gcn-rbm.yaml").read_text())
    values["student"]["k"] = values["student"]["num_experts"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(ConfigError, match="k="):
        load_config(path)


def test_renamed_keys_are_read_with_a_deprecation_warning(tmp_path: Path) -> None:
    """vq_coeff / sim_coeff (before the rename; studies in MLflow and trials.json use them)."""
    path = tmp_path / "old.yaml"
    path.write_text("dataset: demo\nstudent: {vq_coeff: 0.2, sim_coeff: 0.03}\n")
    with pytest.warns(FutureWarning) as caught:
        config = load_config(path)
    assert (config.student.vq_coef, config.student.sim_coef) == (0.2, 0.03)
    messages = sorted(str(w.message) for w in caught)
    assert messages == [
        f"{path}: student.sim_coeff is deprecated: renamed sim_coef; write sim_coef "
        "(read as sim_coef until then)",
        f"{path}: student.vq_coeff is deprecated: renamed vq_coef; write vq_coef "
        "(read as vq_coef until then)",
    ]
    # a trials.json config (what `rbm-tune evaluate` / `export` read back) of an old study
    with pytest.warns(FutureWarning, match="student.vq_coeff is deprecated"):
        old = TrialConfig.from_mapping({"dataset": "demo", "student": {"vq_coeff": 0.2}})
    assert old.student.vq_coef == 0.2 and "student.vq_coef" in old.flat()
    with pytest.raises(ConfigError, match="both 'vq_coeff' and its new name 'vq_coef'"):
        TrialConfig.from_mapping({"student": {"vq_coeff": 0.2, "vq_coef": 0.1}})


def test_allowed_values_are_defined_once() -> None:
    from rbm_tune import commands, config
    from rbm_tune.models import base, moe, norm
    from rbm_tune.search_space import _STUDY_NAME
    from rbm_tune.space import study

    assert norm.NORM_TYPES is base.NORM_TYPES is config.NORM_TYPES
    assert moe.ROUTERS is config.ROUTERS and base.EXPERT_DROPOUTS is config.EXPERT_DROPOUTS
    assert commands.STUDY_NAME is study.STUDY_NAME is _STUDY_NAME


def test_find_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rbm_tune.config import find_config, shipped_configs

    names = shipped_configs()
    assert len(names) == len(ALL_FILES) and "cora-transductive-sage-rbm" in names
    shipped = CONFIG_DIR / "cora-transductive-sage-rbm.yaml"
    assert find_config("cora-transductive-sage-rbm") == shipped
    assert find_config("cora-transductive-sage-rbm.yaml") == shipped
    mine = tmp_path / "sub" / "mine.yaml"
    mine.parent.mkdir()
    mine.write_text("dataset: demo\n")
    assert find_config("mine.yaml", mine.parent) == mine  # relative to the folder given
    monkeypatch.chdir(tmp_path)
    assert find_config("sub/mine.yaml") == Path("sub/mine.yaml")  # to the working directory
    assert find_config("mine.yaml") is None and find_config("nosuch-config") is None
