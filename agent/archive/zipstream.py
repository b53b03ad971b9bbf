"""A ZIP archive as an iterator of bytes, pulled member by member, never seeking back.

Every member is a raw deflate stream followed by a ZIP64 data descriptor, so nothing
needs to know a size or CRC before the data has gone by, and the archive can be written
to a pipe, an upload, or be the chunks of a member of another archive.

The deflate stream is cut into independent blocks of BLOCK input bytes (pigz's layout):
each block is compressed alone, primed with the 32 KiB of input before it, and ends on
a byte boundary (a sync flush), so blocks can be compressed on several threads and
joined in order; an empty final block ends the stream. A member whose first block does
not shrink is written as stored deflate blocks: memcpy speed, 5 bytes per 64 KiB, and
still self-delimiting for streaming extractors (method 0 with a data descriptor is not,
so verify refuses it). The bytes depend only on the content, the level and BLOCK: not on
how the content was chunked, nor on the number of threads.
"""

from __future__ import annotations

import hashlib
import stat
import struct
import time
import zipfile
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

#: Input bytes per deflate block: the unit of work of one thread.
BLOCK = 1024 * 1024
#: The deflate window: each block is primed with this much of the input before it.
WINDOW = 32 * 1024
#: A member whose first block saves less than this fraction is stored.
MIN_SAVING = 0.03
# Past zipfile.ZIP64_LIMIT (2 GiB - 1) a directory field moves to the ZIP64 extra field,
# and past zipfile.ZIP_FILECOUNT_LIMIT members the ZIP64 end record is written: zipfile's
# limits, read from it as the directory is written (tests lower them to exercise ZIP64).
_MAX_COUNT = 0xFFFF
_SATURATED = 0xFFFF_FFFF
#: Version 4.5 (ZIP64), made on Unix (so unzip reads the mode from external_attr).
_VERSION = 45
_MADE_BY = (3 << 8) | _VERSION
_DEFLATED = 8
_DESCRIPTOR_FLAG = 0x08
_UTF8_FLAG = 0x800
_ZIP64_TAG = 0x0001

# APPNOTE 4.3 records, as laid out by zipfile with force_zip64 (what verify checks).
_LOCAL = struct.Struct("<4s5H3I2H")  # version, flags, method, time, date, crc, sizes, lengths
_LOCAL_ZIP64 = struct.Struct("<2H2Q")  # tag, length, size, compressed size (0: see descriptor)
_DESCRIPTOR = struct.Struct("<4sI2Q")  # crc, compressed size, size
_CENTRAL = struct.Struct("<4s6H3I5H2I")  # ... lengths, disk, attributes, offset
_END64 = struct.Struct("<4sQ2H2I4Q")  # record size, versions, disks, entries, size, offset
_LOCATOR = struct.Struct("<4sIQI")  # disk of the ZIP64 end record, its offset, disks
_END = struct.Struct("<4s4H2IH")  # disks, entries (here, total), size, offset, comment

#: The deflate block that ends a stream: final, fixed Huffman codes, only end-of-block.
_FINAL_BLOCK = b"\x03\x00"
#: The most a stored deflate block holds.
_STORED_MAX = 0xFFFF
_STORED_HEADER = struct.Struct("<BHH")  # not final, type 00 (byte-aligned), LEN, NLEN
#: The range of a DOS timestamp: 1980-01-01 to 2107-12-31 23:59:58 (UTC here).
_DOS_FIRST = 315532800
_DOS_LAST = 4354819198
#: Directory bytes gathered before they are handed out.
_PIECE = 256 * 1024


@dataclass(frozen=True)
class Entry:
    """One member to write: its path in the archive and its content, chunk by chunk.

    `mtime` (seconds since the epoch; None: now) and `mode` (permission bits) are what
    an extractor restores. `level` overrides the archive's deflate level for this member
    (0: store it, e.g. an inner ZIP whose members are compressed already).
    """

    path: str
    chunks: Iterable[bytes]
    mtime: float | None = None
    mode: int = 0o644
    level: int | None = None


@dataclass(frozen=True)
class Member:
    """One archive member as the manifest records it."""

    path: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form."""
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class _Central:
    """What the central directory needs of one written member."""

    name: bytes
    flags: int
    dos_time: int
    dos_date: int
    crc: int
    compressed: int
    size: int
    offset: int
    external: int


class _Tally:
    """CRC-32, size and sha256 of a member's content, block by block in order."""

    def __init__(self) -> None:
        self.crc = 0
        self.size = 0
        self.digest = hashlib.sha256()

    def add(self, block: bytes) -> bytes:
        """Count `block`; return it."""
        self.crc = zlib.crc32(block, self.crc)
        self.size += len(block)
        self.digest.update(block)
        return block


