"""Checking an archive against its manifest: every member present, same size, same sha256.

The archive handed to `verify` may be hostile, so it is read within fixed bounds (the
central directory, the manifest, one chunk of a member at a time) and every entry must be
one the agent writes: report.json, report.html, manifest.json, iggy-data.zip, or a plain
file under raw/<check id>/. Anything else (a path climbing out, a link, a directory, a
duplicate name, an encrypted or oddly compressed entry, an extra field other than ZIP64)
is a problem of its own and its content is never trusted.

Extractors do not all read a ZIP the same way: unzip and zipfile start from the central
directory at the end, streaming extractors walk the local headers from the start. So the
archive must also be laid out exactly as the writer lays it out, with one reading only:
local entries back to back from byte 0 to the directory, each local header agreeing with
its directory entry, each deflate stream ending where its entry ends, and the end records
closing the file.

manifest.sig, the node key's signature of manifest.json (see signing.py), is the one
member the manifest does not list. With a public key given, it must be present and
valid; without one, a well-formed signature is reported as present but not checked
(anyone can sign with a key of their own: only a key the verifier holds proves anything).
An encrypted snapshot (`.zip.enc`) is refused with the advice to decrypt it first.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import struct
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, BinaryIO

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from msgspec import Meta

from snapshot_agent.archive.crypto import MAGIC
from snapshot_agent.archive.signing import (
    MAX_SIGNATURE_BYTES,
    check_signature,
    load_public_key,
    parse_signature,
)
from snapshot_agent.archive.writer import (
    CHUNK,
    MANIFEST,
    MANIFEST_SIG,
    RAW_DIR,
    TOP_LEVEL_MEMBERS,
    ZIP64_EXTRA_FIELD,
)
from snapshot_agent.core.check import ID_PATTERN
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
#: General purpose flag: CRC and sizes follow the data, in a data descriptor.
_DESCRIPTOR_FLAG = 0x08
#: General purpose flag: the name is UTF-8 (otherwise code page 437).
_UTF8_FLAG = 0x800
#: The MS-DOS "directory" attribute in the low byte of external_attr.
_DOS_DIRECTORY = 0x10
#: A 32-bit size or offset field meaning "see the ZIP64 extra field".
_SATURATED = 0xFFFF_FFFF
#: The Info-ZIP Unicode Path extra field: unzip extracts the entry under the name it holds.
_UNICODE_PATH_FIELD = 0x7075

# The records of APPNOTE 4.3 as the writer produces them, fields verify reads (the rest
# skipped); each begins with its signature.
_LOCAL = struct.Struct("<4s2xHH4xIIIHH")  # flags, method, crc, sizes, name and extra length
_LOCAL_SIGNATURE = b"PK\x03\x04"
_CENTRAL = struct.Struct("<4s16xIIHHH8xI")  # sizes, name/extra/comment length, offset
_CENTRAL_SIGNATURE = b"PK\x01\x02"
_DESCRIPTOR = struct.Struct("<4sIII")  # crc, compressed size, size
_DESCRIPTOR64 = struct.Struct("<4sIQQ")  # the same after a local ZIP64 field
_DESCRIPTOR_SIGNATURE = b"PK\x07\x08"
_END = struct.Struct("<4sHHHHIIH")  # disks, entries (here, total), size, offset, comment
_END_SIGNATURE = b"PK\x05\x06"
_LOCATOR = struct.Struct("<4sIQI")  # disk of the ZIP64 end record, its offset, disks
_LOCATOR_SIGNATURE = b"PK\x06\x07"
_END64 = struct.Struct("<4sQ4xIIQQQQ")  # record size, disks, entries, size, offset
_END64_SIGNATURE = b"PK\x06\x06"

_DRIVE = re.compile(r"^[A-Za-z]:")
_NOT_AGENT_MEMBER = (
    "not a member the agent writes (report.json, report.html, manifest.json, "
    "iggy-data.zip, raw/<check id>/<path>)"
)
#: The name problems of the archive's layout, rather than of one member, are shown under.
_LAYOUT = "(ZIP layout)"
#: The members the manifest does not list: itself, and its signature.
_UNLISTED = frozenset({MANIFEST, MANIFEST_SIG})


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
    #: What became of manifest.sig, as one line for a person ("valid: ...", "none: ...").
    signature: str = "not checked"

    @property
    def ok(self) -> bool:
        """No member missing, extra, different or refused."""
        return not self.problems

    def add(self, name: str, problem: str) -> None:
        """Record one problem with a member, on one line whatever its name holds."""
        self.problems.append(f"{_shown(name)}: {problem}")


@dataclass(frozen=True)
class _End:
    """Where the end records put the central directory."""

    start: int  # where it is: just before the end records
    size: int
    offset: int  # where the end record says it is (differs when bytes were prepended)
    count: int


@dataclass(frozen=True)
class _Central:
    """What verify needs of a raw central directory entry that zipfile does not keep."""

    saturated: int  # how many of its size and offset fields defer to its ZIP64 field


@dataclass(frozen=True)
class _Entry:
    """A directory entry, where its local entry lies, and why the agent would never write it."""

    info: zipfile.ZipInfo
    data: int  # where its compressed data starts
    end: int  # just past its data and data descriptor (a lower bound when damaged)
    problems: tuple[str, ...]


class _Unreadable(Exception):
    """A member's data is not what its entry says (damaged, cut short, or more than it)."""


