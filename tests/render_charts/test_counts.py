"""Counts in the charts' words read right at one ('1 day', '1 more topic', not '1 days'),
and the Iggy chart says what its sizes count beside the data directory's whole size."""

from __future__ import annotations

from typing import Any

from snapshot_agent.core.units import GIB, format_bytes
from snapshot_agent.render.charts import charts_for

from .svgdoc import NS, classes, full, parse, rows, title_and_desc


def chart_of(check_id: str, data: dict[str, Any]) -> Any:
    """The one chart of a check with this data."""
    [chart] = charts_for({"checks": [{"id": check_id, "status": "pass", "data": data}]})[check_id]
    return chart


def notes(chart: Any) -> list[str]:
    """The muted lines under a chart (whole, when cut)."""
    return [full(t) for t in parse(chart).iter(f"{NS}text") if "note" in classes(t)]


def every_text(chart: Any) -> str:
    """The title, the description and every text node of a chart."""
    root = parse(chart)
    return " | ".join([*title_and_desc(root), *(full(t) for t in root.iter(f"{NS}text"))])


def test_a_certificate_a_day_away_is_one_day_not_one_days() -> None:
    expiry = [
        {"subject": "CN=soon", "days_left": 1.0, "level": "fail", "not_after": "2026-11-27"},
        {"subject": "CN=gone", "days_left": -1.0, "level": "fail", "not_after": "2026-11-25"},
        {"subject": "CN=later", "days_left": 20.0, "level": "pass", "not_after": "2026-12-16"},
    ]
    chart = chart_of("tls.certificates", {"expiry": expiry})
    values = [row.value for row in rows(parse(chart))]
    assert values[0].startswith("EXPIRED 1 day ago · ") and values[1].startswith("in 1 day · ")
    assert values[2].startswith("in 20 days · ")
    assert "1 days" not in every_text(chart)


def test_one_more_filesystem_and_one_core() -> None:
    filesystems = [
        {"mount": f"/m{i}", "size_gib": 10.0, "avail_gib": 5.0, "used_pct": 50.0} for i in range(25)
    ]
    disk = chart_of("disk.usage", {"filesystems": filesystems})
    assert "1 more filesystem in the table below" in notes(disk)
    cpu = chart_of("cpu.usage", {"per_core": [{"cpu": "cpu0", "busy_pct": 12.0}]})
    _, desc = title_and_desc(parse(cpu))
    assert desc.startswith("Busy share of the one core") and "1 cores" not in desc


def iggy_data(topics: int, not_shown: int = 0) -> dict[str, Any]:
    """iggy.data_dir's data: `topics` topics of 1..n MiB, the whole directory 5 GiB."""
    rows_ = [{"stream": "s", "topic": f"t{i}", "bytes": (i + 1) * 1024**2} for i in range(topics)]
    return {"totals": {"bytes": 5 * GIB}, "topics": rows_, "topics_not_shown": not_shown}


def test_the_iggy_chart_says_what_it_counts_and_the_whole_directory() -> None:
    """Its bars are per stream/topic; the data directory's size (the section's 'Data size',
    the check's summary) also counts state and logs: the chart names both."""
    chart = chart_of("iggy.data_dir", iggy_data(14, not_shown=1))
    title, desc = title_and_desc(parse(chart))
    assert title == "Iggy message data per stream/topic"
    total = format_bytes(sum(i * 1024**2 for i in range(1, 15)))
    assert desc.startswith(f"{total} of message data in 14 topics, largest first: ")
    assert (
        f"The whole data directory, with the broker's state and logs, is {format_bytes(5 * GIB)}."
        in desc
    )
    assert notes(chart) == [
        f"per topic: its segments, indexes and offsets; whole data directory (logs included): "
        f"{format_bytes(5 * GIB)}",
        "1 more topic not listed in the data",
    ]
    assert rows(parse(chart))[-1].label == "other (2 topics)"


def test_one_iggy_topic_is_one_topic() -> None:
    data = iggy_data(1)
    del data["totals"]  # an older report: no whole size to compare with
    chart = chart_of("iggy.data_dir", data)
    _, desc = title_and_desc(parse(chart))
    assert " in 1 topic, " in desc and "whole data directory" not in desc
    assert notes(chart) == ["per topic: its segments, indexes and offsets"]
