"""CPU checks."""

from __future__ import annotations

import itertools
import math
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any

from snapshot_agent.core.check import Requirements, check
from snapshot_agent.core.context import Context
from snapshot_agent.core.grading import Band
from snapshot_agent.core.results import Finding, Result, Severity
from snapshot_agent.node.diskstats import (
    DiskActivity,
    disk_activity,
    read_block_devices,
    read_diskstats,
)
from snapshot_agent.node.mounts import read_mount_table
from snapshot_agent.node.processes import (
    STAT_LIMIT,
    BlockedTask,
    agent_pid,
    blocked_task,
    find_broker,
    parse_stat,
    process_name,
    read_processes,
    read_threads,
    scan_waits,
    uses_io_uring,
)
from snapshot_agent.node.procfs import parse_cpu_list


@dataclass(frozen=True)
class LoadFacts:
    """What /proc/loadavg and the CPU count say."""

    load1: float
    load5: float
    load15: float
    runnable: int
    threads: int
    cores: int


LOADAVG_SHOWN = 80  # characters of an unparsable /proc/loadavg quoted in the reason


def parse_loadavg(text: str) -> tuple[float, float, float, int, int] | None:
    """'0.50 0.40 0.30 1/200 999' -> (load1, load5, load15, runnable, threads); None if not that."""
    fields = text.split()
    if len(fields) < 4:
        return None
    runnable, sep, threads = fields[3].partition("/")
    try:
        loads = [float(f) for f in fields[:3]]
        counts = int(runnable), int(threads)
    except ValueError:
        return None
    if not sep or not all(math.isfinite(v) and v >= 0 for v in loads):
        return None
    return loads[0], loads[1], loads[2], counts[0], counts[1]


def read_load(ctx: Context) -> LoadFacts | str:
    """Read the load averages and the number of online CPUs; why not, when it cannot."""
    try:
        text = ctx.read_text("/proc/loadavg", 4096)
    except OSError as exc:
        return f"cannot read /proc/loadavg: {exc.strerror or exc}"
    parsed = parse_loadavg(text)
    if parsed is None:
        shown = text.strip()
        if not shown:
            return "/proc/loadavg is empty"
        if len(shown) > LOADAVG_SHOWN:
            shown = shown[:LOADAVG_SHOWN] + "..."
        return f"/proc/loadavg is not 'load1 load5 load15 running/total lastpid': {shown!r}"
    online = ctx.read_optional("/sys/devices/system/cpu/online")
    try:
        cores = parse_cpu_list(online) if online else 0
    except ValueError:
        cores = 0  # garbage: count the processors in /proc/cpuinfo instead
    if cores <= 0:
        cpuinfo = ctx.read_optional("/proc/cpuinfo") or ""
        cores = sum(1 for line in cpuinfo.splitlines() if line.startswith("processor")) or 1
    return LoadFacts(*parsed, cores)


#: The 5-minute load average divided by the online cores.
LOAD_PER_CORE = Band("per_core", warn=1.0, fail=2.0)


def judge_load(facts: LoadFacts, thresholds: dict[str, Any]) -> Result:
    """Judge the 5-minute load per core; the 1- and 15-minute values tell the trend."""
    per_core = facts.load5 / facts.cores
    trend = (
        "rising"
        if facts.load1 > facts.load15 * 1.2
        else "falling"
        if facts.load1 < facts.load15 * 0.8
        else "steady"
    )
    data = {
        "load_1m": facts.load1,
        "load_5m": facts.load5,
        "load_15m": facts.load15,
        "cores": facts.cores,
        "load_per_core_5m": round(per_core, 2),
        "runnable": facts.runnable,
        "threads": facts.threads,
        "trend": trend,
    }
    findings: list[Finding] = []
    message = (
        f"5-minute load {facts.load5:.2f} on {facts.cores} cores ({per_core:.2f} per core, {trend})"
    )
    remedy = (
        "Find what is busy with `top -H` or the process.top check; for the broker, "
        "compare its shard count ([system.sharding] cpu_allocation) with the cores, "
        "and look for I/O wait (load counts tasks blocked on disk too)."
    )
    severity = LOAD_PER_CORE.grade(per_core, thresholds)
    if severity:
        limit = LOAD_PER_CORE.limit(severity, thresholds)
        findings.append(
            Finding(
                severity, f"{message} is at or over {limit:g} per core", remedy, "/proc/loadavg"
            )
        )
    return Result.from_findings(findings, ok=message, data=data)


@check(
    id="cpu.load",
    category="cpu",
    title="CPU load",
    description="Load averages (1/5/15 min) against the number of online CPU cores.",
    requires=None,
    timeout_s=5,
    bands=(LOAD_PER_CORE,),
)
def cpu_load(ctx: Context) -> Result:
    """Load average per core, judged on the 5-minute value.

    Verdicts:
    - pass: half a task per core over five minutes [test_cpu_load_verdicts]
    - pass: a one-minute spike (a deploy, a compaction) over a quiet five minutes
      [test_cpu_load_passes_a_one_minute_spike]
    - warn: more than one runnable or blocked task per core for five minutes
      [test_cpu_load_verdicts]
    - fail: over two tasks per core for five minutes [test_cpu_load_verdicts]
    - skipped: /proc/loadavg missing or not in its format
      [test_cpu_load_garbage_loadavg_is_skipped]
    """
    facts = read_load(ctx)
    if isinstance(facts, str):
        return Result.skipped(facts)
    return judge_load(facts, ctx.thresholds)


# --- shared by cpu.usage and cpu.pressure: PSI lines, io_uring waits -------------------


@dataclass(frozen=True)
class PsiLine:
    """One `some`/`full` line of a /proc/pressure file (averages are percent of time)."""

    avg10: float
    avg60: float
    avg300: float
    total_us: int


def parse_psi(text: str) -> dict[str, PsiLine]:
    """Parse `some avg10=.. avg60=.. avg300=.. total=..` lines; malformed lines are left out."""
    out: dict[str, PsiLine] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        kind, *pairs = line.split()
        values = dict(p.partition("=")[::2] for p in pairs)
        try:
            out[kind] = PsiLine(
                float(values["avg10"]),
                float(values["avg60"]),
                float(values["avg300"]),
                int(values["total"]),
            )
        except (KeyError, ValueError):
            continue
    return out


WAITERS_SHOWN = 3  # processes named in a summary
PSI_LIMIT = 4096

#: Why iowait and I/O pressure are not taken at their word on an io_uring node.
IO_URING_IOWAIT = (
    "which Linux 6.1.39+/6.5+ counts as iowait and I/O pressure while a request is "
    "pending, even a receive on an idle socket"
)


#: A thread seen in D state is looked at again this much later: only one still there
#: counts (a short disk wait shows in /proc/diskstats anyway).
BLOCKED_RECHECK_S = 0.1
NETWORK_FS_SHOWN = 3  # network/FUSE mounts named in a summary


@dataclass(frozen=True)
class IoUringWaits:
    """Threads asleep in io_uring_enter, and what else may wait where the disks cannot tell.

    io_uring's completion wait sleeps interruptibly (S); disk, NFS, CIFS, Ceph and FUSE
    waits sleep in D. `blocked` holds user threads in D outside io_uring_enter: each can
    keep a CPU in iowait whatever /proc/diskstats says.
    """

    waiters: tuple[tuple[int, str, int], ...] = ()  # (pid, name, threads asleep in it)
    broker_pid: int | None = None  # an iggy-server with an io_uring fd or shard-N threads
    #: User threads in D state outside io_uring_enter: those still there BLOCKED_RECHECK_S
    #: later, or every one seen when a network/FUSE filesystem is mounted.
    blocked: tuple[BlockedTask, ...] = ()
    network_fs: tuple[str, ...] = ()  # 'nfs4 on /mnt/data': waits /proc/diskstats misses

    @property
    def present(self) -> bool:
        """True when iowait may count io_uring waits rather than disk waits."""
        return bool(self.waiters) or self.broker_pid is not None

    @property
    def threads(self) -> int:
        """Threads asleep in io_uring_enter."""
        return sum(n for _, _, n in self.waiters)

    def describe(self) -> str:
        """Who waits: '2 threads sleep in io_uring_enter (iggy-server pid 812)'."""
        if not self.waiters:
            return f"iggy-server (pid {self.broker_pid}) uses io_uring"
        shown = ", ".join(f"{name} pid {pid}" for pid, name, _ in self.waiters[:WAITERS_SHOWN])
        if len(self.waiters) > WAITERS_SHOWN:
            shown += f" and {len(self.waiters) - WAITERS_SHOWN} more processes"
        threads = "1 thread sleeps" if self.threads == 1 else f"{self.threads} threads sleep"
        return f"{threads} in io_uring_enter ({shown})"

    def describe_others(self) -> str:
        """The waits the disks cannot show: threads blocked in D state, network filesystems."""
        network = ", ".join(self.network_fs[:NETWORK_FS_SHOWN])
        if len(self.network_fs) > NETWORK_FS_SHOWN:
            network += f" and {len(self.network_fs) - NETWORK_FS_SHOWN} more"
        if not self.blocked:
            if not network:
                return ""
            return (
                f"{network} mounted, whose waits /proc/diskstats does not show; no thread "
                "sleeps in D state outside io_uring_enter, so none is counted"
            )
        shown = ", ".join(
            f"{t.name} tid {t.tid}" + (f" in {t.wchan}" if t.wchan else "")
            for t in self.blocked[:WAITERS_SHOWN]
        )
        if len(self.blocked) > WAITERS_SHOWN:
            shown += f" and {len(self.blocked) - WAITERS_SHOWN} more"
        many = "1 thread sleeps" if len(self.blocked) == 1 else f"{len(self.blocked)} threads sleep"
        text = f"{many} in D state outside io_uring_enter ({shown}), each counted as waiting"
        if network:
            text += f"; {network} mounted, whose waits /proc/diskstats does not show"
        return text

    def to_dict(self) -> dict[str, Any]:
        """For a check's data."""
        return {
            "threads_waiting": self.threads,
            "processes": [
                {"pid": pid, "name": name, "threads": n} for pid, name, n in self.waiters[:50]
            ],
            "broker_pid": self.broker_pid,
            "blocked_threads": [
                {"pid": t.pid, "tid": t.tid, "name": t.name, "wchan": t.wchan}
                for t in self.blocked[:50]
            ],
            "network_fs": list(self.network_fs[:50]),
        }


