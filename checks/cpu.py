"""CPU checks."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

from snapshot_agent.core.check import Requirements, check
from snapshot_agent.core.context import Context
from snapshot_agent.core.grading import Band
from snapshot_agent.core.results import Finding, Result, Severity
from snapshot_agent.node.processes import agent_pid, read_processes
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
    """Load average per core, judged on the 5-minute value."""
    facts = read_load(ctx)
    if isinstance(facts, str):
        return Result.skipped(facts)
    return judge_load(facts, ctx.thresholds)


# --- cpu.usage -------------------------------------------------------------------------

#: How long cpu.usage samples /proc/stat (the brief's budget for sampling checks).
SAMPLE_S = 0.5

#: /proc/stat cpu columns we use, in order; guest/guest_nice are already inside user/nice.
STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


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
class UsageFacts:
    """Two /proc/stat readings taken `interval_s` apart, reduced to shares per CPU."""

    interval_s: float
    overall: CpuShare
    cores: tuple[CpuShare, ...]


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


def cpu_share(
    name: str, before: CpuTimes, after: CpuTimes, own: OwnTicks | None = None
) -> CpuShare | None:
    """Percentages between two readings; None when no tick elapsed (or counters reset).

    `own` ticks move out of user (or nice) and system into `agent`: a snapshot must
    not report its own load as the node's.
    """
    # Per-CPU iowait may go backwards on some kernels: clamp every delta at zero.
    delta = {f: max(0, getattr(after, f) - getattr(before, f)) for f in STAT_FIELDS}
    total = sum(delta.values())
    if total <= 0:
        return None
    agent = 0
    if own is not None:
        for field_name, ticks in (
            ("nice" if own.niced else "user", own.user),
            ("system", own.system),
        ):
            moved = min(delta[field_name], max(0, ticks))
            delta[field_name] -= moved
            agent += moved

    def pct(*fields: str) -> float:
        """Share of the elapsed ticks spent in `fields`."""
        return round(100.0 * sum(delta[f] for f in fields) / total, 1)

    return CpuShare(
        name=name,
        busy=pct("user", "system", "irq", "softirq", "steal"),
        user=pct("user"),
        nice=pct("nice"),
        system=pct("system", "irq", "softirq"),
        iowait=pct("iowait"),
        steal=pct("steal"),
        idle=pct("idle"),
        agent=round(100.0 * agent / total, 1),
    )


def usage_between(
    before: dict[str, CpuTimes],
    after: dict[str, CpuTimes],
    interval_s: float,
    own: OwnTicks | None = None,
) -> UsageFacts | None:
    """Shares overall and per core; None when the readings show no elapsed time.

    The agent's own ticks (`own`) are taken out of the overall share only: the
    kernel does not say on which cores they ran.
    """
    if "cpu" not in before or "cpu" not in after:
        return None
    overall = cpu_share("cpu", before["cpu"], after["cpu"], own)
    if overall is None:
        return None
    cores = []
    for name in sorted(set(before) & set(after) - {"cpu"}, key=_cpu_number):
        share = cpu_share(name, before[name], after[name])
        if share is not None:  # a CPU taken offline between the reads has no ticks
            cores.append(share)
    return UsageFacts(round(interval_s, 3), overall, tuple(cores))


def _cpu_number(name: str) -> int:
    """`cpu12` -> 12 (for sorting cores numerically)."""
    digits = name[3:]
    return int(digits) if digits.isdigit() else -1


def own_ticks(ctx: Context) -> tuple[int, int, bool] | None:
    """(user, system, niced) ticks used so far by the agent's process tree; None if unknown.

    Children it already reaped count through its cutime/cstime, so a check that ran
    and ended inside the sample window is counted too.
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
    user = sum(p.user_ticks + p.reaped_user_ticks for p in tree)
    system = sum(p.system_ticks + p.reaped_system_ticks for p in tree)
    return user, system, table[agent].nice > 0


def read_usage(ctx: Context) -> tuple[UsageFacts | None, str]:
    """Read /proc/stat twice, SAMPLE_S apart; also return both readings as evidence."""
    first, own_first = ctx.read_text("/proc/stat"), own_ticks(ctx)
    start = time.monotonic()
    time.sleep(SAMPLE_S)
    second, own_second = ctx.read_text("/proc/stat"), own_ticks(ctx)
    interval = time.monotonic() - start
    evidence = _cpu_lines(first) + f"\n--- {interval:.3f} s later ---\n" + _cpu_lines(second)
    own = None
    if own_first and own_second:
        own = OwnTicks(own_second[0] - own_first[0], own_second[1] - own_first[1], own_second[2])
    usage = usage_between(parse_proc_stat(first), parse_proc_stat(second), interval, own)
    return usage, evidence


