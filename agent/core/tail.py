"""Tails: the last N bytes of a stream or of a file (the tail is where errors are)."""

from __future__ import annotations

import os
import stat
from pathlib import Path


class TailBuffer:
    """Accumulates bytes, remembering only the last `cap` of them and how many were seen."""

    def __init__(self, cap: int) -> None:
        if cap <= 0:
            raise ValueError("cap must be positive")
        self.cap = cap
        self.total = 0
        self._buf = bytearray()

    def write(self, chunk: bytes) -> None:
        """Append a chunk; memory stays under twice the cap."""
        self.total += len(chunk)
        if len(chunk) >= self.cap:
            self._buf = bytearray(chunk[-self.cap :])
            return
        self._buf += chunk
        if len(self._buf) > 2 * self.cap:
            del self._buf[: len(self._buf) - self.cap]

    @property
    def dropped(self) -> int:
        """Bytes seen but no longer kept."""
        return self.total - len(self.getvalue())

    def getvalue(self) -> bytes:
        """The kept tail (at most `cap` bytes)."""
        if len(self._buf) > self.cap:
            del self._buf[: len(self._buf) - self.cap]
        return bytes(self._buf)


def truncation_note(dropped: int, kept: int) -> bytes:
    """The first line of evidence whose head was dropped, so a reader knows."""
    return (
        f"[snapshot-agent: output capped; the first {dropped} bytes were dropped, "
        f"the last {kept} bytes follow]\n"
    ).encode()


def read_tail(path: Path, max_bytes: int) -> str:
    """The last `max_bytes` of a regular file as text, from its first whole line.

    Raises OSError like open(); a FIFO or device is refused (opened non-blocking, so it
    cannot hang the reader first).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError(0, "not a regular file")
        start = max(0, info.st_size - max_bytes)
        fh.seek(start)
        raw = fh.read(max_bytes)
    if start > 0:
        raw = raw.partition(b"\n")[2]  # the first line was cut by the seek
    return raw.decode("utf-8", "replace")
