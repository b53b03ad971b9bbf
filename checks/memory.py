"""Memory checks: usage, swap, huge pages and NUMA layout.

The OOM killer's history is memory.oom, in checks/kernel_log.py. The broker's cgroup
(limit, charge, pressure) is read by node/cgroup.py.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from snapshot_agent.core.check import Requirements, check
from snapshot_agent.core.context import Context
from snapshot_agent.core.grading import Band
from snapshot_agent.core.remedies import sysctl_fix
from snapshot_agent.core.results import Finding, Result, Severity
from snapshot_agent.node.cgroup import (
    CgroupFacts,
    MemoryCharge,
    MemoryLevel,
    MemoryPressure,
    read_cgroup,
)
from snapshot_agent.node.processes import is_broker, list_pids, parse_proc_status
from snapshot_agent.node.procfs import (
    SwapDevice,
    parse_kib,
    parse_kv,
    parse_meminfo,
    parse_swaps,
    read_int,
)

_NODE_DIR = re.compile(r"^node(\d+)$")

#: How many processes memory.swap looks at when it names the biggest swap users.
MAX_PROCESSES = 5000
TOP_SWAP_USERS = 5
#: Seconds memory.swap watches pswpin/pswpout when swap is in use.
SWAP_SAMPLE_S = 0.5


def format_kib(kib: float) -> str:
    """Human size from KiB: 512 KiB, 12.3 MiB, 23.5 GiB, 1.2 TiB."""
    value = float(kib)
    for unit in ("KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "KiB" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _pct(part: float, whole: float) -> float:
    """part/whole in percent, rounded; 0 when whole is 0."""
    return round(100.0 * part / whole, 1) if whole > 0 else 0.0


# --- memory.usage ----------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryFacts:
    """The /proc/meminfo breakdown (KiB), the vm settings, and the broker's cgroup."""

    info: dict[str, int]
    overcommit_memory: int | None = None
    dirty_ratio: int | None = None
    dirty_bytes: int | None = None
    cgroup: CgroupFacts = field(default_factory=CgroupFacts)

    @property
    def mem_total(self) -> int | None:
        """The host's RAM in bytes (None when /proc/meminfo has none)."""
        return self.info.get("MemTotal", 0) * 1024 or None

    @property
    def limits(self) -> list[MemoryLevel]:
        """Every level of the broker's cgroup whose memory limit can bind (below the RAM)."""
        return self.cgroup.memory_limits(self.mem_total)

    @property
    def level(self) -> MemoryLevel | None:
        """The level with the least headroom under its own limit; None when no limit binds."""
        return self.cgroup.memory_level(self.mem_total)


#: Fields shown in the breakdown table, in /proc/meminfo order.
BREAKDOWN = (
    "MemTotal",
    "MemFree",
    "MemAvailable",
    "Buffers",
    "Cached",
    "Dirty",
    "Writeback",
    "AnonPages",
    "Shmem",
    "Slab",
    "SReclaimable",
    "SUnreclaim",
    "CommitLimit",
    "Committed_AS",
)


def read_memory(ctx: Context) -> MemoryFacts:
    """Read /proc/meminfo, the vm sysctls, and the broker's cgroup (limit, charge, PSI)."""
    text = ctx.read_text("/proc/meminfo")
    ctx.artifact("meminfo.txt", text)
    return MemoryFacts(
        info=parse_meminfo(text),
        overcommit_memory=read_int(ctx, "/proc/sys/vm/overcommit_memory"),
        dirty_ratio=read_int(ctx, "/proc/sys/vm/dirty_ratio"),
        dirty_bytes=read_int(ctx, "/proc/sys/vm/dirty_bytes"),
        cgroup=read_cgroup(ctx),
    )


def available_kib(info: dict[str, int]) -> tuple[int, bool]:
    """MemAvailable, or an estimate (free + buffers + cache) on kernels before 3.14."""
    if "MemAvailable" in info:
        return info["MemAvailable"], False
    return info.get("MemFree", 0) + info.get("Buffers", 0) + info.get("Cached", 0), True


def format_bytes(n: float) -> str:
    """Human size from bytes, written like format_kib."""
    return format_kib(n / 1024)


#: MemAvailable as percent of MemTotal (lower is worse).
AVAILABLE = Band("available_pct", warn=15.0, fail=5.0, higher_is_worse=False)
#: What the broker's cgroup cannot reclaim (anonymous memory, shmem, kernel; page cache and
#: reclaimable slab excluded) as percent of its memory limit.
LIMIT_USED = Band("limit_used_pct", warn=85.0, fail=95.0)
#: Share of time tasks stalled on memory (PSI `some`): reaching warn counts as pressure;
#: in the broker's own cgroup a 60 s average at fail fails.
STALL = Band("stall_pct", warn=5.0, fail=20.0)
#: Dirty plus writeback pages as percent of MemTotal.
DIRTY = Band("dirty_pct", warn=10.0, fail=20.0)
#: Committed_AS as percent of CommitLimit (judged under strict overcommit only).
COMMIT = Band("commit_pct", warn=90.0, fail=98.0)


def _pressure_words(pressure: MemoryPressure | None) -> str:
    """'memory PSI some 12%/9% over 10 s/60 s (/sys/fs/cgroup/…/memory.pressure)'."""
    if pressure is None:
        return "memory pressure unknown (no PSI)"
    return (
        f"memory PSI some {pressure.some_avg10:g}%/{pressure.some_avg60:g}% over "
        f"10 s/60 s ({pressure.source})"
    )


def _oom_words(level: MemoryLevel) -> str:
    """'3 OOM events since the cgroup was created' or 'no OOM event since …'."""
    n = level.oom_events
    count = f"{n} OOM event{'s' if n != 1 else ''}" if n else "no OOM event"
    return f"{count} since the cgroup was created"


def _struggling(
    facts: MemoryFacts, thresholds: dict[str, Any], level: MemoryLevel | None = None
) -> list[str]:
    """Signs that the kernel already struggles: memory pressure, and OOM events at `level`."""
    signs = []
    pressure = facts.cgroup.pressure
    if pressure and STALL.grade(max(pressure.some_avg10, pressure.some_avg60), thresholds):
        signs.append(_pressure_words(pressure))
    if level is not None and level.oom_events:
        signs.append(_oom_words(level))
    return signs


def _settle(severity: Severity, signs: list[str], facts: MemoryFacts) -> Severity:
    """A full limit fails only with pressure or OOM events; warns when PSI shows neither."""
    if severity == Severity.FAIL and not signs and facts.cgroup.pressure is not None:
        return Severity.WARN
    return severity


def _band_words(
    band: Band, severity: Severity, settled: Severity, thresholds: dict[str, Any]
) -> str:
    """'fail below 5%', or for a full limit without signs of struggle why it only warns."""
    word = "below" if not band.higher_is_worse else "at"
    limit = band.limit(severity, thresholds)
    if settled != severity:
        return f"at the fail level of {limit:g}% but no memory pressure or OOM event yet"
    return f"{severity} {word} {limit:g}%"


def _low_available(facts: MemoryFacts, thresholds: dict[str, Any]) -> list[Finding]:
    """Little host memory is available: no page cache for recent segments, then the OOM killer."""
    info = facts.info
    total = info["MemTotal"]
    avail, _ = available_kib(info)
    avail_pct = _pct(avail, total)
    severity = AVAILABLE.grade(avail_pct, thresholds)
    if severity is None:
        return []
    signs = _struggling(facts, thresholds)
    settled = _settle(severity, signs, facts)
    return [
        Finding(
            settled,
            f"only {format_kib(avail)} of {format_kib(total)} host memory is available "
            f"({avail_pct:g}%, {_band_words(AVAILABLE, severity, settled, thresholds)})"
            + (f"; {'; '.join(signs)}" if signs else ""),
            "Find the largest consumers with `ps -eo pid,rss,comm --sort=-rss | head` "
            f"(anonymous memory here: {format_kib(info.get('AnonPages', 0))}; tmpfs/shmem: "
            f"{format_kib(info.get('Shmem', 0))}, see `df -h -t tmpfs`; unreclaimable slab: "
            f"{format_kib(info.get('SUnreclaim', 0))}, see `slabtop -o`). For iggy-server "
            "compare its RSS with [system.memory_pool] size (4 GiB by default) and its "
            "caches; move co-located services away or add RAM. Little available memory "
            "means no page cache for recent segments (consumers read from disk) and, "
            "next, the OOM killer (see memory.oom).",
            "/proc/meminfo",
        )
    ]


