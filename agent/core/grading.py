"""Graded thresholds: warn at one value, fail at another, judged the same way everywhere.

A check declares each graded measure once, as a `Band`, next to its other thresholds::

    USED = Band("used_pct", warn=80.0, fail=90.0)            # higher is worse
    AVAILABLE = Band("available_pct", warn=15.0, fail=5.0, higher_is_worse=False)

    @check(id="disk.usage", ..., bands=(USED,), thresholds={"mount_timeout_s": 2.0})

The config overrides the two ends as `warn_used_pct` and `fail_used_pct` under
`checks.thresholds.<check id>`, and the registry refuses a pair that is the wrong way
round. A judge asks the band, never compares by hand::

    severity = USED.grade(pct, thresholds)   # Severity.FAIL, Severity.WARN or None
    if severity:
        ... Finding(severity, f"{pct:.0f}% used (>= {USED.limit(severity, thresholds):g}%)")

Two kinds of band, each with one rule:
- a *limit* (`Band(...)`: usage, counts, latency, days left): reaching a threshold
  counts. With `higher_is_worse`, a value at or above `fail` fails and at or above
  `warn` warns; otherwise at or below.
- a *minimum* (`Band.minimum(...)`, named `*_below`: soft limits, kernel versions, key
  sizes): meeting the threshold is fine, only a value below it counts. "nofile below
  65536" means 65536 itself passes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from snapshot_agent.core.results import Severity

Limit = float | int | str


def _as_number(value: Any) -> Any:
    return float(value)


@dataclass(frozen=True)
class Band:
    """One measure graded by two thresholds; either end may be absent (warn-only, fail-only)."""

    name: str
    warn: Limit | None = None
    fail: Limit | None = None
    higher_is_worse: bool = True
    #: Turns a threshold into something comparable with the measured value; numbers by
    #: default, e.g. a kernel version parser for "5.19".
    parse: Callable[[Any], Any] = field(default=_as_number, compare=False, repr=False)
    #: True for a minimum: a value equal to a threshold is fine (see `minimum`).
    strict: bool = False

    @classmethod
    def minimum(
        cls,
        name: str,
        *,
        warn: Limit | None = None,
        fail: Limit | None = None,
        parse: Callable[[Any], Any] = _as_number,
    ) -> Band:
        """A lower bound that is fine when met: only values below `warn` / `fail` count."""
        return cls(name, warn, fail, higher_is_worse=False, parse=parse, strict=True)

    def __post_init__(self) -> None:
        if self.warn is None and self.fail is None:
            raise ValueError(f"band {self.name}: give warn, fail or both")
        problem = self.misordered({})
        if problem:
            raise ValueError(f"band {self.name}: {problem}")

    @property
    def warn_key(self) -> str:
        """The threshold name of the warn end (`warn_<name>`)."""
        return f"warn_{self.name}"

    @property
    def fail_key(self) -> str:
        """The threshold name of the fail end (`fail_<name>`)."""
        return f"fail_{self.name}"

    def keys(self) -> list[str]:
        """The threshold names this band declares."""
        return [
            k for k, v in ((self.warn_key, self.warn), (self.fail_key, self.fail)) if v is not None
        ]

    def defaults(self) -> dict[str, Limit]:
        """The declared ends as threshold name -> value."""
        out: dict[str, Limit] = {}
        if self.warn is not None:
            out[self.warn_key] = self.warn
        if self.fail is not None:
            out[self.fail_key] = self.fail
        return out

    def limits(self, thresholds: Mapping[str, Any] | None = None) -> tuple[Any, Any]:
        """(warn, fail) after the config's overrides, parsed; None for an absent end."""
        overrides = thresholds or {}
        values = {k: overrides.get(k, v) for k, v in self.defaults().items()}
        warn = values.get(self.warn_key)
        fail = values.get(self.fail_key)
        return (
            None if warn is None else self.parse(warn),
            None if fail is None else self.parse(fail),
        )

    def grade(self, value: Any, thresholds: Mapping[str, Any] | None = None) -> Severity | None:
        """FAIL or WARN when `value` reaches that end of the band; None when it is fine.

        A value that could not be measured (None) is not a finding either.
        """
        if value is None:
            return None
        warn, fail = self.limits(thresholds)
        if fail is not None and self._reaches(value, fail):
            return Severity.FAIL
        if warn is not None and self._reaches(value, warn):
            return Severity.WARN
        return None

    def grade_count(
        self, count: int, thresholds: Mapping[str, Any] | None = None
    ) -> Severity | None:
        """Like grade(), for counts of bad events: none counted is never a finding."""
        return self.grade(count, thresholds) if count else None

    def level(self, value: Any, thresholds: Mapping[str, Any] | None = None) -> Severity:
        """Like grade(), with INFO for a value that is fine."""
        return self.grade(value, thresholds) or Severity.INFO

    def limit(self, severity: Severity, thresholds: Mapping[str, Any] | None = None) -> Any:
        """The threshold that `severity` stands for (for messages: 'fail at 90%')."""
        warn, fail = self.limits(thresholds)
        return fail if severity == Severity.FAIL else warn

    def misordered(self, thresholds: Mapping[str, Any]) -> str | None:
        """Why warn and fail are the wrong way round (after overrides), or None."""
        try:
            warn, fail = self.limits(thresholds)
        except (TypeError, ValueError) as exc:
            return f"not a valid threshold ({exc})"
        if warn is None or fail is None:
            return None
        if self.higher_is_worse and warn > fail:
            return (
                f"{self.warn_key} ({warn:g}) is above {self.fail_key} ({fail:g}); higher is "
                "worse here, so warn must not be above fail"
                if isinstance(warn, float)
                else f"{self.warn_key} is above {self.fail_key}; warn must not be above fail"
            )
        if not self.higher_is_worse and warn < fail:
            return (
                f"{self.warn_key} ({warn:g}) is below {self.fail_key} ({fail:g}); lower is "
                "worse here, so warn must not be below fail"
                if isinstance(warn, float)
                else f"{self.warn_key} is below {self.fail_key}; warn must not be below fail"
            )
        return None

    def describe(self) -> dict[str, Any]:
        """The band as JSON, for `checks --json`."""
        return {
            "name": self.name,
            "warn": self.warn_key if self.warn is not None else None,
            "fail": self.fail_key if self.fail is not None else None,
            "higher_is_worse": self.higher_is_worse,
            "minimum": self.strict,
        }

    def _reaches(self, value: Any, limit: Any) -> bool:
        if self.higher_is_worse:
            return bool(value > limit) if self.strict else bool(value >= limit)
        return bool(value < limit) if self.strict else bool(value <= limit)
