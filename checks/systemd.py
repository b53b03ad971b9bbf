"""systemd checks: failed units, the broker's and the agent's units, timers.

Everything here asks systemctl and journalctl (argv only), so every check requires
systemd as PID 1; the parsers are pure functions of the tools' text output.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from snapshot_agent.core.check import Requirements, check
from snapshot_agent.core.context import Context
from snapshot_agent.core.grading import Band
from snapshot_agent.core.results import Finding, Result, Severity
from snapshot_agent.node.processes import find_broker

AGENT_UNIT = "snapshot-agent.service"
STATUS_EVIDENCE_UNITS = 5  # failed units whose `systemctl status` is saved
MAX_TIMERS = 200
JOURNAL_LINES = 5000  # newest PID 1 messages about the units read for the 24 h count
SYSTEMD_REQS = Requirements(systemd=True, binaries=("systemctl",))


def _short(unit: str) -> str:
    """'iggy-server.service' -> 'iggy-server' (systemctl accepts both; people type this)."""
    return unit.removesuffix(".service")


# -- parsers -----------------------------------------------------------------------


@dataclass(frozen=True)
class UnitRow:
    """One line of `systemctl list-units`."""

    unit: str
    load: str
    active: str
    sub: str
    description: str


def parse_list_units(text: str) -> list[UnitRow]:
    """Parse `systemctl list-units --no-legend --plain --full` lines.

    Unit names never contain spaces (systemd escapes them), so the first four
    columns split on whitespace and the rest is the description. A leading status
    dot ('●', or '*' without UTF-8) is dropped in case --plain did not remove it.
    """
    rows = []
    for line in text.splitlines():
        parts = line.strip().lstrip("●*").split(None, 4)
        if len(parts) < 4 or "." not in parts[0]:
            continue  # a legend, a hint line, or garbage
        rows.append(
            UnitRow(parts[0], parts[1], parts[2], parts[3], parts[4] if len(parts) > 4 else "")
        )
    return rows


def parse_show(text: str) -> list[dict[str, str]]:
    """Parse `systemctl show` output: one Key=value block per unit, blank-line separated."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = line.partition("=")
        if sep:
            current[key] = value
    if current:
        blocks.append(current)
    return blocks


@dataclass
class Timer:
    """One timer from `systemctl list-timers`."""

    unit: str
    activates: str
    next: str  # ISO time, the tool's text, or '' when never
    last: str
    last_usec: int | None = None  # for ordering and age when the JSON gave numbers


def _usec_iso(value: Any) -> tuple[str, int | None]:
    """A microsecond epoch (JSON list-timers) -> (ISO UTC text, usec); 0/null -> ('', None)."""
    if not isinstance(value, int) or value <= 0 or value >= 2**63 - 1:
        return "", None
    stamp = dt.datetime.fromtimestamp(value / 1e6, tz=dt.UTC)
    return stamp.strftime("%Y-%m-%d %H:%M:%S UTC"), value


def parse_timers_json(text: str) -> list[Timer] | None:
    """Parse `systemctl list-timers --output=json` (systemd 246+); None if not that."""
    try:
        items = json.loads(text)
    except ValueError:
        return None
    if not isinstance(items, list):
        return None
    timers = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("unit"), str):
            continue
        nxt, _ = _usec_iso(item.get("next"))
        last, last_usec = _usec_iso(item.get("last"))
        timers.append(Timer(item["unit"], str(item.get("activates") or ""), nxt, last, last_usec))
    return timers


