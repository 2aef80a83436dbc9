"""What the tests share that is not a fixture (no tests here); fixtures live in conftest.py.

* :mod:`tests.support.spaces`: the tiny demo study's search space (``write_space``).
* :mod:`tests.support.processes`: free loopback ports, a real ``mlflow server``, ``rbm-tune``
  as a process, stopping a process group.
* :mod:`tests.support.study_checks`: what a finished or resumed study must hold (reliability).
* :mod:`tests.support.synthetic_files`: small PubMed / ogbn-arxiv / ogbn-products files in the
  real download layout, for the real loaders.

Import them by their full name (``from tests.support.spaces import write_space``): the
repository root is on ``sys.path`` because ``tests`` is a package (pytest's rootdir-based
``prepend`` import mode).
"""
