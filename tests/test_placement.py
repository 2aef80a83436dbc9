"""rbm_tune.placement: a trial, an evaluate task and a teacher task use the device Ray assigned
them, never whatever CUDA their process happens to see (issue 21)."""

from __future__ import annotations

import pytest

from rbm_tune.placement import NoCudaError, Placement, decide

# (Ray's GPU ids, CUDA devices the process sees, Ray's CPUs, cpu_fallback) -> device, threads
CASES = [
    # a GPU trial on a GPU node: the first of its visible set (Ray set CUDA_VISIBLE_DEVICES)
    ((["3"], 1, 1.0, False), ("cuda:0", 1)),
    # a fractional-GPU trial: Ray still names the card
    ((["0"], 8, 2.0, False), ("cuda:0", 2)),
    # a zero-GPU trial on an 8-GPU node (Ray 2.60 leaves CUDA_VISIBLE_DEVICES alone): the CPU
    (([], 8, 4.0, False), ("cpu", 4)),
    # a CPU box
    (([], 0, 1.0, False), ("cpu", 1)),
    # fractional CPUs: at least one thread
    (([], 0, 0.5, False), ("cpu", 1)),
    # outside Ray: no assignment, torch's own thread count
    (([], 0, None, False), ("cpu", None)),
    # given a GPU, no CUDA, but the space allows the CPU
    ((["1"], 0, 2.0, True), ("cpu", 2)),
]


@pytest.mark.parametrize(("given", "expected"), CASES)
def test_the_device_is_the_one_ray_assigned(given: tuple, expected: tuple) -> None:
    gpu_ids, cuda, cpus, fallback = given
    got = decide(gpu_ids=gpu_ids, cuda_devices=cuda, cpus=cpus, cpu_fallback=fallback)
    assert (got.device, got.threads) == expected
    assert (got.warning is not None) == (bool(gpu_ids) and cuda == 0)
    if got.warning:
        assert "study.cpu_fallback: true" in got.warning and "\n" not in got.warning


def test_a_gpu_task_without_cuda_fails_in_one_line_naming_the_fix() -> None:
    with pytest.raises(NoCudaError) as err:
        decide(gpu_ids=["2"], cuda_devices=0, cpus=1, what="evaluate task", node="abc123")
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith("this evaluate task was given GPU 2 on node abc123")
    assert "study.cpu_fallback: true" in text and "NVIDIA driver" in text


@pytest.mark.slow
def test_inside_ray_with_logical_gpus(tmp_path: object) -> None:
    """Real Ray, two logical GPUs declared on this CUDA-less machine: a task Ray gives a GPU
    sees its id and fails (or falls back when allowed); a task given none runs on its CPUs."""
    import ray

    from rbm_tune.study.ray_session import init_ray

    init_ray(None, 2, 2)
    try:

        @ray.remote(num_cpus=1, num_gpus=1)
        def gpu_task(fallback: bool) -> tuple[str, str]:
            from rbm_tune.placement import NoCudaError, from_ray

            try:
                return "ok", repr(from_ray(cpu_fallback=fallback))
            except NoCudaError as err:
                return "error", str(err)

        @ray.remote(num_cpus=2, num_gpus=0)
        def cpu_task() -> tuple[str, int]:
            import torch

            from rbm_tune.placement import from_ray

            return from_ray().device, torch.get_num_threads()

        kind, text = ray.get(gpu_task.remote(False))
        assert kind == "error" and "was given GPU " in text and "cpu_fallback" in text
        kind, text = ray.get(gpu_task.remote(True))
        assert kind == "ok" and "device='cpu'" in text and "warning='rbm-tune: warning" in text
        assert ray.get(cpu_task.remote()) == ("cpu", 2)
    finally:
        ray.shutdown()


def test_placement_is_a_plain_value() -> None:
    assert Placement("cpu") == Placement("cpu", None, None)


def test_evaluate_asks_for_the_resources_the_study_s_trials_had(tmp_path: object) -> None:
    import json
    from pathlib import Path

    from rbm_tune.evaluate import study_resources

    folder = Path(str(tmp_path))
    # a study folder from before study.json: one CPU, no GPU
    assert study_resources(folder) == {"num_cpus": 1.0, "num_gpus": 0.0, "cpu_fallback": False}
    settings = {"cpus_per_trial": 2, "gpus_per_trial": 0.25, "cpu_fallback": True, "seed": 0}
    (folder / "study.json").write_text(json.dumps(settings))
    assert study_resources(folder) == {"num_cpus": 2.0, "num_gpus": 0.25, "cpu_fallback": True}