def parse_timers_text(text: str) -> list[Timer]:
    """Parse the `systemctl list-timers --all` table by its header's column positions.

    The NEXT and LAST cells hold spaces ('Thu 2024-05-09 14:00:00 UTC'), so the
    header tells where each column starts.
    """
    lines = text.splitlines()
    header_at = next((i for i, line in enumerate(lines) if line.startswith("NEXT")), None)
    if header_at is None:
        return []
    header = lines[header_at]
    names = ("NEXT", "LEFT", "LAST", "PASSED", "UNIT", "ACTIVATES")
    starts = [header.find(n) for n in names]
    if any(s < 0 for s in starts) or starts != sorted(starts):
        return []
    timers = []
    for line in lines[header_at + 1 :]:
        if not line.strip():
            break  # the blank line before "N timers listed."
        cells = [
            line[start : (starts[i + 1] if i + 1 < len(starts) else None)].strip()
            for i, start in enumerate(starts)
        ]
        nxt, _left, last, _passed, unit, activates = cells
        if not unit.endswith(".timer"):
            continue
        timers.append(Timer(unit, activates, _never(nxt), _never(last)))
    return timers


def _never(cell: str) -> str:
    """'n/a' and '-' mean never."""
    return "" if cell in ("n/a", "-") else cell


@dataclass
class JournalCounts:
    """What PID 1 logged about one unit in the window."""

    starts: int = 0
    restarts: int = 0  # "Scheduled restart job": automatic restarts by Restart=
    failures: int = 0  # "Failed with result ..."
    last_failure: str = ""  # e.g. "oom-kill" / "exit-code"
    last_exit: str = ""  # e.g. "Main process exited, code=killed, status=9/KILL"


def parse_journal_json(text: str) -> dict[str, JournalCounts]:
    """Count starts, automatic restarts and failures per UNIT in `journalctl -o json` lines."""
    out: dict[str, JournalCounts] = {}
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        unit, message = entry.get("UNIT"), entry.get("MESSAGE")
        if isinstance(message, list):  # non-UTF-8 messages come as byte arrays
            message = bytes(b for b in message if isinstance(b, int) and 0 <= b < 256).decode(
                "utf-8", "replace"
            )
        if not isinstance(unit, str) or not isinstance(message, str):
            continue
        counts = out.setdefault(unit, JournalCounts())
        if "Scheduled restart job" in message:
            counts.restarts += 1
        elif message.startswith("Started "):
            counts.starts += 1
        elif "Failed with result" in message:
            counts.failures += 1
            counts.last_failure = message.split("Failed with result", 1)[1].strip(" '.")
        elif "Main process exited" in message:
            counts.last_exit = message.split(": ", 1)[-1].strip()
    return out


# -- systemd.failed ----------------------------------------------------------------


def _unit_name(unit: str) -> str:
    """'iggy-server' -> 'iggy-server.service', as systemctl lists it; full names stay."""
    return unit if "." in unit else unit + ".service"


def _failed_order(
    broker_unit: str, agent_unit: str = AGENT_UNIT
) -> Callable[[UnitRow], tuple[bool, bool, str]]:
    """Sort key for failed units: the broker's unit, the agent's, then the rest by name."""
    broker, agent = _unit_name(broker_unit), _unit_name(agent_unit)
    return lambda r: (r.unit != broker, r.unit != agent, r.unit)


def judge_failed(rows: list[UnitRow], broker_unit: str, agent_unit: str = AGENT_UNIT) -> Result:
    """Fail when the broker's or the agent's unit has failed; other failed units warn."""
    # The agent's unit is listed second so that, should both names be one unit, the
    # broker's wins.
    roles = {
        _unit_name(agent_unit): "the agent's unit ",
        _unit_name(broker_unit): "the broker's unit ",
    }
    findings = []
    for row in sorted(rows, key=_failed_order(broker_unit, agent_unit)):
        what = roles.get(row.unit, "")
        findings.append(
            Finding(
                # Only the broker and the agent make the node fail; a stale failure of an
                # unrelated unit (apt-daily, e2scrub...) needs a look, not an exit code 1.
                Severity.FAIL if row.unit in roles else Severity.WARN,
                f"{what}{row.unit} has failed ({row.active}/{row.sub}"
                + (f", {row.description}" if row.description else "")
                + ")",
                f"See why with `systemctl status {row.unit}` and `journalctl -u {row.unit} -b`; "
                f"fix the cause, then `systemctl restart {row.unit}` (or `systemctl "
                f"reset-failed {row.unit}` if it is no longer needed).",
                row.unit,
            )
        )
    data = {
        "failed": len(rows),
        "units": [
            {
                "unit": r.unit,
                "load": r.load,
                "active": r.active,
                "sub": r.sub,
                "description": r.description,
            }
            for r in rows
        ],
    }
    return Result.from_findings(findings, ok="no failed systemd units", data=data)


