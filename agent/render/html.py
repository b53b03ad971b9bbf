"""report.html, rendered with Jinja from templates/ (self-contained: CSS inlined)."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import jinja2

from snapshot_agent.core.results import STATUS_ORDER
from snapshot_agent.render.iggy import iggy_overview


def render_html(report: dict[str, Any]) -> str:
    """Render report.html from the report.json document."""
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
        report=report,
        checks=ordered,
        statuses=[str(s) for s in STATUS_ORDER],
        iggy=iggy_overview(report["checks"]),
    )
