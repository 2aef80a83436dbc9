"""``rbm-tune export``: a study's student as a TorchScript file that needs only torch.

The student is rebuilt from the trial's config and its best-validation weights (the trial's
Ray Tune checkpoint, loaded with ``weights_only=True``), wrapped so that ``forward(x)`` returns
the class logits, traced with ``torch.jit.trace`` in eval mode, and checked: the traced module
must give the same logits as the eager one on a batch of another size. Deviation: RbM / MoE
layers run their dense expert path in the exported file (every expert on every row, then the
top-k mix: the same function as the grouped dispatch used in training, whose per-expert row
counts a trace cannot follow), so it spends E/k times the expert FLOPs of the grouped path.
The file carries its preprocessing as ``rbm_tune.json`` (a TorchScript extra file) and a copy
lands beside it as ``<out>.json``:

- ``in_dim`` feature columns: the dataset's ``num_features`` raw columns, in the loader's order
  and preprocessing (docs/datasets.md: Planetoid row-normalised features, Coauthor raw counts),
  then ``pe_dim`` DeepWalk columns when the study used positional encoding (computed on the
  training graph; a new node gets the mean of its neighbours' columns);
- ``classes``: the logit order is the dataset's label ids 0..C-1.

Latency is measured on the exported module itself (eval mode, no grad, median of repeats) for
a batch of 1 and of 1,024 rows, and for all nodes of the graph when it is known.

Loading it needs no rbm-tune::

    import torch
    student = torch.jit.load("student.pt")
    logits = student(x)            # x: float32 (N, in_dim) -> (N, num_classes)
    pred = logits.argmax(dim=1)
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from rbm_tune.errors import ConfigError

__all__ = ["Export", "export_command", "export_student", "pick_trial"]

META = "student.json"  # beside student.pt in every finished trial's checkpoint


@dataclass(frozen=True)
class Export:
    path: Path
    trial_id: str
    meta: dict[str, Any]


def pick_trial(storage: Path, name: str, trial_id: str | None) -> dict[str, Any]:
    """The study's best finished trial (the one ``best_config.yaml`` holds:
    rbm_tune.selection), or ``trial_id``, from ``<storage>/<name>/trials.json``.

    Raises:
        ConfigError: no such study, or no such (finished) trial.
    """
    path = storage / name / "trials.json"
    if not path.is_file():
        raise ConfigError(
            f"no finished study {name!r} in {storage} (no trials.json); check --name / "
            "--storage-path, or finish it with rbm-tune --space FILE --name NAME --resume"
        )
    trials = json.loads(path.read_text())
    finished = [t for t in trials if not t["asha_stopped"] and t.get("checkpoint")]
    if trial_id is None:
        if not finished:
            raise ConfigError(f"study {name!r} has no finished trial with weights to export")
        from rbm_tune.selection import read_selection

        # the trial best_config.yaml holds (rbm-tune evaluate --select may have chosen another)
        chosen = (read_selection(storage / name) or {}).get("trial_id")
        return next((t for t in finished if t["trial_id"] == chosen), finished[0])
    for t in trials:
        if t["trial_id"] == trial_id:
            if t in finished:
                return t
            raise ConfigError(
                f"trial {trial_id} of study {name!r} was stopped by ASHA and kept no weights; "
                f"pick a finished one: {', '.join(t['trial_id'] for t in finished[:8])}"
            )
    raise ConfigError(
        f"study {name!r} has no trial {trial_id!r}; its trials: "
        f"{', '.join(t['trial_id'] for t in trials[:8])}"
    )


def _latency_ms(module: Any, x: Any, repeats: int) -> float:
    import torch

    with torch.no_grad():
        module(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            module(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def export_student(trial: dict[str, Any], out: Path, *, repeats: int = 20) -> Export:
    """Trace ``trial``'s student to ``out`` (see the module docstring); returns what was written.

    Raises:
        ConfigError: the trial's checkpoint is gone or was written by an older rbm-tune.
        RuntimeError: the traced module does not reproduce the eager logits.
    """
    with _local_checkpoint(str(trial["checkpoint"])) as ckpt:
        return _export(trial, ckpt, out, repeats)


@contextmanager
def _local_checkpoint(location: str) -> Iterator[Path]:
    """The checkpoint folder ``location``, downloaded to a temporary folder when it is an
    object-store URI (a study on ``--storage-path s3://...``)."""
    if "://" not in location:
        yield Path(location)
        return
    import tempfile

    import pyarrow.fs

    with tempfile.TemporaryDirectory(prefix="rbm-tune-ckpt-") as tmp:
        try:
            pyarrow.fs.copy_files(location, tmp)
        except (OSError, ValueError):
            pass  # then the files are missing: the caller's one line says so
        yield Path(tmp)


def _export(trial: dict[str, Any], ckpt: Path, out: Path, repeats: int) -> Export:
    import torch
    from torch import nn

    from rbm_tune.config import TrialConfig
    from rbm_tune.models import build_student
    from rbm_tune.models.sparse import forbid_sparse

    weights, meta_path = ckpt / "student.pt", ckpt / META
    if not weights.is_file() or not meta_path.is_file():
        raise ConfigError(
            f"trial {trial['trial_id']}'s checkpoint {ckpt} has no student.pt / {META} (moved, "
            "deleted, or written by an older rbm-tune); re-run the study or pick another --trial"
        )
    shapes = json.loads(meta_path.read_text())
    config = TrialConfig.from_mapping(trial["config"])
    model = build_student(
        config.student,
        shapes["in_dim"],
        shapes["num_classes"],
        feature_encoder=config.distill.similarity_distill,
    )
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()
    for module in model.modules():
        if hasattr(module, "grouped"):
            # the grouped dispatch sizes its GEMMs from per-expert row counts read on the host,
            # which a trace would freeze; the dense path is the same function, traceable
            cast(Any, module).grouped = False  # RbMLayer.grouped
    forbid_sparse(model)  # the CSR path counts non-zeros on the host: not traceable

    class Logits(nn.Module):
        def __init__(self, student: nn.Module) -> None:
            super().__init__()
            self.student = student

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.student(x).logits

    eager = Logits(model).eval()
    gen = torch.Generator().manual_seed(0)
    example = torch.rand(64, shapes["in_dim"], generator=gen)
    with torch.no_grad():
        traced = torch.jit.trace(eager, example, check_trace=False)
        probe = torch.rand(333, shapes["in_dim"], generator=gen)
        if not torch.allclose(traced(probe), eager(probe), atol=1e-5, rtol=1e-4):
            raise RuntimeError("the traced student does not reproduce the eager logits")

    latency = {
        "batch_1_ms": _latency_ms(traced, probe[:1], repeats),
        "batch_1024_ms": _latency_ms(traced, torch.rand(1024, shapes["in_dim"]), repeats),
    }
    latency["per_node_us_at_1024"] = latency["batch_1024_ms"] * 1000 / 1024
    if shapes.get("num_nodes"):
        full = torch.rand(shapes["num_nodes"], shapes["in_dim"])
        latency["full_graph_ms"] = _latency_ms(traced, full, max(3, repeats // 4))
    meta = {
        "format": "rbm-tune student, TorchScript (torch.jit.load; forward(x) -> logits)",
        "torch": torch.__version__,
        "trial_id": trial["trial_id"],
        "dataset": config.dataset,
        "setting": config.setting,
        "student": config.student.model,
        "val_acc": trial["val_acc"],
        "test_acc_at_best_val": trial["test_acc"],
        "in_dim": shapes["in_dim"],
        "num_classes": shapes["num_classes"],
        "feature_columns": {
            "raw": [0, shapes["num_features"]],
            "deepwalk_pe": [shapes["num_features"], shapes["in_dim"]]
            if shapes["in_dim"] > shapes["num_features"]
            else None,
        },
        "preprocessing": (
            f"the {config.dataset} loader's node features (docs/datasets.md), columns 0.."
            f"{shapes['num_features'] - 1}"
            + (
                f", then {shapes['in_dim'] - shapes['num_features']} DeepWalk columns "
                "computed on the training graph (new nodes: mean of their neighbours')"
                if shapes["in_dim"] > shapes["num_features"]
                else ""
            )
        ),
        "latency_cpu": latency,
        "threads": torch.get_num_threads(),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(traced, str(out), _extra_files={"rbm_tune.json": json.dumps(meta)})
    out.with_name(out.name + ".json").write_text(json.dumps(meta, indent=2))
    return Export(out, trial["trial_id"], meta)


def export_command(args: Any) -> int:
    """``rbm-tune export``: write the file, print what it is and how fast it answers."""
    from rbm_tune.paths import resolve_storage
    from rbm_tune.storage import local_study, with_query

    storage = resolve_storage(args.storage_path)
    local_study(args.storage_path, args.name)  # an object store's: pulled into its mirror
    trial = pick_trial(storage, args.name, args.trial)
    # an s3:// checkpoint is read with the storage path's ?endpoint_override=... options
    trial = {**trial, "checkpoint": with_query(str(trial["checkpoint"]), args.storage_path)}
    done = export_student(trial, Path(args.out))
    m, lat = done.meta, done.meta["latency_cpu"]
    print(
        f"exported trial {done.trial_id} of study {args.name} ({m['student']}, val_acc "
        f"{m['val_acc']:.4f}, test_acc at best val {m['test_acc_at_best_val']:.4f}) to {done.path}"
    )
    print(f"input: float32 (N, {m['in_dim']}): {m['preprocessing']}")
    print(f"output: (N, {m['num_classes']}) logits; preprocessing also in {done.path}.json")
    full = f", all nodes {lat['full_graph_ms']:.2f} ms" if "full_graph_ms" in lat else ""
    print(
        f"CPU latency ({m['threads']} threads): batch of 1 {lat['batch_1_ms']:.3f} ms, batch of "
        f"1,024 {lat['batch_1024_ms']:.3f} ms ({lat['per_node_us_at_1024']:.2f} us/node){full}"
    )
    return 0
