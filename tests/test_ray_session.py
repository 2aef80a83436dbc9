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
