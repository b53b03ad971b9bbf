"""`verify` against hostile archives, built with zipfile or raw bytes, checked by the real CLI."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import stat
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import pytest

from snapshot_agent.archive import verify
from snapshot_agent.archive.writer import MANIFEST, ArchiveWriter, Entry, json_bytes
from snapshot_agent.core.check import ID_PATTERN

from .conftest import run_cli, run_measured

#: The members every synthetic snapshot starts with.
BASE: dict[str, bytes] = {
    "raw/cpu.load/loadavg.txt": b"0.01 0.02 0.03 1/100 4242\n",
    "report.json": b'{"verdict": "pass"}\n',
    "report.html": b"<html>pass</html>\n",
}
#: Where central directory fields sit (from each entry's signature), and local header ones.
CD_FLAGS, CD_METHOD, CD_COMPRESSED, CD_NAME_LEN, CD_NAME = 8, 10, 20, 28, 46
LH_FLAGS, LH_METHOD, LH_NAME = 6, 8, 30
#: Peak RSS of a `verify` that refuses early: the interpreter and the CLI's imports, plus
#: a little. Reading a 256 MiB member whole (what verify did) costs several times this.
RSS_BOUND = 80 * 1024 * 1024


def listed(name: str, data: bytes) -> dict[str, object]:
    """A manifest entry for `data` stored as `name`."""
    return {"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def snapshot(
    path: Path,
    entries: Sequence[tuple[str | zipfile.ZipInfo, bytes]] = (),
    *,
    manifest: bytes | None = None,
) -> Path:
    """A snapshot-shaped ZIP: BASE, then `entries`, then a manifest listing them all."""
    members = [*BASE.items(), *entries]
    if manifest is None:
        names = {(e.filename if isinstance(e, zipfile.ZipInfo) else e): d for e, d in members}
        doc = {"schema_version": 1, "members": [listed(n, d) for n, d in names.items()]}
        manifest = json.dumps(doc, indent=2).encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for entry, data in [*members, ("manifest.json", manifest)]:
            zf.writestr(entry, data)
    return path


def patch_entry(
    path: Path,
    name: str,
    *,
    flags: int = 0,
    method: int | None = None,
    compressed_extra: int = 0,
    name_bytes: bytes | None = None,
) -> None:
    """Edit one entry's raw bytes where zipfile cannot write the case (both headers)."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        local, pos = zf.getinfo(name).header_offset, zf.start_dir
    encoded = name.encode()
    while raw[pos : pos + 4] == b"PK\x01\x02":
        n, m, k = struct.unpack_from("<HHH", raw, pos + CD_NAME_LEN)
        if raw[pos + CD_NAME : pos + CD_NAME + n] == encoded:
            break
        pos += CD_NAME + n + m + k
    else:
        raise AssertionError(f"{name} not in the central directory")
    for at, flag_at, method_at, name_at in (
        (pos, CD_FLAGS, CD_METHOD, CD_NAME),
        (local, LH_FLAGS, LH_METHOD, LH_NAME),
    ):
        old = struct.unpack_from("<H", raw, at + flag_at)[0]
        struct.pack_into("<H", raw, at + flag_at, old | flags)
        if method is not None:
            struct.pack_into("<H", raw, at + method_at, method)
        if name_bytes is not None:
            assert len(name_bytes) == len(encoded)
            raw[at + name_at : at + name_at + len(encoded)] = name_bytes
    size = struct.unpack_from("<I", raw, pos + CD_COMPRESSED)[0]
    struct.pack_into("<I", raw, pos + CD_COMPRESSED, size + compressed_extra)
    path.write_bytes(bytes(raw))


