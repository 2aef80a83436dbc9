"""How much memory one trial (and one teacher) needs, before anything is allocated.

:func:`estimate` adds up what a student trial holds at its peak, from the config and the graph's
sizes alone (no torch, no data): the parameters with their gradients and Adam's two moments,
the features and teacher outputs the trial keeps on its device, and the largest of three
transient phases:

- *train*: one training chunk (``distill.batch_size`` rows; -1 = every row) through every layer
  with what backward keeps (RbM/MoE grouped dispatch: the k gathered input rows per node and
  their dropout keep-masks; dense dispatch: the B x E x d_out expert outputs), plus the
  backward temporaries of the widest layer and the grouped path's reusable scratch buffers;
- *eval*: one evaluation chunk (``distill.eval_batch_size``) without gradient;
- *switch*: the end of pretraining, which pushes every node through the switched layers and
  runs k-means on the normalised inputs.

The figures are the tensors' bytes; the runtime (CUDA context, or torch + Ray Tune imported in a
CPU process) is :data:`RUNTIME_BYTES` on top. Validated against measured peaks
(``benchmarks/bench_memory_model.py``; a fast test at small size in ``tests/test_memory.py``).

:func:`teacher_estimate` does the same for full-batch teacher training (sparse adjacency, or the
edge-wise messages PyG materialises over ``edge_index``). :func:`trial_share` (from
:mod:`rbm_tune.memory_share`, with the size parsing and formatting) is the memory a trial may use.

This module imports neither torch nor Ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from rbm_tune.errors import ConfigError
from rbm_tune.memory_share import format_bytes, host_memory, parse_bytes, trial_share

__all__ = [
    "DATASET_SIZES",
    "RUNTIME_BYTES",
    "Estimate",
    "GraphSizes",
    "estimate",
    "format_bytes",
    "host_memory",
    "parse_bytes",
    "student_estimate",
    "teacher_estimate",
    "trial_share",
]

F32 = 4
# the process around the tensors: a CUDA context on a GPU; torch + Ray Tune imported on a CPU
# (benchmarks/results/bench_memory-cpu-fast.md: 0.38 GiB after the imports)
RUNTIME_BYTES = {"cuda": 600 * 2**20, "cpu": 400 * 2**20}
_SCRATCH_MAX = (1 << 24) * F32  # rbm_tune.models.scratch.WORKSPACE_MAX elements of float32
TRAIN_ACC_SAMPLE = 4096  # rbm_tune.distill.TRAIN_ACC_SAMPLE (no torch import here)


@dataclass(frozen=True)
class GraphSizes:
    """The sizes of a graph that memory depends on.

    Attributes:
        num_nodes: N; num_features: d; num_classes: C; num_edges: directed edges (as stored).
        num_observed: training-graph nodes (N when transductive).
        num_val: validation nodes; num_test: test nodes.
    """

    num_nodes: int
    num_features: int
    num_classes: int
    num_edges: int
    num_observed: int
    num_val: int
    num_test: int
    num_train: int = 0  # 0: unknown (the observed nodes are an upper bound)

    @classmethod
    def of(cls, graph: Any) -> GraphSizes:
        """The sizes of a loaded :class:`rbm_tune.data.Graph`."""
        edges = getattr(graph, "edge_index", None)  # a trial's slim payload may leave it out
        return cls(
            num_nodes=int(graph.num_nodes),
            num_features=int(graph.num_features),
            num_classes=int(graph.num_classes),
            num_edges=int(edges.shape[1]) if edges is not None and edges.dim() == 2 else 0,
            num_observed=int(graph.observed_idx.numel()),
            num_val=int(graph.val_idx.numel()),
            num_test=int(graph.test_idx.numel()),
            num_train=int(graph.train_idx.numel()),
        )

    @classmethod
    def for_dataset(cls, name: str) -> GraphSizes:
        """Published sizes of a dataset (transductive), so a plan needs no data files."""
        try:
            return DATASET_SIZES[name]
        except KeyError:
            raise ConfigError(
                f"no sizes known for dataset {name!r}; choose one of {sorted(DATASET_SIZES)}"
            ) from None


def _sizes(n: int, d: int, c: int, e: int, train: int, val: int, test: int) -> GraphSizes:
    return GraphSizes(n, d, c, e, n, val, test, train)


# Nodes, features, classes, directed edges (as rbm_tune.data loads them: both directions, the
# self-loops method §6.1 adds), train, validation and test nodes of the transductive split (a test
# checks them against the loaded files). OGB: the official counts (arxiv made undirected) plus one
# self-loop per node; PubMed: Planetoid's published sizes, a self-loop per node added.
DATASET_SIZES = {
    "demo": _sizes(3_000, 32, 5, 23_908, 100, 150, 2_750),
    "cora": _sizes(2_708, 1_433, 7, 13_264, 140, 500, 1_000),
    "citeseer": _sizes(3_327, 3_703, 6, 12_431, 120, 500, 1_000),
    "pubmed": _sizes(19_717, 500, 3, 108_365, 60, 500, 1_000),
    "amazon-computers": _sizes(13_381, 767, 10, 491_556, 200, 300, 12_881),
    "amazon-photo": _sizes(7_487, 745, 8, 238_086, 160, 240, 7_087),
    "coauthor-cs": _sizes(18_333, 6_805, 15, 163_788, 300, 450, 17_583),
    "coauthor-physics": _sizes(34_493, 8_415, 5, 495_924, 100, 150, 34_243),
    "ogbn-arxiv": _sizes(169_343, 128, 40, 2_484_941, 90_941, 29_799, 48_603),
    "ogbn-products": _sizes(2_449_029, 100, 47, 126_167_309, 196_615, 39_323, 2_213_091),
}


@dataclass(frozen=True)
class Estimate:
    """Bytes per part; ``total`` is the peak (resident parts + the largest transient phase)."""

    resident: dict[str, int]
    phases: dict[str, int]
    device: str
    runtime: int = 0
    notes: tuple[str, ...] = field(default=())

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=lambda k: self.phases[k]) if self.phases else ""

    @property
    def tensors(self) -> int:
        """The tensors' bytes at the peak, without the runtime."""
        return sum(self.resident.values()) + (max(self.phases.values()) if self.phases else 0)

    @property
    def total(self) -> int:
        return self.tensors + self.runtime


