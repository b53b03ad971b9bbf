"""Reading one file of a hostile tree: only if it is still the regular file that was stat'ed.

The file is opened relative to its directory's descriptor with O_NOFOLLOW (a symlink
swapped in is refused) and O_NONBLOCK (a FIFO swapped in does not block the open), then
fstat'ed: anything but the same regular file is closed unread. It is read in chunks up
to the size seen at scan time: a file that grows meanwhile (a log, the open segment) is
cut there, one that shrinks is copied as far as it goes, and either is said so.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass

from snapshot_agent.archive.writer import CHUNK
from snapshot_agent.bundle.skips import UNREADABLE_PREFIX, VANISHED_REASON
from snapshot_agent.node.iggy_data import special_kind

FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


@dataclass
class Opened:
    """An open regular file, or why it was not opened (`fd` None)."""

    fd: int | None
    problem: str = ""


def open_regular(dir_fd: int, name: bytes, scanned: os.stat_result) -> Opened:
    """Open `name` if it is still the regular file `scanned` describes."""
    try:
        fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return Opened(None, VANISHED_REASON)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return Opened(None, "replaced by a symlink during the walk; not followed")
        return Opened(None, f"{UNREADABLE_PREFIX}{exc.strerror or exc}")
    st = os.fstat(fd)
    problem = ""
    if not stat.S_ISREG(st.st_mode):
        problem = f"replaced by a {special_kind(st.st_mode)} during the walk; not read"
    elif (st.st_dev, st.st_ino) != (scanned.st_dev, scanned.st_ino):
        problem = "replaced by another file during the walk; not read"
    if problem:
        os.close(fd)
        return Opened(None, problem)
    return Opened(fd)


class FileRead:
    """The chunks of one open file, up to `limit` bytes; `copied` and `note` once read."""

    def __init__(self, fd: int, limit: int, deadline: float) -> None:
        self.fd = fd
        self.limit = limit
        self.deadline = deadline
        self.copied = 0
        self.note = ""  # grew, shrank, read error, cut at the deadline
        self.complete = False  # all `limit` bytes were read

    def chunks(self) -> Iterator[bytes]:
        """Read and yield; closes the file at the end (or when the consumer stops)."""
        try:
            yield from self._read()
            self._check_growth()
        finally:
            os.close(self.fd)

    def _read(self) -> Iterator[bytes]:
        """Chunks up to the limit, stopping at the deadline or a read error."""
        while self.copied < self.limit:
            if time.monotonic() >= self.deadline:
                self.note = f"cut at the deadline: {self.copied:,} of {self.limit:,} bytes copied"
                return
            try:
                data = os.read(self.fd, min(CHUNK, self.limit - self.copied))
            except OSError as exc:
                self.note = (
                    f"read error after {self.copied:,} bytes: {exc.strerror or exc}; "
                    "what was read is kept"
                )
                return
            if not data:
                self.note = (
                    f"shrank while read: {self.copied:,} of the {self.limit:,} bytes seen "
                    "at scan time copied"
                )
                return
            self.copied += len(data)
            yield data
        self.complete = True

    def _check_growth(self) -> None:
        """Say so when the file is now longer than what was copied."""
        if not self.complete:
            return
        try:
            size = os.fstat(self.fd).st_size
        except OSError:
            return
        if size > self.limit:
            self.note = (
                f"grew while read (now {size:,} bytes): the {self.limit:,} bytes seen at "
                "scan time copied"
            )
