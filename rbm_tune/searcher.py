"""Old import path of :class:`rbm_tune.study.searcher.TrialSearch`.

Studies started before the ``rbm_tune.study`` package pickled their searcher as
``rbm_tune.searcher.TrialSearch``; ``--resume`` unpickles it through this name.
"""

from rbm_tune.study.searcher import TrialSearch

__all__ = ["TrialSearch"]
