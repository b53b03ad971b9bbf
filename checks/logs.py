"""Log checks: the systemd journal's recent errors and the tails of the broker's log files."""

from __future__ import annotations

import glob
import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from snapshot_agent.core.check import Requirements, check
from snapshot_agent.core.context import Context
from snapshot_agent.core.grading import Band
from snapshot_agent.core.results import Finding, Result, Severity
from snapshot_agent.core.tail import read_tail
from snapshot_agent.node.processes import BrokerProcess, find_brokers

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: tracing's default format, which Iggy uses: `<timestamp> <LEVEL> <thread> <target>: <msg>`.
_TRACING_LEVEL = re.compile(r"^\s*(\d{4}-\d\d-\d\dT\S+)\s+(TRACE|DEBUG|INFO|WARN|ERROR)\b")
_GENERIC_ERROR = re.compile(r"\b(ERROR|ERR|CRIT|CRITICAL|FATAL|ALERT|EMERG|PANIC)\b")
_GENERIC_WARN = re.compile(r"\b(WARN|WARNING)\b")
_KV_LEVEL = re.compile(r"\blevel\"?\s*[=:]\s*\"?(error|fatal|critical|warn|warning)\b", re.I)
_PANIC = "panicked at"
_OOM_KILL = re.compile(r"Killed process (\d+) \((iggy[\w-]*)\)")
_RESOURCE_FIELD = re.compile(r"(\w+):\s*([^,]+)")
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
        when = datetime.fromtimestamp(self.time_us / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
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


@dataclass
class LogTail:
    """The end of one log (for the broker: across its newest rotated files)."""

    name: str  # display path
    kind: str  # "iggy" or "configured"
    files: list[dict[str, Any]] = field(default_factory=list)  # path, size, mtime
    lines: list[str] = field(default_factory=list)
    mtime: float | None = None  # newest write of the newest file
    errors: int = 0
    warnings: int = 0
    panics: int = 0
    last_error: str = ""
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


def iggy_log_dir(ctx: Context, broker: list[BrokerProcess]) -> tuple[str, str]:
    """Where the broker writes its log (node path) and how we know; ('', '') if unknown."""
    iggy = ctx.config.iggy
    if iggy.logs_dir:
        return iggy.logs_dir, "config iggy.logs_dir"
    if iggy.data_dir:
        return os.path.join(iggy.data_dir, "logs"), "config iggy.data_dir + /logs"
    for proc in broker:
        env = ctx.read_optional(f"/proc/{proc.pid}/environ", max_bytes=256 * 1024) or ""
        data_dir = "local_data"  # Iggy's default system.path, relative to its working dir
        logs = "logs"  # [system.logging] path, relative to the data dir
        for item in env.split("\0"):
            key, _, value = item.partition("=")
            if key in ("IGGY_SYSTEM_PATH", "IGGY_PATH") and value:
                data_dir = value
            elif key in ("IGGY_SYSTEM_LOGGING_PATH", "IGGY_LOGGING_PATH") and value:
                logs = value
        if not (proc.cwd or data_dir.startswith("/")):
            continue
        found = os.path.join(proc.cwd or "/", data_dir, logs)
        source = f"the running iggy-server (pid {proc.pid})"
        # A broker in a container sees its own mount namespace: reach it via /proc/PID/root.
        inside = f"/proc/{proc.pid}/root{found}"
        if not ctx.path(found).is_dir() and ctx.path(inside).is_dir():
            return inside, source + ", inside its container"
        return found, source
    if ctx.path("/app/local_data/logs").is_dir():
        return "/app/local_data/logs", "the official container image's default"
    return "", ""


def _file_entry(ctx: Context, node_path: str) -> tuple[dict[str, Any], float]:
    """Size and mtime of a node file (raises OSError)."""
    st = os.stat(ctx.path(node_path))
    entry = {
        "path": node_path,
        "size": st.st_size,
        "mtime": datetime.fromtimestamp(st.st_mtime, UTC).isoformat(timespec="seconds"),
    }
    return entry, st.st_mtime


def _scan(tail: LogTail) -> None:
    """Count error/warn/panic lines and find the newest resource line in the tail."""
    for line in tail.lines:
        kind = classify_line(line)
        if kind == "panic":
            tail.panics += 1
            tail.last_error = line
        elif kind == "error":
            tail.errors += 1
            tail.last_error = line
        elif kind == "warn":
            tail.warnings += 1
        if "CPU:" in line and ("OpenFDs:" in line or "Mem:" in line):
            tail.resource_line = line


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
    for _, node_path, _ in stamped[:3]:
        if len(tail.lines) >= max_lines:
            break
        try:
            older = read_tail_lines(ctx.path(node_path), max_lines - len(tail.lines))
        except OSError as exc:
            facts.problems.append((node_path, exc.strerror or str(exc)))
            continue
        tail.lines = older + tail.lines
    _scan(tail)
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
            tail = LogTail(node_path, "configured", [entry], lines, mtime)
            _scan(tail)
            facts.tails.append(tail)


def read_logs(ctx: Context) -> LogFacts:
    """Tails of the broker's log and of the configured files."""
    max_lines = int(ctx.thresholds["tail_lines"])
    max_files = int(ctx.thresholds["max_files"])
    facts = LogFacts(broker=find_brokers(ctx), now=time.time())
    facts.iggy_dir, facts.iggy_dir_source = iggy_log_dir(ctx, facts.broker)
    if facts.iggy_dir:
        _read_iggy(ctx, facts, max_lines, max_files)
    _read_configured(ctx, facts, max_lines, max_files)
    return facts


def parse_resource_line(line: str) -> dict[str, str]:
    """Fields of Iggy's periodic `CPU: ..%/..% (IggyUsage/Total), Mem: ..., OpenFDs: N` line."""
    start = line.find("CPU:")
    if start < 0:
        return {}
    return {k: v.strip() for k, v in _RESOURCE_FIELD.findall(line[start:])}


def _age(seconds: float) -> str:
    """'3 h', '12 min', '2 d'."""
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 60:.0f} min"