def read_network_fs(ctx: Context) -> tuple[str, ...]:
    """Network and FUSE filesystems mounted ('nfs4 on /mnt/data'); () when unreadable."""
    try:
        mounts, _ = read_mount_table(ctx)
    except OSError:
        return ()
    return tuple(f"{m.fstype} on {m.mountpoint}" for m in mounts if m.network)


def still_blocked(ctx: Context, seen: tuple[BlockedTask, ...]) -> tuple[BlockedTask, ...]:
    """The threads of `seen` still in D state BLOCKED_RECHECK_S later (the same threads)."""
    if not seen:
        return ()
    time.sleep(BLOCKED_RECHECK_S)
    return tuple(
        task
        for task in seen
        if (now := blocked_task(ctx, task.pid, task.tid)) and now.start_ticks == task.start_ticks
    )


def read_io_uring_waits(ctx: Context) -> IoUringWaits:
    """Who sleeps in io_uring_enter (failing that, whether the broker uses io_uring) and in D.

    Threads in D state count when they stay there BLOCKED_RECHECK_S, or all of them when
    a network or FUSE filesystem is mounted (its waits have no other witness).
    """
    scan = scan_waits(ctx)
    waiters = tuple((pid, process_name(ctx, pid), n) for pid, n in sorted(scan.io_uring.items()))
    broker_pid = None
    if not waiters:
        broker = find_broker(ctx)
        if broker is None or not uses_io_uring(ctx, broker.pid):
            return IoUringWaits()
        broker_pid = broker.pid
    network = read_network_fs(ctx)
    blocked = scan.blocked if network else still_blocked(ctx, scan.blocked)
    return IoUringWaits(waiters, broker_pid, blocked, network)


def read_disks(ctx: Context) -> str | None:
    """/proc/diskstats now, or None when it cannot be read."""
    try:
        return read_diskstats(ctx)
    except OSError:
        return None


# --- cpu.usage -------------------------------------------------------------------------

#: How long cpu.usage samples /proc/stat (the brief's budget for sampling checks).
SAMPLE_S = 0.5
#: The window is read as this many back-to-back samples: a `fail` must hold in each.
SAMPLES = 2

#: /proc/stat cpu columns we use, in order; guest/guest_nice are already inside user/nice.
STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
BUSY_FIELDS = ("user", "system", "irq", "softirq", "steal")


@dataclass(frozen=True)
class CpuTimes:
    """Cumulative clock ticks of one `cpu`/`cpuN` line of /proc/stat."""

    user: int = 0
    nice: int = 0
    system: int = 0
    idle: int = 0
    iowait: int = 0
    irq: int = 0
    softirq: int = 0
    steal: int = 0


@dataclass(frozen=True)
class CpuShare:
    """Where one CPU's time went over the sample, in percent (busy excludes niced time)."""

    name: str
    busy: float  # user + system + irq + softirq + steal: what competes with the broker
    user: float
    nice: float  # niced tasks, this agent (nice 10) included; they yield to the broker
    system: float  # system + irq + softirq
    iowait: float
    steal: float
    idle: float
    agent: float = 0.0  # this snapshot's own CPU, taken out of user/nice/system

    def to_dict(self) -> dict[str, Any]:
        """One table row for the report."""
        return {
            "cpu": self.name,
            "agent_pct": self.agent,
            "busy_pct": self.busy,
            "user_pct": self.user,
            "nice_pct": self.nice,
            "system_pct": self.system,
            "iowait_pct": self.iowait,
            "steal_pct": self.steal,
            "idle_pct": self.idle,
        }


@dataclass(frozen=True)
class CpuSample:
    """Two /proc/stat readings taken `interval_s` apart, reduced to shares per CPU."""

    interval_s: float
    overall: CpuShare
    cores: tuple[CpuShare, ...]


@dataclass(frozen=True)
class UsageFacts:
    """cpu.usage's evidence: the window, its back-to-back samples, what corroborates them."""

    window: CpuSample
    samples: tuple[CpuSample, ...] = ()  # the window cut in SAMPLES consecutive pieces
    disks: DiskActivity | None = None  # /proc/diskstats over the same window
    load1_per_core: float | None = None  # 1-minute load average per online core
    cpu_some_avg10: float | None = None  # PSI: % of the last 10 s runnable tasks waited
    io_uring: IoUringWaits | None = None  # read only when iowait would be judged


def parse_proc_stat(text: str) -> dict[str, CpuTimes]:
    """The `cpu` and `cpuN` lines of /proc/stat; malformed lines are left out."""
    out: dict[str, CpuTimes] = {}
    for line in text.splitlines():
        if not line.startswith("cpu"):
            continue
        name, *values = line.split()
        try:
            numbers = [int(v) for v in values[: len(STAT_FIELDS)]]
        except ValueError:
            continue
        if len(numbers) < 4:  # even 2.4 kernels had user nice system idle
            continue
        out[name] = CpuTimes(*numbers)
    return out


@dataclass(frozen=True)
class OwnTicks:
    """CPU this snapshot itself used during the sample: the agent, its checks, their commands."""

    user: int
    system: int
    niced: bool  # the agent's user time shows as `nice` in /proc/stat when it is niced
    #: (user, system) ticks of the agent's threads by the CPU each last ran on
    #: (`cpu3`); the rest (children reaped meanwhile, threads that ended) is not placed.
    cores: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def user_field(self) -> str:
        """The /proc/stat column the agent's user time shows in."""
        return "nice" if self.niced else "user"


def tick_deltas(before: CpuTimes, after: CpuTimes) -> dict[str, int]:
    """Ticks per column between two readings.

    Per-CPU iowait may go backwards on some kernels: every delta is clamped at zero.
    """
    return {f: max(0, getattr(after, f) - getattr(before, f)) for f in STAT_FIELDS}


def cpu_share(name: str, delta: dict[str, int], own: OwnTicks | None = None) -> CpuShare | None:
    """Percentages of the elapsed ticks; None when no tick elapsed (or counters reset).

    `own` ticks move out of user (or nice) and system into `agent`: a snapshot must
    not report its own load as the node's.
    """
    total = sum(delta.values())
    if total <= 0:
        return None
    delta = dict(delta)
    agent = 0
    if own is not None:
        for field_name, ticks in ((own.user_field, own.user), ("system", own.system)):
            moved = min(delta[field_name], max(0, ticks))
            delta[field_name] -= moved
            agent += moved

    def pct(*fields: str) -> float:
        """Share of the elapsed ticks spent in `fields`."""
        return round(100.0 * sum(delta[f] for f in fields) / total, 1)

    return CpuShare(
        name=name,
        busy=pct(*BUSY_FIELDS),
        user=pct("user"),
        nice=pct("nice"),
        system=pct("system", "irq", "softirq"),
        iowait=pct("iowait"),
        steal=pct("steal"),
        idle=pct("idle"),
        agent=round(100.0 * agent / total, 1),
    )


