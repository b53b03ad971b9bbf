"""A service killed outright during a snapshot: the restart fails the record ("agent
restarted"), nothing partial is left, and the next create is accepted. Also a clean stop
during a snapshot: the record ends completed or failed ("agent stopped"), exit 0."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest

from snapshot_agent.config import load_config
from snapshot_agent.pipeline.record import SnapshotOptions
from snapshot_agent.service.archives import Archives
from snapshot_agent.service.metrics import Metrics
from snapshot_agent.service.notify import Notifier
from snapshot_agent.service.records import RecordStore
from snapshot_agent.service.snapshots import SnapshotRunner

from ..conftest import wait_for_descendant
from .conftest import Server, fast_checks

SLOW = {"id": "custom.slow", "title": "Slow", "command": ["sleep", "37"], "timeout_s": 120}


def leftovers(local_dir: Path) -> list[str]:
    """What a run leaves while it works: the .partial archive and its .run directory."""
    if not local_dir.exists():
        return []
    return sorted(p.name for p in local_dir.iterdir() if p.name.endswith((".partial", ".run")))


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)


def start_slow_snapshot(server: Server) -> tuple[dict[str, Any], list[psutil.Process]]:
    """A snapshot that runs `sleep 37` as a check; once it is under way: (record, its tree)."""
    reply = server.create({"include_iggy": False})
    assert reply.status == 202, reply
    assert server.proc is not None
    tree = wait_for_descendant(server.proc.pid, ["sleep", "37"], 60)
    wait_for(lambda: leftovers(server.local_dir), 10, "the run's .partial")
    return reply.json(), tree


@pytest.mark.parametrize("also_the_run", [False, True], ids=["service", "service-and-run"])
def test_killed_during_a_snapshot_then_restarted(
    serve: Any, short_dir: Path, also_the_run: bool
) -> None:
    server: Server = serve(checks=fast_checks(short_dir, commands=[SLOW]))
    server.start()
    record, tree = start_slow_snapshot(server)
    run = next(p for p in tree if "run" in p.cmdline() and "--events-fd" in p.cmdline())

    if also_the_run:  # as systemd does on a crash: the whole cgroup goes
        os.killpg(run.pid, signal.SIGKILL)
    server.kill()
    # The run dies with the service (it was tied to it); its checks with the run.
    _gone, alive = psutil.wait_procs([run], timeout=30)
    assert not alive, f"the snapshot outlived the service: {alive}"
    _gone, alive = psutil.wait_procs(tree, timeout=30)
    assert not alive, f"left running: {alive}"

    server.configure()  # the same state_dir, fast checks again
    server.start()
    failed = server.get(f"/v1/snapshots/{record['id']}").json()
    assert failed["status"] == "failed" and failed["error"] == "agent restarted", failed
    assert leftovers(server.local_dir) == []  # removed by the run, or at the restart
    assert not list(server.local_dir.glob("snapshot-*.zip"))

    accepted = server.create()
    assert accepted.status == 202, accepted
    assert server.wait_until_ended(accepted.json()["id"])["status"] == "completed"
    assert server.stop() == 0
    assert "Traceback" not in server.logs(), server.logs()


def test_sigterm_during_a_snapshot_ends_it_and_exits_0(serve: Any, short_dir: Path) -> None:
    server: Server = serve(checks=fast_checks(short_dir, deadline_s=2, commands=[SLOW]))
    server.start()
    record, tree = start_slow_snapshot(server)
    started = time.monotonic()
    assert server.stop(signal.SIGTERM, timeout=60) == 0
    assert time.monotonic() - started < 30
    _gone, alive = psutil.wait_procs(tree, timeout=10)
    assert not alive, f"left running: {alive}"
    assert leftovers(server.local_dir) == []

    server.start()
    ended = server.get(f"/v1/snapshots/{record['id']}").json()
    # Given its checks' deadline to finish, it does (the slow check times out), unless
    # the stop had to cancel it: then it failed, saying why. Never "agent restarted".
    assert ended["status"] == "completed" or ended["error"] == "agent stopped", ended
    assert "Traceback" not in server.logs(), server.logs()


def test_a_snapshot_still_running_when_the_stop_wait_ends_is_cancelled(
    serve: Any, short_dir: Path
) -> None:
    """The service's stop, in this process: the wait over, the run is cancelled, failed."""
    server: Server = serve(checks=fast_checks(short_dir, commands=[SLOW]))
    loaded = load_config(server.config_path, explicit=True)
    store = RecordStore.in_state_dir(server.state_dir)
    runner = SnapshotRunner(
        loaded, store, Archives(loaded.config.storage), Metrics(store), Notifier({})
    )
    runner.stop_wait_s = 0.5

    async def scenario() -> int:
        record = await runner.create(SnapshotOptions(include_iggy=False))
        await asyncio.to_thread(wait_for_descendant, os.getpid(), ["sleep", "37"], 60)
        await runner.stop()
        assert runner.running is None
        return record.id

    try:
        # A loop of its own in a thread of its own: another test's may still run in this one.
        with ThreadPoolExecutor(1) as pool:
            record_id = pool.submit(asyncio.run, scenario()).result(timeout=120)
        failed = store.get(record_id)
        assert failed is not None and failed.status == "failed", failed
        assert failed.error == "agent stopped"
        assert leftovers(server.local_dir) == []
        assert store.counts()["processing"] == 0
    finally:
        store.close()
