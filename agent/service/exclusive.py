"""One snapshot in progress per node, across processes: a lock file in state_dir.

The process that takes the snapshot, `snapshot-agent run` (the service runs each one as
such a child), holds an flock on `<state_dir>/snapshot.lock` for the whole snapshot, and
writes its pid and start time into the file for whoever is turned away. The kernel lets
the lock go when that process ends however it ends (SIGKILL, the OOM killer), so a dead
run never blocks the next one and there is nothing stale to clean.

Only those who may write the lock file take part: it is 0600 in a 0700 directory, so a
user who may merely read it cannot hold snapshots off by locking it. Where there is no
state_dir, the agent is not installed as a service (its package and the service make it):
an SRE's ad hoc `run` there takes no lock and leaves nothing behind. Where state_dir is
there but the lock cannot be used (an SRE's `run` as non-root beside the service's 0700
directory), the run proceeds unguarded and is told so: blocking it would help no one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from snapshot_agent.core.units import utc_iso
from snapshot_agent.errors import AgentError

if TYPE_CHECKING:
    from snapshot_agent.service.records import Record

LOCK_NAME = "snapshot.lock"
FILE_MODE = 0o600
DIR_MODE = 0o700
POLL_S = 0.05
#: `holder()` locks the file shared for a moment to look; a run that does not wait still
#: tries this long, so a look never turns it away (a real snapshot holds it for seconds).
PROBE_GRACE_S = 0.25
MAX_HOLDER_BYTES = 4096
MAX_WAIT_S = 24 * 3600.0  # never forever: a wedged holder must not wedge its waiters too
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


class Busy(AgentError):
    """Another snapshot is in progress on this node: refused, not queued (HTTP 409)."""

    def __init__(
        self, message: str, record: Record | None = None, holder: Holder | None = None
    ) -> None:
        super().__init__(message)
        self.record = record  # the processing record, when the store refused
        self.holder = holder  # who holds the lock, when the lock refused


@dataclass(frozen=True)
class Holder:
    """Who holds the lock, as it wrote into the file (None: it did not say)."""

    pid: int | None
    started_at: str | None

    def describe(self) -> str:
        """`pid 1234, started 2026-06-01T10:30:00Z`, or as much as is known."""
        parts = [f"pid {self.pid}"] if self.pid is not None else []
        parts += [f"started {self.started_at}"] if self.started_at else []
        return ", ".join(parts) or "a process that did not say which"

    @classmethod
    def parse(cls, data: bytes) -> Holder:
        """The holder from the lock file's text; unknown fields for anything unexpected."""
        try:
            doc = json.loads(data)
        except ValueError:
            return cls(None, None)
        if not isinstance(doc, dict):
            return cls(None, None)
        pid, started = doc.get("pid"), doc.get("started_at")
        return cls(
            pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
            started if isinstance(started, str) and started.isprintable() else None,
        )


@dataclass(frozen=True)
class Lease:
    """A held lock (`path`), or an unguarded run (`path` None).

    `note` says why a run is unguarded when state_dir is there yet the lock is not
    usable: worth a line on stderr. No state_dir at all needs no word: no service here.
    """

    path: Path | None
    note: str | None = None


class SnapshotLock:
    """The node's one-snapshot-at-a-time lock under `state_dir`."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LOCK_NAME

    @contextlib.contextmanager
    def acquire(self, wait_s: float | None = None, hint: str = "") -> Iterator[Lease]:
        """Hold the lock for the block; Busy (its message ending in `hint`) if taken.

        `wait_s` None or 0: refuse at once; else wait up to that many seconds for it.
        Without state_dir, or when the lock cannot be used, the block runs unguarded.
        """
        if wait_s is not None and not 0 <= wait_s <= MAX_WAIT_S:
            raise ValueError(f"wait {wait_s!r}: must be from 0 to {MAX_WAIT_S:g} seconds")
        if not self.state_dir.is_dir():
            yield Lease(None)
            return
        try:
            fd = open_private(self.path)  # for writing: only its writers may lock it
        except OSError as exc:
            yield Lease(
                None,
                f"no snapshot lock: cannot use {exc.filename or self.path} ({exc.strerror}); "
                "a concurrent snapshot on this node is not detected",
            )
            return
        try:
            self._lock(fd, wait_s, hint)
            with contextlib.suppress(OSError):  # for whoever is turned away
                os.ftruncate(fd, 0)
                os.pwrite(fd, _holder_text(), 0)
            try:
                yield Lease(self.path)
            finally:
                with contextlib.suppress(OSError):  # gone with us: never a stale holder
                    os.ftruncate(fd, 0)
        finally:
            os.close(fd)

    def holder(self) -> Holder | None:
        """Who holds the lock now, or None when nobody does (or it cannot be looked at)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _read_holder(fd)
            except OSError:
                return None
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def _lock(self, fd: int, wait_s: float | None, hint: str) -> None:
        """Take the lock on `fd`, polling (so signals still stop a wait) until the deadline."""
        deadline = time.monotonic() + max(wait_s or 0.0, PROBE_GRACE_S)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_holder(fd)
                    waited = f"; still running after {wait_s:g} s of waiting" if wait_s else ""
                    raise Busy(
                        f"another snapshot is in progress on this node ({holder.describe()})"
                        f"{waited}{hint}",
                        holder=holder,
                    ) from None
                time.sleep(POLL_S)


def open_private(path: Path, make_dir: bool = False) -> int:
    """Open `path` read-write, creating it 0600 (with `make_dir`, its directory 0700) if missing.

    Never through a symlink; the mode is set exactly, whatever the umask took off or left
    on. Root gives the file to the directory's owner: an SRE's `sudo snapshot-agent run`
    must not leave a file in the service's state_dir that its user cannot open. Raises
    OSError.
    """
    if make_dir:
        with contextlib.suppress(FileExistsError):
            path.parent.mkdir(DIR_MODE, parents=True)
            os.chmod(path.parent, DIR_MODE)  # the one we made: exactly, whatever the umask
    fd = os.open(path, _OPEN_FLAGS, FILE_MODE)
    try:
        st, euid = os.fstat(fd), os.geteuid()
        if st.st_mode & 0o777 != FILE_MODE and euid in (0, st.st_uid):
            os.fchmod(fd, FILE_MODE)
        owner = os.stat(path.parent)
        if euid == 0 and (st.st_uid, st.st_gid) != (owner.st_uid, owner.st_gid):
            os.fchown(fd, owner.st_uid, owner.st_gid)
    except OSError:
        os.close(fd)
        raise
    return fd


def _holder_text() -> bytes:
    started = utc_iso(datetime.now(UTC))
    return json.dumps({"pid": os.getpid(), "started_at": started}).encode() + b"\n"


def _read_holder(fd: int) -> Holder:
    try:
        return Holder.parse(os.pread(fd, MAX_HOLDER_BYTES, 0))
    except OSError:
        return Holder(None, None)
