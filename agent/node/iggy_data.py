"""Walking an Iggy data directory: sizes, counts and damaged files, bounded in time and memory.

The layout comes from the Iggy sources (paths relative to `[system] path`):
- streams/<stream>/topics/<topic>/partitions/<partition>/ holds one `<20-digit start
  offset>.log` and `.index` per segment, and offsets/consumers/<id>, offsets/groups/<id>
  (server-0.5.0:core/server/src/configs/system.rs get_segment_path and
  server-0.8.0:core/configs/src/server_config/system.rs, the same shape). The directory
  names are `[system.stream] path`, `[system.topic] path`, `[system.partition] path`.
- 0.5: IDs from 1 (server-0.5.0:core/server/src/streaming/systems/streams.rs
  CURRENT_STREAM_ID); 0.6+: IDs from 0 (server-0.8.0:core/server/src/metadata/writer.rs
  `0..partitions_count`).
- .index entries: 16 bytes up to 0.8 (server-0.8.0:core/common/src/types/message/mod.rs
  INDEX_SIZE, the same in 0.5.0); 24 bytes on main, a sparse index
  (HEAD:core/partitions/src/iggy_index.rs IGGY_INDEX_SIZE).
- offset files: 8-byte little-endian u64 up to 0.8 (server-0.8.0:core/server/src/
  streaming/partitions/storage.rs load_consumer_offsets reads exactly 8 bytes); main
  writes 16 (offset + checksum) and still reads a bare 8
  (HEAD:core/partitions/src/offset_storage.rs OFFSET_RECORD_SIZE).
- main adds metadata/ (superblock.a/.b, journal.wal, snapshot.bin;
  HEAD:core/metadata/src/impls/recovery.rs), superblock.a/.b and purge.gen in each
  partition, and `*.staging` scratch files it sweeps at boot
  (HEAD:core/server/src/segment_recovery.rs).

The walk is iterative (one open directory per level, so memory grows with depth, not
with the tree), never follows a symlink (it records the target), never opens a file (a
FIFO or device is only stat'ed), and stops at a deadline or an entry count, saying how
far it got. Sizes that can be caught mid-write (an index the broker is appending to, an
offset file it truncates and rewrites) are looked at again at the end before they count.

Growth: the total is remembered in the agent's state directory between snapshots, and
the rate since an earlier snapshot gives the days left until the filesystem is full.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import re
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from snapshot_agent.node.mounts import probe_all

LAYOUT_05 = "0.5"  # IDs from 1
LAYOUT_06 = "0.6+"  # IDs from 0 (0.6 to 0.8)
LAYOUT_MAIN = "main"  # metadata/ and per-partition superblocks
LAYOUT_UNKNOWN = "unknown"

INDEX_ENTRY = 16  # bytes per .index entry, 0.5 to 0.8
INDEX_ENTRY_MAIN = 24  # the main branch's sparse index
OFFSET_SIZES = frozenset({8})
OFFSET_SIZES_MAIN = frozenset({8, 16})  # 16 = offset + checksum; a bare 8 is still read

MAX_ENTRIES = 2_000_000
MAX_DEPTH = 32  # the deepest Iggy path is 8 levels below the data dir
MAX_TOPICS = 20_000  # distinct (stream, topic) totals kept; the rest are summed as one
MAX_PAIRED = 100_000  # segments of one partition paired .log <-> .index
MAX_SAMPLES = 20  # example paths kept per anomaly kind
MAX_SUSPECTS = 5_000  # size anomalies looked at again at the end of the walk
CONFIRM_DELAY_S = 0.25  # how long after seeing a size anomaly it is looked at again
MAX_LINK = 4096
LOST_FOUND = "lost+found"  # fsck's directory at the top of a volume: root's, never Iggy's

_DIGITS = re.compile(r"[0-9]+")  # str.isdigit() also takes "²", which int() refuses
_CONTAINER_ROOT = re.compile(r"^/proc/[0-9]+/root(?=/|$)")

# Anomaly kinds (the check decides what each is worth).
LOG_WITHOUT_INDEX = "log_without_index"
INDEX_WITHOUT_LOG = "index_without_log"
INDEX_EMPTY = "index_empty"  # zero-length .index beside a non-empty .log
INDEX_TRUNCATED = "index_truncated"  # size not a whole number of entries
OFFSET_SHORT = "offset_short"  # shorter than the 8-byte offset: 0.5-0.8 cannot load it
OFFSET_SIZE = "offset_size"  # longer than expected: not what Iggy writes
OFFSET_NAME = "offset_name"  # an offset file whose name is not a number
UNREADABLE = "unreadable"  # the broker's user (or the owner) may not read it
FOREIGN_OWNER = "foreign_owner"  # not owned by the broker's user
SYMLINK = "symlink"
SYMLINK_OUT = "symlink_out"  # a symlink pointing out of the data directory
SPECIAL = "special"  # FIFO, socket or device
UNLISTED = "unlisted"  # a directory the agent could not list
TOO_DEEP = "too_deep"
TIMEINDEX = "timeindex"  # a 0.4 .timeindex (0.5 rebuilds the index when it sees one)
STAGING = "staging"  # main: *.staging scratch, swept at boot
UNPAIRED = "unpaired"  # a partition with more segments than MAX_PAIRED


@dataclass(frozen=True)
class DirNames:
    """The directory names of `[system.stream|topic|partition] path` (Iggy's defaults).

    `runtime`, `logs` and `backup` are `[system.runtime|logging|backup] path`
    (server-0.8.0:core/server/config.toml; server-0.8.0:core/configs/src/server_config/
    system.rs get_runtime_path, get_backup_path; state/ is fixed, get_state_path).
    """

    streams: str = "streams"
    topics: str = "topics"
    partitions: str = "partitions"
    runtime: str = "runtime"
    logs: str = "logs"
    backup: str = "backup"

    def broker_areas(self) -> frozenset[str]:
        """The top-level directories the broker writes (main adds metadata/)."""
        return frozenset({self.streams, "state", self.runtime, self.logs, self.backup, "metadata"})


@dataclass(frozen=True)
class Identity:
    """The user the broker runs as; files are judged by what it may read."""

    uid: int
    gids: frozenset[int] = frozenset()
    source: str = ""  # "the broker (pid 42)" or "the data directory's owner"


@dataclass
class Totals:
    """Files and bytes under one stream/topic or one top-level area."""

    files: int = 0
    bytes: int = 0
    allocated: int = 0  # st_blocks * 512: what a sparse file really takes
    partitions: int = 0
    segments: int = 0
    segment_bytes: int = 0


@dataclass
class Anomaly:
    """One file that is wrong, relative to the data directory."""

    kind: str
    path: str
    detail: str = ""


@dataclass
class SizeHistogram:
    """Segment (.log) sizes in power-of-two buckets: bucket b holds 2**(b-1) <= size < 2**b."""

    buckets: list[int] = field(default_factory=lambda: [0] * 65)
    count: int = 0
    total: int = 0
    smallest: int | None = None
    largest: int = 0

    def add(self, size: int) -> None:
        """Count one segment of `size` bytes."""
        self.buckets[min(size.bit_length(), 64)] += 1
        self.count += 1
        self.total += size
        self.smallest = size if self.smallest is None else min(self.smallest, size)
        self.largest = max(self.largest, size)

    def quantile_range(self, q: float) -> tuple[int, int] | None:
        """The bucket [low, high) that holds the q-quantile (0.5: the median), or None."""
        if not self.count:
            return None
        rank = q * (self.count - 1)
        seen = 0
        for b, n in enumerate(self.buckets):
            seen += n
            if seen > rank:
                return (0, 1) if b == 0 else (1 << (b - 1), 1 << b)
        return None


@dataclass
class Walk:
    """How far the walk got."""

    entries: int = 0
    files: int = 0
    dirs: int = 0
    elapsed_s: float = 0.0
    truncated: bool = False
    reason: str = ""  # why it stopped early ("" when complete)
    hung: bool = False  # a filesystem call had not returned when the time was up


@dataclass
class Filesystem:
    """Free space where the data directory lives (statvfs)."""

    total: int
    free: int  # available to an unprivileged writer (f_bavail)
    files_free: int | None = None

    @property
    def free_pct(self) -> float:
        """Free space in percent of the filesystem."""
        return self.free / self.total * 100 if self.total else 0.0


@dataclass
class DataDirFacts:
    """What a walk of the data directory found; everything bounded."""

    root: str  # node path of the data directory
    layout: str = LAYOUT_UNKNOWN
    ids_from: int | None = None  # 0 or 1; None when no stream/topic/partition id was seen
    index_entry: int = INDEX_ENTRY
    walk: Walk = field(default_factory=Walk)
    bytes: int = 0
    allocated: int = 0
    streams: int = 0
    topics: int = 0
    partitions: int = 0
    segments: SizeHistogram = field(default_factory=SizeHistogram)
    index_files: int = 0
    areas: dict[str, Totals] = field(default_factory=dict)
    by_topic: dict[tuple[str, str], Totals] = field(default_factory=dict)
    topics_folded: int = 0  # (stream, topic) pairs summed into ("…", "…") past MAX_TOPICS
    counts: dict[str, int] = field(default_factory=dict)  # anomaly kind -> how many
    samples: dict[str, list[Anomaly]] = field(default_factory=dict)
    in_flux: int = 0  # size anomalies gone when looked at again (the broker was writing)
    unconfirmed: int = 0  # size anomalies past MAX_SUSPECTS, counted without a second look
    filesystem: Filesystem | None = None
    filesystem_problem: str = ""
    identity: Identity | None = None
    min_id: int | None = None
    dev_ino: tuple[int, int] | None = None  # st_dev and st_ino of the data directory

    def note(self, kind: str, path: str, detail: str = "") -> None:
        """Count one anomaly and keep it as an example while there are few."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        kept = self.samples.setdefault(kind, [])
        if len(kept) < MAX_SAMPLES:
            kept.append(Anomaly(kind, path, detail))

    def topic(self, key: tuple[str, str]) -> Totals:
        """The totals of one stream/topic (folded into one row past MAX_TOPICS)."""
        found = self.by_topic.get(key)
        if found is not None:
            return found
        if len(self.by_topic) >= MAX_TOPICS:
            self.topics_folded += 1
            key = ("…", "…")
        return self.by_topic.setdefault(key, Totals())


# -- the walk -------------------------------------------------------------------------


@dataclass
class _Frame:
    """One open directory of the walk."""

    it: Iterator[os.DirEntry[str]]
    rel: str  # path relative to the data directory ("" for itself)
    kind: str  # root | area | streams | stream | topics | topic | partitions | partition |
    #            offsets | consumers | groups | other
    area: str
    key: tuple[str, str] | None = None
    depth: int = 0
    logs: dict[str, int] | None = None  # partition: start offset -> .log size
    indexes: dict[str, int] | None = None
    overflow: bool = False  # more segments than MAX_PAIRED: pairing not judged


@dataclass
class _Suspect:
    """A size anomaly to look at again before it counts."""

    kind: str
    rel: str
    size: int
    detail: str


#: The kind of a subdirectory from its parent's kind (and its own name).
_CHILD_KIND = {
    "stream": "topics",
    "topic": "partitions",
    "partition": "offsets",
}


class Walker:
    """One bounded walk; `facts` holds what was seen so far, even when it is cut short."""

    def __init__(
        self,
        root: Path,
        node_root: str,
        deadline: float,
        *,
        names: DirNames | None = None,
        identity: Identity | None = None,
        max_entries: int = MAX_ENTRIES,
        max_depth: int = MAX_DEPTH,
    ) -> None:
        self.root = root
        self.names = names or DirNames()
        self.deadline = deadline
        self.max_entries = max_entries
        self.max_depth = max_depth
        self.facts = DataDirFacts(node_root.rstrip("/") or "/", identity=identity)
        self.suspects: list[_Suspect] = []
        self.last_suspect = 0.0
        self.stopped = False  # set from outside: stop at the next entry

    def run(self) -> DataDirFacts:
        """Statvfs, then the walk, then a second look at size anomalies."""
        start = time.monotonic()
        self._statvfs()
        self._detect_main()
        self._stat_root()
        try:
            self._walk()
        finally:
            self.facts.walk.elapsed_s = round(time.monotonic() - start, 3)
        self._recheck()
        self._finish_layout()
        return self.facts

    # -- set-up --

    def _statvfs(self) -> None:
        """Free space of the data directory's filesystem."""
        try:
            st = os.statvfs(self.root)
        except OSError as exc:
            self.facts.filesystem_problem = f"statvfs failed: {exc.strerror or exc}"
            return
        self.facts.filesystem = Filesystem(
            st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize, st.f_favail or None
        )

    def _detect_main(self) -> None:
        """main has metadata/ at the top: its index entries are 24 bytes, offsets 16."""
        if (self.root / "metadata").is_dir():
            self.facts.layout = LAYOUT_MAIN
            self.facts.index_entry = INDEX_ENTRY_MAIN

    def _stat_root(self) -> None:
        """The directory's identity (for growth); its owner judges files when no broker runs."""
        try:
            st = os.stat(self.root)
        except OSError:
            return
        self.facts.dev_ino = (st.st_dev, st.st_ino)
        if self.facts.identity is None:
            self.facts.identity = Identity(
                st.st_uid, frozenset({st.st_gid}), "the data directory's owner"
            )

    # -- walking --

    def _walk(self) -> None:
        """Depth first, one scandir iterator per level."""
        stack: list[_Frame] = []
        root_frame = self._open(self.root, "", "root", "", None, 0)
        if root_frame is None:
            return
        stack.append(root_frame)
        while stack:
            frame = stack[-1]
            entry = next(frame.it, None)
            if entry is None:
                stack.pop()
                self._close(frame, complete=True)
                continue
            if self._must_stop():
                for open_frame in reversed(stack):
                    self._close(open_frame, complete=False)
                return
            child = self._entry(frame, entry)
            if child is not None:
                stack.append(child)

    def _must_stop(self) -> bool:
        """True (with the reason recorded) at the deadline, the entry cap, or when told."""
        walk = self.facts.walk
        if self.stopped or time.monotonic() >= self.deadline:
            walk.truncated, walk.reason = True, "the time for the walk ran out"
        elif walk.entries >= self.max_entries:
            walk.truncated = True
            walk.reason = f"the entry limit ({self.max_entries:,}) was reached"
        return walk.truncated

    def _open(
        self,
        path: Path | str,
        rel: str,
        kind: str,
        area: str,
        key: tuple[str, str] | None,
        depth: int,
    ) -> _Frame | None:
        """A frame for one directory, or None (noted) when it cannot be listed."""
        try:
            it = os.scandir(path)
        except OSError as exc:
            self.facts.note(UNLISTED, rel or ".", exc.strerror or str(exc))
            return None
        frame = _Frame(it, rel, kind, area, key, depth)
        if kind == "partition":
            frame.logs, frame.indexes = {}, {}
        return frame

    def _entry(self, frame: _Frame, entry: os.DirEntry[str]) -> _Frame | None:
        """Account for one entry; a frame to descend into when it is a directory."""
        self.facts.walk.entries += 1
        rel = f"{frame.rel}/{entry.name}" if frame.rel else entry.name
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError as exc:  # gone since it was listed: the broker deletes segments
            if not isinstance(exc, FileNotFoundError):
                self.facts.note(UNLISTED, rel, exc.strerror or str(exc))
            return None
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            self._symlink(entry, rel)
            return None
        if stat.S_ISDIR(mode):
            if frame.kind == "root" and entry.name == LOST_FOUND:
                return None
            self.facts.walk.dirs += 1
            self._permissions(frame, entry.name, rel, st, directory=True)
            return self._descend(frame, entry, rel)
        if not stat.S_ISREG(mode):
            self.facts.note(SPECIAL, rel, special_kind(mode))
            return None
        self.facts.walk.files += 1
        self._permissions(frame, entry.name, rel, st, directory=False)
        self._file(frame, entry.name, rel, st)
        return None

    def _descend(self, frame: _Frame, entry: os.DirEntry[str], rel: str) -> _Frame | None:
        """Open a subdirectory with its role in Iggy's layout."""
        depth = frame.depth + 1
        if depth > self.max_depth:
            self.facts.note(TOO_DEEP, rel, f"more than {self.max_depth} levels deep; not walked")
            return None
        kind, key = self._child_kind(frame, entry.name)
        area = frame.area or entry.name
        child = self._open(entry.path, rel, kind, area, key, depth)
        if child is not None:
            self._count_dir(kind, key, entry.name)
        return child

    def _child_kind(self, frame: _Frame, name: str) -> tuple[str, tuple[str, str] | None]:
        """What a subdirectory called `name` is, inside `frame`."""
        n = self.names
        parent = frame.kind
        if parent == "root":
            return ("streams" if name == n.streams else "area"), None
        if parent == "streams":
            return "stream", (name, "")
        if parent == "stream" and name == n.topics:
            return "topics", frame.key
        if parent == "topics" and frame.key is not None:
            return "topic", (frame.key[0], name)
        if parent == "topic" and name == n.partitions:
            return "partitions", frame.key
        if parent == "partitions":
            return "partition", frame.key
        if parent == "partition" and name == "offsets":
            return "offsets", frame.key
        if parent == "offsets" and name in ("consumers", "groups"):
            return name, frame.key
        return "other", frame.key

    def _count_dir(self, kind: str, key: tuple[str, str] | None, name: str) -> None:
        """Streams, topics and partitions counted, and their IDs noted."""
        facts = self.facts
        if kind not in ("stream", "topic", "partition"):
            return
        if kind == "stream":
            facts.streams += 1
        elif kind == "topic":
            facts.topics += 1
            if key is not None:
                facts.topic(key)
        else:
            facts.partitions += 1
            if key is not None:
                facts.topic(key).partitions += 1
        if _DIGITS.fullmatch(name):
            ident = int(name)
            facts.min_id = ident if facts.min_id is None else min(facts.min_id, ident)

    def _file(self, frame: _Frame, name: str, rel: str, st: os.stat_result) -> None:
        """Sizes, segments and the rules of one regular file."""
        facts = self.facts
        size, allocated = st.st_size, st.st_blocks * 512
        facts.bytes += size
        facts.allocated += allocated
        area = facts.areas.setdefault(frame.area or ".", Totals())
        area.files += 1
        area.bytes += size
        area.allocated += allocated
        totals = facts.topic(frame.key) if frame.key and frame.key[1] else None
        if totals is not None:
            totals.files += 1
            totals.bytes += size
            totals.allocated += allocated
        if frame.kind == "partition":
            self._partition_file(frame, name, rel, size, totals)
        elif frame.kind in ("consumers", "groups"):
            self._offset_file(name, rel, size)

    def _partition_file(
        self, frame: _Frame, name: str, rel: str, size: int, totals: Totals | None
    ) -> None:
        """A segment's .log or .index, a legacy .timeindex or a scratch file."""
        stem, _, ext = name.rpartition(".")
        if ext == "log":
            self.facts.segments.add(size)
            if totals is not None:
                totals.segments += 1
                totals.segment_bytes += size
            self._pair(frame, frame.logs, stem, size)
        elif ext == "index":
            self.facts.index_files += 1
            entry = self.facts.index_entry
            if size % entry:
                self._suspect(INDEX_TRUNCATED, rel, size, _torn(size, entry))
            self._pair(frame, frame.indexes, stem, size)
        elif ext == "timeindex":
            self.facts.note(TIMEINDEX, rel)
        elif name.endswith(".staging"):
            self.facts.note(STAGING, rel, _size_words(size))

    def _pair(self, frame: _Frame, found: dict[str, int] | None, stem: str, size: int) -> None:
        """Remember a segment file for pairing, up to MAX_PAIRED per partition."""
        if found is None or frame.overflow:
            return
        if len(found) >= MAX_PAIRED:
            frame.overflow = True
            self.facts.note(UNPAIRED, frame.rel, f"more than {MAX_PAIRED:,} segments")
            return
        found[stem] = size

    def _offset_file(self, name: str, rel: str, size: int) -> None:
        """A consumer or group offset: a number as its name, 8 bytes (8 or 16 on main)."""
        if not _DIGITS.fullmatch(name):
            self.facts.note(OFFSET_NAME, rel, "the name is not a numeric consumer id")
        allowed = OFFSET_SIZES_MAIN if self.facts.layout == LAYOUT_MAIN else OFFSET_SIZES
        if size not in allowed:
            expected = " or ".join(str(s) for s in sorted(allowed))
            kind = OFFSET_SHORT if size < min(allowed) else OFFSET_SIZE
            self._suspect(kind, rel, size, f"{size} bytes, expected {expected}")

    def _close(self, frame: _Frame, complete: bool) -> None:
        """Close the listing; pair a fully listed partition's .log and .index files."""
        close = getattr(frame.it, "close", None)
        if close is not None:
            close()
        if not complete or frame.logs is None or frame.indexes is None or frame.overflow:
            return
        logs, indexes = frame.logs, frame.indexes
        for stem, size in logs.items():
            index = indexes.get(stem)
            rel = f"{frame.rel}/{stem}"
            if index is None:
                self._suspect(LOG_WITHOUT_INDEX, rel + ".log", size, _size_words(size))
            elif index == 0 and size > 0:
                self._suspect(INDEX_EMPTY, rel + ".index", size, f"its .log holds {size:,} bytes")
        for stem, size in indexes.items():
            if stem not in logs:
                self._suspect(INDEX_WITHOUT_LOG, f"{frame.rel}/{stem}.index", size, "")

    def _symlink(self, entry: os.DirEntry[str], rel: str) -> None:
        """Record a symlink and its target; never follow it."""
        try:
            target = os.readlink(entry.path)[:MAX_LINK]
        except OSError as exc:
            target = f"? ({exc.strerror or exc})"
        node_link = posixpath.join(self.facts.root, rel)
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(node_link), target))
        inside = resolved == self.facts.root or resolved.startswith(self.facts.root + "/")
        self.facts.note(SYMLINK if inside else SYMLINK_OUT, rel, f"-> {target}")

    def _judged(self, frame: _Frame, name: str, directory: bool) -> bool:
        """Whether ownership matters: inside the broker's areas, or a file at the top."""
        if frame.kind == "root":
            return not directory or name in self.names.broker_areas()
        return frame.area in self.names.broker_areas()

    def _permissions(
        self, frame: _Frame, name: str, rel: str, st: os.stat_result, directory: bool
    ) -> None:
        """What the broker uses that its user does not own, or may not read (or list)."""
        if not self._judged(frame, name, directory):
            return
        ident = self.facts.identity
        if ident is not None and ident.uid != 0 and st.st_uid != ident.uid:
            self.facts.note(FOREIGN_OWNER, rel, f"owner uid {st.st_uid}")
        if not _readable(st, ident, directory):
            self.facts.note(UNREADABLE, rel, f"mode {stat.filemode(st.st_mode)}")

    # -- sizes caught mid-write --

    def _suspect(self, kind: str, rel: str, size: int, detail: str) -> None:
        """A size anomaly: looked at again at the end, or counted at once past the cap."""
        if len(self.suspects) >= MAX_SUSPECTS:
            self.facts.unconfirmed += 1
            self.facts.note(kind, rel, detail)
            return
        self.suspects.append(_Suspect(kind, rel, size, detail))
        self.last_suspect = time.monotonic()

    def _recheck(self) -> None:
        """Count the suspects that are still wrong a moment later."""
        if not self.suspects:
            return
        wait = min(self.last_suspect + CONFIRM_DELAY_S, self.deadline) - time.monotonic()
        if wait > 0 and not self.stopped:
            time.sleep(wait)
        for suspect in self.suspects:
            if self.stopped or time.monotonic() >= self.deadline:
                # No time for a second look: what was seen counts as seen.
                self.facts.unconfirmed += 1
                self.facts.note(suspect.kind, suspect.rel, suspect.detail)
            elif self._still_wrong(suspect):
                self.facts.note(suspect.kind, suspect.rel, suspect.detail)
            else:
                self.facts.in_flux += 1
        self.suspects.clear()

    def _still_wrong(self, s: _Suspect) -> bool:
        """The same anomaly with the same size, looked at again."""
        path = self.root / s.rel
        size = _size(path)
        if s.kind == LOG_WITHOUT_INDEX:
            return size is not None and _size(path.with_suffix(".index")) is None
        if s.kind == INDEX_WITHOUT_LOG:
            return size is not None and _size(path.with_suffix(".log")) is None
        if s.kind == INDEX_EMPTY:
            return size == 0 and bool(_size(path.with_suffix(".log")))
        return size == s.size  # a torn index or offset file that is not being written

    def _finish_layout(self) -> None:
        """0.5 (IDs from 1) or 0.6+ (IDs from 0), from the smallest ID seen."""
        facts = self.facts
        if facts.min_id is not None:
            facts.ids_from = 0 if facts.min_id == 0 else 1
        if facts.layout == LAYOUT_MAIN:
            return
        if facts.ids_from == 0:
            facts.layout = LAYOUT_06
        elif facts.ids_from == 1:
            facts.layout = LAYOUT_05


