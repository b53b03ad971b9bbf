"""manifest.json: every other member with its size and sha256, and how the snapshot was made."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from snapshot_agent.archive.writer import Member
from snapshot_agent.pipeline.record import SnapshotRecord

MANIFEST_SCHEMA_VERSION = 1


def manifest_document(record: SnapshotRecord, members: Sequence[Member]) -> dict[str, Any]:
    """The manifest of an archive whose other members are `members`."""
    return {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "agent_version": record.agent_version,
        "name": record.name,
        "created_at": record.created_at,
        "completed_at": record.completed_at,
        "node": record.node,
        "options": record.options.to_json(),
        "members": [m.to_dict() for m in members],
        "checks": [
            {
                "id": c.id,
                "status": str(c.status),
                "duration_ms": c.duration_ms,
                "truncated_artifacts": [a.name for a in c.artifacts if a.truncated],
            }
            for c in record.checks
        ],
        "skipped": [{"item": s.item, "reason": s.reason} for s in record.skipped],
        "redaction": record.redaction.to_json(),
    }
