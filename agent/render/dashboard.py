"""The dashboard at the top of report.html: what an SRE reads in the first 30 seconds.

Who and when (node identity, snapshot, options), the overall verdict, counts by status,
one tile per category with its worst status, the top problems with what to do, and how
long each check took. Built from the cards, so it always agrees with them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from snapshot_agent.core.results import STATUS_ORDER
from snapshot_agent.core.units import format_duration
from snapshot_agent.render.cards import RANK, Card

#: Problems listed on the dashboard; the rest are a filter away.
MAX_PROBLEMS = 8
#: Checks in the duration waterfall before "show all".
WATERFALL_TOP = 12
#: Units of a waterfall bar's full width (SVG user units).
BAR_SCALE = 1000
STATUSES = [str(s) for s in STATUS_ORDER]
#: The overall verdict in words, by worst status.
HEADLINES = {
    "fail": "Something is wrong on this node now",
    "error": "Some checks broke: their verdict is unknown",
    "timeout": "Some checks did not finish: their verdict is unknown",
    "warn": "Nothing is broken; some things need attention soon",
    "pass": "Nothing wrong found",
    "skipped": "Nothing was checked",
}


@dataclass(frozen=True)
class Fact:
    """One labelled value of the identity panel."""

    label: str
    value: str


@dataclass(frozen=True)
class Tile:
    """One category: its worst status and its checks per status."""

    category: str
    status: str
    counts: list[tuple[str, int]]
    total: int


@dataclass(frozen=True)
class Problem:
    """One thing to look at: a finding (or a check's summary) and what to do."""

    check_id: str
    check_title: str
    severity: str
    message: str
    subject: str
    remediation: str


@dataclass(frozen=True)
class Bar:
    """One check in the duration waterfall."""

    check_id: str
    title: str
    status: str
    seconds: float
    width: int  # of BAR_SCALE


@dataclass(frozen=True)
class Dashboard:
    """Everything the dashboard shows."""

    node: str
    name: str
    identity: list[Fact]
    snapshot: list[Fact]
    options: list[Fact]
    redacted: bool
    verdict: str
    headline: str
    detail: str
    counts: list[tuple[str, int]]
    tiles: list[Tile]
    problems: list[Problem]
    more_problems: int
    bars: list[Bar]
    wall_s: float | None
    #: How long the whole snapshot took, in words ('< 1 s', '7 s', '3 min'); '' unknown.
    took: str


def dashboard_of(report: dict[str, Any], cards: list[Card]) -> Dashboard:
    """The dashboard of a (trimmed) report.json document and its cards."""
    snapshot = _mapping(report.get("snapshot"))
    node, options = _mapping(snapshot.get("node")), _mapping(snapshot.get("options"))
    counts = Counter(c.status for c in cards)
    verdict = min((c.status for c in cards), key=lambda s: RANK.get(s, len(RANK)), default="")
    verdict = verdict or "skipped"
    problems = problems_of(cards)
    wall = _seconds_between(snapshot.get("created_at"), snapshot.get("completed_at"))
    return Dashboard(
        node=str(node.get("name") or node.get("hostname") or "unknown node"),
        name=_text(snapshot.get("name")),
        identity=identity_of(node, cards),
        snapshot=_snapshot_facts(report, snapshot, wall),
        options=_option_facts(options),
        redacted=options.get("redact_secrets", True) is not False,
        verdict=verdict,
        headline=HEADLINES.get(verdict, verdict),
        detail=_detail(counts, len(cards)),
        counts=[(s, counts.get(s, 0)) for s in STATUSES],
        tiles=tiles_of(cards),
        problems=problems[:MAX_PROBLEMS],
        more_problems=max(len(problems) - MAX_PROBLEMS, 0),
        bars=bars_of(cards),
        wall_s=wall,
        took=took(wall),
    )


def tiles_of(cards: list[Card]) -> list[Tile]:
    """One tile per category, worst first, then by name."""
    by_category: dict[str, list[str]] = defaultdict(list)
    for card in cards:
        by_category[card.category].append(card.status)
    tiles = []
    for category, statuses in by_category.items():
        worst = min(statuses, key=lambda s: RANK.get(s, len(RANK)))
        tally = Counter(statuses)
        ordered = [(s, tally[s]) for s in STATUSES if tally[s]]
        tiles.append(Tile(category, worst, ordered, len(statuses)))
    return sorted(tiles, key=lambda t: (RANK.get(t.status, len(RANK)), t.category))


def problems_of(cards: list[Card]) -> list[Problem]:
    """Fail findings (of failed, then timed-out checks), checks that broke (their verdict
    is unknown), then warn findings; a check in that state without such a finding
    contributes its summary."""
    out: list[Problem] = []
    groups = (("fail", ("fail", "timeout")), ("error", ("error",)), ("warn", ("warn",)))
    for severity, states in groups:
        for card in cards:  # already worst first
            found = [f for f in card.findings if f.get("severity") == severity]
            for f in found:
                out.append(_problem(card, severity, f))
            if not found and card.status in states:
                out.append(_problem(card, severity, {"message": card.summary}))
    return out


def _problem(card: Card, severity: str, finding: dict[str, Any]) -> Problem:
    """A problem of `card` from one finding."""
    return Problem(
        check_id=card.id,
        check_title=card.title,
        severity=severity,
        message=str(finding.get("message") or card.summary),
        subject=str(finding.get("subject") or ""),
        remediation=str(finding.get("remediation") or ""),
    )


def bars_of(cards: list[Card]) -> list[Bar]:
    """Every check's duration, slowest first (timeouts first among equals)."""
    longest = max((c.duration_ms for c in cards), default=0) or 1
    ordered = sorted(cards, key=lambda c: (-c.duration_ms, c.status != "timeout", c.id))
    return [
        Bar(
            c.id,
            c.title,
            c.status,
            c.duration_ms / 1000,
            max(round(BAR_SCALE * c.duration_ms / longest), 2),
        )
        for c in ordered
    ]


def identity_of(node: dict[str, Any], cards: list[Card]) -> list[Fact]:
    """Which machine: names and ids from the snapshot, OS and cloud instance from checks."""
    data = {c.id: c.data for c in cards}
    info, cloud = data.get("system.info", {}), data.get("system.cloud", {})
    facts = [
        Fact("Hostname", _text(node.get("hostname"))),
        Fact("Deployment", _text(node.get("deployment_id"))),
        Fact("Node id", _text(node.get("node_id"))),
        Fact("Cloud instance", _instance(cloud)),
        Fact("OS", _text(info.get("os"))),
        Fact("Kernel", _text(node.get("kernel") or info.get("kernel"))),
        Fact("Virtualization", _text(info.get("virtualization"))),
        Fact("Machine id", _text(node.get("machine_id"))),
    ]
    return [f for f in facts if f.value]


def _instance(cloud: dict[str, Any]) -> str:
    """'aws i-0abc (m6i.large, eu-west-1a)' when the cloud check identified the instance."""
    instance = cloud.get("instance")
    if not isinstance(instance, dict) or not instance.get("id"):
        return ""
    where = ", ".join(_text(instance.get(k)) for k in ("type", "zone", "region") if instance.get(k))
    provider = _text(cloud.get("provider"))
    return f"{provider} {instance['id']}".strip() + (f" ({where})" if where else "")


def _snapshot_facts(
    report: dict[str, Any], snapshot: dict[str, Any], wall: float | None
) -> list[Fact]:
    """Snapshot name, times, agent version."""
    facts = [
        Fact("Snapshot", _text(snapshot.get("name"))),
        Fact("Started", _text(snapshot.get("created_at"))),
        Fact("Took", took(wall)),
        Fact("Agent", f"snapshot-agent {_text(report.get('agent_version'))}".strip()),
    ]
    return [f for f in facts if f.value]


def _option_facts(options: dict[str, Any]) -> list[Fact]:
    """The options the snapshot was taken with."""

    def yes_no(key: str) -> str:
        return "" if key not in options else ("yes" if options[key] else "no")

    facts = [
        Fact("Redaction", "on" if options.get("redact_secrets", True) is not False else "OFF"),
        Fact("Iggy data", yes_no("include_iggy")),
        Fact("Only", ", ".join(map(str, options.get("only") or []))),
        Fact("Skip", ", ".join(map(str, options.get("skip") or []))),
        Fact("Low priority", yes_no("low_priority")),
    ]
    return [f for f in facts if f.value]


def _detail(counts: Counter[str], total: int) -> str:
    """'2 warn, 1 timeout of 54 checks (20 skipped)'."""
    parts = [f"{counts[s]} {s}" for s in STATUSES[:4] if counts[s]]
    text = ", ".join(parts) + (" of " if parts else "") + f"{total} check{'s' * (total != 1)}"
    return text + (f" ({counts['skipped']} skipped)" if counts["skipped"] else "")


def took(seconds: float | None) -> str:
    """'< 1 s', '7 s', '3 min'; '' for unknown. The snapshot's times are to the second, so
    a snapshot that started and completed within one second took '< 1 s', not '0 s'."""
    if seconds is None:
        return ""
    if seconds < 0.5:
        return "< 1 s"
    return f"{seconds:.0f} s" if seconds < 60 else format_duration(seconds)


def _seconds_between(start: Any, end: Any) -> float | None:
    """Seconds between two ISO 8601 times, or None."""
    try:
        delta = datetime.fromisoformat(str(end)) - datetime.fromisoformat(str(start))
    except (ValueError, TypeError):  # absent, malformed, or one naive and one aware
        return None
    return delta.total_seconds() if delta.total_seconds() >= 0 else None


def _mapping(value: Any) -> dict[str, Any]:
    """`value` if it is a mapping, else empty."""
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    """A fact's text ('' for none)."""
    return "" if value is None or value == "" else str(value)
