"""The description paragraph of each ``rbm-tune`` subcommand's ``--help``.

:func:`describe` fills every subcommand parser that :mod:`rbm_tune.cli` built without a
``description=`` from :data:`DESCRIPTIONS` (keyed by the command words, ``"cache list"``), so
each ``--help`` says what the command does, what it reads and what it writes, not only its
usage line. A test walks the parser and fails on a subcommand with no description.
"""

from __future__ import annotations

import argparse
import re
import textwrap
from collections.abc import Iterator

__all__ = ["DESCRIPTIONS", "Formatter", "describe", "subcommands"]


class Formatter(argparse.HelpFormatter):
    """argparse's help layout, but lines never break inside a hyphenated word: ``rbm-tune``,
    ``--storage-path`` and ``best_config.yaml`` stay whole."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        text = re.sub(r"\s+", " ", text).strip()
        return textwrap.fill(
            text, width, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False
        )

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(re.sub(r"\s+", " ", text).strip(), width, break_on_hyphens=False)


DESCRIPTIONS = {
    "best": "Print the best config of a finished study (its folder's best_config.yaml) as a "
    "trial config: save it and run it with 'rbm-tune train --config FILE', which reproduces "
    "the trial. The best trial is the finished one with the best value of the study's metric "
    "(validation accuracy unless the space says otherwise); ties go to the earliest trial.",
    "datasets": "List every dataset rbm-tune knows: whether its files are present under the "
    "data root, and its nodes, features and classes. 'demo' is generated in code and always "
    "present; the others are read from the data root (--download fetches missing ones).",
    "train": "Train one trial without Ray: the teacher (from the teacher cache, or trained and "
    "cached), then the student distilled from it, with a progress line per epoch. Prints the "
    "final metrics; --json also writes them to a file. The config is a trial YAML, e.g. the "
    "output of 'rbm-tune best'; --set changes one of its keys.",
    "teacher": "Train the teacher a space or config needs, or find it in the teacher cache, "
    "for one or more seeds, so that studies and 'rbm-tune train' start from a cached teacher. "
    "Prints one line per teacher: its cache key, whether it was trained, its accuracy.",
    "cache": "Inspect or clean the teacher cache: 'list' shows one row per cached teacher, "
    "'rm' removes one by key prefix or all of them. Studies and 'rbm-tune train' fill it.",
    "cache list": "One row per cached teacher: key prefix, dataset, setting, teacher, seed, "
    "validation and test accuracy, size and age, and the cache's total size.",
    "cache rm": "Remove one cached teacher (by its key or the key's first characters, as "
    "'rbm-tune cache list' prints it) or, with --all, every cached teacher. The next study or "
    "'rbm-tune train' that needs a removed teacher trains it again.",
    "configs": "List the names of the shipped trial configs (one per dataset, setting, teacher "
    "and student, the reference settings), one per line; 'rbm-tune train --config NAME' runs "
    "one, and a space's 'base: NAME' starts from one.",
    "spaces": "List the shipped search spaces, one line each: name, dataset, setting, teacher "
    "and student models, trials and how many parameters it searches. 'rbm-tune spaces show "
    "NAME' prints one to copy; 'rbm-tune --space NAME' runs it, '--set KEY=VALUE' changes a "
    "key without copying it.",
    "spaces show": "Print a shipped search space exactly as shipped, e.g. 'rbm-tune spaces show "
    "cora > my-cora.yaml', then edit it and run 'rbm-tune --space my-cora.yaml'.",
    "jobs": "List, inspect, follow or stop the study jobs submitted to a Ray cluster with "
    "'rbm-tune submit' (Ray's Job Submission API on the head's dashboard port).",
    "jobs list": "Every job on the cluster: its id, status, study and entrypoint.",
    "jobs status": "One job's status (PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED).",
    "jobs logs": "One job's logs so far; --follow streams them until the job ends.",
    "jobs stop": "Stop one job; its study can be continued later with 'rbm-tune submit --resume'.",
    "export": "Write a study's trained student as a TorchScript file: the best finished trial's "
    "(or --trial ID's) checkpoint, loadable with torch.jit.load and no rbm-tune installed. "
    "The student maps node features to class logits.",
}


def subcommands(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every subcommand parser under ``parser``, depth first, with its command words."""
    for action in parser._actions:  # argparse keeps no public list of subparsers
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*words, name), sub
                yield from subcommands(sub, (*words, name))


def describe(parser: argparse.ArgumentParser) -> None:
    """Give every subcommand of ``parser`` without a description its :data:`DESCRIPTIONS`
    paragraph (one built with ``description=`` keeps its own)."""
    for words, sub in subcommands(parser):
        if not sub.description:
            sub.description = DESCRIPTIONS.get(" ".join(words))
