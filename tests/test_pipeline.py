"""The pipeline in-process with the real forking runner: one exit for every byte, sinks, record."""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import IO

import pytest

from snapshot_agent.archive.verify import verify_archive
from snapshot_agent.config import ChecksConfig, Config, LoadedConfig, NodeConfig
from snapshot_agent.core.check import Check
from snapshot_agent.core.context import Context
from snapshot_agent.core.results import Finding, Result, Severity, Status
from snapshot_agent.errors import STOP_SIGNALS, SnapshotError
from snapshot_agent.pipeline.record import (
    ArchiveLocation,
    SnapshotOptions,
    SnapshotRecord,
    SnapshotStatus,
)
from snapshot_agent.pipeline.snapshot import take_snapshot
from snapshot_agent.redact.audit import RedactionAudit
from snapshot_agent.render.terminal import PlainProgress, print_summary
from snapshot_agent.storage.local import LocalSink

from .conftest import starred

PLANTED = "PLANTED-7c1e"
FILTERED = "FILTERED-7c1e"


class MarkingFilter:
    """Rewrites the planted marker: any planted copy left proves a route skipped the filter."""

    def __init__(self) -> None:
        self.hits = 0

    def text(self, value: str, source: str = "") -> str:
        self.hits += value.count(PLANTED)
        return value.replace(PLANTED, FILTERED)

    def stream(self, chunks: Iterable[bytes], source: str = "") -> Iterator[bytes]:
        data = b"".join(chunks)  # test-sized evidence: the marker never straddles a chunk
        self.hits += data.count(PLANTED.encode())
        yield data.replace(PLANTED.encode(), FILTERED.encode())

    def field(self, name: str, value: str, source: str = "") -> str:
        return self.text(value, source)

    def argv(self, argv: Sequence[str], source: str = "", name: str = "") -> list[str]:
        return [self.text(a) for a in argv]

    def audit(self) -> RedactionAudit:
        return RedactionAudit(applied=True, rules={"marker": self.hits})


def plants_everywhere(copied: Path, ctx: Context) -> Result:
    """Puts the marker in every route a check has to the outside."""
    print(f"stray print {PLANTED}")  # -> check-output.txt
    ctx.artifact("artifact.txt", f"evidence {PLANTED}\n")
    ctx.json_artifact("doc.json", {"value": PLANTED})
    ctx.run(["echo", f"command output {PLANTED}"], save_as="echo.txt")  # argv -> commands.json
    ctx.copy_file(str(copied))  # a copied node file (configs, logs)
    return Result(
        Status.WARN,
        f"summary {PLANTED}",
        [Finding(Severity.WARN, f"message {PLANTED}", f"fix {PLANTED}", f"subject {PLANTED}")],
        {PLANTED: [f"row {PLANTED}", {"nested": PLANTED}]},
    )


def crashes(_ctx: Context) -> Result:
    raise RuntimeError(f"exception text {PLANTED}")  # -> summary and traceback.txt


def hangs(_ctx: Context) -> Result:
    print(f"about to hang {PLANTED}", flush=True)
    import time

    time.sleep(60)
    raise AssertionError("unreachable")


def test_check(id: str, fn) -> Check:
    return Check(id=id, category="test", title=f"Title {id}", description="Test.", run=fn)


test_check.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def loaded(config: Config) -> LoadedConfig:
    return LoadedConfig(config, None, None)


