"""Lowering the agent's own CPU and I/O priority, so a snapshot never starves the broker."""

from __future__ import annotations

import os

import psutil

NICE = 10


def lower_priority() -> list[str]:
    """Set nice 10 and the lowest best-effort I/O priority; return what could not be done.

    Best-effort class 7, not the idle class: on a saturated disk (exactly when we are
    called) the idle class can starve the snapshot until every check times out.
    Children (checks, commands) inherit both.
    """
    problems: list[str] = []
    try:
        current = os.getpriority(os.PRIO_PROCESS, 0)
        if current < NICE:
            os.setpriority(os.PRIO_PROCESS, 0, NICE)
    except OSError as exc:
        problems.append(f"nice: {exc.strerror}")
    try:
        psutil.Process().ionice(psutil.IOPRIO_CLASS_BE, 7)
    except (psutil.Error, OSError, AttributeError, ValueError) as exc:
        problems.append(f"ionice: {exc}")
    return problems
