"""One student training run's state and steps: the two epoch semantics, the losses and the
evaluation (method §4). :func:`rbm_tune.distill.train_student` drives it; no Ray/MLflow here.

Two epoch semantics (``distill.mode``):

- ``reference`` reproduces method §4.3 exactly: gradients of per-chunk mean losses accumulate over
  a CE phase (training nodes) and a KD phase (distillation pairs), optionally an adversarial
  phase, then one Adam step per epoch.
- ``fast`` forwards each training-graph node once per epoch, in chunks of ``batch_size`` rows
  (gradients accumulated, one Adam step), and computes CE, KD and aux from that one forward,
  weighting each term by its reference chunk count so the objective matches §4.3's (sum of
  chunk means) up to unequal last chunks; the aux loss is the row-weighted mean of the chunks'.
  Deviation: the train nodes are forwarded once instead of twice, so the RbM memory EMA runs
  once per chunk instead of once per CE chunk plus once per KD chunk, dropout masks are shared
  by the CE and KD terms, and the chunks (hence batch-norm statistics, the similarity Gram
  matrices and the adversarial PGD) hold all nodes in stored order, not train nodes or pairs.

Evaluation runs in chunks of ``distill.eval_batch_size`` rows (0: ``batch_size``'s; the
results do not depend on it), so a large graph's evaluation need not hold all its rows at once.
``distill.eval_nodes``: ``all`` forwards every node each epoch (§4.3 step 8).
``needed`` forwards only what the run uses: the validation nodes every epoch (plus every
observed node when KRD needs the predictions), the test nodes only at an epoch whose validation
accuracy is a new best, and a fixed seeded sample of at most ``train_acc_sample``
(:data:`rbm_tune.distill.TRAIN_ACC_SAMPLE`) training nodes for the reported ``train_acc``.
Deviation: ``train_acc`` is then that sample's accuracy,
and the max-over-epochs test accuracy is not measured (``test_acc_oracle`` is NaN); the selected
epoch and its test accuracy are the same as with ``all``.

Speed options, off by default: ``precision: tf32`` lets CUDA run float32 matmuls on TF32
tensor cores (float32 tensors throughout; a CPU is unaffected); ``precision: bf16`` runs the
student's forwards under bfloat16 autocast (parameters, Adam state, log-softmax, KL and the
similarity loss stay float32; on a CPU with AMX a bf16 GEMM is about 4x a float32 one);
``compile: true`` wraps the forward in ``torch.compile`` (the RbM's grouped dispatch, which
reads its per-expert row counts on the host, runs between compiled graphs). Neither changes the
objective; both change the numerics.
``sparse_features: auto`` (the default) lets the first layer multiply only the non-zeros of
sparse features on the CPU (:mod:`rbm_tune.models.sparse`: the same function, float sums in
another order): the CSR of each feature matrix is built once and handed to the student with
the rows it forwards (``student(x, csr=...)``); ``off`` keeps dense GEMMs.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rbm_tune import losses
from rbm_tune.config import TrialConfig
from rbm_tune.data import Graph
from rbm_tune.metrics import accuracy
from rbm_tune.models.sparse import CsrRows, SparseFeatures, forbid_sparse
from rbm_tune.teacher import TeacherOutputs

__all__ = ["StudentTrainer"]


def _chunks(n: int, batch_size: int) -> list[slice]:
    size = n if batch_size == -1 else batch_size
    return [slice(i, min(i + size, n)) for i in range(0, n, max(size, 1))]


class StudentTrainer:
    """The state of one student training run (model, optimiser, data on the device).

    ``epoch_reference()`` / ``epoch_fast()`` run one epoch (one Adam step) and return its
    summed loss; ``evaluate()`` / ``evaluate_needed()`` / ``test_accuracy()`` measure the
    student in eval mode. :func:`rbm_tune.distill.train_student` drives it.

    Args:
        config: the trial (student and distill sections; ``seed`` seeds the run's generator).
        graph: the dataset and split.
        teacher: the teacher's outputs on the training graph (observed order).
        features: student inputs for every node, (N, d').
        device: where to train.
        train_acc_sample: training nodes behind ``train_acc`` with ``eval_nodes: needed``.
    """

    def __init__(
        self,
        config: TrialConfig,
        graph: Graph,
        teacher: TeacherOutputs,
        features: Tensor,
        device: torch.device,
        *,
        train_acc_sample: int,
    ) -> None:
        from rbm_tune.models import build_student

        d = config.distill
        self.cfg, self.d, self.graph, self.device = config, d, graph, device
        self.x_full = features.to(device)
        # transductive: the observed rows are every row in order (no copy of the features)
        observed_all = not graph.is_inductive and graph.num_observed == features.size(0)
        self.x = self.x_full if observed_all else self.x_full[graph.observed_idx.to(device)]
        self.y = graph.y[graph.observed_idx].to(device)
        self.train = graph.observed_train.to(device)
        self.val = graph.observed_val.to(device)
        self.test = graph.test_idx.to(device)
        self.y_test = graph.y[graph.test_idx].to(device)
        self.logp_t = teacher.log_probs.to(device)
        # the teacher's embedding only where similarity distillation reads it (N x H)
        # the teacher's embedding (empty when similarity distillation is off)
        self.h_t = teacher.embedding.to(device) if d.similarity_distill else teacher.embedding[:0]
        self.teacher_pred = self.logp_t.argmax(-1)
        self.gen = torch.Generator(device=device).manual_seed(config.seed)
        self.eval_rows = d.eval_batch_size or d.batch_size  # 0: as batch_size
        # eval_nodes: needed — a fixed sample of training nodes behind train_acc (own generator,
        # so the training's random stream is the same as with eval_nodes: all)
        pick = torch.randperm(
            self.train.numel(), generator=torch.Generator().manual_seed(config.seed)
        )[:train_acc_sample]
        self.train_probe = self.train[pick.to(device)]

        self.model = build_student(
            config.student,
            self.x.size(1),
            graph.num_classes,
            feature_encoder=d.similarity_distill,
        ).to(device)
        # sparse features (CPU): each matrix's CSR built once, handed to the student with the
        # rows it forwards; dense ones (known now): no counting pass per chunk either
        sparse = d.sparse_features == "auto" and device.type == "cpu"
        self.rows = SparseFeatures(self.x, enabled=sparse)
        self.rows_full = (
            self.rows if self.x_full is self.x else SparseFeatures(self.x_full, enabled=sparse)
        )
        if d.sparse_features == "off":
            forbid_sparse(self.model)
        elif sparse and not (self.rows.is_sparse or self.rows_full.is_sparse):
            self.model.input_sparse = False
        # ``net`` runs the forward; ``model`` is the module itself (state, switch, flags)
        self.net = torch.compile(self.model, dynamic=True) if d.compile else self.model
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, p in self.model.named_parameters():
            is_memory = name.endswith("memory")
            (no_decay if is_memory and not d.memory_weight_decay else decay).append(p)
        groups: list[dict[str, Any]] = [{"params": decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        # fused: one kernel over every parameter (about 5x faster than the default per-tensor
        # loop on a 2-core CPU; a step is a measurable share of a small graph's epoch)
        self.opt = torch.optim.Adam(groups, lr=d.lr, weight_decay=d.weight_decay, fused=True)

        self.sampler = None
        if d.reliable_sampling:
            from rbm_tune.reliable import ReliableSampler

            self.sampler = ReliableSampler(
                teacher.krd_delta.to(device),
                graph.observed_edge_index.to(device),
                graph.num_observed,
                init_power=d.krd_init_power,
                momentum=d.krd_momentum,
                min_update_epoch=d.krd_min_update_epoch,
                update_rate=d.krd_update_rate,
                bins=d.krd_bins,
            )

    # -- losses ---------------------------------------------------------------------------
    def _kd(self, logits: Tensor, target: Tensor) -> Tensor:
        d = self.d
        if d.kd_form == "hinton":
            return losses.kd_hinton(logits, target, d.temperature)
        return losses.kd_reference(F.log_softmax(logits, -1), target, d.temperature)

    def _run(self, x: Tensor, csr: CsrRows | None = None):  # -> StudentOutput
        """The student's forward (``csr``: the CSR of x's rows, if the features have one),
        under bf16 autocast with ``precision: bf16``; the outputs the losses read are float32
        (log-softmax, KL and similarity in full precision)."""
        if self.d.compile:  # compiled graphs stay dense (sparse_input): no object to guard on
            csr = None
        if self.d.precision != "bf16":  # float32, or tf32 (float32 tensors, TF32 matmuls)
            return self.net(x, csr=csr)
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            out = self.net(x, csr=csr)
        return out._replace(embedding=out.embedding.float(), logits=out.logits.float())

    def _forward(
        self, x: Tensor, csr: CsrRows | None = None, *, update_memory: bool = True
    ):  # -> StudentOutput
        if hasattr(self.model, "update_memory"):
            setattr(self.model, "update_memory", update_memory)  # noqa: B010 (RbM's own flag)
        return self._run(x, csr)

    def _ce_term(
        self, x: Tensor, rows: Tensor, csr: CsrRows | None = None, *, update_memory: bool = True
    ) -> Tensor:
        out = self._forward(x, csr, update_memory=update_memory)
        loss = self.d.label_weight * losses.label_loss(F.log_softmax(out.logits, -1), self.y[rows])
        loss = loss + out.aux
        if self.d.similarity_distill:
            z = self.model.similarity_features(out.embedding)
            loss = loss + self.d.feat_distill_weight * losses.similarity_loss(z, self.h_t[rows])
        return loss

    def _kd_term(
        self, x: Tensor, v: Tensor, csr: CsrRows | None = None, *, update_memory: bool = True
    ) -> Tensor:
        out = self._forward(x, csr, update_memory=update_memory)
        return (1 - self.d.label_weight) * self._kd(out.logits, self.logp_t[v]) + out.aux

    def _perturb(self, x: Tensor, raw_loss: Callable[[Tensor], Tensor]) -> Tensor:
        """PGD on the inputs (method §4.5): returns x + δ after ``adv_iters`` signed steps."""
        eps = self.d.adv_eps
        delta = (torch.rand(x.shape, generator=self.gen, device=x.device) * 2 - 1) * eps
        clean = self.d.memory_update == "every_forward"
        for _ in range(self.d.adv_iters):
            delta.requires_grad_(True)
            if hasattr(self.model, "update_memory"):
                setattr(self.model, "update_memory", clean)  # noqa: B010 (RbM's own flag)
            (grad,) = torch.autograd.grad(raw_loss(x + delta), delta)
            delta = (delta.detach() + eps / 4 * grad.sign()).clamp(-eps, eps)
        return x + delta

    def _raw_ce(self, rows: Tensor) -> Callable[[Tensor], Tensor]:
        def f(x: Tensor) -> Tensor:
            out = self._run(x)
            return losses.label_loss(F.log_softmax(out.logits, -1), self.y[rows]) + out.aux

        return f

    def _raw_kd(self, v: Tensor) -> Callable[[Tensor], Tensor]:
        def f(x: Tensor) -> Tensor:
            out = self._run(x)
            logp_s = F.log_softmax(out.logits, -1)
            kd = F.kl_div(logp_s, self.logp_t[v], log_target=True, reduction="batchmean")
            return kd + out.aux

        return f

    # -- one epoch ------------------------------------------------------------------------
    def _pairs(self) -> tuple[Tensor, Tensor]:
        if self.sampler is not None:
            return self.sampler.sample_pairs(self.gen)
        ids = torch.arange(self.x.size(0), device=self.device)
        return ids, ids

    def _zero(self) -> Tensor:
        """The epoch's loss accumulator: float64 on the device (one host sync, at the end)."""
        return torch.zeros((), dtype=torch.float64, device=self.device)

    def epoch_reference(self) -> float:
        """method §4.3 steps 2-7: accumulate chunk losses, one Adam step."""
        d = self.d
        u, v = self._pairs()
        ema_adv = d.memory_update == "every_forward"
        self.opt.zero_grad(set_to_none=True)
        total = self._zero()  # on the device: no host sync per chunk
        ce_chunks = [self.train[s] for s in _chunks(self.train.numel(), d.batch_size)]
        kd_chunks = [
            (u[s], v[s]) for s in _chunks(u.numel(), d.batch_size) if s.stop - s.start >= 2
        ]
        for rows in ce_chunks:  # sparse features: their CSR gathered, not rescanned
            loss = self._ce_term(self.x[rows], rows, self.rows.take(rows))
            loss.backward()
            total += loss.detach()
        for cu, cv in kd_chunks:
            loss = self._kd_term(self.x[cu], cv, self.rows.take(cu))
            loss.backward()
            total += loss.detach()
        if d.adv_augment:
            for rows in ce_chunks:
                x_adv = self._perturb(self.x[rows], self._raw_ce(rows))
                loss = d.adv_weight * self._ce_term(x_adv, rows, update_memory=ema_adv)
                loss.backward()
                total += loss.detach()
            for cu, cv in kd_chunks:
                x_adv = self._perturb(self.x[cu], self._raw_kd(cv))
                loss = d.adv_weight * self._kd_term(x_adv, cv, update_memory=ema_adv)
                loss.backward()
                total += loss.detach()
        self.opt.step()
        return float(total)

    def epoch_fast(self) -> float:
        """One forward per node, in chunks; CE/KD/aux weighted by their reference chunk counts.

        The observed nodes are cut into chunks of ``batch_size`` rows in stored order; each chunk
        is forwarded once and carries its share of every term: its train rows' NLL sum over
        ``n_train``, its pairs' (by the node u they show) KD over the pair count, and its aux
        times ``rows / N``, so the terms summed over chunks are the whole-epoch means, weighted
        by the reference's chunk counts (§4.3). Gradients accumulate; one Adam step.
        """
        d = self.d
        u, v = self._pairs()
        n = self.x.size(0)
        n_train, n_pairs = self.train.numel(), u.numel()
        n_ce = len(_chunks(n_train, d.batch_size))
        n_kd = sum(1 for s in _chunks(n_pairs, d.batch_size) if s.stop - s.start >= 2)
        chunks = _chunks(n, d.batch_size)
        starts = torch.tensor([c.start for c in chunks] + [n], device=self.device)
        train = self.train.sort().values
        by_u = torch.argsort(u, stable=True)
        u, v = u[by_u], v[by_u]
        train_at = torch.searchsorted(train, starts).tolist()  # one sync per epoch
        pairs_at = torch.searchsorted(u, starts).tolist()

        def objective(
            x: Tensor, c: int, *, raw: bool, update_memory: bool, csr: CsrRows | None = None
        ) -> Tensor:
            a = chunks[c].start
            out = self._forward(x, csr, update_memory=update_memory)
            logits, aux = out.logits, out.aux
            logp = F.log_softmax(logits, -1)
            rows = train[train_at[c] : train_at[c + 1]]
            cu, cv = u[pairs_at[c] : pairs_at[c + 1]] - a, v[pairs_at[c] : pairs_at[c + 1]]
            share = x.size(0) / n
            loss = logits.new_zeros(())
            if raw:
                if rows.numel():
                    loss = F.nll_loss(logp[rows - a], self.y[rows], reduction="sum") / n_train
                if cu.numel():
                    kd = F.kl_div(logp[cu], self.logp_t[cv], log_target=True, reduction="sum")
                    loss = loss + kd / n_pairs
                return loss + share * aux
            if rows.numel():
                ce = losses.label_loss(logp[rows - a], self.y[rows])
                loss = n_ce * d.label_weight * ce * (rows.numel() / n_train)
                if d.similarity_distill:
                    z = self.model.similarity_features(out.embedding[rows - a])
                    sim = losses.similarity_loss(z, self.h_t[rows])
                    loss = loss + n_ce * d.feat_distill_weight * sim * (rows.numel() / n_train)
            if cu.numel():
                kd = self._kd(logits[cu], self.logp_t[cv]) * (cu.numel() / n_pairs)
                loss = loss + n_kd * (1 - d.label_weight) * kd
            return loss + (n_ce + n_kd) * share * aux

        self.opt.zero_grad(set_to_none=True)
        total = self._zero()
        for c, rows in enumerate(chunks):
            csr = self.rows.block(rows.start, rows.stop)  # sparse features: cached per chunk
            loss = objective(self.x[rows], c, raw=False, update_memory=True, csr=csr)
            if loss.requires_grad:  # False only for a chunk with no term at all
                loss.backward()
            total += loss.detach()
        if d.adv_augment:
            ema_adv = d.memory_update == "every_forward"
            for c, rows in enumerate(chunks):
                x_adv = self._perturb(
                    self.x[rows],
                    partial(objective, c=c, raw=True, update_memory=ema_adv),
                )
                loss = d.adv_weight * objective(x_adv, c, raw=False, update_memory=ema_adv)
                loss.backward()
                total += loss.detach()
        self.opt.step()
        return float(total)

    @torch.no_grad()
    def _logits(self, features: SparseFeatures) -> Tensor:
        """Eval-mode logits of these rows, chunked by ``eval_batch_size``."""
        x = features.x
        self.model.eval()
        logits = torch.cat(
            [
                self._run(x[s], features.block(s.start, s.stop)).logits
                for s in _chunks(x.size(0), self.eval_rows)
            ]
        )
        self.model.train()
        return logits

    def evaluate(self) -> tuple[float, float, float, Tensor]:
        """Eval-mode logits for every node (chunked); (train, val, test acc, observed preds)."""
        logits = self._logits(self.rows_full if self.graph.is_inductive else self.rows)
        if self.graph.is_inductive:
            obs_logits = logits[self.graph.observed_idx.to(self.device)]
        else:
            obs_logits = logits
        train_acc = accuracy(obs_logits[self.train], self.y[self.train])
        val_acc = accuracy(obs_logits[self.val], self.y[self.val])
        test_acc = accuracy(logits[self.test], self.y_test)
        return train_acc, val_acc, test_acc, obs_logits.argmax(-1)

    def evaluate_needed(self) -> tuple[float, float, Tensor | None]:
        """(train-sample acc, val acc, observed preds if KRD needs them); no test nodes."""
        if self.sampler is not None:  # KRD: predictions of every observed node
            logits = self._logits(self.rows)
            train_acc = accuracy(logits[self.train_probe], self.y[self.train_probe])
            return train_acc, accuracy(logits[self.val], self.y[self.val]), logits.argmax(-1)
        rows = torch.cat([self.val, self.train_probe])
        logits = self._logits(self.rows.gather(rows))  # sparse features: CSR gathered
        n_val = self.val.numel()
        val_acc = accuracy(logits[:n_val], self.y[self.val])
        return accuracy(logits[n_val:], self.y[self.train_probe]), val_acc, None

    def test_accuracy(self) -> float:
        """Eval-mode accuracy on the test nodes."""
        return accuracy(self._logits(self.rows_full.gather(self.test)), self.y_test)