def _cgroup_words(cg: CgroupFacts) -> str:
    """The cgroup with its owner, and where it was read when not under our /sys/fs/cgroup."""
    seen = (
        f" (read through {cg.seen_through}; levels above it are not visible)"
        if cg.seen_through
        else ""
    )
    return f"{cg.owner}'s cgroup {cg.path}{seen}"


def _level_words(cg: CgroupFacts, level: MemoryLevel) -> str:
    """The cgroup itself, or the ancestor that sets the limit, named."""
    if level is cg.leaf:
        return _cgroup_words(cg)
    return f"{level.path}, an ancestor of {_cgroup_words(cg)},"


@dataclass(frozen=True)
class LevelGrade:
    """One level of the cgroup graded: its own unreclaimable memory against its own limit."""

    level: MemoryLevel
    limit: int
    charge: MemoryCharge
    pct: float
    severity: Severity  # as LIMIT_USED grades the share
    settled: Severity  # after the signs of struggle (pressure, OOM events at this level)
    signs: list[str]


_RANK = {Severity.INFO: 0, Severity.WARN: 1, Severity.FAIL: 2}


def _grade_level(
    facts: MemoryFacts, level: MemoryLevel, thresholds: dict[str, Any]
) -> LevelGrade | None:
    """A level whose limit is full of memory the kernel cannot reclaim; None when it is not."""
    pct, limit, charge = level.used_pct, level.limit, level.charge
    severity = LIMIT_USED.grade(pct, thresholds)
    if pct is None or severity is None or limit is None or charge is None:
        return None
    signs = _struggling(facts, thresholds, level)
    settled = _settle(severity, signs, facts)
    return LevelGrade(level, limit, charge, pct, severity, settled, signs)


def _limit_full(facts: MemoryFacts, thresholds: dict[str, Any]) -> list[Finding]:
    """A limit over the broker (its cgroup's or an ancestor's) is full: OOM kill next."""
    # Each level against its own limit: the smallest limit is not the one with least room.
    graded = [g for lvl in facts.limits if (g := _grade_level(facts, lvl, thresholds))]
    if not graded:
        return []
    worst = max(graded, key=lambda g: (_RANK[g.settled], g.pct))
    cg, level, mem = facts.cgroup, worst.level, worst.charge
    shared = (
        ""
        if level is cg.leaf
        else f"The limit is set on {level.path} (a systemd slice or Kubernetes pod), which "
        "everything under it shares: see which child holds the memory with "
        "`systemd-cgtop -m` or each child's memory.current. "
    )
    return [
        Finding(
            worst.settled,
            f"{_level_words(cg, level)} holds {format_bytes(mem.unreclaimable)} it "
            f"cannot reclaim, {worst.pct:g}% of its {format_bytes(worst.limit)} memory limit "
            f"({_band_words(LIMIT_USED, worst.severity, worst.settled, thresholds)}; "
            f"anonymous {format_bytes(mem.anon)}, shmem {format_bytes(mem.shmem)}, "
            f"reclaimable cache {format_bytes(mem.reclaimable)} not counted)"
            + (f"; {'; '.join(worst.signs)}" if worst.signs else ""),
            "At the limit the kernel first drops the broker's page cache (consumers then "
            "read segments from disk), then stalls its allocations and OOM-kills it. "
            + shared
            + f"See what holds the memory in `{level.at}/memory.stat` (anon, shmem) and "
            "compare the broker's RSS with [system.memory_pool] size (4 GiB by default) "
            "and its caches. Raise the limit (docker `--memory`, Kubernetes "
            "resources.limits.memory, or a systemd drop-in `[Service] MemoryMax=` on the "
            "unit or slice that sets it) or shrink the broker's memory.",
            level.at,
        )
    ]


def _cgroup_stalls(facts: MemoryFacts, thresholds: dict[str, Any]) -> list[Finding]:
    """The broker's own cgroup stalls on memory although what it holds is reclaimable."""
    cg, pressure = facts.cgroup, facts.cgroup.pressure
    if pressure is None or not pressure.cgroup:
        return []  # the node's PSI is cpu.pressure's to judge
    sustained = STALL.grade(pressure.some_avg60, thresholds)
    peak = STALL.grade(max(pressure.some_avg10, pressure.some_avg60), thresholds)
    severity = Severity.FAIL if sustained == Severity.FAIL else Severity.WARN if peak else None
    if severity is None:
        return []
    at = STALL.limit(severity, thresholds)
    return [
        Finding(
            severity,
            f"{_cgroup_words(cg)} stalled on memory {pressure.some_avg10:g}% of "
            f"the last 10 s and {pressure.some_avg60:g}% of the last 60 s (PSI some, "
            f"{severity} at {at:g}%" + (" over 60 s)" if severity == Severity.FAIL else ")"),
            "The broker's threads wait for memory reclaim although its limit is not full of "
            "anonymous memory: the segments consumers read do not fit in the page cache the "
            "limit leaves (the kernel keeps evicting and re-reading them), or the node "
            "itself is short (see the host figures and memory.swap). Raise the cgroup's "
            "memory limit, or move other workloads off the node.",
            pressure.source,
        )
    ]


def _past_oom_events(facts: MemoryFacts) -> list[Finding]:
    """OOM events in the cgroup while no limit is full now: information, not a verdict."""
    cg = facts.cgroup
    levels = [lvl for lvl in [cg.leaf, *facts.limits] if lvl is not None and lvl.oom_events]
    if not levels:
        return []
    level = max(levels, key=lambda lvl: lvl.oom_events)
    where = _cgroup_words(cg) if level is cg.leaf else f"{level.path} (above {cg.path})"
    return [
        Finding(
            Severity.INFO,
            f"{_oom_words(level)} in {where}",
            "The limit was reached at some point since the cgroup was created (for a "
            "systemd unit: since the broker last started); memory.oom shows when and what "
            "was killed from the kernel log.",
            level.events_at,
        )
    ]


def _limit_unknown(facts: MemoryFacts) -> list[Finding]:
    """The broker's cgroup is not visible here: its limit is unknown, the host is judged."""
    cg = facts.cgroup
    if not cg.version or cg.memory_known:
        return []
    return [
        Finding(
            Severity.INFO,
            f"{cg.why_hidden()}: its memory limit is unknown, so memory was judged against "
            "the host only",
            "A broker container can be OOM-killed at its own limit while the host has "
            "plenty. Let the agent see the broker's cgroup: run it in the host's cgroup "
            "namespace (docker `--cgroupns=host`, or on the host), or let it read "
            f"/proc/{cg.broker_pid}/root (a shared process namespace, the broker's user or "
            "CAP_SYS_PTRACE). Meanwhile check the limit with `kubectl describe pod` or "
            "`docker inspect`.",
            f"/proc/{cg.broker_pid}/cgroup",
        )
    ]


