"""``python -m rbm_tune``: the ``rbm-tune`` command (what a Ray job's entrypoint runs)."""

from rbm_tune.cli import run

run()
