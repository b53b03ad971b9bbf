"""systemd.* checks: parsers on real-format output, checks against fake systemctl/journalctl."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from snapshot_agent.checks.systemd import (
    parse_journal_json,
    parse_list_units,
    parse_show,
    parse_timers_json,
    parse_timers_text,
    systemd_failed,
    systemd_timers,
    systemd_units,
)
from snapshot_agent.config import ChecksConfig, Config, IggyConfig
from snapshot_agent.core.context import map_path
from snapshot_agent.core.results import Severity, Status

from .conftest import fake_tools, fixture_roots, make_context

FAILED_PLAIN = """\
iggy-server.service loaded failed failed Apache Iggy message streaming server
logrotate.service   loaded failed failed Rotate log files
"""

# Without --plain (or an old systemctl ignoring it) a status dot leads each line.
FAILED_DOTTED = """\
\u25cf logrotate.service   loaded failed failed Rotate log files
* ssh.service loaded failed failed
"""


def show_block(
    unit: str,
    load: str = "loaded",
    active: str = "active",
    sub: str = "running",
    pid: int = 812,
    restarts: int = 0,
    result: str = "success",
) -> str:
    """`systemctl show -p ...` for one unit, in systemctl's own property order."""
    started = "Mon 2026-11-23 10:15:42 UTC" if active == "active" else ""
    return (
        f"Result={result}\nNRestarts={restarts}\nExecMainStartTimestamp={started}\n"
        f"ExecMainStatus=0\nMainPID={pid}\nId={unit}\n"
        f"FragmentPath={'/etc/systemd/system/' + unit if load == 'loaded' else ''}\n"
        f"LoadState={load}\nActiveState={active}\nSubState={sub}\n"
    )


def journal(*lines: tuple[str, str]) -> str:
    """`journalctl -o json --output-fields=UNIT,MESSAGE` lines."""
    out = []
    for i, (unit, message) in enumerate(lines):
        out.append(
            json.dumps(
                {
                    "__CURSOR": f"s=abc;i={i}",
                    "__REALTIME_TIMESTAMP": str(1795425000000000 + i),
                    "__MONOTONIC_TIMESTAMP": str(1000 + i),
                    "_BOOT_ID": "0f3c",
                    "UNIT": unit,
                    "MESSAGE": message,
                }
            )
        )
    return "\n".join(out) + "\n"


CRASH = [
    ("iggy-server.service", "iggy-server.service: Main process exited, code=killed, status=9/KILL"),
    ("iggy-server.service", "iggy-server.service: Failed with result 'oom-kill'."),
    ("iggy-server.service", "iggy-server.service: Scheduled restart job, restart counter is at 1."),
    ("iggy-server.service", "Stopped iggy-server.service - Apache Iggy server."),
    ("iggy-server.service", "Started iggy-server.service - Apache Iggy server."),
]


def ctx_for(tmp_path: Path, node: Path, thresholds: dict[str, Any] | None = None) -> Any:
    """A context on a fixture tree where systemd is PID 1."""
    (node / "run/systemd/system").mkdir(parents=True, exist_ok=True)
    return make_context(tmp_path, roots=fixture_roots(node), thresholds=thresholds or {})


# -- parsers -------------------------------------------------------------------------


def test_parse_list_units() -> None:
    rows = parse_list_units(FAILED_PLAIN)
    assert [r.unit for r in rows] == ["iggy-server.service", "logrotate.service"]
    assert rows[0].description == "Apache Iggy message streaming server"
    dotted = parse_list_units(FAILED_DOTTED + "\n2 loaded units listed.\n")
    assert [(r.unit, r.sub, r.description) for r in dotted] == [
        ("logrotate.service", "failed", "Rotate log files"),
        ("ssh.service", "failed", ""),
    ]
    assert parse_list_units("") == []


def test_parse_show_blocks() -> None:
    blocks = parse_show(show_block("a.service") + "\n" + show_block("b.service", load="not-found"))
    assert [b["Id"] for b in blocks] == ["a.service", "b.service"]
    assert blocks[0]["ExecMainStartTimestamp"] == "Mon 2026-11-23 10:15:42 UTC"
    assert blocks[1]["LoadState"] == "not-found" and blocks[1]["FragmentPath"] == ""