def _dirty_backlog(facts: MemoryFacts, thresholds: dict[str, Any]) -> list[Finding]:
    """Writeback lags behind writes; at the dirty limit every writer is throttled."""
    info = facts.info
    dirty = info.get("Dirty", 0) + info.get("Writeback", 0)
    dirty_pct = _pct(dirty, info["MemTotal"])
    severity = DIRTY.grade(dirty_pct, thresholds)
    if severity is None:
        return []
    limit = DIRTY.limit(severity, thresholds)
    limit_text = (
        f"vm.dirty_bytes {format_kib(facts.dirty_bytes / 1024)}"
        if facts.dirty_bytes
        else f"vm.dirty_ratio {facts.dirty_ratio}%"
        if facts.dirty_ratio is not None
        else "the dirty limit"
    )
    return [
        Finding(
            severity,
            f"{format_kib(dirty)} of memory is dirty or under writeback ({dirty_pct:g}% of "
            f"RAM, {severity} at {limit:g}%)",
            "Writeback is not keeping up with writes: check the disk with `iostat -x 1 5`. "
            f"When dirty pages reach {limit_text} every writer, the broker's appends "
            "included, is throttled until the disk catches up. Iggy's tuning guide "
            "suggests byte limits so writeback starts early and in small batches, for "
            "example: "
            + sysctl_fix("vm.dirty_background_bytes", 268435456)
            + " "
            + sysctl_fix(
                "vm.dirty_bytes",
                1073741824,
                "Size them to what the disk writes in about a second.",
            ),
            "/proc/meminfo",
        )
    ]


def _strict_commit_exhausted(facts: MemoryFacts, thresholds: dict[str, Any]) -> list[Finding]:
    """Under strict overcommit, allocations fail at CommitLimit even with free RAM."""
    limit_kib, committed = facts.info.get("CommitLimit", 0), facts.info.get("Committed_AS", 0)
    if facts.overcommit_memory != 2 or limit_kib <= 0:
        return []  # only strict overcommit refuses allocations at CommitLimit
    commit_pct = _pct(committed, limit_kib)
    severity = COMMIT.grade(commit_pct, thresholds)
    if severity is None:
        return []
    limit = COMMIT.limit(severity, thresholds)
    return [
        Finding(
            severity,
            f"strict overcommit (vm.overcommit_memory=2) and {commit_pct:g}% of the "
            f"commit limit is used ({format_kib(committed)} of {format_kib(limit_kib)}; "
            f"{severity} at {limit:g}%)",
            "At 100% every new allocation fails (malloc returns NULL, thread creation "
            "fails) even with free RAM. Raise vm.overcommit_ratio (or set "
            "vm.overcommit_kbytes), add swap, or go back to the default heuristic "
            "overcommit: "
            + sysctl_fix(
                "vm.overcommit_memory",
                0,
                "A broker that cannot allocate a buffer drops connections or crashes.",
            ),
            "/proc/sys/vm/overcommit_memory",
        )
    ]


def _level_data(level: MemoryLevel) -> dict[str, Any]:
    """One level of the cgroup: its limits and what is charged to it."""
    mem = level.charge
    return {
        "cgroup_path": level.path,
        "at": level.at,
        "limit_bytes": level.limit,
        "high_bytes": level.high,
        "charged_bytes": mem.usage if mem else None,
        "unreclaimable_bytes": mem.unreclaimable if mem else None,
        "unreclaimable_pct_of_limit": level.used_pct,
        "oom_events": level.oom_events,
    }


def _judged_against(facts: MemoryFacts) -> dict[str, Any]:
    """What the memory was judged against: the broker's cgroup limits, or the host's RAM."""
    cg, level = facts.cgroup, facts.level
    shown = level or cg.leaf
    mem = shown.charge if shown else None
    limit = level.limit if level else None
    pressure = cg.pressure
    return {
        "scope": "cgroup" if level is not None and level.charge is not None else "host",
        "of": cg.of,
        "cgroup_version": cg.version,
        "cgroup_path": cg.path,
        "limit_unknown": bool(cg.version) and not cg.memory_known,
        "seen_through": cg.seen_through or None,
        "limit_bytes": limit,
        "limit_at": level.at if level else "",
        "levels_with_a_limit": [_level_data(lvl) for lvl in facts.limits],
        "charged_bytes": mem.usage if mem else None,
        "anon_bytes": mem.anon if mem else None,
        "shmem_bytes": mem.shmem if mem else None,
        "active_file_bytes": mem.active_file if mem else None,
        "inactive_file_bytes": mem.inactive_file if mem else None,
        "slab_reclaimable_bytes": mem.slab_reclaimable if mem else None,
        "reclaimable_bytes": mem.reclaimable if mem else None,
        "unreclaimable_bytes": mem.unreclaimable if mem else None,
        "unreclaimable_pct_of_limit": level.used_pct if level else None,
        "oom_events_since_cgroup_created": shown.events if shown else {},
        "oom_events_at": shown.events_at if shown else "",
        "pressure": (
            {
                "source": pressure.source,
                "some_avg10": pressure.some_avg10,
                "some_avg60": pressure.some_avg60,
                "full_avg10": pressure.full_avg10,
                "full_avg60": pressure.full_avg60,
            }
            if pressure
            else None
        ),
    }


def _memory_data(facts: MemoryFacts) -> dict[str, Any]:
    """The figures judged and the /proc/meminfo breakdown table."""
    info = facts.info
    total = info["MemTotal"]
    avail, estimated = available_kib(info)
    dirty = info.get("Dirty", 0) + info.get("Writeback", 0)
    breakdown = [
        {
            "field": key,
            "kib": info[key],
            "size": format_kib(info[key]),
            "pct_of_total": _pct(info[key], total),
        }
        for key in BREAKDOWN
        if key in info
    ]
    return {
        "total_kib": total,
        "available_kib": avail,
        "available_pct": _pct(avail, total),
        "available_estimated": estimated,
        "dirty_writeback_kib": dirty,
        "dirty_writeback_pct": _pct(dirty, total),
        "commit_pct_of_limit": _pct(info.get("Committed_AS", 0), info.get("CommitLimit", 0)),
        "overcommit_memory": facts.overcommit_memory,
        "dirty_ratio": facts.dirty_ratio,
        "dirty_bytes": facts.dirty_bytes,
        "judged_against": _judged_against(facts),
        "breakdown": breakdown,
        "note": (
            "memory PSI are the kernel's 10 s and 60 s averages; OOM events count since the "
            "cgroup was created; the cgroup's page cache (active and inactive file) and "
            "reclaimable slab count as reclaimable"
        ),
    }


def _host_words(data: dict[str, Any]) -> str:
    """'11.4 GiB of 15.3 GiB host memory available (75%)'."""
    estimated = ", estimated" if data["available_estimated"] else ""
    return (
        f"{format_kib(data['available_kib'])} of {format_kib(data['total_kib'])} host memory "
        f"available ({data['available_pct']:g}%{estimated})"
    )


def _why_host(facts: MemoryFacts) -> str:
    """Why the host's RAM is what binds: no cgroup, a cgroup not visible, or no limit below RAM."""
    cg, level = facts.cgroup, facts.level
    if not cg.version:
        return "no cgroup filesystem"
    if not cg.memory_known:
        return f"{cg.why_hidden()}: its memory limit is unknown"
    whose = "iggy-server's" if cg.broker_pid is not None else "no iggy-server found; this agent's"
    if level is not None:
        return (
            f"{whose} cgroup {cg.path} has a {format_bytes(level.limit or 0)} memory limit "
            f"at {level.path} but its usage is unreadable"
        )
    return f"{whose} cgroup {cg.path} has no memory limit below the RAM"


def _limit_words(facts: MemoryFacts, level: MemoryLevel) -> str:
    """'v2, limit 8.0 GiB', naming the ancestor that sets it and how many limits were graded."""
    cg, count = facts.cgroup, len(facts.limits)
    words = f"{cg.version}, limit {format_bytes(level.limit or 0)}"
    if level is not cg.leaf:
        words += f" set on its ancestor {level.path}"
    if count > 1:
        words += f"; the least headroom of {count} limits, each judged on its own usage"
    return words


