"""Listen address parsing and loopback: one notion for every module."""

from __future__ import annotations

import pytest

from snapshot_agent.node.addresses import (
    ListenAddress,
    is_loopback,
    local_target,
    parse_listen_address,
    parse_port,
)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("0.0.0.0:8090", ListenAddress("0.0.0.0", 8090)),
        ("[::]:3000", ListenAddress("::", 3000)),
        ("[::1]", ListenAddress("::1", None)),
        ("::1", ListenAddress("::1", None)),
        ("localhost:3000", ListenAddress("localhost", 3000)),
        (":8092", ListenAddress("", 8092)),
        ("127.0.0.1", ListenAddress("127.0.0.1", None)),
        ("127.0.0.1:²", ListenAddress("127.0.0.1", None)),
        ("127.0.0.1:\uff18\uff10\uff19\uff10", ListenAddress("127.0.0.1", None)),
        ("127.0.0.1:0", ListenAddress("127.0.0.1", None)),
        ("127.0.0.1:65536", ListenAddress("127.0.0.1", None)),
        (" 10.0.0.5:9090 ", ListenAddress("10.0.0.5", 9090)),
    ],
)
def test_listen_addresses(text: str, parsed: ListenAddress) -> None:
    assert parse_listen_address(text) == parsed


def test_ports_are_ascii_digits_in_range() -> None:
    assert parse_port("8090") == 8090
    assert parse_port("65535") == 65535
    for bad in ("", "0", "65536", "-1", "²", "\uff18\uff10", "80a", "123456"):
        assert parse_port(bad) is None, bad


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("iggy.internal", False),
        ("", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_wildcards_are_reached_on_loopback() -> None:
    assert local_target("0.0.0.0") == "127.0.0.1"
    assert local_target("::") == "::1"
    assert local_target("10.0.0.5") == "10.0.0.5"