def _layer_dims(student: Any, d: int, c: int) -> list[tuple[int, int]]:
    dims = [d] + [student.hidden_dim] * (student.num_layers - 1) + [c]
    return list(zip(dims[:-1], dims[1:], strict=True))


def _num_params(student: Any, d: int, c: int, similarity: bool) -> int:
    experts = student.num_experts if student.model != "mlp" else 1
    total = 0
    for a, b in _layer_dims(student, d, c):
        total += experts * (a * b + b)
        if student.model == "rbm":
            total += experts * a + 1 + (experts * a if student.input_attention else 0)
        elif student.model == "moe":
            total += a * experts + experts  # the router
    total += 4 * student.hidden_dim * (student.num_layers - 1)  # norms (weights + stats)
    if similarity:
        emb = student.hidden_dim if student.num_layers > 1 else c
        total += emb * emb + emb
    return total


def _grouped(student: Any, device: str, training: bool) -> bool:
    """Whether the expert dispatch is grouped (rbm_tune.models.experts.use_grouped)."""
    if student.model == "mlp":
        return False
    if device == "cpu":
        return True
    per_pair = student.expert_dropout == "per_pair"
    return training and per_pair and student.dropout > 0 and _experts_per_row(student) > 1


def _experts_per_row(student: Any) -> int:
    """Experts each row reaches: k (RbM, MoE's noisy top-k router), k + 1 (MoE's reference)."""
    if student.model == "moe" and student.router == "reference":
        return min(student.k + 1, student.num_experts)
    return 1 if student.model == "mlp" else int(student.k)


def _train_chunk(student: Any, dims: list[tuple[int, int]], rows: int, device: str) -> int:
    """Bytes one training chunk keeps for backward, plus the widest layer's backward work."""
    b, e = rows, student.num_experts
    k = _experts_per_row(student)
    kept, work, scratch = 0, 0, 0
    grouped = _grouped(student, device, training=True)
    mask = 1 if device == "cuda" else F32  # rbm_tune.models.dropout_mask.keep_mask's dtype there
    if student.dropout == 0:
        mask = 0
    for i, (a, out) in enumerate(dims):
        hidden = i < len(dims) - 1
        # output, output scale, norm and ReLU outputs (the last layer: logits, log-softmax)
        kept += (4 if hidden else 3) * b * out * F32
        if student.model == "mlp":  # Linear -> norm -> ReLU -> dropout (its one-byte mask)
            kept += b * out if hidden and student.dropout > 0 else 0
            work = max(work, b * (a + out) * F32)
            continue
        kept += 3 * b * e * F32  # routing scores, top-k, weights, load-balance matrix
        if student.model == "moe":  # the router's projection to hidden_dim, normalised
            kept += 2 * b * student.hidden_dim * F32
        if grouped:
            kept += k * b * a * (F32 + mask)  # gathered pair rows and their keep-masks
            # backward: gy and g_xs for every pair, g_src; forward: 16 random bits a decision
            work = max(work, k * b * (out + a) * F32 + b * a * F32, k * b * a * 2)
            scratch = max(scratch, sum(min(n, _SCRATCH_MAX) for n in (
                k * b * a * 2, k * b * out * F32, b * out * F32,
                k * b * out * F32, k * b * a * F32, b * a * F32,
            )))  # fmt: skip
        else:  # dense: every expert's output on every row
            dropout = student.dropout > 0
            if dropout and student.expert_dropout == "per_pair" and k > 1:
                # k dropped copies of the chunk, each through every expert (transient), then
                # each copy's own expert gathered (kept)
                kept += k * b * a * (F32 + 1) + 2 * k * b * out * F32
                # backward: the gather's and the GEMM's gradients over every expert's output
                work = max(work, 2 * k * b * e * out * F32 + k * b * a * F32)
            else:  # one (dropped) chunk; the (B, E, d_out) outputs kept for the mixing
                kept += (b * a * (F32 + 1) if dropout else 0) + b * e * out * F32
                work = max(work, 2 * b * e * out * F32)
    return kept + work + scratch


