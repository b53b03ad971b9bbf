"""Netfilter checks: network.firewall and network.conntrack.

network.firewall reads the nftables / iptables rulesets and judges the input path for the
broker ports (the same ports network.listening expects); network.conntrack judges the
fill of the connection tracking table.
"""

from __future__ import annotations

import json
import shlex
import shutil
import socket
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from snapshot_agent.core.check import Requirements, check
from snapshot_agent.core.context import Context
from snapshot_agent.core.grading import Band
from snapshot_agent.core.remedies import sysctl_fix
from snapshot_agent.core.results import Finding, Result, Severity
from snapshot_agent.node.ports import (
    DEFAULT_BROKER_PORTS,
    BrokerPorts,
    broker_ports,
    read_broker_ports,
    threshold_key,
)
from snapshot_agent.node.procfs import parse_int, read_int

FIREWALL_PORTS_KEY = threshold_key("network.firewall")


# -- network.conntrack ---------------------------------------------------------------------


def parse_conntrack_stat(text: str) -> dict[str, int]:
    """/proc/net/stat/nf_conntrack: a header and one hex row per CPU -> summed counters."""
    lines = text.splitlines()
    if not lines:
        return {}
    names = lines[0].split()
    totals: dict[str, int] = dict.fromkeys(names, 0)
    for line in lines[1:]:
        for name, value in zip(names, line.split(), strict=False):
            number = parse_int(value, 16)
            if number is not None and name != "entries":  # entries is global, not per CPU
                totals[name] += number
    return totals


@dataclass
class ConntrackFacts:
    """Connection tracking table fill and its failure counters."""

    count: int | None
    maximum: int | None
    stats: dict[str, int] = field(default_factory=dict)


def read_conntrack(ctx: Context) -> ConntrackFacts | None:
    """None when nf_conntrack is not loaded."""
    count = read_int(ctx, "/proc/sys/net/netfilter/nf_conntrack_count")
    maximum = read_int(ctx, "/proc/sys/net/netfilter/nf_conntrack_max")
    if count is None and maximum is None:
        return None
    stats = parse_conntrack_stat(ctx.read_optional("/proc/net/stat/nf_conntrack") or "")
    return ConntrackFacts(count, maximum, stats)


#: How full the conntrack table is, in % of nf_conntrack_max.
CONNTRACK_PCT = Band("pct", warn=80.0, fail=95.0)


def judge_conntrack(facts: ConntrackFacts, thresholds: dict[str, Any]) -> Result:
    """A full conntrack table drops new connections; 80% warns, 95% fails."""
    if facts.count is None or not facts.maximum:
        return Result.skipped(
            "nf_conntrack_count or nf_conntrack_max is unreadable or zero; cannot judge the table"
        )
    pct = 100.0 * facts.count / facts.maximum
    findings: list[Finding] = []
    message = f"conntrack table {pct:.0f}% full ({facts.count} of {facts.maximum} entries)"
    remedy = (
        "When the table is full the kernel drops packets of new connections ('nf_conntrack: "
        "table full, dropping packet' in dmesg). Raise it (each entry costs ~300 bytes of "
        "kernel memory): "
        + sysctl_fix(
            "net.netfilter.nf_conntrack_max",
            facts.maximum * 2,
            "Or exempt the broker's ports from tracking with an nftables `notrack` rule.",
        )
    )
    subject = "/proc/sys/net/netfilter/nf_conntrack_count"
    severity = CONNTRACK_PCT.grade(pct, thresholds)
    if severity:
        limit = CONNTRACK_PCT.limit(severity, thresholds)
        findings.append(Finding(severity, f"{message}, >= {limit:g}%", remedy, subject))
    dropped = {k: facts.stats.get(k, 0) for k in ("drop", "early_drop", "insert_failed")}
    if any(dropped.values()):
        findings.append(
            Finding(
                Severity.INFO,
                "conntrack dropped entries since boot: "
                + ", ".join(f"{k} {v}" for k, v in dropped.items() if v),
                remedy,
                "/proc/net/stat/nf_conntrack",
            )
        )
    data = {
        "count": facts.count,
        "max": facts.maximum,
        "used_pct": round(pct, 1),
        "stats": {k: v for k, v in facts.stats.items() if k != "entries"},
    }
    return Result.from_findings(findings, ok=message, data=data)