def assert_refused(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit 1, every problem on its own MISMATCH line, each needle on one of them."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stdout.splitlines()
    assert lines and all(line.startswith("MISMATCH ") for line in lines), proc.stdout
    for needle in needles:
        assert any(needle in line for line in lines), (needle, proc.stdout)
    assert proc.stderr.startswith("FAILED:") and proc.stderr.count("\n") == 1, proc.stderr


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit 2 with one line on stderr naming the problem, nothing on stdout."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stdout == "", proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)


def test_the_archive_knows_the_check_id_pattern() -> None:
    assert verify.ID_PATTERN is ID_PATTERN
    assert not ID_PATTERN.match("custom.x\n")  # `$` would have let the newline through


def test_every_kind_of_member_the_agent_writes_passes(tmp_path: Path) -> None:
    bundle = zipfile.ZipInfo("iggy-data.zip")
    bundle.compress_type = zipfile.ZIP_STORED
    regular = zipfile.ZipInfo("raw/security.files/files/etc/iggy/server.toml")
    regular.external_attr = (stat.S_IFREG | 0o644) << 16
    archive = snapshot(
        tmp_path / "ok.zip",
        [
            (bundle, b"PK\x05\x06" + bytes(18)),
            (regular, b"[tcp]\n"),
            # systemd escapes: a backslash inside a name is not a path separator
            ("raw/systemd.units/status-dev-disk-by\\x2duuid-1.device.txt", b"ok\n"),
            ("raw/custom.my-check_2/output.txt", b"done\n"),
            ("raw/logs.files/tail/var/log/a..b.log", b"line\n"),
        ],
    )
    proc = run_cli("verify", archive)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == f"OK: 8 members match the manifest ({archive})\n"


#: Names an extractor would write outside its target directory, or that the agent never writes.
HOSTILE_NAMES = {
    "../../x": "climbs out with '..'",
    "raw/cpu.load/../../../x": "climbs out with '..'",
    "..\\..\\y": "climbs out with '..'",
    "raw/cpu.load/..\\..\\..\\y": "climbs out with '..'",
    "/tmp/x": "is an absolute path",
    "\\tmp\\y": "is an absolute path",
    "C:/Windows/x": "is an absolute path",
    "c:y": "is an absolute path",
    "evil.sh": "not a member the agent writes",
    "raw/NotAnId/x": "not a member the agent writes",
    "raw/cpu.load": "not a member the agent writes",
    "Report.json": "not a member the agent writes",
}


def test_names_outside_the_layout_are_refused(tmp_path: Path) -> None:
    # Each one listed in the manifest with the right digest: verify used to say OK.
    archive = snapshot(tmp_path / "slip.zip", [(name, b"owned\n") for name in HOSTILE_NAMES])
    proc = run_cli("verify", archive)
    assert_refused(proc, *(f"MISMATCH {name}: {why}" for name, why in HOSTILE_NAMES.items()))
    assert len(proc.stdout.splitlines()) == len(HOSTILE_NAMES)


def test_a_symlink_member_is_refused(tmp_path: Path) -> None:
    link = zipfile.ZipInfo("raw/cpu.load/evidence")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = snapshot(tmp_path / "link.zip", [(link, b"/etc/cron.d")])
    assert_refused(run_cli("verify", archive), "raw/cpu.load/evidence: is a symbolic link")


def test_special_files_and_setuid_bits_are_refused(tmp_path: Path) -> None:
    fifo = zipfile.ZipInfo("raw/cpu.load/fifo")
    fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
    setuid = zipfile.ZipInfo("raw/cpu.load/tool")
    setuid.external_attr = (stat.S_IFREG | stat.S_ISUID | 0o755) << 16
    archive = snapshot(tmp_path / "special.zip", [(fifo, b"x"), (setuid, b"y")])
    assert_refused(
        run_cli("verify", archive),
        "raw/cpu.load/fifo: is a special file",
        "raw/cpu.load/tool: carries setuid",
    )


def test_a_tampered_duplicate_before_the_original_is_refused(tmp_path: Path) -> None:
    # unzip -n keeps the first copy, zipfile reads the last: verify once checked the last.
    archive = snapshot(tmp_path / "dup.zip")
    with zipfile.ZipFile(archive) as zf:
        originals = [(info, zf.read(info)) for info in zf.infolist()]
    with zipfile.ZipFile(archive, "w") as zf, pytest.warns(UserWarning, match="Duplicate"):
        zf.writestr("report.json", b'{"verdict": "pass", "forged": true}\n')
        for info, data in originals:
            zf.writestr(info, data)
    assert_refused(run_cli("verify", archive), "report.json: appears 2 times in the archive")


def test_a_duplicated_manifest_is_refused_and_nothing_trusted(tmp_path: Path) -> None:
    archive = snapshot(tmp_path / "dupman.zip")
    with zipfile.ZipFile(archive) as zf:
        manifest = zf.read("manifest.json")
    with zipfile.ZipFile(archive, "a") as zf, pytest.warns(UserWarning, match="Duplicate"):
        zf.writestr("manifest.json", manifest)
    assert_refused(
        run_cli("verify", archive),
        "manifest.json: appears 2 times in the archive",
        "manifest.json: refused (see above), so no member's digest was checked",
    )


@pytest.mark.parametrize("data", [b"hidden payload", b""])
def test_directory_entries_are_refused_with_or_without_data(tmp_path: Path, data: bytes) -> None:
    folder = zipfile.ZipInfo("raw/cpu.load/folder/")
    archive = snapshot(tmp_path / "dir.zip", [(folder, data)])
    held = f" holding {len(data)} bytes" if data else ""
    assert_refused(run_cli("verify", archive), f"raw/cpu.load/folder/: is a directory entry{held}")


def test_a_nul_in_a_name_is_refused(tmp_path: Path) -> None:
    # zipfile cuts "report.json\0x" to "report.json": two tools, two names.
    archive = snapshot(tmp_path / "nul.zip", [("report.jsonXx", b"forged\n")])
    patch_entry(archive, "report.jsonXx", name_bytes=b"report.json\0x")
    assert_refused(run_cli("verify", archive), "has a NUL byte in its name")


def test_an_unlisted_member_outside_the_layout_says_both(tmp_path: Path) -> None:
    archive = snapshot(tmp_path / "smuggled.zip")
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("../extra.sh", b"smuggled")
    proc = run_cli("verify", archive)
    assert_refused(
        proc, "../extra.sh: in the archive but not in the manifest; climbs out with '..'"
    )
    assert len(proc.stdout.splitlines()) == 1


def test_control_characters_in_a_name_stay_on_one_line(tmp_path: Path) -> None:
    archive = snapshot(tmp_path / "nl.zip")
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("raw/cpu.load/a\nMISMATCH fake", b"x")
    proc = run_cli("verify", archive)
    assert_refused(proc, "raw/cpu.load/a\\nMISMATCH fake: in the archive but not in the manifest")
    assert len(proc.stdout.splitlines()) == 1


def test_encrypted_or_odd_compression_is_one_line(tmp_path: Path) -> None:
    # zipfile raised RuntimeError (encrypted) and NotImplementedError (method 9, 99).
    odd = {
        "report.json": (0x01, None, "is encrypted"),
        "report.html": (0x40, None, "is encrypted"),
        "raw/cpu.load/loadavg.txt": (0, 9, "uses compression method 9"),
        "raw/cpu.load/unknown.txt": (0, 99, "uses compression method 99"),
        "raw/cpu.load/bzip2.txt": (0, zipfile.ZIP_BZIP2, "uses compression method 12"),
    }
    archive = snapshot(tmp_path / "odd.zip", [(n, b"text\n") for n in odd if n not in BASE])
    for name, (flags, method, _why) in odd.items():
        patch_entry(archive, name, flags=flags, method=method)
    proc = run_cli("verify", archive)
    assert_refused(proc, *(f"{name}: {why}" for name, (_f, _m, why) in odd.items()))
    assert len(proc.stdout.splitlines()) == len(odd)


def test_an_encrypted_manifest_is_one_line(tmp_path: Path) -> None:
    archive = snapshot(tmp_path / "encman.zip")
    patch_entry(archive, "manifest.json", flags=0x01)
    assert_refused(run_cli("verify", archive), "manifest.json: is encrypted")


def test_data_overlapping_the_next_member_is_refused(tmp_path: Path) -> None:
    # A compressed size that runs into the next member: how non-recursive zip bombs
    # make many entries share one stream.
    archive = snapshot(tmp_path / "overlap.zip")
    patch_entry(archive, "raw/cpu.load/loadavg.txt", compressed_extra=64)
    assert_refused(run_cli("verify", archive), "raw/cpu.load/loadavg.txt: overlaps the data of")


def test_an_undecodable_name_is_one_line(tmp_path: Path) -> None:
    archive = snapshot(tmp_path / "utf8.zip", [("raw/cpu.load/é", b"x")])
    patch_entry(archive, "raw/cpu.load/é", name_bytes=b"raw/cpu.load/\xff\xff")
    assert_one_line_error(run_cli("verify", archive), "not a readable ZIP archive")


GOOD_SHA = hashlib.sha256(BASE["report.json"]).hexdigest()


@pytest.mark.parametrize(
    ("manifest", "why"),
    [
        ({"members": [{"path": 1, "size": 0, "sha256": GOOD_SHA}]}, "$.members[0].path"),
        ({"members": 3}, "$.members"),
        ({"members": [1]}, "$.members[0]"),
        ({"members": [{"path": ["x"], "size": 0, "sha256": GOOD_SHA}]}, "$.members[0].path"),
        ({"members": [{"path": "report.json", "size": "20", "sha256": GOOD_SHA}]}, "size"),
        ({"members": [{"path": "report.json", "size": -1, "sha256": GOOD_SHA}]}, "size"),
        ({"members": [{"path": "report.json", "size": True, "sha256": GOOD_SHA}]}, "size"),
        ({"members": [{"path": "report.json", "size": 20, "sha256": "zz"}]}, "sha256"),
        ({"members": [{"path": "report.json", "size": 20}]}, "sha256"),
        ({"members": [{"path": "", "size": 0, "sha256": GOOD_SHA}]}, "path"),
        ({"schema_version": 1}, "members"),
        ([], "object"),
        (b"{", "malformed"),
        (b"\xff\xfe", "malformed"),
        # Invalid UTF-8 inside a string: msgspec raised UnicodeDecodeError, a traceback.
        (
            b'{"members": [{"path": "\xff\xfe", "size": 0, "sha256": "'
            + GOOD_SHA.encode()
            + b'"}]}',
            "can't decode byte 0xff",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "Expected `object`, got `array`"),
        (b'{"members": []' + b', "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested"),
    ],
)
def test_a_malformed_manifest_is_one_line(tmp_path: Path, manifest: object, why: str) -> None:
    body = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    archive = snapshot(tmp_path / "bad.zip", manifest=body)
    proc = run_cli("verify", archive)
    assert_one_line_error(proc, f"{archive}: manifest.json is not a snapshot manifest", why)


def test_a_path_listed_twice_in_the_manifest_is_a_mismatch(tmp_path: Path) -> None:
    doc = {"members": [listed(n, d) for n, d in BASE.items()] * 2}
    archive = snapshot(tmp_path / "twice.zip", manifest=json.dumps(doc).encode())
    assert_refused(run_cli("verify", archive), "report.json: listed 2 times in the manifest")


def test_a_padded_manifest_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    archive = tmp_path / "padded.zip"
    doc = json.dumps({"members": [listed(n, d) for n, d in BASE.items()]}).encode()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in BASE.items():
            zf.writestr(name, data)
        with zf.open("manifest.json", "w") as fh:
            fh.write(doc)
            blank = b" " * (1024 * 1024)
            for _ in range(256):  # 256 MiB of whitespace, still valid JSON
                fh.write(blank)
    proc, peak = run_measured(tmp_path, "verify", archive)
    assert_one_line_error(proc, "manifest.json is bigger than the")
    assert peak < RSS_BOUND, f"peak RSS {peak >> 20} MiB"


def central_directory_only(path: Path, entries: int) -> Path:
    """A ZIP that is nothing but `entries` minimal central directory entries and an end record."""
    entry = struct.pack(
        "<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0
    )
    directory = (entry + b"x") * entries
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, len(directory), 0, 0)
    path.write_bytes(directory + end)
    return path


@pytest.mark.parametrize(
    ("entries", "why"),
    [
        (300_000, "its ZIP directory lists more than 50000 entries"),  # 14 MB of directory
        (1_000_000, "its ZIP directory is 47000000 bytes"),
    ],
)
def test_a_huge_central_directory_is_refused_in_bounded_memory(
    tmp_path: Path, entries: int, why: str
) -> None:
    archive = central_directory_only(tmp_path / "wide.zip", entries)
    started = time.monotonic()
    proc, peak = run_measured(tmp_path, "verify", archive)
    assert_one_line_error(proc, f"{archive}: {why}")
    assert peak < RSS_BOUND, f"peak RSS {peak >> 20} MiB"
    assert time.monotonic() - started < 10


def test_a_directory_is_named_as_one(tmp_path: Path) -> None:
    proc = run_cli("verify", tmp_path)
    assert_one_line_error(proc, f"{tmp_path}: is a directory; pass the snapshot .zip file")


def test_missing_and_special_paths_are_one_line(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("verify", tmp_path / "none.zip"), "no such file")
    fifo = tmp_path / "pipe.zip"
    os.mkfifo(fifo)
    assert_one_line_error(run_cli("verify", fifo), "not a regular file")
    assert_one_line_error(run_cli("verify", tmp_path / ("x" * 5000)), "cannot be read")
    assert_one_line_error(run_cli("verify", fifo / "x.zip"), "cannot be read (Not a directory)")
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\x05\x06 truncated")
    assert_one_line_error(run_cli("verify", junk), "not a readable ZIP archive")
    (tmp_path / "empty.zip").touch()
    assert_one_line_error(run_cli("verify", tmp_path / "empty.zip"), "not a readable ZIP archive")


# What the agent's own writer produces must pass: streamed (data descriptors, a ZIP64
# field in every local header) and, past the 32-bit limits, ZIP64 throughout.


@pytest.fixture(scope="module")
def real_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A snapshot made by the real CLI (one check: fast)."""
    out = tmp_path_factory.mktemp("real")
    proc = run_cli("run", "--config", os.devnull, "--only", "cpu.load", "-o", out)
    assert proc.returncode in (0, 1), proc.stderr
    (archive,) = out.glob("snapshot-*.zip")
    return archive


def test_a_real_snapshot_verifies(real_archive: Path) -> None:
    with zipfile.ZipFile(real_archive) as zf:
        infos = zf.infolist()
    assert infos and all(i.flag_bits & 0x08 for i in infos)  # streamed: data descriptors
    raw = real_archive.read_bytes()
    assert all(raw[i.header_offset + 30 + len(i.filename) :][:2] == b"\x01\x00" for i in infos)
    proc = run_cli("verify", real_archive)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"OK: {len(infos) - 1} members match the manifest")


def zip64_archive(path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An archive from the agent's writer with zipfile's limits lowered: ZIP64 everywhere."""
    with monkeypatch.context() as patched:
        # zipfile reads these globals as it writes; 4 GiB members would take minutes.
        patched.setattr(zipfile, "ZIP64_LIMIT", 64)
        patched.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 2)
        with path.open("wb") as sink:
            writer = ArchiveWriter(sink)
            for name, data in {**BASE, "raw/cpu.load/big.bin": os.urandom(4096)}.items():
                writer.add(Entry(name, [data]))
            doc = {"schema_version": 1, "members": [m.to_dict() for m in writer.members]}
            writer.add(Entry(MANIFEST, [json_bytes(doc)]))
            writer.close()
    return path


