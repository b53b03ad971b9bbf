"""network.tcp: socket states, retransmissions and accept-queue overflows.

Socket states come from /proc/net/tcp[6]. The kernel's TCP counters (/proc/net/snmp,
/proc/net/netstat) are sampled over a window of at least half a second, stretched (up to
`max_sample_s`) until enough segments were sent to judge a retransmit rate, so a quiet
node with real loss is judged too. The broker's own connections (those on its TCP ports)
are sampled with `ss -ti` at both ends of the same window. Totals since boot only inform.
A connection's totals since it opened only inform too, except for a broker connection too
quiet for the window to judge (fewer than `min_segments` sent in it): a high ratio over
its lifetime (`min_lifetime_segments` or more sent) then warns, saying it is a lifetime
ratio, and never fails.
"""

from __future__ import annotations

import re
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from snapshot_agent.core.check import check
from snapshot_agent.core.context import Context
from snapshot_agent.core.grading import Band
from snapshot_agent.core.remedies import sysctl_fix
from snapshot_agent.core.results import MAX_ROWS, Finding, Result, Severity
from snapshot_agent.node.ports import (
    DEFAULT_BROKER_PORTS,
    BrokerPorts,
    read_broker_ports,
    threshold_key,
)
from snapshot_agent.node.procfs import (
    TCP_LISTEN,
    TCP_STATES,
    Socket,
    counter_delta,
    iter_lines,
    parse_int,
    parse_snmp,
    parse_socket_line,
)
from snapshot_agent.node.sampling import stretch_window

#: Where this check's `broker_ports` threshold lives in the agent config.
PORTS_KEY = threshold_key("network.tcp")
#: The window over which the counters are judged (stretched up to max_sample_s).
TCP_SAMPLE_S = 0.5
#: Seconds of the check's time kept for `ss` and judging after the window.
RESERVE_S = 2.0
SS_TIMEOUT_S = 3.0


@dataclass
class TcpTally:
    """Socket state counts and the things worth naming from /proc/net/tcp[6]."""

    states: Counter[str] = field(default_factory=Counter)
    close_wait_ports: Counter[int] = field(default_factory=Counter)  # local port -> count
    listeners: list[Socket] = field(default_factory=list)


def tally_tcp(lines: Iterable[str], proto: str, tally: TcpTally) -> TcpTally:
    """Count states; keep listeners and CLOSE_WAIT by local port."""
    for line in lines:
        fields = line.split(None, 4)
        if len(fields) < 5 or not fields[0].endswith(":"):
            continue
        state = parse_int(fields[3], 16)
        if state is None:
            continue
        tally.states[TCP_STATES.get(state, f"0x{state:02X}")] += 1
        if state in (TCP_LISTEN, 0x08):
            sock = parse_socket_line(line, proto)
            if sock is None:
                continue
            if state == 0x08:
                tally.close_wait_ports[sock.local_port] += 1
            else:
                # rx_queue of a LISTEN socket is its accept queue; the backlog is not in
                # /proc/net/tcp (only inet_diag has it, which is what `ss` prints).
                tally.listeners.append(sock)
    return tally


@dataclass
class Counters:
    """The kernel TCP counters this check judges (cumulative since boot)."""

    out_segs: int | None = None
    retrans_segs: int | None = None
    listen_overflows: int | None = None
    listen_drops: int | None = None


def read_counters(ctx: Context) -> Counters:
    """Tcp OutSegs/RetransSegs from /proc/net/snmp, TcpExt Listen* from /proc/net/netstat."""
    snmp = parse_snmp(ctx.read_optional("/proc/net/snmp") or "").get("Tcp", {})
    ext = parse_snmp(ctx.read_optional("/proc/net/netstat") or "").get("TcpExt", {})
    return Counters(
        snmp.get("OutSegs"),
        snmp.get("RetransSegs"),
        ext.get("ListenOverflows"),
        ext.get("ListenDrops"),
    )


@dataclass(frozen=True)
class Retransmits:
    """Segments sent and retransmitted over one span: a sampling window, or a lifetime."""

    sent: int
    retransmitted: int

    @property
    def pct(self) -> float:
        """Retransmitted segments in % of segments sent (0 when nothing was sent)."""
        return 100.0 * self.retransmitted / self.sent if self.sent else 0.0

    def describe(self) -> str:
        """'12 of 200 segments'."""
        return f"{self.retransmitted} of {self.sent} segments"

    def __add__(self, other: Retransmits) -> Retransmits:
        return Retransmits(self.sent + other.sent, self.retransmitted + other.retransmitted)


# -- the broker's connections, as `ss -ti` shows them ------------------------------------

_SEGS_OUT = re.compile(r"(?<!\w)segs_out:(\d+)")
_RETRANS = re.compile(r"(?<!\w)retrans:(\d+)/(\d+)")
_LOST = re.compile(r"(?<!\w)lost:(\d+)")