def _eval_chunk(student: Any, dims: list[tuple[int, int]], rows: int, device: str) -> int:
    """Bytes of one evaluation chunk's forward (no gradient): the widest layer's temporaries."""
    b, e = rows, student.num_experts
    k = _experts_per_row(student)
    grouped = _grouped(student, device, training=False)
    peak = 0
    for a, out in dims:
        if student.model == "mlp":
            layer = b * (a + 2 * out) * F32
        elif grouped:
            layer = k * b * (a + out) * F32 + b * (e + 2 * out) * F32
        else:
            layer = b * e * out * F32 * 2 + b * (a + e + out) * F32
        peak = max(peak, layer)
    return peak


def _switch(
    student: Any, dims: list[tuple[int, int]], n: int, rows: int, sample: int, device: str
) -> int:
    """End of pretraining: every node through the switched layers into one (N, d_out) buffer,
    k-means on a normalised copy of (a sample of) each layer's inputs."""
    if student.model == "mlp":
        return 0
    peak = 0
    for i, (a, out) in enumerate(dims[:-1]):
        inputs = 0 if i == 0 else n * a * F32  # the first layer's are the features (resident)
        kmeans = 2 * sample * a * F32  # the sampled rows and their normalised copy
        chunk = _eval_chunk(student, [(a, out)], rows, device)
        peak = max(peak, inputs + max(kmeans, n * out * F32 + chunk))
    return peak


def student_estimate(
    config: Any, sizes: GraphSizes, device: str = "cpu", students: int = 1
) -> Estimate:
    """What one student trial of ``config`` holds at its peak on ``device`` ("cpu"/"cuda").

    Args:
        config: a :class:`rbm_tune.config.TrialConfig`.
        sizes: the graph's sizes (:meth:`GraphSizes.of` or :meth:`GraphSizes.for_dataset`).
        device: where the trial trains.
        students: ``study.seeds_per_trial``. The students train in lockstep
            (rbm_tune.multi_seed), one epoch at a time, sharing the features and the teacher:
            each keeps its parameters and Adam state (and KRD's edge state) resident, while an
            epoch's activations are freed before the next student's epoch, so the phases'
            peaks are one student's. (Students trained one after another would add nothing.)
    """
    device = "cuda" if str(device).startswith("cuda") else "cpu"
    s, dist = config.student, config.distill
    n, d, c = sizes.num_nodes, sizes.num_features, sizes.num_classes
    n_obs = sizes.num_observed
    if dist.positional_encoding:
        d += dist.pe_dim
    dims = _layer_dims(s, d, c)
    params = _num_params(s, d, c, dist.similarity_distill)
    inductive = config.setting == "inductive"
    resident = {
        # parameters, gradients and Adam's two moments (fused Adam: no extra copies)
        "parameters + Adam": params * 4 * F32 * students,
        # features (inductive: also the observed rows' copy), labels, split indices
        "features": (n + (n_obs if inductive else 0)) * d * F32 + n * 8 * 3,
        "teacher log-probs": n_obs * c * F32,
    }
    if dist.similarity_distill:
        resident["teacher embedding"] = n_obs * config.teacher.hidden_dim * F32
    if dist.reliable_sampling or dist.positional_encoding:
        resident["edges"] = sizes.num_edges * 8 * 2
    if dist.reliable_sampling and students > 1:  # each student's KRD sampler: per-edge state
        resident["edges"] += (students - 1) * sizes.num_edges * 8 * 2
    batch = dist.batch_size if dist.batch_size > 0 else math.inf
    n_train = sizes.num_train or n_obs
    if dist.mode == "reference":  # CE chunks of train rows, KD chunks of distillation pairs
        pairs = n_obs + (sizes.num_edges if dist.reliable_sampling else 0)  # KRD: kept edges
        train_rows = int(max(min(batch, n_train), min(batch, pairs)))
    else:  # one forward per node, in chunks of batch_size rows
        train_rows = int(min(batch, n_obs))
    eval_size = dist.eval_batch_size or dist.batch_size
    if dist.eval_nodes == "needed" and dist.reliable_sampling is False:
        eval_n = sizes.num_val + TRAIN_ACC_SAMPLE
    else:
        eval_n = n
    eval_rows = eval_n if eval_size == -1 else min(eval_size, eval_n)
    gram = 0
    if dist.similarity_distill:  # student and teacher B x B Gram matrices and their difference
        gram = 3 * int(min(batch, n_train)) ** 2 * F32
    phases = {
        "train": _train_chunk(s, dims, train_rows, device) + gram,
        "eval": _eval_chunk(s, dims, eval_rows, device) + n * c * F32,
    }
    if s.model == "rbm":  # k-means at the end of pretraining
        switch_rows = n_obs if dist.batch_size == -1 else min(dist.batch_size, n_obs)
        sample = min(dist.kmeans_max_rows or n_obs, n_obs)
        phases["switch"] = _switch(s, dims, n_obs, switch_rows, sample, device)
    notes = []
    if dist.precision == "bf16":
        notes.append("bf16 autocast: activations counted in float32 (an upper bound)")
    return Estimate(resident, phases, device, RUNTIME_BYTES[device], tuple(notes))


