"""`verify` against hostile archives, built with zipfile or raw bytes, checked by the real CLI."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from snapshot_agent.archive.writer import CHECK_ID
from snapshot_agent.core.check import ID_PATTERN

from .conftest import run_cli

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


#: Runs argv[2:] as its child and writes "exit-code peak-RSS-KiB" to argv[1]. A go-between
#: because a child's ru_maxrss starts at its parent's RSS (the exec'd image inherits the
#: forked one's high-water mark), and pytest holding the archive it just built is large.
MEASURE = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""


def run_measured(tmp_path: Path, *args: str | Path) -> tuple[subprocess.CompletedProcess[str], int]:
    """The real CLI in a grandchild; its result and its own peak RSS in bytes (wait4)."""
    report = tmp_path / "measured.txt"
    env = {k: v for k, v in os.environ.items() if k != "SNAPSHOT_AGENT_CONFIG"}  # verify reads none
    argv = [sys.executable, "-m", "snapshot_agent", *map(str, args)]
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, report, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    code, peak_kib = map(int, report.read_text().split())
    return subprocess.CompletedProcess(argv, code, proc.stdout, proc.stderr), peak_kib * 1024


def test_the_archive_knows_the_check_id_pattern() -> None:
    assert CHECK_ID is ID_PATTERN
    assert not CHECK_ID.match("custom.x\n")  # `$` would have let the newline through


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
