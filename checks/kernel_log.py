"""The checks built on the kernel log: kernel.log and memory.oom.

The log itself is read by `snapshot_agent.node.kernel_log.read_kernel_log` (journald,
else dmesg, else kern.log), which security.lsm reads too, for LSM denials.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from typing import Any

from snapshot_agent.core.check import check
from snapshot_agent.core.context import Context
from snapshot_agent.core.grading import Band
from snapshot_agent.core.results import Finding, Result, Severity
from snapshot_agent.core.units import mib_or_gib
from snapshot_agent.node.kernel_log import (
    EXAMPLE_CHARS,
    KernelLog,
    kernel_log_unavailable,
    read_kernel_log,
)
from snapshot_agent.node.processes import BROKER_NAME, is_broker
from snapshot_agent.node.procfs import read_int

EXAMPLES_PER_CATEGORY = 3

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


#: Kernel log lines of one category in the window that warn or fail; hardware and I/O
#: errors fail at the first line, corrected errors warn once they pile up.
HARDWARE = Band("hardware", fail=1)
IO = Band("io", fail=1)
CORRECTED = Band("corrected", warn=10)
HUNG_TASK = Band("hung_task", warn=1)
LOCKUP = Band("lockup", warn=1)
SEGFAULT = Band("segfault", warn=1)
OOPS = Band("oops", warn=1)
#: Category -> its band, in the order findings are reported.
CATEGORY_BANDS = {
    "hardware": HARDWARE,
    "io": IO,
    "hardware_corrected": CORRECTED,
    "hung_task": HUNG_TASK,
    "lockup": LOCKUP,
    "segfault": SEGFAULT,
    "oops": OOPS,
}
_LABELS = {name: label for name, label, _ in LOG_CATEGORIES}


def _broker_crashed(summary: LogSummary) -> bool:
    """A segfault line names the broker or one of its shard threads."""
    return any(name == BROKER_NAME or name.startswith("shard-") for name in summary.crashed)


def _named(summary: LogSummary, category: str) -> tuple[str, str]:
    """(subject, message suffix): the devices of I/O errors, the programs that crashed."""
    if category == "io" and summary.devices:
        devices = ", ".join(sorted(summary.devices))
        return devices, f" about {devices}"
    if category == "segfault":
        programs = ", ".join(sorted(summary.crashed)) or "kernel log"
        return programs, f" from {programs}"
    return "kernel log", ""


def _category_lines(
    summary: LogSummary, category: str, thresholds: dict[str, Any], window: str
) -> list[Finding]:
    """One category's lines reach its band; a crash of the broker itself fails."""
    count = summary.counts.get(category, 0)
    severity = CATEGORY_BANDS[category].grade_count(count, thresholds)
    if severity is None:
        return []
    subject, named = _named(summary, category)
    message = f"{count} {_LABELS[category]} line(s) in the kernel log ({window}){named}"
    if category == "segfault" and _broker_crashed(summary):
        severity = Severity.FAIL  # not a count: the broker restarted, its clients dropped
        message += f": {BROKER_NAME} crashed"
    message += f"; newest: {summary.examples[category][-1]}"
    remedy = _LOG_REMEDIES[category].format(broker=BROKER_NAME)
    return [Finding(severity, message, remedy, subject)]


def _oom_kills_seen(summary: LogSummary, window: str) -> list[Finding]:
    """OOM kills are in the log: memory.oom judges them, this only points there."""
    if not summary.counts.get("oom"):
        return []
    return [
        Finding(
            Severity.INFO,
            f"{summary.counts['oom']} OOM kill(s) in the kernel log ({window}); "
            "memory.oom names the victims",
            "",
            "kernel log",
        )
    ]


def _kernel_tainted(taints: list[tuple[str, str]]) -> list[Finding]:
    """The kernel is tainted: machine check, bad page, oops or lockup since boot warn."""
    if not taints:
        return []
    serious = [f"{c} ({m})" for c, m in taints if c in SERIOUS_TAINTS]
    if serious:
        return [
            Finding(
                Severity.WARN,
                "the kernel is tainted since boot: " + ", ".join(serious),
                "Something went wrong inside the kernel since it booted, even if the log "
                "lines have rotated away: look for the first trace with `journalctl -k -b` "
                "and reboot into an updated kernel when you can.",
                "/proc/sys/kernel/tainted",
            )
        ]
    return [
        Finding(
            Severity.INFO,
            "the kernel is tainted: " + ", ".join(f"{c} ({m})" for c, m in taints),
            "",
            "/proc/sys/kernel/tainted",
        )
    ]


