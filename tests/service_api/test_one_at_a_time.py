"""One snapshot at a time per node: 50 creates at once get one 202 and 49 409s, and a
snapshot taken outside the service (a CLI `run` holding the node's lock) turns a create
away too."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from snapshot_agent.service.exclusive import SnapshotLock

from .conftest import Reply, Server


def test_fifty_creates_at_once_start_exactly_one(serve: Any) -> None:
    server: Server = serve()
    server.start()
    barrier = threading.Barrier(50)

    def create(_: int) -> Reply:
        barrier.wait(timeout=30)
        return server.create()

    with ThreadPoolExecutor(50) as pool:
        replies = list(pool.map(create, range(50)))
    statuses = sorted(r.status for r in replies)
    assert statuses == [202] + [409] * 49, statuses
    accepted = next(r.json() for r in replies if r.status == 202)
    for refused in (r for r in replies if r.status == 409):
        problem = refused.problem
        assert problem["snapshot_id"] == accepted["id"], problem
        assert "in progress" in problem["detail"]
    listing = server.get("/v1/snapshots").json()
    assert listing["total_results"] == 1  # nothing half-made by the refused ones
    assert server.wait_until_ended(accepted["id"])["status"] == "completed"
    assert server.create().status == 202  # the next one, once it has ended
    assert server.stop() == 0


def test_a_snapshot_outside_the_service_turns_a_create_away(serve: Any) -> None:
    server: Server = serve()
    server.start()
    with SnapshotLock(server.state_dir).acquire() as lease:  # as a CLI `run` holds it
        assert lease.path is not None
        refused = server.create()
        assert refused.problem["status"] == 409
        assert "outside the service" in refused.problem["detail"], refused.problem
    assert server.get("/v1/snapshots").json()["total_results"] == 0
    accepted = server.create()
    assert accepted.status == 202, accepted
    server.wait_until_ended(accepted.json()["id"])
    assert server.stop() == 0
