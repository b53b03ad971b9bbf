"""The leak scan: an independent second pass over every member as it enters the archive.

To prove it works, the first pass is replaced by one that lets everything through: the
leak scan alone must then keep the token formats out of every member, and say so in the
manifest under leak-scan:<rule>.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from snapshot_agent.config import Config, LoadedConfig
from snapshot_agent.core.check import Check
from snapshot_agent.core.context import Context
from snapshot_agent.core.results import Result, Status
from snapshot_agent.pipeline.filter import Filter, IdentityFilter
from snapshot_agent.pipeline.record import SnapshotOptions, SnapshotRecord
from snapshot_agent.pipeline.snapshot import take_snapshot
from snapshot_agent.storage.local import LocalSink

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJpZ2d5LWFkbWluIiwiaWF0IjoxNzMwMDAwMDAwfQ"
    ".dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk4"
)
GITHUB = "ghp_3X83RZJzzzzgEOzdmenCkhvMdgaKjIg8xNbe"


def leaky(ctx: Context) -> Result:
    """A check saying and saving tokens (no first pass will catch them here)."""
    ctx.artifact("log.txt", f"Authorization: Bearer {JWT}\nclone with {GITHUB}\n")
    return Result(Status.PASS, f"found {GITHUB}", data={"token": JWT})


def snapshot_of_leaky(
    tmp_path: Path, options: SnapshotOptions, flt: Filter | None = None
) -> SnapshotRecord:
    """A snapshot of the leaky check alone, with `flt` as its first pass; it was stored."""
    check = Check(id="test.leaky", category="test", title="leaky", description="x", run=leaky)
    sink = LocalSink(tmp_path)
    record = take_snapshot(LoadedConfig(Config(), None, None), [check], sink, options, flt=flt)
    assert record.archive is not None
    return record


def test_the_leak_scan_alone_keeps_tokens_out_and_counts_them(tmp_path: Path) -> None:
    # Redaction asked for, so the leak scan runs; but the first pass misses everything.
    record = snapshot_of_leaky(tmp_path, SnapshotOptions(), flt=IdentityFilter())
    with zipfile.ZipFile(record.archive.uri) as zf:
        stored = {name: zf.read(name) for name in zf.namelist()}
    for name, data in stored.items():
        assert JWT[:40].encode() not in data, name
        assert GITHUB[4:].encode() not in data, name
    audit = json.loads(stored["manifest.json"])["redaction"]
    assert audit["leak_scan_hits"] >= 5  # the log (2), report.json (2), report.html (2)...
    assert audit["files"]["raw/test.leaky/log.txt"] == {
        "leak-scan:authorization-header": 1,  # the JWT as a bearer token: both rules hit
        "leak-scan:jwt": 1,
        "leak-scan:github-token": 1,
    }
    assert audit["rules"]["leak-scan:jwt"] >= 3


def test_no_leak_scan_without_redaction(tmp_path: Path) -> None:
    record = snapshot_of_leaky(tmp_path, SnapshotOptions(redact=False))
    with zipfile.ZipFile(record.archive.uri) as zf:
        assert JWT.encode() in zf.read("raw/test.leaky/log.txt")
        assert json.loads(zf.read("manifest.json"))["redaction"]["leak_scan_hits"] == 0


class Breaks(IdentityFilter):
    """A first pass that fails halfway through a member (a bug in a rule)."""

    def stream(self, chunks, source=""):  # type: ignore[no-untyped-def]
        for chunk in chunks:
            yield chunk[:3]
            raise RuntimeError("rule bug: secret=" + JWT)


def test_a_member_that_cannot_be_redacted_is_withheld_and_listed(tmp_path: Path) -> None:
    """Never a crash that loses the snapshot, never the unredacted rest of the file."""
    record = snapshot_of_leaky(tmp_path, SnapshotOptions(), flt=Breaks())
    with zipfile.ZipFile(record.archive.uri) as zf:
        log = zf.read("raw/test.leaky/log.txt").decode()
        manifest = json.loads(zf.read("manifest.json"))
    assert log.startswith("Aut") and "withheld" in log and JWT[:20] not in log
    skipped = {s["item"]: s["reason"] for s in manifest["skipped"]}
    assert "redacting it failed (RuntimeError)" in skipped["raw/test.leaky/log.txt"]
    assert JWT[:20] not in json.dumps(manifest)


class BreaksOnData(IdentityFilter):
    """A first pass that fails on one check's data (a bug a rule meets on odd input)."""

    def field(self, name: str, value: str, source: str = "") -> str:
        if source.startswith("results/"):
            raise RuntimeError("rule bug: " + value)
        return value


def test_a_result_that_cannot_be_redacted_is_withheld_not_the_snapshot(tmp_path: Path) -> None:
    record = snapshot_of_leaky(tmp_path, SnapshotOptions(), flt=BreaksOnData())
    (only,) = record.checks
    assert only.status == "error" and "redacting it failed (RuntimeError)" in only.summary
    with zipfile.ZipFile(record.archive.uri) as zf:
        assert "raw/test.leaky/log.txt" not in zf.namelist()  # its evidence is withheld too
        assert JWT[:20].encode() not in zf.read("report.json")