def verify_archive(path: Path, public_key: Path | None = None) -> Verification:
    """Recompute every member's digest and compare with manifest.json; with `public_key`
    (the node's .pub), manifest.sig must be present and made by that key."""
    _check_path(path)
    public = load_public_key(public_key) if public_key is not None else None
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    with fh:
        try:
            if fh.read(len(MAGIC)) == MAGIC:
                raise UsageError(
                    f"{path}: an encrypted snapshot; decrypt it first "
                    "(snapshot-agent decrypt FILE.zip.enc with a recipient's private key), "
                    "then verify the .zip"
                )
            end = _read_end(fh, path)
            centrals = _read_directory(fh, end, path)
            infos = _read_infos(fh, path)
            if len(infos) != len(centrals):  # both read the same bytes; never seen
                raise _not_zip(path, "its ZIP directory reads two ways")
            entries = [_entry(fh, i, c) for i, c in zip(infos, centrals, strict=True)]
            return _verify(fh, entries, end, path, public)
        except OSError as exc:  # an I/O error under the file (EIO), not its content
            raise UsageError(f"{path}: cannot be read ({exc.strerror or exc})") from None


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


def _not_zip(path: Path, why: str) -> UsageError:
    """The one-line error for a file that cannot be read as a ZIP archive."""
    return UsageError(f"{path}: not a readable ZIP archive ({why}); is it complete?")


def _split(path: Path) -> UsageError:
    """The one-line error for a multi-disk archive, which no snapshot is."""
    return UsageError(
        f"{path}: a ZIP archive split across disks; a snapshot is a single file, "
        "refusing to read it"
    )


def _read_end(fh: BinaryIO, path: Path) -> _End:
    """The end record in the file's last 22 bytes (the writer adds no comment), and ZIP64's."""
    # Only there: searching back for it, as zipfile and unzip do, finds a different record
    # in each tool when a comment or appended bytes hold another.
    at = fh.seek(0, os.SEEK_END) - _END.size
    if at < 0:
        raise _not_zip(path, "too short to hold a ZIP end record")
    fh.seek(at)
    signature, disk, disk_of_directory, here, count, size, offset, comment = _END.unpack(
        fh.read(_END.size)
    )
    if signature != _END_SIGNATURE or comment:
        raise _not_zip(
            path, "its last 22 bytes are not a ZIP end record: cut short, or appended to"
        )
    if disk or disk_of_directory or here != count:
        raise _split(path)
    if at >= _LOCATOR.size:
        fh.seek(at - _LOCATOR.size)
        locator = fh.read(_LOCATOR.size)
        if locator.startswith(_LOCATOR_SIGNATURE):
            return _read_end64(fh, path, at - _LOCATOR.size, locator, (count, size, offset))
    if size > at:
        raise _not_zip(path, f"its end record gives a {size}-byte ZIP directory the file lacks")
    return _End(start=at - size, size=size, offset=offset, count=count)


