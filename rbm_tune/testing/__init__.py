"""Support for rbm-tune's own reliability tests; not an API.

:mod:`rbm_tune.testing.faults` plants real exceptions and SIGKILLs at named points of a study
when ``RBM_TUNE_FAULT`` is set (inert otherwise), so the tests exercise the real recovery paths.
"""
