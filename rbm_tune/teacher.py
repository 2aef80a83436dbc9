"""Train a GNN teacher and extract what the student needs from it (method §2.2).

Full-batch on the training graph (the whole graph when transductive, the observed subgraph when
inductive), Adam, best-validation checkpoint (ties move it forward) and patience. The outputs
for the student are computed by the reloaded best-val teacher in eval mode, on the training
graph, in observed order.

Each graph's sparse adjacency (``model.adjacency``, see rbm_tune/models/teachers.py) is built
once before the epochs, so no layer materialises an edges x features tensor (issue 20 item 4);
the outputs equal the former ``edge_index`` path's within float tolerance, so the teacher cache
key (rbm_tune/teacher_cache.py) is unchanged.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from rbm_tune.config import TeacherSpec
from rbm_tune.data import Graph
from rbm_tune.metrics import accuracy
from rbm_tune.reliable import entropy_shift

__all__ = ["TeacherOutputs", "train_teacher"]


@dataclass(frozen=True)
class TeacherOutputs:
    """What distillation needs from a trained teacher, all on the CPU, observed order.

    Attributes:
        log_probs: log-softmax outputs of the best-val teacher, (N_obs, C).
        embedding: last hidden layer of the best-val teacher, (N_obs, H) (method §2.1).
        krd_delta: KRD knowledge-uncertainty δ in [0, 1] under unit Gaussian feature noise,
            (N_obs,) (method §4.4).
        val_acc: validation accuracy at the best-val epoch.
        test_acc: test accuracy at the best-val epoch (primary, honest).
        test_acc_oracle: maximum test accuracy over epochs (what the reference reports).
        best_epoch, epochs, seconds: bookkeeping (``seconds`` is the training time, also when
            the outputs come from the teacher cache).
        state_dict: CPU copy of the best-val teacher's weights, to rebuild it with
            ``rbm_tune.models.build_teacher``; ``None`` when not kept.
    """

    log_probs: Tensor
    embedding: Tensor
    krd_delta: Tensor
    val_acc: float
    test_acc: float
    test_acc_oracle: float
    best_epoch: int
    epochs: int
    seconds: float
    state_dict: dict[str, Tensor] | None = None


def train_teacher(
    spec: TeacherSpec,
    graph: Graph,
    *,
    seed: int,
    device: torch.device | str = "cpu",
    report: Callable[[dict[str, float]], None] | None = None,
) -> TeacherOutputs:
    """Train ``spec``'s GNN on ``graph`` and return its outputs for distillation.

    Args:
        spec: the teacher's hyperparameters.
        graph: the dataset and split.
        seed: seeds the initialisation, dropout and the KRD noise.
        device: where to train.
        report: called once per epoch with ``{"epoch", "train_loss", "val_acc"}``.
    """
    from rbm_tune.models import build_teacher

    start = time.perf_counter()
    device = torch.device(device)
    torch.manual_seed(seed)
    model = build_teacher(spec, graph.num_features, graph.num_classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)

    x_obs = graph.x[graph.observed_idx].to(device)
    y_obs = graph.y[graph.observed_idx].to(device)
    edges_obs = model.adjacency(graph.observed_edge_index.to(device), x_obs.shape[0])
    train, val = graph.observed_train.to(device), graph.observed_val.to(device)
    if graph.is_inductive:
        x_full = graph.x.to(device)
        edges_full = model.adjacency(graph.edge_index.to(device), x_full.shape[0])
    y_test = graph.y[graph.test_idx].to(device)
    test_idx = graph.test_idx.to(device)

    best_val, best_epoch, best_state, since_best = -1.0, 0, None, 0
    test_at_best, test_max = 0.0, 0.0
    epoch = 0
    for epoch in range(1, spec.max_epochs + 1):
        model.train()
        opt.zero_grad()
        out = model(x_obs, edges_obs)
        loss = F.nll_loss(F.log_softmax(out.logits[train], dim=-1), y_obs[train])
        loss.backward()
        opt.step()

        model.eval()
        with torch.no_grad():
            logits = model(x_obs, edges_obs).logits
            val_acc = accuracy(logits[val], y_obs[val])
            if graph.is_inductive:
                logits = model(x_full, edges_full).logits
                test_acc = accuracy(logits[test_idx], y_test)
            else:
                test_acc = accuracy(logits[test_idx], y_test)
        test_max = max(test_max, test_acc)
        if val_acc >= best_val:  # reference tie rule: a tie moves the checkpoint forward
            best_val, best_epoch, test_at_best, since_best = val_acc, epoch, test_acc, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            since_best += 1
        if report is not None:
            report({"epoch": epoch, "train_loss": float(loss), "val_acc": val_acc})
        if since_best >= spec.patience:
            break

    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        out = model(x_obs, edges_obs)
        gen = torch.Generator(device=device).manual_seed(seed)
        noise = torch.randn(x_obs.shape, generator=gen, device=device)
        noisy = model(x_obs + noise, edges_obs).logits
        delta = entropy_shift(out.logits, noisy)
    return TeacherOutputs(
        log_probs=F.log_softmax(out.logits, dim=-1).cpu(),
        embedding=out.embedding.cpu(),
        krd_delta=delta.cpu(),
        val_acc=best_val,
        test_acc=test_at_best,
        test_acc_oracle=test_max,
        best_epoch=best_epoch,
        epochs=epoch,
        seconds=time.perf_counter() - start,
        state_dict={name: t.detach().cpu().clone() for name, t in best_state.items()},
    )
