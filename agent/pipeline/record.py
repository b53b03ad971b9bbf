"""The snapshot record: one model of a snapshot that every output derives from.

report.json (render/report.py), manifest.json (archive/manifest.py), `run --json`
(`SnapshotRecord.outline`), and later the service's store and API all read a
`SnapshotRecord`, so no output copies fields by hand. A record holds data only (no
check functions, no open files): it round-trips through `to_json` / `from_json`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import msgspec

from snapshot_agent import __version__
from snapshot_agent.core.check import Check
from snapshot_agent.core.results import ArtifactInfo, Finding, Result, Status, worst_status
from snapshot_agent.core.units import as_utc
from snapshot_agent.redact.audit import RedactionAudit

SCHEMA_VERSION = 1
#: The member under raw/<check id>/ that lists the commands a check ran.
COMMANDS = "commands.json"
#: The supervisor's naming of a snapshot: snapshot-YYYYMMDD-HHMMSS in UTC.
SNAPSHOT_NAME = re.compile(r"snapshot-[0-9]{8}-[0-9]{6}")


def snapshot_name(now: datetime) -> str:
    """A snapshot's name from the time it started: snapshot-YYYYMMDD-HHMMSS in UTC (a
    naive time taken as UTC, as utc_iso takes it)."""
    return as_utc(now).strftime("snapshot-%Y%m%d-%H%M%S")


def commands_json(commands: list[dict[str, Any]]) -> bytes:
    """raw/<check id>/commands.json as stored."""
    return json.dumps(commands, indent=2, sort_keys=True, default=str).encode()


class SnapshotStatus(StrEnum):
    """Where a snapshot is in its life (the supervisor's statuses, plus `failed`)."""

    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"  # no archive; `error` says why


@dataclass(frozen=True)
class SnapshotOptions:
    """What was asked for; recorded in the report and the manifest."""

    redact: bool = True
    include_iggy: bool = True
    only: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    low_priority: bool = True

    def to_json(self) -> dict[str, Any]:
        """The supervisor's option names plus the CLI's selection."""
        return {
            "redact_secrets": self.redact,
            "include_iggy": self.include_iggy,
            "only": list(self.only),
            "skip": list(self.skip),
            "low_priority": self.low_priority,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SnapshotOptions:
        """Inverse of to_json."""
        return cls(
            redact=bool(doc.get("redact_secrets", True)),
            include_iggy=bool(doc.get("include_iggy", True)),
            only=tuple(doc.get("only", ())),
            skip=tuple(doc.get("skip", ())),
            low_priority=bool(doc.get("low_priority", True)),
        )


@dataclass
class CheckRecord:
    """One check's declaration and outcome, as data."""

    id: str
    category: str
    title: str
    description: str
    status: Status
    summary: str
    duration_ms: int = 0
    findings: list[Finding] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    artifacts: list[ArtifactInfo] = field(default_factory=list)
    view: str | None = None
    commands: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, check: Check, result: Result) -> CheckRecord:
        """The record of `check` having produced `result`."""
        return cls(
            id=check.id,
            category=check.category,
            title=check.title,
            description=check.description,
            status=result.status,
            summary=result.summary,
            duration_ms=result.duration_ms,
            findings=list(result.findings),
            data=result.data,
            artifacts=list(result.artifacts)
            + (
                [ArtifactInfo(COMMANDS, *[len(commands_json(result.commands))] * 2)]
                if result.commands
                else []
            ),
            view=check.view,
            commands=result.commands,
        )

    def to_json(self) -> dict[str, Any]:
        """The report.json check entry."""
        return {
            "id": self.id,
            "category": self.category,
            "title": self.title,
            "description": self.description,
            "view": self.view,
            "status": str(self.status),
            "summary": self.summary,
            "duration_ms": self.duration_ms,
            "findings": [f.to_dict() for f in self.findings],
            "data": self.data,
            "artifacts": [a.to_dict() for a in self.artifacts],
            "commands": self.commands,
        }


@dataclass(frozen=True)
class SkippedItem:
    """Something that was not collected, and why."""

    item: str
    reason: str


@dataclass(frozen=True)
class ArchiveLocation:
    """Where the finished archive is, as the sink that stored it says."""

    sink: str  # "local" or "s3"
    uri: str  # a path for local archives, s3://bucket/key for object storage
    size_bytes: int
    sha256: str


@dataclass
class SnapshotRecord:
    """Everything known about one snapshot; the source of every output."""

    name: str
    created_at: str  # ISO 8601 UTC with Z
    node: dict[str, Any]
    options: SnapshotOptions
    status: SnapshotStatus = SnapshotStatus.PROCESSING
    completed_at: str | None = None
    error: str | None = None
    checks: list[CheckRecord] = field(default_factory=list)
    skipped: list[SkippedItem] = field(default_factory=list)
    redaction: RedactionAudit = field(default_factory=RedactionAudit)
    archive: ArchiveLocation | None = None
    agent_version: str = __version__

    @property
    def summary(self) -> dict[str, int]:
        """Checks per status, every status present (zeros included)."""
        counts = Counter(c.status for c in self.checks)
        return {str(s): counts.get(s, 0) for s in Status}

    @property
    def verdict(self) -> Status:
        """The worst check status."""
        return worst_status(c.status for c in self.checks)

    def ids(self, status: Status) -> list[str]:
        """Ids of the checks that ended in `status`."""
        return [c.id for c in self.checks if c.status == status]

    @property
    def failed(self) -> bool:
        """True when at least one check failed (exit code 1)."""
        return any(c.status == Status.FAIL for c in self.checks)

    def outline(self) -> dict[str, Any]:
        """What `run --json` prints: where the archive is and how the node looked."""
        archive = self.archive
        return {
            "path": archive.uri if archive else None,
            "name": self.name,
            "status": str(self.status),
            **({"error": self.error} if self.error else {}),
            "verdict": str(self.verdict),
            "summary": self.summary,
            "failed": self.ids(Status.FAIL),
            # Not part of the exit code (that is for the node's verdict), but a wedged
            # or broken check is worth a script's attention too.
            "timed_out": self.ids(Status.TIMEOUT),
            "errors": self.ids(Status.ERROR),
            "size_bytes": archive.size_bytes if archive else None,
            "sha256": archive.sha256 if archive else None,
        }

    def to_json(self) -> dict[str, Any]:
        """The whole record as plain JSON (for a store, an API, a file)."""
        doc: dict[str, Any] = msgspec.to_builtins(self)
        doc["options"] = self.options.to_json()
        doc["checks"] = [c.to_json() for c in self.checks]
        doc["summary"] = self.summary
        doc["verdict"] = str(self.verdict)
        doc["schema_version"] = SCHEMA_VERSION
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SnapshotRecord:
        """Inverse of to_json; derived fields (summary, verdict) are recomputed."""
        body = {k: v for k, v in doc.items() if k not in ("summary", "verdict", "schema_version")}
        body["options"] = msgspec.to_builtins(SnapshotOptions.from_json(doc.get("options") or {}))
        body["checks"] = [
            {k: v for k, v in c.items() if k != "artifacts"}
            | {
                "artifacts": [
                    {k: v for k, v in a.items() if k != "truncated"} for a in c["artifacts"]
                ]
            }
            for c in doc.get("checks", [])
        ]
        return msgspec.convert(body, cls)