def _ok_summary(facts: MemoryFacts, data: dict[str, Any]) -> str:
    """What was judged against what, and the figures, for a node that passes."""
    info, cg, level = facts.info, facts.cgroup, facts.level
    pressure = _pressure_words(cg.pressure)
    if level is not None and level.charge is not None and level.limit:
        mem = level.charge
        return (
            f"judged against {_cgroup_words(cg)} ({_limit_words(facts, level)}): "
            f"{format_bytes(mem.usage)} charged, "
            f"{format_bytes(mem.reclaimable)} of it reclaimable cache, "
            f"{format_bytes(mem.unreclaimable)} ({level.used_pct:g}% of the "
            f"limit) not; {pressure}; {_oom_words(level)}; {_host_words(data)}"
        )
    return (
        f"{_host_words(data)}; cache {format_kib(info.get('Cached', 0))}, "
        f"anon {format_kib(info.get('AnonPages', 0))}, "
        f"dirty+writeback {format_kib(data['dirty_writeback_kib'])}; {pressure}; "
        f"judged against the host ({_why_host(facts)})"
    )


def judge_memory(facts: MemoryFacts, thresholds: dict[str, Any]) -> Result:
    """Judge memory against the broker's cgroup limit and the host, dirty pages and commit."""
    info = facts.info
    if info.get("MemTotal", 0) <= 0:
        return Result.skipped("/proc/meminfo has no usable MemTotal line")
    limit_full = _limit_full(facts, thresholds)
    findings = [
        *limit_full,
        *(_cgroup_stalls(facts, thresholds) if not limit_full else []),
        *(_past_oom_events(facts) if not limit_full else []),
        *_limit_unknown(facts),
        *_low_available(facts, thresholds),
        *_dirty_backlog(facts, thresholds),
        *_strict_commit_exhausted(facts, thresholds),
    ]
    data = _memory_data(facts)
    return Result.from_findings(findings, ok=_ok_summary(facts, data), data=data)


@check(
    id="memory.usage",
    category="memory",
    title="Memory usage",
    description=(
        "Memory against the limit that applies to the broker (its cgroup, else the host), "
        "with page cache as reclaimable and PSI/OOM events deciding; dirty pages, commit."
    ),
    requires=Requirements(paths=("/proc/meminfo",)),
    timeout_s=5,
    bands=(AVAILABLE, LIMIT_USED, STALL, DIRTY, COMMIT),
)
def memory_usage(ctx: Context) -> Result:
    """How much memory is left under the limit that binds the broker, and what holds it.

    Verdicts:
    - pass: a host with most of its memory available [test_memory_usage_available]
    - pass: the broker's cgroup limit 98% full, nearly all of it active page cache (hot
      segments), memory PSI 0, no OOM event [test_memory_usage_cgroup_full_of_page_cache_passes]
    - pass: the broker in a cgroup without a memory limit, on a host with room
      [test_memory_usage_broker_cgroup_without_limit_is_judged_on_the_host]
    - pass: a systemd slice's limit 98% charged with page cache above the broker's unit
      [test_memory_usage_several_limits_full_of_page_cache_pass]
    - pass: a sidecar agent that cannot see the broker's cgroup (outside its cgroup
      namespace): the broker's limit is reported unknown and the host, with room, is
      judged, never the agent's own container
      [test_memory_usage_sidecar_cannot_see_the_broker_cgroup]
    - warn: the slice above the broker's unit 99% full of other services' anonymous
      memory while the unit's own smaller limit is 20% used, no pressure yet
      [test_memory_usage_grades_every_level_against_its_own_limit]
    - warn: the broker's cgroup limit 96% full of anonymous memory, no pressure and no OOM
      event yet [test_memory_usage_cgroup_full_of_anon_without_pressure_warns]
    - warn: the host at the fail level of available memory but no memory pressure
      [test_memory_usage_low_available_without_pressure_warns]
    - warn: the broker's cgroup stalls on memory although its limit holds mostly cache
      [test_memory_usage_cgroup_stalls_on_cache_warn_or_fail]
    - fail: a broker container at 98% of memory.max with anonymous memory and memory
      pressure while the host has 58 GiB available
      [test_memory_usage_judges_the_broker_cgroup_limit]
    - fail: a cgroup v1 limit full of rss with OOM kills
      [test_memory_usage_cgroup_v1_oom_kills_fail]
    - fail: a sidecar agent reading the broker's limit through /proc/PID/root: 96% full
      of anonymous memory with memory pressure
      [test_memory_usage_sidecar_reads_the_broker_cgroup_through_its_root]
    - fail: 2.5% of the host's memory available, no PSI to say otherwise
      [test_memory_usage_available]
    - fail: dirty and writeback pages at 20% of RAM [test_memory_usage_dirty]
    - fail: strict overcommit with the commit limit used up
      [test_memory_usage_commit_limit_only_in_strict_mode]
    """
    return judge_memory(read_memory(ctx), ctx.thresholds)


# --- memory.swap -----------------------------------------------------------------------


@dataclass
class SwapFacts:
    """Swap space, how it is used, and the kernel's eagerness to use it."""

    total_kib: int
    free_kib: int
    cached_kib: int = 0
    devices: list[SwapDevice] = field(default_factory=list)
    swappiness: int | None = None
    pswpin: int | None = None  # pages swapped in since boot
    pswpout: int | None = None
    top_users: list[dict[str, Any]] = field(default_factory=list)  # pid, name, swap_kib
    broker_swap_kib: int = 0  # swapped out of iggy-server processes (VmSwap)
    window_s: float = 0.0  # the sample over which swapping was measured (swap in use only)
    window_swapped_in: int | None = None  # pages swapped in over the window
    window_swapped_out: int | None = None

    @property
    def active(self) -> bool | None:
        """Pages moved between swap and RAM over the window; None when not measured."""
        if self.window_swapped_in is None or self.window_swapped_out is None:
            return None
        return self.window_swapped_in + self.window_swapped_out > 0

    @property
    def used_kib(self) -> int:
        """Swap in use."""
        return max(0, self.total_kib - self.free_kib)


def parse_status_swap(text: str) -> tuple[str, int] | None:
    """(Name, VmSwap KiB) from a /proc/PID/status; None for kernel threads."""
    fields = parse_proc_status(text)
    swap = parse_kib(fields.get("VmSwap", ""))
    return (fields.get("Name", ""), swap) if swap is not None else None


def read_swap(ctx: Context, sample_s: float | None = None) -> SwapFacts:
    """Swap totals, devices, swappiness and, when swap is used, its users and its traffic."""
    info = parse_meminfo(ctx.read_text("/proc/meminfo"))
    facts = SwapFacts(
        total_kib=info.get("SwapTotal", 0),
        free_kib=info.get("SwapFree", 0),
        cached_kib=info.get("SwapCached", 0),
        swappiness=read_int(ctx, "/proc/sys/vm/swappiness"),
    )
    if (swaps := ctx.read_optional("/proc/swaps", max_bytes=64 * 1024)) is not None:
        ctx.artifact("swaps.txt", swaps)
        facts.devices = parse_swaps(swaps)
    vmstat = parse_kv(ctx.read_optional("/proc/vmstat"))
    facts.pswpin, facts.pswpout = vmstat.get("pswpin"), vmstat.get("pswpout")
    if facts.used_kib > 0:
        _sample_swapping(ctx, facts, SWAP_SAMPLE_S if sample_s is None else sample_s)
        facts.top_users, facts.broker_swap_kib = _swap_users(ctx)
    return facts


def _sample_swapping(ctx: Context, facts: SwapFacts, seconds: float) -> None:
    """Pages swapped in and out over `seconds` (pswpin/pswpout in /proc/vmstat)."""
    if facts.pswpin is None or facts.pswpout is None or seconds <= 0:
        return
    start = time.monotonic()
    time.sleep(seconds)
    after = parse_kv(ctx.read_optional("/proc/vmstat"))
    if "pswpin" in after and "pswpout" in after:
        facts.window_s = round(time.monotonic() - start, 2)
        facts.window_swapped_in = max(0, after["pswpin"] - facts.pswpin)
        facts.window_swapped_out = max(0, after["pswpout"] - facts.pswpout)


