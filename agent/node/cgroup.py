"""The broker's control group: which cgroup it runs in, the limits that bind it, the memory
charged to it and the memory pressure it feels.

`read_cgroup(ctx)` finds the broker (`find_broker`), else falls back to this agent's own
cgroup, and reads cgroup v2 (or v1, including the hybrid layout with a v2 `unified` mount
for pressure). A Kubernetes pod or a systemd slice may set a limit one level up, so every
level that sets one is read with its own usage: the smallest limit is not always the one
with the least headroom. The cgroup is looked up honestly: at its path under this agent's
/sys/fs/cgroup; at the mount root only when it is the agent's own cgroup; else through the
broker's own mount (/proc/PID/root/sys/fs/cgroup, checked by cgroup.procs); else its limits
are unknown (`hidden`), never another cgroup's. memory.usage judges memory against each
level; system.virtualization reports the CPU quota, pids and memory.high.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from snapshot_agent.core.context import Context
from snapshot_agent.node.processes import agent_pid, find_broker
from snapshot_agent.node.procfs import parse_cpu_list, parse_kv

ROOT = "/sys/fs/cgroup"
V1_UNLIMITED = 2**62  # cgroup v1 reports "no limit" as a huge page-aligned number
MAX_DEPTH = 32
#: How far memory.usage looks for the broker's cgroup in its own mount (dirs, depth).
MAX_SEARCH = 64
SEARCH_DEPTH = 3
#: Scheduling periods from which a throttled share means something.
MIN_PERIODS = 100
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


@dataclass(frozen=True)
class MemoryLevel:
    """One level of the cgroup tree (the cgroup itself or an ancestor): its limits, its charge."""

    at: str  # the node dir
    path: str  # the cgroup's path as shown (the node dir when seen through /proc/PID/root)
    limit: int | None = None  # memory.max (v1: memory.limit_in_bytes)
    high: int | None = None  # memory.high (v1: memory.soft_limit_in_bytes)
    charge: MemoryCharge | None = None  # everything charged at this level and below it
    #: Since the cgroup was created: oom, oom_kill, max, high (v2 memory.events, counting
    #: every cgroup below too); v1: oom_kill, under_oom (memory.oom_control), max (failcnt).
    events: dict[str, int] = field(default_factory=dict)
    events_at: str = ""

    @property
    def oom_events(self) -> int:
        """OOM events since the cgroup was created: the larger of oom and oom_kill."""
        ev = self.events
        return max(ev.get("oom", 0), ev.get("oom_kill", 0), ev.get("under_oom", 0))

    @property
    def used_pct(self) -> float | None:
        """What this level cannot reclaim, as percent of its own limit; None without both."""
        if self.limit is None or self.limit <= 0 or self.charge is None:
            return None
        return round(100.0 * self.charge.unreclaimable / self.limit, 1)


@dataclass
class CgroupFacts:
    """The limits at each level of the broker's (or the agent's) cgroup, the usage under each."""

    version: str = ""  # "v2", "v1", or "" when unknown
    path: str = ""  # the cgroup path from /proc/PID/cgroup (relative to the agent's namespace)
    of: str = ""  # whose cgroup: "iggy-server (pid N)" or "this agent (...)"
    broker_pid: int | None = None
    #: The cgroup first, then each ancestor that sets memory.max or memory.high.
    memory_levels: list[MemoryLevel] = field(default_factory=list)
    #: Controllers whose cgroup this agent cannot see: their limits are unknown.
    hidden: list[str] = field(default_factory=list)
    #: Where the cgroup was found when not under this agent's /sys/fs/cgroup (the broker's
    #: own mount, /proc/PID/root/sys/fs/cgroup); levels above that root are not visible.
    seen_through: str = ""
    pressure: MemoryPressure | None = None  # the cgroup's memory.pressure, else the node's
    cpu_quota: float | None = None  # cores, the smallest quota over the cgroup and ancestors
    cpu_limit_at: str = ""
    nr_periods: int = 0  # at the most throttled level with a quota (else the cgroup)
    nr_throttled: int = 0
    cpu_stat_at: str = ""
    cpuset_cores: int | None = None
    pids_max: int | None = None  # at the level nearest its own pids.max
    pids_current: int | None = None
    pids_limit_at: str = ""

    @property
    def leaf(self) -> MemoryLevel | None:
        """The cgroup's own level (None when it was not found)."""
        return self.memory_levels[0] if self.memory_levels else None

    @property
    def memory_known(self) -> bool:
        """False when the cgroup's memory limits could not be read (not visible here)."""
        return bool(self.version) and "memory" not in self.hidden

    @property
    def owner(self) -> str:
        """Whose cgroup, short: 'iggy-server' or 'this agent'."""
        return self.of.split(" (")[0]

    def why_hidden(self) -> str:
        """Why the cgroup's limits could not be read, in words ('' when they were)."""
        if not self.hidden:
            return ""
        where = (
            "outside this agent's cgroup namespace"
            if resolve_path(self.path) is None
            else "not under this agent's /sys/fs/cgroup"
        )
        return (
            f"{self.owner}'s cgroup {self.path} is {where}, and its own mount "
            f"(/proc/{self.broker_pid}/root/sys/fs/cgroup) does not show it to this agent"
        )

    def memory_limits(self, mem_total: int | None) -> list[MemoryLevel]:
        """Levels whose memory limit can bind: set and below the RAM (a larger one never binds)."""
        return [
            lvl
            for lvl in self.memory_levels
            if lvl.limit is not None and (mem_total is None or lvl.limit < mem_total)
        ]

    def memory_level(self, mem_total: int | None) -> MemoryLevel | None:
        """The binding level with the least headroom (else, usage unread, the smallest limit)."""
        return max(
            self.memory_limits(mem_total),
            key=lambda lvl: (-1.0 if lvl.used_pct is None else lvl.used_pct, -(lvl.limit or 0)),
            default=None,
        )


