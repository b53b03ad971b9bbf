"""iggy-data.zip: the Iggy data directory as an inner ZIP, produced as a stream of bytes.

`bundle_entries(...)` returns a `BundleSource`; its `chunks()` are the bytes of the inner
archive, to be the content of the outer member `iggy-data.zip`. The walk and the copy
are interleaved, so nothing but one chunk per thread is held, whatever the tree:

1. the walk (walk.py) lists every entry into listing.tsv (spooled to a compressed
   temporary file) and copies each file the policy keeps (policy.py), safely
   (read.py), until `max_bytes` of content is in; segment payloads in `full` mode are
   put off to a second spool,
2. then (full mode) those segments, reopened one by one without following a symlink on
   the way, while the cap and the deadline allow: the state, configs, logs and indexes
   the cap is most useful for are never crowded out by customer payloads,
3. then `listing.tsv` and `bundle.json` (the totals and what was skipped, by kind), and
   the central directory.

Data files are members under `data/` (their path relative to the data directory,
escaped by names.py), so no file of the tree can collide with the bundle's own members.
`skipped` (for the outer manifest) and `stats` are complete once `chunks()` is exhausted.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from snapshot_agent.archive.writer import Entry, ZipStream, json_bytes
from snapshot_agent.bundle.listing import DIRECTORY as DIR_MARK
from snapshot_agent.bundle.listing import HEADER as LISTING_HEADER
from snapshot_agent.bundle.listing import LISTING, NO, PARTIAL, YES, Owners, Row, format_row
from snapshot_agent.bundle.names import member_name
from snapshot_agent.bundle.policy import SEGMENT_REASON, WITHHELD_REASON, Action, Policy
from snapshot_agent.bundle.read import FileRead, open_regular
from snapshot_agent.bundle.segments import SegmentDirs, pack_scan, unpack_scan
from snapshot_agent.bundle.skips import (
    CHANGED,
    CUT,
    LATE,
    NOT_WALKED,
    SEGMENTS,
    SPECIAL,
    SYMLINK,
    WITHHELD,
    Skips,
    kind_for,
)
from snapshot_agent.bundle.spool import Spool
from snapshot_agent.bundle.walk import Found, TreeWalk, open_root
from snapshot_agent.node.iggy_data import DirNames

DATA = "data"  # the data directory's files are members under data/
SUMMARY = "bundle.json"
Redact = Callable[[Iterable[bytes], str], Iterable[bytes]]
LATE_REASON = "not copied: the time for the bundle ran out"


@dataclass
class BundleStats:
    """What went into the bundle."""

    files: int = 0  # data files copied (members under data/)
    bytes: int = 0  # their content as read from the node (before redaction)
    cut: bool = False  # files were left out by the iggy_max_bytes cap
    listing: str = LISTING
    listed: int = 0  # rows of the listing
    walk_complete: bool = True
    walk_reason: str = ""
    grew: int = 0  # files copied up to their size at scan time while they grew
    skipped: dict[str, int] = field(default_factory=dict)  # kind -> count


class BundleSource:
    """One iggy-data.zip; iterate `chunks()` once."""

    def __init__(
        self,
        data_dir: Path,
        node_dir: str,
        policy: Policy,
        max_bytes: int,
        redact: Redact | None,
        deadline: float,
        zip_stream: ZipStream,
        spool_dir: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.node_dir = node_dir
        self.policy = policy
        self.max_bytes = max_bytes
        self.redact = redact
        self.deadline = deadline
        self.spool_dir = spool_dir
        self.stats = BundleStats()
        self.skipped: list[tuple[str, str]] = []
        #: Called with a file's relative path after it is stat'ed, before it is opened
        #: (tests race the walk with it: delete, append, swap).
        self.after_scan: Callable[[bytes], None] | None = None
        self._zip = zip_stream
        self._skips = Skips(node_dir)
        self._owners = Owners()
        self._listing: Spool | None = None

    def chunks(self) -> Iterator[bytes]:
        """The bytes of iggy-data.zip."""
        listing = self._listing = Spool(self.spool_dir)
        pending = Spool(self.spool_dir)
        root_fd = -1
        try:
            listing.write(LISTING_HEADER)
            try:
                root_fd = open_root(self.data_dir)
            except OSError as exc:
                reason = f"the data directory cannot be opened: {exc.strerror or exc}"
                self._skip(NOT_WALKED, Row(b"", None, DIR_MARK, reason))
                self.stats.walk_complete, self.stats.walk_reason = False, reason
            else:
                try:
                    yield from self._walk(root_fd, pending)
                    yield from self._segments(root_fd, pending)
                except OSError as exc:  # the spool's disk is full: end with what is in
                    self.stats.walk_complete = False
                    self.stats.walk_reason = f"the bundle stopped early: {exc.strerror or exc}"
                    self._skips.add(NOT_WALKED, b"", self.stats.walk_reason)
            yield from self._zip.entry(Entry(LISTING, listing.chunks()))
            self.stats.skipped = dict(self._skips.counts)
            yield from self._zip.entry(Entry(SUMMARY, [json_bytes(self._summary())]))
            yield from self._zip.finish()
        finally:
            self._zip.close()
            listing.close()
            pending.close()
            if root_fd >= 0:
                os.close(root_fd)
            self.skipped = self._skips.report()

    # -- the first pass: the walk --

    def _walk(self, root_fd: int, pending: Spool) -> Iterator[bytes]:
        """Every entry listed; files the policy keeps copied; full mode's segments put off."""
        walk = TreeWalk(root_fd, self.deadline)
        for found in walk:
            st = found.st
            if st is None:
                self._skip(kind_for(found.problem), Row(found.rel, None, NO, found.problem))
            elif stat.S_ISDIR(st.st_mode):
                row = Row(found.rel, st, DIR_MARK, found.problem)
                if found.problem:
                    self._skip(NOT_WALKED, row)
                else:
                    self._list(row)
            elif stat.S_ISLNK(st.st_mode):
                self._skip(SYMLINK, Row(found.rel, st, NO, "symlink: not followed", found.target))
            elif not stat.S_ISREG(st.st_mode):
                self._skip(SPECIAL, Row(found.rel, st, NO, "not a regular file: not opened"))
            else:
                yield from self._file(found, pending)
        self.stats.walk_complete = not walk.state.truncated
        self.stats.walk_reason = walk.state.reason

    def _file(self, found: Found, pending: Spool) -> Iterator[bytes]:
        """One regular file, by the policy."""
        assert found.st is not None
        action = self.policy.action(found.rel)
        if action is Action.SEGMENT:
            pending.write(pack_scan(found.rel, found.st))
        elif action is Action.LEAVE:
            self._skips.segment_bytes += found.st.st_size
            self._skip(SEGMENTS, Row(found.rel, found.st, NO, SEGMENT_REASON))
        elif action is Action.WITHHOLD:
            self._skip(WITHHELD, Row(found.rel, found.st, NO, WITHHELD_REASON))
        else:
            yield from self._copy(found, redacted=action is Action.REDACT)

    # -- the second pass: segment payloads (full mode) --

    def _segments(self, root_fd: int, pending: Spool) -> Iterator[bytes]:
        """The segments put off by the walk, while the deadline allows."""
        dirs = SegmentDirs(root_fd)
        try:
            for line in pending.lines():
                rel, st = unpack_scan(line)
                if time.monotonic() >= self.deadline:
                    self._skip(LATE, Row(rel, st, NO, LATE_REASON))
                    continue
                parent, _, name = rel.rpartition(b"/")
                dir_fd, problem = dirs.open(parent)
                if dir_fd is None:
                    self._skip(kind_for(problem), Row(rel, st, NO, problem))
                    continue
                yield from self._copy(Found(rel, name, dir_fd, st), redacted=False)
        finally:
            dirs.close()

    # -- copying one file --

    def _copy(self, found: Found, redacted: bool) -> Iterator[bytes]:
        """One file as a member, within the cap, read only if it is still that file."""
        st = found.st
        assert st is not None
        if self.stats.bytes + st.st_size > self.max_bytes:
            self.stats.cut = True
            reason = (
                f"over iggy_max_bytes ({self.max_bytes:,} bytes; "
                f"{self.stats.bytes:,} already in the bundle)"
            )
            self._skip(CUT, Row(found.rel, st, NO, reason))
            return
        if self.after_scan is not None:
            self.after_scan(found.rel)
        opened = open_regular(found.dir_fd, found.name, st)
        if opened.fd is None:
            self._skip(kind_for(opened.problem), Row(found.rel, st, NO, opened.problem))
            return
        reader = FileRead(opened.fd, st.st_size, self.deadline)
        raw = reader.chunks()
        path = member_name(DATA, found.rel)
        guard = _Guarded(raw, path, self.redact) if redacted else None
        content = guard.chunks() if guard is not None else raw
        mode = (st.st_mode & 0o777) | 0o400
        try:
            yield from self._zip.entry(Entry(path, content, mtime=st.st_mtime, mode=mode))
        finally:
            raw.close()
        self.stats.files += 1
        self.stats.bytes += reader.copied
        self._copied(found.rel, st, reader, guard, redacted)

    def _copied(
        self,
        rel: bytes,
        st: os.stat_result,
        reader: FileRead,
        guard: _Guarded | None,
        redacted: bool,
    ) -> None:
        """The listing row (and skip) of a file that was copied, wholly or in part."""
        notes = [reader.note] if reader.note else []
        if guard is not None and guard.failure:
            notes.append(guard.failure)
        elif redacted:
            notes.append("redacted")
        reason = "; ".join(notes)
        if reader.complete and not (guard and guard.failure):
            if reader.note:
                self.stats.grew += 1
            self._list(Row(rel, st, YES, reason))
        else:
            self._skip(CHANGED, Row(rel, st, PARTIAL, reason))

    # -- bookkeeping --

    def _list(self, row: Row) -> None:
        """One listing row."""
        assert self._listing is not None
        self._listing.write(format_row(row, self._owners))
        self.stats.listed += 1

    def _skip(self, kind: str, row: Row) -> None:
        """One listing row for something (partly) left out, counted for the manifest."""
        self._list(row)
        reason = (
            f"{row.reason} (-> {row.target.decode('utf-8', 'backslashreplace')})"
            if (row.target)
            else row.reason
        )
        self._skips.add(kind, row.rel, reason)

    def _summary(self) -> dict[str, Any]:
        """bundle.json."""
        s = self.stats
        return {
            "data_dir": self.node_dir,
            "mode": "full" if self.policy.full else "metadata",
            "redacted": self.redact is not None,
            "max_bytes": self.max_bytes,
            "files": s.files,
            "bytes": s.bytes,
            "cut": s.cut,
            "grew_while_read": s.grew,
            "listing": {"member": s.listing, "rows": s.listed},
            "walk": {"complete": s.walk_complete, "reason": s.walk_reason},
            "skipped": s.skipped,
        }


