"""Process checks: who uses the CPU and memory, the broker's limits, zombies, open files.

The processes themselves, the broker and the agent's own process are read by
snapshot_agent.node.processes. Everything is read from /proc through the context, so
fixture trees work the same as a live node.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from snapshot_agent.core.check import Requirements, check
from snapshot_agent.core.context import Context
from snapshot_agent.core.grading import Band
from snapshot_agent.core.printable import printable
from snapshot_agent.core.results import Finding, Result, Severity
from snapshot_agent.core.units import format_bytes
from snapshot_agent.node.processes import (
    BROKER_NAME,
    BrokerProcess,
    ProcStat,
    agent_pid,
    command_line,
    find_broker,
    read_argv,
    read_processes,
    read_stat,
    uses_io_uring,
)
from snapshot_agent.node.procfs import Limit, parse_limits, read_limits, read_mem_total

SHOWN_CMDLINE = 200  # characters of a command line shown in tables
TOP_N = 10
FD_SCAN_LIMIT = 20000  # fds whose target is read for the by-type breakdown
ZOMBIE_CONFIRM_S = 0.2  # a zombie must still be there this much later to count


def _label(name: str, pid: int) -> str:
    """'iggy-server (pid 812)'."""
    return f"{printable(name)} (pid {pid})"


# -- process.top -------------------------------------------------------------------


@dataclass
class ProcSample:
    """One process over the sampling interval; name and cmdline as shown (`printable`)."""

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
            printable(s.name),
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
            # Secrets in arguments are masked by the pipeline's filter, like all output.
            p.cmdline = printable(command_line(read_argv(ctx, p.pid)))
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


#: One process's resident memory in percent of the node's (the broker is exempt).
RSS_PERCENT = Band("rss_percent", warn=50, fail=90)


def _memory_hogs(
    facts: TopFacts, broker: ProcSample | None, thresholds: dict[str, Any]
) -> list[Finding]:
    """WARN or FAIL for each process but the broker whose RSS share reaches RSS_PERCENT."""
    mem = facts.mem_total
    findings: list[Finding] = []
    if not mem:
        return findings
    for p in sorted(facts.processes, key=lambda p: -p.rss_bytes):
        pct = p.rss_bytes / mem * 100
        severity = RSS_PERCENT.grade(pct, thresholds)
        if severity is None:
            break
        if broker is not None and p.pid == broker.pid:
            continue  # judged by memory.usage (available memory), not by its share
        findings.append(
            Finding(
                severity,
                f"{_label(p.name, p.pid)} uses {format_bytes(p.rss_bytes)} resident, "
                f"{pct:.0f}% of {format_bytes(mem)} memory "
                f"(limit {RSS_PERCENT.limit(severity, thresholds):g}%)",
                "A process other than the broker holds this much memory, which leaves "
                "little for the broker and the page cache its reads depend on. Check whether "
                "it belongs on a broker node (`ps -o pid,user,rss,cmd -p PID`); restart or "
                "move it, or cap it with a systemd `MemoryMax=` drop-in.",
                f"pid {p.pid}",
            )
        )
    return findings


def _broker_share(broker: ProcSample, mem: int, thresholds: dict[str, Any]) -> tuple[str, Finding]:
    """INFO naming the broker's CPU and memory; advice once its share reaches RSS_PERCENT."""
    pct = broker.rss_bytes / mem * 100 if mem else 0.0
    share = f" ({pct:.0f}% of memory)" if mem else ""
    line = (
        f"broker {_label(broker.name, broker.pid)}: {broker.cpu_percent:g}% CPU, "
        f"{format_bytes(broker.rss_bytes)} RSS{share}, {broker.threads} threads"
    )
    advice = (
        "Expected on a dedicated broker node (memory.usage judges the memory left "
        "available). Compare it with `[system.memory_pool] size` (default 4 GiB) and the "
        "segment cache settings in the server config, and watch for growth over time."
        if RSS_PERCENT.grade(pct, thresholds)
        else ""
    )
    return line, Finding(Severity.INFO, line, advice, f"pid {broker.pid}")


