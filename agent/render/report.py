"""The report: report.json (machine-readable) and report.html (rendered from templates/)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import jinja2

from snapshot_agent import __version__
from snapshot_agent.core.results import STATUS_ORDER, Status, worst_status
from snapshot_agent.core.runner import Outcome

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class SnapshotMeta:
    """Identity and timing of one snapshot."""

    name: str
    created_at: str  # ISO 8601 UTC, "Z" suffix
    completed_at: str
    node: dict[str, Any]
    options: dict[str, Any]


def status_counts(outcomes: Sequence[Outcome]) -> dict[str, int]:
    """Number of checks per status, every status present (zeros included)."""
    counts = Counter(o.result.status for o in outcomes)
    return {str(s): counts.get(s, 0) for s in Status}


def build_report(meta: SnapshotMeta, outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """The report.json document."""
    return {
        "schema_version": SCHEMA_VERSION,
        "agent_version": __version__,
        "snapshot": {
            "name": meta.name,
            "created_at": meta.created_at,
            "completed_at": meta.completed_at,
            "node": meta.node,
            "options": meta.options,
        },
        "summary": status_counts(outcomes),
        "verdict": str(worst_status(o.result.status for o in outcomes)),
        "checks": [
            {
                "id": o.check.id,
                "category": o.check.category,
                "title": o.check.title,
                "description": o.check.description,
                "view": o.check.view,
            }
            | o.result.to_dict()
            for o in outcomes
        ],
    }


def render_html(report: dict[str, Any]) -> str:
    """Render report.html from the report document; self-contained (CSS inlined)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(files("snapshot_agent.templates"))),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    rank = {str(s): i for i, s in enumerate(STATUS_ORDER)}
    ordered = sorted(report["checks"], key=lambda c: (rank[c["status"]], c["id"]))
    return env.get_template("report.html").render(
        report=report, checks=ordered, statuses=[str(s) for s in STATUS_ORDER]
    )