@check(
    id="systemd.failed",
    category="systemd",
    title="Failed systemd units",
    description="Units systemd reports as failed, with `systemctl status` of the first few; "
    "the broker's or the agent's unit fails, any other warns.",
    requires=SYSTEMD_REQS,
    timeout_s=8,
)
def systemd_failed(ctx: Context) -> Result:
    """List failed units and keep their status as evidence.

    Verdicts:
    - pass: no failed units [test_systemd_failed_pass]
    - skipped: systemctl cannot talk to systemd
      [test_systemd_failed_skips_when_systemctl_cannot_talk]
    - warn: unrelated units failed (apt-daily, e2scrub_all)
      [test_systemd_failed_unrelated_unit_only_warns]
    - fail: the broker's unit failed [test_systemd_failed_fail]
    - fail: the broker's unit named in the config failed
      [test_systemd_failed_broker_unit_from_config]
    - fail: the agent's own unit failed [test_systemd_failed_agent_unit_fails]

    The failed state now, as systemd keeps it until the next start or reset-failed.
    """
    res = ctx.run(
        [
            "systemctl",
            "list-units",
            "--failed",
            "--all",
            "--no-legend",
            "--plain",
            "--full",
            "--no-pager",
        ],
        timeout_s=4,
        save_as="failed-units.txt",
    )
    if not res.ok:
        return Result.skipped(f"cannot list units: {res.explain()}")
    rows = parse_list_units(res.stdout)
    broker_unit = ctx.config.iggy.service
    ordered = sorted(rows, key=_failed_order(broker_unit))
    for row in ordered[:STATUS_EVIDENCE_UNITS]:
        if ctx.remaining() < 1.5:
            break
        ctx.run(
            ["systemctl", "status", "--no-pager", "--full", "-n", "30", row.unit],
            timeout_s=2,
            save_as=f"status-{row.unit}.txt",
        )
    return judge_failed(rows, broker_unit)


# -- systemd.units -----------------------------------------------------------------

UNIT_PROPS = (
    "Id",
    "LoadState",
    "ActiveState",
    "SubState",
    "Result",
    "MainPID",
    "NRestarts",
    "ExecMainStartTimestamp",
    "ExecMainStatus",
    "FragmentPath",
)


@dataclass
class UnitState:
    """One unit's state from `systemctl show` and the last 24 h of PID 1's journal."""

    unit: str
    role: str  # "broker" | "agent"
    props: dict[str, str]
    journal: JournalCounts | None  # None when the journal could not be read
    broker_pid_elsewhere: int | None = None  # broker found outside this unit


@dataclass
class UnitsFacts:
    """The units looked at."""

    units: list[UnitState] = field(default_factory=list)
    journal_note: str = ""


def _int(text: str | None) -> int | None:
    """'3' -> 3; '', '[not set]' -> None."""
    return int(text) if text and text.isdigit() else None


def _unit_row(u: UnitState) -> dict[str, Any]:
    """A table row for one unit."""
    p, j = u.props, u.journal
    return {
        "unit": u.unit,
        "role": u.role,
        "load": p.get("LoadState", "?"),
        "active": p.get("ActiveState", "?"),
        "sub": p.get("SubState", "?"),
        "main_pid": _int(p.get("MainPID")),
        "started": p.get("ExecMainStartTimestamp") or None,
        "restarts_total": _int(p.get("NRestarts")),
        "restarts_24h": j.restarts if j else None,
        "failures_24h": j.failures if j else None,
        "last_failure": (j.last_failure or j.last_exit or None) if j else None,
    }


