"""Writing the snapshot ZIP as a stream, hashing every member on the way through.

The writer takes entries (a member path and its bytes as an iterable of chunks) from
member sources in order and writes them to a binary sink that need not be seekable
(ZIP64 with data descriptors), so neither memory nor local disk ever holds the whole
archive. It records the size and sha256 of each member for the manifest, and of the
archive itself for the record.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

CHUNK = 1024 * 1024
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
#: The only ZIP extra field the writer produces: zipfile's ZIP64 field (force_zip64 puts
#: it in every local header; the directory has it for sizes and offsets past 2 GiB).
ZIP64_EXTRA_FIELD = 0x0001


@dataclass(frozen=True)
class Entry:
    """One member to write: its path in the archive and its content, chunk by chunk."""

    path: str
    chunks: Iterable[bytes]


@dataclass(frozen=True)
class Member:
    """One archive member as the manifest records it."""

    path: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form."""
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


def file_chunks(path: Path, chunk: int = CHUNK) -> Iterator[bytes]:
    """A file's content in chunks (opened when iteration starts, closed at its end)."""
    with path.open("rb") as fh:
        while data := fh.read(chunk):
            yield data


def json_bytes(value: Any) -> bytes:
    """A small JSON document (reports, manifests) as the archive stores it."""
    return json.dumps(value, indent=2, ensure_ascii=False).encode()


class _Counted:
    """The sink as zipfile sees it: write-only, counting and hashing every byte."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.size = 0
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._raw.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self._raw.flush()


class ArchiveWriter:
    """A streaming ZIP writer that records size and sha256 of every member."""

    def __init__(self, sink: IO[bytes]) -> None:
        self._out = _Counted(sink)
        self._zip = zipfile.ZipFile(
            self._out,  # type: ignore[arg-type]  # write-only on purpose: never seeks
            "w",
            compression=zipfile.ZIP_DEFLATED,
            compresslevel=6,
        )
        self.members: list[Member] = []

    def add(self, entry: Entry) -> Member:
        """Stream one entry into the archive and record it."""
        info = zipfile.ZipInfo(entry.path, date_time=_now_tuple())
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        digest, size = hashlib.sha256(), 0
        with self._zip.open(info, "w", force_zip64=True) as raw:
            for chunk in entry.chunks:
                raw.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        member = Member(entry.path, size, digest.hexdigest())
        self.members.append(member)
        return member

    def add_all(self, entries: Iterable[Entry]) -> None:
        """Stream every entry of a member source."""
        for entry in entries:
            self.add(entry)

    def close(self) -> tuple[int, str]:
        """Write the central directory; (archive size, archive sha256)."""
        self._zip.close()
        self._out.flush()
        return self._out.size, self._out.sha256.hexdigest()

    def abandon(self) -> None:
        """Stop after a failure; the sink's owner deletes what was written. Never raises."""
        with contextlib.suppress(Exception):
            self._zip.close()


def _now_tuple() -> tuple[int, int, int, int, int, int]:
    t = time.gmtime()
    return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)
