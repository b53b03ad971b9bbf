"""sd_notify datagrams: what is sent, and that a receiver which stops reading never wedges
the service's event loop."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from snapshot_agent.service.notify import Notifier


def receiver(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    return sock


def test_fields_go_in_one_datagram_with_newlines_flattened(tmp_path: Path) -> None:
    with receiver(tmp_path / "notify") as sock:
        notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify")})
        assert notifier.send("READY=1", "STATUS=two\nlines")
        assert sock.recv(4096) == b"READY=1\nSTATUS=two lines"
    assert not Notifier({}).send("READY=1")  # run by hand: nobody to tell


def test_a_receiver_that_stops_reading_never_holds_up_the_sender(tmp_path: Path) -> None:
    # Nothing reads: once its queue is full a send is dropped at once, never waited on.
    with receiver(tmp_path / "notify"):
        notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify")})
        for _ in range(100_000):
            started = time.process_time(), time.monotonic()
            if not notifier.send("WATCHDOG=1"):
                break
        else:
            raise AssertionError("the receiver's queue never filled")
        cpu, wall = time.process_time() - started[0], time.monotonic() - started[1]
        assert wall < 0.5 and cpu < 0.5, (wall, cpu)  # a timeout would spin for its length


def test_a_socket_that_is_gone_is_a_warning(tmp_path: Path) -> None:
    assert not Notifier({"NOTIFY_SOCKET": str(tmp_path / "absent")}).send("READY=1")
