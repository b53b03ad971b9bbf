"""Network checks that make traffic: network.dns and network.reachability.

The only traffic the network checks make is here: name resolution of
`checks.network.dns_names` and TCP connects to `checks.network.endpoints`, nothing that the
config does not name. Both run their calls in watchdog threads (getaddrinfo() cannot be
interrupted).
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from snapshot_agent.core.check import check
from snapshot_agent.core.context import Context
from snapshot_agent.core.grading import Band
from snapshot_agent.core.results import Finding, Result, Severity
from snapshot_agent.node.procfs import parse_int

# -- calls under a watchdog ----------------------------------------------------------------


def _ms(seconds: float) -> float:
    """Seconds to milliseconds, rounded for reports."""
    return round(seconds * 1000, 1)


@dataclass
class Outcome:
    """What a call run in a watchdog thread did."""

    done: bool
    value: Any = None
    error: BaseException | None = None
    elapsed_s: float = 0.0


def run_parallel(calls: list[Callable[[], Any]], timeout_s: float) -> list[Outcome]:
    """Run calls in daemon threads and wait at most `timeout_s` for all of them.

    getaddrinfo() cannot be interrupted; a daemon thread that is still stuck is simply
    abandoned (the check's process exits with os._exit, so it never blocks anything).
    """
    outcomes = [Outcome(done=False) for _ in calls]

    def runner(i: int, call: Callable[[], Any]) -> None:
        """Run one call and record its value or exception and duration."""
        start = time.monotonic()
        try:
            outcomes[i].value = call()
        except Exception as exc:
            outcomes[i].error = exc
        outcomes[i].elapsed_s = time.monotonic() - start
        outcomes[i].done = True

    threads = [
        threading.Thread(target=runner, args=(i, c), daemon=True) for i, c in enumerate(calls)
    ]
    deadline = time.monotonic() + timeout_s
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return outcomes


# -- network.dns ---------------------------------------------------------------------------

RESOLV_CONF = "/etc/resolv.conf"
RESOLVED_STUB = "127.0.0.53"
GLIBC_MAXNS = 3


@dataclass
class ResolvConf:
    """The parts of resolv.conf(5) that decide how lookups behave."""

    nameservers: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)  # "rotate" -> ""

    def option_int(self, name: str, default: int) -> int:
        """Numeric option such as timeout:2 (glibc's default when absent or bad)."""
        value = parse_int(self.options.get(name))
        return value if value is not None else default


def parse_resolv_conf(text: str) -> ResolvConf:
    """Parse resolv.conf: nameserver, search/domain (the last wins), options."""
    conf = ResolvConf()
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith(("#", ";")):
            continue
        key, values = fields[0], fields[1:]
        if key == "nameserver" and values:
            conf.nameservers.append(values[0])
        elif key in ("search", "domain"):
            conf.search = values
        elif key == "options":
            for opt in values:
                name, _, value = opt.partition(":")
                conf.options[name] = value
    return conf


@dataclass
class Lookup:
    """How resolving one configured name went."""

    name: str
    addresses: list[str] = field(default_factory=list)
    elapsed_ms: float | None = None
    error: str = ""  # "" when resolved
    timed_out: bool = False


@dataclass
class DnsFacts:
    """resolv.conf, systemd-resolved's upstreams, and the configured lookups."""

    resolv_conf: ResolvConf | None = None
    problem: str = ""  # why resolv.conf could not be read
    resolved_upstreams: list[str] | None = None  # None: no /run/systemd/resolve/resolv.conf
    resolved_running: bool = False
    lookups: list[Lookup] = field(default_factory=list)


def resolve_names(names: list[str], timeout_s: float) -> list[Lookup]:
    """getaddrinfo() each name in parallel threads, each bounded by `timeout_s`."""

    def lookup(name: str) -> Callable[[], list[str]]:
        """A call that resolves `name` to its unique addresses."""
        return lambda: sorted(
            {str(ai[4][0]) for ai in socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)}
        )

    outcomes = run_parallel([lookup(n) for n in names], timeout_s)
    results = []
    for name, out in zip(names, outcomes, strict=True):
        if not out.done:
            results.append(Lookup(name, error="no answer in time", timed_out=True))
        elif out.error is not None:
            err = out.error
            text = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            results.append(Lookup(name, elapsed_ms=_ms(out.elapsed_s), error=text))
        else:
            results.append(Lookup(name, out.value, _ms(out.elapsed_s)))
    return results


def read_dns(ctx: Context, names: list[str], timeout_s: float) -> DnsFacts:
    """resolv.conf (and resolved's upstream file), then the configured lookups."""
    facts = DnsFacts()
    path = ctx.path("/etc/resolv.conf")
    text = ctx.read_optional("/etc/resolv.conf", 64 * 1024)
    if text is None:
        if path.is_symlink():
            facts.problem = f"/etc/resolv.conf is a dangling symlink to {os.readlink(path)}"
        else:
            facts.problem = "/etc/resolv.conf does not exist or cannot be read"
    else:
        facts.resolv_conf = parse_resolv_conf(text)
        ctx.artifact("resolv.conf", text)
    upstream = ctx.read_optional("/run/systemd/resolve/resolv.conf", 64 * 1024)
    if upstream is not None:
        facts.resolved_upstreams = parse_resolv_conf(upstream).nameservers
    facts.resolved_running = ctx.path("/run/systemd/resolve").is_dir()
    if names:
        facts.lookups = resolve_names(names, max(0.2, min(timeout_s, ctx.remaining() - 1)))
    return facts


#: How long resolving one configured name took, in ms.
LOOKUP_MS = Band("lookup_ms", warn=500.0)


def judge_dns(facts: DnsFacts, thresholds: dict[str, Any]) -> Result:
    """resolv.conf must name servers; configured names must resolve, and quickly."""
    conf = facts.resolv_conf
    findings = _resolv_conf_missing(facts) if conf is None else _judge_resolv_conf(conf, facts)
    for lk in facts.lookups:
        findings += _unresolved(lk, thresholds) or _slow_lookup(lk, thresholds)
    servers = ", ".join(conf.nameservers) if conf else "none"
    if facts.lookups:
        slowest = max((lk.elapsed_ms or 0.0) for lk in facts.lookups)
        tail = f"{len(facts.lookups)} configured names resolved (slowest {slowest:.0f} ms)"
    else:
        tail = "no names configured to resolve (checks.network.dns_names): resolv.conf only"
    data: dict[str, Any] = {
        "nameservers": conf.nameservers if conf else [],
        "search": conf.search if conf else [],
        "options": conf.options if conf else {},
        "resolved_upstreams": facts.resolved_upstreams,
        "lookups": [
            {
                "name": lk.name,
                "ok": not lk.error,
                "ms": lk.elapsed_ms,
                "addresses": ", ".join(lk.addresses[:6]),
                "error": lk.error,
            }
            for lk in facts.lookups
        ],
    }
    return Result.from_findings(findings, ok=f"nameservers {servers}; {tail}", data=data)


def _resolv_conf_missing(facts: DnsFacts) -> list[Finding]:
    """No readable /etc/resolv.conf: glibc asks 127.0.0.1 only."""
    return [
        Finding(
            Severity.FAIL,
            f"{facts.problem}: glibc then asks 127.0.0.1 only, so name lookups most "
            "likely fail (object storage, the supervisor, clients by name)",
            "Restore /etc/resolv.conf (or its symlink target: `systemctl restart "
            "systemd-resolved`, your DHCP client or NetworkManager) with at least one "
            "`nameserver <address>` line.",
            "/etc/resolv.conf",
        )
    ]


def _unresolved(lk: Lookup, thresholds: dict[str, Any]) -> list[Finding]:
    """A configured name that does not resolve, or not in time."""
    if not lk.error:
        return []
    return [
        Finding(
            Severity.FAIL,
            f"{lk.name} does not resolve ({lk.error})"
            if not lk.timed_out
            else f"{lk.name} did not resolve within {thresholds['timeout_ms']:g} ms",
            f"Ask the configured nameservers directly (`dig {lk.name}` / "
            f"`getent ahosts {lk.name}`); check /etc/hosts, the search domains and "
            "that the nameservers are reachable (UDP and TCP 53).",
            lk.name,
        )
    ]


def _slow_lookup(lk: Lookup, thresholds: dict[str, Any]) -> list[Finding]:
    """A configured name that resolves, slowly: every new connection by name waits for it."""
    severity = LOOKUP_MS.grade(lk.elapsed_ms, thresholds)
    if severity is None:
        return []
    return [
        Finding(
            severity,
            f"{lk.name} took {lk.elapsed_ms:.0f} ms to resolve "
            f"(>= {LOOKUP_MS.limit(severity, thresholds):g} ms)",
            "Slow lookups delay every new connection by name: check the first "
            "nameserver (a dead first server costs `options timeout` seconds per "
            "lookup), run a local cache (systemd-resolved, nscd, dnsmasq), or lower "
            "ndots so names are not tried with every search domain first.",
            lk.name,
        )
    ]


def _judge_resolv_conf(conf: ResolvConf, facts: DnsFacts) -> list[Finding]:
    """Nameserver list, the systemd-resolved stub, and options that slow lookups down."""
    return [
        *_no_nameserver(conf),
        *_nameservers_beyond_maxns(conf),
        *_resolved_stub(conf, facts),
        *_ndots_with_search(conf),
    ]


def _no_nameserver(conf: ResolvConf) -> list[Finding]:
    """resolv.conf without nameserver lines: only a resolver on 127.0.0.1 would answer."""
    if conf.nameservers:
        return []
    return [
        Finding(
            Severity.WARN,
            "/etc/resolv.conf has no nameserver line: glibc asks 127.0.0.1, which works "
            "only if a local resolver listens there",
            "Add `nameserver <address>` lines (or fix whatever generates the file: "
            "DHCP client, NetworkManager, systemd-resolved).",
            RESOLV_CONF,
        )
    ]


def _nameservers_beyond_maxns(conf: ResolvConf) -> list[Finding]:
    """More nameservers than glibc uses: the ones after the third are never asked."""
    if len(conf.nameservers) <= GLIBC_MAXNS:
        return []
    return [
        Finding(
            Severity.INFO,
            f"{len(conf.nameservers)} nameservers listed; glibc uses only the first "
            f"{GLIBC_MAXNS} ({', '.join(conf.nameservers[:GLIBC_MAXNS])})",
            "Put the servers that must be used first.",
            RESOLV_CONF,
        )
    ]


def _resolved_stub(conf: ResolvConf, facts: DnsFacts) -> list[Finding]:
    """Lookups through the systemd-resolved stub: name its upstreams, or say it is not running."""
    if RESOLVED_STUB not in conf.nameservers:
        return []
    if facts.resolved_running:
        upstream = ", ".join(facts.resolved_upstreams or []) or "unknown"
        return [
            Finding(
                Severity.INFO,
                f"lookups go through the systemd-resolved stub {RESOLVED_STUB}; its "
                f"upstream servers are {upstream}",
                "`resolvectl status` shows the per-link servers and `resolvectl query "
                "<name>` tests a lookup through the stub.",
                RESOLV_CONF,
            )
        ]
    return [
        Finding(
            Severity.WARN,
            f"resolv.conf points at the systemd-resolved stub {RESOLVED_STUB} but "
            "/run/systemd/resolve does not exist: systemd-resolved seems not to run, "
            "so lookups fail",
            "`systemctl enable --now systemd-resolved`, or replace /etc/resolv.conf "
            "with real nameserver lines.",
            RESOLV_CONF,
        )
    ]


def _ndots_with_search(conf: ResolvConf) -> list[Finding]:
    """A high ndots with search domains: short names cost extra queries per lookup."""
    ndots = conf.option_int("ndots", 1)
    if ndots <= 1 or not conf.search:
        return []
    return [
        Finding(
            Severity.INFO,
            f"options ndots:{ndots} with {len(conf.search)} search domains: a name with "
            f"fewer than {ndots} dots is tried with every search domain first (up to "
            f"{len(conf.search)} extra queries per lookup)",
            "Configure external endpoints (object storage, the supervisor) as fully "
            "qualified names with a trailing dot, or lower ndots.",
            RESOLV_CONF,
        )
    ]


@check(
    id="network.dns",
    category="network",
    title="DNS resolution",
    description="resolv.conf sanity and resolution time of the names in checks.network.dns_names.",
    timeout_s=8,
    bands=(LOOKUP_MS,),
    thresholds={"timeout_ms": 3000},
)
def network_dns(ctx: Context) -> Result:
    """Read resolv.conf and resolve the configured names with a timeout.

    Verdicts:
    - pass: two nameservers, localhost resolves; ndots:5 with search domains only informs
      [test_dns_resolves_localhost]
    - pass: no names configured, a resolv.conf with a nameserver
      [test_dns_without_names_judges_resolv_conf_only]
    - pass: the 127.0.0.53 stub with systemd-resolved's upstream servers present
      [test_dns_stub_resolver]
    - warn: a configured name resolving in 900 ms [test_dns_lookup_verdicts]
    - warn: the 127.0.0.53 stub while systemd-resolved does not run [test_dns_stub_resolver]
    - fail: a configured name that does not resolve, or not in time
      [test_dns_lookup_verdicts]
    - fail: /etc/resolv.conf missing, or a dangling symlink
      [test_dns_missing_or_dangling_resolv_conf_fails]
    """
    names = list(ctx.config.checks.network.dns_names)
    facts = read_dns(ctx, names, float(ctx.thresholds["timeout_ms"]) / 1000)
    return judge_dns(facts, ctx.thresholds)


# -- network.reachability ------------------------------------------------------------------


def parse_endpoint(text: str) -> tuple[str, int] | None:
    """'host:port' or '[v6]:port' -> (host, port); None when malformed."""
    text = text.strip()
    match = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\s]+):(\d+)", text)
    if not match:
        return None
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    return (host, port) if 0 < port < 65536 else None


