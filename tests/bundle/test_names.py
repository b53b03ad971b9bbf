"""Member names of node files: never a `.` or `..` part, split on `/` or on the backslash."""

from __future__ import annotations

import os
import re
from pathlib import Path, PureWindowsPath

import pytest

from snapshot_agent.bundle.names import escape_path, member_name

from .helpers import NODE_DIR, run_bundle

#: Names a hostile (or careless) writer could give a file in the data directory.
DOTTY = [
    b"..\\..\\evil",
    b"..\\evil",
    b".\\evil",
    b"..\\",
    b"\\..\\evil",
    b"a\\..\\..\\b",
    b"...",
    b".. ",
    b"..foo",
    b".hidden",
    b".",
    b"..",
    b"\\x2e.",  # what an escaped `..` looks like, as a real name: must not collide
    b"\\",
]
ESCAPE = re.compile(r"\\(?:x([0-9a-f]{2})|u([0-9a-f]{4})|U([0-9a-f]{8}))")


def unescape(text: str) -> bytes:
    """The original bytes of an escaped part: every backslash starts an escape."""
    out = bytearray()
    at = 0
    for found in ESCAPE.finditer(text):
        assert "\\" not in text[at : found.start()], text  # no backslash outside an escape
        out += text[at : found.start()].encode()
        byte, short, long = found.groups()
        out += bytes([int(byte, 16)]) if byte else chr(int(short or long, 16)).encode()
        at = found.end()
    assert "\\" not in text[at:], text
    return bytes(out + text[at:].encode())


def pieces(name: str) -> list[str]:
    """The parts an extractor that splits on both `/` and the backslash would see (an
    empty one, between two separators, is no part: `a//b` is `a/b`)."""
    return [piece for piece in re.split(r"[/\\]", name) if piece]


def test_the_audited_name() -> None:
    assert member_name("data", b"..\\..\\evil") == "data/\\x2e.\\x5c..\\x5cevil"
    assert pieces(member_name("data", b"..\\..\\evil")) == ["data", "x2e.", "x5c..", "x5cevil"]


@pytest.mark.parametrize("raw", DOTTY, ids=repr)
@pytest.mark.parametrize("parent", [b"", b"dir/"])
def test_no_dot_or_dot_dot_part_either_way(parent: bytes, raw: bytes) -> None:
    name = member_name("data", parent + raw)
    assert not {".", ".."} & set(pieces(name)), name
    # A Windows path of it stays where it was put.
    assert ".." not in PureWindowsPath(name).parts and not PureWindowsPath(name).anchor


def test_names_are_one_to_one_and_read_back() -> None:
    names = [*DOTTY, b"\\x2e\\x2e", b"x2e.", b"\xff..", b"..\xff", b"a\nb"]
    escaped = [escape_path(n) for n in names]
    assert len(set(escaped)) == len(names)
    for raw, text in zip(names, escaped, strict=True):
        if raw not in (b".", b".."):  # also read back the only ways a walk could not give
            assert unescape(text) == raw, (raw, text)
    assert [unescape(escape_path(n)) for n in (b".", b"..")] == [b".", b".."]


def test_only_the_leading_dot_of_a_part_is_escaped() -> None:
    assert escape_path(b"...") == "\\x2e.."
    assert escape_path(b".hidden/.x/a..b/..") == ".hidden/.x/a..b/\\x2e."
    assert (
        escape_path(b"streams/1/00000000000000000000.log") == "streams/1/00000000000000000000.log"
    )


def test_a_bundle_names_members_listing_and_skips_alike(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "..\\..\\evil").write_bytes(b"evil\n")
    (data / "...").write_bytes(b"dots\n")
    os.mkfifo(data / "..\\fifo")  # a skip, listed and in the manifest's skips
    bundled = run_bundle(data, tmp_path / "iggy-data.zip")
    names = bundled.zip.namelist()
    assert "data/\\x2e.\\x5c..\\x5cevil" in names and "data/\\x2e.." in names
    for name in names:
        assert not {".", ".."} & set(pieces(name)), name
    assert bundled.data()["\\x2e.\\x5c..\\x5cevil"] == b"evil\n"
    assert bundled.listing["\\x2e.\\x5c..\\x5cevil"]["bundled"] == "yes"
    assert bundled.listing["\\x2e.."]["bundled"] == "yes"
    fifo = "\\x2e.\\x5cfifo"
    assert bundled.listing[fifo]["bundled"] == "no"
    assert f"{NODE_DIR}/{fifo}" in bundled.skipped()