def _size(path: Path) -> int | None:
    """lstat size, or None when the file is gone."""
    try:
        return os.lstat(path).st_size
    except OSError:
        return None


def _readable(st: os.stat_result, ident: Identity | None, directory: bool) -> bool:
    """Whether `ident` may read the file (list and enter the directory) by its mode.

    A file whose owner has no read bit is unreadable whoever runs the broker (a chmod
    gone wrong); a root broker reads everything else.
    """
    need = 0o5 if directory else 0o4
    mode = st.st_mode
    if (mode >> 6) & need != need:
        return False
    if ident is None or ident.uid == 0 or st.st_uid == ident.uid:
        return True
    if st.st_gid in ident.gids:
        return (mode >> 3) & need == need
    return mode & need == need


def special_kind(mode: int) -> str:
    """'FIFO', 'socket', 'block device'..."""
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISCHR(mode):
        return "character device"
    return "special file"


def _torn(size: int, entry: int) -> str:
    """'1,000 bytes: 62 whole 16-byte entries and 8 bytes of a torn one'."""
    whole, rest = divmod(size, entry)
    return f"{size:,} bytes: {whole:,} whole {entry}-byte entries and {rest} bytes of a torn one"


def _size_words(size: int) -> str:
    """'4,096 bytes'."""
    return f"{size:,} bytes"


