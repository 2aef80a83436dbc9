"""``--cache-dir`` holds everything a trial caches: processed datasets, teachers, DeepWalk."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rbm_tune.config import TrialConfig

CONFIG = {
    "dataset": "cora",
    "teacher": {"model": "sage", "hidden_dim": 8, "max_epochs": 2, "patience": 2},
    "student": {"model": "mlp", "hidden_dim": 8},
    "distill": {
        "max_epochs": 2,
        "patience": 2,
        "positional_encoding": True,
        "pe_walk_length": 5,
        "pe_num_walks": 1,
        "pe_window": 2,
        "pe_dim": 4,
    },
}


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if not p.is_dir())


@pytest.mark.slow
def test_a_given_cache_dir_keeps_home_and_rbm_tune_cache_empty(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``rbm-tune evaluate``'s task (``run_trial`` with ``cache_dir``) on real cora, with
    DeepWalk on: the processed dataset, the teacher and the embedding all land in the given
    cache; nothing under ``$RBM_TUNE_CACHE`` or ``$HOME``."""
    from rbm_tune.evaluate import _run

    home, env, cache = tmp_path / "home", tmp_path / "env", tmp_path / "given"
    home.mkdir(), env.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("RBM_TUNE_CACHE", str(env))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    config = TrialConfig.from_mapping(CONFIG).to_dict()
    threads = torch.get_num_threads()
    try:
        first = _run(config, str(shared_data), str(cache))
        again = _run(config, str(shared_data), str(cache))
    finally:
        torch.set_num_threads(threads)  # _run pins one thread, as a Ray task should

    assert _files(home) == [] and _files(env) == []
    assert len(list(cache.glob("processed/Cora-*/Cora/processed/*.pt"))) >= 1
    assert [p.name for p in _files(cache / "teachers") if p.name != "payload.pt"].count(
        "meta.json"
    ) == 1
    deepwalk = [p for p in _files(cache / "deepwalk") if p.name == "payload.pt"]
    assert len(deepwalk) == 1  # computed once, read back by the second run
    first.pop("seconds"), again.pop("seconds")
    for timing in ("teacher_seconds", "student_seconds"):
        first.pop(timing), again.pop(timing)
    assert first == again