def _missing_unit(u: UnitState) -> Finding:
    """A unit that is not installed: a problem only when no broker runs at all."""
    label = f"{u.role} unit {u.unit}"
    if u.role == "agent":
        return Finding(
            Severity.INFO, f"{label} is not installed (the agent runs by hand)", "", u.unit
        )
    if u.broker_pid_elsewhere is not None:
        return Finding(
            Severity.INFO,
            f"{label} is not installed; the broker (pid {u.broker_pid_elsewhere}) runs "
            "outside systemd (a container or by hand)",
            "",
            u.unit,
        )
    return Finding(
        Severity.WARN,
        f"{label} is not installed and no broker process runs",
        "If the broker runs under another unit name, set `iggy.service` in the agent's "
        f"config; otherwise install and start it (`systemctl enable --now {_short(u.unit)}`).",
        u.unit,
    )


def _inactive_unit(u: UnitState) -> Finding:
    """A unit that is not active: the broker not serving fails, an idle agent warns."""
    p, j = u.props, u.journal
    active, sub = p.get("ActiveState", "?"), p.get("SubState", "?")
    looping = sub == "auto-restart" or active == "activating"
    what = "is restarting in a loop" if looping else f"is {active} ({sub})"
    last = (j.last_failure or j.last_exit) if j else ""
    why = f"; last failure: {last}" if last else ""
    label = f"{u.role} unit {u.unit}"
    if u.role == "broker":
        return Finding(
            Severity.FAIL,
            f"{label} {what}{why}: the broker is not serving",
            f"Read why: `journalctl -u {u.unit} -b -n 200` and `systemctl status {u.unit}`; "
            "'oom-kill' needs memory, 'exit-code' is usually the server's own error in its "
            "last log lines (config, port in use, data directory permissions). Then "
            f"`systemctl restart {_short(u.unit)}`.",
            u.unit,
        )
    return Finding(
        Severity.WARN,
        f"{label} {what}{why}: the supervisor cannot reach this node's agent",
        f"`journalctl -u {u.unit} -b -n 100`, then `systemctl restart {_short(u.unit)}`.",
        u.unit,
    )


#: Automatic restarts of a unit in the last 24 h (or since its last manual start).
RESTARTS_24H = Band("restarts_24h", warn=3, parse=int)


def _restart_loop(u: UnitState, thresholds: dict[str, Any]) -> Finding | None:
    """A warning when the unit's automatic restarts reach the RESTARTS_24H band."""
    j = u.journal
    label = f"{u.role} unit {u.unit}"
    if j is not None:
        severity = RESTARTS_24H.grade(j.restarts, thresholds)
        if severity is None:
            return None
        last = j.last_failure or j.last_exit
        return Finding(
            severity,
            f"{label} was restarted automatically {j.restarts} times in the last 24 h "
            f"(at or over {RESTARTS_24H.limit(severity, thresholds)}): a crash loop"
            + (f"; last failure: {last}" if last else ""),
            "Each restart drops every client connection. Read the failures with "
            f"`journalctl -u {u.unit} --since -24h | grep -E 'Failed|exited|Scheduled'` and "
            "the server log just before each; oom-kill means memory pressure.",
            u.unit,
        )
    # Without the journal, NRestarts counts automatic restarts since the last manual start.
    total = _int(u.props.get("NRestarts"))
    severity = RESTARTS_24H.grade(total, thresholds)
    if severity is None:
        return None
    return Finding(
        severity,
        f"{label} was restarted automatically {total} times since it was last started by "
        "hand (the journal of the last 24 h could not be read)",
        f"Read the failures with `journalctl -u {u.unit} -b | grep -E 'Failed|exited'`.",
        u.unit,
    )


