"""Log checks: the systemd journal's recent errors and the tails of the broker's log files."""

from __future__ import annotations

import glob
import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from snapshot_agent.core.check import Requirements, check
from snapshot_agent.core.context import Context
from snapshot_agent.core.grading import Band
from snapshot_agent.core.results import Finding, Result, Severity
from snapshot_agent.core.tail import read_tail
from snapshot_agent.core.units import utc_iso
from snapshot_agent.node.iggy_install import discover
from snapshot_agent.node.iggy_logs import parse_resource_line
from snapshot_agent.node.processes import BrokerProcess, find_brokers

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: tracing's default format, which Iggy uses: `<timestamp> <LEVEL> <thread> <target>: <msg>`.
_TRACING_LEVEL = re.compile(r"^\s*(\d{4}-\d\d-\d\dT\S+)\s+(TRACE|DEBUG|INFO|WARN|ERROR)\b")
_GENERIC_ERROR = re.compile(r"\b(ERROR|ERR|CRIT|CRITICAL|FATAL|ALERT|EMERG|PANIC)\b")
_GENERIC_WARN = re.compile(r"\b(WARN|WARNING)\b")
_KV_LEVEL = re.compile(r"\blevel\"?\s*[=:]\s*\"?(error|fatal|critical|warn|warning)\b", re.I)
_PANIC = "panicked at"
_OOM_KILL = re.compile(r"Killed process (\d+) \((iggy[\w-]*)\)")
_COMPRESSED = (".gz", ".xz", ".zst", ".bz2", ".lz4", ".zip")

JOURNAL_FIELDS = "MESSAGE,PRIORITY,_SYSTEMD_UNIT,SYSLOG_IDENTIFIER,_COMM,_PID,UNIT,_TRANSPORT"
TAIL_BYTES = 512 * 1024  # read at most this much from the end of each log file
MAX_LINE = 2000  # longer lines are cut in the artifact (a binary file is not a log)
IGGY_LOG_NAME = "iggy-server.log"


def strip_ansi(text: str) -> str:
    """Remove terminal colour codes (Iggy colours its stdout, which journald keeps)."""
    return _ANSI.sub("", text)


def classify_line(line: str) -> str:
    """'error', 'warn', 'panic' or '' for one log line (tracing format first, then generic)."""
    if _PANIC in line:
        return "panic"
    match = _TRACING_LEVEL.match(line)
    if match:
        level = match.group(2)
        return "error" if level == "ERROR" else "warn" if level == "WARN" else ""
    head = line[:200]
    kv = _KV_LEVEL.search(head)
    if kv:
        return "warn" if kv.group(1).lower().startswith("warn") else "error"
    if _GENERIC_ERROR.search(head):
        return "error"
    if _GENERIC_WARN.search(head):
        return "warn"
    return ""


def line_timestamp(line: str) -> str:
    """The leading ISO timestamp of a tracing-format line, or ''."""
    match = _TRACING_LEVEL.match(line)
    return match.group(1) if match else ""


# -- logs.journal -------------------------------------------------------------------


@dataclass(frozen=True)
class JournalEntry:
    """One journal record, reduced to what the judge needs."""

    time_us: int
    priority: int
    unit: str  # _SYSTEMD_UNIT, else SYSLOG_IDENTIFIER, else _COMM
    message: str
    pid: str = ""
    about_unit: str = ""  # UNIT=: systemd's own messages about a unit
    comm: str = ""
    identifier: str = ""

    def format(self) -> str:
        """`2026-05-20T03:12:09Z unit[pid]: message`, one line."""
        when = utc_iso(self.time_us / 1e6)
        pid = f"[{self.pid}]" if self.pid else ""
        msg = self.message.replace("\n", " ")[:MAX_LINE]
        return f"{when} p{self.priority} {self.unit}{pid}: {msg}"


def _field_text(value: Any) -> str:
    """A journal JSON field: a string, a byte array (non-UTF-8 or control chars) or null."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        if all(isinstance(v, int) for v in value):
            return bytes(v & 0xFF for v in value).decode("utf-8", "replace")
        return _field_text(value[0]) if value else ""  # a field repeated in one record
    if value is None:
        return "[field too large to show]"
    return str(value)


def parse_journal_json(text: str) -> tuple[list[JournalEntry], int]:
    """Parse `journalctl -o json` output; returns the entries and the count of bad lines."""
    entries: list[JournalEntry] = []
    bad = 0
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            bad += 1  # the head of the output may be cut mid-record by the output cap
            continue
        if not isinstance(rec, dict):
            bad += 1
            continue
        ident = _field_text(rec.get("SYSLOG_IDENTIFIER", ""))
        comm = _field_text(rec.get("_COMM", ""))
        unit = _field_text(rec.get("_SYSTEMD_UNIT", "")) or ident or comm or "unknown"
        try:
            when = int(_field_text(rec.get("__REALTIME_TIMESTAMP", "0")))
        except ValueError:
            when = 0
        try:
            prio = int(_field_text(rec.get("PRIORITY", "6")))
        except ValueError:
            prio = 6
        entries.append(
            JournalEntry(
                time_us=when,
                priority=prio,
                unit=unit,
                message=strip_ansi(_field_text(rec.get("MESSAGE", ""))),
                pid=_field_text(rec.get("_PID", "")),
                about_unit=_field_text(rec.get("UNIT", "")),
                comm=comm,
                identifier=ident,
            )
        )
    return entries, bad


def is_broker_entry(entry: JournalEntry, service: str) -> bool:
    """Written by the broker, by systemd about the broker's unit, or the kernel killing it."""
    stem = service.removesuffix(".service")
    if service in (entry.unit, entry.about_unit):
        return True
    if stem in (entry.identifier, entry.comm) or "iggy-server" in (entry.identifier, entry.comm):
        return True
    return bool(_OOM_KILL.search(entry.message))


