"""The kernel log and the checks built on it: kernel.log and memory.oom.

`read_kernel_log` reads the recent window from journald, else dmesg, else kern.log;
security.lsm reads it too, for LSM denials.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fnmatch import fnmatch
from typing import Any

from snapshot_agent.core.check import check
from snapshot_agent.core.context import Context
from snapshot_agent.core.results import Finding, Result, Severity
from snapshot_agent.core.tail import read_tail
from snapshot_agent.core.units import mib_or_gib
from snapshot_agent.node.processes import BROKER_NAME, is_broker
from snapshot_agent.node.procfs import read_int

#: Upper bounds that keep the checks fast on a node with a huge log or process table.
MAX_LOG_LINES = 20000
LOG_TAIL_BYTES = 4 * 1024 * 1024
LOG_LINE_CHARS = 2000  # a single kernel line longer than this is cut
EXAMPLE_CHARS = 300
EXAMPLES_PER_CATEGORY = 3

# --------------------------------------------------------------------------------------
# The kernel log (also read by security.lsm)
# --------------------------------------------------------------------------------------


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
    if ctx.live and shutil.which("journalctl"):
        minutes = max(1, round(window_hours * 60))
        res = ctx.run(
            [
                "journalctl",
                "_TRANSPORT=kernel",
                "--since",
                f"-{minutes}min",
                "-o",
                "short-iso",
                "--no-pager",
                "-q",
                "-n",
                str(MAX_LOG_LINES),
            ],
            timeout_s=6,
        )
        lines = journal_lines(res.stdout) if res.ok else []
        if lines:
            log.lines, log.source = lines, "journalctl"
            log.truncated = len(lines) >= MAX_LOG_LINES
            return log
        log.attempts.append(
            f"journalctl: {'no kernel entries in the journal' if res.ok else res.describe()}"
            + (f" ({res.first_error_line()})" if res.first_error_line() else "")
        )
    if ctx.live and shutil.which("dmesg"):
        # ISO time instead of -T: unambiguous and carries the UTC offset.
        res = ctx.run(["dmesg", "--time-format=iso"], timeout_s=4)
        if res.ok:
            lines = within_window(res.stdout.splitlines(), since, now)
            log.lines, log.source = lines[-MAX_LOG_LINES:], "dmesg"
            log.truncated = len(lines) > MAX_LOG_LINES
            return log
        log.attempts.append(
            f"dmesg: {res.describe()}"
            + (f" ({res.first_error_line()})" if res.first_error_line() else "")
        )
    for path, kernel_only in (
        ("/var/log/kern.log", False),
        ("/var/log/messages", True),
        ("/var/log/syslog", True),
    ):
        current = read_file_tail(ctx, path)
        if current is None:
            log.attempts.append(f"{path}: not readable")
            continue
        # The rotated file may hold the start of the window.
        previous = read_file_tail(ctx, path + ".1", LOG_TAIL_BYTES // 2) or ""
        raw = (previous + "\n" + current).splitlines()
        if kernel_only:
            raw = [line for line in raw if " kernel: " in line]
        lines = within_window(raw, since, now)
        log.lines, log.source = lines[-MAX_LOG_LINES:], path
        log.truncated = len(lines) > MAX_LOG_LINES
        return log
    return log


def kernel_log_unavailable(log: KernelLog) -> str:
    """The skip reason when no kernel log source could be read."""
    return "no kernel log readable: " + "; ".join(log.attempts or ["no source tried"])


# Category -> (label, pattern); the first matching category wins, so order matters.
LOG_CATEGORIES: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    (
        "hardware_corrected",
        "corrected hardware error",
        re.compile(
            r"severity: corrected|severity=Corrected|EDAC .*\bCE\b|\bCorrected error",
            re.IGNORECASE,
        ),
    ),
    (
        "hardware",
        "hardware error (MCE/EDAC/AER)",
        re.compile(
            r"\[Hardware Error\]|Machine check|EDAC .*\bUE\b|Uncorrected|uncorrectable|"
            r"Memory failure:|PCIe Bus Error: severity=(?:Uncorrected|Fatal)"
        ),
    ),
    (
        "io",
        "I/O or filesystem error",
        re.compile(
            r"I/O error|blk_update_request|critical medium error|critical target error|"
            r"Sense Key : (?:Medium|Hardware) Error|"
            r"nvme\d*\S*: .*(?:timeout|controller is down|Device not ready|"
            r"Removing after probe failure|resetting controller)|"
            r"EXT4-fs error|remounting filesystem read-only|potential data loss|"
            r"XFS \([^)]*\): .*(?:metadata I/O error|[Cc]orruption|log I/O error|"
            r"[Ss]hut(?:ting)? down|writeback error)|"
            r"BTRFS (?:error|critical)|"
            r"ata\d+(?:\.\d+)?: (?:failed command|exception Emask)",
            re.IGNORECASE,
        ),
    ),
    ("hung_task", "hung task", re.compile(r"blocked for more than \d+ seconds")),
    (
        "lockup",
        "CPU lockup or RCU stall",
        re.compile(
            r"soft lockup|hard LOCKUP|rcu_\w+ (?:self-)?detected stall|"
            r"rcu: INFO: \w+ (?:self-)?detected stall|detected stalls on CPUs",
            re.IGNORECASE,
        ),
    ),
    ("oom", "OOM kill", re.compile(r"Killed process \d+")),
    (
        "segfault",
        "process crash (segfault/trap)",
        re.compile(r"segfault at|traps: \S+\[\d+\] (?:general protection|trap)"),
    ),
    (
        "oops",
        "kernel oops/BUG",
        re.compile(r"\bOops\b|BUG: |kernel BUG at|Kernel panic"),
    ),
)

_DEVICE_PATTERNS = (
    re.compile(r"\bdev(?:ice)?[ =]([a-z][a-z0-9]*(?:-\d+)?)"),
    re.compile(r"(?:EXT4-fs|XFS|BTRFS)(?: \w+)? \((?:device )?([a-z][\w-]*)\)"),
    re.compile(r"\b(nvme\d+(?:n\d+)?(?:p\d+)?)\b"),
    re.compile(r"\b(ata\d+(?:\.\d+)?)\b"),
    re.compile(r"\b(sd[a-z]+\d*|vd[a-z]+\d*|xvd[a-z]+\d*)\b"),
)
_CRASHED = re.compile(r"(?:traps: )?(\S+?)\[(\d+)\]:? (?:segfault at|general protection|trap)")


def devices_in(line: str) -> list[str]:
    """Block devices a kernel I/O error line names (sda, nvme0n1, dm-0, ata1.00...)."""
    found: list[str] = []
    for pattern in _DEVICE_PATTERNS:
        for name in pattern.findall(line):
            if name not in found:
                found.append(name)
    return found


@dataclass
class LogSummary:
    """Kernel log lines sorted into categories."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)  # newest last
    devices: dict[str, int] = field(default_factory=dict)  # device -> I/O error lines
    crashed: dict[str, int] = field(default_factory=dict)  # process name -> segfault lines
    ignored: int = 0  # I/O lines about ignored devices (fd0, sr0...)


