"""``rbm-tune teacher`` (fill the teacher cache) and ``rbm-tune cache list|rm``."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from rbm_tune.commands import _stderr, check_device, resolve_config_path
from rbm_tune.errors import ConfigError

__all__ = ["cache_list", "cache_rm", "pretrain_teachers"]


def pretrain_teachers(args: argparse.Namespace) -> int:
    """Train, or find in the cache, the teacher of a trial config for each requested seed."""
    if args.space is not None:
        from rbm_tune.search_space import load_space

        # the teacher section of a space is always fixed: its default point has the teacher
        config = load_space(args.space, args.overrides or ()).default_config()
    else:
        from rbm_tune.config import load_config

        config = load_config(resolve_config_path(args.config), args.overrides or ())
    if args.seeds < 1:
        raise ConfigError(f"--seeds {args.seeds} must be >= 1")
    from rbm_tune.teacher_cache import TeacherKey, check_cache_dir

    check_device(args.device)
    cache = check_cache_dir(args.cache_dir)
    cache.check_writable()  # filling the cache is the point: a read-only one is an error now

    from rbm_tune.data import Graph, load_graph
    from rbm_tune.teacher import TeacherOutputs, train_teacher
    from rbm_tune.trial import resolve_device

    device = resolve_device(args.device)
    for seed in range(config.seed, config.seed + args.seeds):
        graph = load_graph(
            config.dataset,
            root=args.data_root,
            setting=config.setting,
            seed=seed,
            download=args.download,
            cache_dir=args.cache_dir,
        )
        key = TeacherKey.of(graph, config.teacher, seed=seed)
        trained: list[TeacherOutputs] = []

        def train(
            graph: Graph = graph, seed: int = seed, trained: list[TeacherOutputs] = trained
        ) -> TeacherOutputs:
            trained.append(train_teacher(config.teacher, graph, seed=seed, device=device))
            return trained[-1]

        out = cache.get_or_train(
            key, train, log=None if args.quiet else _stderr, require_cache=True
        )
        print(
            f"{key.digest[:12]}  {'trained' if trained else 'cached':<7}  {config.dataset} "
            f"{config.setting} {_teacher_name(key.teacher)} seed {seed}  "
            f"val_acc {out.val_acc:.4f}  test_acc {out.test_acc:.4f}"
        )
    print(f"teacher cache: {cache.uri}")
    return 0


def cache_list(args: argparse.Namespace) -> int:
    """Print one row per cached teacher: key prefix, data, teacher, seed, accuracy, size, age."""
    from rbm_tune.teacher_cache import check_cache_dir

    cache = check_cache_dir(args.cache_dir)
    entries = cache.entries()
    total = sum(e.size_bytes for e in entries)
    print(f"teacher cache: {cache.uri} ({len(entries)} entries, {_size(total)})")
    if entries:
        print(
            f"{'key':<12}  {'dataset':<16} {'setting':<12} {'teacher':<12} {'seed':>4} "
            f"{'val_acc':>7} {'test_acc':>8} {'size':>9} {'age':>5}"
        )
    for e in entries:
        k = e.key
        print(
            f"{e.digest[:12]}  {k['dataset']:<16} {k['setting']:<12} "
            f"{_teacher_name(k['teacher']):<12} {k['seed']:>4} {e.val_acc:>7.4f} "
            f"{e.test_acc:>8.4f} {_size(e.size_bytes):>9} {_age(e.age_seconds):>5}"
        )
    return 0


def cache_rm(args: argparse.Namespace) -> int:
    """Remove one cached teacher by key prefix, or all of them with ``--all``."""
    from rbm_tune.teacher_cache import check_cache_dir

    cache = check_cache_dir(args.cache_dir)
    if args.all:
        print(f"removed {cache.clear()} cached teacher(s) from {cache.uri}")
        return 0
    entry = cache.remove(args.key)
    k = entry.key
    print(
        f"removed {entry.digest[:12]} ({k['dataset']} {k['setting']} "
        f"{_teacher_name(k['teacher'])} seed {k['seed']}) from {cache.uri}"
    )
    return 0


def _teacher_name(teacher: Mapping[str, Any]) -> str:
    """``sage:2x64``: model, layers and width of a teacher spec dict."""
    return f"{teacher.get('model')}:{teacher.get('num_layers')}x{teacher.get('hidden_dim')}"


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _age(seconds: float) -> str:
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= span:
            return f"{seconds // span:.0f}{unit}"
    return f"{seconds:.0f}s"
