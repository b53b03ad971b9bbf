"""Process checks: who uses the CPU and memory, the broker's limits, zombies, open files.

The processes themselves, the broker and the agent's own process are read by
snapshot_agent.processes. Everything is read from /proc through the context, so
fixture trees work the same as a live node.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from snapshot_agent.core.check import Requirements, check
from snapshot_agent.core.context import Context
from snapshot_agent.core.results import Finding, Result, Severity
from snapshot_agent.node.processes import (
    BROKER_NAME,
    BrokerProcess,
    ProcStat,
    agent_pid,
    find_broker,
    read_argv,
    read_processes,
    read_stat,
    uses_io_uring,
)
from snapshot_agent.node.procfs import read_mem_total

SHOWN_CMDLINE = 200  # characters of a command line shown in tables
MASK = "***"
#: Option names whose values are masked in the command lines the report keeps.
SECRET_OPTION = re.compile(r"pass|secret|token|key|auth|credential", re.IGNORECASE)
#: scheme://user:password@host: the password part (up to the last @ of the argument).
URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)(\S*)(@)")
TOP_N = 10
FD_SCAN_LIMIT = 20000  # fds whose target is read for the by-type breakdown
ZOMBIE_CONFIRM_S = 0.2  # a zombie must still be there this much later to count


@dataclass(frozen=True)
class Limit:
    """One row of /proc/<pid>/limits; None means unlimited."""

    soft: int | None
    hard: int | None
    units: str


# -- reading /proc -----------------------------------------------------------------


def parse_limits(text: str) -> dict[str, Limit]:
    """Parse /proc/<pid>/limits into {'Max open files': Limit(soft, hard, units)}."""
    out: dict[str, Limit] = {}
    for line in text.splitlines():
        # Names contain single spaces; columns are separated by two or more.
        m = re.match(r"^(Max [A-Za-z ]+?)\s{2,}(\S+)\s+(\S+)\s*(\S*)\s*$", line)
        if not m:
            continue
        try:
            out[m.group(1)] = Limit(_limit_value(m.group(2)), _limit_value(m.group(3)), m.group(4))
        except ValueError:
            continue  # a garbled line is left out, not guessed at
    return out


def _limit_value(text: str) -> int | None:
    """'unlimited' -> None, digits -> int; anything else raises ValueError."""
    if text == "unlimited":
        return None
    if not text.isdigit():
        raise ValueError(text)
    return int(text)


def read_limits(ctx: Context, pid: int) -> dict[str, Limit] | None:
    """The resource limits of `pid`, or None when /proc/<pid>/limits cannot be read."""
    text = ctx.read_optional(f"/proc/{pid}/limits", 16384)
    return parse_limits(text) if text is not None else None


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _label(name: str, pid: int) -> str:
    """'iggy-server (pid 812)'."""
    return f"{name} (pid {pid})"


def mask_argv(argv: tuple[str, ...] | list[str]) -> str:
    """A command line for the report with the values of secret-looking options masked.

    argv[0] and option names stay; the value of an option whose name contains pass,
    secret, token, key, auth or credential becomes ***, in `--opt=value`,
    `--opt value` and `NAME=value` forms (case-insensitive), and the password of any
    `scheme://user:password@host` too. A title rewritten into one argument
    (setproctitle) is split on whitespace first. The central redaction pass is not
    built yet; this keeps secrets passed as arguments out of the archive meanwhile.
    """
    if not argv:
        return ""
    first, *rest = argv
    if any(c.isspace() for c in first):
        first, *head = first.split()
        rest = head + rest
    out = [URL_PASSWORD.sub(rf"\1{MASK}\3", first)]
    mask_next = False
    for arg in rest:
        if mask_next and not arg.startswith("--"):  # `--auth --verbose`: a flag, no value
            mask_next = False
            out.append(MASK)
            continue
        mask_next = False
        name, eq, _ = arg.partition("=")
        if eq and SECRET_OPTION.search(name):
            out.append(f"{name}={MASK}")
            continue
        if arg.startswith("-") and not eq and SECRET_OPTION.search(arg):
            mask_next = True  # `--password value`: the next argument is the value
        out.append(URL_PASSWORD.sub(rf"\1{MASK}\3", arg))
    return " ".join(out)


# -- process.top -------------------------------------------------------------------


@dataclass
class ProcSample:
    """One process over the sampling interval."""

    pid: int
    ppid: int
    name: str
    state: str
    cpu_percent: float  # of one core, like top
    rss_bytes: int
    threads: int
    cmdline: str = ""


@dataclass
class TopFacts:
    """Processes sampled over an interval, the memory size and the broker."""

    processes: list[ProcSample]
    mem_total: int
    interval_s: float
    broker: BrokerProcess | None = None
    agent_pids: set[int] = field(default_factory=set)  # the agent and its check children


def cpu_percents(
    before: dict[int, ProcStat], after: dict[int, ProcStat], elapsed_s: float, clk_tck: int
) -> dict[int, float]:
    """Per-process CPU use between two /proc scans, in percent of one core."""
    out: dict[int, float] = {}
    if elapsed_s <= 0:
        return out
    for pid, now in after.items():
        then = before.get(pid)
        # A pid reused by a new process is not the same process: it starts from 0.
        if then is None or then.start_ticks != now.start_ticks:
            continue
        out[pid] = max(0.0, (now.ticks - then.ticks) / clk_tck / elapsed_s * 100)
    return out


def read_top(ctx: Context, interval_s: float) -> TopFacts:
    """Scan /proc twice `interval_s` apart; CPU from the difference, RSS from the second."""
    page = os.sysconf("SC_PAGE_SIZE")
    clk_tck = os.sysconf("SC_CLK_TCK")
    before = read_processes(ctx)
    start = time.monotonic()
    time.sleep(max(0.0, min(interval_s, ctx.remaining() / 4)))
    after = read_processes(ctx)
    elapsed = time.monotonic() - start
    cpu = cpu_percents(before, after, elapsed, clk_tck)
    samples = [
        ProcSample(
            s.pid,
            s.ppid,
            s.name,
            s.state,
            round(cpu.get(s.pid, 0.0), 1),
            s.rss_pages * page,
            s.threads,
        )
        for s in after.values()
    ]
    broker = find_broker(ctx)
    shown = {p.pid for p in _top(samples, "cpu")} | {p.pid for p in _top(samples, "rss")}
    if broker:
        shown.add(broker.pid)
    for p in samples:
        if p.pid in shown:
            p.cmdline = mask_argv(read_argv(ctx, p.pid))
    agent = agent_pid(ctx)
    agent_pids = {p.pid for p in samples if agent is not None and agent in (p.pid, p.ppid)}
    return TopFacts(samples, read_mem_total(ctx) or 0, round(elapsed, 3), broker, agent_pids)


def _top(samples: list[ProcSample], key: str) -> list[ProcSample]:
    """The TOP_N busiest (key='cpu') or largest (key='rss') processes."""
    if key == "cpu":
        return sorted(samples, key=lambda p: (-p.cpu_percent, -p.rss_bytes, p.pid))[:TOP_N]
    return sorted(samples, key=lambda p: (-p.rss_bytes, -p.cpu_percent, p.pid))[:TOP_N]


def _row(p: ProcSample, mem_total: int, facts: TopFacts | None = None) -> dict[str, Any]:
    """A table row for the report; `role` marks the broker and the agent itself."""
    role = ""
    if facts is not None and facts.broker is not None and p.pid == facts.broker.pid:
        role = "broker"
    elif facts is not None and p.pid in facts.agent_pids:
        role = "agent"
    return {
        "pid": p.pid,
        "name": p.name,
        "role": role,
        "cpu_percent": p.cpu_percent,
        "rss": format_bytes(p.rss_bytes),
        "rss_bytes": p.rss_bytes,
        "mem_percent": round(p.rss_bytes / mem_total * 100, 1) if mem_total else None,
        "threads": p.threads,
        "command": p.cmdline[:SHOWN_CMDLINE] or f"[{p.name}]",
    }


def judge_top(facts: TopFacts, thresholds: dict[str, Any]) -> Result:
    """Warn or fail on one process holding too much of memory; always name the broker.

    The broker is exempt from the thresholds: on a dedicated node it is meant to hold
    most of the memory (a 4 GiB memory pool plus caches on an 8 GiB node), and
    memory.usage judges what is left available. Its share is shown, not judged.
    """
    warn, fail = float(thresholds["warn_rss_percent"]), float(thresholds["fail_rss_percent"])
    mem = facts.mem_total
    findings: list[Finding] = []
    by_pid = {p.pid: p for p in facts.processes}
    broker = by_pid.get(facts.broker.pid) if facts.broker else None
    if mem:
        for p in sorted(facts.processes, key=lambda p: -p.rss_bytes):
            pct = p.rss_bytes / mem * 100
            if pct < warn:
                break
            if broker is not None and p.pid == broker.pid:
                continue  # judged by memory.usage (available memory), not by its share
            severity = Severity.FAIL if pct >= fail else Severity.WARN
            limit = fail if severity == Severity.FAIL else warn
            remedy = (
                "A process other than the broker holds this much memory, which leaves "
                "little for the broker and the page cache its reads depend on. Check whether "
                "it belongs on a broker node (`ps -o pid,user,rss,cmd -p PID`); restart or "
                "move it, or cap it with a systemd `MemoryMax=` drop-in."
            )
            findings.append(
                Finding(
                    severity,
                    f"{_label(p.name, p.pid)} uses {format_bytes(p.rss_bytes)} resident, "
                    f"{pct:.0f}% of {format_bytes(mem)} memory (limit {limit:g}%)",
                    remedy,
                    f"pid {p.pid}",
                )
            )
    if broker is not None:
        pct = broker.rss_bytes / mem * 100 if mem else 0.0
        share = f" ({pct:.0f}% of memory)" if mem else ""
        broker_line = (
            f"broker {_label(broker.name, broker.pid)}: {broker.cpu_percent:g}% CPU, "
            f"{format_bytes(broker.rss_bytes)} RSS{share}, {broker.threads} threads"
        )
        advice = (
            "Expected on a dedicated broker node (memory.usage judges the memory left "
            "available). Compare it with `[system.memory_pool] size` (default 4 GiB) and the "
            "segment cache settings in the server config, and watch for growth over time."
            if pct >= warn
            else ""
        )
        findings.append(Finding(Severity.INFO, broker_line, advice, f"pid {broker.pid}"))
    else:
        broker_line = "no broker process found"
        findings.append(
            Finding(
                Severity.INFO,
                "no broker process found (neither the systemd unit's MainPID nor a process "
                f"named {BROKER_NAME})",
                "If the broker should run here, see the systemd.units check and "
                "`journalctl -u iggy-server -b` for why it is not running.",
                BROKER_NAME,
            )
        )
    top_cpu = _top(facts.processes, "cpu")
    top_rss = _top(facts.processes, "rss")
    # The headline names other processes: the agent busy taking this snapshot is no news.
    others = [p for p in facts.processes if p.pid not in facts.agent_pids]
    parts = [broker_line]
    if busiest := _top(others, "cpu"):
        parts.append(f"busiest {busiest[0].name} {busiest[0].cpu_percent:g}% CPU")
    if largest := _top(others, "rss"):
        parts.append(f"largest {largest[0].name} {format_bytes(largest[0].rss_bytes)}")
    data = {
        "processes": len(facts.processes),
        "interval_s": facts.interval_s,
        "mem_total_bytes": mem,
        "broker": _row(broker, mem, facts) if broker else None,
        "broker_found_by": facts.broker.found_by if facts.broker else None,
        "top_cpu": [_row(p, mem, facts) for p in top_cpu],
        "top_rss": [_row(p, mem, facts) for p in top_rss],
    }
    return Result.from_findings(findings, ok="; ".join(parts), data=data)


def _process_listing(facts: TopFacts) -> str:
    """A `ps`-like listing of every process, biggest RSS first, as raw evidence."""
    lines = [f"{'PID':>7} {'PPID':>7} S {'CPU%':>6} {'RSS_KiB':>10} {'THR':>5} NAME"]
    for p in sorted(facts.processes, key=lambda p: (-p.rss_bytes, p.pid)):
        lines.append(
            f"{p.pid:>7} {p.ppid:>7} {p.state} {p.cpu_percent:>6.1f} {p.rss_bytes // 1024:>10} "
            f"{p.threads:>5} {p.name}"
        )
    return "\n".join(lines) + "\n"


@check(
    id="process.top",
    category="process",
    title="Top processes",
    description="Top 10 processes by CPU (sampled) and by resident memory; the broker's share.",
    requires=Requirements(paths=("/proc",)),
    timeout_s=5,
    # The rss thresholds judge every process but the broker (memory.usage covers it).
    thresholds={"sample_s": 0.5, "warn_rss_percent": 50, "fail_rss_percent": 90},
    sampling_s=0.5,
)
def process_top(ctx: Context) -> Result:
    """Who uses the CPU and the memory, judged on any single process's memory share."""
    facts = read_top(ctx, float(ctx.thresholds["sample_s"]))
    if not facts.processes:
        return Result.skipped("no processes readable under /proc")
    ctx.artifact("processes.txt", _process_listing(facts))
    return judge_top(facts, ctx.thresholds)


