"""A sampling window that stretches while what it measures is still undecided.

network.interfaces and network.tcp read counters at both ends of a window of `sample_s`
seconds, and go on reading (up to `max_sample_s`) while a quiet node has shown trouble
but not yet enough traffic to judge it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from snapshot_agent.core.context import Context

#: How often the counters are read while the window stretches.
POLL_S = 0.1
#: A window this close to its longest is long enough (no sleeping for microseconds).
CLOCK_SLACK_S = 0.001


def stretch_window(
    ctx: Context,
    thresholds: dict[str, Any],
    start: float,
    reserve_s: float,
    still_undecided: Callable[[], bool],
    *,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> float:
    """Sample at the end of a window begun at `start` (a `clock()` time); its length.

    The window lasts `sample_s` and goes on, polling every POLL_S, up to `max_sample_s`
    while `still_undecided()` (which reads the counters again) says so; both within the
    check's time left less `reserve_s`. The caller passes its module's clock and sleep.
    """
    budget = max(0.0, ctx.remaining() - reserve_s)
    shortest = min(max(0.0, float(thresholds["sample_s"])), budget)
    longest = max(shortest, min(float(thresholds["max_sample_s"]), budget))
    while True:
        elapsed = clock() - start
        if elapsed >= shortest:
            undecided = still_undecided()
            if elapsed + CLOCK_SLACK_S >= longest or not undecided:
                return elapsed
        sleep(shortest - elapsed if elapsed < shortest else min(POLL_S, longest - elapsed))
