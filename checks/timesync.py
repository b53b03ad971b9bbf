"""Time checks: is the clock synchronised, and is the node on UTC.

(The module is not called `time` so it never shadows the standard library.)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
from dataclasses import dataclass, field
from typing import Any

from snapshot_agent.core.check import Requirements, check
from snapshot_agent.core.context import Context
from snapshot_agent.core.grading import Band
from snapshot_agent.core.results import Finding, Result, Severity
from snapshot_agent.node.processes import find_broker, read_processes
from snapshot_agent.node.system import UNDETERMINED, placement, read_system

#: Process names (comm, at most 15 characters) of time synchronisation daemons.
TIME_DAEMONS = {
    "chronyd": "chrony",
    "ntpd": "ntpd",  # classic ntp, ntpsec and OpenNTPD all call their daemon ntpd
    "systemd-timesyn": "systemd-timesyncd",
    "ptp4l": "ptp4l",
    "phc2sys": "phc2sys",
    "timemaster": "timemaster",
}

#: Why time matters on a broker node; appended to remediations.
WHY_TIME = (
    " A wrong clock breaks TLS certificate validity checks and JWT expiry (Iggy's HTTP "
    "tokens), puts wrong timestamps on messages and segments (so message expiry and "
    "time-based retention act too early or too late), and makes logs impossible to "
    "correlate across nodes."
)


@dataclass
class SyncReport:
    """What one time source says about the clock."""

    source: str  # chrony | ntpd | systemd-timesyncd | kernel (timedatectl)
    synchronized: bool | None
    offset_ms: float | None = None
    server: str = ""
    stratum: int | None = None
    detail: str = ""  # leap status or the reason it could not be read


@dataclass
class SyncFacts:
    """Running daemons and what the readable sources report."""

    daemons: list[str] = field(default_factory=list)
    reports: list[SyncReport] = field(default_factory=list)
    container: str = ""  # container technology when inside one (namespaces decide)
    maybe_container: bool = False  # the evidence conflicts: a container, or the host itself
    placement: str = "bare metal"  # 'VM (kvm)', 'container (docker)', 'bare metal'
    placement_evidence: list[str] = field(default_factory=list)
    kernel: KernelClock | None = None  # the kernel's own sync state (adjtimex)
    kernel_note: str = ""  # why the kernel's state was not read
    unreadable: list[str] = field(default_factory=list)  # daemon -> why its state is unknown


# -- parsers -----------------------------------------------------------------------


def _fields(text: str, sep: str) -> dict[str, str]:
    """'Key : value' or 'Key=value' lines into a dict (keys stripped)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, found, value = line.partition(sep)
        if found:
            out[key.strip()] = value.strip()
    return out


def parse_chronyc_tracking(text: str) -> SyncReport | None:
    """Parse `chronyc -n tracking`; None when it is not tracking output."""
    f = _fields(text, ":")
    if "Leap status" not in f and "Reference ID" not in f:
        return None
    leap = f.get("Leap status", "")
    offset = None
    # "System time     : 0.000012345 seconds fast of NTP time": fast = clock ahead.
    m = re.match(r"([\d.]+) seconds (fast|slow)", f.get("System time", ""))
    if m:
        offset = float(m.group(1)) * 1000 * (1 if m.group(2) == "fast" else -1)
    ref = f.get("Reference ID", "")
    m = re.match(r"([0-9A-Fa-f]+)\s*\((.*)\)", ref)
    ref_id, server = (m.group(1), m.group(2)) if m else (ref, "")
    stratum = int(f["Stratum"]) if f.get("Stratum", "").isdigit() else None
    synced = leap.lower() != "not synchronised" and ref_id.strip("0") != "" and stratum != 0
    return SyncReport("chrony", synced, offset, server, stratum, f"leap status {leap or '?'}")


def parse_ntpq_peers(text: str) -> SyncReport | None:
    """Parse `ntpq -pn`: synchronised when a peer is selected ('*' or 'o' tally)."""
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("====")) + 1
    except StopIteration:
        return None
    peers: list[tuple[str, list[str]]] = []
    pending = ""
    for line in lines[start:]:
        if not line.strip():
            continue
        if pending:  # a long remote (IPv6) pushes the numbers onto the next line
            line = pending + " " + line.strip()
            pending = ""
        tally, rest = line[0], line[1:].split()
        if len(rest) == 1:
            pending = line
            continue
        if len(rest) >= 10:
            peers.append((tally, rest))
    if not peers:
        return SyncReport("ntpd", False, detail="no peers configured")
    selected = next((r for t, r in peers if t in "*o"), None)
    if selected is None:
        reachable = sum(1 for _, r in peers if r[6] != "0")
        return SyncReport("ntpd", False, detail=f"no peer selected ({reachable} reachable)")
    try:
        offset = float(selected[8])
    except ValueError:
        offset = None
    stratum = int(selected[2]) if selected[2].isdigit() else None
    return SyncReport("ntpd", True, offset, selected[0], stratum, f"{len(peers)} peers")