def walk_data_dir(
    root: Path,
    node_root: str,
    deadline: float,
    *,
    names: DirNames | None = None,
    identity: Identity | None = None,
    max_entries: int = MAX_ENTRIES,
    grace_s: float = 1.0,
) -> DataDirFacts:
    """Walk in a thread; at `deadline` + `grace_s` return what was seen, even if it hangs.

    A thread stuck in the kernel (a hung mount) cannot be interrupted: it is left
    behind, and the facts gathered so far come back with `walk.hung` set.
    """
    walker = Walker(
        root, node_root, deadline, names=names, identity=identity, max_entries=max_entries
    )
    budget = max(0.0, deadline - time.monotonic()) + CONFIRM_DELAY_S + grace_s
    probe = probe_all({"walk": walker.run}, budget)["walk"]
    if probe.error is not None:
        raise probe.error
    if not probe.done:
        walker.stopped = True
        facts = walker.facts
        facts.walk.truncated, facts.walk.hung = True, True
        facts.walk.reason = (
            f"a filesystem call had not returned after {budget:.1f} s (a hung mount?)"
        )
        facts.walk.elapsed_s = round(budget, 3)
    return walker.facts


# -- growth between snapshots -----------------------------------------------------------

GROWTH_FILE = "iggy/data_dir_growth.json"
MAX_RECORDS = 32  # per data directory
MAX_DIRS = 8  # data directories remembered, least recently seen dropped first (keys are stable)
MIN_WINDOW_S = 60.0  # a shorter window says nothing about days
MAX_WINDOW_S = 7 * 86400.0  # the rate is measured over at most the last week
MAX_STATE_BYTES = 256 * 1024


