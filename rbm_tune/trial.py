"""One trial end to end, without Ray: data → teacher → (PE) → student → result.

This is what ``rbm-tune train`` runs, and what the search's trial function will call.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rbm_tune.config import TrialConfig
from rbm_tune.data import Graph, load_graph
from rbm_tune.distill import DistillResult, Report, train_student
from rbm_tune.metrics import BEST_EPOCH, TEST_ACC, TEST_ACC_ORACLE, VAL_ACC
from rbm_tune.teacher import TeacherOutputs, train_teacher
from rbm_tune.teacher_cache import TeacherCache, TeacherKey

__all__ = ["TrialResult", "resolve_device", "run_trial", "seed_everything", "student_features"]


def seed_everything(seed: int) -> None:
    """One seed into python ``random``, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass(frozen=True)
class TrialResult:
    """Final numbers of one trial; test accuracies are at the best-validation epoch.

    ``teacher_seconds`` is the time spent getting the teacher (training it, or loading it from
    the teacher cache); ``teacher_key`` is its cache digest.
    """

    dataset: str
    setting: str
    seed: int
    teacher: str
    student: str
    teacher_val_acc: float
    teacher_test_acc: float
    teacher_test_acc_oracle: float
    val_acc: float
    test_acc: float
    test_acc_oracle: float
    best_epoch: int
    epochs: int
    teacher_seconds: float
    student_seconds: float
    seconds: float
    teacher_key: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        return (
            f"{self.dataset}/{self.setting} seed {self.seed}: "
            f"teacher {self.teacher} test {self.teacher_test_acc:.4f} "
            f"(val {self.teacher_val_acc:.4f}); "
            f"student {self.student} {TEST_ACC} {self.test_acc:.4f} at best {VAL_ACC} "
            f"{self.val_acc:.4f} ({BEST_EPOCH} {self.best_epoch}/{self.epochs}); "
            f"{TEST_ACC_ORACLE} {self.test_acc_oracle:.4f}; {self.seconds:.1f}s"
        )


def student_features(
    config: TrialConfig, graph: Graph, cache_dir: str | Path | None = None
) -> torch.Tensor:
    """Node features the student sees: raw, plus DeepWalk columns when enabled (method §4.7).

    The walk graph is the training graph; inductive held-out nodes get the mean of their
    full-graph neighbours' embeddings. Embeddings are cached per graph fingerprint, seed and
    PE parameters in ``<cache_dir>/deepwalk`` (``cache_dir``: the rbm-tune cache, a directory
    or URI, as ``--cache-dir`` gives it; ``None``: ``RBM_TUNE_CACHE``, else the user cache).
    """
    d = config.distill
    if not d.positional_encoding:
        return graph.x
    from rbm_tune.deepwalk_cache import cached_deepwalk, deepwalk_cache_key, deepwalk_store
    from rbm_tune.positional import deepwalk, impute_heldout

    key = deepwalk_cache_key(
        graph.fingerprint,
        seed=config.seed,
        walk_length=d.pe_walk_length,
        num_walks=d.pe_num_walks,
        window=d.pe_window,
        epochs=d.pe_epochs,
        dim=d.pe_dim,
    )

    def compute() -> torch.Tensor:
        return deepwalk(
            graph.observed_edge_index,
            graph.num_observed,
            walk_length=d.pe_walk_length,
            num_walks=d.pe_num_walks,
            window=d.pe_window,
            epochs=d.pe_epochs,
            dim=d.pe_dim,
            seed=config.seed,
        )

    pe = cached_deepwalk(deepwalk_store(cache_dir), key, compute)
    if graph.is_inductive:
        pe = impute_heldout(
            pe, graph.observed_idx, graph.test_idx, graph.edge_index, graph.num_nodes
        )
    return torch.cat([graph.x, pe.to(graph.x.dtype)], dim=1)


def run_trial(
    config: TrialConfig,
    *,
    data_root: str | Path | None = None,
    download: bool = False,
    device: str | torch.device = "auto",
    log: Callable[[str], None] | None = None,
    report: Report | None = None,
    graph: Graph | None = None,
    teacher: TeacherOutputs | None = None,
    cache: TeacherCache | None = None,
    cache_dir: str | Path | None = None,
) -> TrialResult:
    """Run one trial: load data, get the teacher (given, cached or trained), distil the student.

    Args:
        config: the trial.
        data_root, download: where the dataset lives; see ``rbm_tune.data.load_graph``.
        device: ``auto``, ``cpu``, ``cuda``...
        log: receives human-readable progress lines.
        report: receives the student's per-epoch metric dicts.
        graph, teacher: reuse an already loaded graph / trained teacher (``teacher`` skips
            the cache).
        cache: the teacher cache; default ``TeacherCache.in_cache_dir(cache_dir)``.
        cache_dir: the rbm-tune cache root (``--cache-dir``; default ``RBM_TUNE_CACHE``, else
            the user cache): teachers in ``<cache_dir>/teachers``, DeepWalk embeddings in
            ``<cache_dir>/deepwalk``, processed datasets in ``<cache_dir>/processed`` (on an
            object store, those go to the default local cache).
    """
    start = time.perf_counter()
    say = log or (lambda _line: None)
    dev = resolve_device(device)
    seed_everything(config.seed)
    if graph is None:
        graph = load_graph(
            config.dataset,
            root=data_root,
            setting=config.setting,
            seed=config.seed,
            download=download,
            cache_dir=cache_dir,
        )
    say(f"data: {graph.summary()}; device {dev}")
    key = TeacherKey.of(graph, config.teacher, seed=config.seed)
    tick = time.perf_counter()
    if teacher is None:
        cache = cache or TeacherCache.in_cache_dir(cache_dir)
        fixed_graph = graph
        teacher = cache.get_or_train(
            key,
            lambda: train_teacher(config.teacher, fixed_graph, seed=config.seed, device=dev),
            log=say,
        )
    teacher_seconds = time.perf_counter() - tick
    # a cache hit leaves the global RNGs where a miss would not: reseed so both give one student
    seed_everything(config.seed)
    say(
        f"teacher {config.teacher.model}: test_acc {teacher.test_acc:.4f} at best val_acc "
        f"{teacher.val_acc:.4f} (epoch {teacher.best_epoch}/{teacher.epochs}, "
        f"trained in {teacher.seconds:.1f}s)"
    )
    features = student_features(config, graph, cache_dir)

    def on_epoch(m: dict[str, float]) -> None:
        if report is not None:
            report(m)
        phase = " pretrain" if m["is_pretraining"] else ""
        say(
            f"epoch {int(m['epoch']):4d}{phase} loss {m['train_loss']:.4f} "
            f"train {m['train_acc']:.4f} val {m['val_acc']:.4f} best {m['best_val_acc']:.4f}"
        )

    result: DistillResult = train_student(
        config, graph, teacher, report=on_epoch, features=features, device=dev
    )
    return TrialResult(
        dataset=config.dataset,
        setting=config.setting,
        seed=config.seed,
        teacher=config.teacher.model,
        student=config.student.model,
        teacher_val_acc=teacher.val_acc,
        teacher_test_acc=teacher.test_acc,
        teacher_test_acc_oracle=teacher.test_acc_oracle,
        val_acc=result.val_acc,
        test_acc=result.test_acc,
        test_acc_oracle=result.test_acc_oracle,
        best_epoch=result.best_epoch,
        epochs=result.epochs,
        teacher_seconds=teacher_seconds,
        student_seconds=result.seconds,
        seconds=time.perf_counter() - start,
        teacher_key=key.digest,
    )
