"""iggy-data.zip from each fixture layout: metadata and full mode, redaction, the cap."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from snapshot_agent.archive.writer import IGGY_DATA, Entry, ZipStream
from snapshot_agent.bundle.policy import SEGMENT_REASON, WITHHELD_REASON
from snapshot_agent.bundle.source import bundle_entries
from snapshot_agent.config import RedactionConfig
from snapshot_agent.redact.catalog import redactor_for
from tests.iggy.fixture import KIB, LAYOUTS, Built, Spec, build

from .helpers import NODE_DIR, Bundled, run_bundle

JWT_SECRET = b"fixture-jwt-secret-0123456789abcdef"  # the fixture's runtime config holds it


def tree(built: Built) -> dict[str, Path]:
    """Every entry under the data directory (directories included), by relative path."""
    out = {}
    for dirpath, dirs, files in os.walk(built.data_dir):
        for name in dirs + files:
            path = Path(dirpath) / name
            out[str(path.relative_to(built.data_dir))] = path
    return out


def is_segment(rel: str) -> bool:
    """A segment payload of the fixture."""
    return rel.startswith("streams/") and rel.endswith(".log")


def node(tmp_path: Path, layout: str, **spec: object) -> Built:
    """A fixture node with a few streams, topics and segments."""
    params: dict[str, object] = {"streams": 2, "topics": 2, "partitions": 2, "segments": 2}
    params.update(spec)
    return build(tmp_path / "node", Spec(layout=layout, **params))  # type: ignore[arg-type]


def check_listing(bundled: Bundled, built: Built) -> None:
    """Every entry of the tree has a row with its size, mode, owner, mtime and kind."""
    entries = tree(built)
    assert set(bundled.listing) == set(entries)
    for rel, path in entries.items():
        row, st = bundled.listing[rel], os.lstat(path)
        assert row["kind"] == ("dir" if path.is_dir() else "file")
        assert int(row["size"]) == st.st_size
        assert int(row["uid"]) == st.st_uid and int(row["gid"]) == st.st_gid
        assert row["mode"].startswith("d" if path.is_dir() else "-")
        assert row["mtime"].endswith("Z")
        assert row["user"] == ("root" if st.st_uid == 0 else row["user"])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_metadata_mode_copies_all_but_segment_payloads(tmp_path: Path, layout: str) -> None:
    built = node(tmp_path, layout)
    bundled = run_bundle(built.data_dir, tmp_path / "iggy-data.zip")
    data, entries = bundled.data(), tree(built)
    files = {rel for rel, path in entries.items() if path.is_file()}
    assert set(data) == {rel for rel in files if not is_segment(rel)}
    for rel, content in data.items():  # byte for byte: no redaction asked
        assert content == entries[rel].read_bytes(), rel
    check_listing(bundled, built)
    for rel in files:
        row = bundled.listing[rel]
        if is_segment(rel):
            assert (row["bundled"], row["reason"]) == ("no", SEGMENT_REASON)
        else:
            assert row["bundled"] == "yes", row
    assert "state/log" in data and "runtime/current_config.toml" in data
    if layout == "main":
        assert {"metadata/superblock.a", "metadata/journal.wal"} <= set(data)
    stats = bundled.source.stats
    assert stats.files == len(data) and stats.bytes == sum(map(len, data.values()))
    assert stats.walk_complete and not stats.cut
    # One manifest line sums the segments up, with the mode that left them out.
    (reason,) = [r for p, r in bundled.source.skipped if p == NODE_DIR]
    assert f"{built.segments:,} segment payloads" in reason and "metadata" in reason
    assert set(bundled.zip.namelist()[-2:]) == {"listing.tsv", "bundle.json"}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_full_mode_adds_segments_after_everything_else(tmp_path: Path, layout: str) -> None:
    built = node(tmp_path, layout, segment_bytes=[10 * KIB, 70 * KIB])
    for path in built.data_dir.rglob("*.log"):  # real payloads, not only sparse zeros
        if path.parent.name.isdigit():
            path.write_bytes(os.urandom(path.stat().st_size))
    bundled = run_bundle(built.data_dir, tmp_path / "iggy-data.zip", mode="full", threads=2)
    data, entries = bundled.data(), tree(built)
    files = {rel for rel, path in entries.items() if path.is_file()}
    assert set(data) == files
    for rel, content in data.items():
        assert content == entries[rel].read_bytes(), rel
    names = [n.removeprefix("data/") for n in bundled.zip.namelist() if n.startswith("data/")]
    first_segment = min(i for i, n in enumerate(names) if is_segment(n))
    assert all(is_segment(n) for n in names[first_segment:])  # the second pass
    assert sum(is_segment(n) for n in names) == built.segments
    check_listing(bundled, built)
    assert all(bundled.listing[rel]["bundled"] == "yes" for rel in files)
    assert bundled.source.skipped == []


@pytest.mark.parametrize("layout", ["0.5", "0.8"])
def test_redaction_removes_the_jwt_secret_and_withholds_hashes(tmp_path: Path, layout: str) -> None:
    built = node(tmp_path, layout, streams=1, topics=1, partitions=1)
    assert JWT_SECRET in (built.data_dir / "runtime/current_config.toml").read_bytes()
    extra = {
        "custom/app.yaml": b"db:\n  password: yaml-secret-value-7f3a9c21\n",
        ".env": b"IGGY_ROOT_PASSWORD=dotenv-secret-value-5e8b1d44\n",
        "logs/iggy-server.log.2": b"INFO Generated root user password: k8Vx2pQr7LmN4sTz\n",
    }
    for rel, content in extra.items():
        (built.data_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (built.data_dir / rel).write_bytes(content)
    redactor = redactor_for(RedactionConfig())
    out = tmp_path / "iggy-data.zip"
    bundled = run_bundle(built.data_dir, out, redact=redactor.stream, level=0)
    data = bundled.data()
    secrets = [
        JWT_SECRET,
        b"yaml-secret-value-7f3a9c21",
        b"dotenv-secret-value-5e8b1d44",
        b"k8Vx2pQr7LmN4sTz",
    ]
    raw = out.read_bytes()  # level 0: every member stored, so the bytes are searchable
    for secret in secrets:
        assert secret not in raw
        assert not any(secret in content for content in data.values())
    config = data["runtime/current_config.toml"].decode()
    assert "encoding_secret" in config and "[REDACTED" in config
    assert "[system]" in config  # the rest of the config is kept
    for rel in ("state/log", "state/tokens"):
        assert rel not in data
        assert (bundled.listing[rel]["bundled"], bundled.listing[rel]["reason"]) == (
            "no",
            WITHHELD_REASON,
        )
        assert bundled.skipped()[f"{NODE_DIR}/{rel}"] == WITHHELD_REASON
    assert data["state/info"] == (built.data_dir / "state/info").read_bytes()  # binary: as is
    index = next(r for r in data if r.endswith(".index"))
    assert data[index] == (built.data_dir / index).read_bytes()
    assert bundled.listing["runtime/current_config.toml"]["reason"] == "redacted"
    assert redactor.tally  # counted for the manifest's redaction section


def test_redaction_failure_withholds_the_rest_of_the_file(tmp_path: Path) -> None:
    built = node(tmp_path, "0.8", streams=1, topics=1, partitions=1)

    def broken(chunks: object, name: str) -> object:
        yield b"first line\n"
        raise ValueError("a bug in a rule")

    bundled = run_bundle(built.data_dir, tmp_path / "iggy-data.zip", redact=broken)  # type: ignore[arg-type]
    content = bundled.data()["runtime/current_config.toml"]
    assert content.startswith(b"first line\n") and b"withheld from this point" in content
    assert JWT_SECRET not in content
    row = bundled.listing["runtime/current_config.toml"]
    assert row["bundled"] == "partial" and "redacting it failed (ValueError)" in row["reason"]


def test_without_redaction_state_files_are_copied(tmp_path: Path) -> None:
    built = node(tmp_path, "0.8", streams=1, topics=1, partitions=1)
    data = run_bundle(built.data_dir, tmp_path / "iggy-data.zip").data()
    assert data["state/log"] == (built.data_dir / "state/log").read_bytes()
    assert JWT_SECRET in data["runtime/current_config.toml"]


def test_the_cap_is_hard_and_segments_never_crowd_out_the_rest(tmp_path: Path) -> None:
    built = node(tmp_path, "0.8", segment_bytes=64 * KIB)
    entries = tree(built)
    small = sum(p.stat().st_size for r, p in entries.items() if p.is_file() and not is_segment(r))
    cap = small + 3 * 64 * KIB + 100  # room for the small files and three segments
    bundled = run_bundle(built.data_dir, tmp_path / "iggy-data.zip", mode="full", max_bytes=cap)
    data = bundled.data()
    assert sum(map(len, data.values())) <= cap
    assert {r for r in data if not is_segment(r)} == {
        r for r, p in entries.items() if p.is_file() and not is_segment(r)
    }
    assert sum(is_segment(r) for r in data) == 3
    cut = [r for r, row in bundled.listing.items() if row["reason"].startswith("over iggy_max")]
    assert len(cut) == built.segments - 3
    assert all(bundled.listing[r]["bundled"] == "no" for r in cut)
    stats = bundled.source.stats
    assert stats.cut and stats.bytes <= cap and stats.skipped["cut"] == len(cut)
    assert all(f"{NODE_DIR}/{r}" in bundled.skipped() for r in cut)


def test_a_cap_of_zero_keeps_the_listing(tmp_path: Path) -> None:
    built = node(tmp_path, "0.8", streams=1)
    bundled = run_bundle(built.data_dir, tmp_path / "iggy-data.zip", max_bytes=0)
    files = {r: p.stat().st_size for r, p in tree(built).items() if p.is_file()}
    assert set(bundled.data()) == {r for r, size in files.items() if size == 0}
    for rel, size in files.items():
        if size and not is_segment(rel):
            assert bundled.listing[rel]["reason"].startswith("over iggy_max_bytes"), rel
    assert bundled.source.stats.cut and bundled.source.stats.bytes == 0
    check_listing(bundled, built)


def test_unzip_accepts_the_bundle(tmp_path: Path) -> None:
    if shutil.which("unzip") is None:
        pytest.skip("unzip is not installed")
    built = node(tmp_path, "main")
    out = tmp_path / "iggy-data.zip"
    run_bundle(built.data_dir, out, mode="full", threads=2)
    result = subprocess.run(["unzip", "-tq", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    target = tmp_path / "extracted"
    subprocess.run(["unzip", "-q", str(out), "-d", str(target)], check=True)
    assert (target / "data/runtime/current_config.toml").read_bytes() == (
        built.data_dir / "runtime/current_config.toml"
    ).read_bytes()
    assert zipfile.ZipFile(out).getinfo("listing.tsv").file_size > 0


def test_the_bundle_streams_as_a_member_of_the_outer_archive(tmp_path: Path) -> None:
    built = node(tmp_path, "0.8", streams=1)
    source = bundle_entries(
        built.data_dir, NODE_DIR, "full", 1 << 30, None, time.monotonic() + 60, 6, 2
    )
    outer = ZipStream(level=6, threads=2)
    out = tmp_path / "snapshot.zip"
    with out.open("wb") as fh:
        for chunk in outer.archive([Entry(IGGY_DATA, source.chunks())]):
            fh.write(chunk)
    with zipfile.ZipFile(out) as archive:
        inner = zipfile.ZipFile(io.BytesIO(archive.read(IGGY_DATA)))
    assert inner.testzip() is None
    assert inner.read("data/state/info") == (built.data_dir / "state/info").read_bytes()
    (member,) = outer.members  # the manifest's size and sha256 are of the inner bytes
    with zipfile.ZipFile(out) as archive:
        assert member.size == archive.getinfo(IGGY_DATA).file_size
    assert source.stats.files == len([n for n in inner.namelist() if n.startswith("data/")])
