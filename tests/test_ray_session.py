"""rbm_tune.study.ray_session: Ray addresses, IPv6 included, are checked in one line."""

from __future__ import annotations

import socket

import pytest

from rbm_tune.errors import RbmTuneError
from rbm_tune.study.ray_session import check_address, split_address


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:6379", ("127.0.0.1", 6379)),
        ("ray://127.0.0.1:10001", ("127.0.0.1", 10001)),
        ("[::1]:6379", ("::1", 6379)),
        ("ray://[::1]:10001", ("::1", 10001)),
        ("head.example:6379", ("head.example", 6379)),
        (":6379", ("127.0.0.1", 6379)),
    ],
)
def test_addresses_split_as_socket_takes_them(address: str, expected: tuple[str, int]) -> None:
    assert split_address(address) == expected


@pytest.mark.parametrize("address", ["127.0.0.1", "[::1]", "ray://[::1]6379", "host:port"])
def test_an_address_without_a_port_is_one_line(address: str) -> None:
    with pytest.raises(RbmTuneError) as err:
        check_address(address, timeout=1)
    assert "\n" not in str(err.value) and "fix --address" in str(err.value)


def _listener(family: socket.AddressFamily, host: str) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen()
    return sock


@pytest.mark.parametrize(
    ("family", "host", "template"),
    [(socket.AF_INET, "127.0.0.1", "{}:{}"), (socket.AF_INET6, "::1", "[{}]:{}")],
)
def test_a_listening_address_passes_and_a_closed_one_is_refused(
    family: socket.AddressFamily, host: str, template: str
) -> None:
    try:
        sock = _listener(family, host)
    except OSError:
        pytest.skip(f"no {host} on this machine")
    port = sock.getsockname()[1]
    try:
        check_address(template.format(host, port), timeout=2)
        check_address("ray://" + template.format(host, port), timeout=2)
    finally:
        sock.close()
    with pytest.raises(RbmTuneError) as err:
        check_address(template.format(host, port), timeout=2)  # nothing listens there now
    assert "cannot reach the Ray cluster" in str(err.value)


def test_a_study_through_ray_client_is_refused_pointing_to_submit() -> None:
    from rbm_tune.study.ray_session import refuse_ray_client

    refuse_ray_client(None)
    refuse_ray_client("auto")
    refuse_ray_client("[::1]:6379")
    with pytest.raises(RbmTuneError) as err:
        refuse_ray_client("ray://[::1]:10001")
    text = str(err.value)
    assert "\n" not in text and "rbm-tune submit --address http://HEAD:8265" in text


@pytest.mark.slow
def test_gpus_that_never_appear_end_a_bounded_wait_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Real Ray with no GPU: a trial's GPUs are waited for (the autoscaler asked, where there is
    one) for $RBM_TUNE_GPU_WAIT_S, then one line names the fixes; GPUs that are there (logical
    ones here) or a CPU space pass at once."""
    import time

    import ray

    from rbm_tune.study.ray_session import init_ray, wait_for_gpus

    init_ray(None, 2, 0)
    try:
        lines: list[str] = []
        wait_for_gpus(0, 1, address="auto", log=lines.append)
        assert lines == []
        monkeypatch.setenv("RBM_TUNE_GPU_WAIT_S", "2")
        start = time.monotonic()
        with pytest.raises(RbmTuneError) as err:
            wait_for_gpus(1, 1, address="10.0.0.1:6379", log=lines.append)
        assert 2 <= time.monotonic() - start < 30
        text = str(err.value)
        assert "\n" not in text and "has 0 GPU(s) after 2 s" in text
        assert "10.0.0.1:6379" in text and "gpus_per_trial: 0" in text and "--gres" in text
        assert len(lines) == 1 and "waiting up to 2 s" in lines[0]
        monkeypatch.setenv("RBM_TUNE_GPU_WAIT_S", "soon")
        with pytest.raises(RbmTuneError, match="RBM_TUNE_GPU_WAIT_S='soon' is not a number"):
            wait_for_gpus(1, 1, address="auto", log=lines.append)
    finally:
        ray.shutdown()
    init_ray(None, 2, 1)  # one logical GPU: there at once, no wait
    try:
        lines = []
        wait_for_gpus(1, 1, address="auto", timeout_s=0, log=lines.append)
        assert lines == []
    finally:
        ray.shutdown()
