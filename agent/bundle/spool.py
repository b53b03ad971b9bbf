"""A compressed scratch file for rows written now and read back once, in order.

The listing of a tree of millions of files, and the segments put off to the second
pass, are too many to hold in memory: their rows go through zlib into an unnamed
temporary file (removed by the kernel when closed, even after a crash) and are read
back in chunks. Disk use is about a tenth of the rows' size.
"""

from __future__ import annotations

import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

CHUNK = 256 * 1024
LEVEL = 1  # fast: rows of paths and numbers shrink well enough


class Spool:
    """Rows appended, then read back once (as chunks or lines)."""

    def __init__(self, directory: Path | None = None) -> None:
        self._file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 (closed by close())
        self._zip = zlib.compressobj(LEVEL)
        self.raw_bytes = 0
        self.rows = 0

    def write(self, row: bytes) -> None:
        """Append one row (its own line ending included)."""
        self.raw_bytes += len(row)
        self.rows += 1
        if packed := self._zip.compress(row):
            self._file.write(packed)

    def chunks(self) -> Iterator[bytes]:
        """Everything written, decompressed in bounded chunks; the spool is spent after."""
        self._file.write(self._zip.flush())
        self._file.seek(0)
        unzip = zlib.decompressobj()
        while packed := self._file.read(CHUNK):
            data = unzip.decompress(packed, CHUNK)
            while data:
                yield data
                data = unzip.decompress(unzip.unconsumed_tail, CHUNK)
        if rest := unzip.flush():
            yield rest

    def lines(self) -> Iterator[bytes]:
        """Everything written, row by row."""
        pending = b""
        for chunk in self.chunks():
            pending += chunk
            *rows, pending = pending.split(b"\n")
            for row in rows:
                yield row + b"\n"
        if pending:
            yield pending

    def close(self) -> None:
        """Remove the file."""
        self._file.close()