def _no_broker() -> tuple[str, Finding]:
    """INFO: no broker process runs here."""
    return "no broker process found", Finding(
        Severity.INFO,
        "no broker process found (neither the systemd unit's MainPID nor a process "
        f"named {BROKER_NAME})",
        "If the broker should run here, see the systemd.units check and "
        "`journalctl -u iggy-server -b` for why it is not running.",
        BROKER_NAME,
    )


def _top_summary(facts: TopFacts, broker_line: str) -> str:
    """The broker, then the busiest and the largest other process (the agent left out)."""
    # The headline names other processes: the agent busy taking this snapshot is no news.
    others = [p for p in facts.processes if p.pid not in facts.agent_pids]
    parts = [broker_line]
    if busiest := _top(others, "cpu"):
        parts.append(f"busiest {busiest[0].name} {busiest[0].cpu_percent:g}% CPU")
    if largest := _top(others, "rss"):
        parts.append(f"largest {largest[0].name} {format_bytes(largest[0].rss_bytes)}")
    return "; ".join(parts)


def judge_top(facts: TopFacts, thresholds: dict[str, Any]) -> Result:
    """Warn or fail on one process holding too much of memory; always name the broker.

    The broker is exempt from the thresholds: on a dedicated node it is meant to hold
    most of the memory (a 4 GiB memory pool plus caches on an 8 GiB node), and
    memory.usage judges what is left available. Its share is shown, not judged.
    """
    mem = facts.mem_total
    by_pid = {p.pid: p for p in facts.processes}
    broker = by_pid.get(facts.broker.pid) if facts.broker else None
    findings = _memory_hogs(facts, broker, thresholds)
    broker_line, about_broker = (
        _broker_share(broker, mem, thresholds) if broker is not None else _no_broker()
    )
    findings.append(about_broker)
    data = {
        "processes": len(facts.processes),
        "interval_s": facts.interval_s,
        "mem_total_bytes": mem,
        "broker": _row(broker, mem, facts) if broker else None,
        "broker_found_by": facts.broker.found_by if facts.broker else None,
        "top_cpu": [_row(p, mem, facts) for p in _top(facts.processes, "cpu")],
        "top_rss": [_row(p, mem, facts) for p in _top(facts.processes, "rss")],
    }
    return Result.from_findings(findings, ok=_top_summary(facts, broker_line), data=data)


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
    # The rss band judges every process but the broker (memory.usage covers it).
    bands=(RSS_PERCENT,),
    thresholds={"sample_s": 0.5},
    sampling_s=0.5,
)
def process_top(ctx: Context) -> Result:
    """Who uses the CPU and the memory, judged on any single process's memory share.

    Verdicts:
    - pass: the broker holding 70 % of memory on a dedicated node (its share is shown,
      memory.usage judges what is left) [test_process_top_broker_is_exempt_from_the_rss_threshold]
    - pass: no process but the broker above 50 % of memory [test_process_top_verdicts]
    - pass: no broker running (a note) [test_process_top_without_broker]
    - warn: another process holding 70 % of memory
      [test_process_top_other_process_at_70_percent_warns]
    - fail: another process holding 95 % of memory [test_process_top_verdicts]

    CPU is the difference of two /proc scans sample_s (0.5 s) apart; memory is resident
    memory at the second scan.
    """
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


#: The broker's soft nofile limit: too low below warn_nofile_below / fail_nofile_below.
NOFILE_BELOW = Band.minimum("nofile_below", warn=65536, fail=4096)
#: The soft nproc limit of the broker's user: too low below warn_nproc_below.
NPROC_BELOW = Band.minimum("nproc_below", warn=4096)


def _restart_hint(facts: LimitsFacts) -> str:
    """How a changed limit reaches the running broker."""
    return (
        f" Limits apply when the process starts: `systemctl restart {_short_unit(facts)}` "
        "afterwards (in Docker: `--ulimit nofile=65536:65536 --ulimit memlock=-1:-1`)."
    )


