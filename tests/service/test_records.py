"""The records store on real SQLite files: lifecycle, paging, one in progress across threads
and processes, a writer killed mid-transaction, and private files whatever the umask."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from snapshot_agent.config import NodeConfig
from snapshot_agent.pipeline.record import ArchiveLocation, SnapshotOptions, SnapshotStatus
from snapshot_agent.service import records
from snapshot_agent.service.exclusive import Busy
from snapshot_agent.service.records import (
    SCHEMA_VERSION,
    Completion,
    RecordStore,
    StoreError,
    Summary,
)
from tests.conftest import started_at_once

NODE = NodeConfig(deployment_id=611298765432109056, node_id=2**63 - 1, name="events-prod-1")
T0 = datetime(2026, 6, 1, 10, 30, 0, tzinfo=UTC)


def done(name: str = "snapshot-20260601-103000", size: int = 1234) -> Completion:
    """A completion as a local run reports it."""
    location = ArchiveLocation("local", f"/var/lib/snapshot-agent/snapshots/{name}.zip", size, "ab")
    return Completion(location, Summary({"pass": 30, "warn": 2, "fail": 0}, "warn"))


def child(script: str, *args: str) -> subprocess.Popen[str]:
    """A Python child running `script`, talking over pipes."""
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RecordStore]:
    with RecordStore.in_state_dir(tmp_path / "state") as opened:
        yield opened


def test_a_snapshot_goes_from_processing_to_completed_with_the_reference_fields(
    store: RecordStore,
) -> None:
    record = store.create(SnapshotOptions(redact=False), NODE, now=T0)
    expected = {
        "id": 1,
        "deployment_id": 611298765432109056,
        "node_id": 2**63 - 1,
        "name": "snapshot-20260601-103000",
        "status": "processing",
        "created_at": "2026-06-01T10:30:00Z",
        "completed_at": None,
        "size_bytes": None,
        "summary": None,
        "error": None,
    }
    assert record.to_json() == expected
    assert list(record.to_json()) == list(expected)  # the reference's order, then ours
    assert record.options.redact is False and record.options.include_iggy is True

    finished = store.complete(record.id, done(), now=T0 + timedelta(minutes=1))
    assert finished is not None and finished == store.get(record.id)
    doc = finished.to_json()
    assert doc["status"] == "completed" and doc["completed_at"] == "2026-06-01T10:31:00Z"
    assert doc["size_bytes"] == 1234
    assert doc["summary"] == {"verdict": "warn", "counts": {"pass": 30, "warn": 2, "fail": 0}}
    assert finished.location == done().location and finished.sha256 == "ab"
    # int64 ids stay exact JSON numbers, as the reference sends them
    assert '"node_id": 9223372036854775807' in json.dumps(doc)
    # finished records are not finished twice
    assert store.complete(record.id, done()) is None
    assert store.fail(record.id, "late") is None


def test_one_processing_record_at_a_time_then_the_next_is_accepted(store: RecordStore) -> None:
    first = store.create(SnapshotOptions(), NODE, now=T0)
    with pytest.raises(Busy, match=r"snapshot 1 \(snapshot-20260601-103000\) is in progress"):
        store.create(SnapshotOptions(), NODE)
    with pytest.raises(Busy) as refused:
        store.delete(first.id)
    assert refused.value.record == first
    failed = store.fail(first.id, "check runner died\n" + "x" * 5000)
    assert failed is not None and failed.status == SnapshotStatus.FAILED
    assert failed.error is not None and len(failed.error) == 2000
    second = store.create(SnapshotOptions(), NODE)
    assert second.id == 2 and store.processing() == second
    assert store.counts() == {"processing": 1, "completed": 0, "failed": 1}


def test_delete_removes_the_record_and_ids_are_never_reused(store: RecordStore) -> None:
    ids = []
    for _ in range(3):
        ids.append(store.create(SnapshotOptions(), NODE).id)
        store.complete(ids[-1], done())
    assert ids == [1, 2, 3]
    deleted = store.delete(3)
    assert deleted is not None and deleted.id == 3
    assert store.get(3) is None and store.delete(3) is None
    assert store.create(SnapshotOptions(), NODE).id == 4  # a client's "3" never names another
    for absurd in (0, -1, 2**63, 10**30):
        assert store.get(absurd) is None and store.delete(absurd) is None
        assert store.fail(absurd, "x") is None


def test_the_empty_store_has_no_pages(store: RecordStore) -> None:
    assert store.page(1, 10).to_json() == {
        "items": [],
        "page": 1,
        "total_results": 0,
        "total_pages": 0,
    }


@pytest.mark.parametrize(
    ("page", "results", "message"),
    [
        (0, 10, "page 0: must be a whole number, 1 or more"),
        (-1, 10, "page -1"),
        (True, 10, "page True"),
        ("1", 10, "page '1'"),
        (1.0, 10, "page 1.0"),
        (1, 0, "results 0: must be a whole number from 1 to 100"),
        (1, 101, "results 101"),
        (1, True, "results True"),
    ],
)
def test_a_bad_page_or_size_is_refused_by_name(
    store: RecordStore, page: object, results: object, message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{message}"):
        store.page(page, results)  # type: ignore[arg-type]


def test_pages_are_newest_first_contiguous_and_counted(store: RecordStore) -> None:
    for i in range(25):
        record = store.create(SnapshotOptions(), NODE, now=T0 + timedelta(seconds=i))
        store.complete(record.id, done())
    for size, pages in ((10, 3), (5, 5), (25, 1), (100, 1), (1, 25), (24, 2)):
        seen = []
        for number in range(1, pages + 1):
            page = store.page(number, size)
            assert (page.page, page.total_results, page.total_pages) == (number, 25, pages)
            seen += [r.id for r in page.items]
        assert seen == list(range(25, 0, -1)), size
    last = store.page(3, 10)
    assert last.items[0].name == "snapshot-20260601-103004"
    for beyond in (4, 10**9, 10**30):  # past the end: empty, not an error or an overflow
        page = store.page(beyond, 10)
        assert page.items == [] and page.total_results == 25 and page.total_pages == 3


@pytest.mark.parametrize("shared", [True, False], ids=["one store", "a store per thread"])
def test_fifty_threads_create_at_once_and_exactly_one_succeeds(
    tmp_path: Path, shared: bool
) -> None:
    path = tmp_path / "records.sqlite3"
    stores = [RecordStore(path)] * 50 if shared else [RecordStore(path) for _ in range(50)]
    barrier = threading.Barrier(50)
    created, refused = [], []

    def create(store: RecordStore) -> None:
        barrier.wait()
        try:
            created.append(store.create(SnapshotOptions(), NODE))
        except Busy as exc:
            refused.append(exc.record)

    threads = [threading.Thread(target=create, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    for store in set(stores):
        store.close()
    assert len(created) == 1 and len(refused) == 49
    assert {r.id for r in refused} == {created[0].id}
    with RecordStore(path) as store:
        assert store.page(1, 100).total_results == 1


CREATE = """
import sys, time
from pathlib import Path
from snapshot_agent.config import NodeConfig
from snapshot_agent.pipeline.record import SnapshotOptions
from snapshot_agent.service import records
from snapshot_agent.service.exclusive import Busy
from snapshot_agent.service.records import RecordStore