def _cpu_lines(text: str) -> str:
    """Only the cpu lines of /proc/stat (the rest is interrupt counters)."""
    return "".join(line + "\n" for line in text.splitlines() if line.startswith("cpu"))


#: Overall busy share (user + system + irq + softirq + steal; niced time excluded).
BUSY = Band("busy_pct", warn=80.0, fail=95.0)
#: Share of the time the CPUs sat idle waiting for disk I/O.
IOWAIT = Band("iowait_pct", warn=10.0, fail=30.0)
#: Share of the time the hypervisor gave this VM's CPUs to someone else.
STEAL = Band("steal_pct", warn=5.0, fail=15.0)
#: Busy share of one core (a pinned Iggy shard saturates one core, not the average).
CORE_BUSY = Band("core_busy_pct", warn=95.0)


def _graded_share(
    band: Band, value: float, thresholds: dict[str, Any], message: str, remedy: str
) -> list[Finding]:
    """A finding when `band` grades `value`, naming the threshold it reached."""
    severity = band.grade(value, thresholds)
    if severity is None:
        return []
    limit = band.limit(severity, thresholds)
    return [Finding(severity, f"{message} ({severity} at {limit:g}%)", remedy, "/proc/stat")]


def _cpus_busy(o: CpuShare, thresholds: dict[str, Any]) -> list[Finding]:
    """The CPUs as a whole are busy with work that competes with the broker."""
    return _graded_share(
        BUSY,
        o.busy,
        thresholds,
        f"CPUs are {o.busy:g}% busy overall (user {o.user:g}%, system {o.system:g}%)",
        "Find the consumers with `top -H` or `pidstat -u 1 5`. If iggy-server's `shard-N` "
        "threads are the busy ones the node is undersized for its traffic: add cores or spread "
        "partitions over more nodes; if something else is busy, move it off the broker node, "
        "since every shard is pinned to one core and cannot escape a competing process.",
    )


def _cpus_wait_for_disk(o: CpuShare, thresholds: dict[str, Any]) -> list[Finding]:
    """The CPUs sit idle waiting for disk I/O."""
    return _graded_share(
        IOWAIT,
        o.iowait,
        thresholds,
        f"CPUs spent {o.iowait:g}% of the time idle waiting for disk I/O",
        "The disk is the bottleneck: `iostat -x 1 5` shows which device is saturated (%util, "
        "r_await/w_await) and `pidstat -d 1 5` or `iotop -o` who drives it. Keep Iggy's data "
        "directory on its own fast device; a broker whose appends and fsyncs wait on the disk "
        "answers producers late.",
    )


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


