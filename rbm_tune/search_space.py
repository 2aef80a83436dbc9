"""Search spaces: the public names of :mod:`rbm_tune.space`, under their first import path.

The format of a space file is documented in :mod:`rbm_tune.space`. This module stays so that
``from rbm_tune.search_space import load_space`` and pickles of a study's searcher (which name
``rbm_tune.search_space.SearchSpace``, ``Param``, ``Bound``, ``StudySettings``) keep working.
"""

from __future__ import annotations

from rbm_tune.config import SECTIONS
from rbm_tune.space.load import SHIPPED_DIR, load_space, shipped_spaces
from rbm_tune.space.params import Bound, Param
from rbm_tune.space.parser import TOP_KEYS
from rbm_tune.space.searchspace import SearchSpace
from rbm_tune.space.study import (
    COST_METRICS,
    SEARCH_METRICS,
    STUDY_KEYS,
    STUDY_NAME,
    StudySettings,
)
from rbm_tune.yamlio import StrictLoader

__all__ = [
    "COST_METRICS",
    "SEARCH_METRICS",
    "SECTIONS",
    "SHIPPED_DIR",
    "STUDY_KEYS",
    "TOP_KEYS",
    "Bound",
    "Param",
    "SearchSpace",
    "StudySettings",
    "load_space",
    "shipped_spaces",
]

# the names these had when they were private to this module
_STUDY_NAME = STUDY_NAME
_UniqueKeyLoader = StrictLoader