def _swap_users(ctx: Context) -> tuple[list[dict[str, Any]], int]:
    """The processes with the most swapped-out memory (VmSwap), and the broker's total."""
    users: list[dict[str, Any]] = []
    broker_kib = 0
    for pid in list_pids(ctx)[:MAX_PROCESSES]:
        status = ctx.read_optional(f"/proc/{pid}/status", max_bytes=8192)
        parsed = parse_status_swap(status or "")
        if parsed and parsed[1] > 0:
            users.append({"pid": pid, "name": parsed[0], "swap_kib": parsed[1]})
            if is_broker(parsed[0]):
                broker_kib += parsed[1]
    users.sort(key=lambda u: u["swap_kib"], reverse=True)
    return users[:TOP_SWAP_USERS], broker_kib


#: Swap in use as percent of the swap space.
SWAP_USED = Band("used_pct", warn=10.0, fail=50.0)


def _swap_activity(facts: SwapFacts) -> str:
    """'nothing swapped in or out over 0.5 s' or '120 pages swapped in, 0 out over 0.5 s'."""
    if facts.active is None:
        return "swap traffic not measured"
    if not facts.active:
        return f"nothing swapped in or out over {facts.window_s:g} s"
    return (
        f"{facts.window_swapped_in} pages swapped in and {facts.window_swapped_out} out over "
        f"{facts.window_s:g} s"
    )


def _swap_in_use(facts: SwapFacts, thresholds: dict[str, Any]) -> list[Finding]:
    """Memory ran short and pages went to disk; touching them stalls the thread.

    A full swap fails while it hurts now: pages move over the sample, or the broker's
    own memory is out there. Cold pages of other processes that stay put only warn.
    """
    used_pct = _pct(facts.used_kib, facts.total_kib)
    severity = SWAP_USED.grade(used_pct, thresholds)
    if severity is None:
        return []
    limit = SWAP_USED.limit(severity, thresholds)
    cold = facts.active is False and facts.broker_swap_kib == 0
    settled = Severity.WARN if severity == Severity.FAIL and cold else severity
    verdict = (
        f"at the fail level of {limit:g}%, but iggy-server has nothing swapped out"
        if settled != severity
        else f"{severity} at {limit:g}%"
    )
    who = ", ".join(
        f"{u['name']} ({u['pid']}) {format_kib(u['swap_kib'])}" for u in facts.top_users
    )
    return [
        Finding(
            settled,
            f"{format_kib(facts.used_kib)} of {format_kib(facts.total_kib)} swap in use "
            f"({used_pct:g}%, {verdict}); {_swap_activity(facts)}"
            + (f"; most swapped: {who}" if who else ""),
            "Memory ran short and pages went to disk; every touch of a swapped page is a "
            "disk read that stalls the thread, for the broker a whole shard. Find the "
            "owners with `grep VmSwap /proc/[0-9]*/status | sort -k2 -n | tail`, reduce "
            "memory use or add RAM (see memory.usage); once MemAvailable exceeds the swap "
            "in use, `swapoff -a && swapon -a` brings the pages back. Keep vm.swappiness=10 "
            "(Iggy's recommendation) so this does not recur.",
            "/proc/swaps",
        )
    ]


def _eager_swappiness(facts: SwapFacts, thresholds: dict[str, Any]) -> list[Finding]:
    """vm.swappiness above the recommended setting lets the broker's memory be swapped out."""
    recommended = int(thresholds["max_swappiness"])
    if facts.swappiness is None or facts.swappiness <= recommended:
        return []
    return [
        Finding(
            Severity.WARN,
            f"vm.swappiness is {facts.swappiness} with {format_kib(facts.total_kib)} of swap "
            f"enabled (Iggy recommends {recommended})",
            sysctl_fix(
                "vm.swappiness",
                recommended,
                "A high swappiness lets the kernel swap out the broker's anonymous memory "
                "(its memory pool, indexes, client buffers) to keep more page cache, and "
                "the next access to it stalls on the disk.",
            ),
            "/proc/sys/vm/swappiness",
        )
    ]


def _swap_data(facts: SwapFacts) -> dict[str, Any]:
    """Swap totals, counters, devices and the biggest users."""
    return {
        "total_kib": facts.total_kib,
        "used_kib": facts.used_kib,
        "used_pct": _pct(facts.used_kib, facts.total_kib),
        "swap_cached_kib": facts.cached_kib,
        "swappiness": facts.swappiness,
        "pages_swapped_in_since_boot": facts.pswpin,
        "pages_swapped_out_since_boot": facts.pswpout,
        "window_s": facts.window_s,
        "pages_swapped_in_over_window": facts.window_swapped_in,
        "pages_swapped_out_over_window": facts.window_swapped_out,
        "broker_swap_kib": facts.broker_swap_kib,
        "devices": [
            {
                "name": d.name,
                "type": d.kind,
                "size": format_kib(d.size_kib),
                "used": format_kib(d.used_kib),
                "priority": d.priority,
            }
            for d in facts.devices
        ],
        "top_users": facts.top_users,
    }


def judge_swap(facts: SwapFacts, thresholds: dict[str, Any]) -> Result:
    """Judge swap in use and vm.swappiness when swap is enabled."""
    swappiness = "unknown" if facts.swappiness is None else str(facts.swappiness)
    data = _swap_data(facts)
    if facts.total_kib <= 0:
        return Result.from_findings(
            [],
            ok=f"no swap configured (vm.swappiness {swappiness} has no effect without swap)",
            data=data,
        )
    findings = [*_swap_in_use(facts, thresholds), *_eager_swappiness(facts, thresholds)]
    ok = (
        f"{format_kib(facts.used_kib)} of {format_kib(facts.total_kib)} swap in use "
        f"({data['used_pct']:g}%) on {len(facts.devices)} device(s); vm.swappiness {swappiness}"
    )
    if facts.used_kib > 0:
        ok += f"; {_swap_activity(facts)}"
    return Result.from_findings(findings, ok=ok, data=data)


@check(
    id="memory.swap",
    category="memory",
    title="Swap",
    description="Swap space in use, its biggest users, and vm.swappiness (Iggy recommends 10).",
    requires=Requirements(paths=("/proc/meminfo",)),
    timeout_s=5,
    thresholds={"max_swappiness": 10},
    bands=(SWAP_USED,),
    sampling_s=SWAP_SAMPLE_S,
)
def memory_swap(ctx: Context) -> Result:
    """Whether the node swaps, and whether it is inclined to.

    Verdicts:
    - pass: no swap configured [test_memory_swap_without_swap_passes]
    - pass: swap enabled, none of it used, vm.swappiness 10
      [test_memory_swap_pass_with_low_swappiness]
    - warn: vm.swappiness 60 with swap enabled [test_memory_swap_warns_on_swappiness]
    - warn: a fifth of the swap in use, the broker the biggest user
      [test_memory_swap_in_use_names_the_users]
    - warn: over half the swap in use by another process's cold pages, nothing swapped in
      or out over the sample, the broker has none
      [test_memory_swap_full_of_cold_pages_warns_and_swapping_fails]
    - fail: over half the swap in use, 1 GiB of it the broker's
      [test_memory_swap_in_use_names_the_users]
    - fail: over half the swap in use and pages swapped in over the sample
      [test_memory_swap_full_of_cold_pages_warns_and_swapping_fails]
    """
    return judge_swap(read_swap(ctx), ctx.thresholds)


# --- memory.hugepages ------------------------------------------------------------------

THP_DIR = "/sys/kernel/mm/transparent_hugepage"


@dataclass(frozen=True)
class HugePageFacts:
    """Transparent huge page modes and the HugeTLB pool."""

    thp_enabled: str | None  # the bracketed choice, None when THP is not built in
    thp_defrag: str | None
    info: dict[str, int]  # /proc/meminfo (HugePages_* are page counts, the rest KiB)


def selected_mode(text: str | None) -> str | None:
    """'always [madvise] never' -> 'madvise'; a bare value is returned as is."""
    if text is None:
        return None
    if m := re.search(r"\[([^\]]+)\]", text):
        return m.group(1)
    return text.strip() or None