@dataclass
class JournalFacts:
    """Error-priority journal entries of the window, and the broker unit's own lines."""

    service: str
    window_hours: float
    max_entries: int
    errors: list[JournalEntry] = field(default_factory=list)  # priority <= err
    broker_lines: list[JournalEntry] = field(default_factory=list)  # the unit, any priority
    bad_lines: int = 0
    notes: list[str] = field(default_factory=list)  # partial reads, permission hints


def _journal_has_data(ctx: Context) -> bool:
    """journald runs (its socket exists) or journal files exist to read."""
    if ctx.path("/run/systemd/journal/socket").exists():
        return True
    for base in ("/var/log/journal", "/run/log/journal"):
        root = ctx.path(base)
        if glob.glob(str(root / "*.journal")) or glob.glob(str(root / "*" / "*.journal")):
            return True
    return False


def _journal_dir_arg(ctx: Context) -> list[str]:
    """On a fixture tree or chroot, read its journal files, never the host's."""
    if ctx.live:
        return []
    for base in ("/var/log/journal", "/run/log/journal"):
        root = ctx.path(base)
        if root.is_dir():
            return [f"--directory={root}"]
    return [f"--directory={ctx.path('/var/log/journal')}"]


def _journalctl(ctx: Context, args: list[str], facts: JournalFacts) -> list[JournalEntry] | str:
    """Run journalctl with `args`; entries, or a reason string when nothing can be read."""
    base = ["journalctl", *_journal_dir_arg(ctx), "--no-pager", "-o", "json"]
    window = ["--since", f"-{facts.window_hours:g}h", "-n", str(facts.max_entries)]
    result = ctx.run([*base, f"--output-fields={JOURNAL_FIELDS}", *window, *args], timeout_s=6)
    if not result.ok and "output-fields" in result.stderr:
        # journalctl older than systemd 236 lacks --output-fields; records are just larger.
        result = ctx.run([*base, *window, *args], timeout_s=6)
    if "No journal files were found" in result.stderr:
        return "journalctl found no journal files (journald is not storing logs here)"
    if result.timed_out:
        facts.notes.append(f"{result.describe()}; counts are from the part it printed")
    elif not result.ok:
        return result.explain(200)
    if "not seeing messages from other users" in result.stderr:
        facts.notes.append("journalctl shows only this user's messages; run as root")
    entries, bad = parse_journal_json(result.stdout)
    facts.bad_lines += bad
    return entries


def read_journal(ctx: Context) -> JournalFacts | str:
    """Error entries of the last hours, and the broker unit's lines; a reason to skip."""
    if not _journal_has_data(ctx):
        pid1 = (ctx.read_optional("/proc/1/comm", max_bytes=64) or "?").strip()
        return (
            f"journald is not running (no /run/systemd/journal/socket; PID 1 is {pid1}) and "
            "there are no journal files under /var/log/journal or /run/log/journal; the "
            "broker's own log is read by logs.files"
        )
    facts = JournalFacts(
        service=ctx.config.iggy.service,
        window_hours=float(ctx.thresholds["window_hours"]),
        max_entries=int(ctx.thresholds["max_entries"]),
    )
    errors = _journalctl(ctx, ["-p", "err"], facts)
    if isinstance(errors, str):
        return errors
    facts.errors = errors
    # The broker logs through stdout, which journald stores at priority info whatever
    # the line's level: its ERROR lines are only found by reading the unit's lines.
    broker = _journalctl(ctx, ["-u", facts.service], facts)
    if isinstance(broker, list):
        facts.broker_lines = broker
    else:
        facts.notes.append(f"the {facts.service} lines could not be read: {broker}")
    return facts


#: Error lines from the broker in the window (priority err, or ERROR/panic in its text).
BROKER_ERRORS = Band("broker_errors", warn=1, fail=100)
#: Error-priority journal entries of every unit in the window.
TOTAL_ERRORS = Band("total_errors", warn=200)


@dataclass(frozen=True)
class JournalCounts:
    """What judge_journal counts in the journal facts."""

    by_unit: Counter[str]  # error-priority entries per unit
    broker_errors: int  # error lines from the broker, each record once
    broker_levels: Counter[str]  # classify_line() of the broker unit's lines
    oom: list[JournalEntry]  # the kernel killing the broker
    failures: list[JournalEntry]  # systemd's 'Failed with result' about the unit


def count_journal(facts: JournalFacts) -> JournalCounts:
    """Count errors per unit and the broker's errors, panics, OOM kills and unit failures."""
    broker_prio = [e for e in facts.errors if is_broker_entry(e, facts.service)]
    # Priority-err entries of the unit are also among its lines; count each record once.
    seen = {(e.time_us, e.message) for e in broker_prio}
    broker_text_errors = [
        e
        for e in facts.broker_lines
        if classify_line(e.message) in ("error", "panic") and (e.time_us, e.message) not in seen
    ]
    return JournalCounts(
        by_unit=Counter(e.unit for e in facts.errors),
        broker_errors=len(broker_prio) + len(broker_text_errors),
        broker_levels=Counter(classify_line(e.message) for e in facts.broker_lines),
        oom=[e for e in facts.errors if _OOM_KILL.search(e.message)],
        # systemd's own note each time the unit dies (priority warning, so only in -u lines).
        failures=[e for e in facts.broker_lines if "Failed with result" in e.message],
    )


def _both_ends(band: Band, thresholds: dict[str, Any]) -> str:
    """'warn at 10, fail at 100': a band's ends after the config's overrides, for a message."""
    warn, fail = band.limits(thresholds)
    return f"warn at {warn:g}, fail at {fail:g}"


def _window(facts: JournalFacts) -> str:
    """The journal window in words ('24 h')."""
    return f"{facts.window_hours:g} h"