def agent_per_core(deltas: dict[str, dict[str, int]], own: OwnTicks) -> dict[str, OwnTicks]:
    """The agent's ticks to take out of each core's figures.

    Each of its threads' ticks go to the core it last ran on (as far as that core had
    such ticks). What is left (children reaped meanwhile, threads that moved or ended)
    may have run anywhere: it goes to the busiest cores first, so a core is called hot
    only when the agent cannot explain it.
    """
    taken = {name: [0, 0] for name in deltas}  # [user, system] per core
    left = [max(0, own.user), max(0, own.system)]
    columns = (own.user_field, "system")

    def take(name: str, which: int, ticks: int) -> None:
        """Move up to `ticks` of the agent's ticks out of one column of one core."""
        room = deltas[name][columns[which]] - taken[name][which]
        moved = max(0, min(room, ticks, left[which]))
        taken[name][which] += moved
        left[which] -= moved

    for name, (user, system) in own.cores.items():
        if name in deltas:
            take(name, 0, user)
            take(name, 1, system)

    def busy_left(name: str) -> int:
        """The core's busy ticks not yet put down to the agent."""
        return sum(deltas[name][f] for f in BUSY_FIELDS) - sum(taken[name])

    for name in sorted(deltas, key=busy_left, reverse=True):
        take(name, 0, left[0])
        take(name, 1, left[1])
    return {name: OwnTicks(user, system, own.niced) for name, (user, system) in taken.items()}


def usage_between(
    before: dict[str, CpuTimes],
    after: dict[str, CpuTimes],
    interval_s: float,
    own: OwnTicks | None = None,
) -> CpuSample | None:
    """Shares overall and per core, without the agent's own ticks; None when no time passed."""
    if "cpu" not in before or "cpu" not in after:
        return None
    overall = cpu_share("cpu", tick_deltas(before["cpu"], after["cpu"]), own)
    if overall is None:
        return None
    names = sorted(set(before) & set(after) - {"cpu"}, key=_cpu_number)
    deltas = {name: tick_deltas(before[name], after[name]) for name in names}
    mine = agent_per_core(deltas, own) if own is not None else {}
    cores = []
    for name in names:
        share = cpu_share(name, deltas[name], mine.get(name))
        if share is not None:  # a CPU taken offline between the reads has no ticks
            cores.append(share)
    return CpuSample(round(interval_s, 3), overall, tuple(cores))


def _cpu_number(name: str) -> int:
    """`cpu12` -> 12 (for sorting cores numerically)."""
    digits = name[3:]
    return int(digits) if digits.isdigit() else -1


@dataclass(frozen=True)
class AgentTicks:
    """The agent's process tree at one moment: ticks used so far, and where each thread ran."""

    user: int
    system: int
    niced: bool
    #: (tid, start ticks) -> (CPU it last ran on, user ticks, system ticks)
    threads: dict[tuple[int, int], tuple[str, int, int]] = field(default_factory=dict)


def parse_thread_stat(text: str) -> tuple[int, str, int, int] | None:
    """(start ticks, `cpuN` it last ran on, user, system) of a task's stat line; None if bad."""
    stat = parse_stat(text)
    fields = text.rpartition(")")[2].split()
    if stat is None or len(fields) < 37 or not fields[36].isdigit():
        return None
    return stat.start_ticks, f"cpu{fields[36]}", stat.user_ticks, stat.system_ticks