def categorize(line: str) -> str | None:
    """The category of one kernel log line, or None for ordinary messages."""
    for name, _, pattern in LOG_CATEGORIES:
        if pattern.search(line):
            return name
    return None


def summarize_log(lines: Sequence[str], ignore_devices: Sequence[str] = ()) -> LogSummary:
    """Count each category and keep the newest examples, devices and crashed processes."""
    summary = LogSummary()
    for line in lines:
        category = categorize(line)
        if category is None:
            continue
        if category == "io":
            devices = devices_in(line)
            if devices and all(any(fnmatch(d, g) for g in ignore_devices) for d in devices):
                summary.ignored += 1
                continue
            for device in devices:
                summary.devices[device] = summary.devices.get(device, 0) + 1
        if category == "segfault" and (match := _CRASHED.search(line)):
            summary.crashed[match[1]] = summary.crashed.get(match[1], 0) + 1
        summary.counts[category] = summary.counts.get(category, 0) + 1
        examples = summary.examples.setdefault(category, [])
        examples.append(line.strip()[:EXAMPLE_CHARS])
        del examples[:-EXAMPLES_PER_CATEGORY]
    return summary


TAINT_FLAGS = (
    ("P", "proprietary module loaded"),
    ("F", "module force-loaded"),
    ("S", "out-of-spec system"),
    ("R", "module force-unloaded"),
    ("M", "machine check exception"),
    ("B", "bad page referenced"),
    ("U", "taint requested by user space"),
    ("D", "kernel died recently (OOPS or BUG)"),
    ("A", "ACPI table overridden"),
    ("W", "kernel warning (WARN_ON)"),
    ("C", "staging driver loaded"),
    ("I", "platform firmware workaround"),
    ("O", "out-of-tree module loaded"),
    ("E", "unsigned module loaded"),
    ("L", "soft lockup occurred"),
    ("K", "kernel live-patched"),
    ("X", "auxiliary taint"),
    ("T", "built with struct randomization"),
    ("N", "in-kernel test"),
)
#: Taint flags that mean the kernel itself went wrong since boot.
SERIOUS_TAINTS = frozenset("MBDL")


