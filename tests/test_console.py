"""The study console's formatting (rbm_tune/study/console.py): pure functions, and the
callback's own output on a stream (the whole console in a real study:
tests/integration/test_console.py)."""

from __future__ import annotations

import io
import logging
import os
import pickle
from pathlib import Path

import pytest

from rbm_tune.study.console import (
    Best,
    Counts,
    StudyConsole,
    best_of,
    classify,
    eta_seconds,
    format_duration,
    quiet_libraries,
    status_line,
    trial_line,
)
from rbm_tune.study.report import next_commands, summary_lines
from rbm_tune.study.summary import StudyResult


def test_durations() -> None:
    assert format_duration(0) == "0:00"
    assert format_duration(7.4) == "0:07"
    assert format_duration(754) == "12:34"
    assert format_duration(3723) == "1:02:03"
    assert format_duration(-3) == "0:00"


def test_trial_states_from_ray_status_and_last_result() -> None:
    assert classify("TERMINATED", {"final": 1, "val_acc": 0.7}) == "finished"
    assert classify("TERMINATED", {"val_acc": 0.4}) == "pruned"  # ASHA stopped it
    assert classify("TERMINATED", {"skipped": "memory"}) == "skipped"
    assert classify("TERMINATED", None) == "pruned"
    assert classify("ERROR", {"final": 1}) == "errored"
    assert classify("RUNNING", None) == "running"
    assert classify("PENDING", None) == "pending"
    assert classify("PAUSED", None) == "pending"
    counts = Counts.of(["finished", "pruned", "pruned", "running", "errored", "skipped"])
    assert (counts.finished, counts.pruned, counts.running, counts.done) == (1, 2, 1, 5)


def test_best_is_the_summary_s_best_finished_first_ties_to_the_earliest() -> None:
    rows = [  # in the order the trials were created (Ray's ids are random: not by id)
        ("c3", "finished", 0.77),
        ("a1", "finished", 0.77),
        ("b2", "pruned", 0.9),  # an ASHA-stopped trial's early value does not count ...
        ("d4", "running", 0.99),
        ("e5", "finished", None),
    ]
    assert best_of(rows, "max") == Best(0.77, "c3")
    assert best_of(rows, "min") == Best(0.77, "c3")
    # ... unless no trial finished
    assert best_of([("b2", "pruned", 0.9), ("f6", "pruned", 0.5)], "max") == Best(0.9, "b2")
    assert best_of([("d4", "running", 0.99)], "max") is None


def test_eta_from_the_ended_trials() -> None:
    assert eta_seconds(60.0, 0, 8) is None
    assert eta_seconds(60.0, 2, 8) == pytest.approx(180.0)
    assert eta_seconds(60.0, 8, 8) is None


def test_status_line() -> None:
    line = status_line(
        Counts(finished=2, pruned=1, running=2),
        8,
        metric="val_acc",
        best=Best(0.77333, "5c7e1a2b"),
        elapsed=42,
        eta=70,
    )
    assert line == (
        "3/8 done (2 finished, 1 pruned), 2 running | best val_acc 0.7733 (trial 5c7e1a2b) | "
        "0:42 elapsed, ~1:10 left"
    )
    first = status_line(Counts(running=1), 8, metric="val_acc", best=None, elapsed=0, eta=None)
    assert first == "0/8 done (0 finished), 1 running | 0:00 elapsed"
    end = status_line(
        Counts(finished=5, skipped=1, errored=2), 8, metric="loss", best=None, elapsed=5, eta=None
    )
    assert end.startswith("8/8 done (5 finished, 1 skipped, 2 errored), 0 running")


def test_trial_lines() -> None:
    result = {"val_acc": 0.76123, "epoch": 27, "final": 1}
    kw = {"done": 3, "total": 8, "metric": "val_acc"}
    assert trial_line("5c7e1a2b", "finished", result=result, **kw) == (
        "[3/8] trial 5c7e1a2b finished: val_acc 0.7612 (epoch 27)"
    )
    assert trial_line("5c7e1a2b", "pruned", result={"val_acc": 0.3, "epoch": 7}, **kw) == (
        "[3/8] trial 5c7e1a2b pruned by ASHA: val_acc 0.3000 (epoch 7)"
    )
    assert trial_line("5c7e1a2b", "skipped", result={"skipped": "memory"}, **kw) == (
        "[3/8] trial 5c7e1a2b skipped (memory): not trained"
    )
    line = trial_line("5c7e1a2b", "errored", result=None, error="ValueError: x", **kw)
    assert line == "[3/8] trial 5c7e1a2b errored: ValueError: x"
    # the study's metric, where it is not val_acc
    kw["metric"] = "train_loss"
    line = trial_line("ab", "finished", result={"train_loss": 0.5, "val_acc": 0.7}, **kw)
    assert line.endswith("train_loss 0.5000")


