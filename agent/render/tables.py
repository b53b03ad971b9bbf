"""How a check's `data` is laid out as tables: the small decisions the template asks for."""

from __future__ import annotations

from typing import Any

#: Rows looked at to find a grid's columns (rows may differ in their keys).
COLUMN_SAMPLE = 100
#: A list of scalars up to this long reads as one comma-separated value.
INLINE_LIST = 24


def is_number(value: Any) -> bool:
    """An int or float (a bool is not a number here)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_grid(value: Any) -> bool:
    """A list whose first item is a mapping: shown as a table with one row per item."""
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict)


def is_inline(value: Any) -> bool:
    """A scalar, an empty list or mapping, or a short list of scalars: fits in one cell."""
    if isinstance(value, list):
        return len(value) <= INLINE_LIST and not any(isinstance(v, dict | list) for v in value)
    return not isinstance(value, dict) or not value


def columns(rows: list[Any]) -> list[str]:
    """The keys of a grid's rows, in order of first appearance."""
    seen: dict[str, None] = {}
    for row in rows[:COLUMN_SAMPLE]:
        if isinstance(row, dict):
            seen.update(dict.fromkeys(row))
    return list(seen)


def rows_of(data: dict[str, Any]) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """A check's data split in two: values that fit a cell (one key/value table), and
    the structured ones (each a table of its own, under its key)."""
    inline, structured = [], []
    for key, value in data.items():
        (inline if is_inline(value) else structured).append((key, value))
    return inline, structured