# -- process.limits ----------------------------------------------------------------

NOFILE, MEMLOCK, NPROC = "Max open files", "Max locked memory", "Max processes"


@dataclass
class LimitsFacts:
    """The broker's limits and whether it runs io_uring shards (0.6+)."""

    broker: BrokerProcess
    limits: dict[str, Limit]
    io_uring: bool | None  # True: shard-N threads seen; False: threads seen, none; None: unknown
    unit: str


def _fmt_limit(value: int | None) -> str:
    """None -> 'unlimited'."""
    return "unlimited" if value is None else str(value)


def judge_limits(facts: LimitsFacts, thresholds: dict[str, Any]) -> Result:
    """Judge nofile, memlock and nproc of the broker against Iggy's recommendations."""
    b = facts.broker
    who = _label(b.name, b.pid)
    unit = facts.unit.removesuffix(".service")
    restart = (
        f" Limits apply when the process starts: `systemctl restart {unit}` afterwards "
        "(in Docker: `--ulimit nofile=65536:65536 --ulimit memlock=-1:-1`)."
    )
    findings: list[Finding] = []
    warn_nofile = int(thresholds["warn_nofile_below"])
    fail_nofile = int(thresholds["fail_nofile_below"])
    nofile = facts.limits.get(NOFILE)
    if nofile is None:
        findings.append(Finding(Severity.INFO, f"{who}: no 'Max open files' line in its limits"))
    elif nofile.soft is not None and nofile.soft < warn_nofile:
        severity = Severity.FAIL if nofile.soft < fail_nofile else Severity.WARN
        limit = fail_nofile if severity == Severity.FAIL else warn_nofile
        findings.append(
            Finding(
                severity,
                f"{who} may open only {nofile.soft} files (soft limit, below {limit}); every "
                "client connection and every open segment and index file takes one",
                f"`systemctl edit {unit}` and add `[Service]` `LimitNOFILE={warn_nofile}` "
                "(Iggy's suggested starting point); running out shows as 'Too many open "
                "files' and refused connections." + restart,
                f"/proc/{b.pid}/limits",
            )
        )
    memlock = facts.limits.get(MEMLOCK)
    if bool(thresholds["memlock_unlimited"]) and memlock is not None and memlock.soft is not None:
        kib = memlock.soft // 1024
        message = f"{who} may lock only {kib} KiB of memory (soft memlock limit, not unlimited)"
        remedy = (
            f"`systemctl edit {unit}` and add `[Service]` `LimitMEMLOCK=infinity`: Iggy 0.6+ "
            "runs on io_uring, whose rings and registered buffers count as locked memory; "
            "too low a limit makes the shards fail to start or fall back." + restart
        )
        if facts.io_uring is False:
            findings.append(
                Finding(
                    Severity.INFO,
                    message + "; no shard-N threads, so this looks like a pre-0.6 broker "
                    "that does not use io_uring",
                    remedy,
                    f"/proc/{b.pid}/limits",
                )
            )
        else:
            findings.append(Finding(Severity.WARN, message, remedy, f"/proc/{b.pid}/limits"))
    nproc = facts.limits.get(NPROC)
    warn_nproc = int(thresholds["warn_nproc_below"])
    if nproc is not None and nproc.soft is not None and nproc.soft < warn_nproc:
        findings.append(
            Finding(
                Severity.WARN,
                f"{who} and its user may run only {nproc.soft} processes and threads "
                f"(soft nproc limit, below {warn_nproc})",
                f"`systemctl edit {unit}` and add `[Service]` `LimitNPROC={warn_nproc}` (or "
                "higher): the broker runs a thread per shard plus I/O threads, and the limit "
                "counts every thread of the same user." + restart,
                f"/proc/{b.pid}/limits",
            )
        )
    rows = [
        {
            "limit": key,
            "soft": _fmt_limit(lim.soft),
            "hard": _fmt_limit(lim.hard),
            "units": lim.units,
            "recommended": rec,
        }
        for key, rec in (
            (NOFILE, f">= {warn_nofile}"),
            (MEMLOCK, "unlimited"),
            (NPROC, f">= {warn_nproc}"),
        )
        if (lim := facts.limits.get(key)) is not None
    ]
    ok = f"{who}: " + ", ".join(
        f"{short} {_fmt_limit(lim.soft)}"
        for short, key in (("nofile", NOFILE), ("memlock", MEMLOCK), ("nproc", NPROC))
        if (lim := facts.limits.get(key)) is not None
    )
    data = {
        "pid": b.pid,
        "found_by": b.found_by,
        "io_uring_shards": facts.io_uring,
        "limits": rows,
    }
    return Result.from_findings(findings, ok=ok, data=data)