def judge_units(facts: UnitsFacts, thresholds: dict[str, Any]) -> Result:
    """Fail when the broker's unit is not active; warn on restart loops and an idle agent."""
    findings: list[Finding] = []
    summary = []
    for u in facts.units:
        active, sub = u.props.get("ActiveState", "?"), u.props.get("SubState", "?")
        if u.props.get("LoadState") == "not-found":
            findings.append(_missing_unit(u))
            summary.append(f"{u.role} {u.unit} not installed")
            continue
        started = u.props.get("ExecMainStartTimestamp") or ""
        since = f" since {started}" if active == "active" and started else ""
        summary.append(f"{u.role} {u.unit} {active}/{sub}{since}")
        if active != "active":
            findings.append(_inactive_unit(u))
        if (loop := _restart_loop(u, thresholds)) is not None:
            findings.append(loop)
    if facts.journal_note:
        findings.append(Finding(Severity.INFO, facts.journal_note, "", "journal"))
    data = {"units": [_unit_row(u) for u in facts.units]}
    return Result.from_findings(findings, ok="; ".join(summary), data=data)


@check(
    id="systemd.units",
    category="systemd",
    title="Broker and agent units",
    description="State, main PID and restarts (last 24 h) of the broker's and the agent's units.",
    requires=SYSTEMD_REQS,
    timeout_s=8,
    bands=(RESTARTS_24H,),
)
def systemd_units(ctx: Context) -> Result:
    """`systemctl show` of both units and PID 1's journal about them.

    Verdicts:
    - pass: the broker's unit active, no restart in 24 h [test_systemd_units_pass]
    - pass: no unit, but the broker runs as a process [test_systemd_units_broker_unit_missing]
    - skipped: the units' state cannot be read [test_systemd_units_skips_on_unreadable_state]
    - warn: the broker restarted automatically 4 times in 24 h (last: oom-kill)
      [test_systemd_units_crash_loop_warns]
    - warn: no unit installed and no broker process [test_systemd_units_broker_unit_missing]
    - fail: the broker's unit down [test_systemd_units_broker_down_fails]
    - fail: the broker restarting in a loop right now [test_systemd_units_auto_restart_is_a_loop]

    Restarts are counted over the last 24 h of PID 1's journal, not since boot.
    """
    broker_unit = ctx.config.iggy.service
    names = [(broker_unit, "broker")] + (
        [(AGENT_UNIT, "agent")] if broker_unit != AGENT_UNIT else []
    )
    res = ctx.run(
        ["systemctl", "show", "--no-pager", "-p", ",".join(UNIT_PROPS), *(n for n, _ in names)],
        timeout_s=3,
        save_as="show.txt",
    )
    blocks = parse_show(res.stdout) if res.ok else []
    if len(blocks) != len(names):
        return Result.skipped(f"cannot read the units' state: {res.explain()}")
    facts = UnitsFacts()
    # PID 1's messages about a unit carry UNIT=; same-field matches are ORed, _PID=1 ANDed.
    jres = ctx.run(
        [
            "journalctl",
            "--no-pager",
            "--since=-24h",
            "-o",
            "json",
            "--output-fields=UNIT,MESSAGE",
            "-n",
            str(JOURNAL_LINES),
            "_PID=1",
            *(f"UNIT={n}" for n, _ in names),
        ],
        timeout_s=3,
        save_as="journal-24h.json",
    )
    counts = parse_journal_json(jres.stdout) if jres.ok else None
    if counts is None:
        facts.journal_note = f"restarts in the last 24 h unknown: {jres.explain()}"
    elif "not seeing messages" in jres.stderr:
        # Not root and not in group systemd-journal: PID 1's messages are hidden, so a
        # count of 0 would be a lie.
        counts = None
        facts.journal_note = (
            "restarts in the last 24 h unknown: the system journal is not readable by this "
            "user (run as root or add it to the systemd-journal group)"
        )
    broker = None
    for (name, role), props in zip(names, blocks, strict=True):
        journal = (counts.get(name) or JournalCounts()) if counts is not None else None
        state = UnitState(name, role, props, journal)
        if role == "broker" and props.get("LoadState") == "not-found":
            broker = broker or find_broker(ctx)
            state.broker_pid_elsewhere = broker.pid if broker else None
        facts.units.append(state)
    return judge_units(facts, ctx.thresholds)


