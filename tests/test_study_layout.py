"""The study package's layout keeps what resumed studies depend on (issue 23): the names that
studies started before the package pickled, and the trainable's name in trial folder names."""

from __future__ import annotations

import pickle
import subprocess
import sys


def test_old_import_paths_resolve_to_the_moved_objects() -> None:
    import rbm_tune.searcher as old_searcher
    import rbm_tune.tune as old
    from rbm_tune.study import mlflow_callback, searcher, summary, trainable

    assert old._trial_fn is trainable._trial_fn
    assert old._trial_fn.__name__ == "_trial_fn"  # trial folders: _trial_fn_<id>_...
    assert old.MlflowTrials is mlflow_callback.MlflowTrials
    assert old.HeldEpochs is trainable.HeldEpochs
    assert old.StudyResult is summary.StudyResult
    assert old_searcher.TrialSearch is searcher.TrialSearch
    # a pickle written before the move names rbm_tune.tune / rbm_tune.searcher: it still loads
    for module, name in (
        ("rbm_tune.tune", "_trial_fn"),
        ("rbm_tune.tune", "MlflowTrials"),
        ("rbm_tune.tune", "HeldEpochs"),
        ("rbm_tune.searcher", "TrialSearch"),
    ):
        ref = pickle.dumps(getattr(sys.modules[module], name))
        assert pickle.loads(ref) is getattr(sys.modules[module], name)
        old_style = b"\x80\x04c" + f"{module}\n{name}\n".encode() + b"."
        assert pickle.loads(old_style) is getattr(sys.modules[module], name), (module, name)


def test_loading_a_space_and_the_metric_names_import_no_torch_and_no_ray() -> None:
    code = (
        "import sys; import rbm_tune.metrics, rbm_tune.search_space;"
        "rbm_tune.search_space.load_space('demo');"
        "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_search_space_s_metric_lists_are_the_metrics_module_s() -> None:
    from rbm_tune import metrics, search_space

    assert search_space.SEARCH_METRICS == metrics.SEARCH_METRICS
    assert search_space.COST_METRICS == metrics.COST_METRICS