def _short_unit(facts: LimitsFacts) -> str:
    """The broker's unit as people type it ('iggy-server')."""
    return facts.unit.removesuffix(".service")


def _open_files_limit(facts: LimitsFacts, thresholds: dict[str, Any]) -> Finding | None:
    """WARN or FAIL: the broker may open fewer files than the NOFILE_BELOW band wants."""
    b = facts.broker
    nofile = facts.limits.get(NOFILE)
    if nofile is None:
        return Finding(
            Severity.INFO, f"{_label(b.name, b.pid)}: no 'Max open files' line in its limits"
        )
    severity = NOFILE_BELOW.grade(nofile.soft, thresholds)
    if severity is None:
        return None
    return Finding(
        severity,
        f"{_label(b.name, b.pid)} may open only {nofile.soft} files (soft limit, below "
        f"{int(NOFILE_BELOW.limit(severity, thresholds))}); every client connection and every "
        "open segment and index file takes one",
        f"`systemctl edit {_short_unit(facts)}` and add `[Service]` "
        f"`LimitNOFILE={int(NOFILE_BELOW.limit(Severity.WARN, thresholds))}` (Iggy's suggested "
        "starting point); running out shows as 'Too many open files' and refused "
        "connections." + _restart_hint(facts),
        f"/proc/{b.pid}/limits",
    )


def _memlock_limit(facts: LimitsFacts, thresholds: dict[str, Any]) -> Finding | None:
    """WARN: io_uring shards need unlimited locked memory (INFO for a pre-0.6 broker)."""
    b = facts.broker
    memlock = facts.limits.get(MEMLOCK)
    if not bool(thresholds["memlock_unlimited"]) or memlock is None or memlock.soft is None:
        return None
    message = (
        f"{_label(b.name, b.pid)} may lock only {memlock.soft // 1024} KiB of memory "
        "(soft memlock limit, not unlimited)"
    )
    remedy = (
        f"`systemctl edit {_short_unit(facts)}` and add `[Service]` `LimitMEMLOCK=infinity`: "
        "Iggy 0.6+ runs on io_uring, whose rings and registered buffers count as locked "
        "memory; too low a limit makes the shards fail to start or fall back."
        + _restart_hint(facts)
    )
    if facts.io_uring is False:
        message += (
            "; no shard-N threads, so this looks like a pre-0.6 broker that does not use io_uring"
        )
        return Finding(Severity.INFO, message, remedy, f"/proc/{b.pid}/limits")
    return Finding(Severity.WARN, message, remedy, f"/proc/{b.pid}/limits")


def _process_count_limit(facts: LimitsFacts, thresholds: dict[str, Any]) -> Finding | None:
    """WARN: the broker's user may run fewer processes and threads than NPROC_BELOW wants."""
    b = facts.broker
    nproc = facts.limits.get(NPROC)
    severity = NPROC_BELOW.grade(nproc.soft if nproc else None, thresholds)
    if nproc is None or severity is None:
        return None
    return Finding(
        severity,
        f"{_label(b.name, b.pid)} and its user may run only {nproc.soft} processes and threads "
        f"(soft nproc limit, below {int(NPROC_BELOW.limit(severity, thresholds))})",
        f"`systemctl edit {_short_unit(facts)}` and add `[Service]` "
        f"`LimitNPROC={int(NPROC_BELOW.limit(Severity.WARN, thresholds))}` (or higher): the "
        "broker runs a thread per shard plus I/O threads, and the limit counts every thread "
        "of the same user." + _restart_hint(facts),
        f"/proc/{b.pid}/limits",
    )


def _limit_rows(facts: LimitsFacts, thresholds: dict[str, Any]) -> list[dict[str, Any]]:
    """The three judged limits with what is recommended, for the table."""
    recommended = (
        (NOFILE, f">= {int(NOFILE_BELOW.limit(Severity.WARN, thresholds))}"),
        (MEMLOCK, "unlimited"),
        (NPROC, f">= {int(NPROC_BELOW.limit(Severity.WARN, thresholds))}"),
    )
    return [
        {
            "limit": key,
            "soft": _fmt_limit(lim.soft),
            "hard": _fmt_limit(lim.hard),
            "units": lim.units,
            "recommended": rec,
        }
        for key, rec in recommended
        if (lim := facts.limits.get(key)) is not None
    ]


