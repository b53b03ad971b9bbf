"""network.tcp: socket states, retransmissions and accept-queue overflows.

Socket states come from /proc/net/tcp[6]. The kernel's TCP counters (/proc/net/snmp,
/proc/net/netstat) are sampled over half a second, so retransmissions and listen-queue
overflows are judged on what happens now; their totals since boot only inform.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from snapshot_agent.core.check import check
from snapshot_agent.core.context import Context
from snapshot_agent.core.grading import Band
from snapshot_agent.core.remedies import sysctl_fix
from snapshot_agent.core.results import MAX_ROWS, Finding, Result, Severity
from snapshot_agent.node.procfs import (
    TCP_LISTEN,
    TCP_STATES,
    Socket,
    iter_lines,
    parse_int,
    parse_snmp,
    parse_socket_line,
)


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


@dataclass
class TcpFacts:
    """Socket states plus counters at the start and end of a short sample."""

    tally: TcpTally
    before: Counters
    after: Counters
    sample_s: float
    port_range: int | None = None  # size of net.ipv4.ip_local_port_range
    tables_read: int = 0
    queues: list[ListenQueue] | None = None  # from `ss -ltn`; None when not available


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


def read_tcp(ctx: Context, sample_s: float) -> TcpFacts:
    """Count sockets while the counters sample runs (at most `sample_s`)."""
    start = time.monotonic()
    before = read_counters(ctx)
    tally = TcpTally()
    read = 0
    for proto in ("tcp", "tcp6"):
        if ctx.path(f"/proc/net/{proto}").exists():
            tally_tcp(iter_lines(ctx, f"/proc/net/{proto}"), proto, tally)
            read += 1
    rest = sample_s - (time.monotonic() - start)
    if rest > 0:
        time.sleep(rest)
    after = read_counters(ctx)
    span = time.monotonic() - start if sample_s > 0 else 0.0
    rng = (ctx.read_optional("/proc/sys/net/ipv4/ip_local_port_range") or "").split()
    size = (
        int(rng[1]) - int(rng[0]) + 1 if len(rng) == 2 and all(x.isdigit() for x in rng) else None
    )
    facts = TcpFacts(tally, before, after, span, size, read)
    if ctx.live and shutil.which("ss"):
        res = ctx.run(["ss", "-H", "-ltn"], timeout_s=3, save_as="ss-ltn.txt")
        if res.ok:
            facts.queues = parse_ss_listen(res.stdout)
    return facts


def _delta(a: int | None, b: int | None) -> int | None:
    """b - a when both are known and the counter did not wrap or reset."""
    return b - a if a is not None and b is not None and b >= a else None


#: Sockets in CLOSE_WAIT: the peer closed, the application did not.
CLOSE_WAIT = Band("close_wait", warn=100)
#: Half-open connections (SYN_RECV and NEW_SYN_RECV).
SYN_RECV = Band("syn_recv", warn=500)
#: Retransmitted segments in % of segments sent (over the sample).
RETRANS_PCT = Band("retrans_pct", warn=1.0, fail=5.0)


def judge_tcp(facts: TcpFacts, thresholds: dict[str, Any]) -> Result:
    """CLOSE_WAIT pile-ups, SYN_RECV floods, retransmissions and accept-queue overflows."""
    if not facts.tables_read and facts.after.out_segs is None:
        return Result.skipped("no /proc/net/tcp, tcp6 or snmp to read")
    findings = [
        *_close_wait_pileup(facts, thresholds),
        *_syn_recv_flood(facts, thresholds),
        *_judge_retransmits(facts, thresholds),
        *_judge_listen_queues(facts),
        *_time_wait_ports(facts, thresholds),
    ]
    states = facts.tally.states
    ratio = _retrans_ratio(facts, int(thresholds["min_segments"]))
    retrans = f", retransmits {ratio[0]:.2f}% ({ratio[1]})" if ratio else ""
    ok = (
        f"{sum(states.values())} TCP sockets ({states.get('ESTABLISHED', 0)} established, "
        f"{states.get('TIME_WAIT', 0)} time-wait, {states.get('CLOSE_WAIT', 0)} close-wait)"
        f"{retrans}"
    )
    return Result.from_findings(findings, ok=ok, data=_tcp_data(facts))


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


def _tcp_data(facts: TcpFacts) -> dict[str, Any]:
    """Socket states, CLOSE_WAIT by port, listeners' accept queues and the counters."""
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
        "counters": {
            "out_segs": facts.after.out_segs,
            "retrans_segs": facts.after.retrans_segs,
            "listen_overflows": facts.after.listen_overflows,
            "listen_drops": facts.after.listen_drops,
        },
        "sample_s": round(facts.sample_s, 2),
    }