@dataclass(frozen=True)
class TcpConnection:
    """One connection as `ss -ti` prints it: its addresses and counters since it opened."""

    local: str
    peer: str
    segs_out: int = 0  # segments sent since it opened (segs_out), retransmissions included
    retrans_total: int = 0  # Y of `retrans:X/Y`: segments retransmitted since it opened
    retrans_unacked: int = 0  # X of `retrans:X/Y`: retransmitted, not acknowledged yet
    lost: int = 0  # segments the kernel currently considers lost

    @property
    def lifetime(self) -> Retransmits:
        """Sent and retransmitted since the connection opened (informs, never judged)."""
        return Retransmits(self.segs_out, self.retrans_total)

    @property
    def local_port(self) -> int | None:
        """The port of the local end ('[::ffff:10.0.0.2]:8090' -> 8090)."""
        return parse_int(self.local.rpartition(":")[2])


def parse_ss_info(text: str) -> list[TcpConnection]:
    """`ss -H -tin` output: each socket line and its indented tcp_info line -> connections.

    The State column is absent when a state filter selects a single state; `ss` leaves
    `retrans:X/Y` out while a connection never retransmitted (0/0).
    """
    blocks: list[list[str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line[0].isspace():
            if blocks:
                blocks[-1].append(line)
        else:
            blocks.append([line])
    found = (_connection(block[0].split(), " ".join(block)) for block in blocks)
    return [conn for conn in found if conn is not None]


def _connection(fields: list[str], text: str) -> TcpConnection | None:
    """One socket block ('ESTAB 0 0 10.0.0.2:8090 10.0.0.7:51234' + tcp_info), or None."""
    if fields and not fields[0].isdigit():
        fields = fields[1:]  # the State column
    if len(fields) < 4 or not (fields[0].isdigit() and fields[1].isdigit()):
        return None
    local, peer = fields[2], fields[3]
    if ":" not in local or ":" not in peer:
        return None
    segs, retrans, lost = _SEGS_OUT.search(text), _RETRANS.search(text), _LOST.search(text)
    return TcpConnection(
        local,
        peer,
        segs_out=int(segs[1]) if segs else 0,
        retrans_total=int(retrans[2]) if retrans else 0,
        retrans_unacked=int(retrans[1]) if retrans else 0,
        lost=int(lost[1]) if lost else 0,
    )


@dataclass(frozen=True)
class ConnectionWindow:
    """One broker connection and what it sent and retransmitted over the window."""

    conn: TcpConnection
    window: Retransmits


def connection_windows(
    before: Sequence[TcpConnection], after: Sequence[TcpConnection]
) -> list[ConnectionWindow]:
    """Each connection of the later sample with its counts over the window.

    A connection missing from the earlier sample opened during the window, so all it sent
    counts; one whose counters went down is a new connection on the same addresses.
    """
    earlier = {(c.local, c.peer): c for c in before}
    out = []
    for conn in after:
        start = earlier.get((conn.local, conn.peer))
        if (
            start is None
            or conn.segs_out < start.segs_out
            or conn.retrans_total < start.retrans_total
        ):
            start = TcpConnection(conn.local, conn.peer)
        window = Retransmits(
            conn.segs_out - start.segs_out, conn.retrans_total - start.retrans_total
        )
        out.append(ConnectionWindow(conn, window))
    return out


@dataclass
class BrokerConnections:
    """The connections on the broker's TCP ports at both ends of the window (`ss -ti`)."""

    ports: BrokerPorts
    before: list[TcpConnection] = field(default_factory=list)
    after: list[TcpConnection] = field(default_factory=list)
    started: float = 0.0  # time.monotonic() of the first `ss` sample
    window_s: float = 0.0  # between the two `ss` samples
    problem: str = ""  # why `ss` gave nothing usable; '' when it did
    listening: bool = True  # something listens on a broker port (else `ss` is not asked)
    _windows: list[ConnectionWindow] = field(init=False, repr=False, compare=False)
    _total: Retransmits = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.settle()

    def settle(self) -> None:
        """Work out the counts over the window, once `after` is in (windows() and total())."""
        self._windows = connection_windows(self.before, self.after)
        self._total = sum((w.window for w in self._windows), Retransmits(0, 0))

    def tcp_ports(self) -> list[int]:
        """The broker's TCP port numbers (QUIC is UDP: `ss -t` has nothing to say about it)."""
        return list(dict.fromkeys(port for proto, port in self.ports.ports if proto == "tcp"))

    def describe_ports(self) -> str:
        """'tcp/8090, tcp/3000'."""
        return ", ".join(f"tcp/{port}" for port in self.tcp_ports()) or "no TCP ports"

    def windows(self) -> list[ConnectionWindow]:
        """Each connection of the later sample with its counts over the window."""
        return self._windows

    def total(self) -> Retransmits:
        """All the broker's connections together, over the window."""
        return self._total


def ss_filter(ports: Sequence[int]) -> str:
    """'( sport = :8090 or sport = :3000 )': connections whose local end is a broker port."""
    return "( " + " or ".join(f"sport = :{port}" for port in ports) + " )"


def read_broker_connections(
    ctx: Context, ports: Sequence[int], save_as: str
) -> tuple[list[TcpConnection], str]:
    """Connections on `ports` with their tcp_info (`ss -H -tin`): (connections, problem)."""
    if not ports:
        return [], ""
    res = ctx.run(["ss", "-H", "-tin", ss_filter(ports)], timeout_s=SS_TIMEOUT_S, save_as=save_as)
    if not res.ok:
        return [], res.explain(200)
    wanted = set(ports)
    return [c for c in parse_ss_info(res.stdout) if c.local_port in wanted], ""


def ss_usable(ctx: Context) -> bool:
    """`ss` describes this machine's sockets, so it is asked only when the checks look here."""
    return ctx.live and shutil.which("ss") is not None


# -- sampling ------------------------------------------------------------------------------


@dataclass
class TcpFacts:
    """Socket states plus counters at the start and end of a short sample."""

    tally: TcpTally
    before: Counters
    after: Counters
    sample_s: float  # the window the counters' rates cover
    port_range: int | None = None  # size of net.ipv4.ip_local_port_range
    tables_read: int = 0
    queues: list[ListenQueue] | None = None  # from `ss -ltn`; None when not available
    broker: BrokerConnections | None = None  # None when `ss` was not asked (fixture tree)

    def window(self) -> Retransmits | None:
        """Node-wide RetransSegs per OutSegs over the window; None when not measurable."""
        sent = counter_delta(self.before.out_segs, self.after.out_segs)
        retransmitted = counter_delta(self.before.retrans_segs, self.after.retrans_segs)
        return None if sent is None or retransmitted is None else Retransmits(sent, retransmitted)

    def since_boot(self) -> Retransmits | None:
        """Node-wide totals since boot (information only)."""
        out, ret = self.after.out_segs, self.after.retrans_segs
        return None if out is None or ret is None else Retransmits(out, ret)


@dataclass(frozen=True)
class ListenQueue:
    """A listener's accept queue against its backlog, as `ss -ltn` prints them."""

    local: str
    queued: int  # Recv-Q: connections waiting for accept()
    backlog: int  # Send-Q: min(listen() backlog, net.core.somaxconn)


def parse_ss_listen(text: str) -> list[ListenQueue]:
    """`ss -H -ltn` lines: 'LISTEN 0 4096 127.0.0.1:8090 0.0.0.0:*'."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[0] != "LISTEN":
            continue
        queued, backlog = parse_int(fields[1]), parse_int(fields[2])
        if queued is not None and backlog is not None:
            out.append(ListenQueue(fields[3], queued, backlog))
    return out


def sample_counters(
    ctx: Context, before: Counters, start: float, thresholds: dict[str, Any]
) -> tuple[Counters, float]:
    """Counters at the end of the window, and its length.

    The window lasts `sample_s` seconds, and goes on (up to `max_sample_s`) while fewer
    than `min_segments` were sent and some were resent: a quiet node with loss needs longer
    to say anything about its rate. With nothing resent there is no loss to measure, so an
    idle node's snapshot never waits for the long window.
    """
    min_segments = int(thresholds["min_segments"])
    after = before

    def still_undecided() -> bool:
        """Counters again; some were resent, but too few sent to judge the rate yet."""
        nonlocal after
        after = read_counters(ctx)
        sent = counter_delta(before.out_segs, after.out_segs)
        resent = counter_delta(before.retrans_segs, after.retrans_segs)
        return not (sent is None or sent >= min_segments or not resent)

    elapsed = stretch_window(
        ctx,
        thresholds,
        start,
        RESERVE_S,
        still_undecided,
        clock=time.monotonic,
        sleep=time.sleep,
    )
    return after, elapsed


def read_tcp(ctx: Context, thresholds: dict[str, Any]) -> TcpFacts:
    """Count sockets and sample the counters (and the broker's connections) over a window."""
    tally = TcpTally()
    read = 0
    for proto in ("tcp", "tcp6"):
        if ctx.path(f"/proc/net/{proto}").exists():
            tally_tcp(iter_lines(ctx, f"/proc/net/{proto}"), proto, tally)
            read += 1
    listening = {sock.local_port for sock in tally.listeners}
    broker = _start_broker_sample(ctx, listening) if ss_usable(ctx) else None
    start = time.monotonic()
    before = read_counters(ctx)
    queues: list[ListenQueue] | None = None
    if ss_usable(ctx):  # a moment's queues: read inside the window, not after it
        res = ctx.run(["ss", "-H", "-ltn"], timeout_s=3, save_as="ss-ltn.txt")
        if res.ok:
            queues = parse_ss_listen(res.stdout)
    after, span = sample_counters(ctx, before, start, thresholds)
    if broker is not None:
        _finish_broker_sample(ctx, broker)
    facts = TcpFacts(tally, before, after, span, _port_range(ctx), read, broker=broker)
    facts.queues = queues
    return facts


def _port_range(ctx: Context) -> int | None:
    """How many local ports net.ipv4.ip_local_port_range gives; None when unreadable."""
    rng = (ctx.read_optional("/proc/sys/net/ipv4/ip_local_port_range") or "").split()
    if len(rng) == 2 and all(x.isdigit() for x in rng):
        return int(rng[1]) - int(rng[0]) + 1
    return None


def _start_broker_sample(ctx: Context, listening: set[int]) -> BrokerConnections:
    """The broker's ports and its connections' counters at the start of the window.

    With nothing listening on any of the broker's TCP ports there are no broker
    connections to sample, and `ss` is not run at all.
    """
    sample = BrokerConnections(read_broker_ports(ctx, PORTS_KEY), started=time.monotonic())
    sample.listening = bool(set(sample.tcp_ports()) & listening)
    if sample.listening:
        sample.before, sample.problem = read_broker_connections(
            ctx, sample.tcp_ports(), "ss-ti-before.txt"
        )
    return sample


def _finish_broker_sample(ctx: Context, sample: BrokerConnections) -> None:
    """The broker's connections' counters at the end of the window."""
    if sample.problem or not sample.tcp_ports() or not sample.listening:
        return
    sample.window_s = time.monotonic() - sample.started
    sample.after, sample.problem = read_broker_connections(
        ctx, sample.tcp_ports(), "ss-ti-after.txt"
    )
    sample.settle()


#: Sockets in CLOSE_WAIT: the peer closed, the application did not.
CLOSE_WAIT = Band("close_wait", warn=100)
#: Half-open connections (SYN_RECV and NEW_SYN_RECV).
SYN_RECV = Band("syn_recv", warn=500)
#: Retransmitted segments in % of segments sent, over the window (node-wide, and on the
#: broker's connections); judged once `min_segments` were sent and `min_retrans` resent.
RETRANS_PCT = Band("retrans_pct", warn=1.0, fail=5.0)
#: Retransmitted segments in % of segments sent since a broker connection opened: judged
#: only for a connection the window could not judge, and only ever a warning.
LIFETIME_RETRANS_PCT = Band("lifetime_retrans_pct", warn=5.0)


def retransmit_grade(r: Retransmits | None, thresholds: dict[str, Any]) -> Severity | None:
    """The band's verdict once enough was sent and resent to mean something; else None.

    A handful of segments cannot make a verdict: one tail-loss probe among 20 segments
    would be 5 %.
    """
    if (
        r is None
        or r.sent < int(thresholds["min_segments"])
        or r.retransmitted < int(thresholds["min_retrans"])
    ):
        return None
    return RETRANS_PCT.grade(r.pct, thresholds)


def judge_tcp(facts: TcpFacts, thresholds: dict[str, Any]) -> Result:
    """CLOSE_WAIT pile-ups, SYN_RECV floods, retransmissions and accept-queue overflows."""
    if not facts.tables_read and facts.after.out_segs is None:
        return Result.skipped("no /proc/net/tcp, tcp6 or snmp to read")
    findings = [
        *_close_wait_pileup(facts, thresholds),
        *_syn_recv_flood(facts, thresholds),
        *_judge_retransmits(facts, thresholds),
        *_judge_broker_connections(facts, thresholds),
        *_judge_listen_queues(facts),
        *_time_wait_ports(facts, thresholds),
    ]
    states = facts.tally.states
    ok = (
        f"{sum(states.values())} TCP sockets ({states.get('ESTABLISHED', 0)} established, "
        f"{states.get('TIME_WAIT', 0)} time-wait, {states.get('CLOSE_WAIT', 0)} close-wait); "
        + _retransmit_summary(facts, thresholds)
    )
    return Result.from_findings(findings, ok=ok, data=_tcp_data(facts, thresholds))


def _close_wait_pileup(facts: TcpFacts, thresholds: dict[str, Any]) -> list[Finding]:
    """Many sockets in CLOSE_WAIT: an application leaks sockets and file descriptors."""
    close_wait = facts.tally.states.get("CLOSE_WAIT", 0)
    severity = CLOSE_WAIT.grade(close_wait, thresholds)
    if severity is None:
        return []
    top = ", ".join(f"port {p}: {n}" for p, n in facts.tally.close_wait_ports.most_common(5))
    return [
        Finding(
            severity,
            f"{close_wait} TCP sockets in CLOSE_WAIT "
            f"(>= {CLOSE_WAIT.limit(severity, thresholds):g}) ({top}): the peer closed, "
            "the application never did",
            "An application is leaking sockets (and file descriptors). Find it with "
            "`ss -tnp state close-wait`; if it is the broker, report it with its log and "
            "restart it before it reaches its open-file limit.",
            "/proc/net/tcp",
        )
    ]


def _syn_recv_flood(facts: TcpFacts, thresholds: dict[str, Any]) -> list[Finding]:
    """Many half-open connections: a SYN flood or clients that cannot finish the handshake."""
    states = facts.tally.states
    syn_recv = states.get("SYN_RECV", 0) + states.get("NEW_SYN_RECV", 0)
    severity = SYN_RECV.grade(syn_recv, thresholds)
    if severity is None:
        return []
    return [
        Finding(
            severity,
            f"{syn_recv} half-open connections in SYN_RECV (>= "
            f"{SYN_RECV.limit(severity, thresholds):g}): a SYN flood or clients that cannot "
            "complete the handshake",
            "See where they come from with `ss -tn state syn-recv`; keep "
            "net.ipv4.tcp_syncookies=1 and raise net.ipv4.tcp_max_syn_backlog if the "
            "load is legitimate.",
            "/proc/net/tcp",
        )
    ]


def _time_wait_ports(facts: TcpFacts, thresholds: dict[str, Any]) -> list[Finding]:
    """TIME_WAIT sockets holding a large share of the local ports (informational)."""
    time_wait = facts.tally.states.get("TIME_WAIT", 0)
    if (
        not facts.port_range
        or time_wait < facts.port_range * float(thresholds["time_wait_pct"]) / 100
    ):
        return []
    return [
        Finding(
            Severity.INFO,
            f"{time_wait} sockets in TIME_WAIT, {100 * time_wait / facts.port_range:.0f}% "
            f"of the {facts.port_range} local ports: outgoing connections to one "
            "destination may run out of ports",
            "Reuse connections (client pools) rather than reconnecting; a wider "
            "net.ipv4.ip_local_port_range and reusing TIME_WAIT ports for outgoing "
            "connections help: " + sysctl_fix("net.ipv4.tcp_tw_reuse", 1),
            "/proc/net/tcp",
        )
    ]


RETRANS_REMEDY = (
    "Retransmissions mean packet loss or congestion between this node and its peers; for "
    "the broker each loss stalls a produce or poll by at least one retransmit timeout "
    "(200 ms or more on a quiet connection). Look at `nstat -az TcpRetransSegs "
    "TcpExtTCPLostRetransmit TcpExtTCPTimeouts`, `ss -ti` (per-connection retrans), "
    "interface errors/drops (network.interfaces), and the switch/VPC side."
)

BROKER_RETRANS_REMEDY = (
    "The broker's own connections are losing segments: every loss on a quiet connection "
    "waits for a retransmit timeout (200 ms or more), so produce and poll latency jump and "
    "clients may time out and reconnect. If only some peers lose, look at their path "
    "(client network, NAT, VPN, MTU); if all do, look at this node: interface errors and "
    "drops (network.interfaces), the NIC and the switch/VPC side. `ss -ti '( sport = :8090 "
    ")'` shows retrans:unacked/total per connection."
)


def _judge_retransmits(facts: TcpFacts, thresholds: dict[str, Any]) -> list[Finding]:
    """The node's retransmit rate over the window; the rate since boot only informs."""
    window = facts.window()
    severity = retransmit_grade(window, thresholds)
    if severity and window:
        limit = RETRANS_PCT.limit(severity, thresholds)
        return [
            Finding(
                severity,
                f"{window.pct:.2f}% of TCP segments retransmitted over {facts.sample_s:.1f} s "
                f"({window.describe()}), >= {limit:g}%",
                RETRANS_REMEDY,
                "/proc/net/snmp",
            )
        ]
    boot = facts.since_boot()
    if retransmit_grade(boot, thresholds) and boot:
        return [
            Finding(
                Severity.INFO,
                f"{boot.pct:.2f}% of TCP segments retransmitted since boot ({boot.describe()}); "
                f"information only: what is judged is the rate over the {facts.sample_s:.1f} s "
                "window",
                RETRANS_REMEDY,
                "/proc/net/snmp",
            )
        ]
    return []


def _judge_broker_connections(facts: TcpFacts, thresholds: dict[str, Any]) -> list[Finding]:
    """Retransmits on the broker's connections over the window, together and one by one."""
    broker = facts.broker
    if broker is None:
        return []
    findings = list(broker.ports.findings)
    if broker.problem:
        findings.append(_broker_not_sampled(broker))
        return findings
    windows = broker.windows()
    grades = [retransmit_grade(broker.total(), thresholds)]
    grades += [retransmit_grade(w.window, thresholds) for w in windows]
    severity = _worst(grades)
    if severity:
        findings.append(_broker_loss(broker, windows, severity, thresholds))
    lossy_lifetimes = [w for w in windows if lifetime_loss_counts(w, thresholds)]
    if lossy_lifetimes:
        findings.append(_broker_lifetime_loss(broker, lossy_lifetimes, thresholds))
    elif not severity:
        findings += _broker_past_loss(broker, thresholds)
    return findings


def lifetime_loss_counts(w: ConnectionWindow, thresholds: dict[str, Any]) -> bool:
    """A connection the window could not judge, with a high retransmit ratio since it opened.

    Only a connection that sent fewer than `min_segments` over the window (a quiet broker
    below ~33 segments/s never gets there in 3 s) falls back on its lifetime, and only
    when that covers `min_lifetime_segments` and `min_retrans`; when the window saw no
    retransmit where the lifetime ratio predicts `min_retrans` or more, the loss is over.
    """
    window, lifetime = w.window, w.conn.lifetime
    if window.sent >= int(thresholds["min_segments"]):
        return False  # the window judges it
    if lifetime.sent < int(thresholds["min_lifetime_segments"]):
        return False
    if lifetime.retransmitted < int(thresholds["min_retrans"]):
        return False
    if LIFETIME_RETRANS_PCT.grade(lifetime.pct, thresholds) is None:
        return False
    return not _window_shows_loss_is_over(window, lifetime, thresholds)


def _window_shows_loss_is_over(
    window: Retransmits, lifetime: Retransmits, thresholds: dict[str, Any]
) -> bool:
    """No retransmit over the window, though the lifetime ratio predicts `min_retrans`."""
    expected = window.sent * lifetime.pct / 100
    return window.retransmitted == 0 and expected >= int(thresholds["min_retrans"])


def _worst(grades: Iterable[Severity | None]) -> Severity | None:
    """FAIL over WARN over nothing."""
    found = set(grades)
    return next((s for s in (Severity.FAIL, Severity.WARN) if s in found), None)


def _broker_loss(
    broker: BrokerConnections,
    windows: list[ConnectionWindow],
    severity: Severity,
    thresholds: dict[str, Any],
) -> Finding:
    """The broker's connections retransmitting over the window, worst peers named."""
    total = broker.total()
    lossy = sorted(
        (w for w in windows if w.window.retransmitted),
        key=lambda w: (w.window.pct, w.window.retransmitted),
        reverse=True,
    )
    worst = ", ".join(
        f"{w.conn.local} <- {w.conn.peer} {w.window.pct:.1f}% ({w.window.describe()})"
        for w in lossy[:3]
    )
    return Finding(
        severity,
        f"the broker's TCP connections retransmit over {broker.window_s:.1f} s: {worst} "
        f"(all {len(windows)} connections on {broker.describe_ports()}: {total.pct:.2f}%, "
        f"{total.describe()}), >= {RETRANS_PCT.limit(severity, thresholds):g}%",
        BROKER_RETRANS_REMEDY,
        "ss -ti",
    )


def _broker_lifetime_loss(
    broker: BrokerConnections, lossy: list[ConnectionWindow], thresholds: dict[str, Any]
) -> Finding:
    """Quiet broker connections with a high retransmit ratio since they opened (a warning)."""
    lossy = sorted(lossy, key=lambda w: w.conn.lifetime.pct, reverse=True)
    worst = ", ".join(
        f"{w.conn.local} <- {w.conn.peer} {w.conn.lifetime.pct:.1f}% since it opened "
        f"({w.conn.lifetime.describe()}; {w.window.describe()} over the window)"
        for w in lossy[:3]
    )
    more = f" and {len(lossy) - 3} more" if len(lossy) > 3 else ""
    limit = LIFETIME_RETRANS_PCT.limit(Severity.WARN, thresholds)
    return Finding(
        Severity.WARN,
        f"{len(lossy)} of the broker's connections sent too little over the "
        f"{broker.window_s:.1f} s window to judge their rate (fewer than "
        f"{thresholds['min_segments']} segments) and retransmitted >= {limit:g}% of their "
        f"segments over their lifetime: {worst}{more}. These are lifetime ratios, since each "
        f"connection opened (open at least {broker.window_s:.1f} s; `ss` does not say since "
        "when), not a rate over the window",
        BROKER_RETRANS_REMEDY
        + " On a connection this quiet, watch `ss -ti` retrans:X/Y over a minute or two to "
        "see whether the loss goes on.",
        "ss -ti",
    )


def _broker_past_loss(broker: BrokerConnections, thresholds: dict[str, Any]) -> list[Finding]:
    """Broker connections that retransmitted a lot since they opened (information only)."""
    lossy = [c for c in broker.after if retransmit_grade(c.lifetime, thresholds)]
    if not lossy:
        return []
    worst = max(lossy, key=lambda c: c.lifetime.pct)
    return [
        Finding(
            Severity.INFO,
            f"{len(lossy)} of the broker's connections retransmitted since they opened (worst "
            f"{worst.peer}: {worst.lifetime.pct:.2f}%, {worst.lifetime.describe()}); "
            f"information only: what is judged is the {broker.window_s:.1f} s window",
            BROKER_RETRANS_REMEDY,
            "ss -ti",
        )
    ]


def _broker_not_sampled(broker: BrokerConnections) -> Finding:
    """`ss` failed: the broker's connections were not looked at, and that is said."""
    return Finding(
        Severity.INFO,
        f"the broker's connections on {broker.describe_ports()} were not sampled: {broker.problem}",
        "Run `ss -tin` by hand; without it only the node-wide retransmit rate is judged.",
        "ss -ti",
    )


def _retransmit_summary(facts: TcpFacts, thresholds: dict[str, Any]) -> str:
    """What was measured over what window, for the summary of a node that passes."""
    parts = ["retransmits " + _rate_text(facts.window(), facts.sample_s, thresholds)]
    broker = facts.broker
    if broker is not None and not broker.problem and broker.tcp_ports():
        if broker.after:
            rate = _rate_text(broker.total(), broker.window_s, thresholds)
            parts.append(
                f"broker connections on {broker.describe_ports()} {rate}, "
                f"{len(broker.after)} connections"
            )
        else:
            parts.append(f"no broker connections on {broker.describe_ports()}")
    boot = facts.since_boot()
    if boot is not None and boot.sent:
        parts.append(f"since boot {boot.pct:.2f}% (information only)")
    return "; ".join(parts)


def _rate_text(r: Retransmits | None, seconds: float, thresholds: dict[str, Any]) -> str:
    """'0.10% over 0.5 s (3 of 3000 segments)', or why the rate was not judged."""
    if r is None:
        return "not measured (no readable /proc/net/snmp counters)"
    min_segments = int(thresholds["min_segments"])
    if r.sent < min_segments:
        return (
            f"not judged: {r.sent} segments sent over {seconds:.1f} s (fewer than {min_segments})"
        )
    text = f"{r.pct:.2f}% over {seconds:.1f} s ({r.describe()})"
    if RETRANS_PCT.grade(r.pct, thresholds) and r.retransmitted < int(thresholds["min_retrans"]):
        text += f", too few retransmits to judge (fewer than {thresholds['min_retrans']})"
    return text


def _tcp_data(facts: TcpFacts, thresholds: dict[str, Any]) -> dict[str, Any]:
    """Socket states, CLOSE_WAIT by port, listeners, retransmits and the counters."""
    return {
        "states": dict(sorted(facts.tally.states.items())),
        "close_wait_by_port": [
            {"port": p, "count": n} for p, n in facts.tally.close_wait_ports.most_common(10)
        ],
        "listeners": [
            {"address": q.local, "accept_queue": q.queued, "backlog": q.backlog}
            for q in facts.queues[:MAX_ROWS]
        ]
        if facts.queues is not None
        else [
            {"address": s.local, "accept_queue": s.rx_queue, "backlog": None}
            for s in facts.tally.listeners[:MAX_ROWS]
        ],
        "retransmits": _retransmit_data(facts.window(), facts.sample_s, thresholds),
        "broker_connections": _broker_data(facts.broker, thresholds),
        "counters": {
            "out_segs": facts.after.out_segs,
            "retrans_segs": facts.after.retrans_segs,
            "listen_overflows": facts.after.listen_overflows,
            "listen_drops": facts.after.listen_drops,
        },
        "sample_s": round(facts.sample_s, 2),
    }


def _retransmit_data(
    r: Retransmits | None, seconds: float, thresholds: dict[str, Any]
) -> dict[str, Any]:
    """One rate as data: over what window, how much, and whether it was enough to judge."""
    if r is None:
        return {"window_s": round(seconds, 2), "sent": None, "retransmitted": None}
    return {
        "window_s": round(seconds, 2),
        "sent": r.sent,
        "retransmitted": r.retransmitted,
        "pct": round(r.pct, 3),
        "judged": r.sent >= int(thresholds["min_segments"])
        and r.retransmitted >= int(thresholds["min_retrans"]),
    }


def _broker_data(
    broker: BrokerConnections | None, thresholds: dict[str, Any]
) -> dict[str, Any] | None:
    """The broker's connections over the window, worst first; lifetime totals inform."""
    if broker is None:
        return None
    windows = sorted(
        broker.windows(),
        key=lambda w: (w.window.retransmitted, w.conn.retrans_total),
        reverse=True,
    )
    return {
        "ports": broker.tcp_ports(),
        "ports_from": broker.ports.origin,
        "problem": broker.problem or None,
        **_retransmit_data(broker.total(), broker.window_s, thresholds),
        "connections": [
            {
                "local": w.conn.local,
                "peer": w.conn.peer,
                "sent_in_window": w.window.sent,
                "retransmitted_in_window": w.window.retransmitted,
                "sent_since_open": w.conn.segs_out,
                "retransmitted_since_open": w.conn.retrans_total,
                "retransmits_unacked": w.conn.retrans_unacked,
                "lost": w.conn.lost,
            }
            for w in windows[:MAX_ROWS]
        ],
        "connections_left_out": max(0, len(windows) - MAX_ROWS),
    }


def _judge_listen_queues(facts: TcpFacts) -> list[Finding]:
    """Accept queues overflowing now (sample) or full right now; past overflows inform."""
    findings = []
    remedy = (
        "A listener's accept queue was full, so new connections were dropped: the "
        "application does not accept() fast enough, or its backlog (min(listen() backlog, "
        "net.core.somaxconn)) is too small. `ss -ltn` shows Recv-Q (queued) against Send-Q "
        "(backlog). Check the broker's CPU (cpu.load), and raise the limits: "
        + sysctl_fix("net.core.somaxconn", 4096)
        + " "
        + sysctl_fix("net.ipv4.tcp_max_syn_backlog", 8192)
    )
    overflow = counter_delta(facts.before.listen_overflows, facts.after.listen_overflows)
    drops = counter_delta(facts.before.listen_drops, facts.after.listen_drops)
    if overflow or drops:
        findings.append(
            Finding(
                Severity.WARN,
                f"listen queues are overflowing now: ListenOverflows +{overflow or 0}, "
                f"ListenDrops +{drops or 0} in {facts.sample_s:.1f} s",
                remedy,
                "/proc/net/netstat",
            )
        )
    elif facts.after.listen_overflows:
        findings.append(
            Finding(
                Severity.INFO,
                f"{facts.after.listen_overflows} listen queue overflows since boot (none "
                f"over the {facts.sample_s:.1f} s window; information only)",
                remedy,
                "/proc/net/netstat",
            )
        )
    for q in facts.queues or []:
        if q.backlog and q.queued >= q.backlog:
            findings.append(
                Finding(
                    Severity.WARN,
                    f"the accept queue of {q.local} is full ({q.queued} waiting, backlog "
                    f"{q.backlog}): new connections to it are dropped",
                    remedy,
                    q.local,
                )
            )
    return findings


@check(
    id="network.tcp",
    category="network",
    title="TCP health",
    description=(
        "Socket states, the retransmit rate over a 0.5-3 s window (node-wide and on the "
        "broker's connections; a broker connection too quiet for the window is weighed by "
        "its lifetime ratio, a warning at most) and accept-queue overflows."
    ),
    timeout_s=8,
    bands=(CLOSE_WAIT, SYN_RECV, RETRANS_PCT, LIFETIME_RETRANS_PCT),
    thresholds={
        "min_segments": 100,
        "min_retrans": 5,
        "min_lifetime_segments": 500,
        "time_wait_pct": 50.0,
        "sample_s": TCP_SAMPLE_S,
        "max_sample_s": 3.0,
        "broker_ports": DEFAULT_BROKER_PORTS,
    },
    sampling_s=TCP_SAMPLE_S,
)
def network_tcp(ctx: Context) -> Result:
    """Socket state counts and TCP counters sampled over a window long enough to judge.

    Verdicts:
    - pass: a busy node retransmitting 0.1% of its segments over the window
      [test_tcp_sampled_retransmits]
    - pass: old loss and listen overflows in the since-boot counters, none in the window
      [test_tcp_pass_with_history_as_info]
    - pass: a quiet node with a couple of tail-loss probes among 150 segments
      [test_tcp_quiet_node_with_a_few_probes_passes]
    - pass: a handful of segments over the whole stretched window, a few of them resent
      (too little traffic to judge, and the summary says so)
      [test_tcp_handful_of_segments_is_not_judged]
    - pass: the broker's loopback connection, read from the real `ss -ti`, losing nothing
      [test_tcp_real_loopback_connection_through_ss]
    - pass: a broker connection with loss long ago, none over the window
      [test_tcp_broker_connection_past_loss_is_info]
    - pass: a quiet broker connection with loss in its past: none over a window where its
      lifetime ratio predicts some, or too short a life (300 segments) to weigh
      [test_tcp_quiet_broker_connection_with_old_or_little_loss_passes]
    - warn: a busy node retransmitting 3% over the window [test_tcp_sampled_retransmits]
    - fail: a busy node retransmitting 8% over the window [test_tcp_sampled_retransmits]
    - fail: a quiet node (80 segments/s) retransmitting 20%, judged over a stretched window
      [test_tcp_quiet_node_with_loss_fails]
    - fail: one client's connection to the broker losing 20% while the node-wide rate
      passes [test_tcp_broker_connection_loss_fails]
    - warn: a quiet broker (20 segments/s, too few to judge over the 3 s window) whose
      connection resent 20% of its segments since it opened (its lifetime ratio)
      [test_tcp_quiet_broker_with_lifetime_loss_warns]
    - warn: a quiet broker connection that resent half its segments since it opened: a
      lifetime ratio warns, never fails [test_tcp_quiet_broker_connection_lifetime_never_fails]
    - warn: 121 sockets in CLOSE_WAIT on the broker port [test_tcp_close_wait_pileup_warns]
    - warn: listen queues overflowing during the window, an accept queue full
      [test_tcp_listen_overflows_now_and_full_queue_warn]
    """
    return judge_tcp(read_tcp(ctx, ctx.thresholds), ctx.thresholds)
