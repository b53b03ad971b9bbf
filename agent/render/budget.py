"""The page's size budget: how much of the data tables and of the embedded JSON a page
holds, so a snapshot's report.html stays near 1 MB whatever the node produced.

The raw viewers have their own budget (render/viewer.py). Every card shows a few rows of
each data table, and cards worst first show more while the budget lasts; the embedded
JSON drops the largest checks' `data` (the tables show it, report.json has all of it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from markupsafe import Markup

from snapshot_agent.render.cards import Card

#: Bytes of data tables on one page.
TABLES_BUDGET = 320 * 1024
#: Rows of one table while the budget lasts, and the fewest a table ever shows.
MAX_ROWS, MIN_ROWS = 300, 5
#: Bytes of embedded JSON (the report data) on one page.
EMBED_BUDGET = 144 * 1024
OMITTED = "omitted from the page to keep it small: the whole data is in report.json"


def fit_tables(cards: list[Card], render: Callable[[dict[str, Any], int], Markup]) -> None:
    """Set each card's `tables` to its data rendered by `render(data, max rows)`, within
    TABLES_BUDGET: every card gets at least MIN_ROWS a table, then cards worst first get
    up to MAX_ROWS while the budget lasts."""
    shown = [card for card in cards if card.data]
    for card in shown:
        card.tables = render(card.data, MIN_ROWS)
    left = TABLES_BUDGET - sum(len(card.tables or "") for card in shown)
    for card in shown:
        if left <= 0:
            break
        floor = len(card.tables or "")
        html = render(card.data, MAX_ROWS)
        if len(html) - floor > left:
            rows = int(MIN_ROWS + (MAX_ROWS - MIN_ROWS) * left / (len(html) - floor))
            html = render(card.data, rows)
        if len(html) - floor <= left:
            card.tables = html
            left -= len(html) - floor


def embedded(page: dict[str, Any]) -> dict[str, Any]:
    """The report data to embed: `page` with the largest checks' data replaced by a note
    until the JSON fits EMBED_BUDGET."""
    checks, total = page.get("checks"), _size(page)
    if total <= EMBED_BUDGET or not isinstance(checks, list):
        return page
    sizes = [_size(c.get("data")) if isinstance(c, dict) else 0 for c in checks]
    lean = list(checks)
    for i in sorted(range(len(checks)), key=lambda i: (-sizes[i], i)):
        if total <= EMBED_BUDGET:
            break
        lean[i] = checks[i] | {"data": {"…": OMITTED}}
        total -= sizes[i] - len(OMITTED)
    return page | {"checks": lean}


def _size(value: Any) -> int:
    """Characters of `value` as compact JSON."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str))