def test_parse_journal_json() -> None:
    text = journal(*CRASH, *CRASH[:3]) + "not json\n" + '{"UNIT": "x", "MESSAGE": null}\n'
    text += json.dumps({"UNIT": "iggy-server.service", "MESSAGE": list(b"Started bin\xff")}) + "\n"
    counts = parse_journal_json(text)["iggy-server.service"]
    assert (counts.restarts, counts.failures, counts.starts) == (2, 2, 2)
    assert counts.last_failure == "oom-kill"
    assert counts.last_exit == "Main process exited, code=killed, status=9/KILL"


TIMERS_JSON = json.dumps(
    [
        {
            "next": 1795478400000000,
            "left": 1795478400000000,
            "last": 1795392001000000,
            "passed": 1795392001000000,
            "unit": "logrotate.timer",
            "activates": "logrotate.service",
        },
        {
            "next": None,
            "left": None,
            "last": 0,
            "passed": 0,
            "unit": "fstrim.timer",
            "activates": "fstrim.service",
        },
    ]
)


def timers_table(rows: list[tuple[str, str, str, str, str, str]]) -> str:
    """`systemctl list-timers --all` as systemd 252 lays it out (columns padded to width)."""
    header = ("NEXT", "LEFT", "LAST", "PASSED", "UNIT", "ACTIVATES")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(6)]
    lines = [
        " ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    return "\n".join(lines) + f"\n\n{len(rows)} timers listed.\n"


TIMERS_TEXT = timers_table(
    [
        (
            "Tue 2026-11-24 00:00:00 UTC",
            "9h left",
            "Mon 2026-11-23 00:00:01 UTC",
            "14h ago",
            "logrotate.timer",
            "logrotate.service",
        ),
        ("-", "-", "-", "-", "fstrim.timer", "fstrim.service"),
        ("n/a", "n/a", "n/a", "n/a", "old-style.timer", "old-style.service"),
    ]
)


def test_parse_timers_json_and_text() -> None:
    from_json = parse_timers_json(TIMERS_JSON)
    assert from_json is not None
    assert [(t.unit, t.next, t.last) for t in from_json] == [
        ("logrotate.timer", "2026-11-24 00:00:00 UTC", "2026-11-23 00:00:01 UTC"),
        ("fstrim.timer", "", ""),
    ]
    assert parse_timers_json("Unknown output 'json'") is None
    from_text = parse_timers_text(TIMERS_TEXT)
    assert [(t.unit, t.activates, t.next, t.last) for t in from_text] == [
        (
            "logrotate.timer",
            "logrotate.service",
            "Tue 2026-11-24 00:00:00 UTC",
            "Mon 2026-11-23 00:00:01 UTC",
        ),
        ("fstrim.timer", "fstrim.service", "", ""),
        ("old-style.timer", "old-style.service", "", ""),
    ]
    assert parse_timers_text("garbage\n") == []


# -- requirements ------------------------------------------------------------------


def test_systemd_checks_need_systemd(node: Path) -> None:
    roots = fixture_roots(node)
    for chk in (systemd_failed, systemd_units, systemd_timers):
        reason = chk.requires.unmet(lambda p: map_path(roots, p))
        assert reason is not None and "systemd" in reason


# -- systemd.failed ----------------------------------------------------------------


def test_systemd_failed_pass(tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_tools(tmp_path, monkeypatch, {"systemctl": [(("list-units", "--failed"), "", 0)]})
    result = systemd_failed.run(ctx_for(tmp_path, node))
    assert result.status == Status.PASS and result.summary == "no failed systemd units"


def test_systemd_failed_fail(tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_tools(
        tmp_path,
        monkeypatch,
        {
            "systemctl": [
                (("list-units", "--failed"), FAILED_PLAIN, 0),
                (("status",), "x failed (Result: exit-code)\n", 3),
            ]
        },
    )
    result = systemd_failed.run(ctx_for(tmp_path, node))
    assert result.status == Status.FAIL
    assert result.summary.startswith("the broker's unit iggy-server.service has failed")
    # logrotate.service is not the broker's or the agent's unit: a WARN, not a second FAIL.
    assert [(f.severity, f.subject) for f in result.findings] == [
        (Severity.FAIL, "iggy-server.service"),
        (Severity.WARN, "logrotate.service"),
    ]
    assert "journalctl -u iggy-server.service -b" in result.findings[0].remediation
    assert result.data["failed"] == 2
    assert (tmp_path / "artifacts/status-logrotate.service.txt").exists()


def test_systemd_failed_unrelated_unit_only_warns(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = (
        "apt-daily.service loaded failed failed Daily apt download activities\n"
        "e2scrub_all.service loaded failed failed Online ext4 Metadata Check for All Filesystems\n"
    )
    fake_tools(
        tmp_path,
        monkeypatch,
        {"systemctl": [(("list-units", "--failed"), stale, 0), (("status",), "x\n", 3)]},
    )
    result = systemd_failed.run(ctx_for(tmp_path, node))
    assert result.status == Status.WARN
    assert result.summary.startswith("apt-daily.service has failed")
    assert result.summary.endswith("(+1 more)")
    assert {f.severity for f in result.findings} == {Severity.WARN}
    assert "systemctl reset-failed apt-daily.service" in result.findings[0].remediation


def test_systemd_failed_agent_unit_fails(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = FAILED_DOTTED + "snapshot-agent.service loaded failed failed Snapshot agent\n"
    fake_tools(
        tmp_path,
        monkeypatch,
        {"systemctl": [(("list-units", "--failed"), rows, 0), (("status",), "x\n", 3)]},
    )
    result = systemd_failed.run(ctx_for(tmp_path, node))
    assert result.status == Status.FAIL
    assert result.summary == (
        "the agent's unit snapshot-agent.service has failed (failed/failed, Snapshot agent)"
    )
    assert [f.severity for f in result.findings] == [Severity.FAIL, Severity.WARN, Severity.WARN]


def test_systemd_failed_broker_unit_from_config(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = "iggy.service loaded failed failed Iggy\n" + FAILED_PLAIN
    fake_tools(
        tmp_path,
        monkeypatch,
        {"systemctl": [(("list-units", "--failed"), rows, 0), (("status",), "x\n", 3)]},
    )
    (node / "run/systemd/system").mkdir(parents=True)
    config = Config(checks=ChecksConfig(roots=fixture_roots(node)), iggy=IggyConfig(service="iggy"))
    result = systemd_failed.run(make_context(tmp_path, config=config))
    assert result.status == Status.FAIL
    assert result.summary == "the broker's unit iggy.service has failed (failed/failed, Iggy)"
    # With the broker's unit configured as iggy.service, iggy-server.service is just a unit.
    assert [(f.severity, f.subject) for f in result.findings] == [
        (Severity.FAIL, "iggy.service"),
        (Severity.WARN, "iggy-server.service"),
        (Severity.WARN, "logrotate.service"),
    ]


def test_systemd_failed_skips_when_systemctl_cannot_talk(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_tools(tmp_path, monkeypatch, {"systemctl": []})
    result = systemd_failed.run(ctx_for(tmp_path, node))
    assert result.status == Status.SKIPPED and "cannot list units" in result.summary


# -- systemd.units -----------------------------------------------------------------

UNITS = {"warn_restarts_24h": 3}


def units_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, show: str, journal_out: str, jcode: int = 0
) -> None:
    """Fake systemctl show and journalctl."""
    fake_tools(
        tmp_path,
        monkeypatch,
        {
            "systemctl": [(("MainPID", "--value"), "0\n", 0), (("show",), show, 0)],
            "journalctl": [(("_PID=1",), journal_out, jcode)],
        },
    )


def test_systemd_units_pass(tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    show = show_block("iggy-server.service") + "\n" + show_block("snapshot-agent.service", pid=90)
    units_tools(tmp_path, monkeypatch, show, journal(CRASH[4]))
    result = systemd_units.run(ctx_for(tmp_path, node, UNITS))
    assert result.status == Status.PASS
    assert result.summary == (
        "broker iggy-server.service active/running since Mon 2026-11-23 10:15:42 UTC; "
        "agent snapshot-agent.service active/running since Mon 2026-11-23 10:15:42 UTC"
    )
    broker = result.data["units"][0]
    assert broker["main_pid"] == 812 and broker["restarts_24h"] == 0


def test_systemd_units_crash_loop_warns(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    show = show_block("iggy-server.service", restarts=4) + "\n"
    show += show_block("snapshot-agent.service", pid=90)
    units_tools(tmp_path, monkeypatch, show, journal(*(CRASH * 4)))
    result = systemd_units.run(ctx_for(tmp_path, node, UNITS))
    assert result.status == Status.WARN
    assert "restarted automatically 4 times in the last 24 h" in result.summary
    assert "last failure: oom-kill" in result.summary
    assert result.data["units"][0]["failures_24h"] == 4


def test_systemd_units_broker_down_fails(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    show = show_block("iggy-server.service", active="failed", sub="failed", pid=0)
    show += "\n" + show_block(
        "snapshot-agent.service", load="not-found", active="inactive", sub="dead"
    )
    units_tools(tmp_path, monkeypatch, show, journal(*CRASH[:2]))
    result = systemd_units.run(ctx_for(tmp_path, node, UNITS))
    assert result.status == Status.FAIL
    assert result.summary.startswith(
        "broker unit iggy-server.service is failed (failed); last failure: oom-kill"
    )
    agent = [f for f in result.findings if f.subject == "snapshot-agent.service"]
    assert agent[0].severity == Severity.INFO and "not installed" in agent[0].message


def test_systemd_units_auto_restart_is_a_loop(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    show = show_block("iggy-server.service", active="activating", sub="auto-restart", pid=0)
    show += "\n" + show_block("snapshot-agent.service", active="inactive", sub="dead", pid=0)
    units_tools(tmp_path, monkeypatch, show, "", jcode=1)
    result = systemd_units.run(ctx_for(tmp_path, node, UNITS))
    assert result.status == Status.FAIL
    assert "restarting in a loop" in result.summary
    assert any("supervisor cannot reach" in f.message for f in result.findings)
    assert any("restarts in the last 24 h unknown" in f.message for f in result.findings)
    assert result.data["units"][0]["restarts_24h"] is None


def test_systemd_units_broker_unit_missing(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    show = show_block("iggy-server.service", load="not-found", active="inactive", sub="dead")
    show += "\n" + show_block("snapshot-agent.service", pid=90)
    units_tools(tmp_path, monkeypatch, show, "")
    result = systemd_units.run(ctx_for(tmp_path, node, UNITS))
    assert result.status == Status.WARN
    assert "not installed and no broker process runs" in result.summary
    assert "iggy.service" in result.findings[0].remediation
    # The broker running outside systemd (Docker) makes that informational.
    (node / "proc/812").mkdir(parents=True)
    (node / "proc/812/stat").write_text(
        "812 (iggy-server) S 1 812 812 0 -1 0 0 0 0 0 5 5 0 0 20 0 4 0 100 1000 10 0 0 0 0 0\n"
    )
    result = systemd_units.run(ctx_for(tmp_path, node, UNITS))
    assert result.status == Status.PASS and "pid 812" in result.findings[0].message


def test_systemd_units_skips_on_unreadable_state(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    units_tools(tmp_path, monkeypatch, "", "")
    result = systemd_units.run(ctx_for(tmp_path, node, UNITS))
    assert result.status == Status.SKIPPED and "cannot read the units' state" in result.summary


# -- systemd.timers ----------------------------------------------------------------

TIMER_STATES = "\n".join(
    [
        "Result=success\nId=logrotate.timer\nActiveState=active\n",
        "Result=success\nId=fstrim.timer\nActiveState=active\n",
        "Result={result}\nId=logrotate.service\nActiveState={active}\n",
        "Result=success\nId=fstrim.service\nActiveState=inactive\n",
    ]
)


def test_systemd_timers_pass_from_json(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    states = TIMER_STATES.format(result="success", active="inactive")
    fake_tools(
        tmp_path,
        monkeypatch,
        {"systemctl": [(("list-timers",), TIMERS_JSON, 0), (("show",), states, 0)]},
    )
    result = systemd_timers.run(ctx_for(tmp_path, node))
    assert result.status == Status.PASS
    assert result.summary == "2 timers, next: logrotate.timer at 2026-11-24 00:00:00 UTC"
    assert result.data["format"] == "json"
    assert result.data["timers"][1]["last"] == "never"


def test_systemd_timers_warn_on_failed_last_run_from_text(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    states = TIMER_STATES.format(result="exit-code", active="failed")
    fake_tools(
        tmp_path,
        monkeypatch,
        {
            "systemctl": [
                (("list-timers", "--output=json"), "", 1),  # an old systemd without JSON tables
                (("list-timers",), TIMERS_TEXT, 0),
                (("show",), states, 0),
            ]
        },
    )
    result = systemd_timers.run(ctx_for(tmp_path, node))
    assert result.status == Status.WARN
    assert result.data["format"] == "text"
    assert result.summary.startswith("the last run of logrotate.service (timer logrotate.timer")
    assert "exit-code" in result.summary
    assert result.findings[0].subject == "logrotate.service"


def test_systemd_timers_skip_when_listing_fails(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_tools(tmp_path, monkeypatch, {"systemctl": []})
    result = systemd_timers.run(ctx_for(tmp_path, node))
    assert result.status == Status.SKIPPED and "cannot list timers" in result.summary
