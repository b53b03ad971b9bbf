"""The Unix socket's directory and the socket itself, made by servers starting at once."""

from __future__ import annotations

import shutil
import stat
import tempfile
import threading
from pathlib import Path

from snapshot_agent.config import ApiConfig, Config, LoadedConfig
from snapshot_agent.service.listeners import UnixListener, bind_unix


def test_servers_starting_at_once_share_a_new_socket_directory() -> None:
    """Each of six servers (own sockets, one directory nobody has made yet) binds: the ones
    that lose the race to make the directory use it rather than fail."""
    root = Path(tempfile.mkdtemp(prefix="sa-", dir="/tmp"))  # a socket path is short
    directory = root / "run" / "snapshot-agent"
    gate = threading.Barrier(6, timeout=30)
    bound: list[UnixListener] = []
    failed: list[BaseException] = []

    def start(n: int) -> None:
        config = Config(api=ApiConfig(unix_socket=str(directory / f"agent-{n}.sock")))
        gate.wait()
        try:
            bound.append(bind_unix(LoadedConfig(config, None, None)))
        except BaseException as exc:
            failed.append(exc)

    threads = [threading.Thread(target=start, args=(n,), daemon=True) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert not failed and len(bound) == 6, failed
        assert stat.S_IMODE(directory.stat().st_mode) == 0o750
        for listener in bound:
            assert stat.S_IMODE(listener.path.lstat().st_mode) == 0o660
    finally:
        for listener in bound:
            listener.sock.close()
        shutil.rmtree(root, ignore_errors=True)