def _broker_oom_killed(facts: JournalFacts, counts: JournalCounts) -> list[Finding]:
    """The kernel OOM killer killed the broker."""
    if not counts.oom:
        return []
    found = (_OOM_KILL.search(e.message) for e in counts.oom)
    pids = ", ".join(sorted({m.group(1) for m in found if m}))
    return [
        Finding(
            Severity.FAIL,
            f"the kernel OOM killer killed the broker (pid {pids}) in the last {_window(facts)}",
            "The node or the broker's cgroup ran out of memory. Compare the broker's "
            "memory ([system.memory_pool] size, caches) with the RAM or the cgroup's "
            "memory.max (system.virtualization), and read `journalctl -k | grep -i oom`.",
            facts.service,
        )
    ]


def _broker_panicked(facts: JournalFacts, counts: JournalCounts) -> list[Finding]:
    """The broker panicked: a shard or the whole process died."""
    panics = counts.broker_levels["panic"]
    if not panics:
        return []
    return [
        Finding(
            Severity.FAIL,
            f"the broker panicked {panics} time(s) in the last {_window(facts)}",
            "A panic kills a shard or the process. Save the panic message and backtrace "
            f"(`journalctl -u {facts.service} | grep -A20 panicked`) for the Iggy "
            "maintainers, then check that the broker restarted cleanly.",
            facts.service,
        )
    ]


def _broker_unit_failed(facts: JournalFacts, counts: JournalCounts) -> list[Finding]:
    """systemd saw the broker's unit fail (and restarted it)."""
    if not counts.failures:
        return []
    return [
        Finding(
            Severity.WARN,
            f"{facts.service} failed {len(counts.failures)} time(s) in the last "
            f"{_window(facts)} (newest: {counts.failures[-1].message[:160]})",
            "Every failure restarts the broker (clients reconnect, shards reload). "
            f"Read why: `journalctl -u {facts.service} -n 200 --no-pager` around each "
            "'Failed with result' line (exit code, signal, oom-kill, timeout).",
            facts.service,
        )
    ]


def _broker_error_lines(
    facts: JournalFacts, counts: JournalCounts, thresholds: dict[str, Any]
) -> list[Finding]:
    """Error lines from the broker reach its band (none at all is never a finding)."""
    n = counts.broker_errors
    severity = BROKER_ERRORS.grade_count(n, thresholds)
    if severity is None:
        return []
    return [
        Finding(
            severity,
            f"{n} error line(s) from the broker ({facts.service}) in the last {_window(facts)} "
            f"({_both_ends(BROKER_ERRORS, thresholds)})",
            f"Read them: `journalctl -u {facts.service} --since -{facts.window_hours:g}h "
            "| grep -E 'ERROR|panicked'` (newest lines are in raw/logs.journal/); "
            "correlate with restarts (`systemctl status "
            f"{facts.service}`), disk-full and connection errors.",
            facts.service,
        )
    ]


def _node_error_entries(
    facts: JournalFacts, counts: JournalCounts, thresholds: dict[str, Any]
) -> list[Finding]:
    """Error-priority entries of all units together reach their band."""
    total = len(facts.errors)
    severity = TOTAL_ERRORS.grade(total, thresholds)
    if severity is None:
        return []
    top = ", ".join(f"{unit} {n}" for unit, n in counts.by_unit.most_common(5))
    limit = TOTAL_ERRORS.limit(severity, thresholds)
    return [
        Finding(
            severity,
            f"{total} error-priority journal entries in the last {_window(facts)} "
            f"(warn at {limit:g}; top: {top})",
            "Something on the node is failing repeatedly; read the busiest unit's "
            "errors (`journalctl -p err --since -24h -u <unit>`) and judge whether it "
            "affects the broker (disks, network, time sync).",
            "journal",
        )
    ]


def _partial_read(facts: JournalFacts) -> list[Finding]:
    """journalctl gave part of the window: its notes, and the max_entries cap when reached."""
    findings = [Finding(Severity.INFO, note, "", "journalctl") for note in facts.notes]
    if len(facts.errors) >= facts.max_entries:
        findings.append(
            Finding(
                Severity.INFO,
                f"only the newest {facts.max_entries} error entries were read",
                "Raise checks.thresholds.logs.journal.max_entries to count further back.",
                "journalctl",
            )
        )
    return findings


def _journal_data(facts: JournalFacts, counts: JournalCounts) -> dict[str, Any]:
    """Counts by unit and for the broker, and the newest error entries."""
    newest = sorted(facts.errors, key=lambda e: e.time_us)[-10:]
    return {
        "window_hours": facts.window_hours,
        "error_entries": len(facts.errors),
        "capped": len(facts.errors) >= facts.max_entries,
        "broker_unit": facts.service,
        "broker_errors": counts.broker_errors,
        "broker_lines_read": len(facts.broker_lines),
        "broker_warnings": counts.broker_levels["warn"],
        "broker_panics": counts.broker_levels["panic"],
        "broker_unit_failures": len(counts.failures),
        "by_unit": [{"unit": u, "errors": n} for u, n in counts.by_unit.most_common(20)],
        "newest": [e.format() for e in newest],
        "unparsable_lines": facts.bad_lines,
    }


def judge_journal(facts: JournalFacts, thresholds: dict[str, Any]) -> Result:
    """Errors from the broker warn (fail above a count); many errors overall warn."""
    counts = count_journal(facts)
    findings = (
        _broker_oom_killed(facts, counts)
        + _broker_panicked(facts, counts)
        + _broker_unit_failed(facts, counts)
        + _broker_error_lines(facts, counts, thresholds)
        + _node_error_entries(facts, counts, thresholds)
        + _partial_read(facts)
    )
    ok = (
        f"{len(facts.errors)} error-priority entries in the last {_window(facts)}"
        + (f" from {len(counts.by_unit)} units" if counts.by_unit else "")
        + f"; {counts.broker_errors} from the broker"
    )
    return Result.from_findings(findings, ok=ok, data=_journal_data(facts, counts))