@check(
    id="process.limits",
    category="process",
    title="Broker resource limits",
    description="Open files, locked memory and process limits of the broker process.",
    requires=Requirements(paths=("/proc",)),
    timeout_s=5,
    thresholds={
        "warn_nofile_below": 65536,
        "fail_nofile_below": 4096,
        "memlock_unlimited": True,
        "warn_nproc_below": 4096,
    },
)
def process_limits(ctx: Context) -> Result:
    """The broker's nofile, memlock and nproc limits from /proc/<pid>/limits."""
    broker = find_broker(ctx)
    if broker is None:
        return Result.skipped(
            f"no broker process found (no MainPID for {ctx.config.iggy.service}, "
            f"no process named {BROKER_NAME})"
        )
    text = ctx.read_optional(f"/proc/{broker.pid}/limits", 16384)
    if text is None:
        return Result.skipped(f"cannot read /proc/{broker.pid}/limits (process gone?)")
    ctx.artifact("limits.txt", text)
    limits = parse_limits(text)
    if not limits:
        return Result.skipped(f"/proc/{broker.pid}/limits has no limit lines we understand")
    facts = LimitsFacts(broker, limits, uses_io_uring(ctx, broker.pid), ctx.config.iggy.service)
    return judge_limits(facts, ctx.thresholds)