def _read_end64(
    fh: BinaryIO, path: Path, locator_at: int, locator: bytes, plain: tuple[int, int, int]
) -> _End:
    """The ZIP64 end record just before its locator, agreeing with the plain end record."""
    _, disk, where, disks = _LOCATOR.unpack(locator)
    if disk or disks != 1:
        raise _split(path)
    at = locator_at - _END64.size
    if at < 0 or where != at:
        raise _not_zip(path, "its ZIP64 end record is not just before its locator")
    fh.seek(at)
    signature, length, disk, disk_of_directory, here, count, size, offset = _END64.unpack(
        fh.read(_END64.size)
    )
    if signature != _END64_SIGNATURE or length != _END64.size - 12:
        raise _not_zip(path, "its ZIP64 end record is damaged")
    if disk or disk_of_directory or here != count:
        raise _split(path)
    # The writer saturates what does not fit; any other value is a second directory.
    if plain != (min(count, 0xFFFF), min(size, _SATURATED), min(offset, _SATURATED)):
        raise _not_zip(path, "its end record and ZIP64 end record disagree")
    if size > at:
        raise _not_zip(path, f"its end record gives a {size}-byte ZIP directory the file lacks")
    return _End(start=at - size, size=size, offset=offset, count=count)


def _read_directory(fh: BinaryIO, end: _End, path: Path) -> list[_Central]:
    """The central directory, within bounds, filled exactly by the entries the end record counts."""
    # zipfile reads the whole central directory and builds an object per entry at open:
    # bound both before it does.
    if end.size > MAX_DIRECTORY_BYTES:
        raise UsageError(
            f"{path}: its ZIP directory is {end.size} bytes, more than the "
            f"{MAX_DIRECTORY_BYTES} of any snapshot archive; not a snapshot, refusing to read it"
        )
    fh.seek(end.start)
    directory = fh.read(end.size)
    centrals, used = _walk_directory(directory, MAX_MEMBERS + 1)
    if len(centrals) > MAX_MEMBERS:
        raise UsageError(
            f"{path}: its ZIP directory lists more than {MAX_MEMBERS} entries, more than "
            "any snapshot archive; not a snapshot, refusing to read it"
        )
    if used != len(directory):
        raise _not_zip(path, "its ZIP directory entries do not fill the directory exactly")
    if len(centrals) != end.count:
        raise _not_zip(
            path, f"its end record counts {end.count} entries, its directory {len(centrals)}"
        )
    return centrals


def _walk_directory(directory: bytes, limit: int) -> tuple[list[_Central], int]:
    """The entries `directory` holds (no more than limit) and how many bytes they fill."""
    centrals: list[_Central] = []
    pos = 0
    while len(centrals) < limit and pos + _CENTRAL.size <= len(directory):
        signature, compressed, size, name, extra, comment, offset = _CENTRAL.unpack_from(
            directory, pos
        )
        if signature != _CENTRAL_SIGNATURE:
            break
        centrals.append(_Central(sum(v == _SATURATED for v in (size, compressed, offset))))
        pos += _CENTRAL.size + name + extra + comment
    return centrals, pos


def _read_infos(fh: BinaryIO, path: Path) -> list[zipfile.ZipInfo]:
    """The directory as zipfile reads it; any failure is a one-line error about the file."""
    try:
        with zipfile.ZipFile(fh) as zf:  # leaves fh open: it was passed in
            return zf.infolist()
    except Exception as exc:  # hostile bytes raise more than BadZipFile (ValueError, ...)
        raise _not_zip(path, _reason(exc)) from None


def _entry(fh: BinaryIO, info: zipfile.ZipInfo, central: _Central) -> _Entry:
    """One directory entry with its local entry and everything the agent would never write."""
    problems = _entry_problems(info)
    problems += _extra_problems(info.extra, central.saturated, "directory entry")
    data, end, local = _local_entry(fh, info)
    return _Entry(info, data, end, tuple(problems + local))