store = RecordStore(Path(sys.argv[1]))
print("ready", flush=True)
sys.stdin.readline()  # the start line: every process is open and waiting
try:
    print("created", store.create(SnapshotOptions(), NodeConfig()).id, flush=True)
except Busy as exc:
    print("busy", exc.record.id, flush=True)
"""


def test_processes_create_at_once_and_exactly_one_succeeds(tmp_path: Path) -> None:
    path = tmp_path / "state" / "records.sqlite3"
    RecordStore(path).close()  # the schema exists: the race is over the record alone
    answers = [out.split() for _, out, _ in started_at_once(CREATE, str(path), count=8)]
    assert sorted(a[0] for a in answers) == ["busy"] * 7 + ["created"]
    assert {a[1] for a in answers} == {"1"}


OPEN_AND_CREATE = """
import sys
from pathlib import Path
from snapshot_agent.config import NodeConfig
from snapshot_agent.pipeline.record import SnapshotOptions
from snapshot_agent.service.exclusive import Busy
from snapshot_agent.service.records import RecordStore

print("ready", flush=True)
sys.stdin.readline()  # the start line: every process is up and waiting
store = RecordStore(Path(sys.argv[1]))
try:
    print("created", store.create(SnapshotOptions(), NodeConfig()).id, flush=True)
except Busy as exc:
    print("busy", exc.record.id, flush=True)
"""


@pytest.mark.parametrize("attempt", range(6))  # before the fix, 1 round in 15 to 45 lost the race
def test_processes_opening_a_new_store_at_once_agree_on_one_schema(
    tmp_path: Path, attempt: int
) -> None:
    path = tmp_path / "state" / "records.sqlite3"
    answers = [out.split()[0] for _, out, _ in started_at_once(OPEN_AND_CREATE, str(path), count=6)]
    assert sorted(answers) == ["busy"] * 5 + ["created"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


KILLED_MID_WRITE = """
import sqlite3, sys, time
from pathlib import Path
from snapshot_agent.config import NodeConfig
from snapshot_agent.pipeline.record import SnapshotOptions
from snapshot_agent.service.records import RecordStore

store = RecordStore(Path(sys.argv[1]))
record = store.create(SnapshotOptions(), NodeConfig(node_id=7))
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("UPDATE snapshots SET name = 'half-written', status = 'completed'")
conn.execute("INSERT INTO snapshots (name, status, created_at, options) "
             "VALUES ('half', 'failed', 'x', '{}')")
