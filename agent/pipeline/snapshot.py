"""Taking one snapshot: run the checks, pass everything through the filter, stream the archive.

    sink.open -> runner (results filtered as they arrive) -> record
              -> evidence (filtered streams), report, manifest -> writer -> sink.commit

The sink is opened first, so an unwritable destination is refused before any check
runs. Whatever fails, nothing half-written is left: the sink aborts and the spool of
raw evidence is removed. The commit and that cleanup hold the stop signals: a second
Ctrl-C cannot cut the cleanup short, and a signal after the commit cannot undo it.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
import socket
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import IO

from snapshot_agent.archive.crypto import EncryptingStream
from snapshot_agent.archive.manifest import manifest_document
from snapshot_agent.archive.signing import signed
from snapshot_agent.archive.writer import (
    MANIFEST,
    ArchiveWriter,
    Entry,
    compress_threads,
    json_bytes,
)
from snapshot_agent.config import Config, LoadedConfig
from snapshot_agent.core.check import Check
from snapshot_agent.core.registry import thresholds_for
from snapshot_agent.core.results import Result, Status
from snapshot_agent.core.runner import Observer, Runner
from snapshot_agent.core.units import utc_iso
from snapshot_agent.errors import AgentError, SnapshotError, stop_signals_held
from snapshot_agent.node.identity import node_identity
from snapshot_agent.pipeline.filter import (
    Filter,
    filter_for,
    filter_result,
    filter_value,
    results_source,
)
from snapshot_agent.pipeline.iggy_bundle import iggy_entries
from snapshot_agent.pipeline.members import evidence_entries, leak_scanned, report_entries, teed
from snapshot_agent.pipeline.protection import Protection
from snapshot_agent.pipeline.record import (
    CheckRecord,
    SkippedItem,
    SnapshotOptions,
    SnapshotRecord,
    SnapshotStatus,
    snapshot_name,
)
from snapshot_agent.redact.catalog import leak_scan_for
from snapshot_agent.redact.redactor import Redactor
from snapshot_agent.render.raw import RawHeads
from snapshot_agent.storage.local import retry_removal
from snapshot_agent.storage.sink import Sink

#: The bundle's working files (its listing), beside the evidence, removed with it.
BUNDLE_SPOOL = ".iggy-data"


def take_snapshot(
    loaded: LoadedConfig,
    checks: Sequence[Check],
    sink: Sink,
    options: SnapshotOptions,
    observer: Observer | None = None,
    flt: Filter | None = None,
    on_open: Callable[[SnapshotRecord], None] | None = None,
    name: str | None = None,
) -> SnapshotRecord:
    """Run `checks` and store the archive in `sink`; the completed record says where.

    `flt` defaults to the one `options.redact` asks for; `on_open` is told the record
    (name, node) once the archive is reserved, before any check runs. `name`: the
    archive's name (the service's record names it) instead of one from the clock; the
    sink adds a suffix only if an archive of that name is already there.
    """
    config = loaded.config
    identity = node_identity(config)
    names = [identity["hostname"], identity["name"], socket.getfqdn()]
    flt = flt or filter_for(options.redact, config.redaction, names)
    # Keys first: a missing recipient key or an unusable node key stops the run before
    # any check runs or anything is written.
    protect = Protection.for_config(config)
    # The independent second pass over every member (none when nothing is redacted).
    scan = leak_scan_for(config.redaction) if options.redact else None
    started = datetime.now(UTC)
    spool = None
    try:  # from the first step: a signal at any point leaves nothing behind
        name, stream = sink.open(name or snapshot_name(started))
        with stop_signals_held():  # created and recorded as one step, so always removed
            spool = _make_spool(sink, name)
        record = SnapshotRecord(
            name=name,
            created_at=utc_iso(started),
            node=filter_value(flt, identity, "node"),
            options=options,
        )
        if on_open:
            on_open(record)
        runner = Runner(
            config,
            spool,
            lambda c: thresholds_for(c, loaded),
            observer,
            result_filter=partial(_filtered_or_withheld, flt),
        )
        record.checks = [_check_record(flt, o.check, o.result) for o in runner.run(checks)]
        record.completed_at = utc_iso(datetime.now(UTC))
        record.skipped = skipped_items(record) + protect.skipped
        try:
            size, sha256 = _write_archive(stream, spool, record, flt, scan, config, protect)
            _remove_spool(spool)  # everything is in the archive now
            with stop_signals_held():  # the caller tells a late signal by record.archive
                record.archive = sink.commit(size, sha256)
        except OSError as exc:
            raise SnapshotError(
                f"writing {sink.where} failed ({exc.strerror or exc}); nothing was kept. "
                + _what_to_do(exc)
            ) from None
        except AgentError:  # already one line saying what to do (an S3 upload refused)
            raise
        except Exception as exc:  # a bug: still one line, still nothing left behind
            raise SnapshotError(
                f"writing {sink.where} failed ({type(exc).__name__}: {exc}); nothing was "
                "kept. This is a bug in snapshot-agent: please report this message"
            ) from exc
        record.status = SnapshotStatus.COMPLETED
        return record
    finally:
        _clean_up(spool, sink)


def _what_to_do(exc: OSError) -> str:
    """The advice for an archive that could not be written, by what went wrong."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "Free space there or pass --output to another disk"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO):
        return "Check the disk, or pass --output to another one"
    named = f" ({exc.filename})" if exc.filename else ""
    return (
        f"Check that the destination still exists and is writable{named}; if it is, this "
        "is a bug in snapshot-agent: please report this message"
    )


