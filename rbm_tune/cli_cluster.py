"""``rbm-tune submit`` and ``rbm-tune jobs``: their arguments (rbm_tune/jobs.py runs them)."""

from __future__ import annotations

import argparse
from typing import Any

from rbm_tune.cli_args import add_address_arg, add_set_arg, gpus, positive

__all__ = ["add_cluster_commands"]


def add_cluster_commands(sub: Any) -> None:
    """Add ``submit`` and ``jobs`` to the subparsers ``sub``."""
    p = sub.add_parser(
        "submit",
        help="run a study as a Ray job on a remote cluster (Job Submission SDK)",
        description="Submit 'rbm-tune --space FILE' as a Ray job: the space file and this "
        "rbm_tune package travel in the job's runtime environment; logs stream until the job "
        "ends (Ctrl-C detaches, the job goes on); the job id is printed last.",
    )
    add_address_arg(p)
    p.add_argument("--space", required=True, metavar="FILE", help="search-space YAML or name")
    p.add_argument("--gpus", type=gpus, default=None, help=argparse.SUPPRESS)  # an error
    p.add_argument("--trials", type=positive, default=None, help="override study.num_trials")
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
    add_set_arg(p, "space")

    p = sub.add_parser("jobs", help="list, inspect, follow or stop submitted study jobs")
    jobs_sub = p.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)
    q = jobs_sub.add_parser("list", help="every job on the cluster")
    add_address_arg(q)
    for action, text in (
        ("status", "a job's status"),
        ("logs", "a job's logs so far (--follow: until it ends)"),
        ("stop", "stop a job"),
    ):
        q = jobs_sub.add_parser(action, help=text)
        q.add_argument("job_id", metavar="JOB_ID")
        add_address_arg(q)
        if action == "logs":
            q.add_argument("--follow", action="store_true", help="stream until the job ends")
