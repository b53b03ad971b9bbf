"""The Iggy broker as a process: shards against cores, CPU pinning, locked memory, open
files, memory against its pool, uptime and restarts.

Facts come from /proc and the broker's cgroup through snapshot_agent.node (readable in
fixture trees); the judge is a set of small named rules over them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from snapshot_agent.core.check import Requirements, check
from snapshot_agent.core.context import Context
from snapshot_agent.core.grading import Band
from snapshot_agent.core.printable import printable
from snapshot_agent.core.results import MAX_ROWS, Finding, Result, Severity
from snapshot_agent.core.units import format_duration, mib_or_gib
from snapshot_agent.node.cgroup import read_cgroup
from snapshot_agent.node.iggy_api import parse_byte_size
from snapshot_agent.node.iggy_install import IggyInstall, discover
from snapshot_agent.node.iggy_process import (
    DEFAULT_ALLOCATION,
    DEFAULT_POOL_SIZE,
    DIGITS,
    RING_MEMLOCK_UNTIL,
    BrokerThreads,
    CpuAllocation,
    FdCount,
    TaskInfo,
    all_cores_shards,
    allowed_cpus,
    count_fds,
    format_cpu_set,
    parse_cpu_allocation,
    read_broker_threads,
    read_unit_restarts,
)
from snapshot_agent.node.processes import BrokerProcess, read_status
from snapshot_agent.node.procfs import Limit, parse_kib, read_limits, read_mem_total
from snapshot_agent.node.system import parse_uptime, read_kernel_version

SHARDS_SHOWN = 8  # shard names listed in one finding

#: Shard threads per usable core (affinity, capped by the cgroup's CPU quota).
SHARDS_PER_CORE = Band("shards_per_core", warn=1.25, fail=2.0)
#: The broker's soft memlock limit in MiB, when not unlimited (io_uring brokers only).
MEMLOCK_BELOW = Band.minimum("memlock_mib_below", warn=64)
#: Open fds in percent of the soft nofile limit.
FDS_USED = Band("fds_used_pct", warn=80, fail=90)
#: Resident memory in percent of the memory the pool outgrows (cgroup limit or RAM): the
#: evidence that turns a pool larger than the memory into a warning.
RSS_NEAR_MEMORY = Band("rss_of_memory_pct", warn=90)


@dataclass(frozen=True)
class PoolSetting:
    """`[system.memory_pool]` as the broker runs it (None size: unreadable)."""

    enabled: bool
    size: int | None
    source: str  # "config /etc/iggy/server.toml", "Iggy's default", ...


@dataclass
class ProcessFacts:
    """What the judge needs about the running broker; None where it could not be read."""

    broker: BrokerProcess
    unit: str
    threads: BrokerThreads
    allocation: CpuAllocation
    allocation_source: str
    affinity: frozenset[int] | None = None  # the process's Cpus_allowed_list
    cpu_quota: float | None = None  # cores (cgroup cpu.max), the smallest over its levels
    cpu_quota_at: str = ""
    memlock: Limit | None = None  # bytes; soft/hard None = unlimited; None = unreadable
    nofile: Limit | None = None
    fds: FdCount = field(default_factory=lambda: FdCount(None))
    rss: int | None = None
    pool: PoolSetting | None = None
    mem_total: int | None = None
    memory_limit: int | None = None  # the smallest binding cgroup memory.max
    memory_limit_at: str = ""
    memory_oom_events: int | None = None  # memory.events oom/oom_kill at that limit's level
    kernel: tuple[int, int, int] | None = None  # the running kernel's version
    uptime_s: float | None = None
    unit_props: dict[str, str] | None = None  # systemctl show of the unit running it

    @property
    def label(self) -> str:
        """'iggy-server (pid 812)'."""
        return f"{printable(self.broker.name or 'iggy-server')} (pid {self.broker.pid})"

    @property
    def short_unit(self) -> str:
        """The unit as people type it ('iggy-server')."""
        return self.unit.removesuffix(".service")

    @property
    def usable_cores(self) -> float | None:
        """Cores the broker can use at once: its affinity, capped by the cgroup's CPU quota."""
        if self.affinity is None:
            return self.cpu_quota
        return min(len(self.affinity), self.cpu_quota) if self.cpu_quota else len(self.affinity)


