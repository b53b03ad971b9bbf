"""The broker's control group: which cgroup it runs in, the limits that bind it, the memory
charged to it and the memory pressure it feels.

`read_cgroup(ctx)` finds the broker (`find_broker`), else falls back to this agent's own
cgroup, reads cgroup v2 (or v1, including the hybrid layout with a v2 `unified` mount for
pressure) and takes each limit as the tightest over the cgroup and its ancestors, since a
Kubernetes pod or a systemd slice may set the limit one level up. memory.usage judges
memory against it; system.virtualization reports the CPU quota, pids and memory.high.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from snapshot_agent.core.context import Context
from snapshot_agent.node.processes import find_broker
from snapshot_agent.node.procfs import parse_cpu_list, parse_kv

ROOT = "/sys/fs/cgroup"
V1_UNLIMITED = 2**62  # cgroup v1 reports "no limit" as a huge page-aligned number
MAX_DEPTH = 32
NODE_PRESSURE = "/proc/pressure/memory"


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """`/proc/PID/cgroup` as {controller: path}; the v2 entry's key is ''."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            out[""] = path
        for ctrl in controllers.split(","):
            if ctrl:
                out[ctrl.removeprefix("name=")] = path
    return out


def parse_limit(text: str | None) -> int | None:
    """A cgroup limit: None for 'max', -1, v1's huge 'unlimited', or unreadable."""
    if text is None:
        return None
    value = text.strip().split()[0] if text.strip() else ""
    if value in ("", "max", "-1"):
        return None
    try:
        number = int(value)
    except ValueError:
        return None
    return None if number < 0 or number >= V1_UNLIMITED else number


def parse_cpu_max(text: str | None) -> float | None:
    """cgroup v2 `cpu.max` ('200000 100000' or 'max 100000') as cores, None = unlimited."""
    parts = (text or "").split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return quota / period if period > 0 and quota > 0 else None


# -- memory pressure (PSI) -----------------------------------------------------------


@dataclass(frozen=True)
class MemoryPressure:
    """PSI averages (percent of wall time) of a `memory.pressure` or /proc/pressure/memory."""

    source: str  # the node path read
    some_avg10: float
    some_avg60: float
    full_avg10: float = 0.0
    full_avg60: float = 0.0

    @property
    def cgroup(self) -> bool:
        """True when this is a cgroup's own pressure, not the whole node's."""
        return self.source != NODE_PRESSURE


def parse_pressure(text: str | None, source: str) -> MemoryPressure | None:
    """`some avg10=.. avg60=.. avg300=.. total=..` (and `full`) lines; None without `some`."""
    lines: dict[str, tuple[float, float]] = {}
    for line in (text or "").splitlines():
        kind, *pairs = line.split() or [""]
        values = dict(p.partition("=")[::2] for p in pairs)
        try:
            lines[kind] = (float(values["avg10"]), float(values["avg60"]))
        except (KeyError, ValueError):
            continue
    if "some" not in lines:
        return None
    full = lines.get("full", (0.0, 0.0))
    return MemoryPressure(source, *lines["some"], *full)


# -- memory charged to a cgroup ------------------------------------------------------


@dataclass(frozen=True)
class MemoryCharge:
    """Memory charged to a cgroup (bytes) and how much of it the kernel can reclaim."""

    usage: int  # memory.current (v2) or memory.usage_in_bytes (v1)
    anon: int = 0
    shmem: int = 0  # tmpfs and shared memory: anonymous-like, only swap frees it
    active_file: int = 0  # page cache in use recently (a broker's hot segments)
    inactive_file: int = 0
    slab_reclaimable: int = 0  # dentries and inodes (v2 only)

    @property
    def reclaimable(self) -> int:
        """Page cache (active and inactive) and reclaimable slab, never more than the usage."""
        return min(self.usage, self.active_file + self.inactive_file + self.slab_reclaimable)

    @property
    def unreclaimable(self) -> int:
        """What stays when the kernel has dropped every page it can: anon, shmem, kernel."""
        return self.usage - self.reclaimable


