"""README command 1 as a new user runs it: ``rbm-tune --space demo``, its output piped.

The compact console (rbm_tune/study/console.py): a short log of plain lines, no escape codes
or carriage returns in a pipe, no Ray Tune tables or trial-function names, no TensorBoard hint,
no Optuna or Ray routine notices, each warning once, a done-count reaching N of N, and the
summary naming the plots folder and the next commands. And the GPU-fallback warnings of the
trials and the teacher task: once each, from the driver.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import pytest

from tests.support.processes import rbm_tune_cli, stop_process_group
from tests.support.spaces import write_space

TRIALS = 8  # the demo space's study.num_trials


def test_demo_study_prints_a_compact_log(tmp_path: Path) -> None:
    proc = rbm_tune_cli(
        "--space",
        "demo",
        cwd=tmp_path,
        env={
            "HOME": str(tmp_path),  # Ray's token file lands here (token auth on, as for a user)
            "RBM_TUNE_CACHE": str(tmp_path / "cache"),  # its own cache: the teacher is trained
        },
        # as a user's shell has them: Ray's defaults, whose notices the console must keep out;
        # no tracking URI or storage: the defaults in the working directory
        unset=(
            "RAY_AUTH_MODE",
            "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S",
            "MLFLOW_TRACKING_URI",
            "RBM_TUNE_STORAGE",
        ),
    )
    try:
        out, _ = proc.communicate(timeout=500)
    finally:
        stop_process_group(proc, wait=5)
    assert proc.returncode == 0, out[-4000:]
    lines = out.splitlines()
    shown = "\n".join(lines)
    assert len(lines) <= 40, shown
    assert "\x1b" not in out and "\r" not in out, shown  # plain lines in a pipe
    for noise in ("_trial_fn_", "TensorBoard", "A new study created", "Trial status"):
        assert noise not in out, shown
    assert "Token authentication" not in out and "snapshotting" not in out, shown
    warnings = Counter(line for line in lines if "warning" in line.lower())
    assert all(n == 1 for n in warnings.values()), warnings
    # one line per ended trial, named by its id as in the summary table
    ended = [line for line in lines if re.match(rf"\[\d+/{TRIALS}\] trial [0-9a-f]+ ", line)]
    assert len(ended) == TRIALS, shown
    assert any(line.startswith(f"{TRIALS}/{TRIALS} done") for line in lines), shown
    # the summary ends the output: best config, plots, the next commands with this study's name
    plots = tmp_path.resolve() / "rbm-tune-runs" / "demo" / "plots"
    assert plots.is_dir() and any(plots.iterdir())
    tail = "\n".join(lines[lines.index("next:") :])
    assert f"plots: {plots}" in shown
    assert "best config (trial " in shown
    assert "rbm-tune best --name demo" in tail
    assert "rbm-tune evaluate --name demo" in tail
    assert "rbm-tune export --name demo --out demo-student.pt" in tail
    db = (tmp_path / "mlflow.db").resolve()
    assert f"mlflow ui --backend-store-uri sqlite:///{db} --host 127.0.0.1" in tail
    assert lines[-1].lstrip().startswith("mlflow ui")


def test_gpu_fallback_warnings_come_once_through_the_driver(
    workdir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Logical GPUs on this CUDA-less machine with study.cpu_fallback: the teacher task and
    every trial run on CPUs with a warning. Each text reaches the study's log once, from the
    driver; no trial process prints it (Ray streams worker output here, colour codes and all)."""
    import ray

    from rbm_tune.search_space import load_space
    from rbm_tune.study import run_study

    path = write_space(workdir, "fallback", trials=4, concurrent=4, gpus=0.5, epochs=8)
    path.write_text(path.read_text().replace("study:\n", "study:\n  cpu_fallback: true\n"))
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray.init(num_cpus=4, num_gpus=2, include_dashboard=False)  # logical GPUs, worker output on
    lines: list[str] = []
    result = run_study(load_space(path), gpus=2, verbose=0, log=lines.append)
    assert result.teacher_trained and not result.failed
    warnings = [line for line in lines if line.startswith("rbm-tune: warning:")]
    trial = [w for w in warnings if "this trial was given GPU" in w]
    teacher = [w for w in warnings if "this teacher task was given GPU" in w]
    assert len(trial) == 1 and len(teacher) == 1, lines
    assert len(warnings) == len(set(warnings)), warnings
    printed = capfd.readouterr()
    assert "was given GPU" not in printed.out + printed.err  # not by the processes themselves
