"""The tiny search space of the tests' studies: the embedded demo graph, seconds per trial."""

from __future__ import annotations

from pathlib import Path

TINY_SPACE = """\
study:
  name: {name}
  num_trials: {trials}
  max_concurrent: {concurrent}
  max_failures: {max_failures}
  plots: {plots}
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
    max_failures: int = 2,
    plots: bool = False,
) -> Path:
    """A tiny study on the embedded demo graph; lr 1e-5 trials are bad, so ASHA stops some.

    Without Optuna's plots unless asked (8-10 s of every study's end on 2 cores; the studies
    that check them ask).
    """
    path = folder / f"{name}.yaml"
    path.write_text(
        TINY_SPACE.format(
            name=name,
            trials=trials,
            concurrent=concurrent,
            gpus=gpus,
            epochs=epochs,
            max_failures=max_failures,
            plots=str(plots).lower(),
        )
    )
    return path
