"""Stacked bars: a whole (RAM, a limit, swap) split into parts, with a legend in words."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup

from snapshot_agent.render.charts.svg import (
    BASELINE,
    WIDTH,
    document,
    element,
    rect,
    text,
)


@dataclass(frozen=True)
class Part:
    """One share of a whole: its name, size, CSS class and the legend's words for it."""

    name: str
    amount: float
    cls: str
    detail: str


@dataclass(frozen=True)
class Stack:
    """A whole (host RAM, a cgroup limit, swap) split into parts that add up to it."""

    label: str
    parts: Sequence[Part]


LEGEND_COLUMNS = 3
LEGEND_CHARS = 36


def stack_rows(stacks: Sequence[Stack], top: float) -> tuple[Markup, float]:
    """Per stack: its label, the bar split into parts, a legend in columns; the next y."""
    out = []
    y = top
    column_w = WIDTH / LEGEND_COLUMNS
    for stack in stacks:
        total = sum(p.amount for p in stack.parts)
        parts = [text(0, y + BASELINE, stack.label, "label", WIDTH // 7)]
        y += 16
        x = 0.0
        for p in stack.parts:
            width = WIDTH * p.amount / total if total > 0 else 0.0
            if width > 0:
                parts.append(rect(x, y, width, 18, f"bar {p.cls}", f"{p.name}: {p.detail}"))
            x += width
        y += 24
        legend = []
        for i, p in enumerate(stack.parts):
            lx = (i % LEGEND_COLUMNS) * column_w
            ly = y + (i // LEGEND_COLUMNS) * 18
            legend.append(rect(lx, ly + 1, 10, 10, f"swatch {p.cls}"))
            legend.append(text(lx + 14, ly + 10, f"{p.name} {p.detail}", "legend", LEGEND_CHARS))
        parts.append(element("g", {"class": "legend"}, *legend))
        y += math.ceil(len(stack.parts) / LEGEND_COLUMNS) * 18 + 10
        out.append(element("g", {"class": "stack"}, *parts))
    return Markup("").join(out), y


def stack_chart(uid: str, kind: str, title: str, desc: str, stacks: Sequence[Stack]) -> Markup:
    """Stacked bars with legends."""
    body, y = stack_rows(stacks, 4)
    return document(uid, kind, title, desc, y, body)
