"""Full mode's second pass: segments found by the walk, reopened one by one.

The walk writes each segment's path and lstat to a spool (`pack_scan`); the second pass
reads them back (`unpack_scan`) and opens each directory on the way from the data
directory's descriptor one part at a time with O_NOFOLLOW, so a directory swapped for a
symlink since the walk is refused. The last directory stays open for the next segment
(segments of one partition come together).
"""

from __future__ import annotations

import errno
import json
import os

from snapshot_agent.bundle.skips import UNREADABLE_PREFIX, VANISHED_REASON
from snapshot_agent.bundle.walk import DIR_FLAGS

#: The lstat fields kept, in os.stat_result's order of its first ten.
_FIELDS = ("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_size")


def pack_scan(rel: bytes, st: os.stat_result) -> bytes:
    """One spool line: the path (hex) and the lstat the walk saw."""
    values = [getattr(st, f) for f in _FIELDS]
    return (json.dumps([rel.hex(), *values, st.st_mtime], separators=(",", ":")) + "\n").encode()


def unpack_scan(line: bytes) -> tuple[bytes, os.stat_result]:
    """The path and lstat of one spool line."""
    rel_hex, *values, mtime = json.loads(line)
    return bytes.fromhex(rel_hex), os.stat_result((*values, 0, mtime, 0))


class SegmentDirs:
    """Directories under the data directory, opened without following symlinks."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self._rel: bytes | None = None
        self._fd: int | None = None

    def open(self, rel: bytes) -> tuple[int | None, str]:
        """The descriptor of directory `rel` (b'' for the root), or None and why not."""
        if rel == self._rel and self._fd is not None:
            return self._fd, ""
        self.close()
        fd = os.dup(self.root_fd)
        try:
            for part in (p for p in rel.split(b"/") if p):
                inner = os.open(part, DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = inner
        except OSError as exc:
            os.close(fd)
            return None, _problem(exc)
        self._rel, self._fd = rel, fd
        return fd, ""

    def close(self) -> None:
        """Close the directory held open."""
        if self._fd is not None:
            os.close(self._fd)
        self._rel, self._fd = None, None


def _problem(exc: OSError) -> str:
    """Why a segment's directory could not be opened."""
    if isinstance(exc, FileNotFoundError):
        return VANISHED_REASON
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return "a directory on its path was replaced by a symlink during the walk; not followed"
    return f"{UNREADABLE_PREFIX}{exc.strerror or exc}"