@check(
    id="logs.journal",
    category="logs",
    title="Journal errors",
    description="Error-priority journal entries of the last day by unit; the broker unit's errors.",
    requires=Requirements(binaries=("journalctl",)),
    timeout_s=10,
    thresholds={"window_hours": 24, "max_entries": 5000},
    bands=(BROKER_ERRORS, TOTAL_ERRORS),
)
def logs_journal(ctx: Context) -> Result:
    """Recent errors in the systemd journal, the broker's first.

    Verdicts:
    - pass: one error-priority entry from chrony in 24 h, none from the broker
      [test_judge_journal_pass_warn_fail]
    - pass: 199 error-priority entries across other units, one under the band
      [test_judge_journal_bands]
    - pass: the broker's INFO lines mention "error" in their text
      [test_judge_journal_broker_info_lines_mentioning_errors_pass]
    - warn: three ERROR lines the broker wrote to stdout (journald priority info)
      [test_judge_journal_pass_warn_fail]
    - warn: the broker's unit failed and was restarted twice
      [test_judge_journal_warns_on_unit_failures]
    - fail: the kernel OOM killer killed the broker, or the broker panicked
      [test_judge_journal_fails_on_oom_kill_and_panic]
    - fail: an OOM kill found through a fake journalctl, end to end
      [test_logs_journal_end_to_end_with_a_fake_journalctl]
    - skipped: no journald and no journal files (tini as PID 1)
      [test_logs_journal_skips_without_journald]
    """
    facts = read_journal(ctx)
    if isinstance(facts, str):
        return Result.skipped(facts)
    lines = sorted(facts.errors, key=lambda e: e.time_us)
    ctx.artifact("errors.txt", "".join(e.format() + "\n" for e in lines))
    if facts.broker_lines:
        broker = sorted(facts.broker_lines, key=lambda e: e.time_us)
        ctx.artifact("broker.txt", "".join(e.format() + "\n" for e in broker))
    return judge_journal(facts, ctx.thresholds)


# -- logs.files ---------------------------------------------------------------------

#: A date and time as ISO 8601 / RFC 3339 writes it: tracing's `2026-11-26T13:05:41.123456Z`
#: (Iggy's format), rsyslog's `2026-11-26T13:05:41.123+01:00`, Python's `2026-11-26 13:05:41,123`.
_ISO_TIME = (
    r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?"
    r"\s?(Z|UTC|[+-]\d\d(?::?\d\d)?)?"
)
#: ... at the start of the line, maybe after a bracket or an RFC 5424 priority (`<34>1 `).
_LEADING_ISO = re.compile(r"^(?:<\d{1,3}>\d?\s*)?(?:\[\s*)?" + _ISO_TIME)
#: ... as a field near the start: logfmt `ts=...`, `time=...`, JSON `"timestamp":"..."`.
_FIELD_ISO = re.compile(r"\b(?:ts|time|timestamp)\"?\s*[=:]\s*\"?" + _ISO_TIME)
#: Seconds since the epoch as a field (zap's `"ts":1779246729.101`).
_FIELD_EPOCH = re.compile(r"\b(?:ts|time|timestamp)\"?\s*[=:]\s*\"?(\d{10}(?:\.\d+)?)\b")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
#: Classic syslog (`Nov 26 13:05:41 host prog[pid]: ...`): local time, no year.
_SYSLOG_TIME = re.compile(r"^(" + "|".join(_MONTHS) + r") {1,2}(\d{1,2}) (\d\d):(\d\d):(\d\d)\b")


def _zone(text: str | None) -> timezone | None:
    """The zone of an ISO time: UTC for Z, a fixed offset, None (local time) when absent."""
    if not text:
        return None
    if text in ("Z", "UTC"):
        return UTC
    digits = text[1:].replace(":", "")
    offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
    return timezone(-offset if text[0] == "-" else offset)


#: What datetime raises for a date it cannot hold or place (year 1 in a local zone, ...).
_BAD_TIME = (ValueError, OverflowError, OSError)


def _iso_seconds(match: re.Match[str]) -> float | None:
    """Epoch seconds of an _ISO_TIME match; None for an impossible date or offset."""
    year, month, day, hour, minute, second, frac, zone = match.groups()[-8:]
    try:
        when = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            min(int(second), 59),  # a leap second
            tzinfo=_zone(zone),
        ).timestamp()
    except _BAD_TIME:
        return None
    return when + (float("0." + frac) if frac else 0.0)


def _syslog_seconds(match: re.Match[str], reference: float) -> float | None:
    """Epoch seconds of a syslog time, in the year that puts it before `reference`."""
    month = _MONTHS.index(match[1]) + 1
    try:
        year = datetime.fromtimestamp(reference).year
    except _BAD_TIME:
        return None
    for candidate in (year, year - 1):  # `Dec 31` read on 2 January is last year's
        try:
            when = datetime(
                candidate,
                month,
                int(match[2]),
                int(match[3]),
                int(match[4]),
                min(int(match[5]), 59),
            ).timestamp()
        except _BAD_TIME:
            continue  # 29 February of a year without one
        if when <= reference + 86400:
            return when
    return None


def line_time(line: str, reference: float) -> float | None:
    """When a log line says it was written (epoch seconds), or None when it has no time.

    Knows tracing's format (Iggy), RFC 3339 with an offset, `YYYY-MM-DD HH:MM:SS[,ms]`
    (local time when no zone is given), syslog's `Nov 26 13:05:41` (the year is the one
    that puts it before `reference`, the file's last write) and `ts=`/`time=` fields.
    """
    line = strip_ansi(line)
    match = _LEADING_ISO.match(line)
    if match:
        return _iso_seconds(match)
    match = _SYSLOG_TIME.match(line)
    if match:
        return _syslog_seconds(match, reference)
    head = line[:200]
    match = _FIELD_ISO.search(head)
    if match:
        return _iso_seconds(match)
    epoch = _FIELD_EPOCH.search(head)
    return float(epoch[1]) if epoch else None