def decode_taint(value: int) -> list[tuple[str, str]]:
    """The (letter, meaning) pairs set in /proc/sys/kernel/tainted."""
    return [flag for bit, flag in enumerate(TAINT_FLAGS) if value >> bit & 1]


def _ignored_globs(thresholds: dict[str, Any]) -> list[str]:
    """The ignore_devices threshold as a list of globs."""
    return [g.strip() for g in str(thresholds.get("ignore_devices", "")).split(",") if g.strip()]


_LOG_REMEDIES = {
    "hardware": (
        "Read the details with `ras-mc-ctl --errors` (rasdaemon) or `mcelog --client`, and "
        "the BMC log (`ipmitool sel elist`); on a cloud VM stop/start the instance to move it "
        "to other hardware. Hardware errors can corrupt data silently: move the broker's "
        "partitions/replicas off this node until the hardware is checked."
    ),
    "hardware_corrected": (
        "Corrected errors (ECC, PCIe AER) are repaired, but a rising count predicts a failing "
        "DIMM or device: `ras-mc-ctl --summary` / `edac-util -v` name the DIMM; plan a "
        "replacement before it turns uncorrectable."
    ),
    "io": (
        "Check the device: `smartctl -a /dev/DEV` or `nvme smart-log /dev/DEV`, `iostat -x 1`, "
        "and whether the filesystem holding the Iggy data dir went read-only "
        "(`findmnt -o TARGET,SOURCE,OPTIONS`): the broker cannot append to segments then. "
        "Replace the disk / cloud volume, then fsck the filesystem."
    ),
    "hung_task": (
        "Tasks stuck for minutes in the kernel are almost always waiting on storage or a "
        "network filesystem: check disk latency (`iostat -x 1`), NFS/iSCSI mounts, and the "
        "stack traces after these lines in raw/kernel.log/kernel.log."
    ),
    "lockup": (
        "A CPU was stuck in the kernel. On VMs this is usually host contention (check steal "
        "time with `mpstat 1`); otherwise a kernel or driver bug: keep the stack trace from "
        "raw/kernel.log/kernel.log and update the kernel."
    ),
    "segfault": (
        "Find the crashed programs' core dumps (`coredumpctl list`) and logs; a crashing "
        "{broker} restarts (systemd/container) and its clients see disconnects: collect its "
        "log and the core for the Iggy developers."
    ),
    "oops": (
        "The kernel hit a BUG or oops and may be in an inconsistent state: keep the trace "
        "(raw/kernel.log/kernel.log), reboot at the next opportunity, and update the kernel."
    ),
}


