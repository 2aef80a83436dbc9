"""Security defaults: no file rbm-tune reads can run code, no server it starts or suggests
listens beyond 127.0.0.1, and no secret from the environment reaches MLflow.

- YAML (spaces, trial configs) is read with safe loaders: a ``!!python/...`` tag is refused in
  one line and never executed;
- tensors are read with ``torch.load(weights_only=True)``: an armed pickle planted in the
  teacher cache with a matching checksum, in the processed copy of a dataset, or as a raw
  Planetoid file runs nothing; a static check holds every load call of the package to this;
- the local Ray starts without a dashboard on 127.0.0.1, and every ``mlflow ui`` / ``mlflow
  server`` command rbm-tune or its README prints binds 127.0.0.1;
- a study run with fake tokens planted in the environment logs none of them (params, tags,
  metrics, artifacts, the MLflow database file, the Ray results folder).
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "rbm_tune"
RBM_TUNE = Path(sys.executable).parent / "rbm-tune"
TINY = """\
dataset: demo
teacher: {model: sage, num_layers: 2, hidden_dim: 16, max_epochs: 15, patience: 10}
student: {model: rbm, hidden_dim: 16, num_experts: 3, k: 2}
distill: {max_epochs: 5}
"""


class Armed:
    """Unpickling this opens (creates) ``path``: what any pickle-borne exploit would do."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


def cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RBM_TUNE_", "MLFLOW_", "RAY_")) and k != "PYTEST_CURRENT_TEST"
    }
    env.update(
        RBM_TUNE_CACHE=str(cwd / "cache"),
        MLFLOW_TRACKING_URI=f"sqlite:///{cwd}/mlflow.db",
        PYTHONWARNINGS="ignore",
    )
    return subprocess.run(
        [str(RBM_TUNE), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rbm-tune: error: "), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    return lines[0]


# -- YAML -------------------------------------------------------------------------------------

TAGS = {
    "apply-os-system": '!!python/object/apply:os.system ["touch {pwned}"]\n',
    "nested-apply": (
        'dataset: demo\nstudent: {{model: !!python/object/apply:os.system ["touch {pwned}"]}}\n'
    ),
    "new-subprocess": "!!python/object/new:subprocess.Popen [[touch, {pwned}]]\n",
    "name-tag": "dataset: !!python/name:os.system\n",
}
COMMANDS = {
    "search": ("--space", "{file}"),
    "teacher-space": ("teacher", "--space", "{file}"),
    "submit": ("submit", "--space", "{file}", "--address", "http://127.0.0.1:1"),
    "train": ("train", "--config", "{file}"),
    "teacher-config": ("teacher", "--config", "{file}"),
}


@pytest.mark.parametrize("tag", list(TAGS))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_yaml_tags_are_refused_and_never_run(command: str, tag: str, tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    file = tmp_path / "evil.yaml"
    file.write_text(TAGS[tag].format(pwned=pwned))
    args = [a.format(file=file) for a in COMMANDS[command]]
    line = one_error_line(cli(*args, cwd=tmp_path))
    assert str(file) in line and "remove the tag" in line
    assert not pwned.exists()
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "cache").exists()


def test_the_safe_loaders_really_refuse_what_an_unsafe_one_runs(tmp_path: Path) -> None:
    """The tags above are armed: yaml's unsafe loader would have created the file."""
    pwned = tmp_path / "pwned"
    yaml.unsafe_load(TAGS["apply-os-system"].format(pwned=pwned))
    assert pwned.exists()


# -- tensors and pickles --------------------------------------------------------------------------


def _tiny_key(tmp_path: Path):
    from rbm_tune.config import load_config
    from rbm_tune.data import load_graph
    from rbm_tune.teacher_cache import TeacherKey

    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    cfg = load_config(config)
    graph = load_graph(cfg.dataset, setting=cfg.setting, seed=cfg.seed)
    return TeacherKey.of(graph, cfg.teacher, seed=cfg.seed)


def test_armed_teacher_payload_with_a_valid_checksum_runs_nothing(tmp_path: Path) -> None:
    """Only ``weights_only=True`` stands between this entry and code execution: its size,
    sha256, digest and key are all right."""
    key = _tiny_key(tmp_path)
    pwned = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"format": 1, "digest": key.digest, "log_probs": Armed(pwned)}, buffer)
    payload = buffer.getvalue()
    entry = tmp_path / "cache" / "teachers" / key.digest
    entry.mkdir(parents=True)
    (entry / "payload.pt").write_bytes(payload)
    meta = {
        "format": 1,
        "digest": key.digest,
        "key": key.fields(),
        "val_acc": 1.0,
        "test_acc": 1.0,
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "created_unix": 0.0,
    }
    (entry / "meta.json").write_text(json.dumps(meta))

    proc = cli("teacher", "--config", "tiny.yaml", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not pwned.exists()
    (warning,) = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert f"{entry} is corrupt (payload.pt is unreadable: UnpicklingError)" in warning
    assert proc.stdout.startswith(f"{key.digest[:12]}  trained ")  # a real teacher replaced it
    (aside,) = entry.parent.glob(f"{key.digest}.corrupt-*")
    # the planted payload was armed: a plain torch.load would have run it
    torch.load(aside / "payload.pt", weights_only=False)
    assert pwned.exists()


def test_armed_processed_dataset_copy_runs_nothing(
    shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """PyG's own loader retries a refused file with ``weights_only=False``; rbm-tune's does not,
    and rebuilds the copy from the raw files instead."""
    import logging

    from torch_geometric.io import fs

    from rbm_tune.data import load_graph

    cache = tmp_path / "cache"
    first = load_graph("cora", root=shared_data, cache_dir=cache)
    (processed,) = cache.glob("processed/Cora-*/Cora/processed/data.pt")
    pwned = tmp_path / "pwned"
    torch.save({"x": Armed(pwned)}, processed)
    with caplog.at_level(logging.WARNING, logger="rbm_tune.data.sources"):
        again = load_graph("cora", root=shared_data, cache_dir=cache)
    assert not pwned.exists()
    assert again.fingerprint == first.fingerprint
    assert "not a plain tensor file; refused to unpickle it" in caplog.text
    # armed: PyG's own torch_load falls back to full unpickling and runs it
    torch.save({"x": Armed(pwned)}, tmp_path / "armed.pt")
    with pytest.warns(UserWarning):
        fs.torch_load(str(tmp_path / "armed.pt"))
    assert pwned.exists()


def test_armed_planetoid_raw_file_runs_nothing(shared_data: Path, tmp_path: Path) -> None:
    """Planetoid's raw files are pickles; only numpy / scipy classes may come out of them."""
    root = tmp_path / "data"
    shutil.copytree(
        shared_data / "Cora", root / "Cora", ignore=shutil.ignore_patterns("processed")
    )
    pwned = tmp_path / "pwned"
    (root / "Cora" / "raw" / "ind.cora.x").write_bytes(pickle.dumps(Armed(pwned), protocol=2))
    proc = cli(
        "train", "--config", "cora-transductive-sage-mlp", "--data-root", root, cwd=tmp_path
    )
    line = one_error_line(proc)
    assert "cannot read dataset cora" in line and "is not allowed in a Planetoid data file" in line
    assert not pwned.exists()
    pickle.loads((root / "Cora" / "raw" / "ind.cora.x").read_bytes())  # armed indeed
    assert pwned.exists()


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _sources() -> list[tuple[str, ast.Module]]:
    return [
        (str(path.relative_to(REPO)), ast.parse(path.read_text(), str(path)))
        for path in sorted(PACKAGE.rglob("*.py"))
    ]


def test_every_load_call_in_the_package_is_safe() -> None:
    """A static check of rbm_tune/**/*.py: every torch.load passes weights_only=True, every
    yaml load uses a SafeLoader, no pickle / marshal / numpy pickle load, and every custom
    Unpickler restricts find_class."""
    problems: list[str] = []
    seen = {"torch.load": 0, "yaml": 0}
    for rel, tree in _sources():
        module = rel.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
        for node in ast.walk(tree):
            where = f"{rel}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.ImportFrom) and node.module in ("torch", "pickle", "yaml"):
                names = {a.name for a in node.names}
                if names & {"load", "loads", "unsafe_load", "full_load", "Unpickler"}:
                    problems.append(f"{where}: from {node.module} import {sorted(names)}")
            if isinstance(node, ast.ClassDef):
                bases = {_dotted(b) for b in node.bases}
                if bases & {"pickle.Unpickler", "Unpickler"}:
                    methods = {f.name for f in node.body if isinstance(f, ast.FunctionDef)}
                    if "find_class" not in methods:
                        problems.append(f"{where}: Unpickler {node.name} without find_class")
            if not isinstance(node, ast.Call):
                continue
            name = _dotted(node.func)
            if name == "torch.load":
                seen["torch.load"] += 1
                flag = _keyword(node, "weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    problems.append(f"{where}: torch.load without weights_only=True")
            elif name in ("yaml.load", "yaml.load_all"):
                seen["yaml"] += 1
                loader = _keyword(node, "Loader")
                if loader is None and len(node.args) > 1:
                    loader = node.args[1]
                cls = None
                if isinstance(loader, ast.Name):
                    cls = getattr(importlib.import_module(module), loader.id, None)
                elif isinstance(loader, ast.Attribute):
                    cls = getattr(yaml, loader.attr, None)
                if not (isinstance(cls, type) and issubclass(cls, yaml.SafeLoader)):
                    problems.append(f"{where}: {name} with a loader that is not a SafeLoader")
            elif name in ("yaml.safe_load", "yaml.safe_load_all"):
                seen["yaml"] += 1
            elif name in ("yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all"):
                problems.append(f"{where}: {name}")
            elif name in ("pickle.load", "pickle.loads", "marshal.load", "marshal.loads"):
                problems.append(f"{where}: {name}")
            elif name.endswith(("np.load", "numpy.load")):
                flag = _keyword(node, "allow_pickle")
                if flag is not None and not (isinstance(flag, ast.Constant) and not flag.value):
                    problems.append(f"{where}: {name} with allow_pickle")
    assert problems == []
    # the check looked at real calls: torch.load in several places, YAML through yamlio's one
    # strict loader (a SafeLoader subclass) only
    assert seen["torch.load"] >= 2 and seen["yaml"] == 1


# -- servers ----------------------------------------------------------------------------------


_RAY_PROBE = """
import json, os, psutil, ray
from rbm_tune import tune

tune._init_ray(None, 1, 0)
info = ray._private.worker.global_worker.node.address_info
ray.get(ray.remote(lambda: 1).remote())  # a worker process is up too
listening = set()
for proc in psutil.Process().children(recursive=True):
    try:
        conns = proc.net_connections(kind="tcp")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        continue
    listening |= {f"{c.laddr.ip}:{c.laddr.port}" for c in conns if c.status == psutil.CONN_LISTEN}
print(json.dumps({
    "node_ip": info["node_ip_address"],
    "gcs": ray.get_runtime_context().gcs_address,
    "webui": info.get("webui_url"),
    "listening": sorted(listening),
    "env": os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"),
}))
ray.shutdown()
"""


def test_local_ray_starts_without_a_dashboard_on_loopback() -> None:
    """A real local Ray, started as a study starts it, in a fresh interpreter with the variable
    unset (a user's shell): every socket its processes listen on is bound to 127.0.0.1.

    In CI (a loopback-only namespace) Ray could not bind elsewhere anyway; on a machine with
    a public interface this fails when rbm-tune lets Ray pick the public address.
    """
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run(
        [sys.executable, "-c", _RAY_PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    assert probe["node_ip"] == "127.0.0.1"
    assert probe["gcs"].startswith("127.0.0.1:")
    assert not probe["webui"]  # no dashboard
    assert probe["listening"], "found no listening socket of Ray's processes"
    loopback = ("127.", "::1:", "::ffff:127.")
    assert all(a.startswith(loopback) for a in probe["listening"]), probe["listening"]
    assert probe["env"] == "0"  # the processes Ray starts get the setting too


def _joined(node: ast.JoinedStr) -> str:
    return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)


def _server_commands() -> list[tuple[str, str]]:
    """(where, text) of every mlflow ui/server or ray start/dashboard command that rbm-tune
    prints (string literals of the package) or documents (README.md)."""
    pattern = re.compile(r"\b(mlflow (ui|server)|ray start|--dashboard-host)\b")
    found = []
    for rel, tree in _sources():
        parts = {
            id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values
        }  # an f-string's pieces are checked as the whole f-string
        for node in ast.walk(tree):
            if id(node) in parts:
                continue
            if isinstance(node, ast.JoinedStr):
                text = _joined(node)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
            else:
                continue
            if pattern.search(text):
                found.append((f"{rel}:{node.lineno}", text))
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            if pattern.search(line):
                found.append((f"{page.relative_to(REPO)}:{number}", line))
    return found


@pytest.mark.parametrize(
    "where,text", [pytest.param(*found, id=found[0]) for found in _server_commands()]
)
def test_every_suggested_server_binds_loopback(where: str, text: str) -> None:
    """An MLflow server on 127.0.0.1; a Ray head with its dashboard (and job API) on loopback.

    (``ray start --head`` itself must bind an interface the cluster's workers reach.)
    """
    mlflow = re.findall(r"mlflow (?:ui|server)\b[^`;)]*", text)
    for command in mlflow:
        assert "--host 127.0.0.1" in command or "--host=127.0.0.1" in command, (where, command)
    heads = re.findall(r"ray start\b[^`;)]*", text)
    for command in heads:
        assert "--dashboard-host" in command, (where, command)
    hosts = re.findall(r"--dashboard-host[ =](\S+)", text)
    for host in hosts:
        assert host.strip("'\".,)") in ("127.0.0.1", "localhost", "..."), (where, text)
    assert mlflow or heads or hosts, f"{where}: no command checked in {text!r}"


# -- secrets ----------------------------------------------------------------------------------

FAKE_SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "FAKEAWSSECRETrbmtune0123456789abcdefghij",
    "AWS_ACCESS_KEY_ID": "AKIAFAKERBMTUNE01234",
    "MLFLOW_TRACKING_TOKEN": "mlflowFakeTokenRbmTune0123456789",
    "MLFLOW_TRACKING_PASSWORD": "mlflowFakePasswordRbmTune0123",
    "GITHUB_TOKEN": "ghp_fakeRbmTune0123456789abcdefghijklmn",
    "HF_TOKEN": "hf_fakeRbmTune0123456789abcdefghijklm",
    "RBM_TUNE_SECRET_PROBE": "sk-fakeRbmTune0123456789abcdef",
}
ENV_LIKE = re.compile(r"^[A-Z][A-Z0-9_]{2,}$")


@pytest.mark.integration
@pytest.mark.usefixtures("teacher_in_cache")  # the teacher's run is logged by the driver anyway
def test_no_planted_secret_reaches_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    from rbm_tune.search_space import load_space
    from rbm_tune.study import run_study
    from tests.support.spaces import write_space

    for name, value in FAKE_SECRETS.items():
        monkeypatch.setenv(name, value)
    for name, value in {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = load_space(write_space(tmp_path, "secrets", trials=2, concurrent=2, epochs=4))
    try:
        run_study(
            space,
            cpus=2,
            verbose=0,
            tracking_uri=uri,
            storage_path=tmp_path / "runs",
            cache_dir=tmp_path / "cache",
        )
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()

    secrets = list(FAKE_SECRETS.values())
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("secrets")
    runs = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)
    assert len([r for r in runs if r.data.tags.get("rbm_tune.role") == "trial"]) == 2
    for run in runs:
        fields = {
            **{f"param {k}": v for k, v in run.data.params.items()},
            **{f"tag {k}": v for k, v in run.data.tags.items()},
            **{f"metric {k}": "" for k in run.data.metrics},
        }
        for field, value in fields.items():
            key = field.split(" ", 1)[1]
            assert not ENV_LIKE.match(key), f"{field} looks like an environment variable"
            for secret in secrets:
                assert secret not in key and secret not in value, f"{field} holds a secret"
    # and nowhere in what was written: the database file, artifacts, Ray's results
    written = [tmp_path / "mlflow.db", *(tmp_path / "mlartifacts").rglob("*")]
    written += (tmp_path / "runs").rglob("*")
    for path in written:
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            for secret in secrets:
                assert secret.encode() not in data, f"{path} holds a planted secret"
