"""What the redactor did, for the manifest: counts per rule and per file, never a value."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

#: The leak scan's counts are kept under its own rule names: "leak-scan:<rule>".
LEAK_SCAN = "leak-scan"


@dataclass
class RedactionAudit:
    """Whether the snapshot was redacted, and how often each rule fired, in total and per file.

    `files` maps a source (an archive member such as `raw/logs.tail/iggy.log`, or
    `results/<check id>` for a check's summary, findings and data) to its counts.
    A count under `leak-scan:<rule>` is a secret the first pass missed and the
    independent second pass caught: a bug to report, though the archive holds no value.
    """

    applied: bool = False
    rules: dict[str, int] = field(default_factory=dict)
    files: dict[str, dict[str, int]] = field(default_factory=dict)
    pseudonymized: bool = False

    def add(self, other: RedactionAudit) -> None:
        """Add another pass's counts (the leak scan's) to this audit."""
        for rule, n in other.rules.items():
            self.rules[rule] = self.rules.get(rule, 0) + n
        for name, counts in other.files.items():
            mine = self.files.setdefault(name, {})
            for rule, n in counts.items():
                mine[rule] = mine.get(rule, 0) + n

    @property
    def leaks(self) -> int:
        """How many secrets only the leak scan caught."""
        return sum(n for rule, n in self.rules.items() if rule.startswith(f"{LEAK_SCAN}:"))

    def to_json(self) -> dict[str, Any]:
        """The manifest's `redaction` object."""
        return {
            "applied": self.applied,
            "pseudonymized": self.pseudonymized,
            "rules": dict(self.rules),
            "files": {name: dict(counts) for name, counts in sorted(self.files.items())},
            "leak_scan_hits": self.leaks,
        }


class Tally:
    """Counts hits per rule and per source as a redactor works."""

    def __init__(self) -> None:
        self.rules: Counter[str] = Counter()
        self.files: dict[str, Counter[str]] = {}

    def add(self, rule: str, source: str, n: int = 1) -> None:
        """Count `n` hits of `rule` in `source` ("" when the source is not named)."""
        self.rules[rule] += n
        if source:
            self.files.setdefault(source, Counter())[rule] += n
