"""What a check's findings say about one subject (a mount, a core, a file)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from snapshot_agent.render.charts import values

#: Worst first: the verdict a subject gets when several findings name it.
RANK = {"fail": 0, "warn": 1}


def worst_by_subject(check: Mapping[str, Any], split: str | None = None) -> dict[str, str]:
    """Subject -> 'fail' or 'warn' (the worst finding naming it); `split` separates lists."""
    out: dict[str, str] = {}
    for finding in values.rows(check.get("findings")):
        severity, subject = (
            values.text(finding.get("severity")),
            values.text(finding.get("subject")),
        )
        if severity not in RANK or not subject:
            continue
        for name in subject.split(split) if split else [subject]:
            name = name.strip()
            if name and RANK[severity] < RANK.get(out.get(name, ""), 9):
                out[name] = severity
    return out
