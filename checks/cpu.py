"""CPU checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from snapshot_agent.check import check
from snapshot_agent.context import Context
from snapshot_agent.results import Finding, Result, Severity


@dataclass(frozen=True)
class LoadFacts:
    """What /proc/loadavg and the CPU count say."""

    load1: float
    load5: float
    load15: float
    runnable: int
    threads: int
    cores: int


def parse_cpu_list(text: str) -> int:
    """Count CPUs in a kernel CPU list such as '0-3,8,10-11'."""
    count = 0
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        count += int(hi) - int(lo) + 1 if hi else 1
    return count


def read_load(ctx: Context) -> LoadFacts:
    """Read the load averages and the number of online CPUs."""
    fields = ctx.read_text("/proc/loadavg").split()
    runnable, _, threads = fields[3].partition("/")
    online = ctx.read_optional("/sys/devices/system/cpu/online")
    cores = parse_cpu_list(online) if online else 0
    if cores <= 0:
        cpuinfo = ctx.read_optional("/proc/cpuinfo") or ""
        cores = sum(1 for line in cpuinfo.splitlines() if line.startswith("processor")) or 1
    return LoadFacts(
        float(fields[0]), float(fields[1]), float(fields[2]), int(runnable), int(threads), cores
    )


def judge_load(facts: LoadFacts, thresholds: dict[str, Any]) -> Result:
    """Judge the 5-minute load per core; the 1- and 15-minute values tell the trend."""
    per_core = facts.load5 / facts.cores
    warn, fail = float(thresholds["warn_per_core"]), float(thresholds["fail_per_core"])
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
    if per_core >= fail:
        findings.append(
            Finding(
                Severity.FAIL,
                message + f" is at or over {fail:g} per core",
                remedy,
                "/proc/loadavg",
            )
        )
    elif per_core >= warn:
        findings.append(
            Finding(
                Severity.WARN,
                message + f" is at or over {warn:g} per core",
                remedy,
                "/proc/loadavg",
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
    thresholds={"warn_per_core": 1.0, "fail_per_core": 2.0},
)
def cpu_load(ctx: Context) -> Result:
    """Load average per core, judged on the 5-minute value."""
    return judge_load(read_load(ctx), ctx.thresholds)