@check(
    id="network.conntrack",
    category="network",
    title="Connection tracking table",
    description="nf_conntrack entries against nf_conntrack_max (a full table drops packets).",
    timeout_s=5,
    bands=(CONNTRACK_PCT,),
)
def network_conntrack(ctx: Context) -> Result:
    """Fill of the netfilter connection tracking table.

    Verdicts:
    - pass: 1000 of 262144 entries [test_conntrack_verdicts]
    - pass: drops and failed inserts since boot (information only)
      [test_conntrack_stat_drops_are_info]
    - warn: the table 80% full [test_conntrack_verdicts]
    - fail: the table 95% full: new connections are about to be dropped
      [test_conntrack_verdicts]
    - skipped: nf_conntrack not loaded [test_conntrack_skipped_when_not_loaded]
    """
    facts = read_conntrack(ctx)
    if facts is None:
        return Result.skipped(
            "nf_conntrack is not loaded (no /proc/sys/net/netfilter/nf_conntrack_count): "
            "no connection tracking table to fill"
        )
    return judge_conntrack(facts, ctx.thresholds)


# -- network.firewall ----------------------------------------------------------------------

PortRanges = list[tuple[int, int]]


@dataclass
class FwRule:
    """A firewall rule reduced to what the broker-port judgement needs."""

    where: str  # "nft inet filter input #7" / "iptables filter INPUT #3"
    verdict: str  # accept | drop | reject | jump | goto | return | "" (non-terminal)
    target: str = ""  # chain for jump/goto
    proto: str | None = None  # tcp | udp | None (any)
    ports: PortRanges | None = None  # destination ports; None: no port match
    conditional: bool = False  # other matches (source, interface, ct state...)
    opaque: bool = False  # could not be understood (xt compat, unknown expression)
    vmap: list[tuple[PortRanges, str]] = field(default_factory=list)  # dport verdict maps


@dataclass
class FwChain:
    """A chain; `hook` set for base chains."""

    key: str  # "family table name" (nft) or "iptables table name"
    name: str
    hook: str = ""
    policy: str = ""
    rules: list[FwRule] = field(default_factory=list)


@dataclass
class Ruleset:
    """Chains from one tool, with the base input chains named."""

    source: str  # nft | iptables | ip6tables
    chains: dict[str, FwChain] = field(default_factory=dict)

    def input_chains(self) -> list[FwChain]:
        """Base chains on the input hook (nft) or filter INPUT (iptables)."""
        return [c for c in self.chains.values() if c.hook == "input"]


