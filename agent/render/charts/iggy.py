"""iggy.data_dir: bytes on disk per stream/topic, largest first, the rest as 'other'.

The chart counts each topic's directory (its partitions' segments, indexes and offsets):
the message data. The data directory's total, which the Iggy section and the check's
summary show, also counts the broker's state and logs; the chart says both, so the two
sizes on the page never read as one that disagrees with itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from snapshot_agent.core.units import format_bytes
from snapshot_agent.render.charts import bars, svg, values
from snapshot_agent.render.charts.chart import Chart
from snapshot_agent.render.words import counted

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
        other = f"other ({counted(len(rest), 'topic')})"
        rows.append((other, sum(size for _, size in rest), "skipped"))
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
    unlisted = round(values.amount(data.get("topics_not_shown")) or 0)
    whole = values.amount(values.mapping(data.get("totals")).get("bytes"))
    scope = "per topic: its segments, indexes and offsets"
    if whole is not None:
        scope += f"; whole data directory (logs included): {format_bytes(whole)}"
    more = f"{counted(unlisted, 'more topic')} not listed in the data" if unlisted else ""
    title = "Iggy message data per stream/topic"
    said = [
        f"{svg.clean(name, 80)} {format_bytes(size)} ({100 * size / total:.1f}%)"
        for name, size, _ in rows
    ]
    desc = (
        f"{format_bytes(total)} of message data in {counted(len(topics), 'topic')}, "
        "largest first: " + "; ".join(said) + "."
    )
    if whole is not None:
        desc += (
            f" The whole data directory, with the broker's state and logs, is "
            f"{format_bytes(whole)}."
        )
    desc += f" {more}." if more else ""
    body, y = bars.bar_rows(drawn, 4)
    for line in (scope, more):
        tail, y = svg.note(y, line)
        body += tail
    chart = svg.document(uid, "iggy", title, desc, y + 4, body)
    return [Chart(CHECK_ID, title, chart, False, uid)]
