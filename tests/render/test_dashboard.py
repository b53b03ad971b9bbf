"""The dashboard's facts: verdict, counts, category tiles by worst status, top problems
(fail, then warn, with what to do), identity and the duration waterfall."""

from __future__ import annotations

import re

import pytest

from snapshot_agent.render.cards import cards_of
from snapshot_agent.render.dashboard import MAX_PROBLEMS, dashboard_of, took
from snapshot_agent.render.html import render_html
from snapshot_agent.render.viewer import RawBudget

from .pages import check, finding, report


def dashboard(doc: dict) -> object:
    """The dashboard of a report document."""
    return dashboard_of(doc, cards_of(doc["checks"], {}, {}, RawBudget()))


CHECKS = [
    check("disk.usage", "pass", duration_ms=300),
    check(
        "disk.io",
        "warn",
        duration_ms=900,
        findings=[finding("warn", "slow disk", "look at iostat", "vda")],
    ),
    check("cpu.load", "pass", duration_ms=50),
    check("cpu.frequency", "skipped", duration_ms=10),
    check(
        "iggy.health",
        "timeout",
        duration_ms=10_000,
        summary="did not finish within 10 s and was killed",
        findings=[finding("fail", "did not finish within 10 s and was killed", "run it alone")],
    ),
    check(
        "memory.oom",
        "fail",
        duration_ms=120,
        findings=[
            finding("fail", "OOM kill of iggy-server", "raise the memory limit", "iggy-server"),
            finding("warn", "swap is off", "add swap"),
            finding("info", "fyi", ""),
        ],
    ),
    check("time.sync", "warn", duration_ms=80, summary="clock not synchronised"),
    check("logs.journal", "skipped"),
    check("system.units", "error", summary="the check itself broke: KeyError"),
    check(
        "system.cloud",
        "pass",
        data={
            "provider": "aws",
            "instance": {
                "id": "i-0abc",
                "type": "m6i.large",
                "zone": "eu-west-1a",
                "region": "eu-west-1",
            },
        },
    ),
]


def test_verdict_and_counts() -> None:
    dash = dashboard(report(CHECKS))
    assert dash.verdict == "fail" and "wrong" in dash.headline
    assert dict(dash.counts) == {
        "fail": 1,
        "error": 1,
        "timeout": 1,
        "warn": 2,
        "pass": 3,
        "skipped": 2,
    }
    assert dash.detail == "1 fail, 1 error, 1 timeout, 2 warn of 10 checks (2 skipped)"
    assert dashboard(report([check("a.b", "pass")])).headline == "Nothing wrong found"


def test_a_tile_per_category_coloured_by_its_worst_status_worst_first() -> None:
    tiles = {t.category: t for t in dashboard(report(CHECKS)).tiles}
    assert {c: t.status for c, t in tiles.items()} == {
        "memory": "fail",
        "iggy": "timeout",
        "disk": "warn",
        "time": "warn",
        "cpu": "pass",
        "system": "error",
        "logs": "skipped",
    }
    assert tiles["cpu"].counts == [("pass", 1), ("skipped", 1)] and tiles["cpu"].total == 2
    order = [t.category for t in dashboard(report(CHECKS)).tiles]
    assert order == ["memory", "system", "iggy", "disk", "time", "cpu", "logs"]


def test_top_problems_fail_first_then_broken_checks_then_warn_with_what_to_do() -> None:
    problems = dashboard(report(CHECKS)).problems
    assert [(p.severity, p.check_id, p.message) for p in problems] == [
        ("fail", "memory.oom", "OOM kill of iggy-server"),
        ("fail", "iggy.health", "did not finish within 10 s and was killed"),
        ("error", "system.units", "the check itself broke: KeyError"),
        ("warn", "memory.oom", "swap is off"),
        ("warn", "disk.io", "slow disk"),
        ("warn", "time.sync", "clock not synchronised"),  # no finding: its summary
    ]
    assert (
        problems[0].remediation == "raise the memory limit" and problems[0].subject == "iggy-server"
    )


def test_problems_are_capped_and_counted() -> None:
    many = [
        check(f"a.c{i}", "warn", findings=[finding("warn", f"w{i}")])
        for i in range(MAX_PROBLEMS + 3)
    ]
    dash = dashboard(report(many))
    assert len(dash.problems) == MAX_PROBLEMS and dash.more_problems == 3


def test_identity_options_and_times() -> None:
    doc = report(CHECKS, redact=False, deployment_id=611298765432109056, node_id=7, kernel="6.1.0")
    dash = dashboard(doc)
    facts = {f.label: f.value for f in dash.identity}
    assert facts["Cloud instance"] == "aws i-0abc (m6i.large, eu-west-1a, eu-west-1)"
    assert facts["Deployment"] == "611298765432109056" and facts["Hostname"] == "ip-10-0-0-1"
    assert dash.node == "events-prod-1" and dash.name == "snapshot-20261126-183000"
    assert not dash.redacted and {f.label: f.value for f in dash.options}["Redaction"] == "OFF"
    assert dash.wall_s == 7 and {f.label: f.value for f in dash.snapshot}["Took"] == "7 s"


def test_waterfall_slowest_first_scaled_to_the_slowest() -> None:
    bars = dashboard(report(CHECKS)).bars
    assert [b.check_id for b in bars[:3]] == ["iggy.health", "disk.io", "disk.usage"]
    assert bars[0].status == "timeout" and bars[0].width == 1000 and bars[0].seconds == 10
    assert bars[1].width == 90 and min(b.width for b in bars) >= 2


def test_an_empty_or_damaged_report_still_has_a_dashboard() -> None:
    dash = dashboard_of({"snapshot": "?", "checks": None}, [])
    assert dash.verdict == "skipped" and dash.tiles == [] and dash.node == "unknown node"


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (None, ""),
        (0, "< 1 s"),
        (0.4, "< 1 s"),
        (1, "1 s"),
        (7, "7 s"),
        (59, "59 s"),
        (180, "3 min"),
    ],
)
def test_took_in_words(seconds: float | None, words: str) -> None:
    assert took(seconds) == words


def test_a_snapshot_within_one_second_took_under_a_second_not_zero() -> None:
    """Started and completed in the same second (the times are to the second): '< 1 s'."""
    doc = report(CHECKS)
    doc["snapshot"]["completed_at"] = doc["snapshot"]["created_at"]
    dash = dashboard(doc)
    assert dash.wall_s == 0 and dash.took == "< 1 s"
    assert {f.label: f.value for f in dash.snapshot}["Took"] == "< 1 s"
    html = render_html(doc)
    assert "<dt>Took</dt><dd>&lt; 1 s</dd>" in html
    assert "(the whole snapshot took &lt; 1 s)" in html
    assert not re.search(r"(?<![\d.])0 s\b", html)  # no "Took 0 s" anywhere
    doc["snapshot"]["completed_at"] = "2026-11-26T18:30:07Z"
    assert "(the whole snapshot took 7 s)" in render_html(doc)


def test_a_check_of_a_few_milliseconds_did_not_take_no_time() -> None:
    """The waterfall and the card say '< 0.01 s' for what '%.2f' rounds to 0.00."""
    doc = report([check("cpu.load", duration_ms=3), check("disk.io", duration_ms=250)])
    html = render_html(doc)
    assert "0.00 s" not in html
    assert html.count('<span class="bar-value">&lt; 0.01 s') == 1
    assert html.count('<span class="check-time">&lt; 0.01 s</span>') == 1
    assert '<span class="bar-value">0.25 s' in html and '<span class="check-time">0.25 s' in html
