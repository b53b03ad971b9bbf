"""Graded thresholds: one rule (reaching a threshold counts) in both directions."""

from __future__ import annotations

import pytest

from snapshot_agent.core.check import Check, check
from snapshot_agent.core.grading import Band
from snapshot_agent.core.results import Result, Severity, Status

USED = Band("used_pct", warn=80.0, fail=90.0)
FREE = Band("free_pct", warn=15.0, fail=5.0, higher_is_worse=False)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, None), (79.9, None), (80, Severity.WARN), (89.99, Severity.WARN), (90, Severity.FAIL)],
)
def test_higher_is_worse(value: float, expected: Severity | None) -> None:
    assert USED.grade(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(100, None), (15.01, None), (15, Severity.WARN), (5.01, Severity.WARN), (5, Severity.FAIL)],
)
def test_lower_is_worse(value: float, expected: Severity | None) -> None:
    assert FREE.grade(value) == expected


def test_config_overrides_one_end_and_limit_names_it() -> None:
    thresholds = {"warn_used_pct": 50, "unrelated": "x"}
    assert USED.grade(60, thresholds) == Severity.WARN
    assert USED.limit(Severity.WARN, thresholds) == 50
    assert USED.limit(Severity.FAIL, thresholds) == 90
    assert USED.level(10, thresholds) == Severity.INFO


def test_one_sided_bands() -> None:
    warn_only = Band("kills", warn=1)
    assert warn_only.grade(0) is None and warn_only.grade(5) == Severity.WARN
    assert warn_only.keys() == ["warn_kills"]
    fail_only = Band("panics", fail=1)
    assert fail_only.grade(1) == Severity.FAIL and fail_only.defaults() == {"fail_panics": 1}


def test_parsed_limits_compare_like_values() -> None:
    def version(text: str) -> tuple[int, ...]:
        return tuple(int(p) for p in str(text).split("."))

    band = Band("below", warn="6.1", fail="5.19", higher_is_worse=False, parse=version)
    assert band.grade((5, 15)) == Severity.FAIL
    assert band.grade((6, 0)) == Severity.WARN
    assert band.grade((6, 8)) is None


def test_misordered_declaration_and_override() -> None:
    with pytest.raises(ValueError, match="warn must not be above fail"):
        Band("x", warn=9, fail=1)
    with pytest.raises(ValueError, match="warn must not be below fail"):
        Band("x", warn=1, fail=9, higher_is_worse=False)
    assert USED.misordered({"warn_used_pct": 95}) is not None
    assert USED.misordered({"warn_used_pct": 90}) is None  # equal: straight to fail
    assert FREE.misordered({"fail_free_pct": 20}) is not None


def test_check_declares_band_ends_as_thresholds() -> None:
    @check(id="t.band", category="t", title="T", description="T.", bands=(USED,))
    def judged(_ctx: object) -> Result:
        return Result(Status.PASS, "ok")

    assert isinstance(judged, Check)
    assert judged.thresholds == {"warn_used_pct": 80.0, "fail_used_pct": 90.0}
    assert judged.to_dict()["bands"] == [
        {
            "name": "used_pct",
            "warn": "warn_used_pct",
            "fail": "fail_used_pct",
            "higher_is_worse": True,
            "minimum": False,
        }
    ]
    with pytest.raises(ValueError, match="also declared by a band"):
        check(
            id="t.clash",
            category="t",
            title="T",
            description="T.",
            bands=(USED,),
            thresholds={"warn_used_pct": 1.0},
        )(judged.run)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(65536, None), (65535, Severity.WARN), (4096, Severity.WARN), (4095, Severity.FAIL)],
)
def test_a_minimum_is_met_by_its_own_value(value: int, expected: Severity | None) -> None:
    nofile = Band.minimum("nofile_below", warn=65536, fail=4096)
    assert nofile.grade(value) == expected
    assert nofile.keys() == ["warn_nofile_below", "fail_nofile_below"]
    assert nofile.misordered({"fail_nofile_below": 70000}) is not None


def test_counts_of_nothing_are_never_findings() -> None:
    errors = Band("errors", warn=0, fail=5)
    assert errors.grade_count(0) is None
    assert errors.grade_count(1) == Severity.WARN
    assert errors.grade(None) is None