def _port_ranges(value: Any) -> PortRanges | None:
    """nft JSON right-hand side -> port ranges (int, set, range); None when not ports."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return [(value, value)]
    if isinstance(value, str):
        if value.isdigit():
            return [(int(value), int(value))]
        try:
            port = socket.getservbyname(value)
        except OSError:
            return None
        return [(port, port)]
    if isinstance(value, dict):
        if "range" in value and isinstance(value["range"], list) and len(value["range"]) == 2:
            lo, hi = (_port_ranges(v) for v in value["range"])
            return [(lo[0][0], hi[0][1])] if lo and hi else None
        if "set" in value:
            return _port_ranges(value["set"])
    if isinstance(value, list):
        out: PortRanges = []
        for item in value:
            got = _port_ranges(item)
            if got is None:
                return None
            out += got
        return out
    return None


INET_FAMILIES = ("ip", "ip6", "inet")
_NFT_VERDICTS = ("accept", "drop", "reject", "jump", "goto", "return")
_NFT_NEUTRAL = ("counter", "log", "comment", "limit", "quota", "meter")


def _nft_rule(rule: dict[str, Any], where: str) -> FwRule:
    """Reduce one nft JSON rule to protocol, destination ports, conditions and verdict."""
    fw = FwRule(where=where, verdict="")
    for expr in rule.get("expr") or []:
        if not isinstance(expr, dict) or len(expr) != 1:
            fw.opaque = True
            continue
        ((kind, body),) = expr.items()
        if kind in _NFT_VERDICTS:
            fw.verdict = kind
            if kind in ("jump", "goto") and isinstance(body, dict):
                fw.target = str(body.get("target", ""))
        elif kind == "match" and isinstance(body, dict):
            _nft_match(fw, body)
        elif kind == "vmap" and isinstance(body, dict):
            key = body.get("key", {})
            payload = key.get("payload", {}) if isinstance(key, dict) else {}
            data = body.get("data")
            entries = data.get("set") if isinstance(data, dict) else None
            if payload.get("field") == "dport" and isinstance(entries, list):
                if payload.get("protocol") in ("tcp", "udp"):
                    fw.proto = payload["protocol"]
                for entry in entries:
                    if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], dict):
                        ports = _port_ranges(entry[0])
                        verdict = next(iter(entry[1]), "")
                        if ports is not None:
                            fw.vmap.append((ports, verdict))
            else:
                fw.conditional = True  # a verdict map on something else (ct state...)
        elif kind in _NFT_NEUTRAL:
            continue
        elif kind in ("xt",):
            fw.opaque = True
        else:
            fw.conditional = True
    return fw


def _nft_match(fw: FwRule, body: dict[str, Any]) -> None:
    """Fold one nft `match` into the rule: protocol, dport, or another condition."""
    left, right, op = body.get("left"), body.get("right"), body.get("op", "==")
    if isinstance(left, dict) and op in ("==", "in"):
        payload, meta = left.get("payload"), left.get("meta")
        if isinstance(payload, dict) and payload.get("field") == "dport":
            ports = _port_ranges(right)
            if ports is not None:
                fw.ports = ports
                if payload.get("protocol") in ("tcp", "udp"):
                    fw.proto = payload["protocol"]
                return
        if isinstance(meta, dict) and meta.get("key") == "l4proto" and right in ("tcp", "udp"):
            fw.proto = str(right)
            return
        l4_field = isinstance(payload, dict) and payload.get("field") in ("nexthdr", "protocol")
        if l4_field and right in ("tcp", "udp"):
            fw.proto = str(right)
            return
    fw.conditional = True


def parse_nft_json(text: str) -> Ruleset | None:
    """`nft -j list ruleset` -> Ruleset; None when the output is not nft JSON."""
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    items = doc.get("nftables") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        return None
    rs = Ruleset("nft")
    for item in items:
        if not isinstance(item, dict):
            continue
        if isinstance(chain := item.get("chain"), dict):
            key = f"{chain.get('family')} {chain.get('table')} {chain.get('name')}"
            # Only filter base chains of the IP families see packets for local sockets.
            ip_filter = chain.get("type") == "filter" and chain.get("family") in INET_FAMILIES
            rs.chains[key] = FwChain(
                key,
                str(chain.get("name")),
                hook=str(chain.get("hook", "")) if ip_filter else "",
                policy=str(chain.get("policy", "")),
            )
        elif isinstance(rule := item.get("rule"), dict):
            key = f"{rule.get('family')} {rule.get('table')} {rule.get('chain')}"
            target = rs.chains.setdefault(key, FwChain(key, str(rule.get("chain"))))
            where = f"nft {key} handle {rule.get('handle')}"
            target.rules.append(_nft_rule(rule, where))
    return rs


def _ipt_ports(text: str) -> PortRanges | None:
    """'8090', '8000:8100', '22,8090,3000:3010' -> ranges."""
    out: PortRanges = []
    for part in text.split(","):
        lo, _, hi = part.partition(":")
        a, b = parse_int(lo), parse_int(hi) if hi else parse_int(lo)
        if a is None or b is None:
            return None
        out.append((a, b))
    return out


_IPT_NEUTRAL_MATCHES = ("tcp", "udp", "multiport", "comment")


def _ipt_rule(tokens: list[str], where: str) -> FwRule:
    """Reduce an iptables-save `-A CHAIN ...` rule (tokens after the chain name)."""
    fw = FwRule(where=where, verdict="")
    if "-j" in tokens or "--jump" in tokens or "-g" in tokens or "--goto" in tokens:
        idx = next(i for i, t in enumerate(tokens) if t in ("-j", "--jump", "-g", "--goto"))
        target = tokens[idx + 1] if idx + 1 < len(tokens) else ""
        goto = tokens[idx] in ("-g", "--goto")
        tokens = tokens[:idx]  # what follows the target are its own options
        builtin = {"ACCEPT": "accept", "DROP": "drop", "REJECT": "reject", "RETURN": "return"}
        if target in builtin:
            fw.verdict = builtin[target]
        elif target in ("LOG", "NFLOG", "MARK", "CONNMARK", "CT", "NOTRACK"):
            fw.verdict = ""  # non-terminating targets
        else:
            fw.verdict, fw.target = ("goto" if goto else "jump"), target
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if tok == "!":
            fw.conditional = True
            i += 1
            continue
        if tok in ("-p", "--protocol"):
            fw.proto = nxt.lower() if nxt.lower() in ("tcp", "udp") else None
            if nxt.lower() not in ("tcp", "udp", "all"):
                fw.conditional = True
            i += 2
        elif tok in ("-m", "--match"):
            if nxt not in _IPT_NEUTRAL_MATCHES:
                fw.conditional = True
            i += 2
        elif tok in ("--dport", "--destination-port", "--dports", "--destination-ports"):
            fw.ports = _ipt_ports(nxt)
            if fw.ports is None:
                fw.opaque = True
            i += 2
        elif tok == "--comment":
            i += 2
        else:
            fw.conditional = True
            i += 1
    return fw


def parse_iptables_save(text: str, source: str = "iptables") -> Ruleset:
    """iptables-save / ip6tables-save output -> Ruleset (filter INPUT is the input hook)."""
    rs = Ruleset(source)
    table = ""
    counters: Counter[str] = Counter()
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":") and table:
            name, policy = [*line[1:].split(), "", ""][:2]
            key = f"{source} {table} {name}"
            hook = "input" if table == "filter" and name == "INPUT" else ""
            rs.chains[key] = FwChain(key, name, hook, policy.lower() if policy != "-" else "")
        elif line.startswith("-A ") and table:
            try:
                tokens = shlex.split(line)
            except ValueError:
                tokens = line.split()
            if len(tokens) < 2:
                continue
            key = f"{source} {table} {tokens[1]}"
            counters[key] += 1
            chain = rs.chains.setdefault(key, FwChain(key, tokens[1]))
            chain.rules.append(_ipt_rule(tokens[2:], f"{key} rule {counters[key]}"))
    return rs


@dataclass
class PortVerdict:
    """How the input path treats new connections to one broker port."""

    proto: str
    port: int
    verdict: str  # accept | drop | reject | policy-drop | restricted | open | unknown
    rule: str = ""  # where it was decided


def _matches(rule: FwRule, proto: str, port: int) -> bool:
    """The rule's protocol and destination ports cover proto/port."""
    if rule.proto not in (None, proto) or rule.ports is None:
        return False
    return any(lo <= port <= hi for lo, hi in rule.ports)


