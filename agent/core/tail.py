"""Tails: the last N bytes of a stream or of a file (the tail is where errors are)."""

from __future__ import annotations

import mmap
import os
import re
import stat
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

#: A tail is kept in blocks of about 1/BLOCKS_PER_CAP of its cap: the partly used blocks
#: at the ends of each stream then cost about 2 % of the cap.
BLOCKS_PER_CAP = 256
MIN_BLOCK = mmap.PAGESIZE
MAX_BLOCK = 4 * 1024 * 1024

_NON_SPACE = re.compile(rb"\S")  # ASCII whitespace, as bytes.strip() sees it
_LAST_NON_SPACE = re.compile(rb"\S\s*\Z")  # searched up to an endpos: the last one

#: Something a tail's bytes are held in: a block (an mmap), or one bytes object.
Buffer = mmap.mmap | bytes
#: A search of buf[a:b] for one kind of byte: its index in buf, or -1.
Search = Callable[[Buffer, int, int], int]


def block_size(cap: int) -> int:
    """Bytes in one block of a tail with this cap: whole pages, about 1/256 of the cap."""
    size = max(MIN_BLOCK, min(MAX_BLOCK, cap // BLOCKS_PER_CAP))
    return -(-size // mmap.PAGESIZE) * mmap.PAGESIZE


class _BlockPool:
    """Fixed-size blocks of anonymous memory, reused: a flood cycles through the same few.

    Blocks are mappings of their own, not heap memory, so a block that is let go goes
    back to the kernel at once (malloc may keep freed heap memory resident).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._spare: list[mmap.mmap] = []

    def take(self) -> mmap.mmap:
        """A block to write into: a spare one, else a new one."""
        if self._spare:
            return self._spare.pop()
        return mmap.mmap(-1, self.size, flags=mmap.MAP_PRIVATE)

    def give(self, block: mmap.mmap) -> None:
        """A block no longer used, kept for the next take()."""
        self._spare.append(block)

    def release(self) -> None:
        """Unmap the spare blocks (when nothing more will be written)."""
        self._spare.clear()


class SharedCap:
    """One budget of `cap` bytes for the tails of several streams (a command's stdout and
    stderr): together they never keep more than `cap` bytes, nor hold more memory.

    Each stream may keep its share (the cap split evenly, the last ones taking the odd
    bytes); what a stream does not use goes to the others. That is split_cap's rule, so
    the tails kept are exactly what a file of `cap` bytes with both streams keeps.
    """

    def __init__(self, cap: int) -> None:
        if cap <= 0:
            raise ValueError("cap must be positive")
        self.cap = cap
        self.pool = _BlockPool(block_size(cap))
        # Weak: a tail holds its share, and a cycle would keep the blocks of a dropped
        # tail mapped until the garbage collector happens to run.
        self._tails: list[weakref.ReferenceType[TailBuffer]] = []

    def tail(self) -> TailBuffer:
        """A new stream sharing this budget."""
        return TailBuffer(self.cap, share=self)

    def join(self, tail: TailBuffer) -> None:
        """Count `tail` in this budget (TailBuffer does it when made)."""
        self._tails.append(weakref.ref(tail))

    @property
    def tails(self) -> list[TailBuffer]:
        """The streams sharing the budget, in the order they were made."""
        return [tail for ref in self._tails if (tail := ref()) is not None]

    def release(self) -> None:
        """Give spare blocks back to the kernel: call when the streams have ended."""
        self.pool.release()

    def shares(self, count: int) -> list[int]:
        """The cap split evenly among `count` tails, the last ones taking the odd bytes."""
        base, odd = divmod(self.cap, count)
        return [base + (i >= count - odd) for i in range(count)]

    def make_room(self, tail: TailBuffer, incoming: int) -> int:
        """Drop the oldest bytes over the cap before `incoming` bytes are added to `tail`.

        Dropping comes first so that memory never holds more than the cap. Returns how
        many of the incoming bytes (its head) are dropped before they are even kept.
        """
        tails = self.tails
        excess = sum(t.kept for t in tails) + incoming - self.cap
        skip = 0
        for other, share in zip(tails, self.shares(len(tails)), strict=True):
            if excess <= 0:
                break
            held = other.kept + (incoming if other is tail else 0)
            cut = min(excess, held - share)  # never below its share
            if cut <= 0:
                continue
            excess -= cut
            old = min(cut, other.kept)
            other.forget(old)
            if other is tail:
                skip = cut - old
        return skip


class TailBuffer:
    """The last bytes of a stream, held in fixed-size blocks that never outgrow the cap.

    Alone (`TailBuffer(cap)`) it keeps the last `cap` bytes; made by SharedCap.tail(), it
    keeps what the budget common to several streams gives it. Bytes beyond that are
    dropped from the head before new ones are stored, so a command printing gigabytes
    costs the cap (plus at most four blocks: 2 % of a cap of 1 MiB or more), not a
    multiple of it.
    """

    def __init__(self, cap: int, *, share: SharedCap | None = None) -> None:
        self._share = share if share is not None else SharedCap(cap)
        self._share.join(self)
        self.cap = self._share.cap
        self.total = 0
        self.kept = 0
        self._blocks: deque[mmap.mmap] = deque()
        self._head = 0  # offset of the oldest kept byte in the first block
        self._fill = 0  # bytes used in the last block
        self._joined: bytes | None = None  # set by contiguous(): the blocks are gone

    @property
    def dropped(self) -> int:
        """Bytes seen but no longer kept."""
        return self.total - self.kept

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        """Append a chunk; the oldest bytes beyond the cap (or the share) are dropped."""
        if self._joined is not None:
            raise RuntimeError("a tail made contiguous takes no more writes")
        view = memoryview(chunk).cast("B")
        self.total += len(view)
        skip = self._share.make_room(self, len(view))
        self._append(view[skip:])

    def _append(self, view: memoryview) -> None:
        """Copy `view` after the kept bytes (room was made for it)."""
        pool = self._share.pool
        while view:
            if not self._blocks or self._fill == pool.size:
                self._blocks.append(pool.take())
                self._fill = 0
            n = min(pool.size - self._fill, len(view))
            self._blocks[-1][self._fill : self._fill + n] = view[:n]
            self._fill += n
            self.kept += n
            view = view[n:]

    def forget(self, n: int) -> None:
        """Drop the `n` oldest kept bytes; blocks emptied go back to the pool."""
        if n <= 0:
            return
        if self._joined is not None:
            raise RuntimeError("a tail made contiguous takes no more writes")
        self.kept -= n
        self._head += n
        pool = self._share.pool
        if not self.kept:
            while self._blocks:
                pool.give(self._blocks.popleft())
            self._head = self._fill = 0
            return
        while self._head >= pool.size:  # kept > 0, so the first block is not the last
            pool.give(self._blocks.popleft())
            self._head -= pool.size

    def pieces(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[Buffer, int, int]]:
        """(buffer, from, to) pieces holding kept bytes [start, stop), in order."""
        stop = self.kept if stop is None else min(stop, self.kept)
        start = max(0, start)
        if self._joined is not None:
            if start < stop:
                yield self._joined, start, stop
            return
        size = self._share.pool.size
        at, end = self._head + start, self._head + stop
        while at < end:
            index, offset = divmod(at, size)
            n = min(size - offset, end - at)
            yield self._blocks[index], offset, offset + n
            at += n

    def views(self, last: int | None = None) -> list[memoryview]:
        """The kept tail (or its `last` bytes) as pieces in order, without copying it.

        Valid until the next write (blocks are reused): take them when the stream ended.
        """
        start = 0 if last is None else self.kept - last
        return [memoryview(buf)[a:b] for buf, a, b in self.pieces(start)]

    def getvalue(self) -> bytes:
        """The kept tail (at most the cap), as one new bytes object."""
        return self.slice(0, self.kept)

    def slice(self, start: int, stop: int) -> bytes:
        """A copy of kept bytes [start, stop)."""
        return b"".join(memoryview(buf)[a:b] for buf, a, b in self.pieces(start, stop))

    def contiguous(self) -> bytes:
        """The kept tail as one bytes object, which replaces the blocks (no more writes).

        For a caller that needs it in one piece (to decode it): the blocks are unmapped
        once copied, so the tail is held twice only while the copy is made.
        """
        if self._joined is None:
            self._joined = self.getvalue()
            self._blocks.clear()
            self._head = self._fill = 0
        return self._joined

    def _find(self, search: Search, start: int = 0, stop: int | None = None) -> int:
        """Where `search` first finds its byte in kept bytes [start, stop), or -1."""
        at = max(0, start)
        for buf, a, b in self.pieces(start, stop):
            found = search(buf, a, b)
            if found >= 0:
                return at + found - a
            at += b - a
        return -1

    def _rfind(self, search: Search, stop: int | None = None) -> int:
        """Where `search` (one that finds the last byte of a kind) last finds it before
        `stop`, or -1: piece by piece from the end, so what is near the end is found
        without a scan of the rest."""
        stop = self.kept if stop is None else min(stop, self.kept)
        at = stop
        for buf, a, b in reversed(list(self.pieces(0, stop))):
            at -= b - a
            found = search(buf, a, b)
            if found >= 0:
                return at + found - a
        return -1

    def first_line(self, max_bytes: int | None = None) -> bytes:
        """The first line that is not blank, from its first non-space byte: at most
        `max_bytes` of it (b"" if none), a bounded copy whatever the tail holds."""
        start = self._find(_first_non_space)
        if start < 0:
            return b""
        stop = self._find(_first_line_end, start)
        stop = self.kept if stop < 0 else stop
        return self.slice(start, stop if max_bytes is None else min(stop, start + max_bytes))

    def last_line(self, max_bytes: int | None = None) -> bytes:
        """The last line that is not blank, from its first non-space byte: at most
        `max_bytes` of it (b"" if none), a bounded copy whatever the tail holds."""
        stop = self._rfind(_last_non_space) + 1
        if not stop:
            return b""
        start = self._find(_first_non_space, self._rfind(_last_line_end, stop) + 1, stop)
        return self.slice(start, stop if max_bytes is None else min(stop, start + max_bytes))

    def __reduce__(self) -> tuple[Callable[[int, int, bytes], TailBuffer], tuple[int, int, bytes]]:
        """Pickled as its cap, total and kept bytes: blocks are this process's mappings."""
        return _unpickle, (self.cap, self.total, self.getvalue())


def _unpickle(cap: int, total: int, kept: bytes) -> TailBuffer:
    """A tail holding `kept` of `total` bytes, in one piece (it takes no more writes)."""
    tail = TailBuffer(cap)
    tail.total, tail.kept, tail._joined = total, len(kept), kept
    return tail


# Searches of one piece, buf[a:b]: the absolute index of what they look for, or -1.
def _first_non_space(buf: Buffer, a: int, b: int) -> int:
    match = _NON_SPACE.search(buf, a, b)
    return match.start() if match else -1


def _last_non_space(buf: Buffer, a: int, b: int) -> int:
    match = _LAST_NON_SPACE.search(buf, a, b)
    return match.start() if match else -1


def _first_line_end(buf: Buffer, a: int, b: int) -> int:
    found = [i for i in (buf.find(b"\n", a, b), buf.find(b"\r", a, b)) if i >= 0]
    return min(found, default=-1)


def _last_line_end(buf: Buffer, a: int, b: int) -> int:
    return max(buf.rfind(b"\n", a, b), buf.rfind(b"\r", a, b))


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
