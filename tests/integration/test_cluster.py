"""A real 2-node Ray cluster on this machine: ``rbm-tune submit``, ``jobs`` and ``--address``.

Two ``ray start`` processes (a head with the dashboard / job server, and a worker node with its
own temp dir and CPUs) form the cluster. The worker node runs in its own mount namespace
(``unshare -m``) with an empty tmpfs over the work folder's ``head-only/``: like a second machine,
it cannot see what the head writes there, while the rest of the work folder stands for a shared
filesystem both mount. Ray binds the machine's public interface, so the whole
cluster, and every command that talks to it, runs in a network namespace that has only ``lo``:
the one CI already runs the suite in, or one this module makes (root needed; skipped otherwise).
The cluster is stopped by process group, and the namespace deleted, even when a test fails.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from rbm_tune.teacher_cache import TeacherCache
from tests.support.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
SPACES = Path(__file__).resolve().parents[2] / "rbm_tune" / "search_spaces"


def _only_loopback() -> bool:
    return sorted(os.listdir("/sys/class/net")) == ["lo"]


@dataclass
class Cluster:
    prefix: list[str]  # runs a command inside the cluster's network namespace
    env: dict[str, str]
    gcs: str  # 127.0.0.1:PORT
    dashboard: str  # http://127.0.0.1:PORT
    node_ids: set[str]
    work: Path
    worker_id: str  # the node in its own mount namespace

    def run(self, *args: str, timeout: float = 420) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self.prefix, *args],
            env=self.env,
            cwd=self.work,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [*self.prefix, *args],
            env=self.env,
            cwd=self.work,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # a shell's background job (or a test runner's worker) may have SIGINT ignored, and
            # an ignored signal stays ignored across exec: give the command a real Ctrl-C
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def _kill_group(pgid: int) -> None:
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def _alive_nodes(prefix: list[str], env: dict[str, str], gcs: str) -> set[str]:
    out = subprocess.run(
        [*prefix, str(BIN / "ray"), "status", "--address", gcs],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    active = out.split("Active:", 1)[-1].split("Pending:", 1)[0]
    return {w.removeprefix("node_") for w in active.split() if w.startswith("node_")}


def _worker_node(prefix: list[str], env: dict[str, str], gcs: str) -> str:
    """The id of the node that is not the head (Ray's state API, from inside the netns)."""
    code = (
        "import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
        "print([n['NodeID'] for n in ray.nodes() if n['Alive'] and "
        "n['Resources'].get('node:__internal_head__') is None][0])"
    )
    out = subprocess.run(
        [*prefix, sys.executable, "-c", code, gcs],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    netns = None
    prefix: list[str] = []
    if not _only_loopback():
        if os.geteuid() != 0 or shutil.which("ip") is None:
            pytest.skip("a multi-node Ray cluster needs a loopback-only network namespace (root)")
        netns = f"rbt-{os.getpid()}"
        subprocess.run(["ip", "netns", "add", netns], check=True)
        subprocess.run(["ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up"], check=True)
        prefix = ["ip", "netns", "exec", netns]
    work = Path(tempfile.mkdtemp(prefix="rbt-cluster-"))
    (work / "head-only").mkdir()
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a worker node that cannot see the head's folder needs unshare -m (root)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # the job's `python` is this venv's
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONUNBUFFERED="1",
    )
    gcs_port, dash_port, client_port = free_port(), free_port(), free_port()
    gcs = f"127.0.0.1:{gcs_port}"
    groups: list[int] = []
    try:
        for args, temp in (
            (
                [
                    "--head",
                    f"--port={gcs_port}",
                    "--include-dashboard=true",
                    "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={dash_port}",
                    f"--ray-client-server-port={client_port}",
                ],
                "h",
            ),
            ([f"--address={gcs}"], "w"),
        ):
            temp_dir = tempfile.mkdtemp(prefix=f"rbt{temp}", dir="/tmp")  # short: socket paths
            # the worker's daemons inherit its mount namespace: a tmpfs hides head-only/
            private = (
                ["unshare", "-m", "--propagation", "private", "sh", "-c",
                 f'mount -t tmpfs tmpfs "{work / "head-only"}" && exec "$0" "$@"']
                if temp == "w" else []
            )  # fmt: skip
            start = subprocess.Popen(
                [
                    *prefix,
                    *private,
                    str(BIN / "ray"),
                    "start",
                    *args,
                    "--num-cpus=2",
                    "--num-gpus=0",
                    # Ray's fixed default (52365) is taken when another test's Ray runs beside
                    # this cluster (pytest-xdist): the node's agent then dies and the head
                    # never accepts a job ("No available agent to submit job")
                    f"--dashboard-agent-listen-port={free_port()}",
                    f"--temp-dir={temp_dir}",
                    "--disable-usage-stats",
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,  # the node's daemons stay in this process group
            )
            groups.append(start.pid)
            out, _ = start.communicate(timeout=120)
            assert start.returncode == 0, out[-3000:]
        deadline = time.monotonic() + 60
        nodes: set[str] = set()
        while len(nodes) < 2 and time.monotonic() < deadline:
            nodes = _alive_nodes(prefix, env, gcs)
            time.sleep(1)
        assert len(nodes) == 2, f"the cluster has {len(nodes)} live node(s), not 2"
        worker = _worker_node(prefix, env, gcs)
        assert worker in nodes, (worker, nodes)
        yield Cluster(prefix, env, gcs, f"http://127.0.0.1:{dash_port}", nodes, work, worker)
    finally:
        for pgid in reversed(groups):
            _kill_group(pgid)
        if netns:
            subprocess.run(["ip", "netns", "del", netns], check=False)
        shutil.rmtree(work, ignore_errors=True)


def _study_args(c: Cluster) -> list[str]:
    return [
        f"--storage-path={c.work / 'runs'}",
        f"--tracking-uri=sqlite:///{c.work / 'mlflow.db'}",
        f"--cache-dir={c.work / 'cache'}",
    ]


def _trial_runs(c: Cluster, experiment: str, role: str) -> list:
    client = MlflowClient(f"sqlite:///{c.work / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    return client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`rbm_tune.role` = '{role}'", max_results=100
    )


def _results(c: Cluster, study: str) -> list[dict[str, str]]:
    with open(c.work / "runs" / study / "results.csv") as f:
        return list(csv.DictReader(f))


def test_submit_runs_the_demo_study_as_a_job_on_both_nodes(cluster: Cluster) -> None:
    c = cluster
    rbm = str(BIN / "rbm-tune")
    # The shipped demo space with trials of 150 epochs that ASHA does not stop: Ray Tune reuses
    # a finished trial's actor for the next trial, so trials of a second or two (ASHA-stopped
    # demo trials) can all run on the head's two actors before the worker node's actors are up
    # on a loaded machine; trials this long need four slots, i.e. both nodes
    space = yaml.safe_load((SPACES / "demo.yaml").read_text())
    space["distill"].update(max_epochs=150, patience=150)
    space["study"]["early_stopping"] = False
    space["study"]["plots"] = False  # checked on one node (test_analysis); ~10 s of the job
    space_file = c.work / "spread" / "demo.yaml"
    space_file.parent.mkdir()
    space_file.write_text(yaml.safe_dump(space, sort_keys=False))
    done = c.run(
        rbm,
        "submit",
        f"--address={c.dashboard}",
        f"--space={space_file}",
        "--trials=6",
        *_study_args(c),
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    job_id = done.stdout.strip().splitlines()[-1]
    assert job_id.startswith("raysubmit_")
    assert f"job {job_id}: SUCCEEDED" in done.stdout
    assert "study demo: top trials" in done.stdout  # the job's own output was streamed

    rows = _results(c, "demo")
    assert len(rows) == 6
    used = {r["node_id"] for r in rows}
    assert used == c.node_ids, f"trials ran on {used}, the cluster has {c.node_ids}"
    # the worker node (its own mount namespace) saved its finished trials in the shared folder
    import json

    trials = json.loads((c.work / "runs" / "demo" / "trials.json").read_text())
    on_worker = {r["trial_id"] for r in rows if r["node_id"] == c.worker_id}
    kept = {t["trial_id"] for t in trials if (Path(t["checkpoint"]) / "student.pt").is_file()}
    assert on_worker and on_worker <= kept, (on_worker, kept)

    trials = _trial_runs(c, "demo", "trial")
    assert len(trials) == 6
    assert all(r.info.status == "FINISHED" for r in trials)
    assert {r.data.tags["rbm_tune.node_id"] for r in trials} == c.node_ids
    teachers = _trial_runs(c, "demo", "teacher")
    assert len(teachers) == 1
    assert teachers[0].data.tags["rbm_tune.teacher_trained_here"] == "true"
    assert len(TeacherCache.in_cache_dir(c.work / "cache").entries()) == 1  # trained once

    status = c.run(rbm, "jobs", "status", job_id, f"--address={c.dashboard}", timeout=60)
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout, status.stdout + status.stderr
    logs = c.run(rbm, "jobs", "logs", job_id, f"--address={c.dashboard}", timeout=60)
    assert "study demo: top trials" in logs.stdout
    listed = c.run(rbm, "jobs", "list", f"--address={c.dashboard}", timeout=60)
    assert job_id in listed.stdout and "demo" in listed.stdout


def test_address_joins_the_cluster_from_the_driver(cluster: Cluster) -> None:
    c = cluster
    done = c.run(
        str(BIN / "rbm-tune"),
        "--space=demo",
        "--name=joined",
        "--trials=4",
        f"--address={c.gcs}",
        *_study_args(c),
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    rows = _results(c, "joined")
    assert len(rows) == 4
    assert {r["node_id"] for r in rows} <= c.node_ids and all(r["node_id"] for r in rows)
    assert len(_trial_runs(c, "joined", "trial")) == 4
    # the first study's teacher: same data, spec and seed -> the cache, not a second training
    teachers = _trial_runs(c, "joined", "teacher")
    assert [t.data.tags["rbm_tune.teacher_trained_here"] for t in teachers] == ["false"]
    assert len(TeacherCache.in_cache_dir(c.work / "cache").entries()) == 1


@pytest.mark.parametrize("hidden", ["storage path", "teacher cache"])
def test_a_folder_one_node_cannot_see_is_refused_before_any_trial(
    cluster: Cluster, hidden: str
) -> None:
    """The storage path (or the cache) in head-only/, which the worker node's mount namespace
    hides: one line naming that node and the folder, exit 2, before the teacher or any trial."""
    c = cluster
    name = "hidden-" + hidden.split()[0]
    private = c.work / "head-only" / name
    where = {
        "storage path": [f"--storage-path={private}", f"--cache-dir={c.work / 'cache'}"],
        "teacher cache": [f"--storage-path={c.work / 'runs'}", f"--cache-dir={private}"],
    }[hidden]
    done = c.run(
        str(BIN / "rbm-tune"), "--space=demo", f"--name={name}", "--trials=2",
        f"--address={c.gcs}", f"--tracking-uri=sqlite:///{c.work / 'mlflow.db'}", *where,
    )  # fmt: skip
    assert done.returncode == 2, (done.stdout + done.stderr)[-4000:]
    assert "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("rbm-tune: error:")]
    assert line.startswith(f"rbm-tune: error: node 127.0.0.1 ({c.worker_id[:12]}) cannot read")
    assert f"the {hidden} " in line and str(private) in line
    assert "teacher " not in done.stdout and "Trial" not in done.stdout  # nothing started
    assert not (c.work / "runs" / name).exists()
    client = MlflowClient(f"sqlite:///{c.work / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id]) if exp else []
    assert not [r for r in runs if r.data.tags.get("rbm_tune.role") in ("trial", "teacher")]


def test_a_gpu_space_on_a_cluster_without_gpus_ends_a_bounded_wait_in_one_line(
    cluster: Cluster,
) -> None:
    """Trials that ask for a GPU on a cluster that has none (a CPU-only SLURM allocation) do not
    pend until the walltime: the driver waits $RBM_TUNE_GPU_WAIT_S, then one line, exit 2,
    before the teacher, MLflow or any trial."""
    c = cluster
    space = yaml.safe_load((SPACES / "demo.yaml").read_text())
    space["study"]["resources"]["gpus_per_trial"] = 1
    space_file = c.work / "gpu" / "demo-gpu.yaml"
    space_file.parent.mkdir()
    space_file.write_text(yaml.safe_dump(space, sort_keys=False))
    start = time.monotonic()
    done = subprocess.run(
        [*c.prefix, str(BIN / "rbm-tune"), f"--space={space_file}", "--name=gpu-wait",
         f"--address={c.gcs}", *_study_args(c)],
        env={**c.env, "RBM_TUNE_GPU_WAIT_S": "3"}, cwd=c.work, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, (done.stdout + done.stderr)[-4000:]
    assert time.monotonic() - start < 240
    assert "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("rbm-tune: error:")]
    assert f"the Ray cluster at {c.gcs} has 0 GPU(s) after 3 s" in line
    assert "gpus_per_trial: 0" in line
    assert "waiting up to 3 s" in done.stdout + done.stderr
    assert "teacher " not in done.stdout and not (c.work / "runs" / "gpu-wait").exists()
    exp = MlflowClient(f"sqlite:///{c.work / 'mlflow.db'}").get_experiment_by_name("gpu-wait")
    assert exp is None or not MlflowClient(f"sqlite:///{c.work / 'mlflow.db'}").search_runs(
        [exp.experiment_id]
    )


def test_ctrl_c_detaches_and_jobs_stop_ends_the_job(cluster: Cluster) -> None:
    c = cluster
    rbm = str(BIN / "rbm-tune")
    proc = c.popen(
        rbm,
        "submit",
        f"--address={c.dashboard}",
        "--space=demo",
        "--name=detached",
        "--trials=16",
        *_study_args(c),
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # wait until the study is really running on the cluster
        lines.append(line)
        if "teacher " in line or "Trial status" in line:
            break
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    text = "".join(lines) + out
    assert proc.returncode == 0, text[-3000:]
    assert "detached" in text
    import re

    ids = re.findall(r"^(raysubmit_\w+)$", text.split("detached", 1)[1], re.M)
    assert ids, text[-3000:]  # the job id, printed after the detach message
    job_id = ids[-1]

    status = c.run(rbm, "jobs", "status", job_id, f"--address={c.dashboard}", timeout=60)
    assert "RUNNING" in status.stdout, status.stdout + status.stderr  # detaching left it running
    stop = c.run(rbm, "jobs", "stop", job_id, f"--address={c.dashboard}", timeout=60)
    assert stop.returncode == 0 and "stop requested" in stop.stdout
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = c.run(rbm, "jobs", "status", job_id, f"--address={c.dashboard}", timeout=60)
        if "STOPPED" in status.stdout:
            break
        time.sleep(2)
    assert "STOPPED" in status.stdout, status.stdout
    missing = c.run(rbm, "jobs", "status", "raysubmit_nope", f"--address={c.dashboard}")
    assert missing.returncode == 2
    assert missing.stderr.startswith("rbm-tune: error: no job 'raysubmit_nope'")
