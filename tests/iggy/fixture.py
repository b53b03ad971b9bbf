"""A synthetic Iggy node: a data directory with the real layout of each version, its
server config and its log, plus defects to inject. For tests, benchmarks and the archive.

    from tests.iggy.fixture import Spec, build

    built = build(node, Spec(layout="0.8", streams=2, topics=3, partitions=2, segments=4))
    built.data_dir       # real path: node/var/lib/iggy/local_data
    built.node_data_dir  # as the node sees it: /var/lib/iggy/local_data
    built.files, built.bytes, built.segments, built.by_topic[("0", "1")]  # what to expect

`node` is a fixture root (tests.conftest.fixture_roots(node)); the config lands at
/etc/iggy/server.toml, one of the places discovery looks, with `[system] path` set to the
data directory, so `discover()` finds everything without agent settings.

Layouts, as the Iggy sources have them (paths relative to `[system] path`):
- "0.5" (server-0.5.0): IDs from 1; streams/<s>/topics/<t>/partitions/<p>/ with
  `<20-digit start offset>.log` and `.index` (16-byte entries: u32 relative offset, u32
  position, u64 timestamp; core/common/src/types/message/mod.rs INDEX_SIZE; no
  .timeindex, 0.4's, which 0.5 rebuilds from), offsets/consumers/<id> and
  offsets/groups/<id> holding an 8-byte LE u64 (core/server/src/streaming/partitions/
  storage.rs); state/{log,info,tokens}; runtime/current_config.toml; logs/ rotated
  hourly as iggy-server.log.YYYY-MM-DD-HH (core/server/src/log/logger.rs).
- "0.8" (server-0.6.0 to 0.8.0): the same tree with IDs from 0; logs/iggy-server.log
  rotated by size (core/server/src/log/logger.rs); runtime/current_config.toml holds
  the JWT secret (written whole by core/server/src/shard/tasks/oneshot/config_writer.rs).
- "main" (HEAD): adds metadata/{superblock.a,superblock.b,journal.wal,snapshot.bin}
  (core/metadata/src/impls/recovery.rs), superblock.a/.b and purge.gen (two LE u64s)
  in each partition (core/journal/src/superblock.rs, core/partitions/src/
  offset_storage.rs); 24-byte sparse index entries (core/partitions/src/iggy_index.rs);
  offset files of 16 bytes, the offset and a checksum (offset_storage.rs).

Sizes: segment files are sparse (`ftruncate`), so a GB fixture costs no disk and a
100 000-file tree takes seconds; `files=N` adds segments round-robin until the data
directory holds N regular files. Defects (`Spec.defects`) each get their own segment in
the first partition: see DEFECTS.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

NODE_DATA_DIR = "/var/lib/iggy/local_data"
NODE_CONFIG = "/etc/iggy/server.toml"
LAYOUTS = ("0.5", "0.8", "main")
KIB = 1024
MESSAGE_BYTES = 1024  # one dense (0.5-0.8) index entry per message of about this size
FLUSH_BYTES = 64 * KIB  # one sparse (main) index entry per flush of about this size
DEFECT_BASE_OFFSET = 9_000_000_000  # defect segments sit far above the normal ones

#: Defects that can be injected, each into its own segment of the first partition.
DEFECTS = (
    "log_without_index",  # the .index is missing
    "index_without_log",  # the .log is missing
    "zero_index",  # a zero-length .index beside a non-empty .log
    "truncated_index",  # an .index that ends 7 bytes into an entry (a torn write)
    "offset_9_bytes",  # a consumer offset file of 9 bytes
    "offset_short",  # a consumer offset file of 5 bytes (0.5-0.8 cannot load it)
    "unreadable",  # a segment .log with mode 000
    "symlink_out",  # a symlink from the partition to /etc/passwd, out of the tree
    "symlink_loop",  # a symlink from the partition to its own directory
    "fifo",  # a FIFO in the partition directory
    "timeindex",  # a 0.4 .timeindex beside a segment
)


@dataclass(frozen=True)
class Spec:
    """What to build."""

    layout: str = "0.8"
    streams: int = 1
    topics: int = 1  # per stream
    partitions: int = 1  # per topic
    segments: int = 1  # per partition
    segment_bytes: int | Sequence[int] = 4 * KIB  # each .log; a sequence is cycled
    consumers: int = 1  # offsets/consumers/<id> per partition
    groups: int = 1  # offsets/groups/<id> per partition
    files: int | None = None  # pad with segments until the data dir holds this many files
    defects: Sequence[str] = ()
    log_lines: int = 20  # lines in the server log
    runtime_secrets: bool | None = None  # None: as the version does (0.5/0.8 yes, main no)

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout {self.layout!r}: one of {LAYOUTS}")
        unknown = set(self.defects) - set(DEFECTS)
        if unknown:
            raise ValueError(f"unknown defects {sorted(unknown)}; known: {DEFECTS}")


@dataclass
class TopicTotals:
    """Expected totals of one stream/topic."""

    partitions: int = 0
    segments: int = 0
    files: int = 0
    bytes: int = 0


@dataclass
class Built:
    """What was built, to compare a walk with."""

    spec: Spec
    node: Path
    data_dir: Path  # the real path
    node_data_dir: str  # the path on the fixture node
    config_path: Path
    node_config_path: str
    logs_dir: Path
    first_id: int  # 1 for 0.5, else 0
    index_entry: int  # 16, or 24 on main
    streams: int = 0
    topics: int = 0
    partitions: int = 0
    segments: int = 0  # .log files
    index_files: int = 0
    files: int = 0  # regular files under the data dir
    dirs: int = 0  # directories under it (itself not counted)
    bytes: int = 0  # sum of the regular files' sizes
    segment_sizes: list[int] = field(default_factory=list)
    by_topic: dict[tuple[str, str], TopicTotals] = field(default_factory=dict)
    #: defect name -> path relative to the data dir of the file it damaged
    defects: dict[str, str] = field(default_factory=dict)


class _Builder:
    """Writes the tree and keeps the count."""

    def __init__(self, node: Path, spec: Spec) -> None:
        data_dir = node / NODE_DATA_DIR.lstrip("/")
        config = node / NODE_CONFIG.lstrip("/")
        self.built = Built(
            spec,
            node,
            data_dir,
            NODE_DATA_DIR,
            config,
            NODE_CONFIG,
            data_dir / "logs",
            1 if spec.layout == "0.5" else 0,
            24 if spec.layout == "main" else 16,
        )
        self.spec = spec
        self.sizes = _cycle(spec.segment_bytes)

    # -- primitives --

    def mkdir(self, path: Path) -> None:
        """A directory under the data dir (counted at the end, by _count_dirs)."""
        path.mkdir(parents=True, exist_ok=True)

    def file(self, path: Path, size: int = 0, content: bytes | None = None) -> None:
        """A regular file: `content`, or `size` bytes of sparse zeros."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            if content is not None:
                os.write(fd, content)
                size = len(content)
            else:
                os.ftruncate(fd, size)
        finally:
            os.close(fd)
        self.built.files += 1
        self.built.bytes += size
        key = _topic_key(self.built.data_dir, path)
        if key is not None:
            totals = self.built.by_topic[key]
            totals.files += 1
            totals.bytes += size

    # -- the tree --

    def top(self) -> None:
        """state/, runtime/, logs/ and, on main, metadata/."""
        b, d = self.built, self.built.data_dir
        d.mkdir(parents=True)
        for name in ("state", "runtime", "logs", "streams"):
            self.mkdir(d / name)
        self.file(d / "state/log", 512)
        if self.spec.layout != "main":
            self.file(d / "state/info", content=b"\x81\xa7version\xa50.8.0")
            self.file(d / "state/tokens", 0)
        self.file(d / "runtime/current_config.toml", content=self._runtime_config().encode())
        if self.spec.layout == "main":
            self.mkdir(d / "metadata")
            for name, size in (
                ("superblock.a", 102),
                ("superblock.b", 102),
                ("journal.wal", 64 * KIB),
                ("snapshot.bin", 2 * KIB),
            ):
                self.file(d / "metadata" / name, size)
        self._logs()
        b.node.joinpath(NODE_CONFIG.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        b.config_path.write_text(server_config(self.spec.layout, b.node_data_dir))

    def _runtime_config(self) -> str:
        """runtime/current_config.toml: the effective config, secrets included up to 0.8."""
        text = server_config(self.spec.layout, self.built.node_data_dir)
        secrets = self.spec.runtime_secrets
        if secrets if secrets is not None else self.spec.layout != "main":
            text += (
                '\n[http.jwt]\nencoding_secret = "fixture-jwt-secret-0123456789abcdef"\n'
                'decoding_secret = "fixture-jwt-secret-0123456789abcdef"\n'
            )
        return text

    def _logs(self) -> None:
        """The server log: hourly files on 0.5, one size-rotated file later."""
        lines = "".join(log_lines(self.spec.log_lines)).encode()
        logs = self.built.logs_dir
        if self.spec.layout == "0.5":
            self.file(logs / "iggy-server.log.2026-11-25-09", content=lines)
            self.file(logs / "iggy-server.log.2026-11-25-10", content=lines)
        else:
            self.file(logs / "iggy-server.log.1", content=lines)
            self.file(logs / "iggy-server.log", content=lines)

    def streams(self) -> list[Path]:
        """Every partition directory, after writing streams, topics and partitions."""
        spec, b = self.spec, self.built
        ids = range(b.first_id, b.first_id + max(spec.streams, spec.topics, spec.partitions))
        out = []
        for s in ids[: spec.streams]:
            stream = b.data_dir / "streams" / str(s)
            self.mkdir(stream / "topics")
            b.streams += 1
            for t in ids[: spec.topics]:
                b.topics += 1
                b.by_topic[(str(s), str(t))] = TopicTotals()
                for p in ids[: spec.partitions]:
                    out.append(self.partition(stream / "topics" / str(t) / "partitions" / str(p)))
        return out

    def partition(self, path: Path) -> Path:
        """One partition with its segments and offsets (and main's superblock, purge.gen)."""
        b, spec = self.built, self.spec
        self.mkdir(path / "offsets" / "consumers")
        self.mkdir(path / "offsets" / "groups")
        b.partitions += 1
        b.by_topic[_topic_key(b.data_dir, path) or ("?", "?")].partitions += 1
        for i in range(spec.segments):
            self.segment(path, i * 1000)
        for kind, count in (("consumers", spec.consumers), ("groups", spec.groups)):
            for c in range(b.first_id, b.first_id + count):
                self.offset(path / "offsets" / kind / str(c), 42 + c)
        if spec.layout == "main":
            self.file(path / "superblock.a", 102)
            self.file(path / "superblock.b", 102)
            self.file(path / "purge.gen", content=struct.pack("<QQ", 0, 1))
        return path

    def offset(self, path: Path, value: int) -> None:
        """An offset file: LE u64, with a checksum-sized tail on main."""
        body = struct.pack("<Q", value)
        if self.spec.layout == "main":
            body += struct.pack("<Q", value * 2654435761 % 2**64)  # stands in for the checksum
        self.file(path, content=body)

    def segment(self, partition: Path, start: int, size: int | None = None) -> str:
        """`<start>.log` of `size` bytes and its `.index`; the stem's path relative."""
        b = self.built
        size = next(self.sizes) if size is None else size
        stem = partition / f"{start:020d}"
        self.file(stem.with_suffix(".log"), size)
        self.file(stem.with_suffix(".index"), index_bytes(self.spec.layout, size))
        b.segments += 1
        b.index_files += 1
        b.segment_sizes.append(size)
        key = _topic_key(b.data_dir, partition)
        if key is not None:
            b.by_topic[key].segments += 1
        return str(stem.relative_to(b.data_dir))

    def pad(self, partitions: list[Path], files: int) -> None:
        """Segments round-robin over the partitions until the data dir holds `files` files."""
        start = self.spec.segments * 1000
        i = 0
        while self.built.files + 1 < files:
            self.segment(partitions[i % len(partitions)], start + (i // len(partitions)) * 1000)
            i += 1
        if self.built.files < files:
            # One odd file left: one more consumer offset in the first partition.
            self.offset(partitions[0] / "offsets" / "consumers" / "999999", 7)


def build(node: Path, spec: Spec | None = None) -> Built:
    """Write the data dir, config and log of `spec` under the fixture node root `node`."""
    spec = spec or Spec()
    builder = _Builder(node, spec)
    builder.top()
    partitions = builder.streams()
    builder.built.dirs = _count_dirs(builder.built.data_dir)
    if spec.files is not None and partitions:
        builder.pad(partitions, spec.files)
    if spec.defects and partitions:
        inject(builder, partitions[0], spec.defects)
    return builder.built


def _count_dirs(data_dir: Path) -> int:
    """Directories under `data_dir` (before any symlink is injected)."""
    return sum(len(dirs) for _, dirs, _ in os.walk(data_dir))


def inject(builder: _Builder, partition: Path, defects: Iterable[str]) -> None:
    """Damage the first partition: each defect in a segment of its own."""
    b = builder.built
    for n, name in enumerate(defects):
        start = DEFECT_BASE_OFFSET + n * 1000
        if name in ("offset_9_bytes", "offset_short"):
            path = partition / "offsets" / "consumers" / str(100_000 + n)
            builder.file(path, content=b"\x07" * (9 if name == "offset_9_bytes" else 5))
            b.defects[name] = str(path.relative_to(b.data_dir))
            continue
        if name in ("symlink_out", "symlink_loop", "fifo"):
            path = partition / f"{name}.{n}"
            if name == "symlink_out":
                path.symlink_to("/etc/passwd")
            elif name == "symlink_loop":
                path.symlink_to(".")
            else:
                os.mkfifo(path)
            b.defects[name] = str(path.relative_to(b.data_dir))
            continue
        stem = builder.segment(partition, start, 8 * KIB)
        b.defects[name] = _damage(builder, b.data_dir / stem, name)


def _damage(builder: _Builder, stem: Path, name: str) -> str:
    """Damage one segment; the path (relative) of the file the defect is about."""
    b = builder.built
    log, index = stem.with_suffix(".log"), stem.with_suffix(".index")
    entry = b.index_entry
    if name == "log_without_index":
        _remove(builder, index)
        b.index_files -= 1
        target = log
    elif name == "index_without_log":
        _remove(builder, log)
        b.segments -= 1
        b.segment_sizes.remove(8 * KIB)
        key = _topic_key(b.data_dir, stem)
        if key is not None:
            b.by_topic[key].segments -= 1
        target = index
    elif name == "zero_index":
        _resize(builder, index, 0)
        target = index
    elif name == "truncated_index":
        _resize(builder, index, 3 * entry + 7)
        target = index
    elif name == "unreadable":
        log.chmod(0)
        target = log
    else:  # timeindex
        builder.file(stem.with_suffix(".timeindex"), 64)
        target = stem.with_suffix(".timeindex")
    return str(target.relative_to(b.data_dir))


def _remove(builder: _Builder, path: Path) -> None:
    """Delete a file the builder counted."""
    size = path.stat().st_size
    path.unlink()
    b = builder.built
    b.files -= 1
    b.bytes -= size
    key = _topic_key(b.data_dir, path)
    if key is not None:
        b.by_topic[key].files -= 1
        b.by_topic[key].bytes -= size


def _resize(builder: _Builder, path: Path, size: int) -> None:
    """Change a counted file's size."""
    old = path.stat().st_size
    os.truncate(path, size)
    b = builder.built
    b.bytes += size - old
    key = _topic_key(b.data_dir, path)
    if key is not None:
        b.by_topic[key].bytes += size - old


def index_bytes(layout: str, log_bytes: int) -> int:
    """The .index size for a .log: one 16-byte entry per message, or 24 per flush on main."""
    if log_bytes <= 0:
        return 0
    if layout == "main":
        return max(1, log_bytes // FLUSH_BYTES) * 24
    return max(1, log_bytes // MESSAGE_BYTES) * 16


def server_config(layout: str, data_dir: str) -> str:
    """A server config as the version ships it, with `[system] path` set to `data_dir`."""
    bind = "0.0.0.0" if layout == "0.5" else "127.0.0.1"
    text = f"""[http]
enabled = true
address = "{bind}:3000"

[tcp]
enabled = true
address = "{bind}:8090"

[quic]
enabled = true
address = "{bind}:8080"

[system]
path = "{data_dir}"

[system.logging]
path = "logs"
level = "info"

[system.stream]
path = "streams"

[system.topic]
path = "topics"

[system.partition]
path = "partitions"
enforce_fsync = false

[system.segment]
size = "1 GiB"
cache_indexes = "open_segment"
"""
    if layout != "0.5":
        text += '\n[websocket]\nenabled = true\naddress = "127.0.0.1:8092"\n'
    return text


def log_lines(n: int) -> list[str]:
    """`n` server log lines in the tracing format, with a periodic resource line."""
    lines = []
    for i in range(n):
        stamp = f"2026-11-25T10:{i // 60 % 60:02d}:{i % 60:02d}.{i:06d}Z"
        if i % 10 == 9:
            lines.append(
                f"{stamp}  INFO shard-0 server::shard::tasks::periodic::sysinfo_printer: "
                "CPU: 1.20%/3.40% (IggyUsage/Total), Mem: 61.00%/120.5 MB/3.1 GB/8.0 GB "
                "(Free/IggyUsage/TotalUsed/Total), Disk: 40.0 GB/100.0 GB (Free/Total), "
                "IggyUsage: 1.2 GB, Clients: 3, Messages: 120000, Read: 10 MB, "
                "Written: 1.2 GB, Threads: 9, OpenFDs: 64\n"
            )
        else:
            lines.append(f"{stamp}  INFO shard-0 server::streaming: message {i}\n")
    return lines


def _cycle(sizes: int | Sequence[int]) -> Iterator[int]:
    """An endless iterator over one size or a sequence of sizes."""
    values = [sizes] if isinstance(sizes, int) else list(sizes)
    while True:
        yield from values


def _topic_key(data_dir: Path, path: Path) -> tuple[str, str] | None:
    """(stream, topic) of a path under streams/<s>/topics/<t>/, else None."""
    try:
        parts = path.relative_to(data_dir).parts
    except ValueError:
        return None
    if len(parts) >= 4 and parts[0] == "streams" and parts[2] == "topics":
        return parts[1], parts[3]
    return None
