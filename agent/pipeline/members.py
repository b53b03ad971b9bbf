"""Member sources: what goes into the archive, as entries streamed in order.

Each source is a lazy iterable of `Entry`s, so the archive writer pulls one member at a
time: the raw evidence (through the filter), then the report built from the record. The
Iggy data bundle, iggy-data.zip, is one more source (`iggy_entries` in iggy_bundle.py),
streamed between the two; manifest.json (and manifest.sig) come last.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

from snapshot_agent.archive.writer import (
    RAW_DIR,
    REPORT_HTML,
    REPORT_JSON,
    Entry,
    file_chunks,
    json_bytes,
)
from snapshot_agent.pipeline.filter import Filter
from snapshot_agent.pipeline.record import COMMANDS, SkippedItem, SnapshotRecord, commands_json
from snapshot_agent.redact.redactor import Redactor
from snapshot_agent.render.html import render_html
from snapshot_agent.render.raw import RawHeads
from snapshot_agent.render.report import report_document


def evidence_entries(spool: Path, record: SnapshotRecord, flt: Filter) -> Iterator[Entry]:
    """raw/<check id>/<name> for every artifact the checks left, filtered as it streams.

    An artifact's recorded size is what the check kept (before the filter); the manifest
    has the size of each stored member.
    """
    for check in record.checks:
        for artifact in check.artifacts:
            path = f"{RAW_DIR}/{check.id}/{artifact.name}"
            if artifact.name == COMMANDS and check.commands:  # already filtered, field by field
                yield Entry(path, [commands_json(check.commands)])
                continue
            source = spool / check.id / artifact.name
            if source.is_file():
                chunks = flt.stream(file_chunks(source), path)
                yield Entry(path, withheld_on_failure(chunks, path, record))


def withheld_on_failure(
    chunks: Iterable[bytes], path: str, record: SnapshotRecord
) -> Iterator[bytes]:
    """The chunks; if redacting (or reading) them fails, the rest is withheld, said so
    at the end of the member and listed in the manifest, and the snapshot goes on.

    What was written before the failure had passed the redactor, so nothing leaks; the
    evidence is never dropped silently.
    """
    try:
        yield from chunks
    except Exception as exc:  # a bug in a rule, an unreadable spool file
        reason = f"withheld from this point: reading or redacting it failed ({type(exc).__name__})"
        record.skipped.append(SkippedItem(path, reason))
        yield f"\n[snapshot-agent: the rest of this file was {reason}]\n".encode()


def leak_scanned(
    entries: Iterable[Entry], scan: Redactor | None, record: SnapshotRecord
) -> Iterator[Entry]:
    """The entries with their bytes passing the leak scan (`None`: unchanged)."""
    for entry in entries:
        if scan is None:
            yield entry
        else:
            chunks = scan.stream(entry.chunks, entry.path)
            yield Entry(entry.path, withheld_on_failure(chunks, entry.path, record))


def teed(entries: Iterable[Entry], heads: RawHeads) -> Iterator[Entry]:
    """The entries unchanged, each one's head kept in `heads` as its bytes go by (for the
    page's raw viewer: the bytes as stored)."""
    for entry in entries:
        yield replace(entry, chunks=heads.tee(entry.path, entry.chunks))


def report_entries(record: SnapshotRecord, heads: RawHeads | None = None) -> Iterator[Entry]:
    """report.json and report.html, from the record as it stands when they are reached
    (and the raw heads collected by then)."""
    report = report_document(record)
    yield Entry(REPORT_JSON, [json_bytes(report)])
    yield Entry(REPORT_HTML, [render_html(report, heads.heads() if heads else None).encode()])