def read_hugepages(ctx: Context) -> HugePageFacts:
    """THP settings from sysfs and the HugeTLB counters from /proc/meminfo."""
    return HugePageFacts(
        thp_enabled=selected_mode(ctx.read_optional(f"{THP_DIR}/enabled", 256)),
        thp_defrag=selected_mode(ctx.read_optional(f"{THP_DIR}/defrag", 256)),
        info=parse_meminfo(ctx.read_text("/proc/meminfo")),
    )


#: Free, unreserved HugeTLB pages as percent of MemTotal: memory nobody can use.
UNUSED_HUGETLB = Band("unused_hugetlb_pct", warn=5.0, fail=25.0)


def _thp_compaction_stalls(facts: HugePageFacts) -> list[Finding]:
    """THP `always` with defrag `always` stalls page faults on synchronous compaction."""
    if facts.thp_enabled == "always" and facts.thp_defrag == "always":
        return [
            Finding(
                Severity.WARN,
                "transparent huge pages are `always` with defrag `always`: page faults "
                "stall on synchronous memory compaction",
                "Run `echo madvise > /sys/kernel/mm/transparent_hugepage/defrag` now (or "
                "`defer+madvise`); make it permanent with the systemd-tmpfiles line "
                "`w /sys/kernel/mm/transparent_hugepage/defrag - - - - madvise` in "
                "/etc/tmpfiles.d/thp.conf, or switch THP itself to madvise with "
                "`transparent_hugepage=madvise` in GRUB_CMDLINE_LINUX (then update-grub). "
                "Why: with defrag `always` a fault that finds no free 2 MiB block "
                "compacts memory before returning, which can stall an Iggy shard thread for "
                "milliseconds to seconds once memory is fragmented by the page cache; "
                "`madvise` keeps huge pages for programs that ask for them and leaves "
                "background collapsing to khugepaged.",
                f"{THP_DIR}/defrag",
            )
        ]
    if facts.thp_enabled == "always":
        return [
            Finding(
                Severity.INFO,
                f"transparent huge pages are `always` (defrag `{facts.thp_defrag}`)",
                "Acceptable for latency because faults do not compact synchronously; "
                "`madvise` is the conservative setting for a broker (less memory bloat from "
                "sparse allocations).",
                f"{THP_DIR}/enabled",
            )
        ]
    return []


def _unused_hugetlb_kib(info: dict[str, int]) -> int:
    """Free HugeTLB pages not reserved by a mapping (reserved ones will be used), in KiB."""
    free, reserved = info.get("HugePages_Free", 0), info.get("HugePages_Rsvd", 0)
    return max(0, free - reserved) * info.get("Hugepagesize", 0)


def _idle_hugetlb_pool(info: dict[str, int], thresholds: dict[str, Any]) -> list[Finding]:
    """A HugeTLB pool nobody uses holds memory the page cache and heap cannot have."""
    total, free = info.get("HugePages_Total", 0), info.get("HugePages_Free", 0)
    reserved = info.get("HugePages_Rsvd", 0)
    unused_kib = _unused_hugetlb_kib(info)
    unused_pct = _pct(unused_kib, info.get("MemTotal", 0))
    severity = UNUSED_HUGETLB.grade(unused_pct, thresholds) if total > 0 else None
    if severity is None:
        return []
    limit = UNUSED_HUGETLB.limit(severity, thresholds)
    return [
        Finding(
            severity,
            f"{free - reserved} of {total} HugeTLB pages ({format_kib(unused_kib)}, "
            f"{unused_pct:g}% of RAM) are reserved in the pool but unused ({severity} at "
            f"{limit:g}%)",
            "The HugeTLB pool is set aside at boot or by vm.nr_hugepages and is usable only "
            "through hugetlbfs or MAP_HUGETLB; Iggy's page cache and heap cannot use it. "
            "If nothing needs it (check `findmnt -t hugetlbfs` and "
            "`grep -l anon_hugepage /proc/[0-9]*/maps`), shrink it: "
            + sysctl_fix(
                "vm.nr_hugepages",
                total - free + reserved,
                "Also remove any `hugepages=` kernel parameter that sets it at boot.",
            ),
            "/proc/sys/vm/nr_hugepages",
        )
    ]


def judge_hugepages(facts: HugePageFacts, thresholds: dict[str, Any]) -> Result:
    """THP always+defrag always stalls faults; an unused HugeTLB pool wastes memory."""
    info = facts.info
    findings = [*_thp_compaction_stalls(facts), *_idle_hugetlb_pool(info, thresholds)]
    page_kib = info.get("Hugepagesize", 0)
    total, free = info.get("HugePages_Total", 0), info.get("HugePages_Free", 0)
    reserved = info.get("HugePages_Rsvd", 0)
    data = {
        "thp_enabled": facts.thp_enabled,
        "thp_defrag": facts.thp_defrag,
        "hugetlb_page_kib": page_kib,
        "hugetlb_total": total,
        "hugetlb_free": free,
        "hugetlb_reserved": reserved,
        "hugetlb_surplus": info.get("HugePages_Surp", 0),
        "hugetlb_unused_kib": _unused_hugetlb_kib(info),
        "anon_huge_kib": info.get("AnonHugePages", 0),
        "judgement": (
            "THP `always` with defrag `always` warns (synchronous compaction stalls); "
            "`madvise` or `never` passes. A HugeTLB pool that nobody uses warns by size."
        ),
    }
    thp = (
        f"THP {facts.thp_enabled} (defrag {facts.thp_defrag})"
        if facts.thp_enabled
        else "THP not available"
    )
    pool = (
        f"HugeTLB {total} x {format_kib(page_kib)} ({total - free} used, {reserved} reserved)"
        if total
        else "no HugeTLB pool"
    )
    ok = f"{thp}; {pool}; THP-backed anonymous memory {format_kib(info.get('AnonHugePages', 0))}"
    return Result.from_findings(findings, ok=ok, data=data)


@check(
    id="memory.hugepages",
    category="memory",
    title="Huge pages",
    description="Transparent huge page modes and the HugeTLB pool from /proc/meminfo.",
    requires=Requirements(paths=("/proc/meminfo",)),
    timeout_s=5,
    bands=(UNUSED_HUGETLB,),
)
def memory_hugepages(ctx: Context) -> Result:
    """THP and HugeTLB settings judged for a latency-sensitive broker.

    Verdicts:
    - pass: THP madvise, defrag madvise, no HugeTLB pool [test_memory_hugepages_pass]
    - pass: a 2 GiB HugeTLB pool, every page reserved by a mapping
      [test_memory_hugepages_unused_pool]
    - pass: THP always with defer+madvise defrag (noted, faults do not compact)
      [test_memory_hugepages_always_with_deferred_defrag_is_info]
    - pass: a kernel without THP [test_memory_hugepages_without_thp]
    - warn: THP always with defrag always (synchronous compaction stalls)
      [test_memory_hugepages_warns_on_always_always]
    - warn: 2 GiB of HugeTLB pages nobody uses [test_memory_hugepages_unused_pool]
    - fail: half the RAM in an unused HugeTLB pool [test_memory_hugepages_unused_pool]
    """
    return judge_hugepages(read_hugepages(ctx), ctx.thresholds)


# --- memory.numa -----------------------------------------------------------------------

NODE_DIR = "/sys/devices/system/node"
#: Seconds between the two numastat reads on a NUMA machine (the miss rate's window).
NUMA_SAMPLE_S = 0.5
#: Page allocations the window needs before its miss rate is judged (an idle node has few).
MIN_WINDOW_ALLOCATIONS = 1000
#: How far the nodes' MemTotal may fall short of /proc/meminfo's before the per-node
#: figures count as partial (they normally add up to it exactly).
PARTIAL_NODE_MEMORY_PCT = 5.0