def evaluate_port(rs: Ruleset, chain: FwChain, proto: str, port: int) -> PortVerdict:
    """Walk an input chain (following jumps) for a new connection to proto/port.

    Best effort and conservative: rules with conditions we cannot evaluate (source
    addresses, interfaces, conntrack state...) never decide; a drop among them only
    makes the port 'restricted'.
    """
    restricted = ""

    def walk(c: FwChain, depth: int) -> PortVerdict | None:
        """First deciding rule in `c`; None when the chain falls through."""
        nonlocal restricted
        for rule in c.rules:
            if rule.opaque:
                continue
            for ports, verdict in rule.vmap:
                covered = rule.proto in (None, proto) and any(lo <= port <= hi for lo, hi in ports)
                if covered and verdict in ("accept", "drop", "reject"):
                    return PortVerdict(proto, port, verdict, rule.where)
            port_rule = _matches(rule, proto, port)
            any_port = rule.ports is None and rule.proto in (None, proto) and not rule.vmap
            if not (port_rule or any_port):
                continue
            if rule.conditional:
                if port_rule and rule.verdict in ("drop", "reject") and not restricted:
                    restricted = rule.where
                continue
            if rule.verdict in ("jump", "goto") and depth < 8:
                sub = rs.chains.get(c.key.rsplit(" ", 1)[0] + " " + rule.target)
                if sub is not None:
                    got = walk(sub, depth + 1)
                    if got is not None or rule.verdict == "goto":
                        return got
                continue
            if rule.verdict == "return":
                return None
            if rule.verdict in ("accept", "drop", "reject"):
                if any_port and rule.verdict != "accept":
                    return PortVerdict(proto, port, "policy-drop", rule.where)
                return PortVerdict(proto, port, rule.verdict, rule.where)
        return None

    decided = walk(chain, 0)
    if decided is not None:
        return decided
    if chain.policy == "drop":
        return PortVerdict(proto, port, "policy-drop", f"{chain.key} policy drop")
    if restricted:
        return PortVerdict(proto, port, "restricted", restricted)
    return PortVerdict(proto, port, "open", f"{chain.key} policy {chain.policy or 'accept'}")