def line_times(chunks: list[tuple[list[str], float]]) -> tuple[list[float], int]:
    """When each line was written at the latest, and how many lines carry a timestamp.

    `chunks` are (lines, file mtime), oldest file first. A line without a timestamp (the
    continuation of a multi-line message, a panic the runtime printed, an unknown format)
    between two timestamped lines belongs to the one before it (the first lines read, to
    the first timestamp). After a file's last timestamp it gets the file's mtime instead:
    the end of a file is its last write, so a panic printed just now after days of
    silence is dated now, not days ago. No line is later than its file's mtime: a file
    not written within the window cannot hold recent lines. When no line has a
    timestamp, each line gets its file's mtime.
    """
    dated = [([line_time(line, mtime) for line in lines], mtime) for lines, mtime in chunks]
    stamps = [min(w, m) for parsed, m in dated for w in parsed if w is not None]
    if not stamps:
        return [mtime for lines, mtime in chunks for _ in lines], 0
    times: list[float] = []
    carried = stamps[0]  # lines before the first timestamp belong to it
    for parsed, mtime in dated:
        last_stamp = max((k for k, when in enumerate(parsed) if when is not None), default=-1)
        for k, when in enumerate(parsed):
            if when is not None:
                carried = min(when, mtime)
            times.append(min(carried, mtime) if k <= last_stamp else mtime)
    return times, len(stamps)


@dataclass
class LogTail:
    """The end of one log (for the broker: across its newest rotated files)."""

    name: str  # display path
    kind: str  # "iggy" or "configured"
    files: list[dict[str, Any]] = field(default_factory=list)  # path, size, mtime
    lines: list[str] = field(default_factory=list)
    mtime: float | None = None  # newest write of the newest file
    times: list[float] = field(default_factory=list)  # per line: written at the latest
    stamped: int = 0  # lines with a timestamp of their own (0: judged by the tail alone)
    resource_line: str = ""


@dataclass
class LogFacts:
    """Log tails plus whatever could not be read."""

    tails: list[LogTail] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    unmatched: list[str] = field(default_factory=list)  # configured globs matching nothing
    iggy_dir: str = ""
    iggy_dir_source: str = ""
    broker: list[BrokerProcess] = field(default_factory=list)
    now: float = 0.0


def read_tail_lines(path: Path, max_lines: int, max_bytes: int = TAIL_BYTES) -> list[str]:
    """The last `max_lines` lines of a regular file, reading only its last `max_bytes`."""
    lines = read_tail(path, max_bytes).splitlines()
    return [strip_ansi(line)[:MAX_LINE] for line in lines[-max_lines:]]


def _file_entry(ctx: Context, node_path: str) -> tuple[dict[str, Any], float]:
    """Size and mtime of a node file (raises OSError)."""
    st = os.stat(ctx.path(node_path))
    entry = {
        "path": node_path,
        "size": st.st_size,
        "mtime": datetime.fromtimestamp(st.st_mtime, UTC).isoformat(timespec="seconds"),
    }
    return entry, st.st_mtime


def _newest_resource_line(lines: list[str]) -> str:
    """The broker's newest periodic `CPU: ... OpenFDs: N` line among `lines`, or ''."""
    for line in reversed(lines):
        if "CPU:" in line and ("OpenFDs:" in line or "Mem:" in line):
            return line
    return ""


def _fill(tail: LogTail, chunks: list[tuple[list[str], float]]) -> None:
    """Set a tail's lines (oldest first), when each was written, and its resource line."""
    tail.lines = [line for lines, _ in chunks for line in lines]
    tail.times, tail.stamped = line_times(chunks)
    tail.resource_line = _newest_resource_line(tail.lines)


def _read_iggy(ctx: Context, facts: LogFacts, max_lines: int, max_files: int) -> None:
    """The broker's log window: the newest lines across iggy-server.log and its rotations."""
    pattern = os.path.join(facts.iggy_dir, IGGY_LOG_NAME + "*")
    found = ctx.glob(pattern)[:max_files]
    if not found:
        return
    stamped: list[tuple[float, str, dict[str, Any]]] = []
    for node_path in found:
        try:
            entry, mtime = _file_entry(ctx, node_path)
        except OSError as exc:
            facts.problems.append((node_path, exc.strerror or str(exc)))
            continue
        stamped.append((mtime, node_path, entry))
    stamped.sort(key=lambda s: s[0], reverse=True)
    if not stamped:
        return
    tail = LogTail(name=os.path.join(facts.iggy_dir, IGGY_LOG_NAME), kind="iggy")
    tail.files = [s[2] for s in stamped]
    tail.mtime = stamped[0][0]
    # Rotation is hourly: the newest file alone may hold only minutes of history.
    chunks: list[tuple[list[str], float]] = []  # oldest file first
    wanted = max_lines
    for mtime, node_path, _ in stamped[:3]:
        if wanted <= 0:
            break
        try:
            older = read_tail_lines(ctx.path(node_path), wanted)
        except OSError as exc:
            facts.problems.append((node_path, exc.strerror or str(exc)))
            continue
        chunks.insert(0, (older, mtime))
        wanted -= len(older)
    _fill(tail, chunks)
    facts.tails.append(tail)