def resolve_path(path: str) -> str | None:
    """A /proc/PID/cgroup path with '.' and '..' resolved, None when it leaves the root.

    '..' above the root means the cgroup lies outside the reader's cgroup namespace (a
    sidecar agent sees its broker as `/../cri-containerd-….scope`): it is not under this
    agent's /sys/fs/cgroup at all. A path deeper than MAX_DEPTH is not followed either.
    """
    parts: list[str] = []
    for part in path.strip().split("/"):
        if part in ("", "."):
            continue
        if part != "..":
            parts.append(part)
        elif parts:
            parts.pop()
        else:
            return None
    return None if len(parts) > MAX_DEPTH else "/" + "/".join(parts)


def _levels(base: str, path: str) -> list[str]:
    """Node dirs of a resolved cgroup path and its ancestors under `base`, leaf first."""
    parts = [p for p in path.split("/") if p]
    return [base + "".join("/" + p for p in parts[:n]) for n in range(len(parts), -1, -1)]


def _listed(ctx: Context, d: str, pid: int) -> bool:
    """True when `d`/cgroup.procs lists `pid` (numbered in this agent's pid namespace)."""
    text = ctx.read_optional(f"{d}/cgroup.procs", max_bytes=1024 * 1024)
    return text is not None and str(pid) in text.split()


def _find_listed(ctx: Context, root: str, pid: int) -> str | None:
    """The cgroup path under `root` whose cgroup.procs lists `pid` (breadth first, bounded)."""
    queue, visited = [("/", 0)], 0
    while queue and visited < MAX_SEARCH:
        rel, depth = queue.pop(0)
        d = root + rel.rstrip("/")
        visited += 1
        if _listed(ctx, d, pid):
            return rel
        if depth >= SEARCH_DEPTH:
            continue
        try:
            children = sorted(e.name for e in ctx.path(d).iterdir() if e.is_dir())
        except OSError:
            continue
        queue += [(f"{rel.rstrip('/')}/{name}", depth + 1) for name in children]
    return None


@dataclass(frozen=True)
class _Whose:
    """The cgroup paths read for the broker (else the agent) and the agent's own."""

    paths: dict[str, str]
    own: dict[str, str]

    def is_own(self, key: str) -> bool:
        """True when, in hierarchy `key`, the cgroup is the agent's own (same path)."""
        return self.paths.get(key) == self.own.get(key)