# -- small helpers -----------------------------------------------------------------------


def _names(tasks: list[TaskInfo]) -> str:
    """'shard-0, shard-3' (at most SHARDS_SHOWN, then a count)."""
    shown = ", ".join(printable(t.name) for t in tasks[:SHARDS_SHOWN])
    more = len(tasks) - SHARDS_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def _cores(n: float) -> str:
    """2 -> '2 cores', 1.5 -> '1.5 cores', 1 -> '1 core'."""
    return f"{n:g} core" + ("" if n == 1 else "s")


def _restart_hint(facts: ProcessFacts) -> str:
    """How a changed setting reaches the running broker."""
    return f" Then restart the broker (`systemctl restart {facts.short_unit}`)."


# -- rules: shards and CPUs ----------------------------------------------------------------


def _pre_sharding(facts: ProcessFacts) -> Finding | None:
    """INFO: threads seen, none a shard: a 0.5 broker on tokio; shard rules do not apply."""
    if facts.threads.generation != "tokio":
        return None
    return Finding(
        Severity.INFO,
        f"{facts.label} runs {facts.threads.named} threads and none is a shard-N thread: a "
        "pre-0.6 broker on tokio, so shard, pinning and io_uring rules do not apply",
        "",
        f"/proc/{facts.broker.pid}/task",
    )


def _oversubscribed(facts: ProcessFacts, thresholds: dict[str, Any]) -> Finding | None:
    """WARN or FAIL: more shard threads than cores the broker may use (SHARDS_PER_CORE)."""
    shards, usable = len(facts.threads.shards), facts.usable_cores
    if not shards or not usable:
        return None
    severity = SHARDS_PER_CORE.grade(shards / usable, thresholds)
    if severity is None:
        return None
    by_quota = facts.cpu_quota is not None and usable == facts.cpu_quota
    where = (
        f"the cgroup's CPU quota ({facts.cpu_quota_at}/cpu.max)"
        if by_quota
        else f"its CPU affinity ({format_cpu_set(facts.affinity or frozenset())})"
    )
    return Finding(
        severity,
        f"{facts.label} runs {shards} shard threads on {_cores(usable)} allowed by {where}: "
        f"{shards / usable:.1f} shards per core (at or over "
        f"{SHARDS_PER_CORE.limit(severity, thresholds):g}); each shard is one thread pinned to "
        "one core, so shards sharing a core stall every partition they own",
        f"Set `[system.sharding] cpu_allocation = {max(1, int(usable))}` in the server config "
        "(or IGGY_SYSTEM_SHARDING_CPU_ALLOCATION) to match the cores, or give the broker more "
        "CPU (Kubernetes: a CPU limit of whole cores equal to the shards). `numa:auto` and a "
        "count do not look at the cgroup's CPU quota." + _restart_hint(facts),
        f"/proc/{facts.broker.pid}/task",
    )


def _unpinned(facts: ProcessFacts) -> Finding | None:
    """WARN: shard threads allowed on more than one CPU: Iggy's bind failed (it only logs)."""
    loose = [t for t in facts.threads.shards if t.cpus is not None and len(t.cpus) > 1]
    if not loose:
        return None
    allowed = format_cpu_set(loose[0].cpus or frozenset())
    return Finding(
        Severity.WARN,
        f"{len(loose)} of {len(facts.threads.shards)} shard threads of {facts.label} are not "
        f"pinned to one CPU ({_names(loose)}: allowed on {allowed}); Iggy pins each shard and "
        "only logs 'Failed to bind cpu' when it cannot, so these shards float and share cores",
        f"`cpu_allocation = {facts.allocation.text}` ({facts.allocation_source}) names cores the "
        'broker may not use: "all" and a count N pin to cores 0..N-1, a range a..b to '
        "cores a..b-1, "
        "whatever the cgroup cpuset, taskset or `docker --cpuset-cpus` allows "
        f"(allowed here: {format_cpu_set(facts.affinity or frozenset()) or 'unknown'}). Pick "
        "cores inside the allowed set, or widen it; look for 'Failed to bind cpu' in the "
        "server log." + _restart_hint(facts),
        f"/proc/{facts.broker.pid}/task/{loose[0].tid}/status",
    )