def _read_configured(ctx: Context, facts: LogFacts, max_lines: int, max_files: int) -> None:
    """Tails of the files the config names (globs allowed)."""
    seen: set[str] = set()
    for pattern in ctx.config.checks.logs.files:
        found = ctx.glob(pattern)
        if not found:
            facts.unmatched.append(pattern)
            continue
        for node_path in found:
            if len(seen) >= max_files:
                facts.problems.append((pattern, f"more than {max_files} files; rest not read"))
                return
            if node_path in seen:
                continue
            seen.add(node_path)
            if node_path.endswith(_COMPRESSED):
                continue  # rotated and compressed: old news, and not text
            try:
                entry, mtime = _file_entry(ctx, node_path)
                lines = read_tail_lines(ctx.path(node_path), max_lines)
            except OSError as exc:
                facts.problems.append((node_path, exc.strerror or str(exc)))
                continue
            tail = LogTail(node_path, "configured", [entry], mtime=mtime)
            _fill(tail, [(lines, mtime)])
            facts.tails.append(tail)


def read_logs(ctx: Context) -> LogFacts:
    """Tails of the broker's log and of the configured files."""
    max_lines = int(ctx.thresholds["tail_lines"])
    max_files = int(ctx.thresholds["max_files"])
    facts = LogFacts(broker=find_brokers(ctx), now=time.time())
    install = discover(ctx)
    facts.iggy_dir, facts.iggy_dir_source = install.logs_dir, install.logs_dir_source
    if facts.iggy_dir:
        _read_iggy(ctx, facts, max_lines, max_files)
    _read_configured(ctx, facts, max_lines, max_files)
    return facts


def _age(seconds: float) -> str:
    """'3 h', '12 min', '2 d'."""
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 60:.0f} min"


def _iso(seconds: float) -> str:
    """`2026-11-23T10:00:00Z` for epoch seconds (the number itself when out of range)."""
    return utc_iso(seconds) or f"{seconds:.0f} s after the epoch"


#: ERROR lines in one log's window.
ERRORS = Band("errors", warn=10, fail=100)
#: Panic lines in one log's window (fail_panics 0 turns the rule off).
PANICS = Band("panics", fail=1)


@dataclass(frozen=True)
class LogWindow:
    """The time judged: the last `hours` before `now`."""

    hours: float
    now: float

    @property
    def since(self) -> float:
        """The window's start (epoch seconds)."""
        return self.now - self.hours * 3600


@dataclass
class TailCounts:
    """What one tail holds inside the window (judged) and before it (information)."""

    tail: LogTail
    window: LogWindow
    in_window: int = 0  # lines read that were written inside the window
    errors: int = 0
    warnings: int = 0
    panics: int = 0
    last_error: str = ""
    last_error_at: float | None = None
    old_errors: int = 0
    old_panics: int = 0
    last_old_error_at: float | None = None

    @property
    def reaches_back(self) -> float | None:
        """When the oldest line read was written; None when the lines have no timestamps."""
        return min(self.tail.times) if self.tail.stamped and self.tail.times else None

    @property
    def measured(self) -> str:
        """The lines judged, in words, for messages."""
        tail, hours = self.tail, f"{self.window.hours:g} h"
        read = len(tail.lines)
        if not tail.stamped:
            return f"the last {read} lines of {tail.name} (they have no timestamps)"
        oldest = self.reaches_back
        if oldest is not None and oldest > self.window.since:
            back = _age(self.window.now - oldest)
            return f"the last {read} lines of {tail.name} (reaching back {back} of the {hours})"
        return f"the last {hours} of {tail.name} ({self.in_window} of {read} lines read)"


def count_tail(tail: LogTail, window: LogWindow) -> TailCounts:
    """Count error/warn/panic lines inside the window, and errors/panics before it."""
    counts = TailCounts(tail, window)
    for line, when in zip(tail.lines, tail.times, strict=True):
        kind = classify_line(line)
        if when < window.since:
            if kind in ("error", "panic"):
                counts.old_errors += kind == "error"
                counts.old_panics += kind == "panic"
                newest = counts.last_old_error_at
                counts.last_old_error_at = when if newest is None else max(when, newest)
            continue
        counts.in_window += 1
        if kind == "warn":
            counts.warnings += 1
        elif kind in ("error", "panic"):
            counts.errors += kind == "error"
            counts.panics += kind == "panic"
            counts.last_error, counts.last_error_at = line, when
    return counts


def _how_to_read(tail: LogTail) -> str:
    """How to read a tail's errors, and what to correlate them with."""
    how = (
        f"Read the tail in raw/logs.files/ or run `grep -nE ' ERROR |panicked' {tail.name} "
        "| tail -50`; "
    )
    if tail.kind == "iggy":
        return how + (
            "for the broker, correlate with restarts, disk-full and connection errors, "
            "and raise [system.logging] level only while investigating."
        )
    return how + "decide whether the failing component affects the broker."


def _newest_error(counts: TailCounts) -> str:
    """'; newest: <line>' for a message, '' when the window has no error."""
    return f"; newest: {counts.last_error[:200]}" if counts.last_error else ""


def _panics_in_tail(counts: TailCounts, thresholds: dict[str, Any]) -> list[Finding]:
    """Panics in the window reach fail_panics: a shard or the process died."""
    if PANICS.limit(Severity.FAIL, thresholds) <= 0:
        return []  # fail_panics 0: panics are not judged
    severity = PANICS.grade(counts.panics, thresholds)
    if severity is None:
        return []
    return [
        Finding(
            severity,
            f"{counts.panics} panic(s) in {counts.measured}{_newest_error(counts)}",
            "A Rust panic kills a thread (a broker shard) or the process: save the "
            "panic message and the lines before it for the Iggy maintainers, and "
            "check that the broker restarted and serves (`curl -s "
            "http://127.0.0.1:3000/ping`). " + _how_to_read(counts.tail),
            counts.tail.name,
        )
    ]


