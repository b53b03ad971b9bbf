"""Horizontal bars: one row per item, a label, the bar on its track, the value in words."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup

from snapshot_agent.render.charts.svg import (
    BAR_H,
    BAR_W,
    BAR_X,
    BASELINE,
    LABEL_CHARS,
    ROW_H,
    VALUE_CHARS,
    VALUE_X,
    document,
    element,
    line,
    note,
    rect,
    status_class,
    text,
)


@dataclass(frozen=True)
class Bar:
    """One row: a label, a bar filled to `fraction` (None: no bar), the value in words."""

    label: str
    fraction: float | None
    value: str
    status: str = "neutral"
    tooltip: str = ""
    #: A threshold tick across the bar at this fraction (e.g. where the warning starts).
    limit: float | None = None


def _unit(fraction: float) -> float:
    """`fraction` clamped into 0..1."""
    return min(max(fraction, 0.0), 1.0)


def bar_rows(bars: Sequence[Bar], top: float) -> tuple[Markup, float]:
    """One `<g>` per bar: label, track, filled bar, threshold tick, value; and the next y."""
    out = []
    for i, bar in enumerate(bars):
        y = top + i * ROW_H
        parts = [
            text(0, y + BASELINE, bar.label, "label", LABEL_CHARS),
            rect(BAR_X, y, BAR_W, BAR_H, "track"),
        ]
        if bar.fraction is not None:
            width = BAR_W * _unit(bar.fraction)
            parts.append(
                rect(BAR_X, y, width, BAR_H, f"bar {status_class(bar.status)}", bar.tooltip)
            )
        if bar.limit is not None:
            x = BAR_X + BAR_W * _unit(bar.limit)
            parts.append(line(x, y - 2, x, y + BAR_H + 2, "limit"))
        parts.append(text(VALUE_X, y + BASELINE, bar.value, "value", VALUE_CHARS))
        out.append(element("g", {"class": "row"}, *parts))
    return Markup("").join(out), top + len(bars) * ROW_H


def bar_chart(
    uid: str, kind: str, title: str, desc: str, bars: Sequence[Bar], footer: str
) -> Markup:
    """Horizontal bars, one per row, with a footer note."""
    body, y = bar_rows(bars, 4)
    tail, y = note(y, footer)
    return document(uid, kind, title, desc, y + 4, body + tail)