# -- process.zombies ---------------------------------------------------------------


@dataclass
class ZombieGroup:
    """Zombies that share a parent."""

    parent_pid: int
    parent_name: str
    count: int
    zombie_names: list[str] = field(default_factory=list)


def group_zombies(table: dict[int, ProcStat]) -> list[ZombieGroup]:
    """Zombie processes grouped by parent, most zombies first."""
    groups: dict[int, ZombieGroup] = {}
    for p in table.values():
        if p.state != "Z":
            continue
        parent = table.get(p.ppid)
        group = groups.setdefault(p.ppid, ZombieGroup(p.ppid, parent.name if parent else "?", 0))
        group.count += 1
        if p.name not in group.zombie_names and len(group.zombie_names) < 5:
            group.zombie_names.append(p.name)
    return sorted(groups.values(), key=lambda g: (-g.count, g.parent_pid))


def judge_zombies(
    groups: list[ZombieGroup],
    thresholds: dict[str, Any],
    broker_pid: int | None = None,
    unit: str = "iggy-server.service",
) -> Result:
    """Warn or fail on the number of zombies; name the parents that do not reap them."""
    total = sum(g.count for g in groups)
    warn, fail = int(thresholds["warn_count"]), int(thresholds["fail_count"])
    severity = Severity.FAIL if total >= fail else Severity.WARN if total >= warn else Severity.INFO
    findings = []
    for g in groups:
        if g.parent_pid == 1:
            remedy = (
                "PID 1 is not reaping orphans: in a container, run it with an init "
                "(`docker run --init`, tini, or `shareProcessNamespace`/an init in Kubernetes)."
            )
        elif broker_pid is not None and g.parent_pid == broker_pid:
            remedy = (
                "The broker is not reaping its children; restart it in a quiet moment "
                f"(`systemctl restart {unit.removesuffix('.service')}`) and report it to the "
                "Iggy project."
            )
        else:
            remedy = (
                f"The parent {_label(g.parent_name, g.parent_pid)} is not reaping its children "
                "(zombies hold a PID each, no memory); restart the parent "
                f"(`systemctl restart` its unit, see `systemctl status {g.parent_pid}`)."
            )
        names = ", ".join(g.zombie_names)
        findings.append(
            Finding(
                severity,
                f"{g.count} zombie process(es) ({names}) left by "
                f"{_label(g.parent_name, g.parent_pid)}",
                remedy,
                f"pid {g.parent_pid}",
            )
        )
    if total >= warn:
        # One headline finding carries the total; the per-parent ones say who.
        limit = fail if severity == Severity.FAIL else warn
        findings.insert(
            0,
            Finding(
                severity,
                f"{total} zombie processes (at or over {limit}); each holds a PID until its "
                "parent reaps it, and the PID space (kernel.pid_max) can run out",
                findings[0].remediation,
                f"pid {groups[0].parent_pid}",
            ),
        )
    data = {
        "zombies": total,
        "parents": [
            {
                "parent_pid": g.parent_pid,
                "parent": g.parent_name,
                "zombies": g.count,
                "names": ", ".join(g.zombie_names),
            }
            for g in groups[:50]
        ],
    }
    ok = f"{total} zombie process(es)" if total else "no zombie processes"
    if total:
        ok += f", below the warning level of {warn}"
    return Result.from_findings(findings, ok=ok, data=data)