def _shared_cores(facts: ProcessFacts) -> Finding | None:
    """WARN: two or more shards pinned to the same single CPU."""
    by_cpu: dict[int, list[TaskInfo]] = {}
    for t in facts.threads.shards:
        if t.cpus is not None and len(t.cpus) == 1:
            by_cpu.setdefault(next(iter(t.cpus)), []).append(t)
    shared = {cpu: ts for cpu, ts in by_cpu.items() if len(ts) > 1}
    if not shared:
        return None
    cpu, tasks = min(shared.items())
    return Finding(
        Severity.WARN,
        f"{sum(len(ts) for ts in shared.values())} shard threads of {facts.label} are pinned "
        f"to {len(shared)} shared CPU(s) (CPU {cpu}: {_names(tasks)}); shards on one core take "
        "turns, so their partitions see double latency",
        "Give every shard its own core: set `[system.sharding] cpu_allocation` to a count or "
        "range within the broker's allowed CPUs, or widen its cpuset." + _restart_hint(facts),
        f"/proc/{facts.broker.pid}/task/{tasks[0].tid}/status",
    )


def _expected_shards(facts: ProcessFacts) -> int | None:
    """Shards cpu_allocation starts on this node, when that can be told from here."""
    if facts.allocation.kind == "all" and facts.affinity is not None:
        return all_cores_shards(len(facts.affinity), facts.cpu_quota)
    return facts.allocation.shards


def _allocation_drift(facts: ProcessFacts) -> Finding | None:
    """INFO: the config asks for another shard count than runs (changed since the start)."""
    expected, running = _expected_shards(facts), len(facts.threads.shards)
    if (
        expected is None
        or not running
        or expected == running
        or facts.threads.stopped_early
        or facts.allocation_source.startswith("Iggy's default")
    ):
        return None
    return Finding(
        Severity.INFO,
        f"`cpu_allocation = {facts.allocation.text}` ({facts.allocation_source}) starts "
        f"{expected} shards here, but {facts.label} runs {running}: the config, the CPUs or the "
        "CPU quota changed since the broker started",
        "The running broker keeps its shards until restarted; restart it in a quiet moment "
        "if the new setting is intended.",
        f"/proc/{facts.broker.pid}/task",
    )


def _invalid_allocation(facts: ProcessFacts) -> Finding | None:
    """WARN: a cpu_allocation Iggy would refuse: the next restart fails."""
    if facts.allocation.kind != "invalid":
        return None
    return Finding(
        Severity.WARN,
        f"`cpu_allocation = {printable(facts.allocation.text)}` ({facts.allocation_source}) is "
        "not a value Iggy accepts: the broker runs with what it started with, and will not "
        "start again with this config",
        'Use "all", a number of shards (4), a range of cores ("2..6") or "numa:auto" '
        "(server-0.8.0:core/configs/src/server_config/sharding.rs).",
        "system.sharding.cpu_allocation",
    )


# -- rules: limits and open files ----------------------------------------------------------


def _memlock(facts: ProcessFacts, thresholds: dict[str, Any]) -> Finding | None:
    """WARN: a finite memlock below MEMLOCK_BELOW on an io_uring broker on a kernel before
    5.12 (later kernels charge the rings to the memory cgroup: INFO at most)."""
    if facts.memlock is None or facts.memlock.soft is None or facts.threads.generation == "tokio":
        return None
    soft = facts.memlock.soft
    severity = MEMLOCK_BELOW.grade(soft / 1024**2, thresholds)
    if severity is None:
        return None
    limit = f"{MEMLOCK_BELOW.limit(severity, thresholds):g} MiB"
    where = f"/proc/{facts.broker.pid}/limits"
    message = (
        f"{facts.label} may lock only {mib_or_gib(soft)} of memory (soft memlock limit, "
        f"below {limit})"
    )
    if facts.kernel is None or facts.kernel >= RING_MEMLOCK_UNTIL:
        return Finding(Severity.INFO, message + _memlock_moot(facts), "", where)
    return Finding(
        severity,
        f"{message}; Iggy 0.6+ runs every shard on io_uring, whose rings count as locked "
        f"memory on this kernel ({_release(facts.kernel)}, before 5.12)",
        f"`systemctl edit {facts.short_unit}` and add `[Service]` `LimitMEMLOCK=infinity` (in "
        "Docker `--ulimit memlock=-1:-1`), as Iggy's own start-up diagnostic advises "
        "(server-0.8.0:core/server/src/diagnostics.rs); a shard that cannot create its ring "
        "panics at start." + _restart_hint(facts),
        where,
    )