#: ERROR lines in one log's tail.
ERRORS = Band("errors", warn=10, fail=100)
#: Panic lines in one log's tail (fail_panics 0 turns the rule off).
PANICS = Band("panics", fail=1)


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


def _tail_window(tail: LogTail) -> str:
    """The lines judged, in words."""
    return f"the last {len(tail.lines)} lines of {tail.name}"


def _newest_error(tail: LogTail) -> str:
    """'; newest: <line>' for a message, '' when the tail has no error."""
    return f"; newest: {tail.last_error[:200]}" if tail.last_error else ""


def _panics_in_tail(tail: LogTail, thresholds: dict[str, Any]) -> list[Finding]:
    """Panics in a tail reach fail_panics: a shard or the process died."""
    if PANICS.limit(Severity.FAIL, thresholds) <= 0:
        return []  # fail_panics 0: panics are not judged
    severity = PANICS.grade(tail.panics, thresholds)
    if severity is None:
        return []
    return [
        Finding(
            severity,
            f"{tail.panics} panic(s) in {_tail_window(tail)}{_newest_error(tail)}",
            "A Rust panic kills a thread (a broker shard) or the process: save the "
            "panic message and the lines before it for the Iggy maintainers, and "
            "check that the broker restarted and serves (`curl -s "
            "http://127.0.0.1:3000/ping`). " + _how_to_read(tail),
            tail.name,
        )
    ]


def _errors_in_tail(tail: LogTail, thresholds: dict[str, Any]) -> list[Finding]:
    """ERROR lines in a tail reach their band (none at all is never a finding)."""
    severity = ERRORS.grade_count(tail.errors, thresholds)
    if severity is None:
        return []
    return [
        Finding(
            severity,
            f"{tail.errors} ERROR lines in {_tail_window(tail)} "
            f"({_both_ends(ERRORS, thresholds)}){_newest_error(tail)}",
            _how_to_read(tail),
            tail.name,
        )
    ]


def _many_warnings_in_tail(tail: LogTail, thresholds: dict[str, Any]) -> list[Finding]:
    """Many WARN lines in a tail (info_warnings; 0 turns it off): often a prelude to errors."""
    info_w = int(thresholds["info_warnings"])
    if info_w <= 0 or tail.warnings < info_w:
        return []
    return [
        Finding(
            Severity.INFO,
            f"{tail.warnings} WARN lines in {_tail_window(tail)}",
            "Many warnings often precede errors; skim them for a repeating one.",
            tail.name,
        )
    ]