def agent_ticks(ctx: Context) -> AgentTicks | None:
    """Ticks used so far by the agent's process tree, per thread too; None if unknown.

    Children it already reaped count through its cutime/cstime, so a check that ran
    and ended inside the sample window is counted too (on no particular core).
    """
    agent = agent_pid(ctx)
    table = read_processes(ctx)
    if agent is None or agent not in table:
        return None
    children: dict[int, list[int]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    tree, todo = [], [agent]
    while todo:
        pid = todo.pop()
        tree.append(table[pid])
        todo += children.get(pid, [])
    threads: dict[tuple[int, int], tuple[str, int, int]] = {}
    for proc in tree:
        for tid in read_threads(ctx, proc.pid):
            text = ctx.read_optional(f"/proc/{proc.pid}/task/{tid}/stat", STAT_LIMIT)
            parsed = parse_thread_stat(text) if text else None
            if parsed is not None:
                start, cpu, user, system = parsed
                threads[tid, start] = (cpu, user, system)
    return AgentTicks(
        user=sum(p.user_ticks + p.reaped_user_ticks for p in tree),
        system=sum(p.system_ticks + p.reaped_system_ticks for p in tree),
        niced=table[agent].nice > 0,
        threads=threads,
    )


def own_between(first: AgentTicks, second: AgentTicks) -> OwnTicks:
    """What the agent used between two moments, and on which cores its threads ran."""
    cores: dict[str, tuple[int, int]] = {}
    for key, (cpu, user, system) in second.threads.items():
        _, user0, system0 = first.threads.get(key, (cpu, 0, 0))  # new thread: all in window
        placed_user, placed_system = cores.get(cpu, (0, 0))
        cores[cpu] = (placed_user + max(0, user - user0), placed_system + max(0, system - system0))
    return OwnTicks(second.user - first.user, second.system - first.system, second.niced, cores)


@dataclass(frozen=True)
class Moment:
    """One reading of /proc/stat, the agent's ticks and /proc/diskstats."""

    at: float  # time.monotonic()
    stat: dict[str, CpuTimes]
    stat_text: str
    agent: AgentTicks | None
    diskstats: str | None  # None when unreadable, or not read (a middle moment)


def read_moment(ctx: Context, disks: bool = True) -> Moment:
    """Read /proc/stat, then what the agent used so far and (when `disks`) the disks' counters."""
    at, text = time.monotonic(), ctx.read_text("/proc/stat")
    stat, agent = parse_proc_stat(text), agent_ticks(ctx)
    return Moment(at, stat, text, agent, read_disks(ctx) if disks else None)


def sample_between(first: Moment, second: Moment) -> CpuSample | None:
    """The CPU shares between two moments, without the agent's own ticks."""
    own = None
    if first.agent is not None and second.agent is not None:
        own = own_between(first.agent, second.agent)
    return usage_between(first.stat, second.stat, second.at - first.at, own)


def read_usage(ctx: Context) -> tuple[UsageFacts | None, dict[str, str]]:
    """Read /proc/stat SAMPLES + 1 times over SAMPLE_S, the disks at both ends; evidence -> text.

    Load and CPU pressure are read once, to confirm what the samples say.
    """
    block_devices = read_block_devices(ctx)
    moments = [read_moment(ctx)]
    for n in range(1, SAMPLES + 1):
        time.sleep(SAMPLE_S / SAMPLES)
        moments.append(read_moment(ctx, disks=n == SAMPLES))  # only the ends' disks are used
    first, last = moments[0], moments[-1]
    stat = _cpu_lines(first.stat_text)
    for moment in moments[1:]:
        stat += f"\n--- {moment.at - first.at:.3f} s later ---\n" + _cpu_lines(moment.stat_text)
    evidence = {"proc-stat-samples.txt": stat}
    if first.diskstats is not None and last.diskstats is not None:
        evidence["diskstats-window.txt"] = (
            f"{first.diskstats}\n--- {last.at - first.at:.3f} s later ---\n{last.diskstats}"
        )
    window = sample_between(first, last)
    if window is None:
        return None, evidence
    samples = tuple(
        sample for a, b in itertools.pairwise(moments) if (sample := sample_between(a, b))
    )
    disks = None
    if first.diskstats is not None and last.diskstats is not None:
        disks = disk_activity(first.diskstats, last.diskstats, last.at - first.at, block_devices)
    load = read_load(ctx)
    cpu_some = parse_psi(ctx.read_optional("/proc/pressure/cpu", PSI_LIMIT) or "").get("some")
    facts = UsageFacts(
        window=window,
        samples=samples,
        disks=disks,
        load1_per_core=None if isinstance(load, str) else round(load.load1 / load.cores, 2),
        cpu_some_avg10=cpu_some.avg10 if cpu_some else None,
    )
    return facts, evidence


def _cpu_lines(text: str) -> str:
    """Only the cpu lines of /proc/stat (the rest is interrupt counters)."""
    return "".join(line + "\n" for line in text.splitlines() if line.startswith("cpu"))


#: Overall busy share (user + system + irq + softirq + steal; niced time excluded).
BUSY = Band("busy_pct", warn=80.0, fail=95.0)
#: A busy `fail` must be confirmed by the 1-minute load per core reaching this...
BUSY_LOAD = Band("busy_load_per_core", fail=0.8)
#: ...or by CPU pressure (PSI some avg10: % of the time runnable tasks waited) reaching this.
BUSY_CPU_SOME = Band("busy_cpu_some_pct", fail=10.0)
#: Share of the time the CPUs sat idle waiting for disk I/O.
IOWAIT = Band("iowait_pct", warn=10.0, fail=30.0)
#: Share of the time the hypervisor gave this VM's CPUs to someone else.
STEAL = Band("steal_pct", warn=5.0, fail=15.0)
#: Busy share of one core (a pinned Iggy shard saturates one core, not the average).
CORE_BUSY = Band("core_busy_pct", warn=95.0)

_IOWAIT_REMEDY = (
    "The disk is the bottleneck: `iostat -x 1 5` shows which device is saturated (%util, "
    "r_await/w_await) and `pidstat -d 1 5` or `iotop -o` who drives it. Keep Iggy's data "
    "directory on its own fast device; a broker whose appends and fsyncs wait on the disk "
    "answers producers late."
)


def _graded_share(
    band: Band, value: float, thresholds: dict[str, Any], message: str, remedy: str
) -> list[Finding]:
    """A finding when `band` grades `value`, naming the threshold it reached."""
    severity = band.grade(value, thresholds)
    if severity is None:
        return []
    limit = band.limit(severity, thresholds)
    return [Finding(severity, f"{message} ({severity} at {limit:g}%)", remedy, "/proc/stat")]


def _busy_witnesses(facts: UsageFacts, thresholds: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(what confirms the CPUs are saturated, what does not), from load and CPU pressure."""
    confirm: list[str] = []
    deny: list[str] = []
    for band, value, text in (
        (BUSY_LOAD, facts.load1_per_core, "1-minute load {:g} per core"),
        (BUSY_CPU_SOME, facts.cpu_some_avg10, "CPU pressure {:g}% (avg10)"),
    ):
        if value is None:
            continue
        needed = band.limit(Severity.FAIL, thresholds)
        if band.grade(value, thresholds) == Severity.FAIL:
            confirm.append(text.format(value))
        else:
            deny.append(text.format(value) + f" under {needed:g}")
    return confirm, deny


def _busy_doubt(facts: UsageFacts, thresholds: dict[str, Any]) -> str:
    """Why a busy share at the fail threshold is not (yet) a fail; '' when it is one.

    It must hold in every back-to-back sample and be confirmed by the load average or
    CPU pressure (when neither can be read, the samples alone decide).
    """
    busy = [s.overall.busy for s in facts.samples]
    if len(busy) < 2 or any(BUSY.grade(b, thresholds) != Severity.FAIL for b in busy):
        read = "/".join(f"{b:g}%" for b in busy) or "one reading"
        return f"not in every sample ({read}): a burst"
    confirm, deny = _busy_witnesses(facts, thresholds)
    if confirm or not deny:
        return ""
    return f"not confirmed by the {' or '.join(deny)}: a burst"


def _cpus_busy(facts: UsageFacts, thresholds: dict[str, Any]) -> list[Finding]:
    """The CPUs as a whole are busy with work that competes with the broker.

    A `fail` needs every sample at the fail threshold and load or CPU pressure agreeing;
    otherwise a share that high only warns.
    """
    o = facts.window.overall
    severity = BUSY.grade(o.busy, thresholds)
    if severity is None:
        return []
    message = (
        f"CPUs are {o.busy:g}% busy overall over {facts.window.interval_s:.2f} s "
        f"(user {o.user:g}%, system {o.system:g}%)"
    )
    if severity == Severity.FAIL:
        doubt = _busy_doubt(facts, thresholds)
        if doubt:
            severity = Severity.WARN
            message += f"; warn only, {doubt}"
        else:
            confirm, _ = _busy_witnesses(facts, thresholds)
            message += f" in each of the {len(facts.samples)} samples, " + (
                f"confirmed by the {' and '.join(confirm)}"
                if confirm
                else "(load and CPU pressure unreadable)"
            )
    limit = BUSY.limit(severity, thresholds)
    return [
        Finding(
            severity,
            f"{message} ({severity} at {limit:g}%)",
            "Find the consumers with `top -H` or `pidstat -u 1 5`. If iggy-server's `shard-N` "
            "threads are the busy ones the node is undersized for its traffic: add cores or "
            "spread partitions over more nodes; if something else is busy, move it off the "
            "broker node, since every shard is pinned to one core and cannot escape a "
            "competing process.",
            "/proc/stat",
        )
    ]


def iowait_discounted(facts: UsageFacts) -> bool:
    """True when iowait may count io_uring waits, so the disks decide instead."""
    return facts.io_uring is not None and facts.io_uring.present


def _cpus(facts: UsageFacts) -> int:
    """CPUs in the window (1 when /proc/stat has no per-CPU lines)."""
    return len(facts.window.cores) or 1


def _blocked(facts: UsageFacts) -> int:
    """User threads counted as blocked in D state outside io_uring_enter."""
    return len(facts.io_uring.blocked) if facts.io_uring is not None else 0


def waiting_tasks(facts: UsageFacts) -> float | None:
    """Tasks that can have waited outside io_uring, on average; None when the disks are unknown.

    The disks' bound (aqu-sz, or %util times the requests in flight at both ends, per
    device) plus every thread counted as blocked in D state (NFS, FUSE, a hung device).
    """
    if facts.disks is None:
        return None
    return facts.disks.waiting_bound + _blocked(facts)


def disk_wait_pct(facts: UsageFacts) -> float | None:
    """The share of CPU time real waits can have kept idle; None when the disks are unknown.

    A waiting task keeps at most one CPU idle: the tasks that can have waited outside
    io_uring (`waiting_tasks`) over the CPUs, never more than iowait itself.
    """
    waiting = waiting_tasks(facts)
    if waiting is None:
        return None
    cpus = _cpus(facts)
    return round(min(facts.window.overall.iowait, 100.0 * min(waiting, cpus) / cpus), 1)


def _others(facts: UsageFacts) -> str:
    """'; 1 thread sleeps in D state ...' when something besides the disks was looked at."""
    text = facts.io_uring.describe_others() if facts.io_uring is not None else ""
    return f"; {text}" if text else ""


def iowait_note(facts: UsageFacts) -> str:
    """Why iowait was not taken at its word ('' when it was)."""
    if not iowait_discounted(facts) or facts.io_uring is None:
        return ""
    o = facts.window.overall
    judged = disk_wait_pct(facts)
    if facts.disks is None or judged is None:
        return (
            f"iowait {o.iowait:g}% may be io_uring waits: {facts.io_uring.describe()}, "
            f"{IO_URING_IOWAIT}; /proc/diskstats could not be read to tell, so it warns at "
            f"most{_others(facts)}"
        )
    if judged >= o.iowait:
        return (
            f"iowait {o.iowait:g}% includes io_uring waits ({facts.io_uring.describe()}), "
            f"but the disks and blocked threads account for all of it: "
            f"{facts.disks.describe()}{_others(facts)}"
        )
    return (
        f"iowait {o.iowait:g}% discounted to {judged:g}%: {facts.io_uring.describe()}, "
        f"{IO_URING_IOWAIT}; disk waiting is judged from the disks instead: "
        f"{facts.disks.describe()}{_others(facts)}"
    )


def _iowait_remedy(facts: UsageFacts) -> str:
    """What to do; a stalled device or blocked threads get their own advice first."""
    stuck = facts.disks is not None and facts.disks.stuck
    if not stuck and not _blocked(facts):
        return _IOWAIT_REMEDY
    return (
        "Requests that never complete, or threads stuck in D state, mean a hung device or "
        "file server: `dmesg -T | tail -50` shows I/O timeouts and 'server not responding', "
        "`ps -eLo pid,tid,stat,wchan:32,comm | awk '$3 ~ /D/'` who is stuck and "
        "`cat /proc/<pid>/stack` where. Replace or detach the dead volume (EBS, iSCSI path, "
        "NVMe), or fix or unmount the NFS/CIFS/FUSE server; an iggy-server stuck on it "
        "stops answering. " + _IOWAIT_REMEDY
    )


def _cpus_wait_for_disk(facts: UsageFacts, thresholds: dict[str, Any]) -> list[Finding]:
    """CPUs sit idle waiting for I/O: from iowait, or the disks and D state on io_uring nodes."""
    o = facts.window.overall
    span = f"over {facts.window.interval_s:.2f} s"
    if not iowait_discounted(facts):
        message = f"CPUs spent {o.iowait:g}% of the time idle waiting for disk I/O {span}"
        return _graded_share(IOWAIT, o.iowait, thresholds, message, _IOWAIT_REMEDY)
    judged = disk_wait_pct(facts)
    if facts.disks is None or judged is None:
        if IOWAIT.grade(o.iowait, thresholds) is None:
            return []
        warn = IOWAIT.limit(Severity.WARN, thresholds)
        message = f"CPUs spent {o.iowait:g}% in iowait {span} (warn at {warn:g}%)"
        note = iowait_note(facts)
        return [Finding(Severity.WARN, f"{message}; {note}", _iowait_remedy(facts), "/proc/stat")]
    who = "the disks and threads blocked in D state" if _blocked(facts) else "the disks"
    message = (
        f"{who} kept CPUs waiting about {judged:g}% of the time {span} "
        f"({facts.disks.describe()}{_others(facts)}; iowait read {o.iowait:g}%, io_uring "
        "waits included)"
    )
    return _graded_share(IOWAIT, judged, thresholds, message, _iowait_remedy(facts))


def _cpu_stolen(o: CpuShare, thresholds: dict[str, Any]) -> list[Finding]:
    """The hypervisor gives this VM's CPU time to other guests."""
    return _graded_share(
        STEAL,
        o.steal,
        thresholds,
        f"the hypervisor stole {o.steal:g}% of this VM's CPU time",
        "Other guests (noisy neighbours) or an exhausted CPU credit balance get this VM's "
        "time: move to a larger, dedicated or compute-optimised instance type (burstable "
        "types such as AWS t3/t4g steal when out of credits) or ask for CPU reservation on "
        "the host. Each stolen slice stalls a pinned Iggy shard and every partition it owns.",
    )


def hot_cores(facts: UsageFacts, thresholds: dict[str, Any]) -> list[CpuShare]:
    """Cores at or over the per-core threshold over the window and in every sample."""
    hot = {c.name for c in facts.window.cores if CORE_BUSY.grade(c.busy, thresholds)}
    for sample in facts.samples:
        hot &= {c.name for c in sample.cores if CORE_BUSY.grade(c.busy, thresholds)}
    hottest = sorted(facts.window.cores, key=lambda c: c.busy, reverse=True)
    return [c for c in hottest if c.name in hot]


def _saturated_cores(facts: UsageFacts, thresholds: dict[str, Any]) -> list[Finding]:
    """Single cores stay saturated even when the average looks fine (the agent left out)."""
    hot = hot_cores(facts, thresholds)
    if not hot:
        return []
    core_warn = CORE_BUSY.limit(Severity.WARN, thresholds)
    names = ", ".join(f"{c.name} {c.busy:g}%" for c in hot[:8])
    more = f" and {len(hot) - 8} more" if len(hot) > 8 else ""
    return [
        Finding(
            Severity.WARN,
            f"{len(hot)} core(s) at or over {core_warn:g}% busy over "
            f"{facts.window.interval_s:.2f} s, in every sample: {names}{more}",
            "Iggy pins one shard thread per core, so one saturated core delays every "
            "partition that shard owns even when the node average looks fine. Confirm it "
            "is sustained with `mpstat -P ALL 1 5`, then `top -H -p $(pidof iggy-server)` "
            "for the hot `shard-N` thread: a hot partition or consumer group on one shard "
            "needs more partitions (spread over shards); an interrupt-heavy core (high "
            "system%) needs IRQ affinity moved off the shard cores.",
            ",".join(c.name for c in hot),
        )
    ]


def _usage_summary(facts: UsageFacts, hottest: list[CpuShare]) -> str:
    """Where the time went, overall, and the three hottest cores."""
    o = facts.window.overall
    ok = (
        f"busy {o.busy:g}% (user {o.user:g}%, system {o.system:g}%, iowait {o.iowait:g}%, "
        f"steal {o.steal:g}%, niced {o.nice:g}%) over {facts.window.interval_s:.2f} s "
        f"on {len(facts.window.cores) or 1} CPUs"
    )
    if o.agent:
        ok += f"; this snapshot's own {o.agent:g}% left out"
    hot_text = ", ".join(f"{c.name} {c.busy:g}%" for c in hottest[:3])
    if hot_text:
        ok += f"; hottest {hot_text}"
    if note := iowait_note(facts):
        ok += f"; {note}"
    return ok


def judge_usage(facts: UsageFacts, thresholds: dict[str, Any]) -> Result:
    """Judge busy, iowait and steal overall and the busiest single cores."""
    o = facts.window.overall
    hottest = sorted(facts.window.cores, key=lambda c: c.busy, reverse=True)
    findings = [
        *_cpus_busy(facts, thresholds),
        *_cpus_wait_for_disk(facts, thresholds),
        *_cpu_stolen(o, thresholds),
        *_saturated_cores(facts, thresholds),
    ]
    if note := iowait_note(facts):
        findings.append(Finding(Severity.INFO, note, "", "/proc/stat"))
    data: dict[str, Any] = {
        "interval_s": facts.window.interval_s,
        "overall": o.to_dict(),
        "hottest": [c.name for c in hottest[:3]],
        "per_core": [c.to_dict() for c in facts.window.cores],
        "samples": [
            {"interval_s": s.interval_s, "busy_pct": s.overall.busy, "iowait_pct": s.overall.iowait}
            for s in facts.samples
        ],
        "load_1m_per_core": facts.load1_per_core,
        "cpu_pressure_some_avg10": facts.cpu_some_avg10,
        "disks": facts.disks.to_dict() if facts.disks else None,
        "io_uring": facts.io_uring.to_dict() if facts.io_uring else None,
        "iowait_judged_pct": disk_wait_pct(facts) if iowait_discounted(facts) else o.iowait,
        "note": "busy excludes niced time and this snapshot's own CPU (agent_pct; per core, "
        "each agent thread's ticks come off the core it ran on, the rest off the busiest "
        "cores); the agent runs at nice 10. A fail needs every sample at the threshold and "
        "the 1-minute load or CPU pressure agreeing. When threads sleep in io_uring_enter "
        "(counted as iowait since Linux 6.1.39/6.5) iowait is judged from the disks over the "
        "same window (aqu-sz, or %util times the requests in flight at both ends) plus "
        "user threads blocked in D state.",
    }
    return Result.from_findings(findings, ok=_usage_summary(facts, hottest), data=data)


@check(
    id="cpu.usage",
    category="cpu",
    title="CPU utilisation",
    description="Busy, iowait and steal per core from /proc/stat read three times over 0.5 s, "
    "with the disks over the same window.",
    requires=Requirements(paths=("/proc/stat",)),
    timeout_s=5,
    bands=(BUSY, BUSY_LOAD, BUSY_CPU_SOME, IOWAIT, STEAL, CORE_BUSY),
    sampling_s=0.5,
)
def cpu_usage(ctx: Context) -> Result:
    """Utilisation over a short window, overall and per core, without the agent's own CPU.

    Verdicts:
    - pass: an idle io_uring broker, one pending receive per shard, disks idle
      [test_cpu_usage_idle_io_uring_broker_is_not_iowait]
    - pass: a real program idles in io_uring_enter on a socket that never gets data
      (this machine, the real CLI) [test_idle_io_uring_waiter_shows_no_iowait_finding]
    - pass: an idle io_uring broker on a node with an NFS share mounted, no thread
      blocked on it [test_cpu_usage_idle_io_uring_broker_with_nfs_mounted_passes]
    - pass: an idle io_uring broker while another thread is in D state for a moment
      [test_cpu_usage_thread_stuck_in_d_state_counts]
    - pass: the snapshot's own threads keep one core at 100%
      [test_cpu_usage_leaves_the_agent_out_per_core]
    - pass: most CPU time in niced work (batch jobs, this agent)
      [test_cpu_usage_pass_excludes_niced_time]
    - warn: one 0.5 s burst at 96% that the load average and CPU pressure do not confirm
      [test_cpu_usage_one_busy_sample_only_warns]
    - warn: one core saturated by another process in every sample
      [test_cpu_usage_warns_on_one_saturated_core]
    - fail: every core busy in both samples, confirmed by the load average
      [test_cpu_usage_fails_when_all_cores_busy]
    - fail: an io_uring broker node whose disks keep requests queued all window
      [test_cpu_usage_io_uring_node_with_queued_disks_fails]
    - fail: an io_uring broker node with a hung disk: 16 requests in flight all window,
      none completed (aqu-sz reads 0) [test_cpu_usage_io_uring_node_with_a_hung_disk_fails]
    - fail: an io_uring broker node with a dead NFS server: threads stuck in D state on
      it, disks idle [test_cpu_usage_io_uring_node_with_a_hung_nfs_server_fails]
    - fail: an io_uring broker node with a thread that stays in D state, disks idle
      [test_cpu_usage_thread_stuck_in_d_state_counts]
    - warn: iowait or steal over their thresholds, no io_uring in use
      [test_cpu_usage_iowait_and_steal]
    - skipped: /proc/stat shows no elapsed time between reads
      [test_cpu_usage_skips_when_no_time_elapsed]
    """
    facts, evidence = read_usage(ctx)
    for name, text in evidence.items():
        ctx.artifact(name, text)
    if facts is None:
        return Result.skipped(
            "/proc/stat showed no elapsed CPU time between two reads (or no `cpu` line); "
            "cannot compute utilisation"
        )
    if IOWAIT.grade(facts.window.overall.iowait, ctx.thresholds):
        # Only then is it worth walking every thread for io_uring waits.
        facts = replace(facts, io_uring=read_io_uring_waits(ctx))
    return judge_usage(facts, ctx.thresholds)


# --- cpu.pressure ----------------------------------------------------------------------

#: Resources under /proc/pressure, all judged here (one PSI check rather than three).
PSI_RESOURCES = ("cpu", "io", "memory")

#: The judged (resource, kind) pairs, each graded by its own band on the average stall
#: share. System-wide CPU "full" is reported since 5.13 but is always zero (undefined
#: outside cgroups), so it is kept as data only.
PSI_BANDS = {
    ("cpu", "some"): Band("cpu_some_pct", warn=20.0, fail=50.0),
    ("io", "some"): Band("io_some_pct", warn=20.0, fail=50.0),
    ("io", "full"): Band("io_full_pct", warn=10.0, fail=30.0),
    ("memory", "some"): Band("memory_some_pct", warn=5.0, fail=20.0),
    ("memory", "full"): Band("memory_full_pct", warn=2.0, fail=10.0),
}

_PSI_WHAT = {
    ("cpu", "some"): "runnable tasks waited for a CPU",
    ("io", "some"): "at least one task was stalled on I/O",
    ("io", "full"): "every non-idle task was stalled on I/O at once",
    ("memory", "some"): "at least one task was stalled on memory (reclaim, swap-in)",
    ("memory", "full"): "every non-idle task was stalled on memory at once",
}

_PSI_REMEDY = {
    "cpu": "More threads want to run than there are CPUs: find them with `top -H` or "
    "`pidstat -u 1 5`. Iggy pins one shard thread per core, so anything else runnable on "
    "those cores delays a whole shard; move other workloads off the broker node or add cores "
    "(see cpu.usage for the hottest cores).",
    "io": "Tasks are waiting for storage: `iostat -x 1 5` shows the saturated device and "
    "`pidstat -d 1 5` who drives it. Give Iggy's data directory its own fast device and "
    "keep backups, log shipping and other writers off it.",
    "memory": "The kernel is reclaiming or swapping in while tasks wait: see memory.usage and "
    "memory.swap. Reduce memory use on the node (Iggy's [system.memory_pool] size, other "
    "services), add RAM, and set vm.swappiness=10 so the broker's memory is not swapped out.",
}

IO_KINDS = ("some", "full")


@dataclass(frozen=True)
class IoWindow:
    """I/O pressure and the disks over one short window, read when io_uring waits inflate PSI."""

    interval_s: float
    stalled_pct: dict[str, float]  # kind -> % of the window (from PSI's total= counters)
    disks: DiskActivity | None
    io_uring: IoUringWaits

    def judged(self, kind: str) -> float | None:
        """The stall share the disks can account for; None when PSI gave no such line.

        A task stalls on a disk only while a request is in flight: never more of the
        window than the disks were busy (%util summed, a stalled device all of it). A
        thread blocked in D state outside io_uring (NFS, FUSE, a hung device) may stall
        all window long, so then nothing is discounted.
        """
        share = self.stalled_pct.get(kind)
        if share is None:
            return None
        bound = self.disks.busy_pct if self.disks is not None else 100.0
        if self.io_uring.blocked:
            bound = 100.0
        return round(min(share, bound), 1)

    def io_uring_pct(self, kind: str) -> float:
        """The window's stall share the disks cannot account for: io_uring waits, now."""
        judged = self.judged(kind)
        return max(0.0, self.stalled_pct.get(kind, 0.0) - (judged or 0.0))

    def describe_disks(self) -> str:
        """The disks over the window, and the threads blocked in D state if any."""
        disks = self.disks.describe() if self.disks else "/proc/diskstats unreadable"
        others = self.io_uring.describe_others()
        return f"{disks}; {others}" if others else disks

    def note(self) -> str:
        """Why the io lines were judged from the disks."""
        read = ", ".join(f"{k} {v:g}%" for k, v in self.stalled_pct.items())
        judged = ", ".join(f"{k} {self.judged(k):g}%" for k in self.stalled_pct)
        discounted = any(self.io_uring_pct(k) > 0 for k in self.stalled_pct)
        verb = "discounted" if discounted else "may include io_uring waits"
        return (
            f"io pressure {verb}: {self.io_uring.describe()}, {IO_URING_IOWAIT}; over "
            f"{self.interval_s:.2f} s PSI read {read} and the disks account for {judged} "
            f"({self.describe_disks()})"
        )


@dataclass
class PressureFacts:
    """PSI lines per resource, and why any resource could not be read."""

    lines: dict[str, dict[str, PsiLine]] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)
    io_window: IoWindow | None = None  # when io_uring waits make the io lines unreliable