def _verify(
    fh: BinaryIO, entries: list[_Entry], end: _End, path: Path, public: Ed25519PublicKey | None
) -> Verification:
    """Refuse entries the agent never writes, check the others against the manifest, and
    the manifest against its signature."""
    result = Verification()
    by_name = _by_name(entries)
    if MANIFEST not in by_name:
        raise UsageError(f"{path}: has no {MANIFEST}; not a snapshot archive")
    ordered = sorted(entries, key=lambda e: e.info.header_offset)  # as they lie in the file
    for problem in _layout_problems(ordered, end):
        result.add(_LAYOUT, problem)
    refused = _refusals(by_name, _overlaps(ordered, end.start))
    if MANIFEST in refused:
        _add_refusals(result, refused)
        result.add(MANIFEST, "refused (see above), so no member's digest was checked")
        result.signature = f"not checked: {MANIFEST} is refused"
        return result
    manifest, listed = _read_manifest(fh, by_name[MANIFEST][0], path)
    expected = {m.path: m for m in listed}
    if expected.pop(MANIFEST_SIG, None):
        result.add(MANIFEST_SIG, "listed in the manifest (the agent never lists it there)")
    for name in refused.keys() - expected.keys() - _UNLISTED:
        refused[name].insert(0, "in the archive but not in the manifest")
    _add_refusals(result, refused)
    for name, times in Counter(m.path for m in listed).items():
        if times > 1:
            result.add(name, f"listed {times} times in the manifest")
    accepted = by_name.keys() - refused.keys() - _UNLISTED
    for name in sorted(accepted - expected.keys()):
        result.add(name, "in the archive but not in the manifest")
    for name in sorted(expected.keys() - by_name.keys()):
        result.add(name, "listed in the manifest but missing")
    for name in sorted(accepted & expected.keys()):
        result.checked += 1
        problem = _check_member(fh, by_name[name][0], expected[name])
        if problem:
            result.add(name, problem)
    if MANIFEST_SIG in refused:
        result.signature = f"not checked: {MANIFEST_SIG} is refused (see above)"
    else:
        _check_signature(result, fh, by_name.get(MANIFEST_SIG, []), manifest, public)
    return result


def _check_signature(
    result: Verification,
    fh: BinaryIO,
    signatures: list[_Entry],
    manifest: bytes,
    public: Ed25519PublicKey | None,
) -> None:
    """Check manifest.sig (its one entry, if any, not refused) against the manifest's bytes."""
    if not signatures:
        result.signature = f"none: the archive is not signed (no {MANIFEST_SIG})"
        if public is not None:
            result.add(MANIFEST_SIG, "missing, but a signed archive was asked for (--public-key)")
        return
    try:
        member = _signature_bytes(fh, signatures[0])
        try:
            found = parse_signature(member)
        except ValueError as exc:
            raise ValueError(f"malformed ({exc})") from None
        problem = None if public is None else check_signature(manifest, member, public)
    except ValueError as exc:
        problem = str(exc)
    if problem is not None:
        result.add(MANIFEST_SIG, problem)
        result.signature = f"INVALID: {problem}"
    elif public is None:
        result.signature = (
            f"present (key id {found.key_id[:16]}), not checked: "
            "to check it, pass the node's .pub as --public-key"
        )
    else:
        result.signature = f"valid: {MANIFEST} signed by the key given ({found.key_id[:16]})"


def _signature_bytes(fh: BinaryIO, entry: _Entry) -> bytes:
    """manifest.sig's bytes, read within MAX_SIGNATURE_BYTES, or ValueError saying why not."""
    if entry.info.file_size > MAX_SIGNATURE_BYTES:
        raise ValueError(f"larger than the {MAX_SIGNATURE_BYTES} bytes of any signature")
    try:
        return b"".join(_contents(fh, entry))
    except _Unreadable as exc:
        raise ValueError(f"unreadable ({exc})") from None


def _add_refusals(result: Verification, refused: dict[str, list[str]]) -> None:
    """One line per refused name, with all its reasons."""
    for name in sorted(refused):
        result.add(name, "; ".join(refused[name]))


def _by_name(entries: Iterable[_Entry]) -> dict[str, list[_Entry]]:
    """Directory entries grouped by the name zipfile gives them."""
    found: dict[str, list[_Entry]] = {}
    for entry in entries:
        found.setdefault(entry.info.filename, []).append(entry)
    return found


def _refusals(by_name: dict[str, list[_Entry]], overlaps: dict[str, str]) -> dict[str, list[str]]:
    """Every name whose entries the agent would never write, with the reasons."""
    refused: dict[str, list[str]] = {}
    for name, group in by_name.items():
        reasons = [f"appears {len(group)} times in the archive"] if len(group) > 1 else []
        if name in overlaps:
            reasons.append(overlaps[name])
        for entry in group:
            reasons += entry.problems
        if reasons:
            refused[name] = list(dict.fromkeys(reasons))
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
    if info.comment:
        problems.append("carries a comment (the agent writes none)")
    return problems