@dataclass
class FirewallFacts:
    """The rulesets read, which tools ran, and what could not be read."""

    rulesets: list[Ruleset] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    iptables_backend: str = ""  # nf_tables | legacy | ""


def read_firewall(ctx: Context) -> FirewallFacts:
    """Run nft and iptables-save / ip6tables-save where installed; keep their output."""
    facts = FirewallFacts()
    if shutil.which("nft"):
        facts.tools.append("nft")
        res = ctx.run(["nft", "-j", "list", "ruleset"], timeout_s=5, save_as="nft-ruleset.json")
        rs = parse_nft_json(res.stdout) if res.ok else None
        if rs is None:
            facts.problems.append(res.describe() if not res.ok else "nft printed no JSON")
        else:
            facts.rulesets.append(rs)
    for tool, source in (("iptables-save", "iptables"), ("ip6tables-save", "ip6tables")):
        if not shutil.which(tool):
            continue
        facts.tools.append(tool)
        res = ctx.run([tool], timeout_s=5, save_as=f"{tool}.txt")
        if not res.ok:
            facts.problems.append(res.describe())
            continue
        backend = "nf_tables" if "(nf_tables)" in res.stdout else "legacy"
        facts.iptables_backend = facts.iptables_backend or backend
        # iptables-nft rules are already in the nft ruleset; judge them once.
        if backend == "legacy" or "nft" not in facts.tools:
            facts.rulesets.append(parse_iptables_save(res.stdout, source))
    return facts


def judge_firewall(
    facts: FirewallFacts, thresholds: dict[str, Any], ports: BrokerPorts | None = None
) -> Result:
    """Default policies, rule counts, and whether input rules stop the broker ports.

    `ports` as for judge_listening: the Iggy config's transports, else the threshold.
    """
    if ports is None:
        ports = broker_ports(None, thresholds, FIREWALL_PORTS_KEY)
    chains_rows = _base_chain_rows(facts)
    port_rows, port_findings = _broker_port_verdicts(facts, ports)
    findings = [
        *ports.findings,
        *_unread_rulesets(facts),
        *port_findings,
        *_opaque_rules(chains_rows),
    ]
    total_rules = sum(len(c.rules) for rs in facts.rulesets for c in rs.chains.values())
    data = {
        "tools": facts.tools,
        "iptables_backend": facts.iptables_backend,
        "base_chains": chains_rows,
        "broker_ports": port_rows,
        "broker_ports_source": ports.source,
        "broker_ports_from": ports.origin,
        "rule_count": total_rules,
    }
    ok = _firewall_summary(facts, total_rules, chains_rows, ports)
    return Result.from_findings(findings, ok=ok, data=data)


def _unread_rulesets(facts: FirewallFacts) -> list[Finding]:
    """A tool that ran but gave no ruleset: its rules are not judged."""
    return [
        Finding(
            Severity.INFO,
            f"firewall ruleset not read: {problem}",
            "Run the tool by hand as root to see why.",
            "",
        )
        for problem in facts.problems
    ]


def _base_chain_rows(facts: FirewallFacts) -> list[dict[str, Any]]:
    """Every base chain (hooked into the packet path) with its policy and rule counts."""
    return [
        {
            "source": rs.source,
            "chain": chain.key,
            "hook": chain.hook,
            "policy": chain.policy or "accept",
            "rules": len(chain.rules),
            "opaque_rules": sum(r.opaque for r in chain.rules),
        }
        for rs in facts.rulesets
        for chain in rs.chains.values()
        if chain.hook
    ]


def _broker_port_verdicts(
    facts: FirewallFacts, ports: BrokerPorts
) -> tuple[list[dict[str, Any]], list[Finding]]:
    """How each input chain treats new connections to each broker port (rows, findings)."""
    rows: list[dict[str, Any]] = []
    findings: list[Finding] = []
    for rs in facts.rulesets:
        for chain in rs.input_chains():
            for proto, port in ports.ports:
                pv = evaluate_port(rs, chain, proto, port)
                rows.append(
                    {"port": f"{proto}/{port}", "verdict": pv.verdict, "decided_by": pv.rule}
                )
                findings += _port_findings(pv, ports.label(proto, port))
    return rows, findings


