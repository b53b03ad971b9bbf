"""Snapshot records: one SQLite file under state_dir, shared by threads and processes.

A record is created `processing`, then becomes `completed` (with where its archive is)
or `failed` (with why). "One in progress per node" holds in the store itself: `create`
looks for a processing record and inserts in one `BEGIN IMMEDIATE` transaction (the
database's write lock, across processes), and a partial unique index refuses a second
processing row whatever the code does.

WAL lets readers go on while a write commits. synchronous=FULL: a commit is on disk when
it returns, power cut included (NORMAL in WAL mode may lose the last commits, and a lost
`completed` or delete would disagree with the archive it describes); writes are a few per
snapshot, so the fsync costs nothing that matters. The file and its -wal/-shm are 0600
(SQLite gives its companions the database file's mode): the records name what the node
holds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from snapshot_agent.config import NodeConfig
from snapshot_agent.core.units import from_utc_iso, utc_iso
from snapshot_agent.errors import AgentError
from snapshot_agent.pipeline.record import (
    ArchiveLocation,
    SnapshotOptions,
    SnapshotStatus,
    snapshot_name,
)
from snapshot_agent.service.exclusive import Busy, open_private

DB_NAME = "records.sqlite3"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 5.0  # another process's write: a few ms; this long means it is stuck
MAX_RESULTS = 100  # per page
MAX_ERROR_CHARS = 2000
MAX_ID = 2**63 - 1  # SQLite's INTEGER

#: Each schema version's statements, applied in order to reach the next; `user_version`
#: says how many have been applied.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        # AUTOINCREMENT: a deleted snapshot's id never names another one.
        """CREATE TABLE snapshots (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            node_id INTEGER,
            deployment_id INTEGER,
            status TEXT NOT NULL CHECK (status IN ('processing', 'completed', 'failed')),
            created_at TEXT NOT NULL,
            completed_at TEXT,
            options TEXT NOT NULL,
            size_bytes INTEGER,
            sha256 TEXT,
            location TEXT,
            summary TEXT,
            error TEXT
        )""",
        "CREATE UNIQUE INDEX one_processing ON snapshots (status) WHERE status = 'processing'",
    ),
)
assert len(MIGRATIONS) == SCHEMA_VERSION


class StoreError(AgentError):
    """The records store cannot be used (unreadable, corrupt, newer, stuck): HTTP 503."""


@dataclass(frozen=True)
class Summary:
    """How the node looked: checks per status and the worst status."""

    counts: dict[str, int]
    verdict: str

    def to_json(self) -> dict[str, Any]:
        """`{"verdict": "warn", "counts": {"pass": 25, ...}}`."""
        return {"verdict": self.verdict, "counts": dict(self.counts)}


@dataclass(frozen=True)
class Completion:
    """What a finished snapshot produced: its archive and its summary."""

    location: ArchiveLocation
    summary: Summary
    name: str | None = None  # the archive's name, when the sink picked a free variant

    @classmethod
    def from_outline(cls, outline: Mapping[str, Any]) -> Completion:
        """From `run --json`'s object; ValueError when it names no archive."""
        path, size, sha256 = outline.get("path"), outline.get("size_bytes"), outline.get("sha256")
        if not (isinstance(path, str) and isinstance(size, int) and isinstance(sha256, str)):
            raise ValueError("the snapshot's outcome names no archive (path, size_bytes, sha256)")
        counts = outline.get("summary")
        counts = counts if isinstance(counts, dict) else {}
        name = outline.get("name")
        return cls(
            ArchiveLocation("s3" if path.startswith("s3://") else "local", path, size, sha256),
            Summary(
                {str(k): v for k, v in counts.items() if isinstance(v, int)},
                str(outline.get("verdict", "unknown")),
            ),
            name if isinstance(name, str) else None,
        )


@dataclass(frozen=True)
class Record:
    """One snapshot as stored."""

    id: int
    name: str
    node_id: int | None
    deployment_id: int | None
    status: SnapshotStatus
    created_at: str
    completed_at: str | None
    options: SnapshotOptions
    size_bytes: int | None = None
    sha256: str | None = None
    location: ArchiveLocation | None = None
    summary: Summary | None = None
    error: str | None = None

    @property
    def created(self) -> datetime:
        """created_at as an aware datetime."""
        return from_utc_iso(self.created_at)

    def to_json(self) -> dict[str, Any]:
        """The API's item: the reference's fields, then size_bytes, summary and error.

        Ids are JSON numbers, as the reference sends them (node and deployment ids are
        int64: a JavaScript client loses precision above 2^53, as with the reference).
        """
        return {
            "id": self.id,
            "deployment_id": self.deployment_id,
            "node_id": self.node_id,
            "name": self.name,
            "status": str(self.status),
            "created_at": self.created_at,
            "completed_at": self.completed_at,
            "size_bytes": self.size_bytes,
            "summary": self.summary.to_json() if self.summary else None,
            "error": self.error,
        }

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Record:
        """From a `snapshots` row."""
        summary = json.loads(row["summary"]) if row["summary"] else None
        return cls(
            id=row["id"],
            name=row["name"],
            node_id=row["node_id"],
            deployment_id=row["deployment_id"],
            status=SnapshotStatus(row["status"]),
            created_at=row["created_at"],
            completed_at=row["completed_at"],
            options=SnapshotOptions.from_json(json.loads(row["options"])),
            size_bytes=row["size_bytes"],
            sha256=row["sha256"],
            location=ArchiveLocation(**json.loads(row["location"])) if row["location"] else None,
            summary=Summary(summary["counts"], summary["verdict"]) if summary else None,
            error=row["error"],
        )