class ZipStream:
    """A ZIP archive produced as bytes: each member's, then the central directory's.

    Pull `entry(e)` to its end for each member in turn (its Member is then in
    `members`), then `finish()`. `size` and `sha256` cover every byte yielded so far.
    `level` 0 stores everything; `threads` > 1 compresses blocks in parallel.
    """

    def __init__(self, level: int = 6, threads: int = 1) -> None:
        _check_level(level)
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        self.level = level
        self.threads = threads
        self.members: list[Member] = []
        self.size = 0
        self._digest = hashlib.sha256()
        self._directory: list[_Central] = []
        self._pool: ThreadPoolExecutor | None = None
        #: Why no member can be added now: one is being written, one was left unfinished
        #: (its bytes are out, so the archive is broken), or the directory is written.
        self._closed_because: str | None = None

    @property
    def sha256(self) -> str:
        """The sha256 of every byte yielded so far (the whole archive once finished)."""
        return self._digest.hexdigest()

    def archive(self, entries: Iterable[Entry]) -> Iterator[bytes]:
        """The whole archive of `entries`: every member, then the central directory."""
        try:
            for entry in entries:
                yield from self.entry(entry)
            yield from self.finish()
        finally:
            self.close()

    def entry(self, entry: Entry) -> Iterator[bytes]:
        """The archive bytes of one member; its Member is in `members` once exhausted."""
        self._refuse_if_closed()
        self._closed_because = "a ZipStream writes one member at a time, each to its end"
        done = False
        try:
            name, flags = _encoded(entry.path)
            dos_time, dos_date = _dos_stamp(entry.mtime)
            offset = self.size
            header = _LOCAL.pack(
                b"PK\x03\x04",
                _VERSION,
                flags,
                _DEFLATED,
                dos_time,
                dos_date,
                0,
                _SATURATED,
                _SATURATED,
                len(name),
                _LOCAL_ZIP64.size,
            )
            yield self._out(header + name + _LOCAL_ZIP64.pack(_ZIP64_TAG, 16, 0, 0))
            tally = _Tally()
            compressed = 0
            level = self.level if entry.level is None else _check_level(entry.level)
            for piece in self._deflate_stream(_blocks(entry.chunks), tally, level):
                compressed += len(piece)
                yield self._out(piece)
            yield self._out(_DESCRIPTOR.pack(b"PK\x07\x08", tally.crc, compressed, tally.size))
            external = (stat.S_IFREG | (entry.mode & 0o777)) << 16
            self._directory.append(
                _Central(
                    name, flags, dos_time, dos_date, tally.crc, compressed, tally.size,
                    offset, external,
                )
            )  # fmt: skip
            self.members.append(Member(entry.path, tally.size, tally.digest.hexdigest()))
            done = True
        finally:
            self._closed_because = None if done else f"member {entry.path!r} was left unfinished"

    def finish(self) -> Iterator[bytes]:
        """The central directory and end records (ZIP64 ones when needed)."""
        self._refuse_if_closed()
        self._closed_because = "the archive is finished"
        self.close()
        start = self.size
        pieces: list[bytes] = []
        held = 0
        for central in self._directory:
            record = _central_record(central)
            pieces.append(record)
            held += len(record)
            if held >= _PIECE:
                yield self._out(b"".join(pieces))
                pieces, held = [], 0
        if pieces:
            yield self._out(b"".join(pieces))
        yield self._out(_end_records(len(self._directory), self.size - start, start))

    def close(self) -> None:
        """Stop the compressing threads, if any were started. Idempotent."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _refuse_if_closed(self) -> None:
        """Raise when the archive cannot take what comes next."""
        if self._closed_because is not None:
            raise RuntimeError(self._closed_because)

    def _out(self, data: bytes) -> bytes:
        """Count and hash bytes on their way out."""
        self.size += len(data)
        self._digest.update(data)
        return data

    def _deflate_stream(
        self, blocks: Iterator[bytes], tally: _Tally, level: int
    ) -> Iterator[bytes]:
        """A member's raw deflate stream: deflated, or stored if its first block does not shrink."""
        first = next(blocks, None)
        if first is not None:
            tally.add(first)
            packed = _deflate(first, level, b"") if level else None
            if packed is not None and len(packed) <= len(first) * (1 - MIN_SAVING):
                yield packed
                yield from self._deflated(first, blocks, tally, level)
            else:
                yield _stored(first)
                for block in blocks:
                    yield _stored(tally.add(block))
        yield _FINAL_BLOCK

    def _deflated(
        self, previous: bytes, blocks: Iterator[bytes], tally: _Tally, level: int
    ) -> Iterator[bytes]:
        """Deflate the blocks after `previous`, on `threads` threads, in order."""
        if self.threads == 1:
            for block in blocks:
                yield _deflate(tally.add(block), level, previous[-WINDOW:])
                previous = block
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="deflate")
        pending: deque[Future[bytes]] = deque()
        try:
            for block in blocks:
                window = previous[-WINDOW:]
                pending.append(self._pool.submit(_deflate, tally.add(block), level, window))
                previous = block
                # Bounded: memory is 2 x threads blocks in and out, whatever the member's size.
                if len(pending) >= 2 * self.threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _check_level(level: int) -> int:
    """`level`, if zlib has it."""
    if not 0 <= level <= 9:
        raise ValueError(f"deflate level {level} is not between 0 and 9")
    return level


