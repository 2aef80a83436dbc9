"""The ``rbm-tune`` parser's parts: the one-line-error parser class, checked number types and
the options several commands share (data, cache, ``--set``, a cluster's address)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any, NoReturn

__all__ = [
    "Parser",
    "add_address_arg",
    "add_cache_arg",
    "add_data_args",
    "add_set_arg",
    "gpus",
    "non_negative",
    "number_type",
    "positive",
]


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line, like every other rbm-tune error.

    argparse prints the usage block and then the error (two or more lines); here it is
    ``rbm-tune: error: <what>; see 'rbm-tune <command> --help'`` and exit status 2. Subparsers
    inherit the class (``add_subparsers`` uses ``type(self)``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from rbm_tune.cli_help import Formatter

        kwargs.setdefault("formatter_class", Formatter)  # no line break inside "rbm-tune"
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        text = " ".join(message.split())
        self.exit(2, f"rbm-tune: error: {text}; see '{self.prog} --help'\n")


def number_type(
    kind: Callable[[str], float], what: str, ok: Callable[[float], bool], rule: str
) -> Callable[[str], float]:
    """An argparse ``type=`` that parses with ``kind`` and rejects values failing ``ok``."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}; give {rule}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{text} is out of range; give {rule}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


gpus = number_type(
    float, "a number of GPUs", lambda v: math.isfinite(v) and v >= 0, "0 or more, e.g. 1 or 0.5"
)
positive = number_type(int, "an integer", lambda v: v >= 1, "an integer >= 1")
non_negative = number_type(int, "an integer", lambda v: v >= 0, "an integer >= 0")


def add_data_args(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
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


def add_cache_arg(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="rbm-tune cache: a directory (may be shared by a cluster) or a file://, s3:// or "
        "gs:// URI: teachers, DeepWalk embeddings and processed datasets (a local DIR only) "
        "live under it (default: $RBM_TUNE_CACHE, else "
        "~/.cache/rbm-tune)",
    )


def add_set_arg(p: argparse.ArgumentParser | argparse._ArgumentGroup, what: str) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help=f"change one key of the {what}, checked as if the file said it (repeatable): "
        "--set distill.max_epochs=100"
        + (", --set 'student.hidden_dim={categorical: [64, 128]}'" if what == "space" else ""),
    )


def add_address_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        default=None,
        help="the head's job server, http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS, an "
        "http:// $RAY_ADDRESS, else http://127.0.0.1:8265)",
    )