def _kernel_log_data(
    log: KernelLog, summary: LogSummary, taint: int | None, taints: list[tuple[str, str]]
) -> dict[str, Any]:
    """Counts per category, devices, crashed programs, taint and the newest examples."""
    return {
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
        "examples": [
            {"category": category, "line": line}
            for category in summary.examples
            for line in summary.examples[category]
        ],
        "not_used": log.attempts,
    }


def judge_kernel_log(
    log: KernelLog, thresholds: dict[str, Any], taint: int | None = None
) -> Result:
    """Judge hardware, I/O, lockup and crash messages of the recent kernel log."""
    summary = summarize_log(log.lines, _ignored_globs(thresholds))
    window = f"{log.source}, last {log.window_hours:g} h"
    taints = decode_taint(taint) if taint else []
    findings = [
        finding
        for category in CATEGORY_BANDS
        for finding in _category_lines(summary, category, thresholds, window)
    ]
    findings += _oom_kills_seen(summary, window) + _kernel_tainted(taints)
    return Result.from_findings(
        findings,
        ok=f"no hardware, I/O, lockup or crash messages in {len(log.lines)} kernel log lines "
        f"({window})",
        data=_kernel_log_data(log, summary, taint, taints),
    )


@check(
    id="kernel.log",
    category="kernel",
    title="Kernel log errors",
    description="Hardware (MCE/EDAC), I/O and filesystem errors, lockups, hung tasks, segfaults "
    "and OOM kills in the recent kernel log (journald, dmesg or kern.log).",
    timeout_s=10,
    thresholds={"window_hours": 24, "ignore_devices": "fd0,sr0"},
    bands=tuple(CATEGORY_BANDS.values()),
)
def kernel_log(ctx: Context) -> Result:
    """Read the recent kernel log and judge the errors in it.

    Verdicts:
    - pass: ordinary messages, and a machine check 48 h old, outside the 24 h window
      [test_kernel_log_clean]
    - pass: I/O errors only from a VM's empty floppy and CD-ROM (fd0, sr0)
      [test_kernel_log_io_errors_on_ignored_devices_pass]
    - pass: nine corrected ECC errors, below warn_corrected
      [test_kernel_log_corrected_errors_warn_on_reaching_the_band]
    - pass: OOM kills in the log (memory.oom judges those)
      [test_judge_kernel_log_reports_oom_as_info]
    - warn: another program's segfault and a soft lockup
      [test_kernel_log_segfault_and_lockup_warn]
    - warn: the kernel is tainted D (died) since boot [test_kernel_log_thresholds_and_taint]
    - fail: I/O errors on a disk, filesystem remounted read-only
      [test_kernel_log_io_error_fails]
    - fail: iggy-server segfaulted [test_kernel_log_broker_crash_fails]
    - fail: a machine check, read from /var/log/messages
      [test_kernel_log_falls_back_to_messages]
    - skipped: no journal, dmesg or kern.log to read
      [test_kernel_log_skipped_without_any_source]
    """
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


#: OOM kills of the broker in the window (fail) and of any other process (warn).
BROKER_KILLS = Band("broker_kills", fail=1)
KILLS = Band("kills", warn=1)


def _broker_oom_remedy(kill: OomKill) -> str:
    """What to change when the broker was the victim: its cgroup limit, or the node's memory."""
    if kill.cgroup:
        fix = (
            "Raise the cgroup limit above the broker's working set (systemd "
            "`MemoryMax=` in a drop-in, the container's --memory / Kubernetes "
            "resources.limits.memory), or shrink the broker: [system.memory_pool] size "
            "(default 4 GiB) and the caches count against it."
        )
    else:
        fix = (
            "Find the other large processes in the OOM report "
            "(raw/memory.oom/oom.txt lists every task's RSS) and move them off the "
            "node or add RAM; protect the broker with `OOMScoreAdjust=-500` in a "
            "systemd drop-in, and size [system.memory_pool] to leave room for the "
            "page cache."
        )
    return fix + " Clients were disconnected and unflushed messages may need to be re-sent."