def _memlock_moot(facts: ProcessFacts) -> str:
    """Why a small memlock does not hold the broker back on this (or an unknown) kernel."""
    if facts.kernel is None:
        return (
            "; the kernel version could not be read: before Linux 5.12 io_uring rings count "
            "against it (set `LimitMEMLOCK=infinity` there), from 5.12 they do not"
        )
    return (
        f"; kernel {_release(facts.kernel)} charges io_uring rings to the memory cgroup, not "
        "to memlock, so it does not limit the shards"
    )


def _release(version: tuple[int, int, int]) -> str:
    """(6, 1, 0) -> '6.1'."""
    return f"{version[0]}.{version[1]}"


def _fds_used_pct(facts: ProcessFacts) -> float | None:
    """Open fds in percent of the soft nofile limit (None: unknown or unlimited)."""
    soft = facts.nofile.soft if facts.nofile else None
    return facts.fds.count / soft * 100 if facts.fds.count is not None and soft else None


def _open_files(facts: ProcessFacts, thresholds: dict[str, Any]) -> Finding | None:
    """WARN or FAIL: open fds reach the FDS_USED band of the soft nofile limit."""
    pct = _fds_used_pct(facts)
    severity = FDS_USED.grade(pct, thresholds)
    if pct is None or severity is None or facts.nofile is None:
        return None
    return Finding(
        severity,
        f"{facts.label} has {facts.fds.count} of {facts.nofile.soft} files open ({pct:.0f}%, at "
        f"or over {FDS_USED.limit(severity, thresholds):g}%); at the limit new connections and "
        "new segments fail with 'Too many open files'",
        f"`systemctl edit {facts.short_unit}` -> `[Service]` `LimitNOFILE=65536` (or more) "
        "and restart; see process.fds for what the descriptors are (client sockets, segment "
        "and index files).",
        f"/proc/{facts.broker.pid}/fd",
    )


def _fds_unknown(facts: ProcessFacts) -> Finding | None:
    """INFO: open fds not counted (not root) or counted only partly."""
    if facts.fds.count is not None and facts.fds.complete:
        return None
    return Finding(Severity.INFO, facts.fds.note, "", f"/proc/{facts.broker.pid}/fd")


# -- rules: memory ---------------------------------------------------------------------------


def _pool_size(facts: ProcessFacts) -> int | None:
    """The memory pool size when the pool is enabled and its size known."""
    pool = facts.pool
    return pool.size if pool is not None and pool.enabled and pool.size else None


def _pool_over_memory(facts: ProcessFacts, thresholds: dict[str, Any]) -> Finding | None:
    """INFO: the pool is larger than the cgroup limit or the RAM; WARN only with evidence
    that memory runs out (RSS within RSS_NEAR_MEMORY of it, or OOM events in the cgroup).

    The pool is lazy and a soft cap: it allocates buffers as they are used and, once
    full, allocates outside itself (server-0.8.0:core/common/src/alloc/memory_pool.rs,
    `acquire_buffer`), so its size alone never exhausts memory.
    """
    size = _pool_size(facts)
    if size is None or facts.pool is None:
        return None
    if facts.memory_limit is not None and facts.memory_limit < size:
        memory = (
            f"its cgroup memory limit {mib_or_gib(facts.memory_limit)} (memory.max at "
            f"{facts.memory_limit_at})"
        )
        return _pool_finding(facts, thresholds, size, facts.memory_limit, memory)
    if facts.mem_total is not None and facts.mem_total < size:
        memory = f"the node's {mib_or_gib(facts.mem_total)} of memory"
        return _pool_finding(facts, thresholds, size, facts.mem_total, memory)
    return None


