"""Helpers shared by tests (no tests here): free loopback ports, tiny search spaces."""

from __future__ import annotations

import socket
from pathlib import Path

TINY_SPACE = """\
study:
  name: {name}
  num_trials: {trials}
  max_concurrent: {concurrent}
  asha: {{grace_period: 2, reduction_factor: 2}}
  resources: {{cpus_per_trial: 1, gpus_per_trial: {gpus}}}
dataset: demo
teacher: {{model: sage, num_layers: 2, hidden_dim: 16, max_epochs: 15, patience: 10}}
student:
  model: rbm
  hidden_dim: 16
  num_experts: {{int: [2, 4]}}
  k: {{int: [1, num_experts - 1]}}
distill:
  max_epochs: {epochs}
  pretrain_epochs: 1
  patience: 50
  lr: {{categorical: [0.01, 0.00001], default: 0.01}}
"""


def write_space(
    folder: Path,
    name: str,
    *,
    trials: int = 6,
    concurrent: int = 2,
    gpus: float = 0,
    epochs: int = 10,
) -> Path:
    """A tiny study on the embedded demo graph; lr 1e-5 trials are bad, so ASHA stops some."""
    path = folder / f"{name}.yaml"
    path.write_text(
        TINY_SPACE.format(
            name=name, trials=trials, concurrent=concurrent, gpus=gpus, epochs=epochs
        )
    )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