@dataclass
class Probe:
    """One TCP connect attempt to a configured endpoint."""

    endpoint: str
    address: str = ""
    connect_ms: float | None = None
    error: str = ""


def connect_endpoint(host: str, port: int, timeout_s: float) -> tuple[str, float]:
    """Resolve and connect (each address in turn); (address, connect seconds) or raise."""
    deadline = time.monotonic() + timeout_s
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    last: OSError = OSError("no address")
    for family, kind, proto, _, sockaddr in infos:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        with socket.socket(family, kind, proto) as sock:
            sock.settimeout(left)
            start = time.monotonic()
            try:
                sock.connect(sockaddr)
            except OSError as exc:
                last = exc
                continue
            return str(sockaddr[0]), time.monotonic() - start
    raise last


def probe_endpoints(endpoints: list[tuple[str, str, int]], timeout_s: float) -> list[Probe]:
    """Connect to each (label, host, port) in parallel, bounded by `timeout_s`."""
    calls = [
        (lambda h=host, p=port: connect_endpoint(h, p, timeout_s)) for _, host, port in endpoints
    ]
    outcomes = run_parallel(calls, timeout_s + 0.2)
    probes = []
    for (label, _, _), out in zip(endpoints, outcomes, strict=True):
        if not out.done:
            probes.append(Probe(label, error=f"timed out after {timeout_s * 1000:.0f} ms"))
        elif out.error is not None:
            err = out.error
            if isinstance(err, socket.gaierror):
                text = f"does not resolve ({err.strerror})"
            elif isinstance(err, ConnectionRefusedError):
                text = "connection refused"
            elif isinstance(err, TimeoutError):
                text = f"timed out after {timeout_s * 1000:.0f} ms"
            else:
                text = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            probes.append(Probe(label, error=text))
        else:
            address, seconds = out.value
            probes.append(Probe(label, address, _ms(seconds)))
    return probes


