"""Inline SVG charts for report.html, drawn at render time from the report.json document.

`charts_for(report)` maps a check id to its charts. A chart appears only when its
check's data holds something to draw; data of the wrong shape gives no chart, and no
report, however damaged, makes it raise.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from snapshot_agent.render.charts import certificates, cpu, disk, iggy, memory, values
from snapshot_agent.render.charts.chart import Chart

__all__ = ["BUILDERS", "Chart", "charts_for"]

Builder = Callable[[Mapping[str, Any], Mapping[str, Any], str], list[Chart]]
#: Check id -> what draws its charts.
BUILDERS: dict[str, Builder] = {
    disk.CHECK_ID: disk.charts,
    cpu.CHECK_ID: cpu.charts,
    memory.CHECK_ID: memory.charts,
    certificates.CHECK_ID: certificates.charts,
    iggy.CHECK_ID: iggy.charts,
}

log = logging.getLogger(__name__)


def chart_uid(check_id: str, index: int, taken: set[str]) -> str:
    """An element id for a check's index-th chart, unique on the page: 'chart-disk-usage-0'."""
    base = f"chart-{re.sub(r'[^a-z0-9]+', '-', check_id.lower()).strip('-')}-{index}"
    uid, n = base, 1
    while uid in taken:
        uid, n = f"{base}-{n}", n + 1
    taken.add(uid)
    return uid


def charts_for(report: Any) -> dict[str, list[Chart]]:
    """Check id -> its charts (only checks that have one); {} for anything but a report."""
    out: dict[str, list[Chart]] = {}
    taken: set[str] = set()
    document = values.mapping(report)
    for check in values.rows(document.get("checks")):
        check_id = values.text(check.get("id"))
        build = BUILDERS.get(check_id or "")
        if build is None or check_id in out:
            continue
        try:
            drawn = build(check, document, chart_uid(check_id, 0, taken))
        except Exception as exc:  # a chart is a picture of data already in the page
            log.warning("no chart for %s: its data has an unexpected shape (%r)", check_id, exc)
            continue
        if drawn:
            out[check_id] = drawn
    return out
