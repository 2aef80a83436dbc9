"""The memory model (rbm_tune.memory), `rbm-tune plan`, and the paths that keep memory small.

The estimate is checked against peaks measured on this CPU (a child process per config:
``benchmarks/memory_probe.py``); the arxiv-size rows are ``benchmarks/bench_memory_model.py``'s.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rbm_tune.cli import main
from rbm_tune.config import TrialConfig, load_config
from rbm_tune.data import load_graph
from rbm_tune.distill import train_student
from rbm_tune.errors import ConfigError
from rbm_tune.kmeans import kmeans
from rbm_tune.memory import (
    DATASET_SIZES,
    GraphSizes,
    parse_bytes,
    student_estimate,
    teacher_estimate,
    trial_share,
)
from rbm_tune.search_space import SHIPPED_DIR, load_space, shipped_spaces
from rbm_tune.study.trainable import is_out_of_memory
from rbm_tune.teacher import TeacherOutputs

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "benchmarks" / "memory_probe.py"
CONFIGS = ROOT / "rbm_tune" / "configs"
GB = 10**9


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        # reference mode, batches of 2,048, grouped dispatch (the switch or a chunk peaks)
        ["student.hidden_dim=256", "distill.batch_size=2048"],
        # full batch: one chunk of every row, the train phase peaks
        ["student.hidden_dim=256", "distill.batch_size=-1"],
        # fast mode, val nodes only, more experts and k
        [
            "student.hidden_dim=256",
            "student.num_experts=8",
            "student.k=4",
            "distill.batch_size=8192",
            "distill.mode=fast",
            "distill.eval_nodes=needed",
        ],
    ],
    ids=["reference-2048", "full-batch", "fast-E8-k4"],
)
def test_estimate_within_25_percent_of_the_measured_peak(overrides: list[str]) -> None:
    args = ["--nodes", "20000", "--threads", "1"]
    for item in overrides:
        args += ["--set", item]
    out = subprocess.run(
        [sys.executable, str(PROBE), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    row = json.loads(out.strip().splitlines()[-1])
    assert row["measured"] > 50 * 2**20  # the probe really trained something sizeable
    assert 0.75 <= row["ratio"] <= 1.25, row


def _cfg(**sections: dict) -> TrialConfig:
    return load_config(CONFIGS / "ogbn-arxiv-transductive-sage-rbm.yaml").replace(**sections)


def test_estimate_follows_what_a_trial_holds() -> None:
    arxiv = DATASET_SIZES["ogbn-arxiv"]
    full = student_estimate(_cfg(), arxiv, "cuda")
    batched = student_estimate(_cfg(distill={"batch_size": 4096}), arxiv, "cuda")
    # full batch: every activation covers 169k rows; batches of 4,096 are far smaller
    assert full.phases["train"] > 20 * batched.phases["train"]
    assert full.total > 3 * batched.total
    # the teacher's embedding is held only where similarity distillation reads it
    assert "teacher embedding" not in batched.resident
    sim = student_estimate(_cfg(distill={"batch_size": 4096, "similarity_distill": True}), arxiv)
    assert sim.resident["teacher embedding"] == 169_343 * 1024 * 4
    # CUDA without per-pair dropout dispatches densely: every expert's output on every row
    no_dropout = _cfg(student={"dropout": 0.0, "num_experts": 16}, distill={"batch_size": 4096})
    grouped = student_estimate(no_dropout, arxiv, "cpu")
    dense = student_estimate(no_dropout, arxiv, "cuda")
    assert dense.phases["train"] > 2 * grouped.phases["train"]
    # evaluation is chunked on its own: a smaller eval chunk, a smaller eval phase
    big = student_estimate(_cfg(distill={"batch_size": 4096, "eval_batch_size": -1}), arxiv)
    small = student_estimate(_cfg(distill={"batch_size": 4096, "eval_batch_size": 1024}), arxiv)
    assert big.phases["eval"] > 10 * small.phases["eval"]
    # the sparse teacher never holds per-edge messages
    spec = _cfg().teacher
    assert (
        teacher_estimate(spec, arxiv, sparse=False).total > 2 * teacher_estimate(spec, arxiv).total
    )


@pytest.mark.parametrize("name", shipped_spaces())
def test_every_shipped_default_fits_its_gpu_share_on_24_and_80_gb_cards(name: str) -> None:
    """What the spaces' comments say: the default point fits gpus_per_trial x the card."""
    space = load_space(SHIPPED_DIR / name)
    study = space.study
    sizes = GraphSizes.for_dataset(space.default_config().dataset)
    if study.gpus_per_trial == 0:  # demo: a CPU space; a 32 GiB host with 2 CPUs
        need = student_estimate(space.default_config(), sizes, "cpu").total
        assert need <= trial_share(study, "cpu", host_bytes=32 * 2**30, node_cpus=2)
        return
    need = student_estimate(space.default_config(), sizes, "cuda").total
    for card in (24 * GB, 80 * GB):
        assert need <= trial_share(study, "cuda", card_memory=card), (name, card, need)


@pytest.mark.integration
def test_dataset_sizes_match_the_loaded_files(shared_data: Path) -> None:
    for name in ("demo", "cora", "citeseer", "amazon-photo"):
        graph = load_graph(name, root=shared_data)
        assert GraphSizes.of(graph) == DATASET_SIZES[name], name


def test_constants_mirrored_without_torch_match_their_sources() -> None:
    """rbm_tune.memory imports no torch, so it restates two numbers: they must not drift."""
    from rbm_tune import distill, memory
    from rbm_tune.models import scratch

    assert memory.TRAIN_ACC_SAMPLE == distill.TRAIN_ACC_SAMPLE
    assert memory._SCRATCH_MAX == scratch.WORKSPACE_MAX * 4  # float32 bytes