#: How long the TCP handshake with one configured endpoint took, in ms.
CONNECT_MS = Band("connect_ms", warn=500.0)


def judge_reachability(probes: list[Probe], bad: list[str], thresholds: dict[str, Any]) -> Result:
    """Refused or timed-out endpoints fail; slow connects warn."""
    findings: list[Finding] = []
    for entry in bad:
        findings.append(
            Finding(
                Severity.WARN,
                f"checks.network.endpoints entry {entry!r} is not host:port",
                "Write endpoints as host:port, IPv6 as [address]:port.",
                "checks.network.endpoints",
            )
        )
    for p in probes:
        if p.error:
            findings.append(
                Finding(
                    Severity.FAIL,
                    f"cannot connect to {p.endpoint}: {p.error}",
                    "Refused: nothing listens there (service down, wrong port). Timed out: a "
                    "firewall, security group or route drops the packets "
                    "(`ip route get <address>`, `nc -vz <host> <port>` from this node). Does "
                    "not resolve: see network.dns.",
                    p.endpoint,
                )
            )
        elif p.connect_ms is not None and (slow := CONNECT_MS.grade(p.connect_ms, thresholds)):
            findings.append(
                Finding(
                    slow,
                    f"connecting to {p.endpoint} took {p.connect_ms:.0f} ms "
                    f"(>= {CONNECT_MS.limit(slow, thresholds):g} ms)",
                    "A slow TCP handshake means a long or lossy path (retransmitted SYNs take "
                    "1 s or more): check network.tcp retransmits and the route to it.",
                    p.endpoint,
                )
            )
    rows = [
        {"endpoint": p.endpoint, "address": p.address, "connect_ms": p.connect_ms, "error": p.error}
        for p in probes
    ]
    ok = f"{len(probes)} endpoints reachable: " + ", ".join(
        f"{p.endpoint} {p.connect_ms:.0f} ms" for p in probes[:5] if p.connect_ms is not None
    )
    return Result.from_findings(findings, ok=ok, data={"endpoints": rows})