def test_the_writer_with_zip64_throughout_verifies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = zip64_archive(tmp_path / "zip64.zip", monkeypatch)
    raw = archive.read_bytes()
    assert raw[-42:-38] == b"PK\x06\x07"  # a ZIP64 end record and its locator
    with zipfile.ZipFile(archive) as zf:
        assert all(i.extra[:2] == b"\x01\x00" for i in zf.infolist()[1:])  # offsets > 64
    proc = run_cli("verify", archive)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("OK: 4 members match the manifest")


# Raw surgery: zipfile cannot write these archives.


def splice(path: Path, at: int, blob: bytes, *, remove: int = 0, shift: bool = True) -> None:
    """Put `blob` in place of `remove` bytes at `at`; with shift, fix every offset after it."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        directory = zf.start_dir
    assert at <= directory and raw[-22:-18] == b"PK\x05\x06"  # no comment, no ZIP64
    delta = len(blob) - remove
    raw[at : at + remove] = blob
    if shift:
        pos = directory + delta
        while raw[pos : pos + 4] == b"PK\x01\x02":
            offset = struct.unpack_from("<I", raw, pos + 42)[0]
            if offset >= at:
                struct.pack_into("<I", raw, pos + 42, offset + delta)
            n, m, k = struct.unpack_from("<HHH", raw, pos + CD_NAME_LEN)
            pos += CD_NAME + n + m + k
        struct.pack_into("<I", raw, len(raw) - 6, directory + delta)
    path.write_bytes(bytes(raw))


def set_local_extra(path: Path, name: str, extra: bytes) -> None:
    """Replace the extra field of `name`'s local header only (the directory keeps its own)."""
    with zipfile.ZipFile(path) as zf:
        at = zf.getinfo(name).header_offset
    n, m = struct.unpack_from("<HH", path.read_bytes(), at + 26)
    splice(path, at + LH_NAME + n, extra, remove=m)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<H", raw, at + 28, len(extra))
    path.write_bytes(bytes(raw))


