"""Teacher cache: hit/miss, key sensitivity, corruption, URIs, locks, concurrency, the CLI."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rbm_tune.config import TeacherSpec, TrialConfig
from rbm_tune.data import Graph
from rbm_tune.errors import CacheError
from rbm_tune.teacher import TeacherOutputs, train_teacher
from rbm_tune.teacher_cache import TEACHER_CODE_VERSION, TeacherCache, TeacherKey

TEACHER = {"model": "sage", "num_layers": 2, "hidden_dim": 8, "max_epochs": 5, "patience": 5}
SPEC = TeacherSpec.from_mapping(TEACHER)
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


class Trainer:
    """A train callable that counts its calls; real (tiny) teachers or seeded fakes."""

    def __init__(self, graph: Graph | None = None, spec: TeacherSpec = SPEC) -> None:
        self.graph, self.spec, self.calls = graph, spec, 0

    def __call__(self) -> TeacherOutputs:
        self.calls += 1
        if self.graph is not None:
            return train_teacher(self.spec, self.graph, seed=0)
        gen = torch.Generator().manual_seed(self.calls)
        return TeacherOutputs(
            log_probs=torch.randn(6, 3, generator=gen).log_softmax(-1),
            embedding=torch.randn(6, 4, generator=gen),
            krd_delta=torch.rand(6, generator=gen),
            val_acc=0.5,
            test_acc=0.25,
            test_acc_oracle=0.5,
            best_epoch=3,
            epochs=5,
            seconds=0.01,
            state_dict={"w": torch.randn(4, 3, generator=gen)},
        )


def same_outputs(a: TeacherOutputs, b: TeacherOutputs) -> bool:
    tensors = ("log_probs", "embedding", "krd_delta")
    scalars = ("val_acc", "test_acc", "test_acc_oracle", "best_epoch", "epochs", "seconds")
    assert a.state_dict is not None and b.state_dict is not None
    return (
        all(torch.equal(getattr(a, n), getattr(b, n)) for n in tensors)
        and all(getattr(a, n) == getattr(b, n) for n in scalars)
        and a.state_dict.keys() == b.state_dict.keys()
        and all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    )


def test_hit_loads_the_stored_teacher_without_training(tmp_path: Path, tiny_graph: Graph) -> None:
    key = TeacherKey.of(tiny_graph, SPEC, seed=0)
    train, lines = Trainer(tiny_graph), []
    first = TeacherCache(tmp_path).get_or_train(key, train, log=lines.append)
    again = TeacherCache(tmp_path).get_or_train(key, train, log=lines.append)
    assert train.calls == 1
    assert lines[-1] == f"teacher: loaded from cache {key.digest[:12]}"
    assert same_outputs(first, again)
    # the state dict is the best-val teacher's: it reproduces the stored log-probabilities
    from rbm_tune.models import build_teacher

    model = build_teacher(SPEC, tiny_graph.num_features, tiny_graph.num_classes).eval()
    model.load_state_dict(again.state_dict)
    with torch.no_grad():
        logits = model(tiny_graph.x, tiny_graph.observed_edge_index).logits
    assert torch.allclose(F.log_softmax(logits, -1), again.log_probs, atol=1e-6)
    # meta.json is readable and names the key's fields
    meta = json.loads((tmp_path / key.digest / "meta.json").read_text())
    assert meta["key"] == key.fields() and meta["key"]["teacher"]["hidden_dim"] == 8
    assert meta["val_acc"] == first.val_acc and meta["code_version"] == TEACHER_CODE_VERSION
    assert TeacherKey.from_fields(meta["key"]) == key


def test_changing_any_key_field_is_a_new_entry(
    tmp_path: Path, tiny_graph: Graph, tiny_inductive_graph: Graph
) -> None:
    base = TeacherKey.of(tiny_graph, SPEC, seed=0)
    assert TeacherKey.of(tiny_graph, TeacherSpec.from_mapping(TEACHER), seed=0).digest == (
        base.digest
    )
    variants = [
        dataclasses.replace(base, data_fingerprint="0" * 64),
        TeacherKey.of(tiny_inductive_graph, SPEC, seed=0),
        dataclasses.replace(base, dataset="other"),
        dataclasses.replace(base, setting="inductive"),
        TeacherKey.of(tiny_graph, SPEC.replace(hidden_dim=16), seed=0),
        TeacherKey.of(tiny_graph, SPEC.replace(dropout=0.3), seed=0),
        TeacherKey.of(tiny_graph, SPEC.replace(weight_decay=1e-4), seed=0),
        TeacherKey.of(tiny_graph, SPEC.replace(model="gcn"), seed=0),
        TeacherKey.of(tiny_graph, SPEC, seed=1),
        dataclasses.replace(base, code_version=TEACHER_CODE_VERSION + 1),
    ]
    cache, train = TeacherCache(tmp_path), Trainer()
    cache.get_or_train(base, train)
    for n, key in enumerate(variants, start=2):
        cache.get_or_train(key, train)
        assert train.calls == n, key.fields()
    for key in [base, *variants]:
        cache.get_or_train(key, train)
    assert train.calls == 1 + len(variants)
    assert len({e.digest for e in cache.entries()}) == 1 + len(variants)


@pytest.mark.parametrize("damage", ["truncate", "flip", "meta"])
def test_corrupt_entry_is_reported_moved_aside_and_retrained(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    key = TeacherKey("tiny", "transductive", "f" * 64, TEACHER, 0)
    cache, train = TeacherCache(tmp_path), Trainer()
    cache.get_or_train(key, train)
    entry = tmp_path / key.digest
    target = entry / ("meta.json" if damage == "meta" else "payload.pt")
    blob = target.read_bytes()
    if damage == "truncate":
        blob = blob[: len(blob) // 2]
    elif damage == "flip":
        blob = blob[:-100] + bytes([blob[-100] ^ 0x01]) + blob[-99:]
    else:
        blob = blob[:20]
    target.write_bytes(blob)

    with caplog.at_level(logging.WARNING, logger="rbm_tune.teacher_cache"):
        retrained = cache.get_or_train(key, train)
    assert train.calls == 2
    (record,) = caplog.records
    message = record.getMessage()
    assert "\n" not in message
    assert message.startswith(f"rbm-tune: warning: teacher cache entry {entry} is corrupt (")
    assert message.endswith("and retraining")
    (aside,) = tmp_path.glob(f"{key.digest}.corrupt-*")
    assert f"moved aside to {aside}" in message
    assert (aside / target.name).read_bytes() == blob  # kept for inspection, never used
    caplog.clear()
    loaded = TeacherCache(tmp_path).get(key)
    assert loaded is not None and same_outputs(loaded, retrained) and not caplog.records


def test_get_sets_a_corrupt_entry_aside_and_misses(tmp_path: Path) -> None:
    key = TeacherKey("tiny", "transductive", "f" * 64, TEACHER, 0)
    cache = TeacherCache(tmp_path)
    cache.put(key, Trainer()())
    (tmp_path / key.digest / "payload.pt").write_bytes(b"")
    assert cache.get(key) is None
    assert cache.get(key) is None and cache.entries() == []


def test_a_teacher_trained_on_another_disk_is_written_back_once(tmp_path: Path) -> None:
    """The teacher task stores into the cache folder of the node it ran on; when that is not
    the driver's (another machine's disk), the driver writes the returned teacher into its own,
    once: a second write-back (or one where the task's write was visible) changes nothing."""
    from rbm_tune.study.teacher_task import write_back

    key = TeacherKey("tiny", "transductive", "f" * 64, TEACHER, 0)
    worker, driver = TeacherCache(tmp_path / "worker"), TeacherCache(tmp_path / "driver")
    teacher = worker.get_or_train(key, Trainer())
    assert worker.contains(key) and not driver.contains(key)
    assert write_back(driver, key, teacher) is True
    assert driver.contains(key) and same_outputs(driver.get(key), teacher)
    stamp = (tmp_path / "driver" / key.digest / "meta.json").stat().st_mtime_ns
    assert write_back(driver, key, Trainer()()) is False  # kept, not overwritten
    assert (tmp_path / "driver" / key.digest / "meta.json").stat().st_mtime_ns == stamp
    assert same_outputs(driver.get(key), teacher)
    # an entry whose meta.json is not written yet is not there
    (tmp_path / "driver" / key.digest / "meta.json").unlink()
    assert not driver.contains(key)


def test_file_uri_and_plain_path_share_entries(tmp_path: Path) -> None:
    key = TeacherKey("tiny", "transductive", "f" * 64, TEACHER, 0)
    train = Trainer()
    via_uri = TeacherCache(tmp_path.as_uri())
    assert via_uri.is_local and via_uri.path == str(tmp_path)
    stored = via_uri.get_or_train(key, train)
    loaded = TeacherCache(tmp_path).get_or_train(key, train)
    assert train.calls == 1 and same_outputs(stored, loaded)
    assert (tmp_path / key.digest / "payload.pt").is_file()


def test_default_root_follows_rbm_tune_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RBM_TUNE_CACHE", str(tmp_path / "env"))
    assert TeacherCache().path == str(tmp_path / "env" / "teachers")
    assert TeacherCache.in_cache_dir(None).path == str(tmp_path / "env" / "teachers")
    assert TeacherCache.in_cache_dir(tmp_path / "flag").path == str(tmp_path / "flag" / "teachers")
    uri = TeacherCache.in_cache_dir(f"{tmp_path.as_uri()}/flag/")
    assert uri.is_local and uri.path == str(tmp_path / "flag" / "teachers")


def test_object_store_layout_through_pyarrow(caplog: pytest.LogCaptureFixture) -> None:
    """A non-local pyarrow filesystem (fsspec's in-memory store) takes the object-store path."""
    fsspec = pytest.importorskip("fsspec")
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs = PyFileSystem(FSSpecHandler(fsspec.filesystem("memory")))
    cache = TeacherCache(f"bucket-{uuid.uuid4().hex}/teachers", filesystem=fs)
    assert not cache.is_local
    key = TeacherKey("tiny", "transductive", "f" * 64, TEACHER, 0)
    train = Trainer()
    stored = cache.get_or_train(key, train)
    assert same_outputs(stored, cache.get_or_train(key, train)) and train.calls == 1
    with fs.open_output_stream(f"{cache.entry_path(key)}/payload.pt") as stream:
        stream.write(b"torn")
    with caplog.at_level(logging.WARNING, logger="rbm_tune.teacher_cache"):
        cache.get_or_train(key, train)
    assert train.calls == 2 and len(caplog.records) == 1
    assert [e.digest for e in cache.entries()] == [key.digest]
    assert cache.clear() == 1 and cache.entries() == []


def test_remove_by_prefix_and_its_errors(tmp_path: Path) -> None:
    cache, train = TeacherCache(tmp_path), Trainer()
    keys = [TeacherKey("tiny", "transductive", "f" * 64, TEACHER, seed) for seed in range(17)]
    for key in keys:
        cache.put(key, train())
    firsts = [k.digest[0] for k in keys]
    shared = next(c for c in firsts if firsts.count(c) > 1)  # 17 keys, 16 hex digits
    with pytest.raises(CacheError, match="matches .* entries.*give more characters"):
        cache.remove(shared)
    with pytest.raises(CacheError, match="no teacher cache entry matches 'zz'.*cache list"):
        cache.remove("zz")
    assert cache.remove(keys[0].digest[:12]).digest == keys[0].digest
    assert cache.get(keys[0]) is None and len(cache.entries()) == 16
    assert cache.clear() == 16 and cache.entries() == []


SCRIPT = """
import glob, hashlib, os, sys, time
from pathlib import Path
from rbm_tune.teacher_cache import TeacherCache, TeacherKey

root, counter, go, mode, others = sys.argv[1:6]
key = TeacherKey("tiny", "transductive", "f" * 64, {teacher!r}, 0)


def log(line):
    print(line, flush=True)
    if line.startswith("teacher: waiting for"):
        Path(f"{{counter}}.waiting-{{os.getpid()}}").touch()


def train():
    with open(counter, "a") as handle:
        handle.write(f"{{os.getpid()}}\\n")
    print("trainer", flush=True)
    if mode == "hang":
        time.sleep(600)
    deadline = time.time() + 60  # hold the lock until every other process waits on it
    while len(glob.glob(f"{{counter}}.waiting-*")) < int(others) and time.time() < deadline:
        time.sleep(0.05)
    import torch
    from rbm_tune.teacher import TeacherOutputs

    t = torch.randn(6, 4, generator=torch.Generator().manual_seed(os.getpid()))
    return TeacherOutputs(t, t, t[:, 0], 0.5, 0.5, 0.5, 1, 1, 1.0, {{"w": t}})


import rbm_tune.teacher  # noqa: F401  (import torch and PyG before the race, not during it)

print("ready", flush=True)
while not Path(go).exists():
    time.sleep(0.01)
out = TeacherCache(root).get_or_train(key, train, log=log)
digest = hashlib.sha256()
for t in (out.log_probs, out.embedding, out.krd_delta, out.state_dict["w"]):
    digest.update(t.numpy().tobytes())
print(digest.hexdigest(), flush=True)
"""


def start(tmp_path: Path, n: int, mode: str) -> list[subprocess.Popen]:
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(SCRIPT.format(teacher=TEACHER)))
    env = {**ENV, "PYTHONPATH": str(Path(__file__).parent)}
    args = [str(tmp_path / "cache"), str(tmp_path / "count"), str(tmp_path / "go"), mode]
    args.append(str(n - 1))
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), *args], stdout=subprocess.PIPE, text=True, env=env
        )
        for _ in range(n)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    (tmp_path / "go").touch()
    return procs