@check(
    id="network.reachability",
    category="network",
    title="Endpoint reachability",
    description="TCP connect time to each endpoint in checks.network.endpoints.",
    timeout_s=10,
    bands=(CONNECT_MS,),
    thresholds={"timeout_ms": 3000},
)
def network_reachability(ctx: Context) -> Result:
    """Connect to the configured endpoints only (never anything else).

    Verdicts:
    - pass: a configured endpoint (a real listener on 127.0.0.1) accepts the connection
      [test_reachability_pass]
    - warn: a configured endpoint connecting in 812 ms
      [test_reachability_slow_warns_and_none_configured_skips]
    - fail: a configured endpoint refusing the connection [test_reachability_refused_fails]
    - skipped: no endpoints configured
      [test_reachability_slow_warns_and_none_configured_skips]
    """
    configured = list(ctx.config.checks.network.endpoints)
    if not configured:
        return Result.skipped(
            "no endpoints configured; configure checks.network.endpoints: the supervisor, "
            "your object storage (host:port)"
        )
    parsed, bad = [], []
    for entry in configured:
        got = parse_endpoint(entry)
        if got is None:
            bad.append(entry)
        else:
            parsed.append((entry, *got))
    timeout = min(float(ctx.thresholds["timeout_ms"]) / 1000, max(0.2, ctx.remaining() - 1))
    probes = probe_endpoints(parsed, timeout) if parsed else []
    return judge_reachability(probes, bad, ctx.thresholds)
