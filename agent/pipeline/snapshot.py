"""Taking one snapshot: run the checks, then stream report and evidence into the archive."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from snapshot_agent import __version__
from snapshot_agent.archive.writer import MANIFEST, ArchiveWriter, LocalArchive
from snapshot_agent.config import LoadedConfig
from snapshot_agent.core.check import Check
from snapshot_agent.core.registry import thresholds_for
from snapshot_agent.core.results import Status, worst_status
from snapshot_agent.core.runner import Observer, Outcome, Runner
from snapshot_agent.errors import UsageError
from snapshot_agent.node.identity import node_identity
from snapshot_agent.render.report import SnapshotMeta, build_report, render_html, status_counts


@dataclass(frozen=True)
class SnapshotOptions:
    """What was asked for; recorded in the report and the manifest."""

    redact: bool = True
    include_iggy: bool = True
    only: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    low_priority: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The supervisor's option names plus the CLI's selection."""
        return {
            "redact_secrets": self.redact,
            "include_iggy": self.include_iggy,
            "only": list(self.only),
            "skip": list(self.skip),
            "low_priority": self.low_priority,
        }


@dataclass
class SnapshotResult:
    """What `run` tells its caller."""

    path: Path
    name: str
    outcomes: list[Outcome]
    summary: dict[str, int]
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def verdict(self) -> Status:
        """The worst check status."""
        return worst_status(o.result.status for o in self.outcomes)

    @property
    def failed(self) -> bool:
        """True when at least one check failed (exit code 1)."""
        return any(o.result.status == Status.FAIL for o in self.outcomes)


def snapshot_name(now: datetime) -> str:
    """The supervisor's naming: snapshot-YYYYMMDD-HHMMSS in UTC."""
    return now.strftime("snapshot-%Y%m%d-%H%M%S")


def iso(now: datetime) -> str:
    """ISO 8601 UTC with a Z, second precision (the supervisor's format)."""
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def prepare_output(directory: Path, now: datetime) -> LocalArchive:
    """Create the output directory and the partial archive, or refuse before any check runs."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"--output {directory}: cannot create the directory ({exc.strerror}); "
            "pass a writable directory"
        ) from None
    if not directory.is_dir():
        raise UsageError(f"--output {directory}: not a directory; pass a writable directory")
    base = snapshot_name(now)
    for attempt in range(1, 100):
        name = base if attempt == 1 else f"{base}-{attempt}"
        archive = LocalArchive(directory, name)
        if archive.final.exists():
            continue
        try:
            archive.create()
        except FileExistsError:
            continue
        except OSError as exc:
            raise UsageError(
                f"--output {directory}: cannot write there ({exc.strerror}); "
                "pass a writable directory with free space"
            ) from None
        return archive
    raise UsageError(f"--output {directory}: too many snapshots named {base}*; clean up")


def take_snapshot(
    loaded: LoadedConfig,
    checks: Sequence[Check],
    output_dir: Path,
    options: SnapshotOptions,
    observer: Observer | None = None,
) -> SnapshotResult:
    """Run `checks` and write the archive into `output_dir`; exceptions leave nothing behind."""
    config = loaded.config
    started = datetime.now(UTC)
    archive = prepare_output(output_dir, started)
    spool = None
    try:
        try:
            spool = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", dir=output_dir))
        except OSError as exc:
            raise UsageError(
                f"--output {output_dir}: cannot create a working directory there "
                f"({exc.strerror}); free space or pass another directory"
            ) from None
        runner = Runner(config, spool, lambda c: thresholds_for(c, loaded), observer)
        outcomes = runner.run(checks)
        completed = datetime.now(UTC)
        meta = SnapshotMeta(
            name=archive.name,
            created_at=iso(started),
            completed_at=iso(completed),
            node=node_identity(config),
            options=options.to_dict(),
        )
        skipped = _skipped_items(outcomes, options)
        try:
            _write_archive(archive, spool, meta, outcomes, skipped)
            path = archive.commit()
        except OSError as exc:
            raise UsageError(
                f"writing {archive.partial} failed ({exc.strerror or exc}); nothing was kept. "
                "Free space there or pass --output to another disk"
            ) from None
        return SnapshotResult(path, archive.name, outcomes, status_counts(outcomes), skipped)
    finally:
        archive.abort()  # no-op after a successful commit
        if spool is not None:
            _remove_spool(spool)


def _remove_spool(spool: Path) -> None:
    """Delete the working directory; a check killed a moment ago may still add a file."""
    for _ in range(20):
        shutil.rmtree(spool, ignore_errors=True)
        if not spool.exists():
            return
        time.sleep(0.05)


def _write_archive(
    archive: LocalArchive,
    spool: Path,
    meta: SnapshotMeta,
    outcomes: Sequence[Outcome],
    skipped: list[dict[str, str]],
) -> None:
    """raw/ evidence, then report.json and report.html, then the manifest of them all."""
    assert archive.sink is not None
    writer = ArchiveWriter(archive.sink)
    try:
        for outcome in outcomes:
            for artifact in outcome.result.artifacts:
                source = spool / outcome.check.id / artifact.name
                if source.is_file():
                    writer.add_file(f"raw/{outcome.check.id}/{artifact.name}", source)
        report = build_report(meta, outcomes)
        writer.add_json("report.json", report)
        writer.add_bytes("report.html", render_html(report).encode())
        writer.add_json(MANIFEST, _manifest(meta, writer, outcomes, skipped))
        writer.close()
    except BaseException:
        writer.abandon()
        raise


def _manifest(
    meta: SnapshotMeta,
    writer: ArchiveWriter,
    outcomes: Sequence[Outcome],
    skipped: list[dict[str, str]],
) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "agent_version": __version__,
        "name": meta.name,
        "created_at": meta.created_at,
        "completed_at": meta.completed_at,
        "node": meta.node,
        "options": meta.options,
        "members": [m.to_dict() for m in writer.members],
        "checks": [
            {
                "id": o.check.id,
                "status": str(o.result.status),
                "duration_ms": o.result.duration_ms,
                "truncated_artifacts": [a.name for a in o.result.artifacts if a.truncated],
            }
            for o in outcomes
        ],
        "skipped": skipped,
        "redaction": {"applied": False, "rules": {}},
    }


def _skipped_items(outcomes: Sequence[Outcome], options: SnapshotOptions) -> list[dict[str, str]]:
    """Everything that was not collected, with the reason."""
    items = [
        {"item": o.check.id, "reason": o.result.summary}
        for o in outcomes
        if o.result.status == Status.SKIPPED
    ]
    if options.include_iggy:
        items.append(
            {
                "item": "iggy-data.zip",
                "reason": "the Iggy data bundle is not built by this version of the agent",
            }
        )
    return items