def _kind_problem(info: zipfile.ZipInfo) -> str | None:
    """A link, directory or special file: the agent writes only regular files."""
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "is a symbolic link (an extractor would create it and write through it)"
    # Not info.is_dir(): it fails on an empty name.
    if info.filename.endswith("/") or stat.S_ISDIR(mode) or info.external_attr & _DOS_DIRECTORY:
        held = f" holding {info.file_size} bytes" if info.file_size or info.compress_size else ""
        return f"is a directory entry{held} (the agent writes none)"
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
        return f"is a special file (mode {mode:o}; the agent writes only regular files)"
    return None


def _name_problem(info: zipfile.ZipInfo) -> str | None:
    """A name that escapes the extraction directory or is outside the archive's layout."""
    name = info.orig_filename
    if not name:
        return "has an empty name"
    if "\0" in name:  # zipfile cuts the name there, other tools may not
        return "has a NUL byte in its name (tools disagree on what it is called)"
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "is an absolute path (extracting it would write outside the target directory)"
    # Windows extractors split on backslashes too; a backslash inside a component is
    # legitimate (systemd escapes such as status-dev-disk-by\x2duuid.device.txt).
    parts = re.split(r"[/\\]", name.removesuffix("/"))
    if ".." in parts:
        return "climbs out with '..' (extracting it would write outside the target directory)"
    if "" in parts or "." in parts:  # extractors drop them: another member's path
        same = "/".join(p for p in name.split("/") if p not in ("", "."))
        return f"has an empty or '.' path component (extractors write it as {_shown(same)})"
    if name in TOP_LEVEL_MEMBERS:
        return None
    top, _, rest = name.partition("/")
    check_id, _, relative = rest.partition("/")
    if top == RAW_DIR and ID_PATTERN.fullmatch(check_id) and relative.strip("/"):
        return None
    return _NOT_AGENT_MEMBER


def _extra_problems(extra: bytes, saturated: int, where: str) -> list[str]:
    """Extra fields the writer never produces, or a ZIP64 field that does not fit its header."""
    fields = _extra_fields(extra)
    if fields is None:
        return [f"has a malformed extra field in its {where}"]
    problems = [
        _field_problem(tag, data, where) for tag, data in fields if tag != ZIP64_EXTRA_FIELD
    ]
    zip64 = [data for tag, data in fields if tag == ZIP64_EXTRA_FIELD]
    # The writer's ZIP64 field holds 8 bytes for each header field it saturated, no more.
    if (zip64 or saturated) and (len(zip64) != 1 or len(zip64[0]) != 8 * saturated):
        problems.append(f"has a ZIP64 field in its {where} that does not match the header")
    return problems


def _extra_fields(extra: bytes) -> list[tuple[int, bytes]] | None:
    """(id, data) of each extra field, or None unless they fill `extra` exactly."""
    fields: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(extra):
        if pos + 4 > len(extra):
            return None
        tag, size = struct.unpack_from("<HH", extra, pos)
        if pos + 4 + size > len(extra):
            return None
        fields.append((tag, extra[pos + 4 : pos + 4 + size]))
        pos += 4 + size
    return fields


def _field_problem(tag: int, data: bytes, where: str) -> str:
    """Why an extra field other than ZIP64 is refused."""
    if tag == _UNICODE_PATH_FIELD:  # version (1 byte), CRC-32 of the header name, the name
        named = _shown(data[5:].decode("utf-8", "replace"))
        return (
            f"carries an Info-ZIP Unicode path field (0x7075) in its {where}: "
            f"extractors that honour it (unzip) write it as {named}"
        )
    return f"carries extra field 0x{tag:04x} in its {where} (the agent writes only ZIP64's, 0x0001)"