def _locate(
    ctx: Context, facts: CgroupFacts, whose: _Whose, mount: str, key: str
) -> tuple[list[str], list[str]]:
    """Node dirs of the cgroup and its ancestors (leaf first) and their cgroup paths.

    The cgroup's path under this agent's /sys/fs/cgroup/`mount` when it is there; the mount
    root when the cgroup is the agent's own (a container's cgroup mounted at /sys/fs/cgroup);
    else the broker's own view through /proc/PID/root, checked by its cgroup.procs; else
    nothing: its limits are unknown, never another cgroup's.
    """
    base = ROOT + mount
    path = whose.paths.get(key, "/")
    resolved = resolve_path(path)
    if resolved is not None and ctx.path(_levels(base, resolved)[0]).is_dir():
        dirs = _levels(base, resolved)
        return dirs, [d.removeprefix(base) or "/" for d in dirs]
    if whose.is_own(key):
        return ([base], [path]) if ctx.path(base).is_dir() else ([], [])
    pid = facts.broker_pid
    root = f"/proc/{pid}/root{base}"
    rel = _find_listed(ctx, root, pid) if pid is not None else None
    if rel is None:
        return [], []
    facts.seen_through = facts.seen_through or root  # v1: the memory hierarchy's, first
    dirs = _levels(root, rel)
    return dirs, [path, *dirs[1:]]


def _proc_cgroup(ctx: Context, facts: CgroupFacts) -> _Whose:
    """The broker's /proc/PID/cgroup (else the agent's) and the agent's own, noting whose."""
    broker = find_broker(ctx)
    # The agent's cgroup, not this check's: a check may run in its own leaf below it.
    agent = agent_pid(ctx) if ctx.live else None
    own = f"/proc/{agent}/cgroup" if agent is not None else "/proc/self/cgroup"
    own_text = ctx.read_optional(own, max_bytes=16 * 1024)
    text = None
    if broker is not None:
        text = ctx.read_optional(f"/proc/{broker.pid}/cgroup", max_bytes=16 * 1024)
        facts.of, facts.broker_pid = f"iggy-server (pid {broker.pid})", broker.pid
    if text is None:
        text = own_text
        facts.of = (
            "this agent (iggy-server's cgroup is unreadable)"
            if broker is not None
            else "this agent (no iggy-server process found)"
        )
        facts.broker_pid = None
    return _Whose(parse_proc_cgroup(text or ""), parse_proc_cgroup(own_text or ""))


def _read_pressure(ctx: Context, facts: CgroupFacts, cgroup_dirs: list[str]) -> None:
    """The memory.pressure of the first cgroup dir that has one, else the node's PSI."""
    for node_path in [f"{d}/memory.pressure" for d in cgroup_dirs] + [NODE_PRESSURE]:
        found = parse_pressure(ctx.read_optional(node_path, max_bytes=4096), node_path)
        if found is not None:
            facts.pressure = found
            return


def _charge(ctx: Context, at: str, usage_file: str, v1: bool) -> MemoryCharge | None:
    """The memory charged at `at` and its memory.stat breakdown; None when unreadable."""
    usage = parse_limit(ctx.read_optional(f"{at}/{usage_file}", max_bytes=256))
    if usage is None:
        return None
    stat = parse_kv(ctx.read_optional(f"{at}/memory.stat", max_bytes=64 * 1024))
    return charge_from_stat(usage, stat, v1=v1)


def _v2_level(ctx: Context, at: str, path: str, leaf: bool) -> MemoryLevel | None:
    """One v2 level's memory.max/high, charge and events (None: an ancestor without limits)."""
    limit = parse_limit(ctx.read_optional(f"{at}/memory.max", max_bytes=256))
    high = parse_limit(ctx.read_optional(f"{at}/memory.high", max_bytes=256))
    if not leaf and limit is None and high is None:
        return None
    events_at = f"{at}/memory.events"
    return MemoryLevel(
        at,
        path,
        limit,
        high,
        _charge(ctx, at, "memory.current", v1=False),
        parse_kv(ctx.read_optional(events_at)),
        events_at,
    )


