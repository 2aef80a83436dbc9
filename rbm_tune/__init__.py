"""rbm-tune: find the best hyperparameters for distilling a GNN into a Routing-by-Memory student.

The top-level package imports neither Ray nor MLflow nor torch, so ``rbm-tune --help`` is instant.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