@check(
    id="process.zombies",
    category="process",
    title="Zombie processes",
    description="Zombie (defunct) processes grouped by the parent that does not reap them.",
    requires=Requirements(paths=("/proc",)),
    timeout_s=5,
    thresholds={"warn_count": 5, "fail_count": 1000},
)
def process_zombies(ctx: Context) -> Result:
    """Count zombies and group them by parent."""
    table = read_processes(ctx)
    if not table:
        return Result.skipped("no processes readable under /proc")
    # The agent's own finished checks are zombies until the runner reaps them: not news.
    agent = agent_pid(ctx)
    for pid in [pid for pid, p in table.items() if p.state == "Z" and p.ppid == agent]:
        del table[pid]
    broker = None
    if any(p.state == "Z" for p in table.values()):
        # A zombie lives a moment between its exit and its parent's wait(): only those
        # still there a little later count.
        time.sleep(ZOMBIE_CONFIRM_S)
        again = read_processes(ctx)
        for pid, p in list(table.items()):
            later = again.get(pid)
            if p.state == "Z" and (
                later is None or later.state != "Z" or later.start_ticks != p.start_ticks
            ):
                del table[pid]
        broker = find_broker(ctx)
    return judge_zombies(
        group_zombies(table),
        ctx.thresholds,
        broker.pid if broker else None,
        ctx.config.iggy.service,
    )