@pytest.mark.slow
def test_four_processes_train_one_teacher(tmp_path: Path) -> None:
    procs = start(tmp_path, 4, "train")
    outputs = [proc.communicate(timeout=120)[0].splitlines() for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 4
    assert len((tmp_path / "count").read_text().splitlines()) == 1
    assert sum("trainer" in out for out in outputs) == 1
    waited = [out for out in outputs if any(x.startswith("teacher: waiting for") for x in out)]
    assert len(waited) == 3 and len(list(tmp_path.glob("count.waiting-*"))) == 3, outputs
    assert len({out[-1] for out in outputs}) == 1  # four identical results


def test_lock_of_a_live_holder_times_out_and_of_a_dead_one_is_broken(tmp_path: Path) -> None:
    (holder,) = start(tmp_path, 1, "hang")
    try:
        assert holder.stdout is not None
        while holder.stdout.readline().strip() != "trainer":  # it holds the lock now
            assert holder.poll() is None
        key = TeacherKey("tiny", "transductive", "f" * 64, TEACHER, 0)
        (lock,) = (tmp_path / "cache" / ".locks").glob("*.lock")
        with pytest.raises(CacheError, match=f"timed out after 1s .*{lock}.*delete that file"):
            TeacherCache(tmp_path / "cache", lock_timeout=1).get_or_train(key, Trainer())
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    assert lock.exists()  # the killed holder left its lock behind
    train = Trainer()
    TeacherCache(tmp_path / "cache", lock_timeout=60).get_or_train(key, train)
    assert train.calls == 1


def test_run_trial_reuses_the_cached_teacher(tmp_path: Path, tiny_graph: Graph) -> None:
    from rbm_tune.trial import run_trial

    config = TrialConfig.from_mapping(
        {
            "teacher": TEACHER,
            "student": {"model": "rbm", "hidden_dim": 8, "num_experts": 3, "k": 2},
            "distill": {"max_epochs": 3, "pretrain_epochs": 1},
        }
    )
    cache, results, logs = TeacherCache(tmp_path), [], []
    for _ in range(2):
        lines: list[str] = []
        results.append(run_trial(config, graph=tiny_graph, cache=cache, log=lines.append))
        logs.append(lines)
    digest = TeacherKey.of(tiny_graph, config.teacher, seed=0).digest
    assert f"teacher: not in cache {digest[:12]}, training" in logs[0]
    assert f"teacher: loaded from cache {digest[:12]}" in logs[1]
    first, second = (r.to_dict() for r in results)
    for timing in ("teacher_seconds", "student_seconds", "seconds"):
        first.pop(timing), second.pop(timing)
    assert first == second and first["teacher_key"] == digest  # a hit trains the same student


def rbm_tune(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rbm_tune.cli", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )


@pytest.fixture
def demo_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "dataset: demo\n"
        "teacher: {model: sage, hidden_dim: 16, max_epochs: 5, patience: 5}\n"
        "student: {model: mlp, hidden_dim: 16}\n"
        "distill: {max_epochs: 2, patience: 2}\n"
    )
    return path


@pytest.mark.slow
def test_cli_teacher_cache_list_and_rm(tmp_path: Path, demo_config: Path) -> None:
    cache_dir = str(tmp_path / "c")
    proc = rbm_tune(
        "teacher", "--config", str(demo_config), "--seeds", "2", "--cache-dir", cache_dir
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()[:2]]
    assert [(r[1], r[2], r[6]) for r in rows] == [
        ("trained", "demo", "0"),
        ("trained", "demo", "1"),
    ]
    assert proc.stdout.splitlines()[2] == f"teacher cache: {tmp_path / 'c' / 'teachers'}"

    listing = rbm_tune("cache", "list", "--cache-dir", cache_dir)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert "(2 entries" in lines[0] and lines[1].split()[:3] == ["key", "dataset", "setting"]
    listed = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(listed) == {r[0] for r in rows}
    assert listed[rows[0][0]][1:5] == ["demo", "transductive", "sage:2x16", "0"]

    bad = rbm_tune("cache", "rm", "zzzz", "--cache-dir", cache_dir)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("rbm-tune: error: no teacher cache entry matches 'zzzz'")
    assert "rbm-tune cache list" in bad.stderr
    removed = rbm_tune("cache", "rm", rows[0][0][:8], "--cache-dir", cache_dir)
    assert removed.returncode == 0 and removed.stdout.startswith(f"removed {rows[0][0]}")
    cleared = rbm_tune("cache", "rm", "--all", "--cache-dir", cache_dir)
    assert cleared.returncode == 0 and cleared.stdout.startswith("removed 1 cached teacher")


@pytest.mark.slow
def test_cli_train_twice_loads_the_teacher_from_the_cache(
    tmp_path: Path, demo_config: Path
) -> None:
    metrics = tmp_path / "m.json"
    args = ["train", "--config", str(demo_config), "--cache-dir", str(tmp_path / "c")]
    first = rbm_tune(*args, "--json", str(metrics))
    assert first.returncode == 0, first.stderr
    digest = json.loads(metrics.read_text())["teacher_key"]
    assert f"teacher: not in cache {digest[:12]}, training" in first.stderr
    second = rbm_tune(*args)
    assert second.returncode == 0, second.stderr
    assert f"teacher: loaded from cache {digest[:12]}" in second.stderr.splitlines()
    assert first.stdout.split(";")[:2] == second.stdout.split(";")[:2]  # same teacher, student


@pytest.mark.slow
def test_cli_teacher_space_pretrains_the_study_teacher(tmp_path: Path) -> None:
    from rbm_tune.data import load_graph
    from rbm_tune.search_space import load_space
    from tests.support.spaces import write_space

    space = write_space(tmp_path, "pre", trials=2)
    cache_dir = str(tmp_path / "c")
    first = rbm_tune("teacher", "--space", str(space), "--cache-dir", cache_dir)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split()[1] == "trained"
    second = rbm_tune("teacher", "--space", str(space), "--cache-dir", cache_dir)
    assert second.stdout.split()[1] == "cached"
    # the key is the one the study will look up
    base = load_space(space).default_config()
    key = TeacherKey.of(load_graph("demo", seed=base.seed), base.teacher, seed=base.seed)
    assert first.stdout.split()[0] == key.digest[:12]
