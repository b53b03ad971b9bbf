"""tls.certificates: one row per certificate on a timeline from today to its expiry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from snapshot_agent.render.charts import svg, timeline, values
from snapshot_agent.render.charts.chart import Chart
from snapshot_agent.render.words import counted, noun

CHECK_ID = "tls.certificates"
MAX_ROWS = 30
#: tls.certificates' default DAYS_LEFT band (warn at 30 days left, fail at 7). The report
#: does not carry the thresholds a snapshot ran with, so the windows are shaded only when
#: every row's level agrees with these (or the data names its own as `windows`).
DEFAULT_WINDOWS = (30.0, 7.0)
FAR = 3650.0


def _level(days: float, warn: float, fail: float) -> str:
    """What the band says of `days` left (at or below a threshold counts)."""
    return "fail" if days <= fail else "warn" if days <= warn else "pass"


def windows(data: Mapping[str, Any], rows: list[tuple[float, str]]) -> tuple[float, float] | None:
    """(warn days, fail days) the rows were graded with, when known."""
    named = values.mapping(data.get("windows"))
    warn, fail = values.amount(named.get("warn_days")), values.amount(named.get("fail_days"))
    if warn is not None and fail is not None and fail <= warn:
        return warn, fail
    warn, fail = DEFAULT_WINDOWS
    # days_left is rounded to 0.1 day: a row that close to a threshold may read either way.
    agree = all(
        level == _level(days, warn, fail) or min(abs(days - warn), abs(days - fail)) <= 0.1
        for days, level in rows
        if level in ("pass", "warn", "fail")
    )
    return (warn, fail) if agree else None


def _value(days: float, not_after: str, level: str) -> str:
    """'in 20 days · 2026-12-16 · warn' or 'EXPIRED 12 days ago · 2026-11-14 · fail'."""
    shown = round(abs(days))
    when = f"in {counted(shown, 'day')}" if days >= 0 else f"EXPIRED {counted(shown, 'day')} ago"
    parts = [when, svg.clean(not_after, 20) if not_after else ""]
    parts.append(level if level in ("warn", "fail") else "")
    return " · ".join(p for p in parts if p)


def charts(check: Mapping[str, Any], report: Mapping[str, Any], uid: str) -> list[Chart]:
    """The expiry timeline, when at least one certificate has a number of days left."""
    data = values.mapping(check.get("data"))
    certs = []
    for row in values.rows(data.get("expiry")):
        days = values.number(row.get("days_left"))
        if days is None:
            continue
        level = values.text(row.get("level")) or "neutral"
        subject = values.text(row.get("subject")) or values.text(row.get("path")) or "?"
        certs.append((days, level, subject, row))
    if not certs:
        return []
    certs.sort(key=lambda c: c[0])
    graded = windows(data, [(days, level) for days, level, _, _ in certs])
    shown = certs[:MAX_ROWS]
    marks = []
    said = []
    for days, level, subject, row in shown:
        not_after = values.text(row.get("not_after")) or ""
        path = values.text(row.get("path")) or ""
        value = _value(days, not_after, level)
        tooltip = f"{svg.clean(subject, 120)} ({svg.clean(path, 160)}): {value}"
        marks.append(timeline.Mark(subject, days, value, level, tooltip))
        said.append(
            f"{svg.clean(subject, 80)} ({svg.clean(path, 80)}): {value}".replace(" · ", ", ")
        )
    lows = [days for days, *_ in shown]
    past = max(min(0.0, min(lows)), -FAR)
    past = min(past, -30.0) if past < 0 else 0.0
    future = min(max(60.0, max(lows), (graded[0] * 1.5) if graded else 0.0), FAR)
    scale = timeline.DayScale(past, future)
    shades = []
    footer = ["square-root scale of days"]
    if graded:
        warn, fail = graded
        shades = [
            timeline.Window(fail, warn, "window-warn"),
            timeline.Window(past, fail, "window-fail"),
        ]
        footer.append(f"shaded: warn within {warn:g} {noun(warn, 'day')}, fail within {fail:g}")
    more = len(certs) - len(shown)
    if more > 0:
        footer.append(f"{counted(more, 'more certificate')} in the table below")
    expired = sum(1 for days in lows if days < 0)
    title = "Certificate expiry" + (f" ({expired} expired)" if expired else "")
    desc = "; ".join(said) + "."
    if graded:
        desc += f" Warn at {graded[0]:g} {noun(graded[0], 'day')} left, fail at {graded[1]:g}."
    chart = timeline.timeline_chart(
        uid, "expiry", title, desc, marks, shades, scale, "; ".join(footer)
    )
    return [Chart(CHECK_ID, title, chart, False, uid)]