# -- process.fds -------------------------------------------------------------------


@dataclass
class FdUsage:
    """Open file descriptors of one process against its soft nofile limit."""

    role: str  # "broker" or "agent"
    pid: int
    name: str
    open_fds: int | None  # None: /proc/<pid>/fd unreadable
    soft_limit: int | None  # None: unlimited or unknown
    by_type: dict[str, int] = field(default_factory=dict)
    note: str = ""


@dataclass
class FdFacts:
    """Per-process and system-wide file descriptor use."""

    processes: list[FdUsage]
    system_allocated: int | None = None
    system_max: int | None = None
    broker_missing: bool = False
    unit: str = "iggy-server.service"


def classify_fd(target: str) -> str:
    """'socket:[123]' -> socket, 'anon_inode:[io_uring]' -> io_uring, '/x' -> file."""
    if target.startswith("socket:"):
        return "socket"
    if target.startswith("pipe:"):
        return "pipe"
    if target.startswith("anon_inode:"):
        return target.removeprefix("anon_inode:").strip("[]") or "anon_inode"
    if target.startswith("/dev/"):
        return "device"
    return "file" if target.startswith("/") else "other"


def read_fd_usage(ctx: Context, role: str, pid: int) -> FdUsage:
    """Count /proc/<pid>/fd and break the first FD_SCAN_LIMIT down by type."""
    stat = read_stat(ctx, pid)
    name = stat.name if stat else "?"
    limits = read_limits(ctx, pid) or {}
    nofile = limits.get(NOFILE)
    usage = FdUsage(role, pid, name, None, nofile.soft if nofile else None)
    fd_dir = ctx.path(f"/proc/{pid}/fd")
    types: Counter[str] = Counter()
    count = 0
    try:
        with os.scandir(fd_dir) as it:
            for entry in it:
                count += 1
                if count <= FD_SCAN_LIMIT:
                    try:
                        types[classify_fd(os.readlink(entry.path))] += 1
                    except OSError:
                        types["gone"] += 1  # closed while we looked
    except PermissionError:
        usage.note = f"cannot read /proc/{pid}/fd (permission denied; run as root)"
        return usage
    except OSError as exc:
        usage.note = f"cannot read /proc/{pid}/fd ({exc.strerror or exc})"
        return usage
    usage.open_fds = count
    usage.by_type = dict(types.most_common())
    if count > FD_SCAN_LIMIT:
        usage.note = f"types counted for the first {FD_SCAN_LIMIT} fds only"
    return usage