def _v1_level(ctx: Context, at: str, path: str, leaf: bool) -> MemoryLevel | None:
    """One v1 level's limit, soft limit, charge and OOM counts (None: no limit set)."""
    limit = parse_limit(ctx.read_optional(f"{at}/memory.limit_in_bytes", max_bytes=256))
    high = parse_limit(ctx.read_optional(f"{at}/memory.soft_limit_in_bytes", max_bytes=256))
    if not leaf and limit is None and high is None:
        return None
    oom = parse_kv(ctx.read_optional(f"{at}/memory.oom_control"))
    events = {k: oom[k] for k in ("oom_kill", "under_oom") if k in oom}
    failcnt = parse_limit(ctx.read_optional(f"{at}/memory.failcnt"))
    if failcnt is not None:
        events["max"] = failcnt
    charge = _charge(ctx, at, "memory.usage_in_bytes", v1=True)
    return MemoryLevel(at, path, limit, high, charge, events, f"{at}/memory.oom_control")


def _read_memory_levels(
    ctx: Context, facts: CgroupFacts, dirs: list[str], paths: list[str], v1: bool
) -> None:
    """The cgroup's level and every ancestor's that sets a limit, each with its own charge."""
    read = _v1_level if v1 else _v2_level
    for n, (at, path) in enumerate(zip(dirs, paths, strict=True)):
        level = read(ctx, at, path, n == 0)
        if level is not None:
            facts.memory_levels.append(level)


def _read_pids(ctx: Context, facts: CgroupFacts, dirs: list[str]) -> None:
    """pids.max and pids.current of the level nearest its own limit (else the cgroup's count)."""
    best: tuple[tuple[float, int], str, int, int | None] | None = None
    for d in dirs:
        limit = parse_limit(ctx.read_optional(f"{d}/pids.max", max_bytes=256))
        if not limit:
            continue
        current = parse_limit(ctx.read_optional(f"{d}/pids.current", max_bytes=256))
        key = (-1.0 if current is None else current / limit, -limit)
        if best is None or key > best[0]:
            best = (key, d, limit, current)
    if best is None:
        facts.pids_current = parse_limit(ctx.read_optional(f"{dirs[0]}/pids.current"))
        return
    _, facts.pids_limit_at, facts.pids_max, facts.pids_current = best


def _read_throttling(ctx: Context, facts: CgroupFacts, quota_dirs: list[str], leaf: str) -> None:
    """cpu.stat of the most throttled level with a quota (each level throttles on its own)."""
    best: tuple[tuple[bool, float], str, dict[str, int]] | None = None
    for d in quota_dirs or [leaf]:
        stat = parse_kv(ctx.read_optional(f"{d}/cpu.stat"))
        periods, throttled = stat.get("nr_periods", 0), stat.get("nr_throttled", 0)
        key = (periods >= MIN_PERIODS, throttled / periods if periods > 0 else 0.0)
        if best is None or key > best[0]:
            best = (key, d, stat)
    if best is not None:
        _, facts.cpu_stat_at, stat = best
        facts.nr_periods = stat.get("nr_periods", 0)
        facts.nr_throttled = stat.get("nr_throttled", 0)


def _read_cpu(ctx: Context, facts: CgroupFacts, quotas: list[tuple[str, float]], leaf: str) -> None:
    """The smallest CPU quota (cores) over the levels, and the most throttled level's cpu.stat."""
    if quotas:
        facts.cpu_limit_at, facts.cpu_quota = min(quotas, key=lambda q: q[1])
    _read_throttling(ctx, facts, [d for d, _ in quotas], leaf)


def _hide(facts: CgroupFacts, *controllers: str) -> None:
    """Note controllers whose cgroup is not visible (limits unknown); the node's PSI only."""
    facts.hidden += [c for c in controllers if c not in facts.hidden]


