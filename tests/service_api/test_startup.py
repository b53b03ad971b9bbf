"""Starting and stopping as systemd expects: one-line exit-2 errors for what cannot work,
stale sockets cleared, READY/STATUS/WATCHDOG/STOPPING over $NOTIFY_SOCKET, journald lines."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import ENV, Certs, Server, free_port


def serve_once(server: Server, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`serve` expected to refuse to start: its result."""
    return subprocess.run(
        [sys.executable, "-m", "snapshot_agent", "serve", "--config", server.config_path],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
        stdin=subprocess.DEVNULL,
    )


def refused(server: Server, *words: str) -> None:
    proc = serve_once(server)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("snapshot-agent: config "), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


def test_a_live_server_on_the_socket_is_refused_a_stale_one_cleared(serve: Any) -> None:
    server: Server = serve()
    server.socket.parent.mkdir(mode=0o750)
    with socket.socket(socket.AF_UNIX) as other:
        other.bind(str(server.socket))
        other.listen()
        refused(server, "api.unix_socket", "another server is listening")
    assert server.socket.exists()  # someone else's: left alone
    server.start()  # the listener is gone: its file is stale, and replaced
    assert server.stop() == 0


OTHER_GID = 65534  # nogroup: not the test's own group


def test_api_group_gets_the_socket_and_its_own_directory(serve: Any, short_dir: Path) -> None:
    if os.geteuid() != 0 and OTHER_GID not in os.getgroups():
        pytest.skip("giving a file to a group needs membership or root")
    server: Server = serve(api={"group": OTHER_GID})
    server.start()
    for path, mode in ((server.socket, 0o660), (server.socket.parent, 0o750)):
        st = os.stat(path)
        assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (OTHER_GID, mode), path
    assert server.stop() == 0
    # A directory others share (sticky, world-writable) keeps its group.
    shared = short_dir / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    before = os.stat(shared).st_gid
    server.socket = shared / "agent.sock"
    server.configure(api={"group": OTHER_GID})
    server.start()
    assert os.stat(server.socket).st_gid == OTHER_GID and os.stat(shared).st_gid == before
    assert server.stop() == 0


def test_api_group_never_changes_a_directory_that_is_not_the_sockets_own(
    serve: Any, short_dir: Path
) -> None:
    if os.geteuid() != 0 and OTHER_GID not in os.getgroups():
        pytest.skip("giving a file to a group needs membership or root")
    private = short_dir / "private"  # a home or a state directory, say: 0750, not made by serve
    private.mkdir(mode=0o750)
    os.chmod(private, 0o750)
    before = os.stat(private).st_gid
    server: Server = serve(api={"group": OTHER_GID})
    server.socket = private / "agent.sock"
    server.configure(api={"group": OTHER_GID})
    refused(server, "api.group", "keeps them out", "chgrp")
    assert os.stat(private).st_gid == before and not server.socket.exists()
    # The same directory as the unit's RuntimeDirectory is the socket's own: given over.
    server.start(env={**ENV, "RUNTIME_DIRECTORY": str(private)})
    assert os.stat(private).st_gid == OTHER_GID == os.stat(server.socket).st_gid
    assert server.stop() == 0


def test_a_file_in_the_way_of_the_socket_is_refused(serve: Any) -> None:
    server: Server = serve()
    server.socket.parent.mkdir()
    server.socket.write_text("not a socket")
    refused(server, "api.unix_socket", "is not a socket")
    assert server.socket.read_text() == "not a socket"


def test_one_service_per_state_dir(serve: Any, short_dir: Path) -> None:
    first: Server = serve()
    first.start()
    second = Server(short_dir)
    second.socket = short_dir / "other" / "agent.sock"
    second.configure()
    refused(second, "state_dir", "another `snapshot-agent serve` uses it", f"pid {first.proc.pid}")  # type: ignore[union-attr]
    assert first.get("/healthz").status == 200
    assert first.stop() == 0


def test_tcp_needs_mutual_tls(serve: Any, certs: Certs) -> None:
    server: Server = serve(api={"listen": f"127.0.0.1:{free_port()}"})
    refused(server, "api.tls", "api.tls.cert", "api.tls.client_ca")
    server.configure(api=certs.api(key=certs.dir / "missing.key"))
    refused(server, "api.tls.cert", "missing.key")
    server.configure(api={"listen": "localhost"})
    refused(server, "api.listen", "HOST:PORT")


def test_a_port_in_use_is_refused(serve: Any, certs: Certs) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server: Server = serve(api=certs.api(port))
        refused(server, "api.listen", "cannot listen")
    assert not server.socket.exists()  # nothing left behind


def test_an_unusable_state_dir_is_refused(serve: Any, short_dir: Path) -> None:
    blocker = short_dir / "file"
    blocker.write_text("")
    server: Server = serve(state_dir=str(blocker / "state"))
    refused(server, "state_dir", str(blocker))


class Notifications:
    """A stand-in for systemd's notify socket: the datagrams the service sends."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.received: list[str] = []

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in m for m in self.received):
            assert time.monotonic() < deadline, f"no {text!r} in {self.received}"
            self.read()

    def collect(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.read()

    def read(self) -> None:
        with contextlib.suppress(TimeoutError):
            self.received.append(self.sock.recv(4096).decode())

    def count(self, text: str) -> int:
        return sum(text in m for m in self.received)


def test_sd_notify_ready_status_watchdog_stopping(serve: Any, short_dir: Path) -> None:
    notify = Notifications(short_dir / "notify.sock")
    server: Server = serve()
    env = {**ENV, "NOTIFY_SOCKET": str(short_dir / "notify.sock"), "WATCHDOG_USEC": "600000"}
    try:
        server.start(env=env)
        notify.wait_for("READY=1")
        ready = next(m for m in notify.received if "READY=1" in m)
        assert "STATUS=idle" in ready
        assert server.get("/healthz").status == 200  # READY came once it was listening
        notify.collect(1.2)
        assert notify.count("WATCHDOG=1") >= 3  # every 600 ms / 3

        record = server.create().json()
        notify.wait_for(f"STATUS=snapshot {record['id']} {record['name']} running")
        server.wait_until_ended(record["id"])
        notify.received.clear()
        notify.wait_for("STATUS=idle")

        assert server.proc is not None
        server.proc.terminate()
        notify.wait_for("STOPPING=1")
        assert server.proc.wait(timeout=60) == 0
        assert notify.count("READY=1") == 0  # once only
    finally:
        notify.sock.close()


@pytest.mark.parametrize("journal", [True, False], ids=["journald", "terminal"])
def test_log_lines_for_the_journal_or_a_person(serve: Any, journal: bool) -> None:
    server: Server = serve()
    server.log.touch()
    st = os.stat(server.log)
    env = {**ENV, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"} if journal else ENV
    server.start(env=env)
    assert server.stop() == 0
    lines = server.logs().splitlines()
    assert lines and all(line.strip() for line in lines)
    if journal:
        assert all(line.startswith("<6>") for line in lines), lines
        assert lines[0] == f"<6>listening on unix:{server.socket}"
    else:
        assert all(line[:4].isdigit() and " INFO " in line for line in lines), lines