def _local_entry(fh: BinaryIO, info: zipfile.ZipInfo) -> tuple[int, int, list[str]]:
    """Where the entry's data starts and its local entry ends; how it differs from the directory."""
    at = info.header_offset
    head = b""
    if at >= 0:  # zipfile shifts offsets by bytes it finds prepended; never below 0 here
        fh.seek(at)
        head = fh.read(_LOCAL.size)
    if len(head) < _LOCAL.size or not head.startswith(_LOCAL_SIGNATURE):
        bound = at + _LOCAL.size + info.compress_size
        return bound, bound, [f"has no local header where the ZIP directory points (byte {at})"]
    _, flags, method, crc, compressed, size, name_length, extra_length = _LOCAL.unpack(head)
    name, extra = fh.read(name_length), fh.read(extra_length)
    data = at + _LOCAL.size + name_length + extra_length
    problems: list[str] = []
    if name != _encoded_name(info):  # streaming extractors take the local header's name
        shown = _shown(name.decode("utf-8" if flags & _UTF8_FLAG else "cp437", "replace"))
        problems.append(f"its local header names it {shown} (streaming extractors use that)")
    if (flags, method) != (info.flag_bits, info.compress_type):
        problems.append(
            "its local header's flags or compression method differ from the directory's"
        )
    saturated = (size == _SATURATED) + (compressed == _SATURATED)
    problems += _extra_problems(extra, saturated, "local header")
    end = data + info.compress_size
    if flags & _DESCRIPTOR_FLAG:
        zip64 = any(tag == ZIP64_EXTRA_FIELD for tag, _ in _extra_fields(extra) or [])
        end, problem = _descriptor(fh, info, end, zip64)
        problems += [problem] if problem else []
    elif (crc, *_sizes(extra, size, compressed)) != (
        info.CRC,
        info.file_size,
        info.compress_size,
    ):
        problems.append("its local header's CRC or sizes differ from the directory's")
    return data, end, problems


def _encoded_name(info: zipfile.ZipInfo) -> bytes:
    """The name's bytes as the directory holds them (zipfile decoded them this way)."""
    return info.orig_filename.encode("utf-8" if info.flag_bits & _UTF8_FLAG else "cp437")