def _read_v2(ctx: Context, facts: CgroupFacts, whose: _Whose) -> str | None:
    """Fill in the cgroup v2 levels and limits; return the cpuset."""
    facts.version = "v2"
    facts.path = whose.paths.get("", "/")
    dirs, paths = _locate(ctx, facts, whose, "", "")
    if not dirs:
        _hide(facts, "memory", "cpu", "pids", "cpuset")
        _read_pressure(ctx, facts, [])
        return None
    leaf = dirs[0]
    _read_memory_levels(ctx, facts, dirs, paths, v1=False)
    _read_pressure(ctx, facts, [leaf])
    quotas = [
        (d, cores)
        for d in dirs
        if (cores := parse_cpu_max(ctx.read_optional(f"{d}/cpu.max", max_bytes=256)))
    ]
    _read_cpu(ctx, facts, quotas, leaf)
    _read_pids(ctx, facts, dirs)
    return ctx.read_optional(f"{leaf}/cpuset.cpus.effective", max_bytes=4096)


def _v1_located(
    ctx: Context, facts: CgroupFacts, whose: _Whose, ctrl: str
) -> tuple[list[str], list[str]]:
    """Dirs of v1 controller `ctrl`'s hierarchy for the cgroup (mounted as e.g. cpu,cpuacct)."""
    for mount in (ctrl, "cpu,cpuacct", "cpuacct,cpu"):
        if (mount == ctrl or ctrl in mount.split(",")) and ctx.path(f"{ROOT}/{mount}").is_dir():
            dirs, paths = _locate(ctx, facts, whose, f"/{mount}", ctrl)
            if not dirs:
                _hide(facts, ctrl)
            return dirs, paths
    return [], []


def _v1_quotas(ctx: Context, cpu: list[str]) -> list[tuple[str, float]]:
    """Each level's v1 CFS quota in cores (levels without a quota left out)."""
    quotas = []
    for d in cpu:
        quota = parse_limit(ctx.read_optional(f"{d}/cpu.cfs_quota_us"))
        period = parse_limit(ctx.read_optional(f"{d}/cpu.cfs_period_us"))
        if quota and period:
            quotas.append((d, quota / period))
    return quotas


def _read_v1(ctx: Context, facts: CgroupFacts, whose: _Whose) -> str | None:
    """Fill in the cgroup v1 levels and limits; return the cpuset."""
    facts.version = "v1"
    facts.path = whose.paths.get("memory", whose.paths.get("cpu", "/"))
    mem, mem_paths = _v1_located(ctx, facts, whose, "memory")
    if mem:
        _read_memory_levels(ctx, facts, mem, mem_paths, v1=True)
    # Hybrid layout: PSI lives in the v2 hierarchy mounted at /sys/fs/cgroup/unified.
    unified: list[str] = []
    if ctx.path(f"{ROOT}/unified").is_dir():
        unified = _locate(ctx, facts, whose, "/unified", "")[0][:1]
    _read_pressure(ctx, facts, unified)
    if cpu := _v1_located(ctx, facts, whose, "cpu")[0]:
        _read_cpu(ctx, facts, _v1_quotas(ctx, cpu), cpu[0])
    cpuset = _v1_located(ctx, facts, whose, "cpuset")[0]
    if pids := _v1_located(ctx, facts, whose, "pids")[0]:
        _read_pids(ctx, facts, pids)
    return ctx.read_optional(f"{cpuset[0]}/cpuset.effective_cpus") if cpuset else None


def read_cgroup(ctx: Context) -> CgroupFacts:
    """The broker's cgroup (else the agent's): every level's limits and its own usage.

    Without any cgroup filesystem only the node's memory pressure is filled in.
    """
    facts = CgroupFacts()
    whose = _proc_cgroup(ctx, facts)
    if ctx.path(f"{ROOT}/cgroup.controllers").exists():
        cpus = _read_v2(ctx, facts, whose)
    elif whose.paths and ctx.path(ROOT).is_dir():
        cpus = _read_v1(ctx, facts, whose)
    else:
        _read_pressure(ctx, facts, [])
        return facts
    if cpus and cpus.strip():
        try:
            facts.cpuset_cores = parse_cpu_list(cpus)
        except ValueError:
            facts.cpuset_cores = None
    return facts
