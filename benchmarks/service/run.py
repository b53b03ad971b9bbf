#!/usr/bin/env python3
"""Idle memory of `snapshot-agent serve` and the latency of listing snapshots over its socket.

Usage: benchmarks/service/run.py [--records N] [--requests N] [--json] [--check]

Seeds a fresh records store in a temporary state_dir with N completed records (default
1000), starts the real `snapshot-agent serve` on a Unix socket there, and reads its RSS
(/proc/PID/status) once it answers, after 100 list requests, and after one real snapshot
and 100 more requests. Then it times `GET /v1/snapshots?page=P&results=R` over one
keep-alive connection, REQUESTS times for results=10 (pages at random) and for
results=100: p50, p90, p99 and max. Targets: idle RSS <= 45 MB (after the 100 requests);
list p99 reported. See benchmarks/README.md.

Environment:
  SNAPSHOT_AGENT_PYTHON  the Python that has snapshot_agent (default .venv/bin/python)
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import server
from server import PYTHON

TARGET_RSS_MB = 45.0
MB = 1024 * 1024  # RSS in MiB, as ps and top count it

#: Seeds the store: N completed records, as the service would have left them.
SEED = """
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from snapshot_agent.config import NodeConfig
from snapshot_agent.pipeline.record import ArchiveLocation, SnapshotOptions
from snapshot_agent.service.records import Completion, RecordStore, Summary

state_dir, count = Path(sys.argv[1]), int(sys.argv[2])
node = NodeConfig(deployment_id=611298765432109056, node_id=610809900976570889)
start = datetime.now(UTC) - timedelta(days=1)
counts = {"pass": 40, "warn": 3, "fail": 1, "error": 0, "skipped": 10, "timeout": 0}
with RecordStore.in_state_dir(state_dir) as store:
    for i in range(count):
        when = start + timedelta(seconds=60 * i)
        record = store.create(SnapshotOptions(), node, now=when)
        name = when.strftime("snapshot-%Y%m%d-%H%M%S")
        location = ArchiveLocation("local", f"{state_dir}/snapshots/{name}.zip", 170000, "0" * 64)
        store.complete(record.id, Completion(location, Summary(counts, "fail")), now=when)
"""


class UnixConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket (one connection, kept alive)."""

    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=60)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self.socket_path))
        self.sock = sock


def get(conn: http.client.HTTPConnection, path: str, method: str = "GET") -> tuple[int, bytes]:
    if method == "POST":
        conn.request(method, path, body=b"{}", headers={"Content-Type": "application/json"})
    else:
        conn.request(method, path)
    response = conn.getresponse()
    return response.status, response.read()


def rss(pid: int) -> dict[str, float]:
    """VmRSS, RssAnon, RssFile, VmHWM and Pss of `pid`, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            fields["Pss"] = int(line.split()[1]) / 1024
    return fields


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p90_ms": pick(0.90) * 1000,
        "p99_ms": pick(0.99) * 1000,
        "max_ms": ordered[-1] * 1000,
    }


def run(records: int, requests: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="sa-bench-", dir="/tmp"))
    proc = None
    try:
        state_dir = root / "state"
        socket_path = root / "run" / "agent.sock"
        started = time.monotonic()
        subprocess.run([PYTHON, "-c", SEED, str(state_dir), str(records)], check=True)
        seeded_s = time.monotonic() - started
        # plan null: keep the seeded records
        proc = server.start(root, server.config(root, retention={"plan": None}))
        time.sleep(1.0)
        memory = {"after start": rss(proc.pid)}
        conn = UnixConnection(socket_path)
        for page in range(1, 101):
            assert get(conn, f"/v1/snapshots?page={page}&results=10")[0] == 200
        memory["after 100 lists"] = rss(proc.pid)

        status, body = get(conn, "/v1/snapshots", "POST")
        assert status == 202, body
        snapshot_id = json.loads(body)["id"]
        while json.loads(get(conn, f"/v1/snapshots/{snapshot_id}")[1])["status"] == "processing":
            time.sleep(0.2)
        for page in range(1, 101):
            assert get(conn, f"/v1/snapshots?page={page}&results=10")[0] == 200
        time.sleep(1.0)
        memory["after a snapshot and 100 more"] = rss(proc.pid)

        latency = {}
        pages = max(1, (records + 1) // 10)
        for results in (10, 100):
            samples = []
            for _ in range(requests):
                page = random.randint(1, pages) if results == 10 else 1
                t0 = time.perf_counter()
                status, body = get(conn, f"/v1/snapshots?page={page}&results={results}")
                samples.append(time.perf_counter() - t0)
                assert status == 200, body
            latency[f"results={results}"] = percentiles(samples)
        memory["after the latency runs"] = rss(proc.pid)
        return {
            "date": datetime.date.today().isoformat(),
            "machine": server.machine(),
            "records": records + 1,
            "requests": requests,
            "seeding_s": seeded_s,
            "memory_mib": memory,
            "latency": latency,
        }
    finally:
        server.stop(proc)
        shutil.rmtree(root, ignore_errors=True)


def markdown(result: dict[str, Any]) -> str:
    lines = [f"**{result['date']}**, {result['machine']}.", ""]
    lines += [
        "| when | RSS (MiB) | anon | file | peak | PSS |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for when, m in result["memory_mib"].items():
        lines.append(
            f"| {when} | {m['VmRSS']:.1f} | {m['RssAnon']:.1f} | {m['RssFile']:.1f} | "
            f"{m['VmHWM']:.1f} | {m['Pss']:.1f} |"
        )
    lines += [
        "",
        f"List latency over the socket, {result['records']} records, "
        f"{result['requests']} requests each, one keep-alive connection:",
        "",
    ]
    lines += ["| request | p50 | p90 | p99 | max |", "| --- | --- | --- | --- | --- |"]
    for what, p in result["latency"].items():
        lines.append(
            f"| `GET /v1/snapshots?{what}` | {p['p50_ms']:.2f} ms | {p['p90_ms']:.2f} ms | "
            f"{p['p99_ms']:.2f} ms | {p['max_ms']:.2f} ms |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=999, help="seeded records (+1 real)")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--check", action="store_true", help="exit 1 when RSS > 45 MiB")
    args = parser.parse_args()
    result = run(args.records, args.requests)
    print(json.dumps(result, indent=2) if args.json else markdown(result))
    idle = result["memory_mib"]["after 100 lists"]["VmRSS"]
    return 1 if args.check and idle > TARGET_RSS_MB else 0


if __name__ == "__main__":
    sys.exit(main())