def _sizes(extra: bytes, size: int, compressed: int) -> tuple[int, int]:
    """A local header's (size, compressed size), read from its ZIP64 field where saturated."""
    zip64 = next((d for t, d in _extra_fields(extra) or [] if t == ZIP64_EXTRA_FIELD), b"")
    values = iter(struct.unpack(f"<{len(zip64) // 8}Q", zip64[: len(zip64) // 8 * 8]))
    if size == _SATURATED:
        size = next(values, size)
    if compressed == _SATURATED:
        compressed = next(values, compressed)
    return size, compressed


def _descriptor(
    fh: BinaryIO, info: zipfile.ZipInfo, at: int, zip64: bool
) -> tuple[int, str | None]:
    """Where the data descriptor at `at` ends, and what is wrong with it."""
    if info.compress_type == zipfile.ZIP_STORED:  # only a deflate stream says where it ends
        return at, "is stored with a data descriptor (a streaming extractor cannot find its end)"
    layout = _DESCRIPTOR64 if zip64 else _DESCRIPTOR
    fh.seek(at)
    raw = fh.read(layout.size)
    if len(raw) == layout.size:
        signature, crc, compressed, size = layout.unpack(raw)
        if signature == _DESCRIPTOR_SIGNATURE and (crc, compressed, size) == (
            info.CRC,
            info.compress_size,
            info.file_size,
        ):
            return at + layout.size, None
    return at + layout.size, "its data descriptor is missing or differs from the directory"


def _layout_problems(ordered: list[_Entry], end: _End) -> list[str]:
    """Bytes no entry accounts for: streaming extractors read them, verify cannot vouch for them.

    `ordered`: the entries by header offset.
    """
    problems = []
    if end.offset != end.start:
        problems.append(
            f"its end record puts the ZIP directory at byte {end.offset}, but it starts at "
            f"byte {end.start} (bytes prepended or removed)"
        )
    pos = 0
    for entry in ordered:
        if entry.info.header_offset > pos:
            where = f"before {_shown(entry.info.filename)}"
            problems.append(_unaccounted(pos, entry.info.header_offset, where))
        pos = max(pos, entry.end)
    if pos < end.start:
        problems.append(_unaccounted(pos, end.start, "before the ZIP directory"))
    return problems


def _unaccounted(start: int, stop: int, where: str) -> str:
    """A run of bytes that belongs to no entry, as one problem."""
    return (
        f"bytes {start} to {stop - 1}, {where}, belong to no entry "
        "(a streaming extractor would read them as members)"
    )


def _overlaps(ordered: list[_Entry], directory_start: int) -> dict[str, str]:
    """Entries whose data runs into the next entry or the directory (a zip bomb's trick).

    `ordered`: the entries by header offset.
    """
    found: dict[str, str] = {}
    for entry, after in zip(ordered, [*ordered[1:], None], strict=True):
        name = entry.info.filename
        if after is not None and entry.end > after.info.header_offset:
            found[name] = f"overlaps the data of {_shown(after.info.filename)}"
        elif after is None and entry.end > directory_start:
            found[name] = "overlaps the ZIP directory"
    return found


def _read_manifest(fh: BinaryIO, entry: _Entry, path: Path) -> tuple[bytes, list[_Listed]]:
    """manifest.json's bytes and members, read within MAX_MANIFEST_BYTES, checked for shape."""
    if entry.info.file_size > MAX_MANIFEST_BYTES:
        raise UsageError(
            f"{path}: {MANIFEST} is bigger than the {MAX_MANIFEST_BYTES} bytes of any snapshot "
            "manifest; not a snapshot archive, refusing to read it"
        )
    try:
        data = b"".join(_contents(fh, entry))  # no more than file_size: checked as it inflates
    except _Unreadable as exc:
        raise UsageError(f"{path}: {MANIFEST} is unreadable ({exc})") from None
    try:
        return data, _MANIFEST_DECODER.decode(data).members
    except (msgspec.MsgspecError, ValueError) as exc:  # ValueError: invalid UTF-8 in a string
        reason = _reason(exc)
    except RecursionError:
        reason = "nested too deeply"
    raise UsageError(f"{path}: {MANIFEST} is not a snapshot manifest ({reason})")


def _check_member(fh: BinaryIO, entry: _Entry, expected: _Listed) -> str | None:
    """Stream one member through sha256, a chunk at a time; what differs, if anything."""
    digest = hashlib.sha256()
    size = 0
    try:
        for chunk in _contents(fh, entry):
            size += len(chunk)
            if size > expected.size:  # a bomb stops here, not at its end
                return f"larger than the manifest's {expected.size} bytes"
            digest.update(chunk)
    except _Unreadable as exc:
        return f"unreadable ({exc})"
    if size != expected.size:
        return f"size {size} differs from the manifest's {expected.size}"
    if digest.hexdigest() != expected.sha256:
        return "sha256 differs from the manifest (modified or corrupted)"
    return None


def _contents(fh: BinaryIO, entry: _Entry) -> Iterator[bytes]:
    """A member's bytes, a chunk at a time, exactly as its entry describes them, or _Unreadable."""
    info = entry.info
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise _Unreadable(f"stored in {info.compress_size} bytes, not its {info.file_size}")
    crc = size = 0
    try:
        for piece in _pieces(fh, entry):
            size += len(piece)
            if size > info.file_size:
                raise _Unreadable(f"inflates past the {info.file_size} bytes its entry gives")
            crc = zlib.crc32(piece, crc)
            yield piece
    except zlib.error as exc:
        raise _Unreadable(f"bad deflate data: {exc}") from None
    if size != info.file_size:
        raise _Unreadable(f"holds {size} bytes, not the {info.file_size} its entry gives")
    if crc != info.CRC:
        raise _Unreadable("its CRC-32 differs from its entry's (corrupted)")


def _pieces(fh: BinaryIO, entry: _Entry) -> Iterator[bytes]:
    """The member's data, inflated if deflated; its deflate stream must end with its data."""
    # zipfile stops at the end of a deflate stream and skips what follows in the entry; a
    # streaming extractor reads on from there, as a data descriptor and more members.
    inflater = (
        None
        if entry.info.compress_type == zipfile.ZIP_STORED
        else zlib.decompressobj(-zlib.MAX_WBITS)
    )
    left = entry.info.compress_size
    fh.seek(entry.data)
    while left:
        raw = fh.read(min(CHUNK, left))
        if not raw:
            raise _Unreadable("the archive ends inside it")
        left -= len(raw)
        if inflater is None:
            yield raw
            continue
        yield inflater.decompress(raw, CHUNK)
        while inflater.unconsumed_tail:  # at most CHUNK out per call: a bomb stays small
            yield inflater.decompress(inflater.unconsumed_tail, CHUNK)
        if inflater.eof and (left or inflater.unused_data):
            hidden = left + len(inflater.unused_data)
            raise _Unreadable(
                f"{hidden} bytes follow its deflate stream's end "
                "(zipfile skips them, a streaming extractor reads them as members)"
            )
    if inflater is not None and not inflater.eof:
        raise _Unreadable("its deflate stream is cut short")


def _reason(exc: BaseException) -> str:
    """An exception as one short line."""
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__


def _shown(name: str) -> str:
    """A member name on one line: control characters escaped, never a line break."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in name)
