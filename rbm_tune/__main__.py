"""``python -m rbm_tune``: the ``rbm-tune`` command (what a Ray job's entrypoint runs)."""

import sys

from rbm_tune.cli import main

sys.exit(main())