def read_pressure(ctx: Context) -> PressureFacts:
    """Read /proc/pressure/{cpu,io,memory}; keep them as evidence."""
    facts = PressureFacts()
    for resource in PSI_RESOURCES:
        node_path = f"/proc/pressure/{resource}"
        try:
            text = ctx.read_text(node_path, max_bytes=PSI_LIMIT)
        except OSError as exc:
            facts.unreadable[resource] = exc.strerror or str(exc)
            continue
        ctx.artifact(f"pressure-{resource}.txt", text)
        facts.lines[resource] = parse_psi(text)
    return facts


def read_io_window(ctx: Context, io_uring: IoUringWaits) -> IoWindow | None:
    """I/O stall shares and disk activity over SAMPLE_S; None when io PSI cannot be read."""
    block_devices = read_block_devices(ctx)

    def moment() -> tuple[float, str, str | None]:
        """io PSI counters and the disks' counters now."""
        psi = ctx.read_optional("/proc/pressure/io", PSI_LIMIT) or ""
        return time.monotonic(), psi, read_disks(ctx)

    t0, text0, disks0 = moment()
    time.sleep(SAMPLE_S)
    t1, text1, disks1 = moment()
    interval = t1 - t0
    ctx.artifact(
        "io-window.txt",
        f"# /proc/pressure/io\n{text0}\n# {interval:.3f} s later\n{text1}\n"
        f"# /proc/diskstats\n{disks0}\n# {interval:.3f} s later\n{disks1}",
    )
    psi0, psi1 = parse_psi(text0), parse_psi(text1)
    if interval <= 0 or not psi0:
        return None
    stalled = {
        kind: round(
            max(0.0, min(100.0, (psi1[kind].total_us - psi0[kind].total_us) / interval / 1e4)), 1
        )
        for kind in IO_KINDS
        if kind in psi0 and kind in psi1
    }
    disks = None
    if disks0 is not None and disks1 is not None:
        disks = disk_activity(disks0, disks1, interval, block_devices)
    return IoWindow(round(interval, 3), stalled, disks, io_uring)