def test_warnings_once_and_a_terminal_s_status_line_is_redrawn_without_escapes() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    console = StudyConsole(8, "val_acc", "max", stream=term)
    console.status([])
    console.log("rbm-tune: warning: no GPU; using CPUs")
    console.log("rbm-tune: warning: no GPU; using CPUs")  # the same text again: not shown
    console.log("rbm-tune: warning: given GPU 0 on node 1a")
    console.log("rbm-tune: warning: given GPU 1 on node 1a")  # the same warning
    console.log("teacher abc (from cache)")
    console.status([], force=True)
    text = term.getvalue()
    assert "\x1b" not in text
    assert text.count("rbm-tune: warning: no GPU; using CPUs") == 1
    assert text.count("given GPU") == 1
    # the status line is drawn with a carriage return, cleared before a line is printed
    assert text.startswith("\r0/8 done (0 finished), 0 running | 0:00 elapsed")
    assert "\r\n" not in text.replace(" \r", "")
    assert text.endswith("0/8 done (0 finished), 0 running | 0:00 elapsed\n")
    # a pipe or a file: plain lines only, at most one status line per heartbeat
    now = [0.0]
    pipe = io.StringIO()
    console = StudyConsole(8, "val_acc", "max", stream=pipe, clock=lambda: now[0])
    for t in (1.0, 29.0, 31.0, 40.0, 62.0):
        now[0] = t
        console.status([])
    now[0] = 63.0
    console.status([], force=True)  # the end of the search
    shown = [f"0/8 done (0 finished), 0 running | {t} elapsed" for t in ("0:31", "1:02", "1:03")]
    assert pipe.getvalue().splitlines() == shown
    # Ray saves callbacks with the Tuner: the console pickles without its stream
    again = pickle.loads(pickle.dumps(console))
    assert again.total == 8 and again.stream is not None


def _result(tmp_path: Path, url: str) -> StudyResult:
    (tmp_path / "plots").mkdir()
    table = [
        {"trial_id": f"t{i}", "best_val_acc": 0.9 - i / 100, "test_acc": None, "epochs": 7}
        | {"asha_stopped": i == 0}
        for i in range(12)
    ]
    return StudyResult(
        name="my study",
        storage_path=tmp_path,
        experiment_url=url,
        best_config={},
        best_val_acc=0.89,
        best_test_acc=0.8,
        table=table,
        teacher_digest="d",
        teacher_trained=False,
    )


def test_summary_names_the_best_the_plots_and_the_next_commands(tmp_path: Path) -> None:
    url = "mlflow ui --backend-store-uri sqlite:////x/mlflow.db --host 127.0.0.1  (experiment 3)"
    options = {"--storage-path": "/s p", "--cache-dir": "/c"}
    lines = summary_lines(_result(tmp_path, url), "val_acc", options)
    text = "\n".join(lines)
    assert lines[1] == "study my study: top trials by val_acc (test_acc at the best-val epoch)"
    assert f"... 2 more in {tmp_path / 'results.csv'}" in lines
    # the best is the best finished trial (t0 was stopped by ASHA)
    assert f"best config (trial t1): {tmp_path / 'best_config.yaml'}" in lines
    assert f"plots: {tmp_path / 'plots'}" in lines
    nxt = lines[lines.index("next:") + 1 :]
    assert nxt[0].startswith("  rbm-tune best --name 'my study' --storage-path '/s p'  #")
    assert nxt[1].startswith(
        "  rbm-tune evaluate --name 'my study' --storage-path '/s p' --cache-dir /c  #"
    )
    assert "rbm-tune export --name 'my study' --out 'my study-student.pt' --storage-path" in text
    assert nxt[-1] == f"  {url}"
    assert "MLflow:" not in text  # the mlflow ui command says it
    # a tracking server: its experiment's address, no mlflow ui to start
    served = next_commands("demo", "http://127.0.0.1:5000/#/experiments/1", {})
    assert served[0].startswith("rbm-tune best --name demo  #")
    assert not any("mlflow ui" in c for c in served)


def test_quiet_libraries_silences_optuna_and_ray_tune_s_output_engine_and_restores(
    capfd: pytest.CaptureFixture[str],
) -> None:
    import optuna

    before = optuna.logging.get_verbosity()
    env = os.environ.get("RAY_AIR_NEW_OUTPUT")
    errors = os.environ.get("TUNE_PRINT_ALL_TRIAL_ERRORS")
    tune_log = logging.getLogger("ray.tune.tune")

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("ray.tune.tune", logging.ERROR, "tune.py", 1, msg, ("x",), None)

    incomplete, other = record("Trials did not complete: %s"), record("Snapshot failed %s")
    with quiet_libraries():
        optuna.create_study()
        assert os.environ.get("RAY_AIR_NEW_OUTPUT") == (env or "0")
        assert logging.getLogger("ray.tune").getEffectiveLevel() == logging.ERROR
        assert os.environ.get("TUNE_PRINT_ALL_TRIAL_ERRORS") == (errors or "0")
        # Ray Tune's closing list of errored trials by their function names: dropped
        assert not tune_log.filter(incomplete)
        assert tune_log.filter(other)
    assert "A new study created" not in capfd.readouterr().err
    assert optuna.logging.get_verbosity() == before
    assert os.environ.get("RAY_AIR_NEW_OUTPUT") == env
    assert os.environ.get("TUNE_PRINT_ALL_TRIAL_ERRORS") == errors
    assert tune_log.filter(incomplete)
    with quiet_libraries(False):
        assert optuna.logging.get_verbosity() == before


def test_a_failed_trial_s_error_line_names_its_folder_in_the_study(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from rbm_tune.study.console import _error_text

    staged = tmp_path / "staging" / "error.txt"
    staged.parent.mkdir()
    staged.write_text("Traceback (most recent call last):\n  ...\nValueError: bad lr\n\n")
    folder = tmp_path / "runs" / "demo" / "_trial_fn_ab12cd34_1"
    # the attributes Ray Tune's Trial has: its staged error file, its folder in the study
    trial = SimpleNamespace(error_file=str(staged), path=str(folder))
    assert _error_text(trial) == f"ValueError: bad lr; traceback in {folder}/error.txt"
    gone = SimpleNamespace(error_file=None, path=None)
    assert _error_text(gone) == "no message; traceback in the trial's error.txt"
