"""The ``rbm-tune`` command. Thin: parse, validate, call, print where things went.

Every :class:`~rbm_tune.errors.RbmTuneError` becomes one line ``rbm-tune: error: ...`` on stderr
and exit status 2; ``--debug`` re-raises it with its traceback.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from rbm_tune import __version__
from rbm_tune.cli_args import (
    Parser,
    add_cache_arg,
    add_data_args,
    add_set_arg,
    gpus,
    non_negative,
    positive,
)
from rbm_tune.errors import RbmTuneError

__all__ = ["build_parser", "main"]


def build_parser() -> Parser:
    parser = Parser(
        prog="rbm-tune",
        description="Distil a GNN teacher into a Routing-by-Memory MoE student, and tune it. "
        "'rbm-tune --space demo' runs a short study on a built-in graph (Ray Tune + Optuna + "
        "ASHA, tracked in MLflow); 'rbm-tune spaces' lists the shipped spaces and "
        "'rbm-tune COMMAND --help' describes each command.",
    )
    parser.add_argument("--version", action="version", version=f"rbm-tune {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    search = parser.add_argument_group(
        "search",
        "rbm-tune --space FILE [options]: run a study (Ray Tune + Optuna + ASHA + MLflow)",
    )
    search.add_argument(
        "--space",
        metavar="FILE",
        help="search-space YAML; a bare name is looked up in the working directory, then among "
        "the shipped spaces (demo, cora, citeseer, ..., arxiv, products: 'rbm-tune spaces')",
    )
    search.add_argument(
        "--gpus", type=gpus, default=None, help="GPUs the study may use (local Ray: declared)"
    )
    search.add_argument("--cpus", type=positive, default=None, help="CPUs the study may use")
    search.add_argument("--trials", type=positive, default=None, help="override study.num_trials")
    search.add_argument("--name", default=None, help="study name (default: the space's)")
    search.add_argument(
        "--resume",
        action="store_true",
        help="continue a killed or interrupted study (a finished one: nothing to do)",
    )
    search.add_argument(
        "--warm-start",
        action="append",
        default=None,
        metavar="STUDY",
        help="give the searcher an earlier study's finished trials first (repeatable): a study "
        "name in --storage-path, a study folder or its results.csv",
    )
    search.add_argument(
        "--verbose",
        action="store_true",
        help="also print Ray Tune's own progress tables and result boxes, and the output of "
        "Ray's worker processes (default: one progress line and a line per ended trial)",
    )
    search.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)",
    )
    search.add_argument(
        "--address",
        default=None,
        help="join this Ray cluster from one of its nodes (auto, or HEAD:6379); from another "
        "machine use rbm-tune submit",
    )
    search.add_argument(
        "--storage-path",
        default=None,
        metavar="DIR",
        help="where Ray Tune keeps the study (default: $RBM_TUNE_STORAGE, else ./rbm-tune-runs)",
    )
    add_set_arg(search, "space")
    add_data_args(search)
    add_cache_arg(search)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("best", help="print a finished study's best config as trial YAML")
    p.add_argument("--name", required=True, help="the study name")
    p.add_argument(
        "--storage-path",
        default=None,
        metavar="DIR",
        help="default: $RBM_TUNE_STORAGE, else ./rbm-tune-runs",
    )

    p = sub.add_parser("datasets", help="list datasets, whether their files are present, sizes")
    add_data_args(p)

    p = sub.add_parser("train", help="train one teacher and one student (no Ray): one trial")
    p.add_argument(
        "--config",
        required=True,
        metavar="FILE",
        help="trial YAML, or the name of a shipped config (see 'rbm-tune configs')",
    )
    add_data_args(p)
    p.add_argument("--seed", type=non_negative, help="override the config's seed")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    p.add_argument("--json", metavar="FILE", help="also write the final metrics as JSON here")
    add_set_arg(p, "config")
    add_cache_arg(p)

    p = sub.add_parser(
        "teacher", help="pre-train (or find in the cache) the teacher a space or config needs"
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--space", metavar="FILE", help="search-space YAML (or a shipped space's name)"
    )
    which.add_argument(
        "--config",
        metavar="FILE",
        help="trial YAML, or the name of a shipped config (see 'rbm-tune configs')",
    )
    p.add_argument(
        "--seeds",
        type=positive,
        default=1,
        metavar="N",
        help="teachers for the config's seed and the N-1 seeds after it (default 1)",
    )
    add_data_args(p)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    add_set_arg(p, "space or config")
    add_cache_arg(p)

    p = sub.add_parser("cache", help="list or remove cached teachers")
    cache_sub = p.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    q = cache_sub.add_parser("list", help="one row per cached teacher: key, accuracy, size, age")
    add_cache_arg(q)
    q = cache_sub.add_parser("rm", help="remove one cached teacher, or all of them")
    which = q.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "key", nargs="?", metavar="KEY_PREFIX", help="the key, or its first characters"
    )
    which.add_argument("--all", action="store_true", help="remove every cached teacher")
    add_cache_arg(q)

    sub.add_parser("configs", help="list the shipped trial configs")

    p = sub.add_parser("spaces", help="list the shipped search spaces, or print one to copy")
    spaces_sub = p.add_subparsers(dest="spaces_command", metavar="ACTION")
    q = spaces_sub.add_parser("show", help="print a shipped space's YAML exactly as shipped")
    q.add_argument("space_name", metavar="NAME", help="a name 'rbm-tune spaces' lists, e.g. cora")

    p = sub.add_parser(
        "plan",
        help="estimate each trial's memory: does the space fit its GPU or CPU share?",
        description="For the space's default point and corners: the estimated peak memory of "
        "one trial, whether it fits its share (gpus_per_trial x the card; on CPUs the host's "
        "memory / the trials at once), how many fit a 24 / 80 / 141 GB card and a 32 / 64 GiB "
        "host, the corners that do not fit, and the teacher's estimate. Needs no data files.",
    )
    p.add_argument("--space", required=True, metavar="FILE", help="search-space YAML or name")
    p.add_argument(
        "--gpu-memory", default=None, metavar="SIZE", help="the card's memory (default 80GB)"
    )
    p.add_argument(
        "--host-memory", default=None, metavar="SIZE", help="default: this host's memory"
    )
    add_set_arg(p, "space")

    from rbm_tune.cli_cluster import add_cluster_commands

    add_cluster_commands(sub)  # submit, jobs

    p = sub.add_parser(
        "evaluate",
        help="re-run a study's K best configs over S new seeds: a mean ± std table",
        description="Re-run the K best finished configs of a study, a plain MLP and the teacher "
        "over S new seeds (Ray tasks; teachers through the cache) and print a markdown table "
        "of test accuracy at the best-validation epoch (also logged to the study's MLflow run).",
    )
    p.add_argument("--name", required=True, help="the study name")
    p.add_argument("--top", type=int, default=3, metavar="K", help="configs (default 3)")
    p.add_argument("--seeds", type=int, default=5, metavar="S", help="new seeds (default 5)")
    p.add_argument(
        "--storage-path",
        default=None,
        metavar="DIR",
        help="default: $RBM_TUNE_STORAGE, else ./rbm-tune-runs",
    )
    p.add_argument("--tracking-uri", default=None, help="the study's MLflow URI")
    p.add_argument("--address", default=None, help="join this Ray cluster (as for a study)")
    p.add_argument("--cpus", type=int, default=None, help="CPUs of a local Ray")
    p.add_argument(
        "--select",
        choices=("mean-val", "search"),
        default=None,
        help="mean-val: make the config with the best mean val acc over the new seeds the "
        "study's best_config.yaml (test acc is never read); search: put the search's back",
    )
    add_set_arg(p, "re-run configs")
    add_data_args(p)
    add_cache_arg(p)

    p = sub.add_parser(
        "export",
        help="a study's student as TorchScript (torch.jit.load, no rbm-tune needed)",
    )
    p.add_argument("--name", required=True, help="the study name")
    p.add_argument("--trial", default=None, metavar="ID", help="default: the best finished one")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write, e.g. student.pt")
    p.add_argument(
        "--storage-path",
        default=None,
        metavar="DIR",
        help="default: $RBM_TUNE_STORAGE, else ./rbm-tune-runs",
    )
    from rbm_tune.cli_help import describe

    describe(parser)  # every subcommand's --help gets its paragraph
    return parser


def _run(parser: Parser, args: argparse.Namespace) -> int:
    if args.command is None:
        from rbm_tune.commands import search

        return search(args)
    if args.command == "best":
        from rbm_tune.commands import best

        return best(args)
    if args.command == "datasets":
        from rbm_tune.commands import list_datasets

        return list_datasets(args.data_root)
    if args.command == "configs":
        from rbm_tune.commands import list_configs

        return list_configs()
    if args.command == "spaces":
        from rbm_tune.space.catalog import spaces_command

        return spaces_command(args)
    if args.command == "train":
        from rbm_tune.commands import train

        return train(args)
    if args.command == "teacher":
        from rbm_tune.cache_commands import pretrain_teachers

        return pretrain_teachers(args)
    if args.command == "cache":
        from rbm_tune.cache_commands import cache_list, cache_rm

        return cache_list(args) if args.cache_command == "list" else cache_rm(args)
    if args.command == "plan":
        from rbm_tune.plan import plan_command

        return plan_command(args)
    if args.command == "submit":
        from rbm_tune.jobs import submit

        return submit(args)
    if args.command == "jobs":
        from rbm_tune.jobs import jobs

        return jobs(args)
    if args.command == "evaluate":
        from rbm_tune.evaluate import evaluate_command

        return evaluate_command(args)
    if args.command == "export":
        from rbm_tune.export import export_command

        return export_command(args)
    parser.error(f"unknown command {args.command!r}")


def main(argv: Sequence[str] | None = None, *, own_process: bool = False) -> int:
    """The command line; ``own_process``: the process is the command's own (see :func:`run`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.own_process = own_process
    if args.command is None and args.space is None:
        parser.print_help()
        return 0
    try:
        status = _run(parser, args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers below
        return status
    except RbmTuneError as err:
        if args.debug:
            raise
        message = " ".join(str(err).split())
        print(f"rbm-tune: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rbm-tune: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout went away (rbm-tune configs | head -1): not an error worth a traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def run() -> NoReturn:
    """The ``rbm-tune`` executable (and ``python -m rbm_tune``): :func:`main`, then exit.

    A process of its own may change what the garbage collector scans. The study command
    freezes the heap of its imports (torch, Ray Tune, MLflow, Optuna: ~600k objects) once they
    are loaded, and every command freezes the whole heap before the interpreter exits, whose
    final collections otherwise walk it again: measured on the 2-core CI machine, a full
    collection there took 1-3 s, the driver of a 2-trial study spent 4.7 s in 9 of them (1.8 s
    frozen), and the exit after the last line took 6.7 s (3.5 s frozen). Frozen objects are only
    kept, never collected, so this is not done when :func:`main` runs inside another program
    (tests, notebooks).
    """
    status = main(own_process=True)
    gc.freeze()
    sys.exit(status)


if __name__ == "__main__":
    run()