@dataclass(frozen=True)
class Page:
    """One page of records, newest first, and how many there are in all."""

    items: list[Record]
    page: int
    total_results: int
    total_pages: int

    def to_json(self) -> dict[str, Any]:
        """The reference's list document."""
        return {
            "items": [r.to_json() for r in self.items],
            "page": self.page,
            "total_results": self.total_results,
            "total_pages": self.total_pages,
        }


class RecordStore:
    """The records in the SQLite file at `path` (created 0600, its directory 0700).

    Safe to share between threads (one connection behind a lock; every call is a few
    statements) and between processes (SQLite's locks). Raises StoreError when the file
    cannot be used.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            os.close(open_private(path, make_dir=True))
        except OSError as exc:
            raise StoreError(
                f"records store {path}: cannot create or open it ({exc.strerror}); "
                "check that state_dir exists and belongs to the agent's user"
            ) from None
        self._conn = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self._conn.row_factory = sqlite3.Row
        try:
            with self._errors():
                self._setup()
        except BaseException:
            self._conn.close()
            raise

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> RecordStore:
        """The node's store, `<state_dir>/records.sqlite3`."""
        return cls(state_dir / DB_NAME)

    def close(self) -> None:
        """Close the connection (WAL content is checkpointed by the last one out)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> RecordStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(
        self, options: SnapshotOptions, node: NodeConfig, now: datetime | None = None
    ) -> Record:
        """A new `processing` record; Busy (with that record) while another is processing."""
        now = now or datetime.now(UTC)
        with self._write() as conn:
            running = _processing(conn)
            if running is not None:
                raise Busy(
                    f"snapshot {running.id} ({running.name}) is in progress since "
                    f"{running.created_at}; one snapshot at a time per node, try again "
                    "when it ends",
                    record=running,
                )
            cursor = conn.execute(
                "INSERT INTO snapshots (name, node_id, deployment_id, status, created_at, "
                "options) VALUES (?, ?, ?, 'processing', ?, ?)",
                (
                    snapshot_name(now),
                    node.node_id,
                    node.deployment_id,
                    utc_iso(now),
                    json.dumps(options.to_json()),
                ),
            )
            record = _get(conn, cursor.lastrowid or 0)
            assert record is not None
            return record

    def complete(
        self, record_id: int, completion: Completion, now: datetime | None = None
    ) -> Record | None:
        """Mark a processing record completed; None when no processing record has this id."""
        location = completion.location
        return self._finish(
            record_id,
            "status = 'completed', completed_at = ?, size_bytes = ?, sha256 = ?, "
            "location = ?, summary = ?, name = coalesce(?, name)",
            (
                _iso(now),
                location.size_bytes,
                location.sha256,
                json.dumps(dataclasses.asdict(location)),
                json.dumps(completion.summary.to_json()),
                completion.name,
            ),
        )

    def fail(self, record_id: int, reason: str, now: datetime | None = None) -> Record | None:
        """Mark a processing record failed, saying why; None when none has this id."""
        return self._finish(
            record_id,
            "status = 'failed', completed_at = ?, error = ?",
            (_iso(now), reason[:MAX_ERROR_CHARS]),
        )

    def get(self, record_id: int) -> Record | None:
        """The record with this id, or None."""
        with self._read() as conn:
            return _get(conn, record_id)

    def processing(self) -> Record | None:
        """The record in progress, if any."""
        with self._read() as conn:
            return _processing(conn)

    def all(self) -> list[Record]:
        """Every record, newest first."""
        with self._read() as conn:
            rows = conn.execute("SELECT * FROM snapshots ORDER BY id DESC").fetchall()
        return [Record.from_row(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Records per status, every status present (zeros included)."""
        with self._read() as conn:
            rows = conn.execute("SELECT status, count(*) FROM snapshots GROUP BY status")
            found = dict(rows.fetchall())
        return {str(s): found.get(str(s), 0) for s in SnapshotStatus}

    def page(self, page: int, results: int) -> Page:
        """Page `page` (from 1) of `results` records (1-100), newest first.

        Raises ValueError naming the bad parameter. A page past the end is empty.
        """
        if not _whole(page) or page < 1:
            raise ValueError(f"page {page!r}: must be a whole number, 1 or more")
        if not _whole(results) or not 1 <= results <= MAX_RESULTS:
            raise ValueError(f"results {results!r}: must be a whole number from 1 to {MAX_RESULTS}")
        offset = (page - 1) * results
        with self._read() as conn:
            total = conn.execute("SELECT count(*) FROM snapshots").fetchone()[0]
            rows = (
                conn.execute(
                    "SELECT * FROM snapshots ORDER BY id DESC LIMIT ? OFFSET ?", (results, offset)
                ).fetchall()
                if offset < total  # also keeps a huge page number out of SQLite's int64
                else []
            )
        return Page([Record.from_row(r) for r in rows], page, total, -(-total // results))

    def delete(self, record_id: int) -> Record | None:
        """Remove the record (not its archive) and return it; None if there was none.

        Raises Busy while it is processing.
        """
        with self._write() as conn:
            record = _get(conn, record_id)
            if record is None:
                return None
            if record.status == SnapshotStatus.PROCESSING:
                raise Busy(
                    f"snapshot {record.id} ({record.name}) is in progress; delete it "
                    "when it has ended",
                    record=record,
                )
            conn.execute("DELETE FROM snapshots WHERE id = ?", (record_id,))
            return record

    def recover(self, reason: str = "agent restarted", now: datetime | None = None) -> list[Record]:
        """At start: every `processing` record becomes `failed` with `reason`; those records.

        The caller removes what their runs left (partial archives).
        """
        with self._write() as conn:
            rows = conn.execute("SELECT id FROM snapshots WHERE status = 'processing'")
            ids = [r[0] for r in rows.fetchall()]
            conn.execute(
                "UPDATE snapshots SET status = 'failed', completed_at = ?, error = ? "
                "WHERE status = 'processing'",
                (_iso(now), reason[:MAX_ERROR_CHARS]),
            )
            return [r for r in (_get(conn, i) for i in ids) if r is not None]

    def _finish(self, record_id: int, assignments: str, values: tuple[Any, ...]) -> Record | None:
        """Apply `assignments` to the record if it is processing; the record after, or None."""
        if not _valid_id(record_id):
            return None
        with self._write() as conn:
            cursor = conn.execute(
                f"UPDATE snapshots SET {assignments} WHERE id = ? AND status = 'processing'",
                (*values, record_id),
            )
            return _get(conn, record_id) if cursor.rowcount else None

    def _setup(self) -> None:
        """WAL, synchronous=FULL, and the schema at SCHEMA_VERSION."""
        conn = self._conn
        mode = self._use_wal()
        if mode != "wal":
            raise StoreError(
                f"records store {self.path}: SQLite cannot use WAL there ({mode}); "
                "put state_dir on a local file system"
            )
        conn.execute("PRAGMA synchronous = FULL")
        if self._version() == SCHEMA_VERSION:
            return
        with self._write() as conn:
            version = self._version()  # again, under the write lock: another process may
            for statements in MIGRATIONS[version:]:  # have migrated meanwhile
                for statement in statements:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _use_wal(self) -> str:
        """Switch the file to WAL; the journal mode it is in after.

        Processes opening a new file at once race to switch it. SQLite answers the loser
        "locked" at once (a lock upgrade that would deadlock skips the busy handler), so
        the switch is tried again, a few ms apart, for up to BUSY_TIMEOUT_S.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                mode: str = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                return mode
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(random.uniform(0.002, 0.02))

    def _version(self) -> int:
        """The schema version in the file; StoreError when newer than this agent knows."""
        version: int = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"records store {self.path}: written by a newer snapshot-agent (schema "
                f"{version}, this one knows {SCHEMA_VERSION}); upgrade the agent, or move the "
                "file aside to start a new one"
            )
        return version

    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A write transaction: the database's write lock at once, not at the first write."""
        return self._transaction("BEGIN IMMEDIATE")

    def _read(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A read transaction: one consistent view of the records (a count and a page)."""
        return self._transaction("BEGIN")

    @contextlib.contextmanager
    def _transaction(self, begin: str) -> Iterator[sqlite3.Connection]:
        """The connection, inside a transaction started by `begin`, committed at the end."""
        with self._lock, self._errors():
            self._conn.execute(begin)
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            finally:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """SQLite's errors (locked, corrupt, disk full) as a StoreError naming the file."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.IntegrityError):
                raise  # a bug in this module, not a state of the file
            hint = (
                f"another process has held it for over {BUSY_TIMEOUT_S:g} s; try again"
                if "locked" in str(exc)
                else "if the file is damaged, move it aside and the agent starts a new one"
            )
            raise StoreError(f"records store {self.path}: {exc}; {hint}") from exc


def _get(conn: sqlite3.Connection, record_id: int) -> Record | None:
    if not _valid_id(record_id):
        return None
    row = conn.execute("SELECT * FROM snapshots WHERE id = ?", (record_id,)).fetchone()
    return Record.from_row(row) if row else None


def _processing(conn: sqlite3.Connection) -> Record | None:
    row = conn.execute("SELECT * FROM snapshots WHERE status = 'processing'").fetchone()
    return Record.from_row(row) if row else None


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _valid_id(record_id: object) -> bool:
    return _whole(record_id) and 1 <= record_id <= MAX_ID  # type: ignore[operator]


def _iso(now: datetime | None) -> str:
    return utc_iso(now or datetime.now(UTC))