def _opaque_rules(chains_rows: list[dict[str, Any]]) -> list[Finding]:
    """Base-chain rules that could not be analysed: the port verdicts ignore them."""
    opaque = sum(r["opaque_rules"] for r in chains_rows)
    if not opaque:
        return []
    return [
        Finding(
            Severity.INFO,
            f"{opaque} rules in base chains could not be analysed (iptables-nft compat "
            "matches or unknown expressions); the port verdicts ignore them",
            "Read the saved ruleset (nft-ruleset.json / iptables-save.txt) for these.",
            "",
        )
    ]


def _firewall_summary(
    facts: FirewallFacts, total_rules: int, chains_rows: list[dict[str, Any]], ports: BrokerPorts
) -> str:
    """The summary when nothing is wrong: rule count and input policies."""
    if not facts.rulesets:
        return "no firewall ruleset could be read"
    if not total_rules and not chains_rows:
        return f"no firewall rules loaded ({', '.join(facts.tools)})"
    policies = ", ".join(
        f"{r['chain']} policy {r['policy']} ({r['rules']} rules)"
        for r in chains_rows
        if r["hook"] == "input"
    )
    return (
        f"{total_rules} rules; input: {policies or 'no input chain'}; no rule blocks the "
        f"broker ports ({ports.describe()})"
    )


def _port_findings(pv: PortVerdict, name: str) -> list[Finding]:
    """Explicit drop/reject warns; a default-drop or source-restricted port informs.

    `name` is the port as shown, e.g. 'tcp/8090 (Iggy TCP)'.
    """
    if pv.verdict in ("drop", "reject"):
        return [
            Finding(
                Severity.WARN,
                f"the firewall {pv.verdict}s new connections to {name} ({pv.rule})",
                "Clients on other hosts cannot reach this broker transport. If that is not "
                f"intended, allow it, e.g. `nft insert rule <family> <table> <chain> "
                f"{pv.proto} dport {pv.port} accept` (persist in /etc/nftables.conf) or "
                f"`iptables -I INPUT -p {pv.proto} --dport {pv.port} -j ACCEPT`.",
                pv.rule,
            )
        ]
    if pv.verdict == "policy-drop":
        return [
            Finding(
                Severity.INFO,
                f"no rule accepts {name} and the input default is drop ({pv.rule}): new "
                "connections get through only via a conditional rule (e.g. a source allow-list)",
                f"If remote clients must reach it, add an accept rule for {pv.proto} dport "
                f"{pv.port}; then test from a client with `nc -vz <this-node> {pv.port}`.",
                pv.rule,
            )
        ]
    if pv.verdict == "restricted":
        return [
            Finding(
                Severity.INFO,
                f"{name} is dropped for some sources or interfaces ({pv.rule})",
                "Check that every client network is on the allowed side of that rule.",
                pv.rule,
            )
        ]
    return []


@check(
    id="network.firewall",
    category="network",
    title="Firewall rules",
    description="nftables/iptables input policies and rules, judged for the broker ports.",
    requires=Requirements(root=True),
    timeout_s=10,
    thresholds={"broker_ports": DEFAULT_BROKER_PORTS},
)
def network_firewall(ctx: Context) -> Result:
    """Save the ruleset; judge input policies and rules touching the broker ports.

    Verdicts:
    - pass: an input chain that accepts the broker ports
      [test_firewall_accepting_ruleset_passes]
    - pass: a drop policy or a source allow-list in front of broker ports (informs: a
      conditional rule may admit the clients)
      [test_firewall_policy_drop_and_source_restriction_are_info]
    - pass: no firewall rules loaded [test_firewall_empty_and_unreadable]
    - warn: a rule rejecting or dropping new connections to a broker port
      [test_firewall_drop_on_broker_port_warns]
    - skipped: neither nft nor iptables-save installed
      [test_firewall_skipped_without_tools]
    """
    if not (shutil.which("nft") or shutil.which("iptables-save")):
        return Result.skipped("neither `nft` nor `iptables-save` is installed")
    ports = read_broker_ports(ctx, FIREWALL_PORTS_KEY)
    return judge_firewall(read_firewall(ctx), ctx.thresholds, ports)