@dataclass(frozen=True)
class NumaNode:
    """One NUMA node: its CPUs, memory (KiB) and allocation counters (since boot)."""

    node: int
    cpulist: str
    total_kib: int
    free_kib: int
    file_kib: int  # page cache, reclaimable
    slab_reclaimable_kib: int
    numa_hit: int | None = None
    numa_miss: int | None = None

    @property
    def available_kib(self) -> int:
        """Free plus what the kernel can reclaim easily (page cache, reclaimable slab)."""
        return min(self.total_kib, self.free_kib + self.file_kib + self.slab_reclaimable_kib)

    @property
    def available_pct(self) -> float:
        """available_kib as percent of the node's memory."""
        return _pct(self.available_kib, self.total_kib)


@dataclass
class NumaFacts:
    """Every node, the node-wide totals to check them against, and the NUMA sysctls."""

    nodes: list[NumaNode] = field(default_factory=list)
    zone_reclaim_mode: int | None = None
    numa_balancing: int | None = None
    meminfo_total_kib: int | None = None  # /proc/meminfo MemTotal
    unaccepted_kib: int = 0  # memory a confidential VM has not accepted yet
    cmdline: str = ""  # /proc/cmdline: deferred_init=… explains partial node figures
    window_s: float = 0.0
    window_hit: int | None = None  # page allocations over the window, all nodes
    window_miss: int | None = None

    @property
    def node_total_kib(self) -> int:
        """The nodes' MemTotal added up."""
        return sum(n.total_kib for n in self.nodes)

    @property
    def partial(self) -> bool:
        """The nodes count materially less memory than /proc/meminfo: still being set up."""
        whole = self.meminfo_total_kib or 0
        return (
            bool(self.nodes)
            and whole > 0
            and (self.node_total_kib < whole * (1 - PARTIAL_NODE_MEMORY_PCT / 100))
        )


def _read_numastat(ctx: Context, n: int) -> dict[str, int]:
    """One node's numastat counters (page allocations since boot)."""
    return parse_kv(ctx.read_optional(f"{NODE_DIR}/node{n}/numastat", max_bytes=4096))


def _sample_misses(ctx: Context, facts: NumaFacts, seconds: float) -> None:
    """Allocations and misses over `seconds`, from two numastat reads of every node."""
    before = {n.node: (n.numa_hit, n.numa_miss) for n in facts.nodes}
    start = time.monotonic()
    time.sleep(seconds)
    hits = misses = 0
    for n in facts.nodes:
        stat = _read_numastat(ctx, n.node)
        hit0, miss0 = before[n.node]
        if hit0 is None or miss0 is None or "numa_hit" not in stat or "numa_miss" not in stat:
            return  # a node without counters: no window rate
        hits += max(0, stat["numa_hit"] - hit0)
        misses += max(0, stat["numa_miss"] - miss0)
    facts.window_s = round(time.monotonic() - start, 2)
    facts.window_hit, facts.window_miss = hits, misses


def read_numa(ctx: Context, sample_s: float = NUMA_SAMPLE_S) -> NumaFacts:
    """Nodes from /sys/devices/system/node/node*/ and, on NUMA, misses over `sample_s`."""
    meminfo = parse_meminfo(ctx.read_optional("/proc/meminfo") or "")
    facts = NumaFacts(
        zone_reclaim_mode=read_int(ctx, "/proc/sys/vm/zone_reclaim_mode"),
        numa_balancing=read_int(ctx, "/proc/sys/kernel/numa_balancing"),
        meminfo_total_kib=meminfo.get("MemTotal"),
        unaccepted_kib=meminfo.get("Unaccepted", 0),
        cmdline=(ctx.read_optional("/proc/cmdline", max_bytes=4096) or "").strip(),
    )
    try:
        entries = list(ctx.path(NODE_DIR).iterdir())
    except OSError:
        return facts
    for n in sorted(int(m.group(1)) for e in entries if (m := _NODE_DIR.match(e.name))):
        base = f"{NODE_DIR}/node{n}"
        node_meminfo = ctx.read_optional(f"{base}/meminfo", max_bytes=64 * 1024)
        if node_meminfo is None:
            continue
        ctx.artifact(f"node{n}-meminfo.txt", node_meminfo)
        info = parse_meminfo(node_meminfo)
        stat = _read_numastat(ctx, n)
        facts.nodes.append(
            NumaNode(
                node=n,
                cpulist=(ctx.read_optional(f"{base}/cpulist", max_bytes=4096) or "").strip(),
                total_kib=info.get("MemTotal", 0),
                free_kib=info.get("MemFree", 0),
                file_kib=info.get("Active(file)", 0) + info.get("Inactive(file)", 0),
                slab_reclaimable_kib=info.get("SReclaimable", 0),
                numa_hit=stat.get("numa_hit"),
                numa_miss=stat.get("numa_miss"),
            )
        )
    if len(facts.nodes) > 1 and sample_s > 0:
        _sample_misses(ctx, facts, sample_s)
    return facts


#: Free plus reclaimable memory of one NUMA node, percent of the node (lower is worse).
NODE_AVAILABLE = Band("node_available_pct", warn=10.0, fail=3.0, higher_is_worse=False)
#: Page allocations over the sample that landed on another node than the one asked for.
MISSES = Band("miss_pct", warn=10.0)


def _numa_rows(facts: NumaFacts) -> list[dict[str, Any]]:
    """One table row per node."""
    return [
        {
            "node": n.node,
            "cpus": n.cpulist or "none",
            "total": format_kib(n.total_kib),
            "free": format_kib(n.free_kib),
            "available_est": format_kib(n.available_kib),
            "available_pct": n.available_pct,
            "numa_hit_since_boot": n.numa_hit,
            "numa_miss_since_boot": n.numa_miss,
        }
        for n in facts.nodes
    ]


def _partial_words(facts: NumaFacts) -> str:
    """'4.3 GiB of the 23.5 GiB in /proc/meminfo counted so far (deferred_init=lazy)'."""
    return (
        f"{format_kib(facts.node_total_kib)} of the "
        f"{format_kib(facts.meminfo_total_kib or 0)} in /proc/meminfo counted so far"
    )


def _partial_cause(facts: NumaFacts) -> str:
    """Why the nodes' counters lag, as far as the node tells."""
    deferred = next((a for a in facts.cmdline.split() if a.startswith("deferred_init")), "")
    if deferred:
        return (
            f"the kernel command line has `{deferred}`: the kernel initialises memory as it "
            "is first needed, and each node's counters grow as it does"
        )
    if facts.unaccepted_kib:
        return (
            f"{format_kib(facts.unaccepted_kib)} is not yet accepted (a confidential VM "
            "accepts memory lazily)"
        )
    return (
        "the kernel is still initialising memory (deferred struct page init on a large "
        "machine) or memory is being hot-added"
    )


def _single_node(facts: NumaFacts) -> str:
    """The summary of a machine that is not NUMA."""
    if facts.nodes:
        n = facts.nodes[0]
        size = _partial_words(facts) if facts.partial else format_kib(n.total_kib)
        return (
            f"not a NUMA machine: 1 node with CPUs {n.cpulist or 'none'} and {size}; "
            "Iggy's numa:auto allocation sees a single node"
        )
    return f"not a NUMA machine: the kernel exposes no {NODE_DIR}/node* (no NUMA support)"


def _partial_node_memory(facts: NumaFacts) -> list[Finding]:
    """The per-node figures do not add up to /proc/meminfo: they are partial, not judged."""
    if not facts.partial:
        return []
    return [
        Finding(
            Severity.INFO,
            f"the NUMA nodes' memory adds up to {format_kib(facts.node_total_kib)} but "
            f"/proc/meminfo has {format_kib(facts.meminfo_total_kib or 0)}: "
            f"{_partial_cause(facts)}; per-node figures are partial, so node balance is "
            "not judged",
            "Nothing to fix: the per-node counters catch up as the kernel brings the rest "
            "of the memory into use. To judge NUMA balance, take another snapshot once "
            "`grep MemTotal /sys/devices/system/node/node*/meminfo` adds up to MemTotal in "
            "/proc/meminfo.",
            f"{NODE_DIR}/node*/meminfo",
        )
    ]


