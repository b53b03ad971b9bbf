"""Memory checks: usage, swap, huge pages and NUMA layout.

The OOM killer's history is memory.oom, in checks/kernel.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from snapshot_agent.core.check import Requirements, check
from snapshot_agent.core.context import Context
from snapshot_agent.core.grading import Band
from snapshot_agent.core.remedies import sysctl_fix
from snapshot_agent.core.results import Finding, Result, Severity
from snapshot_agent.node.processes import list_pids, parse_proc_status
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
    """The /proc/meminfo breakdown (KiB) plus the overcommit and dirty-page settings."""

    info: dict[str, int]
    overcommit_memory: int | None = None
    dirty_ratio: int | None = None
    dirty_bytes: int | None = None


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
    """Read /proc/meminfo and the vm sysctls that decide how it is judged."""
    text = ctx.read_text("/proc/meminfo")
    ctx.artifact("meminfo.txt", text)
    return MemoryFacts(
        info=parse_meminfo(text),
        overcommit_memory=read_int(ctx, "/proc/sys/vm/overcommit_memory"),
        dirty_ratio=read_int(ctx, "/proc/sys/vm/dirty_ratio"),
        dirty_bytes=read_int(ctx, "/proc/sys/vm/dirty_bytes"),
    )


def available_kib(info: dict[str, int]) -> tuple[int, bool]:
    """MemAvailable, or an estimate (free + buffers + cache) on kernels before 3.14."""
    if "MemAvailable" in info:
        return info["MemAvailable"], False
    return info.get("MemFree", 0) + info.get("Buffers", 0) + info.get("Cached", 0), True


#: MemAvailable as percent of MemTotal (lower is worse).
AVAILABLE = Band("available_pct", warn=15.0, fail=5.0, higher_is_worse=False)
#: Dirty plus writeback pages as percent of MemTotal.
DIRTY = Band("dirty_pct", warn=10.0, fail=20.0)
#: Committed_AS as percent of CommitLimit (judged under strict overcommit only).
COMMIT = Band("commit_pct", warn=90.0, fail=98.0)


def _low_available(info: dict[str, int], thresholds: dict[str, Any]) -> list[Finding]:
    """Little memory is available: no page cache for recent segments, then the OOM killer."""
    total = info["MemTotal"]
    avail, _ = available_kib(info)
    avail_pct = _pct(avail, total)
    severity = AVAILABLE.grade(avail_pct, thresholds)
    if severity is None:
        return []
    limit = AVAILABLE.limit(severity, thresholds)
    return [
        Finding(
            severity,
            f"only {format_kib(avail)} of {format_kib(total)} memory is available "
            f"({avail_pct:g}%, {severity} below {limit:g}%)",
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
        "breakdown": breakdown,
    }


def judge_memory(facts: MemoryFacts, thresholds: dict[str, Any]) -> Result:
    """Judge MemAvailable, dirty/writeback pages and (in strict mode) the commit charge."""
    info = facts.info
    if info.get("MemTotal", 0) <= 0:
        return Result.skipped("/proc/meminfo has no usable MemTotal line")
    findings = [
        *_low_available(info, thresholds),
        *_dirty_backlog(facts, thresholds),
        *_strict_commit_exhausted(facts, thresholds),
    ]
    data = _memory_data(facts)
    ok = (
        f"{format_kib(data['available_kib'])} of {format_kib(data['total_kib'])} available "
        f"({data['available_pct']:g}%{', estimated' if data['available_estimated'] else ''}); "
        f"cache {format_kib(info.get('Cached', 0))}, "
        f"anon {format_kib(info.get('AnonPages', 0))}, "
        f"dirty+writeback {format_kib(data['dirty_writeback_kib'])}"
    )
    return Result.from_findings(findings, ok=ok, data=data)


@check(
    id="memory.usage",
    category="memory",
    title="Memory usage",
    description="The /proc/meminfo breakdown; available memory, dirty pages and commit charge.",
    requires=Requirements(paths=("/proc/meminfo",)),
    timeout_s=5,
    bands=(AVAILABLE, DIRTY, COMMIT),
)
def memory_usage(ctx: Context) -> Result:
    """How much memory is available, and what holds the rest."""
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

    @property
    def used_kib(self) -> int:
        """Swap in use."""
        return max(0, self.total_kib - self.free_kib)


def parse_status_swap(text: str) -> tuple[str, int] | None:
    """(Name, VmSwap KiB) from a /proc/PID/status; None for kernel threads."""
    fields = parse_proc_status(text)
    swap = parse_kib(fields.get("VmSwap", ""))
    return (fields.get("Name", ""), swap) if swap is not None else None


def read_swap(ctx: Context) -> SwapFacts:
    """Swap totals, devices, swappiness and, when swap is used, its biggest users."""
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
        facts.top_users = _top_swap_users(ctx)
    return facts


def _top_swap_users(ctx: Context) -> list[dict[str, Any]]:
    """The processes with the most swapped-out memory (VmSwap in /proc/PID/status)."""
    users: list[dict[str, Any]] = []
    for pid in list_pids(ctx)[:MAX_PROCESSES]:
        status = ctx.read_optional(f"/proc/{pid}/status", max_bytes=8192)
        parsed = parse_status_swap(status or "")
        if parsed and parsed[1] > 0:
            users.append({"pid": pid, "name": parsed[0], "swap_kib": parsed[1]})
    users.sort(key=lambda u: u["swap_kib"], reverse=True)
    return users[:TOP_SWAP_USERS]


#: Swap in use as percent of the swap space.
SWAP_USED = Band("used_pct", warn=10.0, fail=50.0)


def _swap_in_use(facts: SwapFacts, thresholds: dict[str, Any]) -> list[Finding]:
    """Memory ran short and pages went to disk; touching them stalls the thread."""
    used_pct = _pct(facts.used_kib, facts.total_kib)
    severity = SWAP_USED.grade(used_pct, thresholds)
    if severity is None:
        return []
    limit = SWAP_USED.limit(severity, thresholds)
    who = ", ".join(
        f"{u['name']} ({u['pid']}) {format_kib(u['swap_kib'])}" for u in facts.top_users
    )
    return [
        Finding(
            severity,
            f"{format_kib(facts.used_kib)} of {format_kib(facts.total_kib)} swap in use "
            f"({used_pct:g}%, {severity} at {limit:g}%)"
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
)
def memory_swap(ctx: Context) -> Result:
    """Whether the node swaps, and whether it is inclined to."""
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
    """THP and HugeTLB settings judged for a latency-sensitive broker."""
    return judge_hugepages(read_hugepages(ctx), ctx.thresholds)


# --- memory.numa -----------------------------------------------------------------------

NODE_DIR = "/sys/devices/system/node"


@dataclass(frozen=True)
class NumaNode:
    """One NUMA node: its CPUs, memory (KiB) and allocation counters."""

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
    """Every node, and the sysctls that change how NUMA allocation behaves."""

    nodes: list[NumaNode] = field(default_factory=list)
    zone_reclaim_mode: int | None = None
    numa_balancing: int | None = None


def read_numa(ctx: Context) -> NumaFacts:
    """Nodes from /sys/devices/system/node/node*/ (cpulist, meminfo, numastat)."""
    facts = NumaFacts(
        zone_reclaim_mode=read_int(ctx, "/proc/sys/vm/zone_reclaim_mode"),
        numa_balancing=read_int(ctx, "/proc/sys/kernel/numa_balancing"),
    )
    try:
        entries = list(ctx.path(NODE_DIR).iterdir())
    except OSError:
        return facts
    for n in sorted(int(m.group(1)) for e in entries if (m := _NODE_DIR.match(e.name))):
        base = f"{NODE_DIR}/node{n}"
        meminfo = ctx.read_optional(f"{base}/meminfo", max_bytes=64 * 1024)
        if meminfo is None:
            continue
        ctx.artifact(f"node{n}-meminfo.txt", meminfo)
        info = parse_meminfo(meminfo)
        stat = parse_kv(ctx.read_optional(f"{base}/numastat", max_bytes=4096))
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
    return facts


#: Free plus reclaimable memory of one NUMA node, percent of the node (lower is worse).
NODE_AVAILABLE = Band("node_available_pct", warn=10.0, fail=3.0, higher_is_worse=False)
#: Page allocations since boot that landed on another node than the one asked for.
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
            "numa_hit": n.numa_hit,
            "numa_miss": n.numa_miss,
        }
        for n in facts.nodes
    ]


def _single_node(facts: NumaFacts) -> str:
    """The summary of a machine that is not NUMA."""
    if facts.nodes:
        n = facts.nodes[0]
        return (
            f"not a NUMA machine: 1 node with CPUs {n.cpulist or 'none'} and "
            f"{format_kib(n.total_kib)}; Iggy's numa:auto allocation sees a single node"
        )
    return f"not a NUMA machine: the kernel exposes no {NODE_DIR}/node* (no NUMA support)"


def _starved_nodes(facts: NumaFacts, thresholds: dict[str, Any]) -> list[Finding]:
    """A node runs short of memory while another has plenty: its CPUs reclaim or go remote."""
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


def _remote_allocations(facts: NumaFacts, thresholds: dict[str, Any]) -> list[Finding]:
    """Nodes have been running out of local memory: allocations went to remote nodes."""
    miss_pct = _miss_pct(facts)
    severity = MISSES.grade(miss_pct, thresholds)
    if severity is None:
        return []
    return [
        Finding(
            severity,
            f"{miss_pct:g}% of page allocations since boot landed on a node other than the "
            f"one asked for (warn at {MISSES.limit(severity, thresholds):g}%)",
            "Nodes have been running out of local memory: see the per-node table and "
            "`numastat -m`. Remote memory costs every access latency; keep each node's "
            "load (Iggy shards under numa:auto, other pinned services) within its memory.",
            f"{NODE_DIR}/node*/numastat",
        )
    ]


def judge_numa(facts: NumaFacts, thresholds: dict[str, Any]) -> Result:
    """Single node passes; on NUMA, judge memory imbalance, zone reclaim and misses."""
    data: dict[str, Any] = {
        "numa": len(facts.nodes) > 1,
        "nodes": _numa_rows(facts),
        "zone_reclaim_mode": facts.zone_reclaim_mode,
        "numa_balancing": facts.numa_balancing,
        "note": "available_est = MemFree + file pages + reclaimable slab of the node",
    }
    if len(facts.nodes) <= 1:
        return Result.from_findings([], ok=_single_node(facts), data=data)
    findings = [
        *_starved_nodes(facts, thresholds),
        *_zone_reclaim(facts),
        *_remote_allocations(facts, thresholds),
    ]
    data["miss_pct_since_boot"] = _miss_pct(facts)
    ok = f"{len(facts.nodes)} NUMA nodes: " + "; ".join(
        f"node{n.node} CPUs {n.cpulist or 'none'}, {n.available_pct:g}% of "
        f"{format_kib(n.total_kib)} available"
        for n in facts.nodes
    )
    return Result.from_findings(findings, ok=ok, data=data)


@check(
    id="memory.numa",
    category="memory",
    title="NUMA layout",
    description="NUMA nodes with their CPUs and memory; imbalance between nodes, zone reclaim.",
    timeout_s=5,
    thresholds={"plenty_node_available_pct": 30.0},
    bands=(NODE_AVAILABLE, MISSES),
)
def memory_numa(ctx: Context) -> Result:
    """Whether this is a NUMA machine and whether its nodes are balanced."""
    return judge_numa(read_numa(ctx), ctx.thresholds)
