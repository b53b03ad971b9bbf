"""A timeline in days from today: a bar per row from today to its day, windows shaded."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup

from snapshot_agent.render.charts import svg


@dataclass(frozen=True)
class Mark:
    """One row of a timeline: a label and a day (negative: in the past)."""

    label: str
    days: float
    value: str
    status: str
    tooltip: str = ""


@dataclass(frozen=True)
class Window:
    """A shaded span of days (from `start` to `end`), e.g. the warning window."""

    start: float
    end: float
    cls: str


TICKS = (7, 30, 90, 365, 730, 1825, 3650)


@dataclass(frozen=True)
class DayScale:
    """Days to x: square root either side of today, so near dates get room, far ones fit."""

    past: float  # the earliest day shown (<= 0)
    future: float  # the latest day shown (> 0)

    @property
    def today_x(self) -> float:
        """Where today is: the left edge, or a fifth in when the past is shown."""
        return svg.BAR_X + (svg.BAR_W * 0.2 if self.past < 0 else 0.0)

    def x(self, days: float) -> float:
        """The x of a day, clamped into the shown span."""
        if days >= 0:
            share = math.sqrt(min(days, self.future) / self.future)
            return self.today_x + share * (svg.BAR_X + svg.BAR_W - self.today_x)
        if self.past >= 0:
            return self.today_x
        share = math.sqrt(min(-days, -self.past) / -self.past)
        return self.today_x - share * (self.today_x - svg.BAR_X)


def day_words(days: float) -> str:
    """A tick's label: '30 d', '1 y', '30 d ago'."""
    n = abs(days)
    words = f"{n / 365:g} y" if n >= 365 else f"{n:g} d"
    return words + (" ago" if days < 0 else "")


def _ticks(scale: DayScale, y: float, bottom: float) -> list[Markup]:
    """Day ticks with labels, far enough apart to read, and the today line."""
    out: list[Markup] = []
    last = -math.inf
    candidates = [-d for d in reversed(TICKS) if -d >= scale.past] + [
        d for d in TICKS if d <= scale.future
    ]
    for day in candidates:
        x = scale.x(day)
        if abs(x - scale.today_x) < 30 or x - last < 40:
            continue
        last = x
        out.append(svg.line(x, y + 4, x, bottom, "tick"))
        out.append(svg.text(x, y, day_words(day), "axis", 10, anchor="middle"))
    out.append(svg.line(scale.today_x, y + 4, scale.today_x, bottom, "today"))
    out.append(svg.text(scale.today_x, y, "today", "today", 10, anchor="middle"))
    return out


def timeline_chart(
    uid: str,
    kind: str,
    title: str,
    desc: str,
    marks: Sequence[Mark],
    windows: Sequence[Window],
    scale: DayScale,
    footer: str,
) -> Markup:
    """A row per mark: a bar from today to its day, shaded windows, ticks, the today line."""
    top = 22
    bottom = top + len(marks) * svg.ROW_H
    shades = [
        svg.rect(
            scale.x(w.start), top - 4, scale.x(w.end) - scale.x(w.start), bottom - top + 4, w.cls
        )
        for w in windows
    ]
    rows = []
    for i, mark in enumerate(marks):
        y = top + i * svg.ROW_H
        start, end = sorted((scale.x(0), scale.x(mark.days)))
        bar = svg.rect(
            start,
            y + 2,
            max(end - start, 2.0),
            svg.BAR_H - 4,
            f"bar {svg.status_class(mark.status)}",
            mark.tooltip,
        )
        rows.append(
            svg.element(
                "g",
                {"class": "row"},
                svg.text(0, y + svg.BASELINE, mark.label, "label", svg.LABEL_CHARS),
                bar,
                svg.text(svg.VALUE_X, y + svg.BASELINE, mark.value, "value", svg.VALUE_CHARS),
            )
        )
    ticks = _ticks(scale, 12, bottom)
    tail, y = svg.note(bottom, footer)
    body = Markup("").join([*shades, *ticks, *rows, tail])
    return svg.document(uid, kind, title, desc, y + 4, body)