def _starved_nodes(facts: NumaFacts, thresholds: dict[str, Any]) -> list[Finding]:
    """A node runs short of memory while another has plenty: its CPUs reclaim or go remote."""
    if facts.partial:
        return []  # a node's partial MemTotal says nothing about its balance
    with_memory = [n for n in facts.nodes if n.total_kib > 0]
    plenty = float(thresholds["plenty_node_available_pct"])
    roomy = max(with_memory, key=lambda n: n.available_pct, default=None)
    if roomy is None or roomy.available_pct < plenty:
        return []  # every node is low: that is memory.usage's finding, not an imbalance
    findings: list[Finding] = []
    for n in with_memory:
        severity = NODE_AVAILABLE.grade(n.available_pct, thresholds)
        if severity is None:
            continue
        limit = NODE_AVAILABLE.limit(severity, thresholds)
        findings.append(
            Finding(
                severity,
                f"NUMA node {n.node} has only {format_kib(n.available_kib)} "
                f"({n.available_pct:g}%) of its {format_kib(n.total_kib)} free or "
                f"reclaimable while node {roomy.node} has {roomy.available_pct:g}% "
                f"({severity} below {limit:g}%)",
                f"Allocations for CPUs {n.cpulist or '(none)'} now reclaim or spill to a "
                "remote node (slower memory). Find what fills the node with `numastat -m` "
                "and `numastat -p iggy-server` (package numactl): a process bound with "
                "`numactl --membind` or a cpuset, a tmpfs or a HugeTLB pool on that node are "
                "the usual causes. Iggy's default cpu_allocation `numa:auto` places shards "
                "on every node, so the shards on this node pay for it; rebalance the bound "
                "workloads or pin Iggy with `numa:nodes=..;cores=..` to the node with room.",
                f"{NODE_DIR}/node{n.node}",
            )
        )
    return findings


def _zone_reclaim(facts: NumaFacts) -> list[Finding]:
    """Zone reclaim evicts a node's own page cache instead of using the other node."""
    if not facts.zone_reclaim_mode:
        return []
    return [
        Finding(
            Severity.WARN,
            f"vm.zone_reclaim_mode is {facts.zone_reclaim_mode} on a "
            f"{len(facts.nodes)}-node machine",
            sysctl_fix(
                "vm.zone_reclaim_mode",
                0,
                "With zone reclaim on, a node that runs short evicts its own page cache "
                "(recent segments consumers are about to read) and stalls the allocating "
                "thread instead of using free memory on the other node.",
            ),
            "/proc/sys/vm/zone_reclaim_mode",
        )
    ]


def _miss_pct(facts: NumaFacts) -> float:
    """Percent of page allocations since boot that missed their preferred node."""
    hits = sum(n.numa_hit or 0 for n in facts.nodes)
    misses = sum(n.numa_miss or 0 for n in facts.nodes)
    return _pct(misses, hits + misses)


def _window_miss_pct(facts: NumaFacts) -> float | None:
    """Percent of the window's page allocations that missed, None when too few to judge."""
    if facts.window_hit is None or facts.window_miss is None:
        return None
    allocations = facts.window_hit + facts.window_miss
    if allocations < MIN_WINDOW_ALLOCATIONS:
        return None
    return _pct(facts.window_miss, allocations)


def _remote_allocations(facts: NumaFacts, thresholds: dict[str, Any]) -> list[Finding]:
    """Nodes are running out of local memory now: allocations go to remote nodes."""
    miss_pct = _window_miss_pct(facts)
    severity = MISSES.grade(miss_pct, thresholds)
    if severity is None:
        return []
    allocations = (facts.window_hit or 0) + (facts.window_miss or 0)
    return [
        Finding(
            severity,
            f"{miss_pct:g}% of {allocations} page allocations over {facts.window_s:g} s "
            "landed on a node other than the one asked for (warn at "
            f"{MISSES.limit(severity, thresholds):g}%; {_miss_pct(facts):g}% since boot)",
            "Nodes are running out of local memory: see the per-node table and "
            "`numastat -m`. Remote memory costs every access latency; keep each node's "
            "load (Iggy shards under numa:auto, other pinned services) within its memory.",
            f"{NODE_DIR}/node*/numastat",
        )
    ]


def _window_words(facts: NumaFacts) -> str:
    """'misses 0% of 5120 allocations over 0.5 s' or why the window was not judged."""
    pct = _window_miss_pct(facts)
    if pct is not None:
        allocations = (facts.window_hit or 0) + (facts.window_miss or 0)
        return f"misses {pct:g}% of {allocations} allocations over {facts.window_s:g} s"
    if facts.window_hit is None:
        return "misses not sampled"
    return f"too few allocations over {facts.window_s:g} s to judge misses"


def judge_numa(facts: NumaFacts, thresholds: dict[str, Any]) -> Result:
    """Single node passes; on NUMA, judge memory imbalance, zone reclaim and misses."""
    data: dict[str, Any] = {
        "numa": len(facts.nodes) > 1,
        "nodes": _numa_rows(facts),
        "zone_reclaim_mode": facts.zone_reclaim_mode,
        "numa_balancing": facts.numa_balancing,
        "node_total_kib": facts.node_total_kib,
        "meminfo_total_kib": facts.meminfo_total_kib,
        "node_figures_partial": facts.partial,
        "note": (
            "available_est = MemFree + file pages + reclaimable slab of the node; misses "
            "are judged over the sample window, the since-boot share only informs"
        ),
    }
    partial = _partial_node_memory(facts)
    if len(facts.nodes) <= 1:
        return Result.from_findings(partial, ok=_single_node(facts), data=data)
    findings = [
        *partial,
        *_starved_nodes(facts, thresholds),
        *_zone_reclaim(facts),
        *_remote_allocations(facts, thresholds),
    ]
    data |= {
        "miss_pct_since_boot": _miss_pct(facts),
        "window_s": facts.window_s,
        "window_allocations": (
            None if facts.window_hit is None else facts.window_hit + (facts.window_miss or 0)
        ),
        "miss_pct_over_window": _window_miss_pct(facts),
    }
    ok = f"{len(facts.nodes)} NUMA nodes: " + "; ".join(
        f"node{n.node} CPUs {n.cpulist or 'none'}, {n.available_pct:g}% of "
        f"{format_kib(n.total_kib)} available"
        for n in facts.nodes
    )
    if facts.partial:
        ok += f" (partial: {_partial_words(facts)}; balance not judged)"
    ok += f"; {_window_words(facts)}"
    return Result.from_findings(findings, ok=ok, data=data)


@check(
    id="memory.numa",
    category="memory",
    title="NUMA layout",
    description="NUMA nodes with their CPUs and memory; imbalance between nodes, zone reclaim.",
    timeout_s=5,
    thresholds={"plenty_node_available_pct": 30.0},
    bands=(NODE_AVAILABLE, MISSES),
    sampling_s=NUMA_SAMPLE_S,
)
def memory_numa(ctx: Context) -> Result:
    """Whether this is a NUMA machine and whether its nodes are balanced.

    Verdicts:
    - pass: a single-node machine [test_memory_numa_single_node]
    - pass: two balanced nodes, most of their memory page cache [test_memory_numa_balanced]
    - pass: node memory still being initialised lazily (deferred_init), 3.7 GiB of a
      24 GiB node counted: said so, balance not judged
      [test_memory_numa_partial_node_memory_is_not_imbalance]
    - pass: many misses since boot, none over the sample window
      [test_memory_numa_old_misses_since_boot_pass]
    - warn: one node nearly full while the other has plenty [test_memory_numa_imbalance]
    - fail: one node at 1 GiB of 64 GiB available, the other with plenty
      [test_memory_numa_imbalance]
    - warn: vm.zone_reclaim_mode on, and a quarter of the sample's allocations remote
      [test_memory_numa_zone_reclaim_and_misses]
    """
    return judge_numa(read_numa(ctx), ctx.thresholds)