def charge_from_stat(usage: int, stat: dict[str, int], v1: bool) -> MemoryCharge:
    """A MemoryCharge from memory.stat (v1: the hierarchical `total_*` keys)."""
    if v1:
        return MemoryCharge(
            usage=usage,
            anon=stat.get("total_rss", stat.get("rss", 0)),
            shmem=stat.get("total_shmem", stat.get("shmem", 0)),
            active_file=stat.get("total_active_file", stat.get("active_file", 0)),
            inactive_file=stat.get("total_inactive_file", stat.get("inactive_file", 0)),
        )
    return MemoryCharge(
        usage=usage,
        anon=stat.get("anon", 0),
        shmem=stat.get("shmem", 0),
        active_file=stat.get("active_file", 0),
        inactive_file=stat.get("inactive_file", 0),
        slab_reclaimable=stat.get("slab_reclaimable", 0),
    )


# -- the cgroup --------------------------------------------------------------------


@dataclass
class CgroupFacts:
    """The limits that bind the broker's (or the agent's) cgroup, and the usage under them."""

    version: str = ""  # "v2", "v1", or "" when unknown
    path: str = ""  # the cgroup path from /proc/PID/cgroup
    of: str = ""  # whose cgroup: "iggy-server (pid N)" or "this agent (...)"
    broker_pid: int | None = None
    memory_max: int | None = None  # bytes, the tightest over the cgroup and its ancestors
    memory_high: int | None = None  # v2 memory.high (v1: soft limit), tightest
    memory_limit_at: str = ""  # the node dir whose limit is memory_max
    memory: MemoryCharge | None = None  # at the level that sets the limit (else the leaf)
    #: Since the cgroup was created: oom, oom_kill, max, high (v2 memory.events at the
    #: limit's level); v1: oom_kill, under_oom (memory.oom_control) and max (failcnt).
    memory_events: dict[str, int] = field(default_factory=dict)
    memory_events_at: str = ""
    pressure: MemoryPressure | None = None  # the cgroup's memory.pressure, else the node's
    cpu_quota: float | None = None  # cores
    cpu_limit_at: str = ""
    nr_periods: int = 0
    nr_throttled: int = 0
    cpuset_cores: int | None = None
    pids_max: int | None = None
    pids_current: int | None = None
    pids_limit_at: str = ""

    @property
    def memory_usage(self) -> int | None:
        """Bytes charged at the level that sets the limit (None when unread)."""
        return self.memory.usage if self.memory else None

    @property
    def oom_events(self) -> int:
        """OOM events since the cgroup was created: the larger of oom and oom_kill."""
        ev = self.memory_events
        return max(ev.get("oom", 0), ev.get("oom_kill", 0), ev.get("under_oom", 0))

    @property
    def owner(self) -> str:
        """Whose cgroup, short: 'iggy-server' or 'this agent'."""
        return self.of.split(" (")[0]

    def binding_memory_limit(self, mem_total: int | None) -> int | None:
        """The memory limit when it can bind: below the RAM (a larger one never binds)."""
        limit = self.memory_max
        if limit is not None and mem_total is not None and limit >= mem_total:
            return None
        return limit


def _levels(base: str, path: str) -> list[str]:
    """Node dirs of a cgroup and its ancestors under `base`, leaf first."""
    parts = [p for p in path.split("/") if p and p not in (".", "..")][:MAX_DEPTH]
    return [base + "".join("/" + p for p in parts[:n]) for n in range(len(parts), -1, -1)]


def _tightest(
    ctx: Context,
    dirs: list[str],
    filename: str,
    parse: Callable[[str | None], Any] = parse_limit,
) -> tuple[Any, str]:
    """The smallest limit in `filename` over a cgroup and its ancestors, and where it is."""
    best: Any = None
    where = ""
    for d in dirs:
        value = parse(ctx.read_optional(f"{d}/{filename}", max_bytes=256))
        if value is not None and (best is None or value < best):
            best, where = value, d
    return best, where


def _existing(ctx: Context, dirs: list[str]) -> list[str]:
    """Only the dirs that exist (a path from another namespace may not)."""
    return [d for d in dirs if ctx.path(d).is_dir()]


