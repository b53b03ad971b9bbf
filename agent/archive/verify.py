"""Checking an archive against its manifest: every member present, same size, same sha256.

The archive handed to `verify` may be hostile, so it is read within fixed bounds (the
central directory, the manifest, one chunk of a member at a time) and every entry must be
one the agent writes: report.json, report.html, manifest.json, iggy-data.zip, or a plain
file under raw/<check id>/. Anything else (a path climbing out, a link, a directory, a
duplicate name, an encrypted or oddly compressed entry, overlapping data) is a problem of
its own and its content is never trusted.
"""

from __future__ import annotations

import hashlib
import re
import stat
import struct
import zipfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, BinaryIO

import msgspec
from msgspec import Meta

from snapshot_agent.archive.writer import (
    CHECK_ID,
    CHUNK,
    MANIFEST,
    RAW_DIR,
    TOP_LEVEL_MEMBERS,
)
from snapshot_agent.errors import UsageError

#: More members than any snapshot holds (a few per check); bounds what zipfile allocates.
MAX_MEMBERS = 50_000
#: A central directory of MAX_MEMBERS entries with paths of a few hundred bytes.
MAX_DIRECTORY_BYTES = 16 * 1024 * 1024
#: A manifest listing MAX_MEMBERS members fits well within this.
MAX_MANIFEST_BYTES = 16 * 1024 * 1024

#: The only compression methods the agent writes (deflate; stored for a bundled ZIP).
_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}
#: General purpose flags for traditional (bit 0) and strong (bit 6) encryption.
_ENCRYPTED = 0x01 | 0x40
#: The MS-DOS "directory" attribute in the low byte of external_attr.
_DOS_DIRECTORY = 0x10
#: Fixed part of a local file header, before its name and extra field.
_LOCAL_HEADER_SIZE = 30
#: Fixed part of a central directory entry, and its signature.
_CENTRAL_ENTRY = struct.Struct("<4s24xHHH12x")
_CENTRAL_SIGNATURE = b"PK\x01\x02"
_DRIVE = re.compile(r"^[A-Za-z]:")
_NOT_AGENT_MEMBER = (
    "not a member the agent writes (report.json, report.html, manifest.json, "
    "iggy-data.zip, raw/<check id>/<path>)"
)


class _Listed(msgspec.Struct, frozen=True):
    """One member as manifest.json lists it."""

    path: Annotated[str, Meta(min_length=1)]
    size: Annotated[int, Meta(ge=0)]
    sha256: Annotated[str, Meta(pattern="^[0-9a-f]{64}$")]


class _Manifest(msgspec.Struct, frozen=True):
    """The part of manifest.json that verify reads; other fields are skipped unbuilt."""

    members: Annotated[list[_Listed], Meta(max_length=MAX_MEMBERS)]


_MANIFEST_DECODER = msgspec.json.Decoder(_Manifest)


@dataclass
class Verification:
    """What verify found."""

    checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No member missing, extra, different or refused."""
        return not self.problems

    def add(self, name: str, problem: str) -> None:
        """Record one problem with a member, on one line whatever its name holds."""
        self.problems.append(f"{_shown(name)}: {problem}")


def verify_archive(path: Path) -> Verification:
    """Recompute every member's digest and compare with manifest.json."""
    _check_path(path)
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    with fh:
        _bound_directory(fh, path)
        with _open_zip(fh, path) as zf:
            return _verify(zf, path)


def _check_path(path: Path) -> None:
    """Refuse anything but an existing regular file, saying what was given instead."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file; pass the path of a snapshot .zip") from None
    except OSError as exc:  # a name too long, a loop of links, a file as a directory
        raise UsageError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise UsageError(
            f"{path}: is a directory; pass the snapshot .zip file itself "
            f"(e.g. {path / 'snapshot-*.zip'})"
        )
    if not stat.S_ISREG(mode):
        raise UsageError(f"{path}: not a regular file; pass the path of a snapshot .zip")


def _bound_directory(fh: BinaryIO, path: Path) -> None:
    """Refuse a central directory larger than any snapshot's before zipfile loads it whole."""
    # zipfile reads the whole central directory and builds an object per entry at open;
    # its private end-record reader is the only way to see the same directory first.
    try:
        end = zipfile._EndRecData(fh)  # type: ignore[attr-defined]
    except (OSError, struct.error):
        return  # zipfile reports an unreadable end record itself
    if not end:
        return
    size = end[zipfile._ECD_SIZE]  # type: ignore[attr-defined]
    if size > MAX_DIRECTORY_BYTES:
        raise UsageError(
            f"{path}: its ZIP directory is {size} bytes, more than the "
            f"{MAX_DIRECTORY_BYTES} of any snapshot archive; not a snapshot, refusing to read it"
        )
    fh.seek(max(_directory_start(end), 0))
    if _count_entries(fh.read(size), MAX_MEMBERS + 1) > MAX_MEMBERS:
        raise UsageError(
            f"{path}: its ZIP directory lists more than {MAX_MEMBERS} entries, more than "
            "any snapshot archive; not a snapshot, refusing to read it"
        )


