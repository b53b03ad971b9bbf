"""A snapshot in its own process, driven the way the service will: start, watch, cancel."""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from snapshot_agent.pipeline.process import SnapshotProcess
from snapshot_agent.pipeline.record import SnapshotOptions

from .conftest import REPO, run_cli, wait_for_descendant

ENV = {**os.environ, "SNAPSHOT_AGENT_CONFIG": os.devnull, "PYTHONPATH": str(REPO)}


def write_config(tmp_path: Path, commands: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"checks:\n  deadline_s: 30\n  commands:\n{commands}")
    return path


def test_started_from_a_threaded_caller_reports_progress_then_the_archive(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        "    - {id: custom.echo, title: Echo, command: [echo, '--password', 'hunter2']}\n",
    )
    busy = threading.Event()
    worker = threading.Thread(target=busy.wait, daemon=True)  # a server has threads
    worker.start()
    with ThreadPoolExecutor(1) as pool:
        snapshot = pool.submit(
            SnapshotProcess.start,
            tmp_path / "out",
            SnapshotOptions(only=("custom.echo", "cpu.load")),
            config,
            ENV,
        ).result()
    events = list(snapshot.events(timeout=60))
    finished = snapshot.wait(timeout=60)
    busy.set()

    kinds = [e["event"] for e in events]
    assert kinds[0] == "snapshot_started" and kinds[-1] == "snapshot_completed", kinds
    started = events[0]
    assert started["checks"] == 2 and started["pid"] == snapshot.pid
    done = {e["id"]: e for e in events if e["event"] == "check_finished"}
    assert set(done) == {"custom.echo", "cpu.load"}
    assert done["custom.echo"]["status"] == "pass"
    assert "hunter2" not in json.dumps(events)  # summaries passed the filter
    assert finished.exit_code in (0, 1), finished.stderr
    assert finished.outcome == {k: v for k, v in events[-1].items() if k != "event"}
    archive = Path(finished.outcome["path"])
    assert archive.is_file() and archive.stem == started["name"]
    assert finished.outcome["size_bytes"] == archive.stat().st_size


def test_cancel_stops_the_checks_and_leaves_nothing(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        "    - {id: custom.slow, title: Slow, command: [sleep, '300'], timeout_s: 120}\n",
    )
    out = tmp_path / "out"
    snapshot = SnapshotProcess.start(out, SnapshotOptions(only=("custom.slow",)), config, ENV)
    for event in snapshot.events(timeout=60):
        if event["event"] == "check_started":
            break
    tree = wait_for_descendant(snapshot.pid, ["sleep", "300"], 10)

    snapshot.cancel()
    finished = snapshot.wait(timeout=30)
    assert finished.exit_code == 130, finished.stderr
    remaining = list(snapshot.events(timeout=5))
    assert remaining and remaining[-1]["event"] == "snapshot_failed"
    assert remaining[-1]["exit_code"] == 130
    _gone, alive = psutil.wait_procs(tree, timeout=5)
    assert not alive, f"left running: {alive}"
    assert list(out.iterdir()) == []  # no archive, no partial, no spool


def test_a_snapshot_that_cannot_start_says_why(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    snapshot = SnapshotProcess.start(blocker / "sub", SnapshotOptions(only=("cpu.load",)), env=ENV)
    events = list(snapshot.events(timeout=60))
    finished = snapshot.wait(timeout=60)
    assert finished.exit_code == 2
    assert finished.outcome["status"] == "failed" and str(blocker) in finished.outcome["error"]
    assert [e["event"] for e in events] == ["snapshot_failed"]
    assert events[0]["exit_code"] == 2


def test_bad_events_fd_is_a_one_line_error(tmp_path: Path) -> None:
    proc = run_cli("run", "-o", tmp_path, "--only", "cpu.load", "--events-fd", "97")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "--events-fd 97" in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fd", ["99999999999", "0"])  # too large; open for reading only
def test_unusable_events_fds_are_one_line_errors(tmp_path: Path, fd: str) -> None:
    proc = run_cli("run", "-o", tmp_path, "--only", "cpu.load", "--events-fd", fd)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and f"--events-fd {fd}" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_snapshot_does_not_inherit_the_services_notify_socket(tmp_path: Path) -> None:
    """NotifyAccess=main: only the service talks to systemd; its child gets no socket."""
    config = write_config(
        tmp_path, "    - {id: custom.slow, title: Slow, command: [sleep, '2'], timeout_s: 10}\n"
    )
    env = {**ENV, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "60000000"}
    snapshot = SnapshotProcess.start(
        tmp_path / "out", SnapshotOptions(only=("custom.slow",)), config, env
    )
    try:
        environ = Path(f"/proc/{snapshot.pid}/environ").read_bytes().split(b"\0")
        assert not [v for v in environ if v.startswith((b"NOTIFY_SOCKET=", b"WATCHDOG_"))]
        assert f"PYTHONPATH={REPO}".encode() in environ  # the rest is passed on
    finally:
        finished = snapshot.wait(timeout=60)
    assert finished.exit_code in (0, 1), finished.stderr