def _pool_finding(
    facts: ProcessFacts, thresholds: dict[str, Any], size: int, memory: int, what: str
) -> Finding:
    """The pool outgrows `memory` bytes (`what`): WARN with evidence, else INFO."""
    assert facts.pool is not None
    pool = f"`[system.memory_pool] size` {mib_or_gib(size)} ({facts.pool.source})"
    rss_pct = facts.rss / memory * 100 if facts.rss is not None else None
    severity = RSS_NEAR_MEMORY.grade(rss_pct, thresholds)
    oom = facts.memory_oom_events if facts.memory_limit == memory else None
    evidence = []
    if severity is not None and rss_pct is not None and facts.rss is not None:
        evidence.append(f"it holds {mib_or_gib(facts.rss)} resident ({rss_pct:.0f}% of it)")
    if oom:
        evidence.append(f"the cgroup counted {oom} OOM events")
    remedy = (
        "Size the pool below the memory the broker may use, leaving room for indexes, "
        "caches and client buffers: `[system.memory_pool] size` (or "
        "IGGY_SYSTEM_MEMORY_POOL_SIZE), a multiple of 4 KiB, at least 512 MiB"
    )
    if not evidence:
        used = f"; it holds {mib_or_gib(facts.rss)} resident now" if facts.rss is not None else ""
        return Finding(
            Severity.INFO,
            f"{facts.label}'s {pool} is larger than {what}; the pool fills lazily and "
            f"allocates outside itself once full, so this is harmless until the broker's "
            f"memory nears that{used}",
            remedy + ".",
            facts.memory_limit_at or "/proc/meminfo",
        )
    return Finding(
        Severity.WARN,
        f"{facts.label} is running out of {what}: {' and '.join(evidence)}; its {pool} is "
        "larger still, so a busy broker will be OOM-killed",
        remedy + ", or raise the limit (`systemctl edit "
        f"{facts.short_unit}` -> `MemoryMax=`; Kubernetes: the container's memory limit)."
        + _restart_hint(facts),
        facts.memory_limit_at or "/proc/meminfo",
    )


def _rss_over_pool(facts: ProcessFacts, thresholds: dict[str, Any]) -> Finding | None:
    """INFO: resident memory well above the pool (more than rss_headroom_pct over it)."""
    size = _pool_size(facts)
    if size is None or facts.rss is None:
        return None
    headroom = float(thresholds["rss_headroom_pct"])
    if facts.rss <= size * (1 + headroom / 100):
        return None
    return Finding(
        Severity.INFO,
        f"{facts.label} holds {mib_or_gib(facts.rss)} resident, more than its "
        f"{mib_or_gib(size)} memory pool plus {headroom:g}%",
        "Memory outside the pool is indexes, caches and client buffers; if it keeps growing "
        "between snapshots, compare the partition and client counts (iggy.health) and report "
        "it to the Iggy project with this snapshot.",
        f"/proc/{facts.broker.pid}/status",
    )


# -- rules: uptime and restarts ------------------------------------------------------------


def _recent_start(facts: ProcessFacts, thresholds: dict[str, Any]) -> Finding | None:
    """INFO: the broker started less than recent_start_minutes ago."""
    if facts.uptime_s is None or facts.uptime_s >= float(thresholds["recent_start_minutes"]) * 60:
        return None
    return Finding(
        Severity.INFO,
        f"{facts.label} started {format_duration(facts.uptime_s)} ago",
        "If the restart was not planned, read why it stopped: `journalctl -u "
        f"{facts.unit} -b -n 200` (or `docker logs`), iggy.logs and the kernel log "
        "(an OOM kill).",
        f"/proc/{facts.broker.pid}/stat",
    )


def _restart_count(facts: ProcessFacts) -> int | None:
    """systemd's NRestarts of the unit running the broker (None: unknown)."""
    count = (facts.unit_props or {}).get("NRestarts", "")
    return int(count) if DIGITS.fullmatch(count) else None