def judge_limits(facts: LimitsFacts, thresholds: dict[str, Any]) -> Result:
    """Judge nofile, memlock and nproc of the broker against Iggy's recommendations."""
    b = facts.broker
    rules = (_open_files_limit, _memlock_limit, _process_count_limit)
    findings = [f for rule in rules if (f := rule(facts, thresholds)) is not None]
    ok = f"{_label(b.name, b.pid)}: " + ", ".join(
        f"{short} {_fmt_limit(lim.soft)}"
        for short, key in (("nofile", NOFILE), ("memlock", MEMLOCK), ("nproc", NPROC))
        if (lim := facts.limits.get(key)) is not None
    )
    data = {
        "pid": b.pid,
        "found_by": b.found_by,
        "io_uring_shards": facts.io_uring,
        "limits": _limit_rows(facts, thresholds),
    }
    return Result.from_findings(findings, ok=ok, data=data)


@check(
    id="process.limits",
    category="process",
    title="Broker resource limits",
    description="Open files, locked memory and process limits of the broker process.",
    requires=Requirements(paths=("/proc",)),
    timeout_s=5,
    bands=(NOFILE_BELOW, NPROC_BELOW),
    thresholds={"memlock_unlimited": True},
)
def process_limits(ctx: Context) -> Result:
    """The broker's nofile, memlock and nproc limits from /proc/<pid>/limits.

    Verdicts:
    - pass: nofile 65536, memlock unlimited, nproc 4096 [test_process_limits_pass]
    - pass: a pre-0.6 broker (no io_uring shards) with a small memlock: a note
      [test_process_limits_memlock_is_info_for_a_pre_io_uring_broker]
    - pass: nofile at exactly the 65536 minimum
      [test_nofile_band_is_lower_is_worse_and_strictly_below]
    - skipped: no broker process, or limits it cannot read
      [test_process_limits_skipped_without_broker]
    - warn: nofile 1024 and a 64 KiB memlock on an io_uring broker
      [test_process_limits_warn_nofile_and_memlock_on_io_uring]
    - fail: nofile below 4096 [test_process_limits_fail_on_tiny_nofile]

    The limits in force now, as the kernel applies them to the running broker.
    """
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
    """Zombies that share a parent; names as shown (`printable`)."""

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
        parent_name = printable(parent.name) if parent else "?"
        group = groups.setdefault(p.ppid, ZombieGroup(p.ppid, parent_name, 0))
        group.count += 1
        if (name := printable(p.name)) not in group.zombie_names and len(group.zombie_names) < 5:
            group.zombie_names.append(name)
    return sorted(groups.values(), key=lambda g: (-g.count, g.parent_pid))


#: Zombie processes on the node, all parents together.
ZOMBIE_COUNT = Band("count", warn=5, fail=1000, parse=int)


def _zombie_remedy(g: ZombieGroup, broker_pid: int | None, unit: str) -> str:
    """Who should reap these zombies: PID 1 (an init), the broker, or another parent."""
    if g.parent_pid == 1:
        return (
            "PID 1 is not reaping orphans: in a container, run it with an init "
            "(`docker run --init`, tini, or `shareProcessNamespace`/an init in Kubernetes)."
        )
    if broker_pid is not None and g.parent_pid == broker_pid:
        return (
            "The broker is not reaping its children; restart it in a quiet moment "
            f"(`systemctl restart {unit.removesuffix('.service')}`) and report it to the "
            "Iggy project."
        )
    return (
        f"The parent {_label(g.parent_name, g.parent_pid)} is not reaping its children "
        "(zombies hold a PID each, no memory); restart the parent "
        f"(`systemctl restart` its unit, see `systemctl status {g.parent_pid}`)."
    )