def _proc_cgroup(ctx: Context, facts: CgroupFacts) -> dict[str, str]:
    """The broker's /proc/PID/cgroup (else the agent's), noting whose it is."""
    broker = find_broker(ctx)
    text = None
    if broker is not None:
        text = ctx.read_optional(f"/proc/{broker.pid}/cgroup", max_bytes=16 * 1024)
        facts.of, facts.broker_pid = f"iggy-server (pid {broker.pid})", broker.pid
    if text is None:
        text = ctx.read_optional("/proc/self/cgroup", max_bytes=16 * 1024)
        facts.of = (
            "this agent (iggy-server's cgroup is unreadable)"
            if broker is not None
            else "this agent (no iggy-server process found)"
        )
        facts.broker_pid = None
    return parse_proc_cgroup(text or "")


def _read_pressure(ctx: Context, facts: CgroupFacts, cgroup_dirs: list[str]) -> None:
    """The memory.pressure of the first cgroup dir that has one, else the node's PSI."""
    for node_path in [f"{d}/memory.pressure" for d in cgroup_dirs] + [NODE_PRESSURE]:
        found = parse_pressure(ctx.read_optional(node_path, max_bytes=4096), node_path)
        if found is not None:
            facts.pressure = found
            return


def _read_v2(ctx: Context, facts: CgroupFacts, paths: dict[str, str]) -> tuple[str | None, str]:
    """Fill in the cgroup v2 limits; return the cpuset and the dir whose cpu.stat counts."""
    facts.version = "v2"
    facts.path = paths.get("", "/")
    # In a container with its own cgroup namespace the path may not exist as such:
    # then the container's cgroup is mounted at /sys/fs/cgroup itself.
    dirs = _existing(ctx, _levels(ROOT, facts.path)) or [ROOT]
    leaf = dirs[0]
    facts.memory_max, facts.memory_limit_at = _tightest(ctx, dirs, "memory.max")
    facts.memory_high, _ = _tightest(ctx, dirs, "memory.high")
    at = facts.memory_limit_at or leaf
    usage = parse_limit(ctx.read_optional(f"{at}/memory.current"))
    if usage is not None:
        stat = parse_kv(ctx.read_optional(f"{at}/memory.stat", max_bytes=64 * 1024))
        facts.memory = charge_from_stat(usage, stat, v1=False)
    # memory.events is hierarchical: at the limit's level it counts every OOM under it.
    facts.memory_events = parse_kv(ctx.read_optional(f"{at}/memory.events"))
    facts.memory_events_at = f"{at}/memory.events"
    _read_pressure(ctx, facts, [leaf])
    facts.cpu_quota, facts.cpu_limit_at = _tightest(ctx, dirs, "cpu.max", parse_cpu_max)
    cpus = ctx.read_optional(f"{leaf}/cpuset.cpus.effective", max_bytes=4096)
    facts.pids_max, facts.pids_limit_at = _tightest(ctx, dirs, "pids.max")
    pids_at = facts.pids_limit_at or leaf
    facts.pids_current = parse_limit(ctx.read_optional(f"{pids_at}/pids.current"))
    return cpus, facts.cpu_limit_at or leaf


def _v1_dirs(ctx: Context, paths: dict[str, str], ctrl: str) -> list[str]:
    """Dirs of v1 controller `ctrl`'s hierarchy for our path (mounted as e.g. cpu,cpuacct)."""
    path = paths.get(ctrl, "/")
    for mount in (ctrl, "cpu,cpuacct", "cpuacct,cpu"):
        base = f"{ROOT}/{mount}"
        if (mount == ctrl or ctrl in mount.split(",")) and ctx.path(base).is_dir():
            return _existing(ctx, _levels(base, path)) or [base]
    return []