def local_entry(name: str, data: bytes) -> bytes:
    """A complete local entry (header, name, deflated data) as a streaming extractor reads it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, data)
    with zipfile.ZipFile(buf) as zf:
        return buf.getvalue()[: zf.start_dir]


def unicode_path(name: str, target: str) -> bytes:
    """An Info-ZIP Unicode Path extra field (0x7075): unzip names the entry `target`."""
    body = struct.pack("<BI", 1, zlib.crc32(name.encode())) + target.encode()
    return struct.pack("<HH", 0x7075, len(body)) + body


OUTPUT = "raw/custom.echo/output.txt"
FORGED = b'{"verdict": "pass", "forged": true}\n'


@pytest.mark.parametrize("target", ["report.json", "../../evil.sh", "/tmp/evil.sh"])
def test_a_unicode_path_field_is_refused(tmp_path: Path, target: str) -> None:
    # The manifest lists the entry under its own name with the right digest, and verify
    # said OK; `unzip -o` wrote the command's output as report.json (or outside the target).
    entry = zipfile.ZipInfo(OUTPUT)
    entry.extra = unicode_path(OUTPUT, target)
    archive = snapshot(tmp_path / "upath.zip", [(entry, FORGED)])
    proc = run_cli("verify", archive)
    named = f"extractors that honour it (unzip) write it as {target}"
    assert_refused(
        proc,
        f"{OUTPUT}: carries an Info-ZIP Unicode path field (0x7075) in its directory entry: "
        + named,
        f"Info-ZIP Unicode path field (0x7075) in its local header: {named}",
    )
    assert len(proc.stdout.splitlines()) == 1


@pytest.mark.parametrize(
    ("local", "central", "why"),
    [
        # Streaming extractors read only the local header.
        (unicode_path(OUTPUT, "report.json"), b"", "in its local header: extractors that"),
        (b"", struct.pack("<HHBI", 0x5455, 5, 1, 0), "carries extra field 0x5455 in its dir"),
        (b"\x75\x70\x09", b"", "has a malformed extra field in its local header"),
        (struct.pack("<HH", 1, 4) + bytes(4), b"", "has a ZIP64 field in its local header"),
    ],
    ids=["unicode-path-local-only", "timestamp-directory-only", "malformed", "short-zip64"],
)
def test_extra_fields_the_writer_never_makes_are_refused(
    tmp_path: Path, local: bytes, central: bytes, why: str
) -> None:
    entry = zipfile.ZipInfo(OUTPUT)
    entry.extra = central
    archive = snapshot(tmp_path / "extra.zip", [(entry, FORGED)])
    set_local_extra(archive, OUTPUT, local)
    assert_refused(run_cli("verify", archive), f"{OUTPUT}: ", why)


def test_a_hidden_entry_before_the_directory_is_refused(tmp_path: Path) -> None:
    # A complete report.json that the directory does not list: streaming extractors
    # (which never read the directory) see it; verify said OK.
    archive = snapshot(tmp_path / "hidden.zip")
    with zipfile.ZipFile(archive) as zf:
        directory = zf.start_dir
    hidden = local_entry("report.json", FORGED)
    splice(archive, directory, hidden)
    assert_refused(
        run_cli("verify", archive),
        f"MISMATCH (ZIP layout): bytes {directory} to {directory + len(hidden) - 1}, "
        "before the ZIP directory, belong to no entry",
    )


@pytest.mark.parametrize("shift", [True, False], ids=["offsets-fixed", "offsets-kept"])
def test_a_prepended_entry_is_refused(tmp_path: Path, shift: bool) -> None:
    # zipfile (and unzip) accept bytes before the first entry, as in self-extracting
    # archives; a streaming extractor reads them first.
    archive = snapshot(tmp_path / "prepended.zip")
    hidden = local_entry("report.json", FORGED)
    splice(archive, 0, hidden, shift=shift)
    needles = [f"(ZIP layout): bytes 0 to {len(hidden) - 1}, before raw/cpu.load/loadavg.txt"]
    if not shift:
        needles.append("(ZIP layout): its end record puts the ZIP directory at byte")
    assert_refused(run_cli("verify", archive), *needles)


def test_bytes_after_a_deflate_stream_are_refused(tmp_path: Path, real_archive: Path) -> None:
    # Inside report.json's compressed size but after its deflate stream ends: zipfile
    # stops at the stream's end (CRC and digest fine), a streaming extractor reads on.
    archive = tmp_path / "tail.zip"
    archive.write_bytes(real_archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("report.json")
        directory = zf.start_dir
    hidden = b"PK\x07\x08" + bytes(20) + local_entry("raw/custom.x/out.txt", b"hidden\n")
    data = info.header_offset + LH_NAME + len(info.filename) + 20  # after the ZIP64 field
    splice(archive, data + info.compress_size, hidden)
    raw = bytearray(archive.read_bytes())
    descriptor = data + info.compress_size + len(hidden)
    assert raw[descriptor : descriptor + 4] == b"PK\x07\x08"
    struct.pack_into("<Q", raw, descriptor + 8, info.compress_size + len(hidden))
    pos = directory + len(hidden)  # report.json is the directory's first entry
    assert raw[pos + CD_NAME : pos + CD_NAME + 11] == b"report.json"
    struct.pack_into("<I", raw, pos + CD_COMPRESSED, info.compress_size + len(hidden))
    archive.write_bytes(bytes(raw))
    assert_refused(
        run_cli("verify", archive),
        f"report.json: unreadable ({len(hidden)} bytes follow its deflate stream's end",
    )


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        (LH_METHOD, 0, "its local header's flags or compression method differ"),
        (14, 0xDEADBEEF, "its local header's CRC or sizes differ"),  # the CRC-32
    ],
    ids=["method", "crc"],
)
def test_a_local_header_disagreeing_with_the_directory_is_refused(
    tmp_path: Path, field: int, value: int, why: str
) -> None:
    # zipfile trusts the directory; a streaming extractor, the local header.
    archive = snapshot(tmp_path / "local.zip")
    raw = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        at = zf.getinfo("report.json").header_offset
    struct.pack_into("<H" if field == LH_METHOD else "<I", raw, at + field, value)
    archive.write_bytes(bytes(raw))
    assert_refused(run_cli("verify", archive), f"report.json: {why}")


def test_empty_and_dot_path_components_are_refused(tmp_path: Path) -> None:
    names = [OUTPUT.replace("/output", "/./output"), OUTPUT.replace("/output", "//output")]
    names += [OUTPUT.replace("/output", "/.\\output"), "./report.json"]
    archive = snapshot(tmp_path / "dots.zip", [(OUTPUT, b"real\n")] + [(n, FORGED) for n in names])
    # What the refusal is about: extractall writes them all to one file, the last one wins.
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path / "x")
    assert (tmp_path / "x" / OUTPUT).read_bytes() == FORGED
    proc = run_cli("verify", archive)
    assert_refused(
        proc,
        *(f"{n}: has an empty or '.' path component (extractors write it as" for n in names),
    )
    assert len(proc.stdout.splitlines()) == len(names)


def test_an_empty_name_is_refused(tmp_path: Path) -> None:
    # zipfile's is_dir() raised IndexError on it: a traceback.
    archive = snapshot(tmp_path / "empty-name.zip")
    with zipfile.ZipFile(archive, "a") as zf, zf.open(zipfile.ZipInfo(""), "w") as fh:
        fh.write(b"x")
    assert_refused(run_cli("verify", archive), ": in the archive but not in the manifest; has an")


def test_a_split_archive_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # zipfile's end-record reader raised BadZipFile before zipfile was called: a traceback.
    archive = zip64_archive(tmp_path / "split.zip", monkeypatch)
    raw = bytearray(archive.read_bytes())
    struct.pack_into("<I", raw, len(raw) - 22 - 4, 2)  # the locator's count of disks
    archive.write_bytes(bytes(raw))
    assert_one_line_error(run_cli("verify", archive), f"{archive}: a ZIP archive split across")


@pytest.mark.parametrize(
    "tail", [b"junk after the end", b"comment"], ids=["appended", "archive-comment"]
)
def test_bytes_after_the_end_record_are_one_line(tmp_path: Path, tail: bytes) -> None:
    # Each tool searches back for "its" end record: one hidden in the tail would name
    # another directory. The writer ends the file with its end record.
    archive = snapshot(tmp_path / "tail.zip")
    if tail == b"comment":
        with zipfile.ZipFile(archive, "a") as zf:
            zf.comment = tail
    else:
        archive.write_bytes(archive.read_bytes() + tail)
    assert_one_line_error(run_cli("verify", archive), "its last 22 bytes are not a ZIP end record")


#: Runs `python -m snapshot_agent verify` on each argv path in a forked child (the real
#: entry point and exit path, without an interpreter start per case): prints
#: {path: exit code}; each child's stdout and stderr go to path.out and path.err.
FORKED_VERIFY = """
import json, os, runpy, sys, traceback
import snapshot_agent.cli
codes = {}
for path in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        for fd, suffix in ((1, ".out"), (2, ".err")):
            os.dup2(os.open(path + suffix, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        sys.argv = ["snapshot-agent", "verify", path]
        code = 1
        try:
            runpy.run_module("snapshot_agent", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()  # as the interpreter would, then exit 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    codes[path] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
print(json.dumps(codes))
"""


def damaged_copies(archive: Path, into: Path, count: int) -> list[Path]:
    """`count` copies of `archive` with 1 to 3 bytes changed, half of them in its headers."""
    src = archive.read_bytes()
    with zipfile.ZipFile(archive) as zf:
        hot = list(range(zf.start_dir, len(src)))
        for info in zf.infolist():
            header = info.header_offset + LH_NAME + len(info.filename) + 20
            hot += range(info.header_offset, header)
            hot += range(header + info.compress_size, header + info.compress_size + 24)
    rng = random.Random(9)
    copies = []
    for n in range(count):
        raw = bytearray(src)
        for _ in range(rng.randint(1, 3)):
            pos = rng.choice(hot) if n % 2 else rng.randrange(len(raw))
            raw[pos] = rng.choice([0, 1, 2, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        copies.append(into / f"damaged-{n}.zip")
        copies[-1].write_bytes(bytes(raw))
    return copies


def test_random_damage_is_never_a_traceback(tmp_path: Path, real_archive: Path) -> None:
    copies = damaged_copies(real_archive, tmp_path, 300)
    proc = subprocess.run(
        [sys.executable, "-c", FORKED_VERIFY, *map(str, copies)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    codes = json.loads(proc.stdout)
    for path, code in codes.items():
        out, err = Path(path + ".out").read_text(), Path(path + ".err").read_text()
        assert "Traceback" not in err, (path, err)
        if code == 0:
            assert out.startswith("OK: ") and not err, (path, out, err)
        elif code == 1:
            assert out and all(line.startswith("MISMATCH ") for line in out.splitlines())
            assert err.startswith("FAILED:") and err.count("\n") == 1, (path, err)
        else:
            assert code == 2 and not out and err.count("\n") == 1, (path, code, out, err)
    assert {1, 2} <= set(codes.values())  # the damage reached both kinds of refusal