def _broker_killed(broker: list[OomKill], window: str, thresholds: dict[str, Any]) -> list[Finding]:
    """The OOM killer killed the broker: a cgroup limit or the whole node ran out."""
    severity = BROKER_KILLS.grade_count(len(broker), thresholds)
    if severity is None:
        return []
    newest = broker[-1]
    where = (
        f"its memory cgroup {newest.memcg or '?'} hit its limit"
        + (f" of {_mib(newest.limit_kb)}" if newest.limit_kb else "")
        if newest.cgroup
        else "the whole node ran out of memory"
    )
    return [
        Finding(
            severity,
            f"{BROKER_NAME} was OOM-killed {len(broker)} time(s) ({window}); newest: pid "
            f"{newest.pid} at {newest.time or '?'}, anon-rss {_mib(newest.anon_rss_kb)}, "
            f"total-vm {_mib(newest.total_vm_kb)}: {where}",
            _broker_oom_remedy(newest),
            f"{BROKER_NAME} pid {newest.pid}",
        )
    ]


def _others_killed(others: list[OomKill], window: str, thresholds: dict[str, Any]) -> list[Finding]:
    """The OOM killer killed other processes: memory is short, and the broker may be next."""
    severity = KILLS.grade_count(len(others), thresholds)
    if severity is None:
        return []
    names = Counter(kill.process for kill in others)
    listed = ", ".join(f"{n} x{c}" if c > 1 else n for n, c in sorted(names.items()))
    cgroup = sum(1 for k in others if k.cgroup)
    newest = others[-1]
    return [
        Finding(
            severity,
            f"{len(others)} OOM kill(s) of other processes ({window}): {listed}"
            + (f" ({cgroup} by a cgroup limit)" if cgroup else "")
            + f"; newest: {newest.process} pid {newest.pid}, anon-rss "
            f"{_mib(newest.anon_rss_kb)}",
            "Memory is short on this node: see raw/memory.oom/oom.txt for who held the "
            "memory; raise the limit of the cgroup that was hit or move the workload; the "
            "broker may be next (set `OOMScoreAdjust=-500` for iggy-server).",
            listed,
        )
    ]


def _round_mib(kb: int | None) -> int | None:
    """kB as whole MiB, None kept."""
    return round(kb / 1024) if kb is not None else None


def _kill_row(kill: OomKill) -> dict[str, Any]:
    """One OOM kill as a row of the report's table."""
    return {
        "time": kill.time,
        "process": kill.process,
        "pid": kill.pid,
        "kind": "cgroup" if kill.cgroup else "global",
        "memcg": kill.memcg,
        "anon_rss_mib": _round_mib(kill.anon_rss_kb),
        "total_vm_mib": _round_mib(kill.total_vm_kb),
        "limit_mib": _round_mib(kill.limit_kb),
        "trigger": kill.trigger,
    }


def judge_oom(kills: Sequence[OomKill], window: str, thresholds: dict[str, Any]) -> Result:
    """The broker killed by the OOM killer fails; other victims warn."""
    broker = [k for k in kills if is_broker(k.process)]
    others = [k for k in kills if not is_broker(k.process)]
    findings = _broker_killed(broker, window, thresholds) + _others_killed(
        others, window, thresholds
    )
    data = {
        "kills": [_kill_row(k) for k in kills[-50:]],
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
    thresholds={"window_hours": 24},
    bands=(BROKER_KILLS, KILLS),
)
def memory_oom(ctx: Context) -> Result:
    """OOM kills from the kernel log; the broker as victim fails.

    Verdicts:
    - pass: no OOM kill in the window [test_memory_oom_none_passes]
    - pass: the broker was OOM-killed 30 h ago, outside the 24 h window
      [test_memory_oom_kill_outside_window_passes]
    - pass: kills below bands raised in the config [test_memory_oom_kills_bands]
    - warn: another program was OOM-killed [test_memory_oom_other_victim_warns]
    - fail: the broker was OOM-killed at its cgroup's limit
      [test_memory_oom_broker_victim_fails]
    - skipped: no journal, dmesg or kern.log to read
      [test_kernel_log_skipped_without_any_source]
    """
    log = read_kernel_log(ctx, float(ctx.thresholds["window_hours"]))
    if not log.source:
        return Result.skipped(kernel_log_unavailable(log))
    if report := oom_report_lines(log.lines):
        ctx.artifact("oom.txt", "\n".join(report) + "\n")
    window = f"{log.source}, last {log.window_hours:g} h"
    result = judge_oom(parse_oom_kills(log.lines), window, ctx.thresholds)
    result.data["source"] = log.source
    return result