def _saturated_cores(hottest: list[CpuShare], thresholds: dict[str, Any]) -> list[Finding]:
    """Single cores are saturated even when the average looks fine."""
    hot = [c for c in hottest if CORE_BUSY.grade(c.busy, thresholds)]
    if not hot:
        return []
    core_warn = CORE_BUSY.limit(Severity.WARN, thresholds)
    names = ", ".join(f"{c.name} {c.busy:g}%" for c in hot[:8])
    more = f" and {len(hot) - 8} more" if len(hot) > 8 else ""
    return [
        Finding(
            Severity.WARN,
            f"{len(hot)} core(s) at or over {core_warn:g}% busy: {names}{more}",
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
    o = facts.overall
    ok = (
        f"busy {o.busy:g}% (user {o.user:g}%, system {o.system:g}%, iowait {o.iowait:g}%, "
        f"steal {o.steal:g}%, niced {o.nice:g}%) over {facts.interval_s:.2f} s "
        f"on {len(facts.cores) or 1} CPUs"
    )
    if o.agent:
        ok += f"; this snapshot's own {o.agent:g}% left out"
    hot_text = ", ".join(f"{c.name} {c.busy:g}%" for c in hottest[:3])
    if hot_text:
        ok += f"; hottest {hot_text}"
    return ok


def judge_usage(facts: UsageFacts, thresholds: dict[str, Any]) -> Result:
    """Judge busy, iowait and steal overall and the busiest single cores."""
    o = facts.overall
    hottest = sorted(facts.cores, key=lambda c: c.busy, reverse=True)
    findings = [
        *_cpus_busy(o, thresholds),
        *_cpus_wait_for_disk(o, thresholds),
        *_cpu_stolen(o, thresholds),
        *_saturated_cores(hottest, thresholds),
    ]
    data = {
        "interval_s": facts.interval_s,
        "overall": o.to_dict(),
        "hottest": [c.name for c in hottest[:3]],
        "per_core": [c.to_dict() for c in facts.cores],
        "note": "busy excludes niced time and this snapshot's own CPU (agent_pct, overall "
        "only: per-core figures include it); the agent runs at nice 10",
    }
    return Result.from_findings(findings, ok=_usage_summary(facts, hottest), data=data)


@check(
    id="cpu.usage",
    category="cpu",
    title="CPU utilisation",
    description="Busy, iowait and steal per core from two /proc/stat reads 0.5 s apart.",
    requires=Requirements(paths=("/proc/stat",)),
    timeout_s=5,
    bands=(BUSY, IOWAIT, STEAL, CORE_BUSY),
    sampling_s=0.5,
)
def cpu_usage(ctx: Context) -> Result:
    """Utilisation over a short sample, overall and per core."""
    facts, evidence = read_usage(ctx)
    ctx.artifact("proc-stat-samples.txt", evidence)
    if facts is None:
        return Result.skipped(
            "/proc/stat showed no elapsed CPU time between two reads (or no `cpu` line); "
            "cannot compute utilisation"
        )
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


@dataclass(frozen=True)
class PsiLine:
    """One `some`/`full` line of a /proc/pressure file (averages are percent of time)."""

    avg10: float
    avg60: float
    avg300: float
    total_us: int


@dataclass
class PressureFacts:
    """PSI lines per resource, and why any resource could not be read."""

    lines: dict[str, dict[str, PsiLine]] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)


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


def read_pressure(ctx: Context) -> PressureFacts:
    """Read /proc/pressure/{cpu,io,memory}; keep them as evidence."""
    facts = PressureFacts()
    for resource in PSI_RESOURCES:
        node_path = f"/proc/pressure/{resource}"
        try:
            text = ctx.read_text(node_path, max_bytes=4096)
        except OSError as exc:
            facts.unreadable[resource] = exc.strerror or str(exc)
            continue
        ctx.artifact(f"pressure-{resource}.txt", text)
        facts.lines[resource] = parse_psi(text)
    return facts


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


def judge_pressure(facts: PressureFacts, thresholds: dict[str, Any]) -> Result:
    """A minute-long stall over the fail threshold fails; any average over warn warns."""
    findings: list[Finding] = []
    for resource, kind in PSI_BANDS:
        line = facts.lines.get(resource, {}).get(kind)
        if line is not None:
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
    parts = []
    for resource in PSI_RESOURCES:
        lines = facts.lines.get(resource, {})
        if "some" in lines:
            text = f"{resource} some {lines['some'].avg10:g}/{lines['some'].avg60:g}%"
            if resource != "cpu" and "full" in lines:
                text += f" full {lines['full'].avg10:g}/{lines['full'].avg60:g}%"
            parts.append(text)
    ok = "PSI avg10/avg60: " + ", ".join(parts) if parts else "no PSI data"
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
        "note": "system-wide cpu `full` is always 0 (defined only for cgroups); not judged",
    }
    return Result.from_findings(findings, ok=ok, data=data)


@check(
    id="cpu.pressure",
    category="cpu",
    title="Pressure stall information (CPU, I/O, memory)",
    description="PSI some/full averages from /proc/pressure/{cpu,io,memory} against thresholds.",
    timeout_s=5,
    bands=tuple(PSI_BANDS.values()),
)
def cpu_pressure(ctx: Context) -> Result:
    """How much of the time tasks stalled for CPU, I/O and memory (Linux PSI)."""
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
    """Scaling governor per CPU; a broker wants `performance`."""
    cpus = read_frequency(ctx)
    if not cpus:
        return Result.skipped(
            "cpufreq is not exposed (no /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor): "
            "usual in VMs, where the hypervisor controls CPU frequency; check the host's "
            "governor if you run it"
        )
    return judge_frequency(cpus, ctx.thresholds)