def _filtered_or_withheld(flt: Filter, check: Check, result: Result) -> Result:
    """The result through the filter; if that fails, an error saying it was withheld
    (with its evidence): one check's odd data never costs the whole snapshot."""
    try:
        return filter_result(flt, check, result)
    except Exception as exc:  # a bug in a rule, met by this check's data
        summary = f"result withheld: redacting it failed ({type(exc).__name__})"
        return Result(Status.ERROR, summary, duration_ms=result.duration_ms)


def _check_record(flt: Filter, check: Check, result: Result) -> CheckRecord:
    """The record of a check, its title and description filtered too: a check from the
    config describes its command line, which may carry a password."""
    record = CheckRecord.of(check, result)
    source = results_source(check.id)
    record.title = flt.text(record.title, source)
    record.description = flt.text(record.description, source)
    return record


def _clean_up(spool: Path | None, sink: Sink) -> None:
    """Remove the spool and abort the sink (after a commit, only what is beside it).

    A burst of Ctrl-C waits until this is done; a first signal raised just as the
    signals are being held would skip the body, so it runs again (both steps are
    idempotent) whatever happened.
    """
    try:
        with stop_signals_held():
            _discard(spool, sink)
    finally:
        _discard(spool, sink)


def _discard(spool: Path | None, sink: Sink) -> None:
    """The spool removed, the sink aborted; either may already be done."""
    try:
        if spool is not None:
            _remove_spool(spool)
    finally:
        sink.abort()


def skipped_items(record: SnapshotRecord) -> list[SkippedItem]:
    """Everything that was not collected, with the reason."""
    return [SkippedItem(c.id, c.summary) for c in record.checks if c.status == Status.SKIPPED]


def _write_archive(
    stream: IO[bytes],
    spool: Path,
    record: SnapshotRecord,
    flt: Filter,
    scan: Redactor | None,
    config: Config,
    protect: Protection,
) -> tuple[int, str]:
    """Raw evidence, iggy-data.zip, report.json and report.html, then the manifest (and
    manifest.sig when signing); encrypted on the way out when there are recipients.

    Every member passes the leak scan (`scan`) on its way into the archive (the Iggy
    bundle's text files inside it); what it finds is counted in the manifest's audit
    under `leak-scan:<rule>`. The size and sha256 returned are of the bytes stored.
    """
    out = EncryptingStream(stream, protect.recipients) if protect.recipients else None
    level, threads = config.archive.compression_level, compress_threads(config.archive.threads)
    writer = ArchiveWriter(out if out is not None else stream, level, threads)
    try:
        heads = RawHeads()  # of the evidence as stored: after the filter and the leak scan
        evidence = leak_scanned(evidence_entries(spool, record, flt), scan, record)
        writer.add_all(teed(evidence, heads))
        writer.add_all(iggy_entries(config, record, flt, scan, spool / BUNDLE_SPOOL))
        writer.add_all(leak_scanned(report_entries(record, heads), scan, record))
        record.redaction = flt.audit()  # every member has passed the filter by now
        if scan is not None:
            record.redaction.add(scan.audit())
        manifest = Entry(MANIFEST, [json_bytes(manifest_document(record, writer.members))])
        entries = leak_scanned([manifest], scan, record)  # signed as stored: outside the scan
        writer.add_all(signed(entries, protect.key) if protect.key else entries)
        size, sha256 = writer.close()
        if out is None:
            return size, sha256
        out.close()
        return out.size, out.sha256
    except BaseException:
        writer.abandon()
        raise


def _make_spool(sink: Sink, name: str) -> Path:
    """The working directory for the checks' raw evidence (0700: dmesg, configs)."""
    try:
        spool = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=sink.workdir))
    except OSError as exc:
        raise SnapshotError(
            f"{sink.where}: cannot create a working directory in {sink.workdir} "
            f"({exc.strerror}); free space there or pass another --output"
        ) from None
    with contextlib.suppress(OSError):  # mkdtemp asks for 0700; a umask may take more off
        spool.chmod(0o700)
    return spool


def _remove_spool(spool: Path) -> None:
    """Delete the working directory; a check killed a moment ago may still add a file."""

    def attempt() -> bool:
        shutil.rmtree(spool, ignore_errors=True)
        return not spool.exists()

    retry_removal(attempt)
