"""The check cards of report.html, as data: one per check, worst first.

Built from the trimmed report (render/embed.py), the raw heads and the charts, so the
template only lays them out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup

from snapshot_agent.core.results import STATUS_ORDER
from snapshot_agent.pipeline.record import COMMANDS
from snapshot_agent.render.raw import RAW_PREFIX, RawHead
from snapshot_agent.render.viewer import RawBudget, RawView

#: Status -> its place in the report (worst first); unknown statuses go last.
RANK = {str(s): i for i, s in enumerate(STATUS_ORDER)}
#: Cards shown open when the page loads: the ones an SRE has to read.
OPEN = frozenset({"fail", "error", "timeout", "warn"})
FINDING_FIELDS = ("severity", "message", "remediation", "subject")
#: Findings shown on one card; the rest is in report.json.
MAX_FINDINGS = 40


@dataclass(frozen=True)
class Artifact:
    """One raw evidence member of a check, with its viewer when one is inlined."""

    name: str
    path: str
    size: int  # as stored in the archive
    original_size: int  # what the check produced, before its cap
    capped: bool  # the check kept only the tail
    view: RawView | None


@dataclass
class Card:
    """One check as its card shows it."""

    id: str
    category: str
    title: str
    description: str
    status: str
    summary: str
    duration_ms: int
    findings: list[dict[str, str]]
    data: dict[str, Any]
    artifacts: list[Artifact]
    commands: list[dict[str, Any]]
    charts: list[Any] = field(default_factory=list)
    tables: Markup | None = None  # its data as tables, within the page's budget (html.py)

    @property
    def open(self) -> bool:
        """Shown open at first: something to read."""
        return self.status in OPEN

    @property
    def rank(self) -> int:
        """Its place among statuses, worst first."""
        return RANK.get(self.status, len(RANK))


def cards_of(
    checks: list[dict[str, Any]],
    heads: Mapping[str, RawHead],
    charts: Mapping[str, list[Any]],
    budget: RawBudget,
) -> list[Card]:
    """The cards of `checks` (report.json entries), worst first; raw heads given out in
    that order while `budget` lasts."""
    pairs = sorted(
        ((_card(c, charts), c) for c in checks if isinstance(c, dict)),
        key=lambda pair: (pair[0].rank, pair[0].id),
    )
    for card, check in pairs:
        listed = [a for a in check.get("artifacts") or [] if isinstance(a, dict)]
        card.artifacts = [_artifact(card, a, heads, budget) for a in listed]
    return [card for card, _ in pairs]


def _card(check: dict[str, Any], charts: Mapping[str, list[Any]]) -> Card:
    """A card with the check's fields (defaults for what an older report lacks)."""
    cid = str(check.get("id", "?"))
    duration = check.get("duration_ms")
    listed = check.get("findings")
    findings: list[Any] = listed if isinstance(listed, list) else []
    return Card(
        id=cid,
        category=str(check.get("category") or cid.split(".")[0]),
        title=str(check.get("title") or cid),
        description=str(check.get("description") or ""),
        status=str(check.get("status") or "error"),
        summary=str(check.get("summary") or ""),
        duration_ms=duration if isinstance(duration, int) and duration >= 0 else 0,
        findings=[
            {k: str(f.get(k) or "") for k in FINDING_FIELDS}
            for f in findings
            if isinstance(f, dict)
        ],
        data=check["data"] if isinstance(check.get("data"), dict) else {},
        artifacts=[],
        commands=[c for c in check.get("commands") or [] if isinstance(c, dict)],
        charts=list(charts.get(cid, [])),
    )


def _artifact(
    card: Card, artifact: dict[str, Any], heads: Mapping[str, RawHead], budget: RawBudget
) -> Artifact:
    """One artifact of `card`; commands.json has no viewer (the card lists the commands)."""
    name = str(artifact.get("name", "?"))
    path = f"{RAW_PREFIX}{card.id}/{name}"
    kept, original = _int(artifact.get("size")), _int(artifact.get("original_size"))
    head = heads.get(path)
    view = None
    if head is not None and not (name == COMMANDS and card.commands):
        view = budget.view(head)
    size = head.size if head is not None else kept  # stored: after redaction
    return Artifact(name, path, size, max(original, kept), original > kept, view)


def _int(value: Any) -> int:
    """A non-negative int, or 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
