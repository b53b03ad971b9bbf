"""Values read from report.json for a chart: untrusted, so each is checked before use.

A report may come from an older agent, a damaged archive or a hand-edited file: a number
may be a string, NaN, negative or missing, a list may be a dict. Every reader here
answers None (or an empty list) for anything that is not what a chart can draw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: The most rows any chart reads from a list (the report itself caps tables at 300).
MAX_READ = 1000


def number(value: Any) -> float | None:
    """A finite int or float (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    result = float(value)
    return result if math.isfinite(result) else None


def amount(value: Any) -> float | None:
    """A finite number that is zero or more (a size, a share), else None."""
    result = number(value)
    return result if result is not None and result >= 0 else None


def text(value: Any) -> str | None:
    """A string, else None."""
    return value if isinstance(value, str) else None


def mapping(value: Any) -> Mapping[str, Any]:
    """A dict, else an empty one."""
    return value if isinstance(value, Mapping) else {}


def rows(value: Any) -> list[Mapping[str, Any]]:
    """The dict rows of a list (at most MAX_READ), others dropped; [] for a non-list."""
    if not isinstance(value, list):
        return []
    return [row for row in value[:MAX_READ] if isinstance(row, Mapping)]