def parse_timedatectl_show(text: str) -> dict[str, str]:
    """`timedatectl show` Key=value lines."""
    return _fields(text, "=")


_SPAN_UNITS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1000.0, "min": 60000.0}


def parse_timespan_ms(text: str) -> float | None:
    """systemd time span such as '+1.132ms', '-250us', '1min 2.5s' -> milliseconds."""
    text = text.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    parts = re.findall(r"([\d.]+)\s*(ns|us|µs|ms|min|s)\b", text.lstrip("+-"))
    if not parts:
        return None
    return sign * sum(float(n) * _SPAN_UNITS[u] for n, u in parts)


def parse_timesync_status(text: str) -> SyncReport | None:
    """Parse `timedatectl timesync-status` (systemd-timesyncd's view)."""
    f = _fields(text, ":")
    if "Server" not in f and "Offset" not in f:
        return None
    offset = parse_timespan_ms(f["Offset"]) if "Offset" in f else None
    stratum = int(f["Stratum"]) if f.get("Stratum", "").isdigit() else None
    leap = f.get("Leap", "")
    synced = None if offset is None else not re.search(r"unsync|not sync", leap, re.I)
    return SyncReport("systemd-timesyncd", synced, offset, f.get("Server", ""), stratum, leap)


# -- the kernel's clock state (adjtimex) -------------------------------------------

#: adjtimex(2) status bit: the clock is not synchronised (set at boot and by the kernel
#: itself once maxerror reaches 16 s; daemons that discipline the clock clear it).
STA_UNSYNC = 0x0040
#: NTP_PHASE_LIMIT: the kernel caps maxerror here and sets STA_UNSYNC on reaching it.
MAXERROR_LIMIT_US = 16_000_000
#: adjtimex's return value: the clock state.
TIME_STATES = {
    0: "TIME_OK", 1: "TIME_INS", 2: "TIME_DEL", 3: "TIME_OOP", 4: "TIME_WAIT", 5: "TIME_ERROR",
}  # fmt: skip


