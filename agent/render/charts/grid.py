"""A heat grid: one cell per item (a CPU core), its percentage written in it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup

from snapshot_agent.render.charts.svg import (
    WIDTH,
    clean,
    document,
    element,
    note,
    rect,
    text,
)


@dataclass(frozen=True)
class Cell:
    """One cell of a heat grid: a name (its tooltip) and a percentage shown in words."""

    name: str
    pct: float
    flagged: bool = False  # a finding names it


GRID_COLUMNS = 16
GRID_LABEL_W = 104
CELL_H = 22


def heat_class(pct: float) -> str:
    """'heat-0' (under 20 %) ... 'heat-4' (80 % and over)."""
    return f"heat-{min(max(int(pct // 20), 0), 4)}"


def _cell(cell: Cell, x: float, y: float, w: float) -> Markup:
    """One cell: its heat, its name as tooltip, its percentage ('!' when flagged)."""
    cls = f"cell {heat_class(cell.pct)}" + (" flagged" if cell.flagged else "")
    words = f"{cell.pct:.0f}%" + ("!" if cell.flagged else "")
    return rect(x, y, w - 2, CELL_H - 2, cls, cell.name) + text(x + w / 2 - 1, y + 15, words, "", 6)


def grid_chart(
    uid: str, kind: str, title: str, desc: str, cells: Sequence[Cell], footer: str
) -> Markup:
    """Rows of GRID_COLUMNS cells, each row named by its first and last cell."""
    stride = (WIDTH - GRID_LABEL_W) / GRID_COLUMNS
    out = []
    for start in range(0, len(cells), GRID_COLUMNS):
        row = cells[start : start + GRID_COLUMNS]
        y = 4 + (start // GRID_COLUMNS) * CELL_H
        first, last = clean(row[0].name, 8), clean(row[-1].name, 8)
        name = f"{first}\u2013{last}" if len(row) > 1 else first
        cells_of_row = [_cell(c, GRID_LABEL_W + i * stride, y, stride) for i, c in enumerate(row)]
        out.append(
            element(
                "g",
                {"class": "row"},
                text(0, y + 15, name, "label", 17),
                element("g", {"class": "value", "text-anchor": "middle"}, *cells_of_row),
            )
        )
    y = 4 + math.ceil(len(cells) / GRID_COLUMNS) * CELL_H
    tail, y = note(y, footer)
    return document(uid, kind, title, desc, y + 4, Markup("").join(out) + tail)
