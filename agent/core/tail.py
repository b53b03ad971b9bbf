"""Tails: the last N bytes of a stream or of a file (the tail is where errors are)."""

from __future__ import annotations

import os
import stat
from pathlib import Path


class TailBuffer:
    """The last `cap` bytes of a stream, in a ring that never outgrows the cap.

    The ring grows with the stream up to `cap` bytes and is then overwritten in place,
    so a command printing gigabytes costs `cap` bytes, not a multiple of it.
    """

    def __init__(self, cap: int) -> None:
        if cap <= 0:
            raise ValueError("cap must be positive")
        self.cap = cap
        self.total = 0
        self._ring = bytearray()
        self._start = 0  # index of the oldest byte once the ring is full

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        """Append a chunk; the oldest bytes beyond the cap are overwritten."""
        view = memoryview(chunk).cast("B")
        self.total += len(view)
        if len(view) >= self.cap:
            self._replace(view[len(view) - self.cap :])
            return
        room = self.cap - len(self._ring)
        if room > 0:
            self._ring += view[:room]
            view = view[room:]
        if view:
            self._overwrite(view)

    def _replace(self, view: memoryview) -> None:
        """The whole ring becomes `view` (exactly `cap` bytes)."""
        if len(self._ring) == self.cap:
            self._ring[:] = view  # same length: in place, no second buffer
        else:
            self._ring = bytearray(view)
        self._start = 0

    def _overwrite(self, view: memoryview) -> None:
        """Write over the oldest bytes of a full ring (`view` is shorter than the cap)."""
        first = min(len(view), self.cap - self._start)
        self._ring[self._start : self._start + first] = view[:first]
        rest = len(view) - first
        if rest:
            self._ring[:rest] = view[first:]
        self._start = (self._start + len(view)) % self.cap

    @property
    def kept(self) -> int:
        """Bytes held (at most `cap`)."""
        return len(self._ring)

    @property
    def dropped(self) -> int:
        """Bytes seen but no longer kept."""
        return self.total - len(self._ring)

    def views(self) -> tuple[memoryview, memoryview]:
        """The kept tail as two pieces in order, without copying it."""
        ring = memoryview(self._ring)
        return ring[self._start :], ring[: self._start]

    def getvalue(self) -> bytes:
        """The kept tail (at most `cap` bytes), as one new bytes object."""
        return b"".join(self.views())

    def take(self) -> bytes:
        """getvalue(), then empty the buffer: the tail is held once, not twice."""
        value = self.getvalue()
        self._ring, self._start = bytearray(), 0
        return value


def truncation_note(dropped: int, kept: int) -> bytes:
    """The first line of evidence whose head was dropped, so a reader knows."""
    return (
        f"[snapshot-agent: output capped; the first {dropped} bytes were dropped, "
        f"the last {kept} bytes follow]\n"
    ).encode()


def streams_note(streams: list[tuple[str, int, int]]) -> bytes:
    """The first line of a command's saved output: per (stream, dropped, kept), what is left.

    Only streams that lost bytes are named; the numbers are those of the command's own
    stream, so the note agrees with commands.json whatever else the file holds.
    """
    cut = [(name, dropped, kept) for name, dropped, kept in streams if dropped]
    first = " and ".join(f"the first {d} bytes of {name}" for name, d, _ in cut)
    last = " and ".join(f"the last {k} bytes of {name}" for name, _, k in cut)
    return f"[snapshot-agent: output capped; {first} were dropped, {last} follow]\n".encode()


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
