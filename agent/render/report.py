"""report.json: the snapshot record as the archive's machine-readable report."""

from __future__ import annotations

from typing import Any

from snapshot_agent.pipeline.record import SCHEMA_VERSION, SnapshotRecord


def report_document(record: SnapshotRecord) -> dict[str, Any]:
    """The report.json document (the archive contract in DESIGN.md)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "agent_version": record.agent_version,
        "snapshot": {
            "name": record.name,
            "created_at": record.created_at,
            "completed_at": record.completed_at,
            "node": record.node,
            "options": record.options.to_json(),
        },
        "summary": record.summary,
        "verdict": str(record.verdict),
        "checks": [c.to_json() for c in record.checks],
    }