def judge_kernel_log(
    log: KernelLog, thresholds: dict[str, Any], taint: int | None = None
) -> Result:
    """Judge hardware, I/O, lockup and crash messages of the recent kernel log."""
    summary = summarize_log(log.lines, _ignored_globs(thresholds))
    window = f"{log.source}, last {log.window_hours:g} h"
    labels = {name: label for name, label, _ in LOG_CATEGORIES}
    limits = {
        "hardware": ("hardware_fail", Severity.FAIL),
        "io": ("io_fail", Severity.FAIL),
        "hardware_corrected": ("corrected_warn", Severity.WARN),
        "hung_task": ("hung_task_warn", Severity.WARN),
        "lockup": ("lockup_warn", Severity.WARN),
        "segfault": ("segfault_warn", Severity.WARN),
        "oops": ("oops_warn", Severity.WARN),
    }
    findings: list[Finding] = []
    for category, (key, severity) in limits.items():
        count = summary.counts.get(category, 0)
        limit = float(thresholds[key])
        if count == 0 or count < limit:
            continue
        newest = summary.examples[category][-1]
        subject = "kernel log"
        message = f"{count} {labels[category]} line(s) in the kernel log ({window})"
        if category == "io" and summary.devices:
            subject = ", ".join(sorted(summary.devices))
            message += f" about {subject}"
        if category == "segfault":
            subject = ", ".join(sorted(summary.crashed)) or subject
            message += f" from {subject}"
            if any(name == BROKER_NAME or name.startswith("shard-") for name in summary.crashed):
                severity = Severity.FAIL
                message += f": {BROKER_NAME} crashed"
        message += f"; newest: {newest}"
        remedy = _LOG_REMEDIES[category].format(broker=BROKER_NAME)
        findings.append(Finding(severity, message, remedy, subject))
    if summary.counts.get("oom"):
        findings.append(
            Finding(
                Severity.INFO,
                f"{summary.counts['oom']} OOM kill(s) in the kernel log ({window}); "
                "memory.oom names the victims",
                "",
                "kernel log",
            )
        )
    taints = decode_taint(taint) if taint else []
    if taints:
        serious = [f"{c} ({m})" for c, m in taints if c in SERIOUS_TAINTS]
        if serious:
            findings.append(
                Finding(
                    Severity.WARN,
                    "the kernel is tainted since boot: " + ", ".join(serious),
                    "Something went wrong inside the kernel since it booted, even if the log "
                    "lines have rotated away: look for the first trace with `journalctl -k -b` "
                    "and reboot into an updated kernel when you can.",
                    "/proc/sys/kernel/tainted",
                )
            )
        else:
            findings.append(
                Finding(
                    Severity.INFO,
                    "the kernel is tainted: " + ", ".join(f"{c} ({m})" for c, m in taints),
                    "",
                    "/proc/sys/kernel/tainted",
                )
            )
    examples = [
        {"category": category, "line": line}
        for category in summary.examples
        for line in summary.examples[category]
    ]
    data = {
        "source": log.source,
        "window_hours": log.window_hours,
        "lines_read": len(log.lines),
        "truncated": log.truncated,
        "counts": summary.counts,
        "io_devices": summary.devices,
        "ignored_io_lines": summary.ignored,
        "crashed_processes": summary.crashed,
        "tainted": taint,
        "taint_flags": "".join(c for c, _ in taints),
        "examples": examples,
        "not_used": log.attempts,
    }
    return Result.from_findings(
        findings,
        ok=f"no hardware, I/O, lockup or crash messages in {len(log.lines)} kernel log lines "
        f"({window})",
        data=data,
    )


@check(
    id="kernel.log",
    category="kernel",
    title="Kernel log errors",
    description="Hardware (MCE/EDAC), I/O and filesystem errors, lockups, hung tasks, segfaults "
    "and OOM kills in the recent kernel log (journald, dmesg or kern.log).",
    timeout_s=10,
    thresholds={
        "window_hours": 24,
        "hardware_fail": 1,
        "io_fail": 1,
        "corrected_warn": 10,
        "hung_task_warn": 1,
        "lockup_warn": 1,
        "segfault_warn": 1,
        "oops_warn": 1,
        "ignore_devices": "fd0,sr0",
    },
)
def kernel_log(ctx: Context) -> Result:
    """Read the recent kernel log and judge the errors in it."""
    log = read_kernel_log(ctx, float(ctx.thresholds["window_hours"]))
    if not log.source:
        return Result.skipped(kernel_log_unavailable(log))
    header = f"# kernel log from {log.source}, last {log.window_hours:g} h\n"
    ctx.artifact("kernel.log", header + "\n".join(log.lines) + ("\n" if log.lines else ""))
    taint = read_int(ctx, "/proc/sys/kernel/tainted")
    return judge_kernel_log(log, ctx.thresholds, taint)


# --------------------------------------------------------------------------------------
# OOM kills
# --------------------------------------------------------------------------------------