def estimate(config: Any, sizes: GraphSizes, device: str = "cpu", students: int = 1) -> int:
    """Peak bytes of one student trial, runtime included (:func:`student_estimate`)."""
    return student_estimate(config, sizes, device, students).total


def teacher_estimate(
    spec: Any, sizes: GraphSizes, device: str = "cpu", *, sparse: bool = True
) -> Estimate:
    """Peak of one full-batch teacher training epoch (forward, backward, Adam).

    Args:
        spec: a :class:`rbm_tune.config.TeacherSpec`.
        sizes: the graph's sizes.
        device: "cpu" or "cuda".
        sparse: aggregate through a sparse adjacency (CSR, rbm_tune.models.adjacency: no
            per-edge tensors; GAT's attention in chunks of target nodes); False: PyG's message
            passing over ``edge_index``, an edges x width message tensor at the widest layer.
    """
    device = "cuda" if str(device).startswith("cuda") else "cpu"
    n, d, c, e = sizes.num_observed, sizes.num_features, sizes.num_classes, sizes.num_edges
    heads = spec.heads if spec.model == "gat" else 1
    widths = [d] + [spec.hidden_dim * heads] * (spec.num_layers - 1) + [c]
    layers = list(zip(widths, widths[1:]))
    params = sum(a * b * (2 if spec.model == "sage" else 1) + b for a, b in layers)
    index = 4 if e < 2**31 and n < 2**31 else 8  # rbm_tune.models.adjacency: int32 while it fits
    # CSR (row pointers, column indices, values); SAGE also keeps its transpose for backward
    csr = (n + 1) * index + e * (index + F32)
    resident = {
        "parameters + Adam": params * 4 * F32,
        "features": n * d * F32 + n * 8 * 2,
        "adjacency": csr * (2 if spec.model == "sage" else 1) if sparse else 2 * e * 8,
    }
    # kept for backward: the first layer's aggregated input; two node-sized tensors and the
    # one-byte dropout mask per hidden layer (rbm_tune.models.teacher_ops; PyG's layers over
    # edge_index keep four); the logits and their log-softmax
    per_hidden = 2 if sparse else 4
    kept = n * d * F32 + 2 * n * c * F32
    kept += sum(n * b * (per_hidden * F32 + 1) for _, b in layers[:-1])
    if spec.model == "gat" and not sparse:  # attention coefficients per edge and head
        kept += spec.num_layers * e * heads * F32 * 3
    # backward: two node-sized gradients at the widest layer; over edge_index, one edges x
    # width message tensor (gathered in forward, its gradient in backward) at the widest input
    work = 2 * n * max(widths) * F32 + (0 if sparse else e * max(widths[:-1]) * F32)
    phases = {"train": kept + work}
    return Estimate(resident, phases, device, RUNTIME_BYTES[device])