@dataclass(frozen=True)
class Growth:
    """How fast the data directory grows, measured between two snapshots."""

    known: bool
    note: str  # why unknown, or what the rate is based on
    bytes_per_day: float | None = None
    window_s: float | None = None
    since: float | None = None  # epoch seconds of the earlier snapshot
    days_left: float | None = None  # until the filesystem is full at this rate
    recorded: bool = False  # this snapshot's total was remembered for the next one


def broker_view(node_path: str) -> str:
    """The path as the broker sees it: a container's /proc/<pid>/root prefix removed."""
    return _CONTAINER_ROOT.sub("", node_path) or "/"


def growth_key(node_root: str, dev_ino: tuple[int, int] | None) -> str:
    """Where a data directory's totals are kept: stable across broker restarts.

    A containerised broker's node path holds its pid, new at every restart; the path it
    sees itself plus the directory's device and inode stay, and a directory made anew
    (`--fresh`, a new volume) starts a new record instead of a bogus shrink.
    """
    path = broker_view(node_root)
    return f"{path} (dev {dev_ino[0]}, inode {dev_ino[1]})" if dev_ino else path


def growth_state_path(state_dir: str) -> Path:
    """Where the totals of earlier snapshots are kept."""
    return Path(state_dir) / GROWTH_FILE