def _restarts(facts: ProcessFacts) -> Finding | None:
    """INFO: systemd restarted the broker's unit automatically (systemd.units judges loops)."""
    count = _restart_count(facts)
    if not count:
        return None
    return Finding(
        Severity.INFO,
        f"systemd restarted {facts.unit} automatically {count} times since it was last "
        "started by hand",
        f"Each restart drops every client; read the causes with `journalctl -u {facts.unit} "
        "| grep -E 'Failed|exited|oom'` (systemd.units judges a restart loop).",
        facts.unit,
    )


# -- the judge ---------------------------------------------------------------------------------


def _summary(facts: ProcessFacts) -> str:
    """One line: shards on cores, memory against the pool, fds, memlock, uptime."""
    parts = [facts.label]
    shards, usable = len(facts.threads.shards), facts.usable_cores
    if shards:
        on = f" on {_cores(usable)}" if usable else ""
        parts.append(f"{shards} shards{on} ({facts.allocation.text})")
    elif facts.threads.generation == "tokio":
        parts.append("pre-0.6 (no shards)")
    if facts.rss is not None:
        size = _pool_size(facts)
        parts.append(
            f"RSS {mib_or_gib(facts.rss)}" + (f" (pool {mib_or_gib(size)})" if size else "")
        )
    if facts.fds.count is not None and facts.nofile is not None:
        limit = facts.nofile.soft if facts.nofile.soft is not None else "unlimited"
        parts.append(f"{facts.fds.count}/{limit} fds")
    if facts.memlock is not None:
        soft = facts.memlock.soft
        parts.append("memlock " + ("unlimited" if soft is None else mib_or_gib(soft)))
    if facts.uptime_s is not None:
        parts.append(f"up {format_duration(facts.uptime_s)}")
    return ", ".join(parts)


def _thread_rows(facts: ProcessFacts) -> list[dict[str, Any]]:
    """The shard threads (else every thread) with their CPUs, for the table."""
    tasks = facts.threads.shards or facts.threads.tasks
    return [
        {
            "tid": t.tid,
            "name": printable(t.name),
            "cpus": format_cpu_set(t.cpus) if t.cpus is not None else None,
        }
        for t in tasks[:MAX_ROWS]
    ]


def _data(facts: ProcessFacts) -> dict[str, Any]:
    """The facts as the report's data."""
    b = facts.broker
    soft = facts.nofile.soft if facts.nofile else None
    pct = _fds_used_pct(facts)
    return {
        "pid": b.pid,
        "found_by": b.found_by,
        "generation": facts.threads.generation,
        "threads": facts.threads.listed,
        "threads_read": len(facts.threads.tasks),
        "shards": len(facts.threads.shards),
        "shard_threads": _thread_rows(facts),
        "cpu_allocation": facts.allocation.text,
        "cpu_allocation_source": facts.allocation_source,
        "affinity": format_cpu_set(facts.affinity) if facts.affinity is not None else None,
        "cpu_quota_cores": facts.cpu_quota,
        "usable_cores": facts.usable_cores,
        "memlock_soft_bytes": facts.memlock.soft if facts.memlock else None,
        "nofile_soft": soft,
        "open_fds": facts.fds.count,
        "fds_used_pct": round(pct, 1) if pct is not None else None,
        "rss_bytes": facts.rss,
        "memory_pool_enabled": facts.pool.enabled if facts.pool else None,
        "memory_pool_bytes": facts.pool.size if facts.pool else None,
        "memory_pool_source": facts.pool.source if facts.pool else None,
        "memory_limit_bytes": facts.memory_limit,
        "memory_oom_events": facts.memory_oom_events,
        "kernel": _release(facts.kernel) if facts.kernel else None,
        "mem_total_bytes": facts.mem_total,
        "uptime_s": round(facts.uptime_s) if facts.uptime_s is not None else None,
        "unit": facts.unit,
        "restarts": _restart_count(facts),
    }


