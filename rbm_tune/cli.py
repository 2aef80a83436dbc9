"""The ``rbm-tune`` command. Thin: parse, validate, call, print where things went.

Every :class:`~rbm_tune.errors.RbmTuneError` becomes one line ``rbm-tune: error: ...`` on stderr
and exit status 2; ``--debug`` re-raises it with its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rbm_tune import __version__
from rbm_tune.errors import RbmTuneError

__all__ = ["build_parser", "main"]


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-root",
        metavar="DIR",
        help="folder holding the datasets (default: $RBM_TUNE_DATA, else ~/.cache/rbm-tune/data)",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="let PyG/OGB download missing dataset files into the data root (needs internet)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rbm-tune",
        description="Distil a GNN teacher into a Routing-by-Memory MoE student, and tune it.",
    )
    parser.add_argument("--version", action="version", version=f"rbm-tune {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("datasets", help="list datasets, whether their files are present, sizes")
    _add_data_args(p)

    p = sub.add_parser("train", help="train one teacher and one student (no Ray): one trial")
    p.add_argument(
        "--config",
        required=True,
        metavar="FILE",
        help="trial YAML, or the name of a shipped config (see 'rbm-tune configs')",
    )
    _add_data_args(p)
    p.add_argument("--seed", type=int, help="override the config's seed")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    p.add_argument("--json", metavar="FILE", help="also write the final metrics as JSON here")

    sub.add_parser("configs", help="list the shipped trial configs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "datasets":
            from rbm_tune.commands import list_datasets

            return list_datasets(args.data_root)
        if args.command == "configs":
            from rbm_tune.commands import list_configs

            return list_configs()
        if args.command == "train":
            from rbm_tune.commands import train

            return train(args)
    except RbmTuneError as err:
        if args.debug:
            raise
        message = " ".join(str(err).split())
        print(f"rbm-tune: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rbm-tune: interrupted", file=sys.stderr)
        return 130
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