print(record.id, flush=True)
time.sleep(60)
"""


def test_a_writer_killed_mid_transaction_leaves_its_record_to_recover(tmp_path: Path) -> None:
    path = tmp_path / "state" / "records.sqlite3"
    proc = child(KILLED_MID_WRITE, str(path))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip().isdigit(), proc.communicate()[1]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    with RecordStore(path) as store:  # the dead writer's lock is gone: no 5 s wait, no error
        recovered = store.recover(now=T0)
        assert [r.id for r in recovered] == [int(line)]
        record = recovered[0]
        assert record.status == SnapshotStatus.FAILED and record.error == "agent restarted"
        assert record.completed_at == "2026-06-01T10:30:00Z"
        assert record.name.startswith("snapshot-") and record.node_id == 7  # no half write
        assert store.page(1, 10).total_results == 1
        assert store.recover() == []
        assert store.create(SnapshotOptions(), NODE).id == 2
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


OPEN_UNDER_UMASK = """
import os, sys
from pathlib import Path
from snapshot_agent.config import NodeConfig
from snapshot_agent.pipeline.record import SnapshotOptions
from snapshot_agent.service.records import RecordStore

os.umask(int(sys.argv[2], 8))
store = RecordStore(Path(sys.argv[1]))
store.create(SnapshotOptions(), NodeConfig())
print("open", flush=True)
sys.stdin.readline()
"""


@pytest.mark.parametrize("umask", ["000", "022"])
def test_the_database_and_its_wal_files_are_private_whatever_the_umask(
    tmp_path: Path, umask: str
) -> None:
    state = tmp_path / "new" / "state"
    path = state / "records.sqlite3"
    proc = child(OPEN_UNDER_UMASK, str(path), umask)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "open\n", proc.stderr
        modes = {p.name: p.stat().st_mode & 0o777 for p in state.iterdir()}
        assert modes == {
            "records.sqlite3": 0o600,
            "records.sqlite3-wal": 0o600,
            "records.sqlite3-shm": 0o600,
        }
        assert state.stat().st_mode & 0o777 == 0o700
    finally:
        proc.communicate("\n", timeout=30)


def test_an_existing_loose_file_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "records.sqlite3"
    path.touch(mode=0o644)
    path.chmod(0o644)
    RecordStore(path).close()
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_store_locked_by_a_stuck_process_fails_in_time_and_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(records, "BUSY_TIMEOUT_S", 0.2)
    path = tmp_path / "records.sqlite3"
    with RecordStore(path) as store:
        stuck = sqlite3.connect(path, isolation_level=None)
        stuck.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError, match=r"database is locked; another process .* 0.2 s"):
                store.create(SnapshotOptions(), NODE)
            assert store.page(1, 10).total_results == 0  # readers go on meanwhile (WAL)
        finally:
            stuck.close()
        assert store.create(SnapshotOptions(), NODE).id == 1


def test_a_file_that_is_not_a_store_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "records.sqlite3"
    path.write_bytes(b"this is not SQLite, it is a config someone put here\n" * 100)
    expected = rf"records store {re.escape(str(path))}: .*not a database.*move it aside"
    with pytest.raises(StoreError, match=expected):
        RecordStore(path)


def test_a_store_from_a_newer_agent_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "records.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="written by a newer snapshot-agent"):
        RecordStore(path)


def test_a_state_dir_that_cannot_be_made_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match=r"cannot create or open it.*state_dir"):
        RecordStore.in_state_dir(tmp_path / "file" / "state")


def test_a_run_outline_becomes_a_completion() -> None:
    outline = {
        "path": "s3://diag/snapshots/611/610/snapshot-20260601-103000-2.zip",
        "name": "snapshot-20260601-103000-2",
        "status": "completed",
        "verdict": "fail",
        "summary": {"pass": 3, "fail": 1},
        "size_bytes": 99,
        "sha256": "cd",
    }
    completion = Completion.from_outline(outline)
    assert completion.location.sink == "s3" and completion.location.size_bytes == 99
    assert completion.summary == Summary({"pass": 3, "fail": 1}, "fail")
    assert completion.name == "snapshot-20260601-103000-2"
    assert Completion.from_outline({**outline, "path": "/x.zip"}).location.sink == "local"
    with pytest.raises(ValueError, match="names no archive"):
        Completion.from_outline({"status": "completed", "path": None})


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give files away")
def test_root_leaves_the_store_to_the_state_dirs_owner(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 65534, 65534)  # the service's user, say
    with RecordStore.in_state_dir(state) as store:  # an SRE's `sudo`, first to open it
        store.create(SnapshotOptions(), NODE)
        owners = {p.name: (p.stat().st_uid, p.stat().st_gid) for p in state.iterdir()}
    assert owners == {
        "records.sqlite3": (65534, 65534),
        "records.sqlite3-wal": (65534, 65534),
        "records.sqlite3-shm": (65534, 65534),
    }
