"""The kernel log of the recent window: journald, else dmesg, else kern.log/messages/syslog.

kernel.log and memory.oom judge its lines; security.lsm looks in it for LSM denials.
`read_kernel_log(ctx, window_hours)` returns a `KernelLog` whose `source` is '' when no
source could be read (its `attempts` then say why).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from snapshot_agent.core.commands import CommandResult
from snapshot_agent.core.context import Context
from snapshot_agent.core.tail import read_tail

#: Upper bounds that keep the checks fast on a node with a huge log.
MAX_LOG_LINES = 20000
LOG_TAIL_BYTES = 4 * 1024 * 1024
LOG_LINE_CHARS = 2000  # a single kernel line longer than this is cut
#: Characters of one log line quoted in a finding or a data table.
EXAMPLE_CHARS = 300

#: Log files tried after journald and dmesg: (path, keep only ' kernel: ' lines).
LOG_FILES = (
    ("/var/log/kern.log", False),
    ("/var/log/messages", True),
    ("/var/log/syslog", True),
)


@dataclass
class KernelLog:
    """Kernel log lines of the recent window, and where they came from."""

    lines: list[str]
    source: str  # 'journalctl', 'dmesg', '/var/log/kern.log', ... ; '' when nothing was readable
    window_hours: float
    attempts: list[str] = field(default_factory=list)  # why earlier sources were not used
    truncated: bool = False  # older lines of the window were dropped (MAX_LOG_LINES)


_ISO_TIME = re.compile(
    r"^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:[.,](\d+))?(Z|[+-]\d{2}:?\d{2})?(?=\s)"
)
_SYSLOG_TIME = re.compile(r"^([A-Z][a-z]{2}) +(\d{1,2}) (\d{2}:\d{2}:\d{2})\s")
_CTIME = re.compile(r"^\[([A-Z][a-z]{2} [A-Z][a-z]{2} +\d{1,2} \d{2}:\d{2}:\d{2} \d{4})\]")


def parse_log_time(line: str, now: datetime) -> datetime | None:
    """The timestamp a log line starts with (ISO, syslog 'Nov 23 14:04:16', dmesg -T)."""
    try:
        if match := _ISO_TIME.match(line):
            date, clock, frac, tz = match.groups()
            text = f"{date}T{clock}" + (f".{frac[:6]}" if frac else "")
            if tz and tz != "Z":
                text += tz if ":" in tz else f"{tz[:3]}:{tz[3:]}"
            elif tz == "Z":
                text += "+00:00"
            stamp = datetime.fromisoformat(text)
            return stamp if stamp.tzinfo else stamp.astimezone()
        if match := _SYSLOG_TIME.match(line):
            mon, day, clock = match.groups()
            # Traditional syslog has no year: take this year, or last year if that is ahead.
            stamp = datetime.strptime(f"{now.year} {mon} {day} {clock}", "%Y %b %d %H:%M:%S")
            stamp = stamp.astimezone()
            if stamp > now + timedelta(days=1):
                stamp = stamp.replace(year=now.year - 1)
            return stamp
        if match := _CTIME.match(line):
            return datetime.strptime(match[1], "%a %b %d %H:%M:%S %Y").astimezone()
    except ValueError:
        return None
    return None


def within_window(lines: Iterable[str], since: datetime, now: datetime) -> list[str]:
    """Lines at or after `since`; a line without a timestamp follows the line before it."""
    kept: list[str] = []
    keep = False
    for line in lines:
        stamp = parse_log_time(line, now)
        if stamp is not None:
            keep = stamp >= since
        if keep and line.strip():
            kept.append(line[:LOG_LINE_CHARS])
    return kept


def journal_lines(text: str) -> list[str]:
    """Kernel lines from `journalctl -o short-iso` output, without '-- Boot ... --' markers."""
    return [
        line[:LOG_LINE_CHARS]
        for line in text.splitlines()
        if line.strip() and not (line.startswith("-- ") and line.rstrip().endswith("--"))
    ]


def read_file_tail(ctx: Context, node_path: str, max_bytes: int = LOG_TAIL_BYTES) -> str | None:
    """The last `max_bytes` of a node file, starting at a whole line; None when unreadable."""
    try:
        return read_tail(ctx.path(node_path), max_bytes)
    except OSError:
        return None


def _failure(tool: str, res: CommandResult, why: str) -> str:
    """One `attempts` entry: the tool, why it gave nothing, and its first error line."""
    first = res.first_error_line()
    return f"{tool}: {why}" + (f" ({first})" if first else "")


def _keep_newest(log: KernelLog, lines: list[str], source: str) -> None:
    """Fill `log` with the newest MAX_LOG_LINES of `lines`, read from `source`."""
    log.lines, log.source = lines[-MAX_LOG_LINES:], source
    log.truncated = len(lines) > MAX_LOG_LINES


def _from_journal(ctx: Context, log: KernelLog, since: datetime, now: datetime) -> bool:
    """journald's kernel transport (every boot of the window, not only the current one)."""
    if not (ctx.live and shutil.which("journalctl")):
        return False
    minutes = max(1, round(log.window_hours * 60))
    argv = ["journalctl", "_TRANSPORT=kernel", "--since", f"-{minutes}min", "-o", "short-iso"]
    res = ctx.run([*argv, "--no-pager", "-q", "-n", str(MAX_LOG_LINES)], timeout_s=6)
    lines = journal_lines(res.stdout) if res.ok else []
    if lines:
        log.lines, log.source = lines, "journalctl"
        log.truncated = len(lines) >= MAX_LOG_LINES  # journalctl stopped at -n
        return True
    why = "no kernel entries in the journal" if res.ok else res.describe()
    log.attempts.append(_failure("journalctl", res, why))
    return False