RETRANS_REMEDY = (
    "Retransmissions mean packet loss or congestion between this node and its peers: "
    "`nstat -az TcpRetransSegs TcpExtTCPLostRetransmit`, `ss -ti` (per-connection "
    "retrans), interface errors/drops (network.interfaces), and the switch/VPC side."
)


def _retrans_ratio(facts: TcpFacts, min_segs: int) -> tuple[float, str] | None:
    """Retransmitted / sent segments over the sample, else since boot; None when unknown."""
    out = _delta(facts.before.out_segs, facts.after.out_segs)
    ret = _delta(facts.before.retrans_segs, facts.after.retrans_segs)
    if out and ret is not None and out >= max(1, min_segs):
        return 100.0 * ret / out, f"{ret}/{out} segments in {facts.sample_s:.1f} s"
    total_out, total_ret = facts.after.out_segs, facts.after.retrans_segs
    if total_out and total_ret is not None:
        return 100.0 * total_ret / total_out, "since boot"
    return None


def _judge_retransmits(facts: TcpFacts, thresholds: dict[str, Any]) -> list[Finding]:
    """Judge the sampled ratio; the ratio since boot only informs (it may be old news)."""
    min_segs = int(thresholds["min_segments"])
    out = _delta(facts.before.out_segs, facts.after.out_segs)
    ret = _delta(facts.before.retrans_segs, facts.after.retrans_segs)
    if out is not None and ret is not None and out >= min_segs:
        pct = 100.0 * ret / out
        severity = RETRANS_PCT.grade(pct, thresholds)
        if severity is None:
            return []
        msg = f"{pct:.2f}% of TCP segments retransmitted ({ret} of {out} in {facts.sample_s:.1f} s)"
        limit = RETRANS_PCT.limit(severity, thresholds)
        return [Finding(severity, f"{msg}, >= {limit:g}%", RETRANS_REMEDY, "/proc/net/snmp")]
    total_out, total_ret = facts.after.out_segs, facts.after.retrans_segs
    if total_out and total_ret is not None and total_out >= min_segs:
        pct = 100.0 * total_ret / total_out
        if RETRANS_PCT.grade(pct, thresholds):
            return [
                Finding(
                    Severity.INFO,
                    f"{pct:.2f}% of TCP segments retransmitted since boot (too little "
                    "traffic during the sample to say whether it is happening now)",
                    RETRANS_REMEDY,
                    "/proc/net/snmp",
                )
            ]
    return []


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
    overflow = _delta(facts.before.listen_overflows, facts.after.listen_overflows)
    drops = _delta(facts.before.listen_drops, facts.after.listen_drops)
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
                "during the sample)",
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
    description="Socket states, retransmission ratio and accept-queue overflows (0.5 s sample).",
    timeout_s=6,
    bands=(CLOSE_WAIT, SYN_RECV, RETRANS_PCT),
    thresholds={"min_segments": 1000, "time_wait_pct": 50.0, "sample_s": 0.5},
    sampling_s=0.5,
)
def network_tcp(ctx: Context) -> Result:
    """Socket state counts and TCP counters sampled over a short interval."""
    sample = min(0.5, max(0.0, float(ctx.thresholds["sample_s"])))
    return judge_tcp(read_tcp(ctx, sample), ctx.thresholds)