def judge_process(facts: ProcessFacts, thresholds: dict[str, Any]) -> Result:
    """Judge the broker's shards, CPUs, limits, open files and memory; note uptime, restarts."""
    rules = (
        _pre_sharding(facts),
        _oversubscribed(facts, thresholds),
        _unpinned(facts),
        _shared_cores(facts),
        _invalid_allocation(facts),
        _allocation_drift(facts),
        _memlock(facts, thresholds),
        _open_files(facts, thresholds),
        _fds_unknown(facts),
        _pool_over_memory(facts, thresholds),
        _rss_over_pool(facts, thresholds),
        _recent_start(facts, thresholds),
        _restarts(facts),
    )
    findings = [f for f in rules if f is not None]
    if facts.threads.stopped_early:
        findings.append(
            Finding(
                Severity.INFO,
                f"read {len(facts.threads.tasks)} of {facts.threads.listed} threads before the "
                "check's time ran out; shard facts cover those only",
                "",
                f"/proc/{facts.broker.pid}/task",
            )
        )
    return Result.from_findings(findings, ok=_summary(facts), data=_data(facts))


# -- reading ---------------------------------------------------------------------------------


def _allocation(install: IggyInstall) -> tuple[CpuAllocation, str]:
    """cpu_allocation after the IGGY_* overrides, and where it came from."""
    value = install.setting("system.sharding.cpu_allocation")
    key = "system.sharding.cpu_allocation"
    if value is None:
        unread = " (the config could not be read)" if install.config.problem else ""
        return parse_cpu_allocation(DEFAULT_ALLOCATION), f"Iggy's default since 0.7{unread}"
    if key in install.config.overrides:
        return parse_cpu_allocation(value), install.config.overrides[key]
    return parse_cpu_allocation(value), f"config {install.config.path}"


def _pool(install: IggyInstall) -> PoolSetting | None:
    """The memory pool as configured, Iggy's defaults where the config says nothing.

    None when a config was found but could not be parsed: the pool is unknown.
    """
    if install.config.problem:
        return None
    enabled = install.setting("system.memory_pool.enabled", True)
    raw = install.setting("system.memory_pool.size")
    if raw is None:
        source = "Iggy's default"
        size: int | None = DEFAULT_POOL_SIZE
    else:
        key = "system.memory_pool.size"
        source = install.config.overrides.get(key) or f"config {install.config.path}"
        size = _byte_size(raw)
    return PoolSetting(enabled is not False, size, source)


def _byte_size(value: Any) -> int | None:
    """A config byte size ("4 GiB", 4294967296) in bytes; None when Iggy would refuse it."""
    try:
        return parse_byte_size(value)
    except ValueError:
        return None


def _uptime(ctx: Context, broker: BrokerProcess) -> float | None:
    """Seconds since the broker started (its stat start time against /proc/uptime)."""
    boot = parse_uptime(ctx.read_optional("/proc/uptime", 4096) or "")
    if boot is None or not broker.start_ticks:
        return None
    return max(0.0, boot - broker.start_ticks / os.sysconf("SC_CLK_TCK"))


def _cgroup(ctx: Context, facts: ProcessFacts) -> None:
    """CPU quota and the smallest memory limit of the broker's own cgroup (not the agent's)."""
    cg = read_cgroup(ctx)
    if cg.broker_pid != facts.broker.pid:
        return
    facts.cpu_quota, facts.cpu_quota_at = cg.cpu_quota, cg.cpu_limit_at
    limits = cg.memory_limits(facts.mem_total) if cg.memory_known else []
    if smallest := min(limits, key=lambda lvl: lvl.limit or 0, default=None):
        facts.memory_limit, facts.memory_limit_at = smallest.limit, smallest.at
        facts.memory_oom_events = smallest.oom_events if smallest.events else None


def _unit(ctx: Context, facts: ProcessFacts) -> None:
    """The unit's restart count, when the unit is what runs this broker."""
    props = read_unit_restarts(ctx, facts.unit)
    if props and props.get("MainPID") == str(facts.broker.pid):
        facts.unit_props = props