def _directory_start(end: list[int]) -> int:
    """Where zipfile will look for the central directory, computed as its own reader does."""
    size, offset = end[zipfile._ECD_SIZE], end[zipfile._ECD_OFFSET]  # type: ignore[attr-defined]
    prepended = end[zipfile._ECD_LOCATION] - size - offset  # type: ignore[attr-defined]
    if end[zipfile._ECD_SIGNATURE] == zipfile.stringEndArchive64:  # type: ignore[attr-defined]
        prepended -= zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator  # type: ignore[attr-defined]
    return offset + prepended


def _count_entries(directory: bytes, limit: int) -> int:
    """How many central directory entries `directory` holds, counting no further than limit."""
    count = pos = 0
    while count < limit and pos + _CENTRAL_ENTRY.size <= len(directory):
        signature, name, extra, comment = _CENTRAL_ENTRY.unpack_from(directory, pos)
        if signature != _CENTRAL_SIGNATURE:
            break  # zipfile refuses the directory itself
        pos += _CENTRAL_ENTRY.size + name + extra + comment
        count += 1
    return count


def _open_zip(fh: BinaryIO, path: Path) -> zipfile.ZipFile:
    """The archive as zipfile reads it; any failure is a one-line error about the file."""
    try:
        return zipfile.ZipFile(fh)
    except Exception as exc:  # hostile bytes raise more than BadZipFile (ValueError, ...)
        raise UsageError(
            f"{path}: not a readable ZIP archive ({_reason(exc)}); is it complete?"
        ) from None


def _verify(zf: zipfile.ZipFile, path: Path) -> Verification:
    """Refuse entries the agent never writes, then check the others against the manifest."""
    result = Verification()
    entries = _by_name(zf.infolist())
    if MANIFEST not in entries:
        raise UsageError(f"{path}: has no {MANIFEST}; not a snapshot archive")
    refused = _refusals(zf, entries)
    if MANIFEST in refused:
        _add_refusals(result, refused)
        result.add(MANIFEST, "refused (see above), so no member's digest was checked")
        return result
    listed = _read_manifest(zf, entries[MANIFEST][0], path)
    expected = {m.path: m for m in listed}
    for name in refused.keys() - expected.keys() - {MANIFEST}:
        refused[name].insert(0, "in the archive but not in the manifest")
    _add_refusals(result, refused)
    for name, times in Counter(m.path for m in listed).items():
        if times > 1:
            result.add(name, f"listed {times} times in the manifest")
    accepted = entries.keys() - refused.keys() - {MANIFEST}
    for name in sorted(accepted - expected.keys()):
        result.add(name, "in the archive but not in the manifest")
    for name in sorted(expected.keys() - entries.keys()):
        result.add(name, "listed in the manifest but missing")
    for name in sorted(accepted & expected.keys()):
        result.checked += 1
        problem = _check_member(zf, entries[name][0], expected[name])
        if problem:
            result.add(name, problem)
    return result


def _add_refusals(result: Verification, refused: dict[str, list[str]]) -> None:
    """One line per refused name, with all its reasons."""
    for name in sorted(refused):
        result.add(name, "; ".join(refused[name]))


def _by_name(infos: Iterable[zipfile.ZipInfo]) -> dict[str, list[zipfile.ZipInfo]]:
    """Central directory entries grouped by the name zipfile gives them."""
    entries: dict[str, list[zipfile.ZipInfo]] = {}
    for info in infos:
        entries.setdefault(info.filename, []).append(info)
    return entries


def _refusals(
    zf: zipfile.ZipFile, entries: dict[str, list[zipfile.ZipInfo]]
) -> dict[str, list[str]]:
    """Every name whose entries the agent would never write, with the reasons."""
    refused: dict[str, list[str]] = {}
    for name, infos in entries.items():
        reasons = [f"appears {len(infos)} times in the archive"] if len(infos) > 1 else []
        for info in infos:
            reasons += _entry_problems(info)
        if reasons:
            refused[name] = list(dict.fromkeys(reasons))
    for name, reason in _overlaps(zf.infolist(), zf.start_dir).items():
        refused.setdefault(name, []).append(reason)
    return refused