def parse_file_nr(text: str) -> tuple[int, int] | None:
    """/proc/sys/fs/file-nr 'allocated unused max' -> (allocated, max)."""
    parts = text.split()
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[2])


def judge_fds(facts: FdFacts, thresholds: dict[str, Any]) -> Result:
    """Warn or fail when a process nears its open-file limit; report the system total."""
    warn, fail = float(thresholds["warn_percent"]), float(thresholds["fail_percent"])
    findings: list[Finding] = []
    rows = []
    for u in facts.processes:
        who = f"{u.role} {_label(u.name, u.pid)}"
        pct = u.open_fds / u.soft_limit * 100 if u.open_fds is not None and u.soft_limit else None
        rows.append(
            {
                "role": u.role,
                "pid": u.pid,
                "name": u.name,
                "open_fds": u.open_fds,
                "soft_limit": _fmt_limit(u.soft_limit),
                "percent": round(pct, 1) if pct is not None else None,
                "by_type": ", ".join(f"{k} {v}" for k, v in u.by_type.items()),
            }
        )
        if u.open_fds is None:
            findings.append(Finding(Severity.INFO, f"{who}: {u.note}", "", f"/proc/{u.pid}/fd"))
            continue
        if pct is None or pct < warn:
            continue
        severity = Severity.FAIL if pct >= fail else Severity.WARN
        kinds = ", ".join(f"{v} {k}" for k, v in list(u.by_type.items())[:4])
        if u.role == "broker":
            remedy = (
                f"Raise the limit with `systemctl edit {facts.unit.removesuffix('.service')}` "
                "-> `[Service]` `LimitNOFILE=65536` (or more) and restart; if sockets dominate, "
                "look for clients that connect and never close; if files dominate, many partitions "
                "and segments are open at once (fewer, larger segments help)."
            )
        else:
            remedy = (
                "The agent is leaking file descriptors or its limit is tiny: restart it "
                "(`systemctl restart snapshot-agent`) and report the by-type counts."
            )
        findings.append(
            Finding(
                severity,
                f"{who} has {u.open_fds} of {u.soft_limit} files open "
                f"({pct:.0f}%, at or over {fail if severity == Severity.FAIL else warn:g}%): "
                f"{kinds}",
                remedy,
                f"/proc/{u.pid}/fd",
            )
        )
    if facts.broker_missing:
        findings.append(
            Finding(
                Severity.INFO,
                f"no broker process found (no MainPID for {facts.unit}, no process named "
                f"{BROKER_NAME}); only the agent and the system totals were checked",
            )
        )
    # The system-wide table is reported, not judged: sysctl.fs owns fs.file-nr's verdict.
    sys_pct = None
    if facts.system_allocated is not None and facts.system_max:
        sys_pct = facts.system_allocated / facts.system_max * 100
    parts = [
        f"{r['role']} {r['open_fds']}/{r['soft_limit']} fds"
        for r in rows
        if r["open_fds"] is not None
    ]
    if facts.system_allocated is not None:
        parts.append(f"system {facts.system_allocated}/{facts.system_max} file handles")
    data = {
        "processes": rows,
        "system_allocated": facts.system_allocated,
        "system_max": facts.system_max,
        "system_percent": round(sys_pct, 3) if sys_pct is not None else None,
    }
    return Result.from_findings(findings, ok=", ".join(parts) or "nothing to judge", data=data)


@check(
    id="process.fds",
    category="process",
    title="Open file descriptors",
    description="Open files of the broker and the agent against their nofile limit; system total.",
    requires=Requirements(paths=("/proc",)),
    timeout_s=8,
    thresholds={"warn_percent": 80, "fail_percent": 90},
)
def process_fds(ctx: Context) -> Result:
    """Open fds of the broker and the agent, and the kernel's file handle table."""
    facts = FdFacts([], unit=ctx.config.iggy.service)
    broker = find_broker(ctx)
    if broker is not None:
        facts.processes.append(read_fd_usage(ctx, "broker", broker.pid))
    else:
        facts.broker_missing = True
    pid = agent_pid(ctx)
    if pid is not None and (broker is None or pid != broker.pid):
        facts.processes.append(read_fd_usage(ctx, "agent", pid))
    file_nr = ctx.read_optional("/proc/sys/fs/file-nr", 256)
    if file_nr is not None and (parsed := parse_file_nr(file_nr)):
        facts.system_allocated, facts.system_max = parsed
    if not facts.processes and facts.system_allocated is None:
        return Result.skipped("no broker, no agent process and no /proc/sys/fs/file-nr to read")
    return judge_fds(facts, ctx.thresholds)
