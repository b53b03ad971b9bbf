"""The streaming ZIP writer: archives zipfile, unzip and verify accept, stored or deflated
as the content asks, the same bytes on any number of threads, ZIP64 past 4 GiB, and
memory flat in the size of a member."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import random
import shutil
import stat
import struct
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from snapshot_agent.archive.verify import verify_archive
from snapshot_agent.archive.writer import (
    IGGY_DATA,
    MANIFEST,
    ArchiveWriter,
    Entry,
    ZipStream,
    compress_threads,
    json_bytes,
)
from snapshot_agent.archive.zipstream import BLOCK

MIB = 1024 * 1024
#: 2001-02-03 04:05:06 UTC: an even second, so the DOS timestamp holds it exactly.
MTIME = 981173106


def text(size: int, seed: int = 1) -> bytes:
    """Log-like lines: compressible, yet not trivially."""
    rng = random.Random(seed)
    lines, n = [], 0
    while n < size:
        line = b"2026-11-26T19:%02d:%02d INFO partition=%d offset=%d id=%032x\n" % (
            rng.randrange(60), rng.randrange(60), rng.randrange(64), n, rng.getrandbits(128),
        )  # fmt: skip
        lines.append(line)
        n += len(line)
    return b"".join(lines)[:size]


def noise(size: int, seed: int = 2) -> bytes:
    """Bytes that do not compress (encrypted or compressed payloads)."""
    return random.Random(seed).randbytes(size)


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    """`data` in chunks of `size` bytes."""
    for at in range(0, len(data), size):
        yield data[at : at + size]


#: Members of every shape: empty, one byte, many blocks in odd chunks, incompressible,
#: a name that is not ASCII.
MEMBERS: dict[str, tuple[bytes, int]] = {
    "empty.txt": (b"", 1),
    "one.txt": (b"x", 1),
    "logs/server.log": (text(3 * MIB + 12345), 100_003),
    "streams/0/00000000000000000000.log": (noise(2 * MIB + 7), MIB),
    "runtime/données é.toml": ("clé = 'valeur'\n".encode() * 500, 4096),
}


def build(level: int, threads: int, members: dict[str, tuple[bytes, int]] = MEMBERS) -> bytes:
    """An archive of `members` from a ZipStream, checked against its own size and sha256."""
    stream = ZipStream(level, threads)
    entries = (Entry(n, pieces(d, c), mtime=MTIME) for n, (d, c) in members.items())
    data = b"".join(stream.archive(entries))
    assert (stream.size, stream.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert [(m.path, m.size, m.sha256) for m in stream.members] == [
        (n, len(d), hashlib.sha256(d).hexdigest()) for n, (d, _) in members.items()
    ]
    return data


def unzip_test(path: Path) -> None:
    """Info-ZIP's unzip reads the archive back without an error (when it is installed)."""
    if shutil.which("unzip") is None:
        return
    done = subprocess.run(["unzip", "-tq", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def data_start(raw: bytes, info: zipfile.ZipInfo) -> int:
    """Where a member's compressed data starts, after its local header."""
    name_len, extra_len = struct.unpack_from("<HH", raw, info.header_offset + 26)
    return info.header_offset + 30 + name_len + extra_len


def stored_size(size: int) -> int:
    """Bytes of `size` bytes as stored deflate blocks: 5 per 64 KiB of each block, 2 to end."""
    full, last = divmod(size, BLOCK)
    headers = full * math.ceil(BLOCK / 0xFFFF) + math.ceil(last / 0xFFFF)
    return size + 5 * headers + 2


def block_type(raw: bytes, info: zipfile.ZipInfo) -> int:
    """The type of a member's first deflate block: 0 stored, 1 fixed, 2 dynamic Huffman."""
    return (raw[data_start(raw, info)] >> 1) & 0b11


@pytest.mark.parametrize(("level", "threads"), [(0, 1), (1, 2), (6, 1), (6, 3), (9, 2)])
def test_every_member_reads_back_byte_for_byte(tmp_path: Path, level: int, threads: int) -> None:
    data = build(level, threads)
    path = tmp_path / "a.zip"
    path.write_bytes(data)
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        assert [i.filename for i in zf.infolist()] == list(MEMBERS)
        for name, (content, _) in MEMBERS.items():
            assert zf.read(name) == content, name
            info = zf.getinfo(name)
            assert info.flag_bits & 0x08  # streamed: CRC and sizes in a data descriptor
            assert info.compress_type == zipfile.ZIP_DEFLATED
            assert info.date_time == (2001, 2, 3, 4, 5, 6)
            assert info.external_attr >> 16 == stat.S_IFREG | 0o644
    unzip_test(path)


def test_the_bytes_depend_only_on_content_and_level() -> None:
    """Not on how the content is chunked nor on how many threads compress it."""
    rechunked = {n: (d, 65_537) for n, (d, _) in MEMBERS.items()}
    first = build(6, 1)
    assert build(6, 2) == first
    assert build(6, 4, rechunked) == first
    assert build(1, 2) != first


def test_a_member_whose_first_block_does_not_shrink_is_stored() -> None:
    members = {
        "noise-then-text": (noise(BLOCK) + text(2 * MIB), MIB),
        "text-then-noise": (text(BLOCK) + noise(2 * MIB), MIB),
        "tiny-noise": (noise(40), 40),
        "text": (text(MIB), MIB),
    }
    raw = build(6, 2, members)
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        info = {i.filename: i for i in zf.infolist()}
    # Decided on the first block, for the whole member: stored blocks throughout.
    for name in ("noise-then-text", "tiny-noise"):
        size = len(members[name][0])
        assert info[name].compress_size == stored_size(size), name
        assert block_type(raw, info[name]) == 0, name
    # The first block shrinks: deflated, and the noise after it costs next to nothing more.
    deflated = info["text-then-noise"]
    assert block_type(raw, deflated) != 0
    assert deflated.compress_size < 2 * MIB + BLOCK // 2
    assert info["text"].compress_size < MIB // 2


def test_level_0_stores_everything() -> None:
    raw = build(0, 1)
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        for info in zf.infolist():
            assert info.compress_size == stored_size(info.file_size), info.filename


def test_entry_metadata_is_kept_within_what_zip_can_say() -> None:
    members = [
        Entry("old", [b"a"], mtime=0.0, mode=0o4755),  # before 1980; setuid
        Entry("far", [b"b"], mtime=1e12, mode=0o600),  # after 2107
        Entry("now", [b"c"]),
    ]
    raw = b"".join(ZipStream().archive(members))
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        old, far, now = zf.infolist()
    assert old.date_time == (1980, 1, 1, 0, 0, 0)
    assert old.external_attr >> 16 == stat.S_IFREG | 0o755  # never setuid: verify refuses it
    assert far.date_time == (2107, 12, 31, 23, 59, 58)
    assert far.external_attr >> 16 == stat.S_IFREG | 0o600
    assert now.date_time[0] >= 2026 and now.external_attr >> 16 == stat.S_IFREG | 0o644


def snapshot_entries(threads: int) -> Iterator[Entry]:
    """Snapshot-shaped members, an inner ZIP among them streamed as chunks of its member."""
    yield Entry("raw/cpu.load/loadavg.txt", [b"0.01 0.02 0.03 1/100 4242\n"])
    yield Entry("raw/logs.journal/journal.txt", pieces(text(3 * MIB), 300_000))
    yield Entry("raw/logs.journal/noise.bin", [noise(MIB + 1)])
    inner = ZipStream(level=1, threads=threads)
    bundle = {"state/info": b"\x00" * 100, "streams/0/0.log": text(2 * MIB, seed=7)}
    # Stored in the outer archive: its members are compressed already.
    yield Entry(IGGY_DATA, inner.archive(Entry(n, [d]) for n, d in bundle.items()), level=0)
    yield Entry("report.json", [json_bytes({"summary": {"pass": 1}})])


@pytest.mark.parametrize("threads", [1, 2])
def test_verify_accepts_what_the_writer_writes(tmp_path: Path, threads: int) -> None:
    path = tmp_path / "snapshot.zip"
    with path.open("wb") as sink:
        writer = ArchiveWriter(sink, level=6, threads=threads)
        writer.add_all(snapshot_entries(threads))
        doc = {"schema_version": 1, "members": [m.to_dict() for m in writer.members]}
        writer.add(Entry(MANIFEST, [json_bytes(doc)]))
        size, sha256 = writer.close()
    raw = path.read_bytes()
    assert (size, sha256) == (len(raw), hashlib.sha256(raw).hexdigest())
    result = verify_archive(path)
    assert result.ok, result.problems
    assert result.checked == 5
    unzip_test(path)
    with zipfile.ZipFile(path) as outer:
        inner = zipfile.ZipFile(io.BytesIO(outer.read(IGGY_DATA)))
        bundled = outer.getinfo(IGGY_DATA)
    assert bundled.compress_size == stored_size(bundled.file_size)
    assert inner.testzip() is None
    assert inner.read("streams/0/0.log") == text(2 * MIB, seed=7)


def zeros(size: int) -> Iterator[bytes]:
    """`size` zero bytes, one shared MiB at a time."""
    chunk = bytes(MIB)
    full, last = divmod(size, MIB)
    for _ in range(full):
        yield chunk
    yield bytes(last)


@pytest.mark.slow
def test_a_member_past_4_gib_is_declared_zip64(tmp_path: Path) -> None:
    """Written and read back, as a stream both ways (verify's ZIP64 checks: test_verify)."""
    size = 4 * 1024 * MIB + MIB + 7  # past 4 GiB, and not a whole number of blocks
    path = tmp_path / "big.zip"
    with path.open("wb") as sink:
        writer = ArchiveWriter(sink, level=1, threads=2)
        writer.add(Entry("raw/disk.usage/zeros.bin", zeros(size)))
        writer.add(Entry("raw/disk.usage/after.txt", [b"after the big one"]))
        writer.close()
    raw = path.read_bytes()  # some 19 MB
    with zipfile.ZipFile(path) as zf:
        big, after = zf.infolist()
        # The directory defers the size to the ZIP64 field; the offset after it too.
        assert struct.unpack_from("<HHQ", big.extra) == (1, 8, size)
        assert after.header_offset < 2**31 and after.extra == b""
        start = data_start(raw, big) + big.compress_size  # the ZIP64 data descriptor
        assert struct.unpack_from("<4sIQQ", raw, start) == (
            b"PK\x07\x08",
            big.CRC,
            big.compress_size,
            size,
        )
        seen = 0
        with zf.open(big) as member:  # zipfile checks the CRC at the end
            while piece := member.read(MIB):
                assert piece.count(0) == len(piece)
                seen += len(piece)
        assert seen == size
        assert zf.read(after) == b"after the big one"


#: Runs in a child: RSS peak (VmHWM) after a warm-up archive, then after a 1 GiB one.
FLAT = """
import os, sys
from snapshot_agent.archive.writer import ArchiveWriter, Entry

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

line = b"%08d some log text that compresses, with a counter in it\\n"
block = b"".join(line % i for i in range(16384))  # 1 MiB of text
noise = os.urandom(1024 * 1024)
mib = int(sys.argv[1])

def member(n, chunk):
    return (chunk for _ in range(n))

def archive(n):
    with open(os.devnull, "wb") as sink:
        writer = ArchiveWriter(sink, level=1, threads=2)
        writer.add(Entry("raw/a.b/text", member(n * 3 // 4, block)))
        writer.add(Entry("raw/a.b/noise", member(n // 4, noise)))
        return writer.close()

archive(8)
before = hwm()
archive(mib)
print(before, hwm())
"""


def test_memory_stays_flat_in_member_size() -> None:
    done = subprocess.run(
        [sys.executable, "-c", FLAT, "1024"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    before, after = map(int, done.stdout.split())
    # 2 threads: at most 4 blocks in flight, in and out, and two deflate states.
    assert after - before < 24 * MIB, (before, after)


def failing(after: int) -> Iterable[bytes]:
    """A source that breaks after `after` MiB, as a file gone bad would."""
    yield from zeros(after * MIB)
    raise OSError(5, "Input/output error")


def deflate_threads() -> list[threading.Thread]:
    """The writer's compressing threads still alive."""
    return [t for t in threading.enumerate() if t.name.startswith("deflate")]


def test_a_failing_source_stops_the_writer_cleanly(tmp_path: Path) -> None:
    with (tmp_path / "a.zip").open("wb") as sink:
        writer = ArchiveWriter(sink, level=6, threads=2)
        writer.add(Entry("raw/a.b/ok", [b"fine"]))
        with pytest.raises(OSError, match="Input/output error"):
            writer.add(Entry("raw/a.b/bad", failing(8)))
        writer.abandon()
    assert [m.path for m in writer.members] == ["raw/a.b/ok"]
    assert not deflate_threads()


def test_an_abandoned_member_releases_the_threads() -> None:
    stream = ZipStream(level=6, threads=2)
    member = stream.entry(Entry("big", (text(BLOCK) for _ in range(64))))
    next(member), next(member), next(member)
    with pytest.raises(RuntimeError, match="one member at a time"):
        next(stream.entry(Entry("other", [b"x"])))
    member.close()
    stream.close()
    assert not deflate_threads()
    assert stream.members == []
    # Its first bytes are out: nothing more can make a valid archive of this one.
    with pytest.raises(RuntimeError, match="'big' was left unfinished"):
        next(stream.finish())


def test_nothing_follows_the_directory() -> None:
    stream = ZipStream()
    b"".join(stream.archive([Entry("a", [b"a"])]))
    with pytest.raises(RuntimeError, match="finished"):
        next(stream.entry(Entry("b", [b"b"])))


def test_manifest_of_members_is_json() -> None:
    stream = ZipStream()
    for _ in stream.entry(Entry("a", [b"abc"])):
        pass
    assert json.loads(json_bytes([m.to_dict() for m in stream.members])) == [
        {"path": "a", "size": 3, "sha256": hashlib.sha256(b"abc").hexdigest()}
    ]


def test_threads_default_to_the_usable_cores() -> None:
    assert compress_threads(3) == 3
    assert compress_threads(None) == min(4, len(os.sched_getaffinity(0)))
