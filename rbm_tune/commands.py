"""What each ``rbm-tune`` subcommand does, behind the argument parsing in ``cli.py``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rbm_tune.errors import ConfigError

__all__ = ["list_configs", "list_datasets", "resolve_config_path", "train"]

CONFIG_DIR = Path(__file__).parent / "configs"


def list_datasets(data_root: str | None) -> int:
    """Print every dataset, whether its files are present under the data root, and its sizes."""
    from rbm_tune.data import SOURCES, dataset_status, resolve_data_root

    root = resolve_data_root(data_root)
    print(f"data root: {root}")
    header = f"{'dataset':<18} {'present':<8} {'nodes':>9} {'features':>8} {'classes':>7}  folder"
    print(header)
    for name, source in SOURCES.items():
        present, missing = dataset_status(name, root)
        folder = "(embedded)" if source.kind == "demo" else str(root / source.folder)
        note = "" if present else f"  missing {len(missing)} file(s)"
        print(
            f"{name:<18} {'yes' if present else 'no':<8} {source.nodes:>9} "
            f"{source.features:>8} {source.classes:>7}  {folder}{note}"
        )
    return 0


def list_configs() -> int:
    """Print the names of the shipped trial configs."""
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        print(path.stem)
    return 0


def resolve_config_path(value: str) -> Path:
    """A path to a YAML file, or the name of a shipped config (``cora-transductive-sage-rbm``)."""
    path = Path(value)
    if path.is_file():
        return path
    shipped = CONFIG_DIR / f"{value.removesuffix('.yaml')}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(
        f"no config file {value!r}; give a path to a YAML file or a name listed by "
        "'rbm-tune configs'"
    )


def train(args: argparse.Namespace) -> int:
    """One trial without Ray: teacher, then student; live progress, final metrics."""
    from rbm_tune.config import load_config

    # validate the config before paying for the torch import
    config = load_config(resolve_config_path(args.config))
    if args.seed is not None:
        config = config.replace(seed=args.seed)

    from rbm_tune.trial import run_trial

    def progress(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    result = run_trial(
        config,
        data_root=args.data_root,
        download=args.download,
        device=args.device,
        log=progress,
    )
    print(result.format())
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=2))
    return 0