def _stalled(resource: str, kind: str, line: PsiLine, thresholds: dict[str, Any]) -> list[Finding]:
    """Tasks stall for `resource`: a minute over fail fails, a 10 s or 60 s average warns."""
    band = PSI_BANDS[resource, kind]
    sustained = band.grade(line.avg60, thresholds)
    # avg10 alone is a spike (and may include this snapshot's own start): warn at most.
    peak = band.grade(max(line.avg10, line.avg60), thresholds)
    message = (
        f"{resource} pressure: {_PSI_WHAT[resource, kind]} {line.avg10:g}% of the last "
        f"10 s and {line.avg60:g}% of the last 60 s"
    )
    subject = f"/proc/pressure/{resource}"
    remedy = _PSI_REMEDY[resource]
    if sustained == Severity.FAIL:
        fail = band.limit(Severity.FAIL, thresholds)
        return [Finding(Severity.FAIL, f"{message} (fail at {fail:g}% over 60 s)", remedy, subject)]
    if peak is not None:
        warn = band.limit(Severity.WARN, thresholds)
        return [Finding(Severity.WARN, f"{message} (warn at {warn:g}%)", remedy, subject)]
    return []


def _window_text(kind: str, window: IoWindow) -> str:
    """'... about 50% of 0.50 s as far as the disks account for it (...)'."""
    return (
        f"{_PSI_WHAT['io', kind]} about {window.judged(kind):g}% of {window.interval_s:.2f} s "
        f"as far as the disks account for it ({window.describe_disks()}; PSI read "
        f"{window.stalled_pct[kind]:g}%, io_uring waits included)"
    )


def _stalled_on_disks(kind: str, window: IoWindow, thresholds: dict[str, Any]) -> list[Finding]:
    """Tasks stall on the disks over the window (io_uring node; `disks_busy` held): warns at most.

    Half a second is a spike, like avg10; disk.io judges the disks themselves.
    """
    warn = PSI_BANDS["io", kind].limit(Severity.WARN, thresholds)
    return [
        Finding(
            Severity.WARN,
            f"io pressure: {_window_text(kind, window)} (warn at {warn:g}%)",
            _PSI_REMEDY["io"],
            "/proc/pressure/io",
        )
    ]


def disks_busy(kind: str, window: IoWindow, thresholds: dict[str, Any]) -> bool:
    """The disks (or threads blocked in D state) account for graded stalls over the window."""
    judged = window.judged(kind)
    return judged is not None and PSI_BANDS["io", kind].grade(judged, thresholds) is not None


