"""The ``rbm-tune`` command. Thin: parse, validate, call, print where things went.

Every :class:`~rbm_tune.errors.RbmTuneError` becomes one line ``rbm-tune: error: ...`` on stderr
and exit status 2; ``--debug`` re-raises it with its traceback.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from rbm_tune import __version__
from rbm_tune.errors import RbmTuneError

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
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


def _number_type(
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


_gpus = _number_type(
    float, "a number of GPUs", lambda v: math.isfinite(v) and v >= 0, "0 or more, e.g. 1 or 0.5"
)
_positive = _number_type(int, "an integer", lambda v: v >= 1, "an integer >= 1")
_non_negative = _number_type(int, "an integer", lambda v: v >= 0, "an integer >= 0")


def _add_data_args(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
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


def _add_cache_arg(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="rbm-tune cache: a directory (may be shared by a cluster) or a file://, s3:// or "
        "gs:// URI: teachers, DeepWalk embeddings and processed datasets (a local DIR only) "
        "live under it (default: $RBM_TUNE_CACHE, else "
        "~/.cache/rbm-tune)",
    )


def _add_set_arg(p: argparse.ArgumentParser | argparse._ArgumentGroup, what: str) -> None:
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


def build_parser() -> _Parser:
    parser = _Parser(
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
        "--gpus", type=_gpus, default=None, help="GPUs the study may use (local Ray: declared)"
    )
    search.add_argument("--cpus", type=_positive, default=None, help="CPUs the study may use")
    search.add_argument("--trials", type=_positive, default=None, help="override study.num_trials")
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
    _add_set_arg(search, "space")
    _add_data_args(search)
    _add_cache_arg(search)
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
    _add_data_args(p)

    p = sub.add_parser("train", help="train one teacher and one student (no Ray): one trial")
    p.add_argument(
        "--config",
        required=True,
        metavar="FILE",
        help="trial YAML, or the name of a shipped config (see 'rbm-tune configs')",
    )
    _add_data_args(p)
    p.add_argument("--seed", type=_non_negative, help="override the config's seed")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    p.add_argument("--json", metavar="FILE", help="also write the final metrics as JSON here")
    _add_set_arg(p, "config")
    _add_cache_arg(p)

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
        type=_positive,
        default=1,
        metavar="N",
        help="teachers for the config's seed and the N-1 seeds after it (default 1)",
    )
    _add_data_args(p)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    _add_set_arg(p, "space or config")
    _add_cache_arg(p)

    p = sub.add_parser("cache", help="list or remove cached teachers")
    cache_sub = p.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    q = cache_sub.add_parser("list", help="one row per cached teacher: key, accuracy, size, age")
    _add_cache_arg(q)
    q = cache_sub.add_parser("rm", help="remove one cached teacher, or all of them")
    which = q.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "key", nargs="?", metavar="KEY_PREFIX", help="the key, or its first characters"
    )
    which.add_argument("--all", action="store_true", help="remove every cached teacher")
    _add_cache_arg(q)

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
    _add_set_arg(p, "space")

    p = sub.add_parser(
        "submit",
        help="run a study as a Ray job on a remote cluster (Job Submission SDK)",
        description="Submit 'rbm-tune --space FILE' as a Ray job: the space file and this "
        "rbm_tune package travel in the job's runtime environment; logs stream until the job "
        "ends (Ctrl-C detaches, the job goes on); the job id is printed last.",
    )
    _add_address_arg(p)
    p.add_argument("--space", required=True, metavar="FILE", help="search-space YAML or name")
    p.add_argument("--gpus", type=_gpus, default=None, help=argparse.SUPPRESS)  # an error
    p.add_argument("--trials", type=_positive, default=None, help="override study.num_trials")
    p.add_argument("--name", default=None, help="study name (default: the space's)")
    p.add_argument("--resume", action="store_true", help="continue the study on the cluster")
    p.add_argument(
        "--warm-start",
        action="append",
        default=None,
        metavar="STUDY",
        help="give the searcher an earlier study's finished trials first (repeatable): a study "
        "folder or results.csv here (it travels with the job), else a study name in the "
        "cluster's storage path",
    )
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow URI as the cluster sees it (default: the head's $MLFLOW_TRACKING_URI, "
        "else sqlite:///$HOME/rbm-tune-runs/mlflow.db on the head)",
    )
    p.add_argument(
        "--storage-path",
        default=None,
        metavar="DIR",
        help="Ray results folder on the cluster, shared by all nodes (default: the head's "
        "$RBM_TUNE_STORAGE, else $HOME/rbm-tune-runs)",
    )
    p.add_argument("--data-root", metavar="DIR", help="dataset folder on the cluster")
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="teacher cache on the cluster (shared dir, s3://, gs://)",
    )
    p.add_argument("--job-id", default=None, help="submission id (default: Ray picks one)")
    p.add_argument(
        "--python", default="python", help="interpreter on the head (default: python on PATH)"
    )
    p.add_argument(
        "--use-installed",
        action="store_true",
        help="run the cluster's installed rbm-tune instead of uploading this copy",
    )
    p.add_argument("--no-wait", action="store_true", help="print the job id and return")
    _add_set_arg(p, "space")

    p = sub.add_parser("jobs", help="list, inspect, follow or stop submitted study jobs")
    jobs_sub = p.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)
    q = jobs_sub.add_parser("list", help="every job on the cluster")
    _add_address_arg(q)
    for action, text in (
        ("status", "a job's status"),
        ("logs", "a job's logs so far (--follow: until it ends)"),
        ("stop", "stop a job"),
    ):
        q = jobs_sub.add_parser(action, help=text)
        q.add_argument("job_id", metavar="JOB_ID")
        _add_address_arg(q)
        if action == "logs":
            q.add_argument("--follow", action="store_true", help="stream until the job ends")

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
    _add_set_arg(p, "re-run configs")
    _add_data_args(p)
    _add_cache_arg(p)

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


def _add_address_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        default=None,
        help="the head's job server, http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS, an "
        "http:// $RAY_ADDRESS, else http://127.0.0.1:8265)",
    )


def _run(parser: _Parser, args: argparse.Namespace) -> int:
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
        from rbm_tune.commands import pretrain_teachers

        return pretrain_teachers(args)
    if args.command == "cache":
        from rbm_tune.commands import cache_list, cache_rm

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