def _entry_problems(info: zipfile.ZipInfo) -> list[str]:
    """What makes one central directory entry something the agent never writes."""
    problems = [p for p in (_kind_problem(info), _name_problem(info)) if p]
    if info.flag_bits & _ENCRYPTED:
        problems.append("is encrypted (the agent never encrypts a member)")
    if info.compress_type not in _METHODS:
        problems.append(
            f"uses compression method {info.compress_type} "
            "(the agent writes only deflated or stored members)"
        )
    if (info.external_attr >> 16) & 0o7000:
        problems.append("carries setuid, setgid or sticky bits (the agent never sets them)")
    return problems


def _kind_problem(info: zipfile.ZipInfo) -> str | None:
    """A link, directory or special file: the agent writes only regular files."""
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "is a symbolic link (an extractor would create it and write through it)"
    if info.is_dir() or stat.S_ISDIR(mode) or info.external_attr & _DOS_DIRECTORY:
        held = f" holding {info.file_size} bytes" if info.file_size or info.compress_size else ""
        return f"is a directory entry{held} (the agent writes none)"
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
        return f"is a special file (mode {mode:o}; the agent writes only regular files)"
    return None


def _name_problem(info: zipfile.ZipInfo) -> str | None:
    """A name that escapes the extraction directory or is outside the archive's layout."""
    name = info.orig_filename
    if "\0" in name:  # zipfile cuts the name there, other tools may not
        return "has a NUL byte in its name (tools disagree on what it is called)"
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "is an absolute path (extracting it would write outside the target directory)"
    # Windows extractors split on backslashes too; a backslash inside a component is
    # legitimate (systemd escapes such as status-dev-disk-by\x2duuid.device.txt).
    if ".." in re.split(r"[/\\]", name):
        return "climbs out with '..' (extracting it would write outside the target directory)"
    if name in TOP_LEVEL_MEMBERS:
        return None
    top, _, rest = name.partition("/")
    check_id, _, relative = rest.partition("/")
    if top == RAW_DIR and CHECK_ID.fullmatch(check_id) and relative.strip("/"):
        return None
    return _NOT_AGENT_MEMBER


def _overlaps(infos: list[zipfile.ZipInfo], directory_start: int) -> dict[str, str]:
    """Entries whose data runs into the next entry or the directory (a zip bomb's trick)."""
    ordered = sorted(infos, key=lambda i: i.header_offset)
    found: dict[str, str] = {}
    for info, after in zip(ordered, [*ordered[1:], None], strict=True):
        # A lower bound of the entry's length: its name and extra field come on top.
        end = info.header_offset + _LOCAL_HEADER_SIZE + info.compress_size
        if after is not None and end > after.header_offset:
            found[info.filename] = f"overlaps the data of {_shown(after.filename)}"
        elif after is None and end > directory_start:
            found[info.filename] = "overlaps the ZIP directory"
    return found


def _read_manifest(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> list[_Listed]:
    """manifest.json's members, read within MAX_MANIFEST_BYTES and checked for shape."""
    too_big = (
        f"{path}: {MANIFEST} is bigger than the {MAX_MANIFEST_BYTES} bytes of any snapshot "
        "manifest; not a snapshot archive, refusing to read it"
    )
    if info.file_size > MAX_MANIFEST_BYTES:
        raise UsageError(too_big)
    try:
        with zf.open(info) as fh:
            data = fh.read(MAX_MANIFEST_BYTES + 1)
    except Exception as exc:  # CRC, truncation, decompression: all about this file
        raise UsageError(f"{path}: {MANIFEST} is unreadable ({_reason(exc)})") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise UsageError(too_big)
    try:
        return _MANIFEST_DECODER.decode(data).members
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        reason = _reason(exc)
    except RecursionError:
        reason = "nested too deeply"
    raise UsageError(f"{path}: {MANIFEST} is not a snapshot manifest ({reason})")


def _check_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, expected: _Listed) -> str | None:
    """Stream one member through sha256, a chunk at a time; what differs, if anything."""
    digest = hashlib.sha256()
    size = 0
    try:
        with zf.open(info) as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except Exception as exc:  # CRC mismatches, truncation, bad deflate data, header tricks
        return f"unreadable ({_reason(exc)})"
    if size != expected.size:
        return f"size {size} differs from the manifest's {expected.size}"
    if digest.hexdigest() != expected.sha256:
        return "sha256 differs from the manifest (modified or corrupted)"
    return None


def _reason(exc: BaseException) -> str:
    """An exception as one short line."""
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__


def _shown(name: str) -> str:
    """A member name on one line: control characters escaped, never a line break."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in name)