def _errors_in_tail(counts: TailCounts, thresholds: dict[str, Any]) -> list[Finding]:
    """ERROR lines in the window reach their band (none at all is never a finding)."""
    severity = ERRORS.grade_count(counts.errors, thresholds)
    if severity is None:
        return []
    return [
        Finding(
            severity,
            f"{counts.errors} ERROR lines in {counts.measured} "
            f"({_both_ends(ERRORS, thresholds)}){_newest_error(counts)}",
            _how_to_read(counts.tail),
            counts.tail.name,
        )
    ]


def _many_warnings_in_tail(counts: TailCounts, thresholds: dict[str, Any]) -> list[Finding]:
    """Many WARN lines in the window (info_warnings; 0 turns it off): often a prelude."""
    info_w = int(thresholds["info_warnings"])
    if info_w <= 0 or counts.warnings < info_w:
        return []
    return [
        Finding(
            Severity.INFO,
            f"{counts.warnings} WARN lines in {counts.measured}",
            "Many warnings often precede errors; skim them for a repeating one.",
            counts.tail.name,
        )
    ]


def _errors_before_window(counts: TailCounts, thresholds: dict[str, Any]) -> list[Finding]:
    """Errors and panics older than the window: history, reported, not judged."""
    if not (counts.old_errors or counts.old_panics):
        return []
    tail, window = counts.tail, counts.window
    what = f"{counts.old_errors} ERROR line(s)"
    if counts.old_panics:
        what += f" and {counts.old_panics} panic(s)"
    newest = counts.last_old_error_at or window.since
    when = (
        f"the newest at {_iso(newest)} ({_age(window.now - newest)} ago)"
        if tail.stamped
        else f"the file was last written {_age(window.now - newest)} ago and its lines "
        "have no timestamps"
    )
    return [
        Finding(
            Severity.INFO,
            f"{what} in {tail.name} are older than the {window.hours:g} h window "
            f"({when}); not judged",
            "History, not the node's present state: read them only when the incident "
            f"under investigation is that old (`grep -nE ' ERROR |panicked' {tail.name}`). "
            "The window is checks.thresholds.logs.files.window_hours.",
            tail.name,
        )
    ]


_TAIL_RULES = (_panics_in_tail, _errors_in_tail, _many_warnings_in_tail, _errors_before_window)


def _tail_age(facts: LogFacts, tail: LogTail) -> float | None:
    """Seconds since the tail's newest file was written; None when unknown."""
    return facts.now - tail.mtime if tail.mtime is not None else None


def _stale_broker_log(
    facts: LogFacts, tail: LogTail, window: LogWindow, thresholds: dict[str, Any]
) -> list[Finding]:
    """The broker runs but its log has not been written for stale_minutes."""
    age = _tail_age(facts, tail)
    stale_s = float(thresholds["stale_minutes"]) * 60
    if tail.kind != "iggy" or not facts.broker or age is None or age < stale_s:
        return []
    pid = facts.broker[0].pid
    # Unwritten for longer than the window: none of its lines is judged, so say so.
    empty = (
        f"; nothing in it is from the last {window.hours:g} h, so it shows no current errors"
        if age >= window.hours * 3600
        else ""
    )
    return [
        Finding(
            Severity.INFO,
            f"{tail.name} was last written {_age(age)} ago while iggy-server (pid {pid}) "
            f"runs{empty}",
            "The broker normally logs a resource line every few seconds at info "
            "level: it may log elsewhere now ([system.logging] path, file_enabled), "
            "at a higher level, or it is stuck (`top -H -p "
            f"{pid}`, the process checks); read its journal (logs.journal) for current "
            "errors.",
            tail.name,
        )
    ]


def _unreadable_logs(facts: LogFacts) -> list[Finding]:
    """Files that could not be read, and configured globs that match nothing."""
    findings = [
        Finding(
            Severity.INFO,
            f"could not read {path}: {why}",
            "Run snapshot-agent as root (or in the group that owns the logs, e.g. adm) "
            "so the log can be judged.",
            path,
        )
        for path, why in facts.problems
    ]
    findings += [
        Finding(
            Severity.INFO,
            f"no file matches the configured log {pattern}",
            "Fix checks.logs.files in the agent's config, or remove the entry.",
            pattern,
        )
        for pattern in facts.unmatched
    ]
    return findings


def _tail_row(facts: LogFacts, counts: TailCounts) -> dict[str, Any]:
    """One log as a row of the report's table."""
    tail = counts.tail
    age = _tail_age(facts, tail)
    back = counts.reaches_back
    return {
        "log": tail.name,
        "files": len(tail.files),
        "size": sum(int(f["size"]) for f in tail.files),
        "last_write_age_s": round(age) if age is not None else None,
        "lines_read": len(tail.lines),
        "timestamped_lines": tail.stamped,
        "reaches_back_s": round(facts.now - back) if back is not None else None,
        "lines_in_window": counts.in_window,
        "errors": counts.errors,
        "warnings": counts.warnings,
        "panics": counts.panics,
        "last_error_at": _iso(counts.last_error_at)
        if tail.stamped and counts.last_error_at is not None
        else "",
        "older_errors": counts.old_errors,
        "older_panics": counts.old_panics,
        "newest_older_error_at": _iso(counts.last_old_error_at)
        if tail.stamped and counts.last_old_error_at is not None
        else "",
    }


def broker_resources(facts: LogFacts) -> dict[str, Any]:
    """The broker's newest periodic resource line and its fields; {} when none was seen."""
    resource: dict[str, Any] = {}
    for tail in facts.tails:
        if tail.kind == "iggy" and tail.resource_line:
            resource = {
                "line": tail.resource_line[:500],
                "at": line_timestamp(tail.resource_line),
                "fields": parse_resource_line(tail.resource_line),
            }
    return resource