def _blocks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The content cut into blocks of exactly BLOCK bytes (the last shorter), however chunked."""
    held = bytearray()
    for chunk in chunks:
        if not held and len(chunk) == BLOCK and isinstance(chunk, bytes):
            yield chunk  # the common case (file_chunks): no copy
            continue
        held += chunk
        while len(held) >= BLOCK:
            yield bytes(held[:BLOCK])
            del held[:BLOCK]
    if held:
        yield bytes(held)


def _deflate(block: bytes, level: int, window: bytes) -> bytes:
    """`block` as raw deflate primed with `window`, ending byte-aligned and not final."""
    if window:
        packer = zlib.compressobj(
            level, zlib.DEFLATED, -zlib.MAX_WBITS, zlib.DEF_MEM_LEVEL, zlib.Z_DEFAULT_STRATEGY,
            window,
        )  # fmt: skip
    else:
        packer = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(block) + packer.flush(zlib.Z_SYNC_FLUSH)


def _stored(block: bytes) -> bytes:
    """`block` as stored deflate blocks, not final (the stream is byte-aligned before each)."""
    view = memoryview(block)
    parts: list[bytes | memoryview] = []
    for at in range(0, len(block), _STORED_MAX):
        piece = view[at : at + _STORED_MAX]
        parts.append(_STORED_HEADER.pack(0, len(piece), len(piece) ^ 0xFFFF))
        parts.append(piece)
    return b"".join(parts)


def _encoded(path: str) -> tuple[bytes, int]:
    """The member name's bytes and the flags that say how to read them (UTF-8 when not ASCII)."""
    try:
        return path.encode("ascii"), _DESCRIPTOR_FLAG
    except UnicodeEncodeError:
        return path.encode("utf-8"), _DESCRIPTOR_FLAG | _UTF8_FLAG


def _dos_stamp(mtime: float | None) -> tuple[int, int]:
    """(time, date) in MS-DOS form, UTC, clamped to the years DOS dates can hold."""
    when = time.time() if mtime is None else mtime
    t = time.gmtime(int(min(max(when, _DOS_FIRST), _DOS_LAST)))
    dos_time = (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2)
    dos_date = ((t.tm_year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday
    return dos_time, dos_date


def _central_record(c: _Central) -> bytes:
    """One central directory entry; sizes and offset past 2 GiB in its ZIP64 field."""
    limit = zipfile.ZIP64_LIMIT
    wide = [v for v in (c.size, c.compressed, c.offset) if v > limit]
    extra = struct.pack(f"<2H{len(wide)}Q", _ZIP64_TAG, 8 * len(wide), *wide) if wide else b""
    size, compressed, offset = (
        _SATURATED if v > limit else v for v in (c.size, c.compressed, c.offset)
    )
    header = _CENTRAL.pack(
        b"PK\x01\x02", _MADE_BY, _VERSION, c.flags, _DEFLATED, c.dos_time, c.dos_date,
        c.crc, compressed, size, len(c.name), len(extra), 0, 0, 0, c.external, offset,
    )  # fmt: skip
    return header + c.name + extra


def _end_records(count: int, size: int, offset: int) -> bytes:
    """The end of central directory record, after ZIP64's end record and locator if needed."""
    end = _END.pack(
        b"PK\x05\x06", 0, 0, min(count, _MAX_COUNT), min(count, _MAX_COUNT),
        min(size, _SATURATED), min(offset, _SATURATED), 0,
    )  # fmt: skip
    limit = zipfile.ZIP64_LIMIT
    if count <= zipfile.ZIP_FILECOUNT_LIMIT and size <= limit and offset <= limit:
        return end
    end64 = _END64.pack(
        b"PK\x06\x06", _END64.size - 12, _MADE_BY, _VERSION, 0, 0, count, count, size, offset
    )
    locator = _LOCATOR.pack(b"PK\x06\x07", 0, offset + size, 1)
    return end64 + locator + end
