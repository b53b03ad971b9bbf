"""What a check returns: status, summary, findings, structured data and artifacts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

#: Rows a check keeps in one `data` table; beyond that it counts what it left out.
MAX_ROWS = 300


class Status(StrEnum):
    """Outcome of one check, from the SRE's point of view."""

    PASS = "pass"  # looked, found nothing wrong
    WARN = "warn"  # something deserves attention soon
    FAIL = "fail"  # something is wrong now
    ERROR = "error"  # the check itself broke (a bug or unexpected data), not the node
    SKIPPED = "skipped"  # not applicable here (missing tool, not root, not systemd...)
    TIMEOUT = "timeout"  # the check did not finish in its time and was killed


#: Worst first; used to pick a snapshot's overall verdict and to sort the report.
STATUS_ORDER: tuple[Status, ...] = (
    Status.FAIL,
    Status.ERROR,
    Status.TIMEOUT,
    Status.WARN,
    Status.PASS,
    Status.SKIPPED,
)


class Severity(StrEnum):
    """How much a single finding matters."""

    INFO = "info"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Finding:
    """One observation with a verdict and, where something is wrong, what to do."""

    severity: Severity
    message: str
    remediation: str = ""
    subject: str = ""  # the path, unit, interface, endpoint... the finding is about

    def to_dict(self) -> dict[str, str]:
        """Plain JSON form."""
        return {
            "severity": str(self.severity),
            "message": self.message,
            "remediation": self.remediation,
            "subject": self.subject,
        }


@dataclass(frozen=True)
class ArtifactInfo:
    """A raw evidence file a check left under raw/<check id>/."""

    name: str
    size: int
    original_size: int  # before the cap; larger than size when the head was dropped

    @property
    def truncated(self) -> bool:
        """True when only the tail of the evidence was kept."""
        return self.original_size > self.size

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form (the report.json artifact entry)."""
        return {
            "name": self.name,
            "size": self.size,
            "original_size": self.original_size,
            "truncated": self.truncated,
        }


@dataclass
class Result:
    """The outcome of one check run."""

    status: Status
    summary: str
    findings: list[Finding] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    artifacts: list[ArtifactInfo] = field(default_factory=list)
    duration_ms: int = 0
    #: Every command the check ran (argv, exit code, duration...), filled in by the runner
    #: from the context; the pipeline filters it and stores it as raw/<id>/commands.json.
    commands: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_findings(
        cls,
        findings: Iterable[Finding],
        *,
        ok: str,
        data: dict[str, Any] | None = None,
    ) -> Result:
        """Judge by the worst finding: any FAIL fails, any WARN warns, else pass.

        The summary is `ok` when nothing is wrong, else the worst finding's message
        (with a count when there are several).
        """
        findings = list(findings)
        worst = [f for f in findings if f.severity == Severity.FAIL] or [
            f for f in findings if f.severity == Severity.WARN
        ]
        if not worst:
            return cls(Status.PASS, ok, findings, data or {})
        status = Status.FAIL if worst[0].severity == Severity.FAIL else Status.WARN
        summary = worst[0].message
        if len(worst) > 1:
            summary += f" (+{len(worst) - 1} more)"
        return cls(status, summary, findings, data or {})

    @classmethod
    def skipped(cls, reason: str) -> Result:
        """Not applicable on this node; the reason says why."""
        return cls(Status.SKIPPED, reason)


def worst_status(statuses: Iterable[Status]) -> Status:
    """The most severe status among `statuses` (PASS when empty)."""
    present = set(statuses)
    for status in STATUS_ORDER:
        if status in present:
            return status
    return Status.PASS