def members(archive: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(archive) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def test_every_route_out_of_a_check_passes_the_filter(tmp_path: Path) -> None:
    copied = tmp_path / "node.conf"
    copied.write_text(f"name = {PLANTED}\n")
    config = Config(
        node=NodeConfig(name=f"node {PLANTED}"),
        checks=ChecksConfig(timeout_s=3, deadline_s=20),
    )
    checks = [
        test_check("test.plants", partial(plants_everywhere, copied)),
        test_check("test.crashes", crashes),
        test_check("test.hangs", hangs),
    ]
    flt = MarkingFilter()
    progress = io.StringIO()
    record = take_snapshot(
        loaded(config),
        checks,
        LocalSink(tmp_path / "out"),
        SnapshotOptions(),
        PlainProgress(len(checks), progress),
        flt=flt,
    )
    summary = io.StringIO()
    print_summary(record, summary)
    assert record.archive is not None
    stored = members(Path(record.archive.uri))

    # No planted marker anywhere: not in any member, not on the terminal.
    for name, data in stored.items():
        assert PLANTED.encode() not in data, f"{name} skipped the filter"
    assert PLANTED not in progress.getvalue() + summary.getvalue()
    assert FILTERED in progress.getvalue()

    # And each route is really there, filtered (so the test cannot pass by losing data).
    raw = {n: d.decode() for n, d in stored.items() if n.startswith("raw/")}
    for member in (
        "raw/test.plants/check-output.txt",
        "raw/test.plants/artifact.txt",
        "raw/test.plants/doc.json",
        "raw/test.plants/echo.txt",
        "raw/test.plants/commands.json",
        f"raw/test.plants/files{copied}",
        "raw/test.crashes/traceback.txt",
        "raw/test.hangs/check-output.txt",
    ):
        assert FILTERED in raw[member], member
    report = json.loads(stored["report.json"])
    plants = next(c for c in report["checks"] if c["id"] == "test.plants")
    assert plants["summary"] == f"summary {FILTERED}"
    assert plants["findings"][0]["message"] == f"message {FILTERED}"
    assert plants["findings"][0]["remediation"] == f"fix {FILTERED}"
    assert plants["findings"][0]["subject"] == f"subject {FILTERED}"
    assert plants["data"] == {FILTERED: [f"row {FILTERED}", {"nested": FILTERED}]}
    crashed = next(c for c in report["checks"] if c["id"] == "test.crashes")
    assert crashed["status"] == "error" and FILTERED in crashed["summary"]
    assert report["snapshot"]["node"]["name"] == f"node {FILTERED}"
    assert FILTERED in stored["report.html"].decode()
    manifest = json.loads(stored["manifest.json"])
    assert manifest["node"]["name"] == f"node {FILTERED}"
    assert manifest["redaction"]["applied"] is True
    assert manifest["redaction"]["rules"]["marker"] == flt.hits
    assert manifest["redaction"]["leak_scan_hits"] == 0
    assert verify_archive(Path(record.archive.uri)).ok


def test_default_filter_masks_command_line_secrets_in_results_and_evidence(
    tmp_path: Path,
) -> None:
    def leaks(ctx: Context) -> Result:
        ctx.run(["echo", "--password", "hunter2"], save_as="out.txt")
        return Result(
            Status.PASS,
            "app --token t0ps3cret",
            data={
                "cmd": "x DB_PASSWORD=pw",
                "top": ["mysql -u root -pMy5ql db", "redis-cli -a R3dis ping"],
                "header": "curl -H 'Authorization: Bearer b3arer' https://x",
            },
        )

    record = take_snapshot(
        loaded(Config()), [test_check("test.leaks", leaks)], LocalSink(tmp_path), SnapshotOptions()
    )
    assert record.archive is not None
    stored = members(Path(record.archive.uri))
    blob = b"".join(stored.values())
    for secret in (b"hunter2", b"t0ps3cret", b"=pw", b"My5ql", b"R3dis", b"b3arer"):
        assert secret not in blob
    assert starred(stored["raw/test.leaks/out.txt"].decode()) == "--password ***\n"
    manifest = json.loads(stored["manifest.json"])
    assert manifest["redaction"]["applied"] is True
    assert manifest["redaction"]["files"]["raw/test.leaks/out.txt"]
    assert sum(manifest["redaction"]["files"]["results/test.leaks"].values()) >= 6
    assert manifest["redaction"]["leak_scan_hits"] == 0

    unredacted = take_snapshot(
        loaded(Config()),
        [test_check("test.leaks", leaks)],
        LocalSink(tmp_path / "plain"),
        SnapshotOptions(redact=False),
    )
    assert unredacted.archive is not None
    plain = members(Path(unredacted.archive.uri))
    assert b"hunter2" in plain["raw/test.leaks/out.txt"]
    audit = json.loads(plain["manifest.json"])["redaction"]
    assert audit["applied"] is False and audit["rules"] == {} and audit["files"] == {}
    assert "Not redacted" in plain["report.html"].decode()
    assert "Not redacted" not in stored["report.html"].decode()


def test_record_says_where_the_archive_is_and_round_trips(tmp_path: Path) -> None:
    def ok(ctx: Context) -> Result:
        ctx.artifact("a.txt", "x" * 100)
        return Result(Status.FAIL, "broken", [Finding(Severity.FAIL, "broken", "fix it")])

    opened: list[SnapshotRecord] = []
    record = take_snapshot(
        loaded(Config()),
        [test_check("test.one", ok)],
        LocalSink(tmp_path),
        SnapshotOptions(only=("test.one",)),
        on_open=opened.append,
    )
    assert [r.status for r in opened] == [SnapshotStatus.COMPLETED]  # the same object, now done
    assert opened[0].checks == [] or opened[0] is record
    assert record.status == SnapshotStatus.COMPLETED and record.failed
    assert record.archive is not None
    path = Path(record.archive.uri)
    assert path.is_file() and path.name == f"{record.name}.zip"
    assert record.archive.size_bytes == path.stat().st_size
    import hashlib

    assert record.archive.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()

    doc = json.loads(json.dumps(record.to_json()))
    again = SnapshotRecord.from_json(doc)
    assert again == record
    assert again.to_json() == doc
    outline = record.outline()
    assert outline["path"] == str(path) and outline["failed"] == ["test.one"]
    assert outline["status"] == "completed" and outline["verdict"] == "fail"

    report = json.loads(members(path)["report.json"])
    assert report["checks"] == [c.to_json() for c in record.checks]
    assert report["summary"] == record.summary and report["verdict"] == "fail"


class FailingStream(io.RawIOBase):
    """A sink stream whose disk fills after `room` bytes."""

    def __init__(self, room: int) -> None:
        self.room = room

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if len(data) > self.room:
            raise OSError(28, "No space left on device")
        self.room -= len(data)
        return len(data)


class MemorySink:
    """A sink that is not a file: streams only (no seek), like object storage."""

    kind = "memory"

    def __init__(self, workdir: Path, stream: IO[bytes] | None = None) -> None:
        self.workdir = workdir
        self.where = "memory://test"
        self.buffer = io.BytesIO()
        self.stream = stream or _NoSeek(self.buffer)
        self.committed = self.aborted = False

    def open(self, name: str) -> tuple[str, IO[bytes]]:
        return name, self.stream  # type: ignore[return-value]

    def commit(self, size_bytes: int, sha256: str) -> ArchiveLocation:
        self.committed = True
        return ArchiveLocation(self.kind, self.where, size_bytes, sha256)

    def abort(self) -> None:
        if not self.committed:
            self.aborted = True


class _NoSeek(io.RawIOBase):
    def __init__(self, target: io.BytesIO) -> None:
        self.target = target

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        return self.target.write(data)


def test_a_stream_only_sink_gets_a_valid_archive(tmp_path: Path) -> None:
    sink = MemorySink(tmp_path)
    checks = [
        test_check(
            "test.big", lambda ctx: Result(Status.PASS, ctx.artifact("b", os.urandom(3 << 20)).name)
        )
    ]
    record = take_snapshot(loaded(Config()), checks, sink, SnapshotOptions())
    assert sink.committed and not sink.aborted
    data = sink.buffer.getvalue()
    assert record.archive is not None and record.archive.size_bytes == len(data)
    archive = tmp_path / "copy.zip"
    archive.write_bytes(data)
    assert verify_archive(archive).ok
    assert list(tmp_path.iterdir()) == [archive]  # the spool is gone


def test_a_sink_that_fails_mid_archive_leaves_nothing(tmp_path: Path) -> None:
    sink = MemorySink(tmp_path, FailingStream(room=4096))  # type: ignore[arg-type]
    checks = [
        test_check(
            "test.big", lambda ctx: Result(Status.PASS, ctx.artifact("b", os.urandom(1 << 20)).name)
        )
    ]
    with pytest.raises(SnapshotError, match=r"memory://test.*No space left"):
        take_snapshot(loaded(Config()), checks, sink, SnapshotOptions())
    assert sink.aborted and not sink.committed
    assert list(tmp_path.iterdir()) == []


def test_data_that_is_not_json_is_filtered_as_text_and_stored(tmp_path: Path) -> None:
    def odd(_ctx: Context) -> Result:
        return Result(
            Status.PASS,
            "ok",
            data={"raw": b"DB_PASSWORD=pw", "path": tmp_path, "set": {"b", "a"}, 7: None},
        )

    record = take_snapshot(
        loaded(Config()),
        [test_check("test.odd", odd)],
        LocalSink(tmp_path / "o"),
        SnapshotOptions(),
    )
    assert record.archive is not None
    report = json.loads(members(Path(record.archive.uri))["report.json"])
    data = report["checks"][0]["data"]
    assert starred(data.pop("raw")) == "DB_PASSWORD=***"
    assert data == {
        "path": str(tmp_path),
        "set": ["a", "b"],
        "7": None,
    }


def test_an_interrupt_anywhere_in_the_parent_stops_the_snapshot_and_cleans_up(
    tmp_path: Path,
) -> None:
    """The SIGTERM handler raises Interrupted wherever the parent is; nothing may swallow it."""
    from snapshot_agent.errors import Interrupted

    assert not issubclass(Interrupted, Exception)  # `except Exception` cannot catch it

    class InterruptOnFirstResult(PlainProgress):
        def finished(self, check: Check, result: Result) -> None:
            raise Interrupted(15)

    def slow(ctx: Context) -> Result:
        ctx.run(["sleep", "30"])
        return Result(Status.PASS, "unreachable")

    checks = [
        test_check("test.fast", lambda _ctx: Result(Status.PASS, "fast")),
        test_check("test.slow", slow),
    ]
    out = tmp_path / "out"
    with pytest.raises(Interrupted):
        take_snapshot(
            loaded(Config()), checks, LocalSink(out), SnapshotOptions(), InterruptOnFirstResult(2)
        )
    assert list(out.iterdir()) == []  # no .partial, no spool


class SignalAfterCommit(LocalSink):
    """Sends its own process `signum` the moment the archive is renamed into place."""

    def __init__(self, directory: Path, signum: int) -> None:
        super().__init__(directory)
        self.signum = signum

    def commit(self, size_bytes: int, sha256: str) -> ArchiveLocation:
        location = super().commit(size_bytes, sha256)
        os.kill(os.getpid(), self.signum)
        deadline = time.monotonic() + 0.2  # Python code, where a handler would run now
        while time.monotonic() < deadline:
            pass
        return location


@pytest.fixture
def stop_handlers() -> Iterator[None]:
    """Give pytest its own handlers back after a test installs the CLI's."""
    saved = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize("worker", [False, True], ids=["alone", "with-a-worker-thread"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_once_the_archive_is_in_place_cannot_undo_it(
    tmp_path: Path, stop_handlers: None, sig: signal.Signals, worker: bool
) -> None:
    """A real signal to this process just after the rename: the run completes as usual.

    With a thread that does not block the signal (a compression or upload worker), the
    kernel gives it to that thread, and Python runs the handler in the main thread
    whatever the main thread's mask: the hold must still put it off (this failed at
    random in full runs, whose earlier tests had left threads behind).
    """
    from snapshot_agent.cli import _StopOnSignal

    def noted(record: SnapshotRecord) -> None:
        stop.record = record

    done = threading.Event()
    if worker:
        threading.Thread(target=done.wait, daemon=True).start()
    checks = [test_check("test.fast", lambda _ctx: Result(Status.PASS, "fast"))]
    with _StopOnSignal() as stop:
        record = take_snapshot(
            loaded(Config()),
            checks,
            SignalAfterCommit(tmp_path, sig),
            SnapshotOptions(),
            None,
            on_open=noted,
        )
    done.set()
    assert stop.received == sig
    assert record.status == SnapshotStatus.COMPLETED and record.archive is not None
    archive = Path(record.archive.uri)
    assert os.listdir(tmp_path) == [archive.name]  # no .partial, no working directory
    assert verify_archive(archive).ok