@dataclass
class OomKill:
    """One process the OOM killer killed, as the kernel reported it."""

    process: str
    pid: int
    time: str = ""  # the line's timestamp as logged
    cgroup: bool = False  # a memory cgroup limit, not the whole machine, ran out
    memcg: str = ""  # the cgroup whose limit was hit (oom_memcg) or the victim's task_memcg
    trigger: str = ""  # the process whose allocation invoked the OOM killer
    total_vm_kb: int | None = None
    anon_rss_kb: int | None = None
    file_rss_kb: int | None = None
    shmem_rss_kb: int | None = None
    uid: int | None = None
    oom_score_adj: int | None = None
    limit_kb: int | None = None  # the cgroup's memory limit when the kernel printed it
    line: str = ""


_KILLED = re.compile(r"Killed process (\d+) \((.*?)\)")
_KILL_FIELDS = {
    "total_vm_kb": re.compile(r"total-vm:(\d+)kB"),
    "anon_rss_kb": re.compile(r"anon-rss:(\d+)kB"),
    "file_rss_kb": re.compile(r"file-rss:(\d+)kB"),
    "shmem_rss_kb": re.compile(r"shmem-rss:(\d+)kB"),
    "uid": re.compile(r"UID:(\d+)"),
    "oom_score_adj": re.compile(r"oom_score_adj:(-?\d+)"),
}
_INVOKED = re.compile(r"(\S+) invoked oom-killer:")
_CONSTRAINT = re.compile(r"oom-kill:(constraint=\S+)")
_MEMCG_USAGE = re.compile(r"memory: usage (\d+)kB, limit (\d+)kB")
_LINE_TIME = re.compile(r"^(\S+T\S+|\[[^\]]+\]|[A-Z][a-z]{2} +\d{1,2} \d{2}:\d{2}:\d{2})")


def _log_prefix_time(line: str) -> str:
    """The timestamp a log line starts with, as text ('' when none)."""
    match = _LINE_TIME.match(line)
    return match[1].strip("[]") if match else ""


def parse_oom_kills(lines: Iterable[str]) -> list[OomKill]:
    """Every 'Killed process' report, with the context lines the kernel prints before it."""
    kills: list[OomKill] = []
    trigger, constraint, limit_kb = "", {}, None
    for line in lines:
        if match := _INVOKED.search(line):
            trigger, constraint, limit_kb = match[1], {}, None
            continue
        if match := _CONSTRAINT.search(line):
            constraint = dict(
                part.partition("=")[::2] for part in match[1].split(",") if "=" in part
            )
            continue
        if match := _MEMCG_USAGE.search(line):
            limit_kb = int(match[2])
            continue
        if not (match := _KILLED.search(line)):
            continue
        pid, name = int(match[1]), match[2]
        if constraint.get("pid") not in (None, str(pid)):
            constraint = {}
        kill = OomKill(process=name, pid=pid, time=_log_prefix_time(line), line=line.strip())
        for key, pattern in _KILL_FIELDS.items():
            if found := pattern.search(line):
                setattr(kill, key, int(found[1]))
        kill.cgroup = (
            "Memory cgroup out of memory" in line
            or constraint.get("constraint") == "CONSTRAINT_MEMCG"
        )
        kill.memcg = constraint.get("oom_memcg") or constraint.get("task_memcg", "")
        kill.trigger = trigger
        kill.limit_kb = limit_kb if kill.cgroup else None
        kills.append(kill)
        trigger, constraint, limit_kb = "", {}, None
    return kills


def oom_report_lines(lines: Iterable[str], cap: int = 5000) -> list[str]:
    """The lines of every OOM report (from 'invoked oom-killer' to 'Killed process')."""
    out: list[str] = []
    inside = False
    for line in lines:
        if "invoked oom-killer" in line:
            inside = True
        if inside or "Killed process" in line or "oom_reaper" in line:
            out.append(line)
        if "Killed process" in line:
            inside = False
            out.append("")
    return out[-cap:]


def _mib(kb: int | None) -> str:
    """kB as a short MiB/GiB text."""
    return "?" if kb is None else mib_or_gib(kb * 1024)


