"""Writing the snapshot ZIP to a sink as a stream, hashing every member on the way through.

The writer takes entries (a member path and its bytes as an iterable of chunks) from
member sources in order and writes the bytes of a `ZipStream` (ZIP64 with data
descriptors, never seeking) to a binary sink, so neither memory nor local disk ever
holds the whole archive. It records the size and sha256 of each member for the
manifest, and of the archive itself for the record.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from snapshot_agent.archive.zipstream import Entry, Member, ZipStream

__all__ = [
    "CHUNK",
    "IGGY_DATA",
    "MANIFEST",
    "MANIFEST_SIG",
    "MAX_DEFAULT_THREADS",
    "RAW_DIR",
    "REPORT_HTML",
    "REPORT_JSON",
    "TOP_LEVEL_MEMBERS",
    "ZIP64_EXTRA_FIELD",
    "ArchiveWriter",
    "Entry",
    "Member",
    "ZipStream",
    "compress_threads",
    "file_chunks",
    "json_bytes",
]

CHUNK = 1024 * 1024
#: Threads that compress when the config leaves it open (archive.threads: null).
MAX_DEFAULT_THREADS = 4
MANIFEST = "manifest.json"
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
IGGY_DATA = "iggy-data.zip"
MANIFEST_SIG = "manifest.sig"  # the node key's signature of manifest.json
#: Raw evidence lives under raw/<check id>/<relative path> (a check id as core/check.py's
#: ID_PATTERN matches it): the only place evidence may be.
RAW_DIR = "raw"
#: Every member the agent writes outside raw/.
TOP_LEVEL_MEMBERS = frozenset({REPORT_JSON, REPORT_HTML, MANIFEST, MANIFEST_SIG, IGGY_DATA})
#: The only ZIP extra field the writer produces: ZIP64's (in every local header; the
#: directory has it for sizes and offsets past 2 GiB).
ZIP64_EXTRA_FIELD = 0x0001


def file_chunks(path: Path, chunk: int = CHUNK) -> Iterator[bytes]:
    """A file's content in chunks (opened when iteration starts, closed at its end)."""
    with path.open("rb") as fh:
        while data := fh.read(chunk):
            yield data


def compress_threads(configured: int | None) -> int:
    """Threads to compress with: as configured, else one per usable core (at most 4)."""
    if configured is not None:
        return configured
    return max(1, min(MAX_DEFAULT_THREADS, len(os.sched_getaffinity(0))))


def json_bytes(value: Any) -> bytes:
    """A small JSON document (reports, manifests) as the archive stores it."""
    return json.dumps(value, indent=2, ensure_ascii=False).encode()


class ArchiveWriter:
    """A streaming ZIP writer to a sink that records size and sha256 of every member."""

    def __init__(self, sink: IO[bytes], level: int = 6, threads: int = 1) -> None:
        self._sink = sink
        self._zip = ZipStream(level, threads)

    @property
    def members(self) -> list[Member]:
        """Every member written so far, in order."""
        return self._zip.members

    def add(self, entry: Entry) -> Member:
        """Stream one entry into the archive and record it."""
        self._write(self._zip.entry(entry))
        return self._zip.members[-1]

    def add_all(self, entries: Iterable[Entry]) -> None:
        """Stream every entry of a member source."""
        for entry in entries:
            self.add(entry)

    def close(self) -> tuple[int, str]:
        """Write the central directory; (archive size, archive sha256)."""
        self._write(self._zip.finish())
        self._sink.flush()
        return self._zip.size, self._zip.sha256

    def abandon(self) -> None:
        """Stop after a failure; the sink's owner deletes what was written. Never raises."""
        with contextlib.suppress(Exception):
            self._zip.close()

    def _write(self, pieces: Iterator[bytes]) -> None:
        """Hand every piece to the sink, in order."""
        write = self._sink.write
        for piece in pieces:
            write(piece)
