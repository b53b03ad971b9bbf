"""The Iggy section at the top of report.html: the broker at a glance, its verdicts first.

Built from the report document alone (the iggy.* checks' data), so a report re-rendered
from an archive shows the same section. Every value is optional: a check that was skipped,
timed out or came from an older agent simply contributes nothing.
"""

from __future__ import annotations

from typing import Any

from snapshot_agent.core.results import STATUS_ORDER
from snapshot_agent.core.units import format_bytes, format_duration
from snapshot_agent.render.words import noun

CATEGORY = "iggy"
#: What a fact counts, written beside it: the section's size (and the iggy.data_dir
#: summary's) is the whole data directory; that check's chart counts each stream/topic.
SCOPES = {"Data size": "whole data directory, logs included"}


def iggy_overview(checks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """{'facts': [(label, text)], 'scopes': {label: what it counts}, 'checks': [...]} when
    a broker was looked at; else None."""
    iggy = [c for c in checks if c.get("category") == CATEGORY]
    if not iggy or all(c.get("status") == "skipped" for c in iggy):
        return None
    rank = {str(s): i for i, s in enumerate(STATUS_ORDER)}
    by_id = {c.get("id"): c.get("data") or {} for c in iggy}
    health, data_dir = by_id.get("iggy.health", {}), by_id.get("iggy.data_dir", {})
    process = by_id.get("iggy.process", {})
    facts = [
        ("Version", health.get("version")),
        ("Uptime", _duration(process.get("uptime_s") or health.get("uptime_s"))),
        *_counts(health, data_dir.get("totals") or {}),
        ("Data size", _bytes(_get(data_dir, "totals", "bytes"))),
        ("Growth", _growth(data_dir.get("growth"))),
        ("Clients", _number(health.get("clients"))),
    ]
    shown = [(label, text) for label, text in facts if text]
    return {
        "facts": shown,
        "scopes": {label: SCOPES[label] for label, _ in shown if label in SCOPES},
        "checks": sorted(iggy, key=lambda c: (rank.get(c.get("status"), len(rank)), c.get("id"))),
    }


def _get(data: dict[str, Any], *keys: str) -> Any:
    """data[k1][k2]... or None."""
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)  # type: ignore[assignment]
    return data


def _counts(health: dict[str, Any], totals: dict[str, Any]) -> list[tuple[str, str | None]]:
    """Streams, topics, partitions (the broker's word first, the data dir's otherwise), messages."""
    out: list[tuple[str, str | None]] = []
    for key in ("streams", "topics", "partitions", "segments"):
        value = health.get(key) if health.get(key) is not None else totals.get(key)
        out.append((key.capitalize(), _number(value)))
    out.append(("Messages", _number(health.get("messages"))))
    return out


def _number(value: Any) -> str | None:
    """1234567 -> '1,234,567'."""
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else None


def _bytes(value: Any) -> str | None:
    """A byte count in the unit that reads best; None for anything but a number."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    return format_bytes(value)


def _duration(seconds: Any) -> str | None:
    """A duration in words; None for anything but a non-negative number."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
        return None
    return format_duration(seconds)


def _growth(growth: Any) -> str | None:
    """'+1.2 GiB/day over 3 d 2 h, 40.5 days until full' as iggy.data_dir measured it."""
    if not isinstance(growth, dict) or not growth.get("known"):
        return None
    per_day = _bytes(growth.get("bytes_per_day"))
    if per_day is None:
        return None
    text = f"{'' if per_day.startswith('-') else '+'}{per_day}/day"
    window = _duration(growth.get("window_s"))
    text += f" over {window}" if window else ""
    days = growth.get("days_left")
    if isinstance(days, int | float) and not isinstance(days, bool):
        text += f", {days:g} {noun(days, 'day')} until full"
    return text
