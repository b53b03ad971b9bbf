"""iggy.data_dir: bytes on disk per stream/topic, largest first, the rest as 'other'."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from snapshot_agent.core.units import format_bytes
from snapshot_agent.render.charts import bars, svg, values
from snapshot_agent.render.charts.chart import Chart

CHECK_ID = "iggy.data_dir"
TOP = 12


def _topics(data: Mapping[str, Any]) -> list[tuple[str, float]]:
    """('stream/topic', bytes) of every topic row with a size."""
    out = []
    for row in values.rows(data.get("topics")):
        size = values.amount(row.get("bytes"))
        stream, topic = values.text(row.get("stream")), values.text(row.get("topic"))
        if size is not None and (stream or topic):
            out.append((f"{svg.clean(stream or '?', 200)}/{svg.clean(topic or '?', 200)}", size))
    return out


def charts(check: Mapping[str, Any], report: Mapping[str, Any], uid: str) -> list[Chart]:
    """The size-per-topic chart, when the data directory holds topics with data."""
    data = values.mapping(check.get("data"))
    topics = sorted(_topics(data), key=lambda t: -t[1])
    total = sum(size for _, size in topics)
    if total <= 0:
        return []
    shown = topics[:TOP]
    rest = topics[TOP:]
    if len(rest) == 1:
        shown, rest = topics, []
    rows = [(name, size, "neutral") for name, size in shown]
    if rest:  # grey, so the sum of many small topics does not read as one big topic
        rows.append((f"other ({len(rest)} topics)", sum(size for _, size in rest), "skipped"))
    largest = max(size for _, size, _ in rows)
    drawn = [
        bars.Bar(
            name,
            size / largest,
            f"{format_bytes(size)} · {100 * size / total:.1f}%",
            colour,
            f"{name}: {format_bytes(size)}",
        )
        for name, size, colour in rows
    ]
    unlisted = values.amount(data.get("topics_not_shown")) or 0
    footer = f"{unlisted:.0f} more topics not listed in the data" if unlisted else ""
    title = "Iggy data size per stream/topic"
    said = [
        f"{svg.clean(name, 80)} {format_bytes(size)} ({100 * size / total:.1f}%)"
        for name, size, _ in rows
    ]
    desc = f"{format_bytes(total)} in {len(topics)} topics, largest first: " + "; ".join(said)
    desc += f". {footer}." if footer else "."
    return [
        Chart(CHECK_ID, title, bars.bar_chart(uid, "iggy", title, desc, drawn, footer), False, uid)
    ]