def _zombies_of(g: ZombieGroup, severity: Severity, remedy: str) -> Finding:
    """The zombies one parent leaves, at the severity of the node's total."""
    return Finding(
        severity,
        f"{g.count} zombie process(es) ({', '.join(g.zombie_names)}) left by "
        f"{_label(g.parent_name, g.parent_pid)}",
        remedy,
        f"pid {g.parent_pid}",
    )


def _pid_space_at_risk(
    groups: list[ZombieGroup],
    total: int,
    severity: Severity | None,
    remedy: str,
    thresholds: dict[str, Any],
) -> Finding | None:
    """WARN or FAIL when the node's zombies reach the ZOMBIE_COUNT band (`severity`: graded)."""
    if severity is None:
        return None
    return Finding(
        severity,
        f"{total} zombie processes (at or over {ZOMBIE_COUNT.limit(severity, thresholds)}); "
        "each holds a PID until its parent reaps it, and the PID space (kernel.pid_max) can "
        "run out",
        remedy,
        f"pid {groups[0].parent_pid}",
    )


def judge_zombies(
    groups: list[ZombieGroup],
    thresholds: dict[str, Any],
    broker_pid: int | None = None,
    unit: str = "iggy-server.service",
) -> Result:
    """Warn or fail on the number of zombies; name the parents that do not reap them."""
    total = sum(g.count for g in groups)
    graded = ZOMBIE_COUNT.grade(total, thresholds)
    severity = graded or Severity.INFO
    remedies = [_zombie_remedy(g, broker_pid, unit) for g in groups]
    findings = [_zombies_of(g, severity, r) for g, r in zip(groups, remedies, strict=True)]
    # One headline finding carries the total; the per-parent ones say who.
    remedy = remedies[0] if remedies else ""
    if headline := _pid_space_at_risk(groups, total, graded, remedy, thresholds):
        findings.insert(0, headline)
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
        ok += f", below the warning level of {ZOMBIE_COUNT.limit(Severity.WARN, thresholds)}"
    return Result.from_findings(findings, ok=ok, data=data)


@check(
    id="process.zombies",
    category="process",
    title="Zombie processes",
    description="Zombie (defunct) processes grouped by the parent that does not reap them.",
    requires=Requirements(paths=("/proc",)),
    timeout_s=5,
    bands=(ZOMBIE_COUNT,),
)
def process_zombies(ctx: Context) -> Result:
    """Count zombies and group them by parent.

    Verdicts:
    - pass: no zombies [test_process_zombies_pass_with_none]
    - pass: three zombies, each named with its parent [test_process_zombies_few_are_info]
    - pass: the agent's own finished checks, not yet reaped
      [test_process_zombies_ignores_the_agents_own_children]
    - warn: seven zombies, six from one parent that does not reap them
      [test_process_zombies_warn_grouped_by_parent]
    - fail: zombies reaching fail_count [test_process_zombies_fail]

    A zombie counts only when it is still there ZOMBIE_CONFIRM_S (0.2 s) later.
    """
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
    """Open file descriptors of one process against its soft nofile limit (name as shown)."""

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
    name = printable(stat.name) if stat else "?"
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


#: Open fds of a process in percent of its soft nofile limit.
FD_PERCENT = Band("percent", warn=80, fail=90)


def _fd_percent(u: FdUsage) -> float | None:
    """Open fds in percent of the soft limit; None when either is unknown or unlimited."""
    return u.open_fds / u.soft_limit * 100 if u.open_fds is not None and u.soft_limit else None


def _fd_row(u: FdUsage) -> dict[str, Any]:
    """One process's fd use for the table."""
    pct = _fd_percent(u)
    return {
        "role": u.role,
        "pid": u.pid,
        "name": u.name,
        "open_fds": u.open_fds,
        "soft_limit": _fmt_limit(u.soft_limit),
        "percent": round(pct, 1) if pct is not None else None,
        "by_type": ", ".join(f"{k} {v}" for k, v in u.by_type.items()),
    }


