"""Raw heads: the tee passes the bytes unchanged and keeps only the head; a head read back
from the archive is the same head; memory stays flat whatever the member's size."""

from __future__ import annotations

import io
import tracemalloc
import zipfile
from collections.abc import Iterator

from snapshot_agent.render.raw import HEAD_BYTES, RawHeads, head_of, heads_from_zip

LINES = b"".join(b"line %05d: ok\n" % n for n in range(5000))  # 75 KB of 15-byte lines


def chunked(data: bytes, size: int) -> list[bytes]:
    """`data` in pieces of `size` bytes."""
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_tee_passes_every_chunk_unchanged_and_keeps_the_head_to_a_line_end() -> None:
    heads = RawHeads()
    chunks = chunked(LINES, 4000)
    assert list(heads.tee("raw/a/log.txt", chunks)) == chunks
    head = heads.heads()["raw/a/log.txt"]
    assert head.size == len(LINES) and head.truncated
    assert len(head.text) <= HEAD_BYTES and head.text.endswith("\n")
    assert LINES.decode().startswith(head.text)
    assert len(head.text) > HEAD_BYTES - 15  # cut at the last whole line, not earlier


def test_a_small_member_is_whole_and_empty_ones_are_kept() -> None:
    heads = RawHeads()
    list(heads.tee("raw/a/x.txt", [b"one\n", b"two"]))
    list(heads.tee("raw/a/empty.txt", []))
    got = heads.heads()
    assert (got["raw/a/x.txt"].text, got["raw/a/x.txt"].truncated) == ("one\ntwo", False)
    assert (got["raw/a/empty.txt"].text, got["raw/a/empty.txt"].size) == ("", 0)


def test_invalid_utf8_is_replaced_and_a_cut_sequence_dropped() -> None:
    assert head_of("p", b"ok \xff\xfe end\n", 12).text == "ok \ufffd\ufffd end\n"
    # One line longer than the head, cut inside a 3-byte character: no stray U+FFFD.
    line = ("é" * 5 + "€").encode()  # ends with E2 82 AC
    head = head_of("p", line[:-1], len(line) + 100)
    assert head.text == "é" * 5 and head.truncated


def test_memory_stays_flat_through_a_50_mb_member() -> None:
    def flood() -> Iterator[bytes]:
        for _ in range(800):  # 50 MB in 64 KiB chunks, made as they are read
            yield (b"x" * 1023 + b"\n") * 64

    heads = RawHeads()
    tracemalloc.start()
    try:
        total = sum(len(c) for c in heads.tee("raw/big/flood.txt", flood()))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    head = heads.heads()["raw/big/flood.txt"]
    assert total == head.size == 50 * 1024 * 1024
    assert peak < 512 * 1024, peak  # a chunk or two in flight, never the member
    assert len(head.text) == HEAD_BYTES and head.truncated


def test_heads_from_zip_equal_the_tee_and_read_only_the_head() -> None:
    members = {
        "raw/a/log.txt": LINES,
        "raw/a/bin.dat": bytes(range(256)) * 100,
        "raw/b/small.txt": b"hello\n",
        "raw/b/huge.txt": b"y" * (40 * 1024 * 1024),
        "report.json": b"{}",
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    teed = RawHeads()
    for name, data in members.items():
        if name.startswith("raw/"):
            list(teed.tee(name, chunked(data, 65536)))
    with zipfile.ZipFile(buffer) as zf:
        tracemalloc.start()
        try:
            read = heads_from_zip(zf)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert read == teed.heads()
    assert set(read) == {n for n in members if n.startswith("raw/")}
    assert peak < 2 * 1024 * 1024, peak  # the 40 MB member was never read whole


def test_heads_from_zip_skips_a_damaged_member() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("raw/a/good.txt", b"fine\n")
        zf.writestr("raw/a/bad.txt", b"z" * 100_000)
        bad = zf.getinfo("raw/a/bad.txt")
    data = bytearray(buffer.getvalue())
    at = bad.header_offset + 30 + len(bad.filename) + len(bad.extra)
    data[at : at + 8] = b"\xff" * 8  # deflate block type 3: invalid from the first byte
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        read = heads_from_zip(zf)
    assert read["raw/a/good.txt"].text == "fine\n"
    assert "raw/a/bad.txt" not in read