def _averages_while_disks_busy(
    kind: str, line: PsiLine | None, window: IoWindow, thresholds: dict[str, Any]
) -> list[Finding]:
    """The disks are busy now: the averages are judged as on any node (a minute fails).

    The window's own finding stands when the averages grade lower.
    """
    averaged = _stalled("io", kind, line, thresholds) if line is not None else []
    if not averaged:
        return _stalled_on_disks(kind, window, thresholds)
    return [
        replace(
            f,
            message=f"{f.message}; over {window.interval_s:.2f} s: {_window_text(kind, window)}",
        )
        for f in averaged
    ]


def _averages_unexplained(
    kind: str, line: PsiLine, window: IoWindow, thresholds: dict[str, Any]
) -> list[Finding]:
    """Quiet disks, but the averages stall more than io_uring waits explain now: warn.

    The io_uring waits seen in the window are taken off the averages; what is left came
    from outside the window (bursts, or waits that have ended) and cannot be told apart.
    """
    band = PSI_BANDS["io", kind]
    explained = window.io_uring_pct(kind)
    left = max(line.avg10, line.avg60) - explained
    if band.grade(left, thresholds) is None:
        return []
    warn = band.limit(Severity.WARN, thresholds)
    return [
        Finding(
            Severity.WARN,
            f"io pressure: {_PSI_WHAT['io', kind]} {line.avg10:g}% of the last 10 s and "
            f"{line.avg60:g}% of the last 60 s, but only {window.stalled_pct.get(kind, 0):g}% "
            f"of the {window.interval_s:.2f} s measured just now, with the disks quiet "
            f"({window.describe_disks()}): cannot tell io_uring waits from disk stalls here "
            f"({left:g}% not explained by the io_uring waits now; warn at {warn:g}%)",
            "Watch it for a minute: `iostat -x 1 60` for the disks' %util and await, and "
            "`grep -E 'some|full' /proc/pressure/io` every few seconds. Stalls that come "
            "with disk activity are the disks (see disk.io); stalls with idle disks and "
            "iggy-server in io_uring_enter are its pending receives. " + _PSI_REMEDY["io"],
            "/proc/pressure/io",
        )
    ]


def _io_stalls_with_io_uring(
    kind: str, line: PsiLine | None, window: IoWindow, thresholds: dict[str, Any]
) -> list[Finding]:
    """io pressure on a node with io_uring waiters, whose waits count as I/O stalls.

    Busy disks over the window: the averages count as on any node. Quiet disks: the
    averages count only for what the io_uring waits seen now do not explain, and warn.
    """
    if disks_busy(kind, window, thresholds):
        return _averages_while_disks_busy(kind, line, window, thresholds)
    if line is None:
        return []
    return _averages_unexplained(kind, line, window, thresholds)


def io_pressure_judged(facts: PressureFacts, thresholds: dict[str, Any]) -> bool:
    """True when an io line's averages would make a finding (worth looking for io_uring)."""
    lines = facts.lines.get("io", {})
    return any(
        PSI_BANDS["io", kind].grade(max(line.avg10, line.avg60), thresholds)
        for kind, line in lines.items()
        if ("io", kind) in PSI_BANDS
    )


def _pressure_summary(facts: PressureFacts) -> str:
    """avg10/avg60 per resource, and why the io lines were discounted."""
    parts = []
    for resource in PSI_RESOURCES:
        lines = facts.lines.get(resource, {})
        if "some" in lines:
            text = f"{resource} some {lines['some'].avg10:g}/{lines['some'].avg60:g}%"
            if resource != "cpu" and "full" in lines:
                text += f" full {lines['full'].avg10:g}/{lines['full'].avg60:g}%"
            parts.append(text)
    ok = "PSI avg10/avg60: " + ", ".join(parts) if parts else "no PSI data"
    if facts.io_window is not None:
        ok += f"; {facts.io_window.note()}"
    return ok


def judge_pressure(facts: PressureFacts, thresholds: dict[str, Any]) -> Result:
    """A minute-long stall over the fail threshold fails; any average over warn warns.

    With io_uring waits present (counted as I/O stalls), the io lines are judged against
    the disks over a short window: busy disks leave the averages their say, quiet disks
    discount what the io_uring waits explain now and warn about the rest.
    """
    findings: list[Finding] = []
    for resource, kind in PSI_BANDS:
        line = facts.lines.get(resource, {}).get(kind)
        if resource == "io" and facts.io_window is not None:
            findings += _io_stalls_with_io_uring(kind, line, facts.io_window, thresholds)
        elif line is not None:
            findings += _stalled(resource, kind, line, thresholds)
    for resource, reason in facts.unreadable.items():
        findings.append(
            Finding(
                Severity.INFO,
                f"/proc/pressure/{resource} could not be read: {reason}",
                "",
                f"/proc/pressure/{resource}",
            )
        )
    if facts.io_window is not None:
        findings.append(Finding(Severity.INFO, facts.io_window.note(), "", "/proc/pressure/io"))
    window = facts.io_window
    data = {
        "pressure": [
            {
                "resource": resource,
                "kind": kind,
                "avg10": line.avg10,
                "avg60": line.avg60,
                "avg300": line.avg300,
                "total_us": line.total_us,
            }
            for resource, lines in facts.lines.items()
            for kind, line in lines.items()
        ],
        "unreadable": facts.unreadable,
        "io_window": None
        if window is None
        else {
            "interval_s": window.interval_s,
            "stalled_pct": window.stalled_pct,
            "judged_pct": {kind: window.judged(kind) for kind in window.stalled_pct},
            "io_uring_pct": {kind: window.io_uring_pct(kind) for kind in window.stalled_pct},
            "disks": window.disks.to_dict() if window.disks else None,
            "io_uring": window.io_uring.to_dict(),
        },
        "note": "system-wide cpu `full` is always 0 (defined only for cgroups); not judged. "
        "When threads sleep in io_uring_enter (counted as I/O stalls since Linux 6.1.39/6.5) "
        "the io lines are judged over 0.5 s against the disks' %util: with the disks busy "
        "the averages are judged as usual; with them quiet, the averages less the io_uring "
        "share of the window can only warn",
    }
    return Result.from_findings(findings, ok=_pressure_summary(facts), data=data)


@check(
    id="cpu.pressure",
    category="cpu",
    title="Pressure stall information (CPU, I/O, memory)",
    description="PSI some/full averages from /proc/pressure/{cpu,io,memory} against thresholds; "
    "on an io_uring node the io lines with the disks over 0.5 s.",
    timeout_s=5,
    bands=tuple(PSI_BANDS.values()),
)
def cpu_pressure(ctx: Context) -> Result:
    """How much of the time tasks stalled for CPU, I/O and memory (Linux PSI).

    Verdicts:
    - pass: little pressure of any kind [test_cpu_pressure_pass]
    - pass: io pressure from an idle io_uring broker (one pending receive per shard),
      disks idle [test_cpu_pressure_io_uring_waits_are_not_disk_stalls]
    - pass: a real program idles in io_uring_enter on a socket that never gets data
      (this machine, the real CLI) [test_idle_io_uring_waiter_shows_no_iowait_finding]
    - warn: a 10-second spike of CPU pressure [test_cpu_pressure_warns_on_a_spike_only]
    - pass: an idle io_uring broker up for an hour, averages near 100% like the window,
      disks idle [test_cpu_pressure_steady_io_uring_waits_pass]
    - warn: an io_uring broker node whose disks are busy all window
      [test_cpu_pressure_io_uring_node_with_busy_disks_warns]
    - warn: an io_uring broker node with a minute of I/O stalls, none in the window and
      the disks quiet: cannot tell
      [test_cpu_pressure_io_uring_node_quiet_window_high_averages_warns]
    - fail: an io_uring broker node with a minute of I/O stalls and saturated or hung
      disks, or threads stuck on a dead NFS server, in the window
      [test_cpu_pressure_io_uring_node_with_a_minute_of_disk_stalls_fails]
    - warn: every task stalled on I/O at once for a minute [test_cpu_pressure_io_full_warns]
    - fail: memory stalls for a minute [test_cpu_pressure_fails_on_sustained_memory_stalls]
    - skipped: kernel without PSI [test_cpu_pressure_skips_without_psi]
    """
    if not ctx.path("/proc/pressure").is_dir():
        return Result.skipped(
            "no /proc/pressure: the kernel is built without CONFIG_PSI or PSI is disabled "
            "(psi=0, or CONFIG_PSI_DEFAULT_DISABLED without psi=1 on the kernel command line)"
        )
    facts = read_pressure(ctx)
    if not facts.lines:
        reasons = "; ".join(f"{r}: {why}" for r, why in facts.unreadable.items())
        return Result.skipped(
            f"/proc/pressure exists but cannot be read ({reasons}); PSI is probably disabled: "
            "boot with psi=1 to enable it"
        )
    if io_pressure_judged(facts, ctx.thresholds):
        # Only then is it worth walking every thread for io_uring waits.
        io_uring = read_io_uring_waits(ctx)
        if io_uring.present:
            facts.io_window = read_io_window(ctx, io_uring)
    return judge_pressure(facts, ctx.thresholds)