class _Timeval(ctypes.Structure):
    """struct timeval inside struct timex."""

    _fields_ = (("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long))


class _Timex(ctypes.Structure):
    """struct timex (linux/timex.h) as glibc and musl declare it, with room to spare."""

    _fields_ = (
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
        ("_spare", ctypes.c_char * 128),  # a larger struct on another ABI never overruns
    )


@dataclass(frozen=True)
class KernelClock:
    """The kernel's NTP state, as adjtimex(2) reports it at one moment."""

    status: int  # STA_* bits
    state: int  # adjtimex's return value (TIME_OK ... TIME_ERROR)
    maxerror_us: int  # the kernel's bound on the clock's error; grows 0.5 ms/s unattended
    esterror_us: int  # the daemon's estimate of the error
    syscall: str = "adjtimex"

    @property
    def sta_unsync(self) -> bool:
        """The STA_UNSYNC bit is set."""
        return bool(self.status & STA_UNSYNC)

    @property
    def synchronized(self) -> bool:
        """Synchronised as timedatectl judges it: the error bound is under 16 s.

        STA_UNSYNC alone does not decide: chrony without `rtcsync` keeps it set (so the
        kernel leaves the RTC alone) while it disciplines the clock and keeps maxerror small.
        """
        return self.maxerror_us < MAXERROR_LIMIT_US

    def describe(self) -> str:
        """'adjtimex: STA_UNSYNC set, max error 16 s, estimated error 16 s (TIME_ERROR)'."""
        flag = "STA_UNSYNC set" if self.sta_unsync else "STA_UNSYNC clear"
        state = TIME_STATES.get(self.state, str(self.state))
        return (
            f"{self.syscall} read once: {flag}, max error {_us(self.maxerror_us)}, "
            f"estimated error {_us(self.esterror_us)} ({state})"
        )


def _us(value: int) -> str:
    """Microseconds in words: '16 s', '12.3 ms', '40 us'."""
    if value >= 1_000_000:
        return f"{value / 1e6:g} s"
    if value >= 1000:
        return f"{value / 1000:.1f} ms"
    return f"{value} us"


def adjtimex(calls: tuple[str, ...] = ("adjtimex", "clock_adjtime")) -> KernelClock | str:
    """Ask this machine's kernel for its clock state (modes=0: reads, changes nothing).

    `calls` are the libc entry points to try, in order (clock_adjtime on CLOCK_REALTIME
    reads the same state). A string says why nothing could be read (no such call, or
    refused: a seccomp profile may forbid it). The state is the kernel's, so inside a
    container it is the host's: the one clock every container on the host shares.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError as exc:
        return f"cannot load libc: {exc}"
    why = f"libc has none of {', '.join(calls)}"
    for name in calls:
        func = getattr(libc, name, None)
        if func is None:
            continue
        tx = _Timex()  # zeroed: modes=0
        args = (
            (ctypes.c_int(0), ctypes.byref(tx)) if name == "clock_adjtime" else (ctypes.byref(tx),)
        )
        state = func(*args)
        if state < 0:
            errno = ctypes.get_errno()
            why = f"{name} failed: {os.strerror(errno)} (a seccomp profile may forbid it)"
            continue
        return KernelClock(int(tx.status), int(state), int(tx.maxerror), int(tx.esterror), name)
    return why


def read_kernel_clock(ctx: Context) -> KernelClock | str:
    """The kernel's clock state on a live node; a reason string on a fixture tree or error."""
    if not ctx.live:
        return "adjtimex not read: the checks look at a fixture tree, not this kernel"
    return adjtimex()


# -- reading -----------------------------------------------------------------------


def _run_parse(ctx: Context, argv: list[str], save_as: str, parser: Any) -> SyncReport | str:
    """Run a time tool and parse it; a string says why there is no report."""
    res = ctx.run(argv, timeout_s=3, save_as=save_as)
    if res.ok and (report := parser(res.stdout)) is not None:
        return report
    return res.explain()


def _read_daemons(ctx: Context, facts: SyncFacts) -> None:
    """Ask chrony and ntpd, when they run, for their view of the clock."""
    queries = [
        ("chrony", "chronyc", ["chronyc", "-n", "tracking"], "chronyc-tracking.txt"),
        ("ntpd", "ntpq", ["ntpq", "-pn"], "ntpq-peers.txt"),
    ]
    parsers = {"chrony": parse_chronyc_tracking, "ntpd": parse_ntpq_peers}
    for daemon, tool, argv, save_as in queries:
        if daemon not in facts.daemons:
            continue
        if shutil.which(tool) is None:
            facts.unreadable.append(f"{daemon} runs but `{tool}` is not installed")
            continue
        got = _run_parse(ctx, argv, save_as, parsers[daemon])
        if isinstance(got, SyncReport):
            facts.reports.append(got)
        else:
            facts.unreadable.append(f"{daemon}: {got}")


def _read_systemd(ctx: Context, facts: SyncFacts) -> None:
    """timedatectl's view (and timesyncd's) when systemd runs; timesyncd's flag file without."""
    systemd = ctx.path("/run/systemd/system").is_dir() and shutil.which("timedatectl")
    if systemd:
        res = ctx.run(["timedatectl", "show"], timeout_s=3, save_as="timedatectl-show.txt")
        show = parse_timedatectl_show(res.stdout) if res.ok else {}
        if "NTPSynchronized" in show and facts.kernel is None:
            # The kernel's own state (adjtimex maxerror), as timedated reads it: the
            # daemon-independent second opinion when adjtimex could not be called here.
            facts.reports.append(
                SyncReport(
                    "kernel",
                    show["NTPSynchronized"] == "yes",
                    detail=f"timedatectl NTPSynchronized={show['NTPSynchronized']}, "
                    f"NTP={show.get('NTP', '?')}",
                )
            )
        if "systemd-timesyncd" in facts.daemons:
            got = _run_parse(
                ctx,
                ["timedatectl", "timesync-status"],
                "timesync-status.txt",
                parse_timesync_status,
            )
            if isinstance(got, SyncReport):
                facts.reports.append(got)
            else:
                facts.unreadable.append(f"systemd-timesyncd: {got}")
    elif "systemd-timesyncd" in facts.daemons:
        flag = ctx.path("/run/systemd/timesync/synchronized").exists()
        # timesyncd touches this file once it has synchronised; absent proves little.
        facts.reports.append(
            SyncReport(
                "systemd-timesyncd",
                True if flag else None,
                detail="/run/systemd/timesync/synchronized " + ("exists" if flag else "absent"),
            )
        )


def read_sync(ctx: Context) -> SyncFacts:
    """Running time daemons and their views; the kernel's state; VM, container or host."""
    facts = SyncFacts()
    names = {p.name for p in read_processes(ctx).values() if p.state != "Z"}
    facts.daemons = sorted({label for comm, label in TIME_DAEMONS.items() if comm in names})
    system = read_system(ctx)
    facts.container = "" if system.container in ("none", UNDETERMINED) else system.container
    facts.maybe_container = system.container == UNDETERMINED
    facts.placement = placement(system.virtualization, system.container)
    facts.placement_evidence = system.evidence
    kernel = read_kernel_clock(ctx)
    if isinstance(kernel, KernelClock):
        facts.kernel = kernel
    else:
        facts.kernel_note = kernel
    _read_daemons(ctx, facts)
    if facts.kernel is not None:
        facts.reports.append(
            SyncReport("kernel", facts.kernel.synchronized, detail=facts.kernel.describe())
        )
    _read_systemd(ctx, facts)
    return facts


# -- judging -----------------------------------------------------------------------

_REMEDY = {
    "chrony": (
        "Run `chronyc sources -v`: no source marked `*` means none is usable. Check the "
        "`server`/`pool` lines in /etc/chrony/chrony.conf and that UDP 123 egress is open; "
        "step the clock once with `chronyc makestep`, then `systemctl restart chrony`."
    ),
    "ntpd": (
        "Run `ntpq -pn`: no peer marked `*` means none is selected, and a `reach` of 0 "
        "means the server is unreachable (UDP 123 egress). Fix the `server`/`pool` lines in "
        "/etc/ntpsec/ntp.conf (or /etc/ntp.conf), then `systemctl restart ntpsec` (or ntp)."
    ),
    "systemd-timesyncd": (
        "Run `timedatectl timesync-status` and `journalctl -u systemd-timesyncd -b`; set "
        "`NTP=` servers in /etc/systemd/timesyncd.conf, make sure UDP 123 egress is open, "
        "then `timedatectl set-ntp true` and `systemctl restart systemd-timesyncd`."
    ),
    "kernel": (
        "The kernel's bound on the clock's error has reached 16 s (adjtimex maxerror): the "
        "daemon that runs is not disciplining the clock. Read its log (`journalctl -u "
        "chrony -u ntpsec -u systemd-timesyncd -b`) and `timedatectl`; OpenNTPD (also "
        "called ntpd) never reports to the kernel, so with it ask `ntpctl -s status`."
    ),
}
_KVM_HOST_CLOCK = (
    " On a KVM guest chrony can also follow the host's clock: `modprobe ptp_kvm`, then "
    "`refclock PHC /dev/ptp0 poll 2` in chrony.conf."
)
_HOST_KEEPS_TIME = (
    "A container has no clock of its own: the host's kernel keeps it, and the host's time "
    "daemon disciplines it. On the host run `chronyc tracking` (or `timedatectl "
    "timesync-status`) and fix its time daemon. A host that keeps time with a daemon that "
    "does not report to the kernel (OpenNTPD, VMware Tools, Hyper-V time sync) leaves this "
    "state unsynchronised: there, confirm the offset with that daemon's own tool."
)
_INSTALL = (
    "Install and enable a time daemon: `apt install chrony` (or `dnf install chrony`) then "
    "`systemctl enable --now chrony`; on cloud VMs point it at the provider's time service "
    "(AWS 169.254.169.123, GCP metadata.google.internal)."
)
_HOST_OR_HERE = (
    "Whether the agent runs in a container could not be settled (the data's "
    "placement_evidence lists what conflicts). The clock is the kernel's: fix it on the "
    "machine that runs this kernel, which is this node if the agent runs on it directly and "
    "the container's host if it runs in a container (a hostPID pod shows the host's "
    "processes); a daemon inside a container cannot discipline the host's clock. "
)


#: How far (ms, either direction) the clock is from its time source.
OFFSET = Band("offset_ms", warn=100, fail=1000)


def _kernel_data(facts: SyncFacts) -> dict[str, Any]:
    """The kernel's clock state as read, or why it was not."""
    k = facts.kernel
    if k is None:
        return {"read": False, "note": facts.kernel_note}
    return {
        "read": True,
        "syscall": k.syscall,
        "synchronized": k.synchronized,
        "status": f"0x{k.status:04x}",
        "sta_unsync": k.sta_unsync,
        "maxerror_us": k.maxerror_us,
        "esterror_us": k.esterror_us,
        "state": TIME_STATES.get(k.state, str(k.state)),
    }


def _sync_data(facts: SyncFacts) -> dict[str, Any]:
    """Daemons, what each readable source said, and what could not be read."""
    return {
        "daemons": facts.daemons,
        "container": facts.container or (UNDETERMINED if facts.maybe_container else None),
        "placement": facts.placement,
        "placement_evidence": facts.placement_evidence,
        "kernel": _kernel_data(facts),
        "sources": [
            {
                "source": r.source,
                "synchronized": r.synchronized,
                "offset_ms": round(r.offset_ms, 3) if r.offset_ms is not None else None,
                "server": r.server,
                "stratum": r.stratum,
                "detail": r.detail,
            }
            for r in facts.reports
        ],
        "unreadable": facts.unreadable,
    }


def _competing_daemons(facts: SyncFacts) -> list[Finding]:
    """More than one NTP daemon runs, and they fight over the clock."""
    ntp_daemons = [d for d in facts.daemons if d in ("chrony", "ntpd", "systemd-timesyncd")]
    if len(ntp_daemons) <= 1:
        return []
    return [
        Finding(
            Severity.WARN,
            f"{len(ntp_daemons)} time daemons run at once ({', '.join(ntp_daemons)}) and "
            "fight over the clock",
            "Keep one: e.g. `systemctl disable --now systemd-timesyncd` when chrony runs.",
            ", ".join(ntp_daemons),
        )
    ]


def _without_reports(facts: SyncFacts, findings: list[Finding], data: dict[str, Any]) -> Result:
    """No source could be asked: skipped, unless a host simply runs no time daemon."""
    if facts.daemons:
        return Result.skipped(
            f"{', '.join(facts.daemons)} running, but its state could not be read: "
            + "; ".join(facts.unreadable or ["no tool to ask"])
        )
    if facts.container:
        return Result.skipped(
            "no time sync daemon found (chrony, ntpd, systemd-timesyncd); this is a "
            f"container ({facts.container}), whose clock is the host's, and the kernel's "
            f"state could not be read ({facts.kernel_note}): check the host"
        )
    nothing_runs = Finding(
        Severity.WARN,
        f"no time sync daemon runs on {_where(facts)} (chrony, ntpd, "
        "systemd-timesyncd): nothing keeps this clock from drifting",
        _install_advice(facts) + WHY_TIME,
        "time sync",
    )
    return Result.from_findings([*findings, nothing_runs], ok="", data=data)


def _judged_reports(facts: SyncFacts) -> list[SyncReport]:
    """The daemons' own views decide; the kernel flag only when no daemon could be asked."""
    daemon_reports = [r for r in facts.reports if r.source != "kernel"]
    return [r for r in daemon_reports if r.synchronized is not None] or [
        r for r in facts.reports if r.synchronized is not None
    ]


def _where(facts: SyncFacts) -> str:
    """'this VM (kvm)', 'this container (docker)', 'this bare-metal node', 'this node (...)'."""
    if facts.maybe_container:
        return f"this node ({facts.placement})"
    return "this bare-metal node" if facts.placement == "bare metal" else f"this {facts.placement}"


def _install_advice(facts: SyncFacts) -> str:
    """How to get a time daemon running here, or on the host when this may be a container."""
    where = _HOST_OR_HERE if facts.maybe_container else ""
    return where + _INSTALL + (_KVM_HOST_CLOCK if "kvm" in facts.placement else "")


def _nothing_keeps_time(facts: SyncFacts, r: SyncReport) -> Finding:
    """No daemon is visible and the kernel says the clock is unsynchronised."""
    if facts.container:
        return Finding(
            Severity.WARN,
            f"the kernel this container ({facts.container}) shares with its host reports "
            f"the clock unsynchronised ({r.detail}); no time daemon is visible here",
            _HOST_KEEPS_TIME + WHY_TIME,
            "host clock",
        )
    return Finding(
        Severity.WARN,
        f"no time sync daemon runs on {_where(facts)} and the kernel reports the "
        f"clock unsynchronised ({r.detail})",
        _install_advice(facts) + WHY_TIME,
        "time sync",
    )


def _unsynchronised(r: SyncReport, facts: SyncFacts) -> list[Finding]:
    """The source says the clock is not synchronised: fail, or warn when no daemon runs."""
    if r.synchronized:
        return []
    if r.source == "kernel" and not facts.daemons:
        return [_nothing_keeps_time(facts, r)]
    return [
        Finding(
            Severity.FAIL,
            f"the clock is not synchronised ({r.source}: {r.detail or 'unsynchronised'})",
            _REMEDY.get(r.source, _REMEDY["kernel"]) + WHY_TIME,
            r.source,
        )
    ]


def _offset_too_large(r: SyncReport, thresholds: dict[str, Any]) -> list[Finding]:
    """A synchronised clock is still too far ahead of or behind its source."""
    if not r.synchronized or r.offset_ms is None:
        return []
    off = abs(r.offset_ms)
    severity = OFFSET.grade(off, thresholds)
    if severity is None:
        return []
    limit = OFFSET.limit(severity, thresholds)
    return [
        Finding(
            severity,
            f"the clock is {off:.1f} ms {'ahead of' if r.offset_ms > 0 else 'behind'} "
            f"{r.server or 'its time source'} ({r.source}; at or over {limit:g} ms)",
            _REMEDY.get(r.source, _REMEDY["kernel"]) + WHY_TIME,
            r.source,
        )
    ]


def _synced_summary(facts: SyncFacts, judged: list[SyncReport]) -> str:
    """Which source synchronises the clock, to which server, with what offset."""
    best = next((r for r in judged if r.synchronized), judged[0])
    ok = f"synchronised by {best.source}"
    if best.source == "kernel":
        ok = f"the kernel reports the clock synchronised ({best.detail})"
        if not facts.daemons:
            ok = f"no time daemon visible on {_where(facts)}, but {ok}"
    if best.server:
        ok += f" to {best.server}"
    if best.offset_ms is not None:
        ok += f", offset {best.offset_ms:+.3f} ms"
    return ok


def judge_sync(facts: SyncFacts, thresholds: dict[str, Any]) -> Result:
    """Fail when a daemon is unsynchronised or far off; warn on a large offset or no daemon.

    The daemons' own views decide; the kernel's state (adjtimex, or timedatectl) decides
    when no daemon could say. With no daemon at all, an unsynchronised kernel warns on a
    VM, on bare metal and in a container (whose clock is the host's) alike.
    """
    data = _sync_data(facts)
    findings = _competing_daemons(facts)
    if not facts.reports:
        return _without_reports(facts, findings, data)
    judged = _judged_reports(facts)
    if not judged:
        return Result.skipped(
            f"{', '.join(facts.daemons) or 'no daemon'} found, but no source says whether "
            "the clock is synchronised"
        )
    for r in judged:
        findings += _unsynchronised(r, facts) + _offset_too_large(r, thresholds)
    return Result.from_findings(findings, ok=_synced_summary(facts, judged), data=data)


@check(
    id="time.sync",
    category="time",
    title="Clock synchronisation",
    description="Whether chrony, ntpd or timesyncd keeps the clock synchronised (and the kernel "
    "agrees, adjtimex); offset.",
    requires=Requirements(paths=("/proc",)),
    timeout_s=8,
    bands=(OFFSET,),
)
def time_sync(ctx: Context) -> Result:
    """Ask whichever time daemon runs, and the kernel (adjtimex) for its own state.

    Verdicts:
    - pass: chrony synchronised to its server, offset 0.012 ms [test_time_sync_chrony]
    - pass: no daemon visible in a container (the host's is out of sight), the kernel's
      error bound 12 ms [test_time_sync_no_daemon_but_kernel_synchronised_passes]
    - pass: STA_UNSYNC set by chrony without rtcsync while the kernel's max error is
      3 ms [test_time_sync_sta_unsync_with_small_maxerror_is_synchronised]
    - warn: a KVM guest with a /.dockerenv but PID 1 in the host's PID namespace, no
      daemon, adjtimex max error 16 s (also bare metal, and a real container whose
      host's clock is unsynchronised) [test_time_sync_no_daemon_and_unsynchronised_kernel_warns]
    - warn: a host with no daemon and no readable kernel state
      [test_time_sync_no_daemon_warns_on_a_host]
    - warn: a hostPID pod that may not read PID 1's namespaces (its own cgroup namespace,
      the host's PID namespace: container or host undetermined), no daemon, the kernel
      unsynchronised; the advice names the host, not the pod
      [test_time_sync_undetermined_container_gives_neutral_advice]
    - warn: ntpd's selected peer 250 ms away [test_time_sync_ntpd]
    - warn: chrony and ntpd both run and fight over the clock
      [test_time_sync_two_daemons_warn]
    - fail: chrony reports "Not synchronised" [test_time_sync_chrony]
    - fail: timesyncd runs but has never synchronised and the kernel agrees
      [test_time_sync_kernel_flag_decides_when_daemon_says_nothing]
    - fail: chrony runs but the kernel's error bound reached 16 s
      [test_time_sync_daemon_not_disciplining_the_kernel_fails]
    - skipped: a real container (its own PID namespace), no daemon, the kernel's state
      unreadable [test_time_sync_no_daemon_in_a_container_is_skipped]
    - skipped: chrony runs but chronyc cannot reach it
      [test_time_sync_daemon_that_cannot_be_asked_is_skipped]
    """
    return judge_sync(read_sync(ctx), ctx.thresholds)


# -- time.timezone -----------------------------------------------------------------

#: Zone names that are UTC under another name (offset 0, never a daylight saving shift).
UTC_NAMES = {
    "UTC", "UCT", "Universal", "Zulu", "GMT", "GMT0", "GMT+0", "GMT-0", "Greenwich",
}  # fmt: skip


@dataclass
class ZoneFacts:
    """Where the node and the broker say their time zone is."""

    etc_timezone: str | None = None  # /etc/timezone (Debian)
    localtime_link: str | None = None  # zone name from the /etc/localtime symlink
    localtime_footer: str | None = None  # POSIX TZ string at the end of a copied TZif file
    localtime_exists: bool = False
    broker_tz: str | None = None  # TZ in the broker's environment; None when unset
    broker_pid: int | None = None
    broker_env_note: str = ""
    unit: str = "iggy-server.service"


def zone_from_path(target: str) -> str:
    """'/usr/share/zoneinfo/Europe/Berlin' or '../usr/share/zoneinfo/Etc/UTC' -> zone name."""
    _, found, zone = target.partition("zoneinfo/")
    zone = zone if found else target
    for prefix in ("posix/", "right/"):
        zone = zone.removeprefix(prefix)
    return zone


def tzif_footer(data: bytes) -> str | None:
    """The POSIX TZ string a TZif v2+ file ends with ('UTC0', 'CET-1CEST,M3.5.0,M10.5.0/3')."""
    if not data.startswith(b"TZif") or not data.endswith(b"\n"):
        return None
    body = data[:-1]
    start = body.rfind(b"\n")
    if start < 0:
        return None
    footer = body[start + 1 :].decode("ascii", "replace")
    return footer if footer and len(footer) < 100 else None


def is_utc(zone: str) -> bool:
    """True for UTC under any name: 'Etc/UTC', 'UTC0', ':UTC', '<UTC>0', 'Etc/GMT+0'."""
    name = zone_from_path(zone.strip().lstrip(":"))
    name = name.removeprefix("Etc/")
    if name in UTC_NAMES:
        return True
    # POSIX TZ strings: a UTC/GMT abbreviation with a zero offset and no DST part.
    return re.fullmatch(r"<?(UTC|UCT|GMT|Z)>?([+-]?0+(:0+){0,2})?", name) is not None


def parse_environ_tz(raw: str) -> str | None:
    """TZ from a NUL-separated /proc/<pid>/environ, None when unset."""
    for item in raw.split("\0"):
        if item.startswith("TZ="):
            return item[3:]
    return None


def read_zone(ctx: Context) -> ZoneFacts:
    """Read /etc/timezone, /etc/localtime and the broker's TZ."""
    facts = ZoneFacts(unit=ctx.config.iggy.service)
    tz = ctx.read_optional("/etc/timezone", 256)
    if tz is not None and tz.strip():
        facts.etc_timezone = tz.strip().splitlines()[0].strip()
    local = ctx.path("/etc/localtime")
    facts.localtime_exists = local.is_symlink() or local.exists()
    if local.is_symlink():
        with contextlib.suppress(OSError):
            facts.localtime_link = zone_from_path(os.readlink(local))
    if facts.localtime_exists:
        with contextlib.suppress(OSError), local.open("rb") as fh:
            facts.localtime_footer = tzif_footer(fh.read(256 * 1024))
    broker = find_broker(ctx)
    if broker is not None:
        facts.broker_pid = broker.pid
        env = ctx.read_optional(f"/proc/{broker.pid}/environ", 256 * 1024)
        if env is None:
            facts.broker_env_note = f"cannot read /proc/{broker.pid}/environ (not root?)"
        else:
            facts.broker_tz = parse_environ_tz(env)
    return facts


def system_zone(facts: ZoneFacts) -> tuple[str, str]:
    """The zone glibc uses and where that came from."""
    if facts.localtime_link:
        return facts.localtime_link, "/etc/localtime"
    if facts.localtime_footer:
        return facts.localtime_footer, "/etc/localtime (copied file)"
    if facts.localtime_exists:
        return "unknown", "/etc/localtime (unreadable)"
    # Without /etc/localtime glibc falls back to UTC whatever /etc/timezone says.
    return "UTC", "default (no /etc/localtime)"


#: Why a broker node should be on UTC; appended to remediations.
WHY_UTC = (
    " Every node of a cluster on UTC keeps journald, syslog and tool timestamps "
    "comparable with each other and with Iggy's own (UTC) log lines, and no daylight "
    "saving jump doubles or skips an hour of logs."
)
SET_UTC = (
    "`timedatectl set-timezone Etc/UTC` (without systemd: "
    "`ln -sf /usr/share/zoneinfo/Etc/UTC /etc/localtime && echo Etc/UTC > /etc/timezone`)"
)


def _node_not_utc(zone: str, source: str, require_utc: bool) -> list[Finding]:
    """The node's own time zone is not UTC."""
    if not require_utc or zone == "unknown" or is_utc(zone):
        return []
    return [
        Finding(
            Severity.WARN,
            f"the node's time zone is {zone} (from {source}), not UTC",
            f"Set UTC with {SET_UTC}; restart services so they pick it up." + WHY_UTC,
            "/etc/localtime",
        )
    ]


def _zone_files_disagree(facts: ZoneFacts, zone: str, source: str) -> list[Finding]:
    """/etc/timezone names another zone than the /etc/localtime symlink."""
    if not (
        facts.etc_timezone
        and zone != "unknown"
        and source.startswith("/etc/localtime")
        and zone_from_path(facts.etc_timezone) != zone
        and not (is_utc(facts.etc_timezone) and is_utc(zone))
        and facts.localtime_link  # a copied file's footer is not a zone name to compare
    ):
        return []
    return [
        Finding(
            Severity.WARN,
            f"/etc/timezone says {facts.etc_timezone} but /etc/localtime is {zone}: "
            "programs disagree about local time",
            f"Make them agree: {SET_UTC}.",
            "/etc/timezone",
        )
    ]


def _broker_zone(facts: ZoneFacts, zone: str, require_utc: bool) -> list[Finding]:
    """The broker's TZ is not UTC (warn), or differs from the node's in UTC-ness (info)."""
    if facts.broker_tz is None:
        return []
    broker_zone = facts.broker_tz or "UTC"  # TZ= (empty) means UTC to glibc
    if require_utc and not is_utc(broker_zone):
        return [
            Finding(
                Severity.WARN,
                f"the broker (pid {facts.broker_pid}) runs with TZ={facts.broker_tz}, not UTC",
                "Remove `Environment=TZ=...` from the broker's unit (`systemctl cat "
                f"{facts.unit}`) or its container environment, or set `TZ=UTC`." + WHY_UTC,
                f"pid {facts.broker_pid}",
            )
        ]
    if not require_utc and is_utc(broker_zone) != is_utc(zone):
        return [
            Finding(
                Severity.INFO,
                f"the broker runs with TZ={facts.broker_tz} while the node is on {zone}",
                "",
                f"pid {facts.broker_pid}",
            )
        ]
    return []


def judge_zone(facts: ZoneFacts, thresholds: dict[str, Any]) -> Result:
    """Warn when the node or the broker is not on UTC, or when the zone files disagree."""
    require_utc = bool(thresholds["require_utc"])
    zone, source = system_zone(facts)
    findings = [
        *_node_not_utc(zone, source, require_utc),
        *_zone_files_disagree(facts, zone, source),
        *_broker_zone(facts, zone, require_utc),
    ]
    if facts.broker_env_note:
        findings.append(Finding(Severity.INFO, facts.broker_env_note, "", "broker environment"))
    ok = f"time zone {zone} (from {source})"
    if facts.broker_tz is not None:
        ok += f", broker TZ={facts.broker_tz}"
    data = {
        "zone": zone,
        "source": source,
        "is_utc": is_utc(zone) if zone != "unknown" else None,
        "etc_timezone": facts.etc_timezone,
        "localtime_link": facts.localtime_link,
        "localtime_footer": facts.localtime_footer,
        "broker_pid": facts.broker_pid,
        "broker_tz": facts.broker_tz,
    }
    return Result.from_findings(findings, ok=ok, data=data)


@check(
    id="time.timezone",
    category="time",
    title="Time zone",
    description="The node's time zone (/etc/localtime, /etc/timezone) and the broker's TZ; UTC?",
    timeout_s=5,
    thresholds={"require_utc": True},
)
def time_timezone(ctx: Context) -> Result:
    """Which time zone the node and the broker use.

    Verdicts:
    - pass: /etc/localtime links to Etc/UTC and /etc/timezone agrees
      [test_timezone_utc_symlink_passes]
    - pass: /etc/localtime is a copied file whose TZif footer is UTC0
      [test_timezone_copied_file_uses_the_tzif_footer]
    - pass: no /etc/localtime at all (glibc uses UTC) [test_timezone_no_localtime_means_utc]
    - warn: the node is on Europe/Berlin [test_timezone_not_utc_warns]
    - warn: /etc/timezone says America/New_York, /etc/localtime is UTC
      [test_timezone_files_disagree]
    - warn: the broker runs with TZ=Europe/Warsaw on a UTC node [test_timezone_broker_tz]
    """
    return judge_zone(read_zone(ctx), ctx.thresholds)