def read_process(ctx: Context, install: IggyInstall, broker: BrokerProcess) -> ProcessFacts:
    """Everything judge_process looks at, read from /proc, the cgroup and systemd."""
    allocation, source = _allocation(install)
    facts = ProcessFacts(
        broker, install.unit, read_broker_threads(ctx, broker.pid), allocation, source
    )
    status = read_status(ctx, broker.pid) or {}
    facts.affinity = allowed_cpus(status)
    facts.rss = kib * 1024 if (kib := parse_kib(status.get("VmRSS", ""))) is not None else None
    limits = read_limits(ctx, broker.pid) or {}
    facts.memlock = limits.get("Max locked memory")
    facts.nofile = limits.get("Max open files")
    facts.fds = count_fds(ctx, broker.pid)
    facts.pool = _pool(install)
    facts.mem_total = read_mem_total(ctx)
    facts.uptime_s = _uptime(ctx, broker)
    facts.kernel = read_kernel_version(ctx)
    _cgroup(ctx, facts)
    _unit(ctx, facts)
    return facts


@check(
    id="iggy.process",
    category="iggy",
    title="Iggy broker process",
    description=(
        "The broker's shard threads against its cores and CPU pinning, memlock, open files "
        "against nofile, memory against its memory pool and cgroup limit, uptime, restarts."
    ),
    requires=Requirements(paths=("/proc",)),
    timeout_s=10,
    bands=(SHARDS_PER_CORE, MEMLOCK_BELOW, FDS_USED, RSS_NEAR_MEMORY),
    thresholds={"rss_headroom_pct": 50, "recent_start_minutes": 60},
)
def iggy_process(ctx: Context) -> Result:
    """How the running broker sits on this node's CPUs and memory.

    Verdicts:
    - pass: four shards pinned one per core on four cores, memlock unlimited, few fds,
      RSS within the pool [test_iggy_process_healthy_broker_passes]
    - pass: a real process with shard-N threads pinned each to its own CPU
      [test_iggy_process_on_a_real_sharded_process]
    - pass: the same process through the real CLI, in the archive's report.json
      [test_iggy_process_through_the_real_cli]
    - pass: a 0.5 broker on tokio with a small memlock: no shard or memlock finding
      [test_iggy_process_pre_sharding_broker_is_not_held_to_shards]
    - pass: started ten minutes ago and restarted twice by systemd (notes)
      [test_iggy_process_notes_recent_start_and_restarts]
    - skipped: no broker, config or data directory on the node
      [test_iggy_process_skipped_without_iggy]
    - skipped: a config but no running broker [test_iggy_process_skipped_without_iggy]
    - warn: five shards on four cores [test_iggy_process_shards_against_cores]
    - warn: shards not pinned, or two on one CPU
      [test_iggy_process_unpinned_and_shared_shards_warn]
    - warn: memlock 8 MiB on an io_uring broker on kernel 5.10
      [test_iggy_process_memlock_and_fds]
    - pass: memlock 8 MiB on kernel 6.1 (rings charged to the memory cgroup; a note)
      [test_iggy_process_memlock_is_moot_from_kernel_5_12]
    - warn: 85 % of the nofile limit open [test_iggy_process_memlock_and_fds]
    - fail: eight shards under a two-core cgroup CPU quota
      [test_iggy_process_shards_against_cores]
    - fail: 95 % of the nofile limit open [test_iggy_process_memlock_and_fds]
    - pass: the default 4 GiB pool under a 2 GiB cgroup limit or on a 2 GiB node, RSS
      well below (a note: the pool is lazy and a soft cap)
      [test_iggy_process_pool_above_the_memory_is_a_note_without_evidence]
    - warn: the pool above the cgroup limit and RSS within 10 % of the limit, or OOM
      events in the cgroup [test_iggy_process_pool_above_the_memory_warns_with_evidence]

    Shards are the threads named shard-N (Iggy 0.6+); usable cores are the process's CPU
    affinity capped by its cgroup's cpu.max.
    """
    install = discover(ctx)
    if not install.found:
        return Result.skipped(install.skip_reason())
    broker = install.broker
    if broker is None:
        where = install.config.path or install.data_dir
        return Result.skipped(
            f"no iggy-server process runs (Iggy's files are at {where}); the process facts "
            f"need a running broker: {'; '.join(install.looked_for)}"
        )
    if read_status(ctx, broker.pid) is None:
        return Result.skipped(f"cannot read /proc/{broker.pid}/status (the broker exited?)")
    return judge_process(read_process(ctx, install, broker), ctx.thresholds)