def _from_dmesg(ctx: Context, log: KernelLog, since: datetime, now: datetime) -> bool:
    """The kernel ring buffer, cut to the window (it holds the current boot only)."""
    if not (ctx.live and shutil.which("dmesg")):
        return False
    # ISO time instead of -T: unambiguous and carries the UTC offset.
    res = ctx.run(["dmesg", "--time-format=iso"], timeout_s=4)
    if not res.ok:
        log.attempts.append(_failure("dmesg", res, res.describe()))
        return False
    _keep_newest(log, within_window(res.stdout.splitlines(), since, now), "dmesg")
    return True


def _from_log_files(ctx: Context, log: KernelLog, since: datetime, now: datetime) -> bool:
    """The first readable syslog file with its rotated predecessor, cut to the window."""
    for path, kernel_only in LOG_FILES:
        current = read_file_tail(ctx, path)
        if current is None:
            log.attempts.append(f"{path}: not readable")
            continue
        # The rotated file may hold the start of the window.
        previous = read_file_tail(ctx, path + ".1", LOG_TAIL_BYTES // 2) or ""
        raw = (previous + "\n" + current).splitlines()
        if kernel_only:
            raw = [line for line in raw if " kernel: " in line]
        _keep_newest(log, within_window(raw, since, now), path)
        return True
    return False


def read_kernel_log(
    ctx: Context, window_hours: float = 24.0, now: datetime | None = None
) -> KernelLog:
    """Kernel messages of the last `window_hours`: journald, else dmesg, else kern.log.

    journald is asked for `_TRANSPORT=kernel` (not `-k`, which means the current boot
    only), so an OOM or hardware error just before a crash and reboot is still seen.
    """
    now = now or datetime.now().astimezone()
    since = now - timedelta(hours=window_hours)
    log = KernelLog([], "", window_hours)
    for source in (_from_journal, _from_dmesg, _from_log_files):
        if source(ctx, log, since, now):
            break
    return log


def kernel_log_unavailable(log: KernelLog) -> str:
    """The skip reason when no kernel log source could be read."""
    return "no kernel log readable: " + "; ".join(log.attempts or ["no source tried"])