# --- cpu.frequency ---------------------------------------------------------------------

_CPU_DIR = re.compile(r"^cpu(\d+)$")


@dataclass(frozen=True)
class CpuFreq:
    """cpufreq settings of one CPU (frequencies in kHz; 0 when not exposed)."""

    cpu: int
    governor: str
    driver: str = ""
    cur_khz: int = 0
    scaling_max_khz: int = 0
    hardware_max_khz: int = 0
    epp: str = ""  # energy_performance_preference (intel_pstate / amd-pstate-epp)


def format_cpu_ids(ids: list[int]) -> str:
    """[0, 1, 2, 3, 8] -> '0-3,8' (the kernel's CPU list notation)."""
    out: list[str] = []
    for n in sorted(set(ids)):
        if out and n == _last(out) + 1:
            start = out[-1].split("-")[0]
            out[-1] = f"{start}-{n}"
        else:
            out.append(str(n))
    return ",".join(out)


def _last(parts: list[str]) -> int:
    """The highest CPU number of the last item of a CPU list being built."""
    return int(parts[-1].split("-")[-1])


def _int_or_zero(text: str | None) -> int:
    """A sysfs integer, or 0 when missing or garbage."""
    try:
        return int((text or "").strip())
    except ValueError:
        return 0


def read_frequency(ctx: Context) -> list[CpuFreq]:
    """cpufreq settings of every CPU that exposes them."""
    base = "/sys/devices/system/cpu"
    try:
        entries = list(ctx.path(base).iterdir())
    except OSError:
        return []
    numbers = sorted(int(m.group(1)) for e in entries if (m := _CPU_DIR.match(e.name)))
    out: list[CpuFreq] = []
    for n in numbers:
        freq = f"{base}/cpu{n}/cpufreq"
        governor = ctx.read_optional(f"{freq}/scaling_governor", max_bytes=256)
        if governor is None:
            continue
        out.append(
            CpuFreq(
                cpu=n,
                governor=governor.strip(),
                driver=(ctx.read_optional(f"{freq}/scaling_driver", 256) or "").strip(),
                cur_khz=_int_or_zero(ctx.read_optional(f"{freq}/scaling_cur_freq", 256)),
                scaling_max_khz=_int_or_zero(ctx.read_optional(f"{freq}/scaling_max_freq", 256)),
                hardware_max_khz=_int_or_zero(ctx.read_optional(f"{freq}/cpuinfo_max_freq", 256)),
                epp=(ctx.read_optional(f"{freq}/energy_performance_preference", 256) or "").strip(),
            )
        )
    return out


#: How far (percent) scaling_max_freq sits below the hardware maximum of a CPU.
MAX_CAPPED = Band("max_capped_pct", warn=10.0, fail=40.0)


def _governors(cpus: list[CpuFreq]) -> dict[str, list[int]]:
    """CPU numbers per scaling governor."""
    by_governor: dict[str, list[int]] = {}
    for c in cpus:
        by_governor.setdefault(c.governor, []).append(c.cpu)
    return by_governor


def _unexpected_governor(cpus: list[CpuFreq], expected: str) -> list[Finding]:
    """CPUs run a governor other than the expected one (a power-saving ramp adds latency)."""
    findings: list[Finding] = []
    for governor, ids in sorted(_governors(cpus).items()):
        if governor == expected:
            continue
        findings.append(
            Finding(
                Severity.WARN,
                f"{len(ids)} of {len(cpus)} CPUs use the `{governor}` governor, "
                f"not `{expected}` (CPUs {format_cpu_ids(ids)})",
                f"Run `cpupower frequency-set -g {expected}` (package linux-cpupower) now; make "
                f"it permanent with `tuned-adm profile latency-performance` or the kernel "
                f"parameter `cpufreq.default_governor={expected}` in GRUB_CMDLINE_LINUX "
                "(/etc/default/grub, then update-grub). Why: Iggy runs one shard thread per "
                "core; a power-saving governor ramps the clock up only after load "
                "arrives, which adds latency to every burst of messages.",
                "/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor",
            )
        )
    return findings


def _capped_below_hardware(
    cpus: list[CpuFreq], thresholds: dict[str, Any]
) -> dict[Severity, list[tuple[CpuFreq, float]]]:
    """CPUs whose scaling_max_freq is capped, grouped by how far (percent below the maximum)."""
    capped: dict[Severity, list[tuple[CpuFreq, float]]] = {Severity.FAIL: [], Severity.WARN: []}
    for c in cpus:
        if c.hardware_max_khz <= 0 or c.scaling_max_khz <= 0:
            continue
        below = 100.0 * (c.hardware_max_khz - c.scaling_max_khz) / c.hardware_max_khz
        if severity := MAX_CAPPED.grade(below, thresholds):
            capped[severity].append((c, below))
    return capped


def _capped_clock(cpus: list[CpuFreq], thresholds: dict[str, Any]) -> list[Finding]:
    """CPUs may not reach their full clock (scaling_max_freq lowered): one finding per grade."""
    findings: list[Finding] = []
    for severity, group in _capped_below_hardware(cpus, thresholds).items():
        if not group:
            continue
        c, below = max(group, key=lambda item: item[1])
        limit = MAX_CAPPED.limit(severity, thresholds)
        findings.append(
            Finding(
                severity,
                f"the maximum frequency of CPUs {format_cpu_ids([g.cpu for g, _ in group])} is "
                f"capped (down to {c.scaling_max_khz // 1000} MHz of "
                f"{c.hardware_max_khz // 1000} MHz, {below:.0f}% below the hardware maximum; "
                f"{severity} at {limit:g}%)",
                "Something lowered scaling_max_freq (a power profile, thermald, tuned, or "
                "`cpupower frequency-set -u`): find it, then raise the limit with "
                f"`cpupower frequency-set -u {c.hardware_max_khz // 1000}MHz`. A capped clock "
                "slows every Iggy shard thread on these cores.",
                "/sys/devices/system/cpu/cpu*/cpufreq/scaling_max_freq",
            )
        )
    return findings


def judge_frequency(cpus: list[CpuFreq], thresholds: dict[str, Any]) -> Result:
    """Every CPU should use the expected governor and be allowed its full frequency."""
    by_governor = _governors(cpus)
    drivers = sorted({c.driver for c in cpus if c.driver})
    findings = [
        *_unexpected_governor(cpus, str(thresholds["expected_governor"])),
        *_capped_clock(cpus, thresholds),
    ]
    data = {
        "drivers": drivers,
        "governors": {g: format_cpu_ids(ids) for g, ids in by_governor.items()},
        "cpus": [
            {
                "cpu": c.cpu,
                "governor": c.governor,
                "driver": c.driver,
                "cur_mhz": c.cur_khz // 1000,
                "scaling_max_mhz": c.scaling_max_khz // 1000,
                "hardware_max_mhz": c.hardware_max_khz // 1000,
                "epp": c.epp,
            }
            for c in cpus
        ],
    }
    summary = ", ".join(
        f"{g} on CPUs {format_cpu_ids(ids)}" for g, ids in sorted(by_governor.items())
    )
    ok = f"governor {summary}" + (f" (driver {', '.join(drivers)})" if drivers else "")
    return Result.from_findings(findings, ok=ok, data=data)


@check(
    id="cpu.frequency",
    category="cpu",
    title="CPU frequency governor",
    description="cpufreq scaling governor and frequency limits of every CPU.",
    timeout_s=5,
    thresholds={"expected_governor": "performance"},
    bands=(MAX_CAPPED,),
)
def cpu_frequency(ctx: Context) -> Result:
    """Scaling governor per CPU; a broker wants `performance`.

    Verdicts:
    - pass: every CPU on the `performance` governor, full clock allowed
      [test_cpu_frequency_pass]
    - pass: the governor the config expects (e.g. schedutil) on every CPU
      [test_cpu_frequency_expected_governor_is_configurable]
    - warn: CPUs on `powersave`, ramping up only after load arrives
      [test_cpu_frequency_warns_on_powersave]
    - fail: scaling_max_freq capped 60% below the hardware maximum
      [test_cpu_frequency_fails_on_a_capped_clock]
    - skipped: no cpufreq in sysfs (usual in VMs) [test_cpu_frequency_skips_without_cpufreq]
    """
    cpus = read_frequency(ctx)
    if not cpus:
        return Result.skipped(
            "cpufreq is not exposed (no /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor): "
            "usual in VMs, where the hypervisor controls CPU frequency; check the host's "
            "governor if you run it"
        )
    return judge_frequency(cpus, ctx.thresholds)