def judge_oom(kills: Sequence[OomKill], window: str, thresholds: dict[str, Any]) -> Result:
    """The broker killed by the OOM killer fails; other victims warn."""
    findings: list[Finding] = []
    broker = [k for k in kills if is_broker(k.process)]
    others = [k for k in kills if not is_broker(k.process)]
    if broker and len(broker) >= float(thresholds["fail_broker_kills"]):
        newest = broker[-1]
        where = (
            f"its memory cgroup {newest.memcg or '?'} hit its limit"
            + (f" of {_mib(newest.limit_kb)}" if newest.limit_kb else "")
            if newest.cgroup
            else "the whole node ran out of memory"
        )
        findings.append(
            Finding(
                Severity.FAIL,
                f"{BROKER_NAME} was OOM-killed {len(broker)} time(s) ({window}); newest: pid "
                f"{newest.pid} at {newest.time or '?'}, anon-rss {_mib(newest.anon_rss_kb)}, "
                f"total-vm {_mib(newest.total_vm_kb)}: {where}",
                (
                    "Raise the cgroup limit above the broker's working set (systemd "
                    "`MemoryMax=` in a drop-in, the container's --memory / Kubernetes "
                    "resources.limits.memory), or shrink the broker: [system.memory_pool] size "
                    "(default 4 GiB) and the caches count against it."
                    if newest.cgroup
                    else "Find the other large processes in the OOM report "
                    "(raw/memory.oom/oom.txt lists every task's RSS) and move them off the "
                    "node or add RAM; protect the broker with `OOMScoreAdjust=-500` in a "
                    "systemd drop-in, and size [system.memory_pool] to leave room for the "
                    "page cache."
                )
                + " Clients were disconnected and unflushed messages may need to be re-sent.",
                f"{BROKER_NAME} pid {newest.pid}",
            )
        )
    if others and len(others) >= float(thresholds["warn_kills"]):
        names: dict[str, int] = {}
        for kill in others:
            names[kill.process] = names.get(kill.process, 0) + 1
        listed = ", ".join(f"{n} x{c}" if c > 1 else n for n, c in sorted(names.items()))
        cgroup = sum(1 for k in others if k.cgroup)
        newest = others[-1]
        findings.append(
            Finding(
                Severity.WARN,
                f"{len(others)} OOM kill(s) of other processes ({window}): {listed}"
                + (f" ({cgroup} by a cgroup limit)" if cgroup else "")
                + f"; newest: {newest.process} pid {newest.pid}, anon-rss "
                f"{_mib(newest.anon_rss_kb)}",
                "Memory is short on this node: see raw/memory.oom/oom.txt for who held the "
                "memory; raise the limit of the cgroup that was hit or move the workload; the "
                "broker may be next (set `OOMScoreAdjust=-500` for iggy-server).",
                listed,
            )
        )
    data = {
        "kills": [
            {
                "time": k.time,
                "process": k.process,
                "pid": k.pid,
                "kind": "cgroup" if k.cgroup else "global",
                "memcg": k.memcg,
                "anon_rss_mib": round(k.anon_rss_kb / 1024) if k.anon_rss_kb is not None else None,
                "total_vm_mib": round(k.total_vm_kb / 1024) if k.total_vm_kb is not None else None,
                "limit_mib": round(k.limit_kb / 1024) if k.limit_kb is not None else None,
                "trigger": k.trigger,
            }
            for k in kills[-50:]
        ],
        "total": len(kills),
        "broker_kills": len(broker),
    }
    return Result.from_findings(findings, ok=f"no OOM kills ({window})", data=data)


@check(
    id="memory.oom",
    category="memory",
    title="OOM kills",
    description="Processes the kernel's OOM killer killed recently (global and cgroup), "
    "with their memory; fails when it was the broker.",
    timeout_s=10,
    thresholds={"window_hours": 24, "fail_broker_kills": 1, "warn_kills": 1},
)
def memory_oom(ctx: Context) -> Result:
    """OOM kills from the kernel log; the broker as victim fails."""
    log = read_kernel_log(ctx, float(ctx.thresholds["window_hours"]))
    if not log.source:
        return Result.skipped(kernel_log_unavailable(log))
    if report := oom_report_lines(log.lines):
        ctx.artifact("oom.txt", "\n".join(report) + "\n")
    window = f"{log.source}, last {log.window_hours:g} h"
    result = judge_oom(parse_oom_kills(log.lines), window, ctx.thresholds)
    result.data["source"] = log.source
    return result