def test_trial_share() -> None:
    space = load_space(SHIPPED_DIR / "arxiv.yaml")
    assert space.study.gpus_per_trial == 0.25
    assert trial_share(space.study, "cuda", card_memory=80 * GB) == 20 * GB
    # CPU: the host's memory / the trials that fit its CPUs, at most max_concurrent
    cpu = space.study.replace(gpus_per_trial=0, cpus_per_trial=2)
    assert trial_share(cpu, "cpu", host_bytes=64 * 2**30, node_cpus=8) == 16 * 2**30
    capped = cpu.replace(max_concurrent=2)
    assert trial_share(capped, "cpu", host_bytes=64 * 2**30, node_cpus=8) == 32 * 2**30
    explicit = cpu.replace(memory_per_trial=5 * 2**30)
    assert trial_share(explicit, "cpu", host_bytes=64 * 2**30, node_cpus=8) == 5 * 2**30


def test_parse_bytes() -> None:
    assert parse_bytes("80GB") == 80 * GB
    assert parse_bytes("24 GiB") == 24 * 2**30
    assert parse_bytes("1.5MiB") == 3 * 2**19
    assert parse_bytes(1024) == 1024
    for bad in ("80XB", "-1GB", "0", "lots", True):
        with pytest.raises(ConfigError, match="size|more than 0"):
            parse_bytes(bad)


def test_space_memory_per_trial(tmp_path: Path) -> None:
    text = (SHIPPED_DIR / "demo.yaml").read_text()
    good = tmp_path / "good.yaml"
    good.write_text(
        text.replace("gpus_per_trial: 0}", "gpus_per_trial: 0, memory_per_trial: 2GiB}")
    )
    assert load_space(good).study.memory_per_trial == 2 * 2**30
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("gpus_per_trial: 0}", "gpus_per_trial: 0, memory_per_trial: x}"))
    with pytest.raises(Exception, match="memory_per_trial 'x' is not a size; write e.g. 80GB"):
        load_space(bad)


def test_plan_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--space", "products", "--gpu-memory", "80GB"]) == 0
    out = capsys.readouterr().out
    assert "ogbn-products (2,449,029 nodes" in out
    assert "share per trial: 0.5 x a 80 GB card = 37.25 GiB" in out
    default = next(line for line in out.splitlines() if line.startswith("| default |"))
    assert "| yes |" in default
    # the largest corners (hidden 2048, 16 experts) do not fit half a card: named
    assert "corners do not fit" in out and "high (" in out
    assert "teacher (sage 3x128, full batch, sparse adjacency)" in out
    assert main(["plan", "--space", "cora"]) == 0
    assert "every one of the" in capsys.readouterr().out


def test_plan_bad_size_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--space", "arxiv", "--gpu-memory", "80XB"]) == 2
    err = capsys.readouterr().err
    assert (
        err == "rbm-tune: error: --gpu-memory '80XB' is not a size; write e.g. 80GB, "
        "24GiB or 512MiB\n"
    )


def test_a_real_cpu_allocation_failure_counts_as_out_of_memory() -> None:
    with pytest.raises(RuntimeError) as caught:
        torch.empty(2**62, dtype=torch.uint8)
    assert is_out_of_memory(caught.value)
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("can't allocate memory"))


def test_kmeans_normalising_its_sample_is_normalising_first() -> None:
    x = torch.randn(5000, 24, generator=torch.Generator().manual_seed(1)) * 3
    for rows in (0, 700):
        a = kmeans(F.normalize(x, dim=1), 6, restarts=2, seed=3, max_rows=rows)
        b = kmeans(x, 6, restarts=2, seed=3, max_rows=rows, normalize=True)
        assert torch.equal(a, b)


def _teacher(graph) -> TeacherOutputs:  # noqa: ANN001
    gen = torch.Generator().manual_seed(0)
    logits = 3 * F.one_hot(graph.y, graph.num_classes).float() + torch.randn(
        graph.num_nodes, graph.num_classes, generator=gen
    )
    return TeacherOutputs(
        log_probs=F.log_softmax(logits, -1),
        embedding=torch.empty(0),
        krd_delta=torch.empty(0),
        val_acc=0.0,
        test_acc=0.0,
        test_acc_oracle=0.0,
        best_epoch=0,
        epochs=0,
        seconds=0.0,
    )


def test_eval_chunks_and_tf32_on_a_cpu_change_nothing() -> None:
    graph = load_graph("demo")
    teacher = _teacher(graph)
    base = TrialConfig.from_mapping(
        {
            "dataset": "demo",
            "student": {"model": "rbm", "hidden_dim": 32, "num_experts": 4, "k": 2},
            "distill": {"max_epochs": 6, "pretrain_epochs": 2, "batch_size": 512},
        }
    )
    ref = train_student(base, graph, teacher)
    for change in ({"eval_batch_size": 37}, {"eval_batch_size": -1}, {"precision": "tf32"}):
        got = train_student(base.replace(distill=change), graph, teacher)
        assert [h["val_acc"] for h in got.history] == [h["val_acc"] for h in ref.history]
        assert (got.val_acc, got.test_acc, got.best_epoch) == (
            ref.val_acc,
            ref.test_acc,
            ref.best_epoch,
        )
    assert torch.backends.cuda.matmul.fp32_precision != "tf32"  # restored after the run
    assert math.isfinite(ref.test_acc) and 0 < ref.val_acc <= 1
