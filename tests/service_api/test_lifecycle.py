"""The supervisor's whole round over the Unix socket: create, poll, list, get, download,
delete; retention after each snapshot; a clean stop."""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..conftest import run_cli
from .conftest import Server

NAME = re.compile(r"snapshot-\d{8}-\d{6}")
ISO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


def archives(server: Server) -> list[str]:
    return sorted(p.name for p in server.local_dir.glob("snapshot-*"))


def eventually(condition: Callable[[], bool], timeout: float = 30) -> None:
    """Wait for `condition` (retention runs just after the record is completed)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_create_poll_list_get_download_delete_and_retention(serve: Any, tmp_path: Path) -> None:
    server: Server = serve(retention={"plan": "basic", "max_count": 2})
    server.start()
    mode = os.stat(server.socket).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660
    assert stat.S_IMODE(os.stat(server.socket.parent).st_mode) == 0o750

    reply = server.create({"redact_secrets": True, "include_iggy": False})
    assert reply.status == 202, reply
    first = reply.json()
    assert first["status"] == "processing" and first["completed_at"] is None
    assert NAME.fullmatch(first["name"]) and ISO.fullmatch(first["created_at"])
    assert reply.headers["location"] == f"/v1/snapshots/{first['id']}"
    assert server.create().status == 409  # one at a time
    name = first["name"]
    first = server.wait_until_ended(first["id"])
    assert first["status"] == "completed", first
    assert first["name"] == name  # the child names its archive as the record, not its clock
    assert first["size_bytes"] > 0 and ISO.fullmatch(first["completed_at"])
    assert first["summary"]["verdict"] in {"pass", "warn", "fail", "error", "skipped", "timeout"}
    assert sum(first["summary"]["counts"].values()) > 10

    second, third = server.snapshot(), server.snapshot()
    assert second["status"] == third["status"] == "completed"
    # basic plan, max_count 2: the third completed snapshot let the first one go
    eventually(lambda: server.get(f"/v1/snapshots/{first['id']}").status == 404)
    assert archives(server) == sorted(f"{r['name']}.zip" for r in (second, third))

    listing = server.get("/v1/snapshots?page=1&results=10")
    assert listing.status == 200
    page = listing.json()
    assert page["page"] == 1 and page["total_results"] == 2 and page["total_pages"] == 1
    assert [i["id"] for i in page["items"]] == [third["id"], second["id"]]  # newest first
    assert set(page["items"][0]) == {
        "id",
        "deployment_id",
        "node_id",
        "name",
        "status",
        "created_at",
        "completed_at",
        "size_bytes",
        "summary",
        "error",
    }
    one = server.get("/v1/snapshots?page=2&results=1").json()
    assert [i["id"] for i in one["items"]] == [second["id"]] and one["total_pages"] == 2
    assert server.get(f"/v1/snapshots/{third['id']}").json() == third

    download = server.get(f"/v1/snapshots/{third['id']}/download")
    assert download.status == 200
    assert download.headers["content-disposition"] == f'attachment; filename="{third["name"]}.zip"'
    assert len(download.body) == third["size_bytes"]
    saved = tmp_path / f"{third['name']}.zip"
    saved.write_bytes(download.body)
    verified = run_cli("verify", saved)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    deleted = server.request("DELETE", f"/v1/snapshots/{third['id']}")
    assert deleted.status == 204 and deleted.body == b""
    assert server.get(f"/v1/snapshots/{third['id']}").problem["status"] == 404
    assert server.get(f"/v1/snapshots/{third['id']}/download").status == 404
    assert server.request("DELETE", f"/v1/snapshots/{third['id']}").status == 404
    assert archives(server) == [f"{second['name']}.zip"]

    metrics = server.get("/metrics").body.decode()
    assert 'snapshot_agent_snapshots_finished_total{status="completed"} 3.0' in metrics
    assert 'snapshot_agent_snapshots{status="completed"} 1.0' in metrics
    assert "snapshot_agent_snapshot_duration_seconds_count 3.0" in metrics
    assert "snapshot_agent_last_success_timestamp_seconds 0.0" not in metrics

    assert server.stop() == 0
    assert not server.socket.exists()
    log = server.logs()
    assert "Traceback" not in log
    assert f"snapshot {third['id']} ({third['name']}) deleted by uid {os.getuid()}" in log


def test_checks_health_and_the_document(serve: Any) -> None:
    server: Server = serve()
    server.start()
    checks = server.get("/v1/checks")
    assert checks.status == 200
    ids = [c["id"] for c in checks.json()]
    listed = run_cli("checks", "--json", "--config", server.config_path)
    assert ids == [c["id"] for c in json.loads(listed.stdout)]
    assert server.get("/healthz").json() == {"status": "ok", "snapshot_id": None}
    document = server.get("/openapi.json").json()
    assert (
        document["openapi"].startswith("3.") and "/v1/snapshots/{id}/download" in document["paths"]
    )
    assert server.stop() == 0