def _tail_age(facts: LogFacts, tail: LogTail) -> float | None:
    """Seconds since the tail's newest file was written; None when unknown."""
    return facts.now - tail.mtime if tail.mtime is not None else None


def _stale_broker_log(facts: LogFacts, tail: LogTail, thresholds: dict[str, Any]) -> list[Finding]:
    """The broker runs but its log has not been written for stale_minutes."""
    age = _tail_age(facts, tail)
    stale_s = float(thresholds["stale_minutes"]) * 60
    if tail.kind != "iggy" or not facts.broker or age is None or age < stale_s:
        return []
    pid = facts.broker[0].pid
    return [
        Finding(
            Severity.INFO,
            f"{tail.name} was last written {_age(age)} ago while iggy-server (pid {pid}) runs",
            "The broker normally logs a resource line every few seconds at info "
            "level: it may log elsewhere now ([system.logging] path, file_enabled), "
            "at a higher level, or it is stuck (`top -H -p "
            f"{pid}`, the process checks).",
            tail.name,
        )
    ]


_TAIL_RULES = (_panics_in_tail, _errors_in_tail, _many_warnings_in_tail)


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


def _tail_row(facts: LogFacts, tail: LogTail) -> dict[str, Any]:
    """One log as a row of the report's table."""
    age = _tail_age(facts, tail)
    return {
        "log": tail.name,
        "files": len(tail.files),
        "size": sum(int(f["size"]) for f in tail.files),
        "last_write_age_s": round(age) if age is not None else None,
        "lines_read": len(tail.lines),
        "errors": tail.errors,
        "warnings": tail.warnings,
        "panics": tail.panics,
        "last_error_at": line_timestamp(tail.last_error),
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


def judge_logs(facts: LogFacts, thresholds: dict[str, Any]) -> Result:
    """Errors and panics in each tail; a stale broker log; unreadable files."""
    findings: list[Finding] = []
    for tail in facts.tails:
        findings += [f for rule in _TAIL_RULES for f in rule(tail, thresholds)]
        findings += _stale_broker_log(facts, tail, thresholds)
    findings += _unreadable_logs(facts)
    resource = broker_resources(facts)
    total_err = sum(t.errors for t in facts.tails)
    ok = f"{len(facts.tails)} log(s) read, {total_err} ERROR lines in their tails"
    if resource.get("fields", {}).get("OpenFDs"):
        ok += f"; broker OpenFDs {resource['fields']['OpenFDs']}"
    data: dict[str, Any] = {
        "logs": [_tail_row(facts, tail) for tail in facts.tails],
        "files": [f for t in facts.tails for f in t.files],
        "iggy_log_dir": facts.iggy_dir,
        "iggy_log_dir_source": facts.iggy_dir_source,
        "broker_running": bool(facts.broker),
    }
    if resource:
        data["broker_resources"] = resource
    return Result.from_findings(findings, ok=ok, data=data)


def _artifact_name(node_path: str) -> str:
    """`tail/var/log/app.log` for /var/log/app.log."""
    return "tail/" + node_path.lstrip("/").replace("..", "__")


@check(
    id="logs.files",
    category="logs",
    title="Log file tails",
    description="The tails of the broker's log and configured logs: errors, panics, staleness.",
    timeout_s=10,
    thresholds={"tail_lines": 2000, "max_files": 20, "info_warnings": 200, "stale_minutes": 60},
    bands=(ERRORS, PANICS),
)
def logs_files(ctx: Context) -> Result:
    """Errors near the end of the broker's log and of the configured log files.

    Verdicts:
    - pass: INFO lines and the broker's periodic resource line
      [test_logs_files_pass_with_resource_line]
    - pass: 15 old ERROR lines before a rotation, only 5 in the window read
      [test_logs_files_window_spans_rotation]
    - pass: the broker's log unwritten for 5 h while it runs (an info note)
      [test_logs_files_stale_log_while_broker_runs]
    - warn: 12 ERROR lines in the broker's tail [test_logs_files_verdicts]
    - fail: 150 ERROR lines, or one panic, in the broker's tail [test_logs_files_verdicts]
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