def _fd_remedy(u: FdUsage, unit: str) -> str:
    """What to do about a process near its open-file limit: the broker or the agent."""
    if u.role == "broker":
        return (
            f"Raise the limit with `systemctl edit {unit.removesuffix('.service')}` "
            "-> `[Service]` `LimitNOFILE=65536` (or more) and restart; if sockets dominate, "
            "look for clients that connect and never close; if files dominate, many partitions "
            "and segments are open at once (fewer, larger segments help)."
        )
    return (
        "The agent is leaking file descriptors or its limit is tiny: restart it "
        "(`systemctl restart snapshot-agent`) and report the by-type counts."
    )


def _fds_unreadable(u: FdUsage) -> Finding | None:
    """INFO: the process's fd directory could not be read."""
    if u.open_fds is not None:
        return None
    return Finding(
        Severity.INFO, f"{u.role} {_label(u.name, u.pid)}: {u.note}", "", f"/proc/{u.pid}/fd"
    )


def _near_fd_limit(u: FdUsage, unit: str, thresholds: dict[str, Any]) -> Finding | None:
    """WARN or FAIL when a process's open fds reach the FD_PERCENT band of its limit."""
    pct = _fd_percent(u)
    severity = FD_PERCENT.grade(pct, thresholds)
    if pct is None or severity is None:
        return None
    kinds = ", ".join(f"{v} {k}" for k, v in list(u.by_type.items())[:4])
    return Finding(
        severity,
        f"{u.role} {_label(u.name, u.pid)} has {u.open_fds} of {u.soft_limit} files open "
        f"({pct:.0f}%, at or over {FD_PERCENT.limit(severity, thresholds):g}%): {kinds}",
        _fd_remedy(u, unit),
        f"/proc/{u.pid}/fd",
    )


def _fds_summary(rows: list[dict[str, Any]], facts: FdFacts) -> str:
    """Open fds per process and the system's file handles, as one line."""
    parts = [
        f"{r['role']} {r['open_fds']}/{r['soft_limit']} fds"
        for r in rows
        if r["open_fds"] is not None
    ]
    if facts.system_allocated is not None:
        parts.append(f"system {facts.system_allocated}/{facts.system_max} file handles")
    return ", ".join(parts) or "nothing to judge"


def judge_fds(facts: FdFacts, thresholds: dict[str, Any]) -> Result:
    """Warn or fail when a process nears its open-file limit; report the system total."""
    findings: list[Finding] = []
    for u in facts.processes:
        found = _fds_unreadable(u) or _near_fd_limit(u, facts.unit, thresholds)
        if found is not None:
            findings.append(found)
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
    rows = [_fd_row(u) for u in facts.processes]
    data = {
        "processes": rows,
        "system_allocated": facts.system_allocated,
        "system_max": facts.system_max,
        "system_percent": round(sys_pct, 3) if sys_pct is not None else None,
    }
    return Result.from_findings(findings, ok=_fds_summary(rows, facts), data=data)


@check(
    id="process.fds",
    category="process",
    title="Open file descriptors",
    description="Open files of the broker and the agent against their nofile limit; system total.",
    requires=Requirements(paths=("/proc",)),
    timeout_s=8,
    bands=(FD_PERCENT,),
)
def process_fds(ctx: Context) -> Result:
    """Open fds of the broker and the agent, and the kernel's file handle table.

    Verdicts:
    - pass: the broker at 10 of 100 open files [test_process_fds_broker_verdicts]
    - pass: the system file table at 95 % is reported, not judged (sysctl.fs judges it)
      [test_process_fds_reports_the_system_table_without_judging_it]
    - skipped: nothing readable [test_process_fds_skipped_with_nothing_to_read]
    - warn: the broker at 85 % of its open-file limit [test_process_fds_broker_verdicts]
    - fail: the broker at 95 % of its open-file limit [test_process_fds_broker_verdicts]

    Open fds counted now, against the soft limit in force.
    """
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