# -- systemd.timers ----------------------------------------------------------------


@dataclass
class TimersFacts:
    """Timers, and the state of each timer and of the unit it activates."""

    timers: list[Timer]
    states: dict[str, dict[str, str]] = field(default_factory=dict)  # unit -> show props
    format: str = "json"


def judge_timers(facts: TimersFacts) -> Result:
    """List the timers; warn on a failed timer or a timer whose last run failed."""
    findings = []
    rows = []
    for t in facts.timers:
        timer_state = facts.states.get(t.unit, {})
        job = facts.states.get(t.activates, {})
        job_result = job.get("Result", "")
        job_failed = job.get("ActiveState") == "failed" or job_result not in ("", "success")
        rows.append(
            {
                "timer": t.unit,
                "activates": t.activates,
                "next": t.next or "never",
                "last": t.last or "never",
                "timer_state": timer_state.get("ActiveState", ""),
                "last_result": job_result or None,
            }
        )
        if timer_state.get("ActiveState") == "failed":
            findings.append(
                Finding(
                    Severity.WARN,
                    f"timer {t.unit} has failed and will not fire again",
                    f"`systemctl status {t.unit}`; fix it, then `systemctl restart {t.unit}`.",
                    t.unit,
                )
            )
        elif job_failed and t.last:
            findings.append(
                Finding(
                    Severity.WARN,
                    f"the last run of {t.activates} (timer {t.unit}, {t.last}) failed "
                    f"({job_result or job.get('ActiveState')})",
                    f"`systemctl status {t.activates}` and `journalctl -u {t.activates} -n 50`; "
                    "a failing cleanup or rotation job (logrotate, tmpfiles) lets disks fill up.",
                    t.activates,
                )
            )
    upcoming = [t for t in facts.timers if t.next]
    ok = f"{len(facts.timers)} timers"
    if upcoming:
        ok += f", next: {upcoming[0].unit} at {upcoming[0].next}"
    return Result.from_findings(findings, ok=ok, data={"timers": rows, "format": facts.format})


@check(
    id="systemd.timers",
    category="systemd",
    title="systemd timers",
    description="Timers with their next and last runs; failed timers and failed last runs.",
    requires=SYSTEMD_REQS,
    timeout_s=8,
)
def systemd_timers(ctx: Context) -> Result:
    """List timers (JSON when this systemd has it, else the table) and their units' results.

    Verdicts:
    - pass: two timers, one that never ran yet [test_systemd_timers_pass_from_json]
    - skipped: timers cannot be listed [test_systemd_timers_skip_when_listing_fails]
    - warn: the last run of a timer's service failed
      [test_systemd_timers_warn_on_failed_last_run_from_text]

    Each timer's last result, as systemd keeps it until the next run.
    """
    res = ctx.run(
        ["systemctl", "list-timers", "--all", "--no-pager", "--output=json"],
        timeout_s=3,
        save_as="list-timers.json",
    )
    timers = parse_timers_json(res.stdout) if res.ok else None
    fmt = "json"
    if timers is None:  # systemd before 246 has no JSON tables
        res = ctx.run(
            ["systemctl", "list-timers", "--all", "--no-pager", "--full"],
            timeout_s=3,
            save_as="list-timers.txt",
        )
        if not res.ok:
            return Result.skipped(f"cannot list timers: {res.explain()}")
        timers, fmt = parse_timers_text(res.stdout), "text"
    timers = timers[:MAX_TIMERS]
    facts = TimersFacts(timers, format=fmt)
    units = [t.unit for t in timers] + [t.activates for t in timers if t.activates]
    if units:
        show = ctx.run(
            ["systemctl", "show", "--no-pager", "-p", "Id,ActiveState,Result", *units],
            timeout_s=3,
            save_as="show.txt",
        )
        for block in parse_show(show.stdout) if show.ok else []:
            if "Id" in block:
                facts.states[block["Id"]] = block
    return judge_timers(facts)
