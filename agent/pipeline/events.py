"""Progress as JSON lines: what a snapshot running in its own process tells its caller.

`snapshot-agent run --events-fd N` writes one JSON object per line to the inherited file
descriptor N; `SnapshotProcess` (pipeline/process.py) reads them. Events, in order:

    {"event": "snapshot_started", "name", "created_at", "checks", "pid"}
    {"event": "check_started", "id"}                          (once per check that starts)
    {"event": "check_finished", "id", "status", "summary", "duration_ms"}   (every check)
    {"event": "snapshot_completed", ...`run --json`'s object}
    or {"event": "snapshot_failed", "error", "exit_code"}

Summaries have passed the filter like everything else a check says.
"""

from __future__ import annotations

import fcntl
import json
import os
from typing import IO, Any

from snapshot_agent.core.check import Check
from snapshot_agent.core.results import Result
from snapshot_agent.errors import UsageError
from snapshot_agent.pipeline.record import SnapshotRecord


class EventWriter:
    """Writes events to an inherited fd; a reader that went away never breaks the snapshot."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.broken = False

    @classmethod
    def from_fd(cls, fd: int) -> EventWriter:
        """Open fd `fd` for writing events, or refuse it with a one-line error."""
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            if flags & os.O_ACCMODE == os.O_RDONLY:
                raise ValueError("it is open for reading only")
            stream = open(fd, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115
        except (OSError, ValueError, OverflowError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise UsageError(
                f"--events-fd {fd}: not a descriptor open for writing ({reason}); pass an fd "
                "the caller opened for writing"
            ) from None
        return cls(stream)

    def emit(self, event: str, **fields: Any) -> None:
        """Write one event line."""
        if self.broken:
            return
        try:
            self.stream.write(json.dumps({"event": event, **fields}) + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            self.broken = True  # the caller closed its end: keep going, stop telling

    def opened(self, record: SnapshotRecord, total: int) -> None:
        """The archive is reserved and checks are about to run."""
        self.emit(
            "snapshot_started",
            name=record.name,
            created_at=record.created_at,
            checks=total,
            pid=os.getpid(),
        )

    def started(self, check: Check) -> None:
        """A check's process started."""
        self.emit("check_started", id=check.id)

    def finished(self, check: Check, result: Result) -> None:
        """A check ended (its result already filtered)."""
        self.emit(
            "check_finished",
            id=check.id,
            status=str(result.status),
            summary=result.summary,
            duration_ms=result.duration_ms,
        )

    def tick(self) -> None:
        """Nothing to refresh."""


class Observers:
    """Several observers as one (the terminal display and the event stream)."""

    def __init__(self, *observers: Any) -> None:
        self.observers = [o for o in observers if o is not None]

    def started(self, check: Check) -> None:
        """Tell each."""
        for o in self.observers:
            o.started(check)

    def finished(self, check: Check, result: Result) -> None:
        """Tell each."""
        for o in self.observers:
            o.finished(check, result)

    def tick(self) -> None:
        """Tell each."""
        for o in self.observers:
            o.tick()