def _read_v1_memory(ctx: Context, facts: CgroupFacts, mem: list[str]) -> None:
    """Fill in the v1 memory limit, the usage under it and the OOM events."""
    facts.memory_max, facts.memory_limit_at = _tightest(ctx, mem, "memory.limit_in_bytes")
    facts.memory_high, _ = _tightest(ctx, mem, "memory.soft_limit_in_bytes")
    at = facts.memory_limit_at or mem[0]
    usage = parse_limit(ctx.read_optional(f"{at}/memory.usage_in_bytes"))
    if usage is not None:
        stat = parse_kv(ctx.read_optional(f"{at}/memory.stat", max_bytes=64 * 1024))
        facts.memory = charge_from_stat(usage, stat, v1=True)
    oom = parse_kv(ctx.read_optional(f"{at}/memory.oom_control"))
    facts.memory_events = {k: oom[k] for k in ("oom_kill", "under_oom") if k in oom}
    failcnt = parse_limit(ctx.read_optional(f"{at}/memory.failcnt"))
    if failcnt is not None:
        facts.memory_events["max"] = failcnt
    facts.memory_events_at = f"{at}/memory.oom_control"


def _read_v1_cpu_quota(ctx: Context, facts: CgroupFacts, cpu: list[str]) -> None:
    """Fill in the tightest v1 CFS quota (cores) over the cgroup and its ancestors."""
    for d in cpu:
        quota = parse_limit(ctx.read_optional(f"{d}/cpu.cfs_quota_us"))
        period = parse_limit(ctx.read_optional(f"{d}/cpu.cfs_period_us"))
        if quota and period:
            cores = quota / period
            if facts.cpu_quota is None or cores < facts.cpu_quota:
                facts.cpu_quota, facts.cpu_limit_at = cores, d


def _read_v1(ctx: Context, facts: CgroupFacts, paths: dict[str, str]) -> tuple[str | None, str]:
    """Fill in the cgroup v1 limits; return the cpuset and the dir whose cpu.stat counts."""
    facts.version = "v1"
    facts.path = paths.get("memory", paths.get("cpu", "/"))
    if mem := _v1_dirs(ctx, paths, "memory"):
        _read_v1_memory(ctx, facts, mem)
    # Hybrid layout: PSI lives in the v2 hierarchy mounted at /sys/fs/cgroup/unified.
    unified = _existing(ctx, _levels(f"{ROOT}/unified", paths.get("", "/")))[:1]
    _read_pressure(ctx, facts, unified)
    stat_at = ""
    if cpu := _v1_dirs(ctx, paths, "cpu"):
        _read_v1_cpu_quota(ctx, facts, cpu)
        stat_at = facts.cpu_limit_at or cpu[0]
    cpuset = _v1_dirs(ctx, paths, "cpuset")
    cpus = ctx.read_optional(f"{cpuset[0]}/cpuset.effective_cpus") if cpuset else None
    if pids := _v1_dirs(ctx, paths, "pids"):
        facts.pids_max, facts.pids_limit_at = _tightest(ctx, pids, "pids.max")
        at = facts.pids_limit_at or pids[0]
        facts.pids_current = parse_limit(ctx.read_optional(f"{at}/pids.current"))
    return cpus, stat_at


def read_cgroup(ctx: Context) -> CgroupFacts:
    """The broker's cgroup (else the agent's), limits min'ed over its ancestors.

    Without any cgroup filesystem only the node's memory pressure is filled in.
    """
    facts = CgroupFacts()
    paths = _proc_cgroup(ctx, facts)
    if ctx.path(f"{ROOT}/cgroup.controllers").exists():
        cpus, stat_at = _read_v2(ctx, facts, paths)
    elif paths and ctx.path(ROOT).is_dir():
        cpus, stat_at = _read_v1(ctx, facts, paths)
    else:
        _read_pressure(ctx, facts, [])
        return facts
    cpu_stat = parse_kv(ctx.read_optional(f"{stat_at}/cpu.stat")) if stat_at else {}
    facts.nr_periods = cpu_stat.get("nr_periods", 0)
    facts.nr_throttled = cpu_stat.get("nr_throttled", 0)
    if cpus and cpus.strip():
        try:
            facts.cpuset_cores = parse_cpu_list(cpus)
        except ValueError:
            facts.cpuset_cores = None
    return facts
