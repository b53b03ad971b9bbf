"""The Iggy section of report.html: present when a broker was looked at, escaped, optional."""

from __future__ import annotations

from typing import Any

from snapshot_agent.core.results import STATUS_ORDER
from snapshot_agent.render.html import render_html
from snapshot_agent.render.iggy import iggy_overview


def check(id: str, status: str, data: dict[str, Any] | None = None, category: str = "iggy") -> dict:
    """A check as report.json has it."""
    return {
        "id": id,
        "category": category,
        "title": id.replace(".", " "),
        "description": "",
        "status": status,
        "summary": f"{id} says {status}",
        "duration_ms": 12,
        "findings": [],
        "data": data or {},
        "artifacts": [],
        "view": None,
    }


def report(checks: list[dict]) -> dict[str, Any]:
    """A minimal report.json document."""
    return {
        "schema_version": 1,
        "agent_version": "0",
        "snapshot": {
            "name": "snapshot-20261126-183000",
            "created_at": "2026-11-26T18:30:00Z",
            "completed_at": "2026-11-26T18:30:20Z",
            "node": {"name": "events-prod-1", "deployment_id": None, "node_id": None},
            "options": {"redact_secrets": True},
        },
        "summary": {str(s): 0 for s in STATUS_ORDER},
        "verdict": "warn",
        "checks": checks,
    }


HEALTH = {"version": "0.8.0", "uptime_s": 90061, "streams": 3, "topics": 12, "messages": 1234567}
GROWTH = {"known": True, "bytes_per_day": 3 * 1024**3, "window_s": 86400 * 2, "days_left": 40.5}
DATA = {"totals": {"bytes": 5 * 1024**3, "partitions": 36, "segments": 400}, "growth": GROWTH}


def test_overview_lists_facts_and_verdicts_worst_first() -> None:
    checks = [
        check("iggy.health", "pass", HEALTH),
        check("iggy.data_dir", "warn", DATA),
        check("iggy.logs", "fail"),
        check("cpu.load", "fail", category="cpu"),
    ]
    overview = iggy_overview(checks)
    assert overview is not None
    assert dict(overview["facts"]) == {
        "Version": "0.8.0",
        "Uptime": "1 d 1 h",
        "Streams": "3",
        "Topics": "12",
        "Partitions": "36",
        "Segments": "400",
        "Messages": "1,234,567",
        "Data size": "5.0 GiB",
        "Growth": "+3.0 GiB/day over 2 d 0 h, 40.5 days until full",
    }
    assert [c["id"] for c in overview["checks"]] == ["iggy.logs", "iggy.data_dir", "iggy.health"]
    html = render_html(report(checks))
    start = html.index('<section class="iggy"')
    section = html[start : html.index("</section>", start)]
    assert "0.8.0" in section and "1,234,567" in section and "cpu.load" not in section
    assert html.index('id="dashboard"') < start < html.index('<article class="check"')


def test_no_section_without_a_broker() -> None:
    checks = [check("iggy.health", "skipped"), check("iggy.config", "skipped")]
    assert iggy_overview(checks) is None
    assert '<section class="iggy"' not in render_html(report(checks))
    assert '<section class="iggy"' not in render_html(
        report([check("cpu.load", "pass", category="cpu")])
    )


def test_hostile_values_are_escaped_and_odd_types_ignored() -> None:
    hostile = {"version": "<script>alert(1)</script>", "uptime_s": "soon", "streams": True}
    html = render_html(report([check("iggy.health", "warn", hostile)]))
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    overview = iggy_overview([check("iggy.health", "warn", hostile)])
    assert overview is not None and "Uptime" not in dict(overview["facts"])
    assert "Streams" not in dict(overview["facts"])