def _summary(
    facts: LogFacts, counts: list[TailCounts], window: LogWindow, resource: dict[str, Any]
) -> str:
    """What was judged over what window, for a passing result (`resource`: broker_resources)."""
    errors = sum(c.errors for c in counts)
    old = sum(c.old_errors + c.old_panics for c in counts)
    ok = f"{len(facts.tails)} log(s) read, {errors} ERROR lines in the last {window.hours:g} h"
    if old:
        ok += f" ({old} older error/panic lines not judged)"
    for c in counts:
        if not c.tail.stamped and c.tail.lines:
            ok += f"; {c.tail.name}: lines without timestamps, judged by its last "
            ok += f"{len(c.tail.lines)} lines and its mtime"
        elif c.reaches_back is not None and c.reaches_back > window.since:
            ok += f"; {c.tail.name}: the lines read reach back {_age(window.now - c.reaches_back)}"
    if resource.get("fields", {}).get("open_fds") is not None:
        ok += f"; broker OpenFDs {resource['fields']['open_fds']}"
    return ok


def judge_logs(facts: LogFacts, thresholds: dict[str, Any]) -> Result:
    """Errors and panics of the window in each tail; older ones inform; a stale broker log."""
    window = LogWindow(float(thresholds["window_hours"]), facts.now)
    counts = [count_tail(tail, window) for tail in facts.tails]
    findings: list[Finding] = []
    for tail_counts in counts:
        findings += [f for rule in _TAIL_RULES for f in rule(tail_counts, thresholds)]
        findings += _stale_broker_log(facts, tail_counts.tail, window, thresholds)
    findings += _unreadable_logs(facts)
    data: dict[str, Any] = {
        "window_hours": window.hours,
        "logs": [_tail_row(facts, c) for c in counts],
        "files": [f for t in facts.tails for f in t.files],
        "iggy_log_dir": facts.iggy_dir,
        "iggy_log_dir_source": facts.iggy_dir_source,
        "broker_running": bool(facts.broker),
    }
    resource = broker_resources(facts)
    if resource:
        data["broker_resources"] = resource
    return Result.from_findings(findings, ok=_summary(facts, counts, window, resource), data=data)


def _artifact_name(node_path: str) -> str:
    """`tail/var/log/app.log` for /var/log/app.log."""
    return "tail/" + node_path.lstrip("/").replace("..", "__")


@check(
    id="logs.files",
    category="logs",
    title="Log file tails",
    description=(
        "Errors and panics of the last day in the tails of the broker's log and configured "
        "logs; older ones as information; staleness."
    ),
    timeout_s=10,
    thresholds={
        "tail_lines": 2000,
        "max_files": 20,
        "info_warnings": 200,
        "stale_minutes": 60,
        "window_hours": 24,
    },
    bands=(ERRORS, PANICS),
)
def logs_files(ctx: Context) -> Result:
    """Errors of the last day near the end of the broker's log and the configured logs.

    Verdicts:
    - pass: INFO lines and the broker's periodic resource line
      [test_logs_files_pass_with_resource_line]
    - pass: a quiet broker whose last 2000 lines still hold an error burst and a panic
      from three days ago (reported as information, not judged)
      [test_logs_files_errors_from_days_ago_pass_on_a_quiet_broker]
    - pass: 200 errors from three days ago and 3 in the last 24 h
      [test_logs_files_judges_only_the_errors_of_the_window]
    - pass: a log whose lines have no timestamps, not written for three days
      [test_logs_files_without_timestamps_judged_by_tail_and_mtime]
    - pass: lines stamped minutes ago in a file not written for three days (skewed clock)
      [test_logs_files_file_unwritten_in_window_holds_no_recent_lines]
    - pass: the broker runs, its log unwritten for three days, an old burst in it
      [test_logs_files_stale_broker_log_with_old_errors]
    - pass: 15 ERROR lines before a rotation, only 5 in the lines read
      [test_logs_files_window_spans_rotation]
    - pass: the broker's log unwritten for 5 h while it runs (an info note)
      [test_logs_files_stale_log_while_broker_runs]
    - warn: 12 ERROR lines in the last 24 h after 200 from three days ago
      [test_logs_files_judges_only_the_errors_of_the_window]
    - warn: 12 ERROR lines in the broker's tail [test_logs_files_verdicts]
    - warn: a recent WARN entry whose 10 continuation lines (no timestamps) are errors
      [test_logs_files_continuation_lines_belong_to_their_entry]
    - warn: a log without timestamps written a minute ago, 12 ERROR lines in its tail
      [test_logs_files_without_timestamps_judged_by_tail_and_mtime]
    - warn: 11 errors in the last 24 h of an RFC 3339 (+05:30) log, 30 older
      [test_logs_files_syslog_and_rfc3339_offset_logs]
    - fail: 150 ERROR lines, or one panic, in the broker's tail [test_logs_files_verdicts]
    - fail: a panic in the last 24 h after an old burst
      [test_logs_files_judges_only_the_errors_of_the_window]
    - fail: a panic without a timestamp printed just now, after two days of silence
      [test_logs_files_untimed_panic_after_days_of_silence_fails]
    - skipped: no broker running, no log directory configured, no log files
      [test_logs_files_skipped_without_logs]
    """
    facts = read_logs(ctx)
    if not facts.tails and not facts.problems:
        if facts.iggy_dir:
            iggy = f"{facts.iggy_dir} (from {facts.iggy_dir_source}) has no {IGGY_LOG_NAME}*"
        else:
            iggy = (
                "the Iggy log directory is unknown (no iggy-server process runs; set "
                "iggy.logs_dir or iggy.data_dir in the config)"
            )
        patterns = ctx.config.checks.logs.files
        extra = (
            f"no file matches checks.logs.files ({', '.join(patterns)})"
            if patterns
            else "checks.logs.files is empty"
        )
        return Result.skipped(f"no log files to read: {iggy}, and {extra}")
    for tail in facts.tails:
        ctx.artifact(_artifact_name(tail.name), "".join(line + "\n" for line in tail.lines))
    return judge_logs(facts, ctx.thresholds)
