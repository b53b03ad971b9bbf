"""Writing the snapshot ZIP as a stream, hashing every member on the way through.

The archive is written member by member to a binary sink; nothing needs the whole
archive in memory. Locally the sink is `<name>.zip.partial`, renamed into place only
when complete, and removed on any failure, so a reader never sees half an archive.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

CHUNK = 1024 * 1024
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Member:
    """One archive member as the manifest records it."""

    path: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form."""
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


class ArchiveWriter:
    """A streaming ZIP writer that records size and sha256 of every member."""

    def __init__(self, sink: IO[bytes]) -> None:
        self._zip = zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6)
        self.members: list[Member] = []

    @contextlib.contextmanager
    def open(self, arcname: str) -> Iterator[_HashingWriter]:
        """Open a member for streaming writes; it is recorded when the block ends."""
        info = zipfile.ZipInfo(arcname, date_time=_now_tuple())
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        with self._zip.open(info, "w", force_zip64=True) as raw:
            writer = _HashingWriter(raw)
            yield writer
        self.members.append(Member(arcname, writer.size, writer.sha256.hexdigest()))

    def add_bytes(self, arcname: str, data: bytes) -> None:
        """Add a small member from memory."""
        with self.open(arcname) as out:
            out.write(data)

    def add_file(self, arcname: str, source: Path) -> None:
        """Stream a file from disk into the archive."""
        with source.open("rb") as src, self.open(arcname) as out:
            while chunk := src.read(CHUNK):
                out.write(chunk)

    def add_json(self, arcname: str, value: Any) -> None:
        """Add a JSON document (small: reports and manifests)."""
        self.add_bytes(arcname, json.dumps(value, indent=2, ensure_ascii=False).encode())

    def close(self) -> None:
        """Write the central directory."""
        self._zip.close()

    def abandon(self) -> None:
        """Stop after a failure; the sink's owner deletes what was written. Never raises."""
        with contextlib.suppress(Exception):
            self._zip.close()


class _HashingWriter:
    """Write-through wrapper that counts and hashes what passes."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.size = 0
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._raw.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)


class LocalArchive:
    """The archive file in a directory: `.partial` while written, renamed when done."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self.final = directory / f"{name}.zip"
        self.partial = directory / f"{name}.zip.partial"
        self.sink: IO[bytes] | None = None

    def create(self) -> IO[bytes]:
        """Create the partial file (this is also the proof that the directory is writable)."""
        self.sink = open(self.partial, "xb")  # noqa: SIM115 - closed in commit()/abort()
        return self.sink

    def commit(self) -> Path:
        """Flush to disk and move into place atomically."""
        assert self.sink is not None
        self.sink.flush()
        os.fsync(self.sink.fileno())
        self.sink.close()
        self.sink = None
        os.replace(self.partial, self.final)
        with contextlib.suppress(OSError):  # make the rename itself durable
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return self.final

    def abort(self) -> None:
        """Remove the partial file; never raises."""
        if self.sink is not None:
            with contextlib.suppress(OSError):
                self.sink.close()
            self.sink = None
        with contextlib.suppress(OSError):
            self.partial.unlink()


def _now_tuple() -> tuple[int, int, int, int, int, int]:
    t = time.gmtime()
    return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)