def load_records(path: Path) -> dict[str, list[list[float]]]:
    """{data dir: [[epoch, bytes], ...]}; empty when absent, unreadable or garbage."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_STATE_BYTES + 1)
        data = json.loads(raw) if len(raw) <= MAX_STATE_BYTES else {}
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("records"), dict):
        return {}
    out: dict[str, list[list[float]]] = {}
    for key, rows in data["records"].items():
        if isinstance(key, str) and isinstance(rows, list):
            out[key] = [r for r in rows if _is_record(r)][-MAX_RECORDS:]
    return out


def _is_record(row: Any) -> bool:
    """[epoch, bytes], both non-negative numbers."""
    return (
        isinstance(row, list)
        and len(row) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in row)
    )


def pick_previous(rows: list[list[float]], now: float) -> list[float] | None:
    """The earliest record of the last week (the newest before that if none), or None."""
    past = [r for r in rows if r[0] < now]
    if not past:
        return None
    recent = [r for r in past if now - r[0] <= MAX_WINDOW_S]
    return min(recent, key=lambda r: r[0]) if recent else max(past, key=lambda r: r[0])


def estimate_growth(
    previous: list[float] | None, now: float, total: int, free: int | None
) -> Growth:
    """The growth rate since `previous` and the days until `free` bytes are used up."""
    if previous is None:
        return Growth(False, "growth unknown until the next snapshot (no earlier total)")
    window = now - previous[0]
    if window < MIN_WINDOW_S:
        return Growth(
            False,
            f"growth unknown: the earlier snapshot was only {window:.0f} s ago "
            f"(at least {MIN_WINDOW_S:.0f} s needed)",
        )
    per_day = (total - previous[1]) / window * 86400
    days_left = free / per_day if free is not None and per_day > 0 else None
    return Growth(
        True,
        f"measured over {_window_words(window)} since an earlier snapshot",
        per_day,
        window,
        previous[0],
        days_left,
    )


def _window_words(seconds: float) -> str:
    """'3.2 days', '5.0 hours', '12 minutes'."""
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 60:.0f} minutes"


def save_record(path: Path, key: str, now: float, total: int) -> str:
    """Remember this snapshot's total; '' when saved, else why not (never raises)."""
    if not path.parent.parent.is_dir():
        return f"state directory {path.parent.parent} does not exist"
    records = load_records(path)
    rows = [r for r in records.pop(key, []) if r[0] < now][-(MAX_RECORDS - 1) :]
    records[key] = [*rows, [now, total]]
    while len(records) > MAX_DIRS:
        records.pop(next(iter(records)))
    tmp: str | None = None
    try:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        # A temporary of its own (0600), should two runs ever write at once.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps({"version": 1, "records": records}))
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return f"cannot write {path}: {exc.strerror or exc}"
    return ""


def track_growth(state_dir: str, key: str, total: int, free: int | None, now: float) -> Growth:
    """Growth since an earlier snapshot, and this total remembered for the next one."""
    path = growth_state_path(state_dir)
    previous = pick_previous(load_records(path).get(key, []), now)
    growth = estimate_growth(previous, now, total, free)
    problem = save_record(path, key, now, total)
    if problem:
        note = f"{growth.note}; not remembered for the next snapshot ({problem})"
        return replace(growth, note=note)
    return replace(growth, recorded=True)