class _Guarded:
    """A file through the redactor; if redacting fails, the rest is withheld and said so."""

    def __init__(self, chunks: Iterable[bytes], path: str, redact: Redact | None) -> None:
        self._chunks = chunks
        self._path = path
        self._redact = redact
        self.failure = ""

    def chunks(self) -> Iterator[bytes]:
        """The redacted chunks, then a line saying what was withheld if redaction failed."""
        assert self._redact is not None
        try:
            yield from self._redact(self._chunks, self._path)
        except Exception as exc:  # a bug in a rule: nothing unredacted is written
            self.failure = f"withheld from this point: redacting it failed ({type(exc).__name__})"
            yield f"\n[snapshot-agent: the rest of this file was {self.failure}]\n".encode()


def bundle_entries(
    data_dir: Path,
    node_dir: str,
    mode: Literal["metadata", "full"],
    max_bytes: int,
    redact: Redact | None,
    deadline: float,
    level: int,
    threads: int,
    *,
    spool_dir: Path | None = None,
    names: DirNames | None = None,
) -> BundleSource:
    """The Iggy data bundle of `data_dir` (`node_dir` as the node names it), to stream."""
    policy = Policy(full=mode == "full", redact=redact is not None, names=names or DirNames())
    return BundleSource(
        data_dir,
        node_dir,
        policy,
        max_bytes,
        redact,
        deadline,
        ZipStream(level, threads),
        spool_dir=spool_dir,
    )
