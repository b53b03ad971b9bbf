"""Heads of the raw evidence: the first bytes of each raw/ member, for the page's viewer.

The page inlines a head and links the whole member (relative, so the link works inside
the extracted ZIP). Heads are taken from the bytes as stored: the pipeline tees the
evidence after the filter and the leak scan, and a re-render reads them from the archive.
Memory holds at most HEAD_BYTES per member, whatever the member's size.
"""

from __future__ import annotations

import codecs
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

#: The most of one raw member kept (and inlined) as its head.
HEAD_BYTES = 16 * 1024
#: Raw members live under this folder of the archive.
RAW_PREFIX = "raw/"
#: What reading a damaged or unsupported member raises.
UNREADABLE = (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, EOFError, zlib.error)


@dataclass(frozen=True)
class RawHead:
    """The first bytes of one raw member, decoded, and the member's whole size."""

    path: str
    text: str
    size: int
    truncated: bool


def head_of(path: str, head: bytes, size: int) -> RawHead:
    """The RawHead of a member of `size` bytes that begins with `head` (cut at a line end)."""
    truncated = size > len(head)
    if truncated:
        end = head.rfind(b"\n") + 1
        head = head[:end] if end else head
    # An incomplete UTF-8 sequence at a hard cut is dropped, not shown as a replacement.
    text = codecs.getincrementaldecoder("utf-8")("replace").decode(head, final=not truncated)
    return RawHead(path, text, size, truncated)


class RawHeads:
    """Collects the head of every member streamed through `tee`."""

    def __init__(self, limit: int = HEAD_BYTES) -> None:
        self.limit = limit
        self._heads: dict[str, RawHead] = {}

    def tee(self, path: str, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """The chunks unchanged; the first `limit` bytes and the size are kept on the way."""
        head, size = bytearray(), 0
        try:
            for chunk in chunks:
                size += len(chunk)
                if len(head) < self.limit:
                    head += chunk[: self.limit - len(head)]
                yield chunk
        finally:
            self._heads[path] = head_of(path, bytes(head), size)

    def heads(self) -> dict[str, RawHead]:
        """Member path -> its head, for every member teed so far."""
        return dict(self._heads)


def heads_from_zip(zf: zipfile.ZipFile, limit: int = HEAD_BYTES) -> dict[str, RawHead]:
    """The head of every raw/ member of an archive, each read only as far as `limit`."""
    heads = {}
    for info in zf.infolist():
        if not info.filename.startswith(RAW_PREFIX) or info.is_dir():
            continue
        try:
            with zf.open(info) as member:
                head = member.read(limit)
        except UNREADABLE:
            continue  # an unreadable member has no head; its link still says where it is
        heads[info.filename] = head_of(info.filename, head, info.file_size)
    return heads
