"""Counts and short durations as the page writes them: '1 row', '2 rows', '< 0.01 s'."""

from __future__ import annotations

from typing import Any


def noun(n: Any, word: str, plural: str | None = None) -> str:
    """`word` in the number `n` calls for: 'check' for 1, 'checks' otherwise (`plural`
    when adding an s is wrong). Pass `n` as the page shows it (rounded)."""
    return word if n == 1 else plural if plural is not None else word + "s"


def counted(n: Any, word: str, plural: str | None = None) -> str:
    """'1 row', '0 rows', '2 rows', '1.5 days'."""
    return f"{n} {noun(n, word, plural)}"


def check_seconds(seconds: float) -> str:
    """A check's run time: '0.25 s', '12.30 s'; '< 0.01 s' for what rounds to nothing
    (a check that took a few milliseconds did not take no time)."""
    return "< 0.01 s" if seconds < 0.005 else f"{seconds:.2f} s"
