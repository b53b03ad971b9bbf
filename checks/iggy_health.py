"""Iggy checks over its HTTP API: the broker's own health (`iggy.health`) and, when
enabled, Iggy's own diagnostic snapshot (`iggy.native_snapshot`).

The client is snapshot_agent.node.iggy_api; where the broker and its config are comes
from snapshot_agent.node.iggy_install. Credentials come only from files named in the
agent's config (`iggy.password_file`, `iggy.token_file`) and never reach a finding,
the data or a log.
"""

from __future__ import annotations

import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from typing import Any

from snapshot_agent.core.check import check
from snapshot_agent.core.context import Context
from snapshot_agent.core.grading import Band
from snapshot_agent.core.results import MAX_ROWS, Finding, Result, Severity
from snapshot_agent.core.tail import truncation_note
from snapshot_agent.core.units import format_duration, mib_or_gib
from snapshot_agent.node.iggy_api import (
    ApiClient,
    BearerToken,
    Credentials,
    Endpoint,
    Login,
    Member,
    MetricsReply,
    Reply,
    Stats,
    StatsReply,
    credentials_from,
    describe_body,
    endpoint_from_config,
    fetch_snapshot,
    get_metrics,
    get_stats,
    login,
    snapshot_members,
)
from snapshot_agent.node.iggy_config import locate
from snapshot_agent.node.iggy_install import IggyInstall, discover
from snapshot_agent.node.processes import read_link

#: GET /ping round trip, in milliseconds (loopback answers in about one).
PING_MS = Band("ping_ms", warn=250, fail=2000)

CONFIGURE = (
    "Give the agent an Iggy user that may read server stats (global permission "
    "read_servers): set `iggy.username` and `iggy.password_file` (a file holding only "
    "the password, mode 0600, owned by the agent's user), or `iggy.token_file` holding a "
    "personal access token. Create one with the iggy CLI as that user: "
    "`iggy --username USER pat create snapshot-agent` prints the token once; write it "
    "to the file. Credentials are never read from the command line or the config itself."
)


# -- where the API is and how to log in ---------------------------------------------------


def endpoint_of(ctx: Context, install: IggyInstall) -> tuple[Endpoint | None, str]:
    """The API endpoint (config iggy.http_url, else the broker's [http]), or why none."""
    keys = ("http.enabled", "http.address", "http.tls.enabled")
    settings = {key: install.setting(key) for key in keys}
    ca_file = None
    cert = install.setting("http.tls.cert_file")
    if isinstance(cert, str) and cert:
        cwd = install.broker.cwd if install.broker else ""
        ca_file = str(ctx.path(locate(ctx, install.config.path, cert, cwd)))
    endpoint, why = endpoint_from_config(ctx.config.iggy.http_url, settings, ca_file)
    if endpoint is None:
        where = install.config.overrides.get("http.enabled") or f"[http] of {install.config.path}"
        return None, (
            f"the broker's HTTP API is off ({where}: enabled = false); the HTTP checks "
            'need it. Enable [http] on a loopback address (`address = "127.0.0.1:3000"`) '
            "or point `iggy.http_url` at a broker that serves it"
        )
    return endpoint, why


def in_other_netns(ctx: Context, pid: int) -> bool:
    """True when the process's network namespace is known and not the agent's own."""
    theirs = read_link(ctx, f"/proc/{pid}/ns/net")
    ours = read_link(ctx, "/proc/self/ns/net")
    return bool(theirs and ours) and theirs != ours


def find_api(ctx: Context) -> tuple[IggyInstall, Endpoint] | Result:
    """The broker and its API endpoint, or the skipped result saying why there is none.

    A broker in another network namespace (a container) listens on its own loopback and
    wildcard: the agent's 127.0.0.1 reaches it only through a published port, so without
    `iggy.http_url` the API is not guessed at.
    """
    install = discover(ctx)
    if not install.found:
        return Result.skipped(install.skip_reason())
    broker = install.broker
    if broker and not ctx.config.iggy.http_url and in_other_netns(ctx, broker.pid):
        return Result.skipped(
            f"the broker (pid {broker.pid}) runs in another network namespace (a container); "
            "set iggy.http_url to an address the agent can reach (the port the container "
            "publishes on this node, or the container's own address), since its [http] "
            "address is not this node's"
        )
    endpoint, why = endpoint_of(ctx, install)
    if endpoint is None:
        return Result.skipped(why)
    return install, endpoint


def read_credentials(ctx: Context) -> Credentials:
    """The agent's configured Iggy credentials, read from their files."""
    iggy = ctx.config.iggy
    return credentials_from(iggy.username, iggy.password_file, iggy.token_file, ctx.path)


# -- iggy.health: reading -------------------------------------------------------------------


@dataclass
class HealthFacts:
    """What the API answered: ping, login, /stats, /metrics."""

    endpoint: Endpoint
    ping: Reply
    credentials: Credentials
    login: Login | None = None
    stats: StatsReply | None = None
    metrics: MetricsReply | None = None
    metrics_path: str = "/metrics"
    verified: bool | None = None  # TLS certificate verified (None: plain HTTP)
    verify_error: str = ""
    where: dict[str, Any] = field(default_factory=dict)  # install.describe()


def api_client(ctx: Context, endpoint: Endpoint, reserve_s: float) -> ApiClient:
    """A client whose every request ends `reserve_s` before the check's deadline."""
    return ApiClient(
        endpoint,
        timeout_s=float(ctx.thresholds["request_timeout_s"]),
        deadline=ctx.deadline - reserve_s,
    )


def read_health(ctx: Context, install: IggyInstall, client: ApiClient) -> HealthFacts:
    """Ping, log in when credentials are configured, read /stats and /metrics."""
    endpoint = client.endpoint
    facts = HealthFacts(endpoint, client.request("GET", "/ping"), read_credentials(ctx))
    facts.where = install.describe()
    if facts.ping.ok:
        token = _log_in(client, facts)
        facts.stats = get_stats(client, token)
        if install.setting("http.metrics.enabled") is not False:
            path = install.setting("http.metrics.endpoint", "/metrics")
            facts.metrics_path = (
                path if isinstance(path, str) and path.startswith("/") else "/metrics"
            )
            facts.metrics = get_metrics(client, facts.metrics_path, token)
    facts.verified, facts.verify_error = client.verified, client.verify_error
    return facts


def _log_in(client: ApiClient, facts: HealthFacts) -> BearerToken | None:
    """The bearer token when usable credentials are configured and accepted."""
    if not facts.credentials.usable:
        return None
    facts.login = login(client, facts.credentials)
    return facts.login.token


# -- iggy.health: judging -------------------------------------------------------------------


def _api(facts: HealthFacts) -> str:
    """'the Iggy HTTP API at http://127.0.0.1:3000'."""
    return f"the Iggy HTTP API at {facts.endpoint.base_url}"


def _ping_rule(facts: HealthFacts, thresholds: dict[str, Any]) -> Finding | None:
    """FAIL when /ping gets no answer; WARN or FAIL when it is slow (PING_MS)."""
    ping = facts.ping
    if ping.status is None:
        what = "does not answer /ping in time" if ping.timed_out else "is unreachable"
        return Finding(
            Severity.FAIL,
            f"{_api(facts)} {what}: {ping.error}",
            "Is the broker running (`systemctl status iggy-server`, `journalctl -u "
            "iggy-server -b`)? Does [http] address in its config (or IGGY_HTTP_ADDRESS) "
            f"match {facts.endpoint.base_url} (found from {facts.endpoint.source})? Set "
            "`iggy.http_url` in the agent's config when the API listens elsewhere. A broker "
            "that accepts connections but does not answer is stuck: take a thread dump "
            "(`gdb -p PID -batch -ex 'thread apply all bt'`) before restarting it.",
            facts.endpoint.base_url,
        )
    if not ping.ok or ping.body.strip() != b"pong":
        return Finding(
            Severity.WARN,
            f"{_api(facts)} answers /ping with HTTP {ping.status} "
            f"{ping.body[:40]!r} instead of 'pong': is this an Iggy broker?",
            "Check that `iggy.http_url` (or the broker's [http] address) points at the Iggy "
            "server and not at a proxy or another service.",
            facts.endpoint.base_url,
        )
    severity = PING_MS.grade(ping.elapsed_ms, thresholds)
    if severity is None:
        return None
    return Finding(
        severity,
        f"{_api(facts)} took {ping.elapsed_ms:.0f} ms to answer /ping "
        f"(limit {PING_MS.limit(severity, thresholds):g} ms)",
        "A ping does no work: a slow one means the broker's HTTP shard is busy or starved "
        "(CPU, memory pressure, a blocked runtime). See the cpu.usage, memory.usage and "
        "iggy.process checks, and the broker's log for stalls.",
        facts.endpoint.base_url,
    )


def _credential_rules(facts: HealthFacts) -> list[Finding]:
    """WARN for configured credentials that cannot be used or are exposed."""
    creds = facts.credentials
    findings = [
        Finding(Severity.WARN, f"Iggy credentials unusable: {problem}", CONFIGURE, "iggy")
        for problem in creds.problems
    ]
    if creds.secret is not None and creds.secret.world_readable and not creds.secret.problem:
        findings.append(
            Finding(
                Severity.WARN,
                f"the Iggy {_secret_word(creds)} file {creds.secret.path} is readable by every "
                "user on the node",
                f"`chmod 600 {creds.secret.path}` and make the agent's user its owner; anyone "
                "who reads it can log in to the broker as that user.",
                creds.secret.path,
            )
        )
    return findings


def _secret_word(creds: Credentials) -> str:
    """'personal access token' or 'password'."""
    return "personal access token" if creds.kind == "token" else "password"


def _login_rule(facts: HealthFacts) -> Finding | None:
    """WARN when the broker rejects the agent's credentials or answers the login oddly."""
    result = facts.login
    if result is None or result.outcome == "ok":
        return None
    what = (
        f"user {facts.credentials.username!r}"
        if result.method == "password"
        else "the personal access token"
    )
    if result.outcome == "refused":
        return Finding(
            Severity.WARN,
            f"{result.detail}: logged in as nobody, only public endpoints were read",
            "Point `iggy.http_url` at an https:// address of the broker (enable [http.tls]), "
            "or run the agent on the broker's node and use its loopback address; a password "
            "or token sent over plain HTTP can be read by anyone on the path.",
            facts.endpoint.base_url,
        )
    if result.outcome == "rejected":
        return Finding(
            Severity.WARN,
            f"{_api(facts)} rejected the login of {what} (HTTP {result.reply.status}: "
            f"{result.detail}); broker stats were not read",
            "The password or token in the configured file is wrong, expired or for another "
            "broker, or the user is inactive. " + CONFIGURE,
            facts.endpoint.base_url,
        )
    return Finding(
        Severity.WARN,
        f"logging in to {_api(facts)} as {what} failed: {result.detail}",
        "Check that the URL is the Iggy server itself (no proxy rewriting answers) and "
        "look at the broker's log around this time.",
        facts.endpoint.base_url,
    )


def _stats_rule(facts: HealthFacts) -> Finding | None:
    """Why /stats could not be read (INFO when only credentials are missing)."""
    got = facts.stats
    if got is None or got.stats is not None:
        return None
    status, reply = got.reply.status, got.reply
    if facts.login is not None and facts.login.outcome != "ok":
        return None  # the login finding already says why
    if status == 401 and facts.login is None:
        has = (
            "has no credentials configured"
            if facts.credentials.unconfigured
            else "could not use the configured ones"
        )
        return Finding(
            Severity.INFO,
            f"{_api(facts)} needs a login for /stats (Iggy 0.7+) and the agent {has}: "
            "only /ping was checked",
            CONFIGURE,
            "iggy",
        )
    if status in (401, 403):
        why = (
            "lacks the read_servers permission"
            if status == 403
            else "was logged in, but its token was refused"
        )
        return Finding(
            Severity.WARN,
            f"{_api(facts)} refused /stats with HTTP {status}: the agent's Iggy user {why}",
            "Grant the user the global read_servers permission (`iggy user permissions "
            "USER` shows them; recreate it with `-g r_srv`), or use a token of a user "
            "that has it.",
            facts.endpoint.base_url,
        )
    return Finding(
        Severity.WARN,
        f"{_api(facts)} gave no usable /stats: {_stats_problem(got, reply)}",
        "The broker answered, but not with its stats. A slow /stats means a busy broker "
        "(it walks every partition); an HTML page or a cut-off answer means something "
        "between the agent and the broker (a proxy, a crashing worker): point "
        "`iggy.http_url` at the broker itself and read its log.",
        facts.endpoint.base_url,
    )


def _stats_problem(got: StatsReply, reply: Reply) -> str:
    """What was wrong with the /stats answer, in words."""
    if reply.timed_out:
        return f"no whole answer within {reply.elapsed_ms / 1000:.1f} s ({reply.error})"
    if reply.status is not None and not reply.ok and not reply.error:
        return f"HTTP {reply.status} with {describe_body(reply.body, reply.content_type)}"
    return got.problem


def _field_rule(stats: Stats) -> Finding | None:
    """WARN naming the /stats fields whose values are not what Iggy sends."""
    if not stats.malformed and not stats.missing:
        return None
    parts = []
    if stats.malformed:
        parts.append("unreadable " + "; ".join(stats.malformed[:5]))
    if stats.missing:
        parts.append("missing " + ", ".join(stats.missing[:8]))
    severity = Severity.WARN if stats.malformed else Severity.INFO
    return Finding(
        severity,
        "the broker's /stats has " + "; ".join(parts),
        "Those values are left out of the report. A newer or older Iggy may name fields "
        "differently; garbage values point at a proxy or a broken build answering.",
        "/stats",
    )


def free_disk_pct(stats: Stats) -> float | None:
    """Free space in percent of the data filesystem (None before 0.8.0 or when unknown)."""
    if stats.free_disk_bytes is None or not stats.total_disk_bytes:
        return None
    return stats.free_disk_bytes / stats.total_disk_bytes * 100


def _metrics_rule(facts: HealthFacts) -> Finding | None:
    """INFO: /metrics is unreachable or needs a token (never a verdict on the broker)."""
    got = facts.metrics
    if got is None or got.reply.ok:
        return None
    reply = got.reply
    if reply.status == 404:
        why = "not served (404): [http.metrics] is disabled or on another path"
    elif reply.status == 401:
        why = "refused without a login (main-branch brokers authenticate the scrape)"
    else:
        why = reply.error or f"HTTP {reply.status}"
    return Finding(
        Severity.INFO,
        f"Prometheus metrics at {facts.endpoint.base_url}{facts.metrics_path}: {why}",
        "Scrape them with credentials or enable `[http.metrics] enabled = true` if you "
        "monitor the broker with Prometheus.",
        facts.metrics_path,
    )


def _tls_note(facts: HealthFacts) -> Finding | None:
    """INFO: the TLS certificate could not be verified (loopback: went on anyway)."""
    if facts.verified is not False:
        return None
    return Finding(
        Severity.INFO,
        f"the broker's TLS certificate was not verified ({facts.verify_error}); the agent "
        "went on because the API is on this node's loopback",
        "The tls check judges the certificate itself; `iggy.http_url` with the host name "
        "the certificate names lets the agent verify it.",
        facts.endpoint.base_url,
    )


def stats_data(stats: Stats) -> dict[str, Any]:
    """The stats for the report's Iggy section (stable keys)."""
    rows = sorted(stats.cache, key=lambda r: (r.hit_ratio is None, r.hit_ratio or 0.0))
    return {
        "version": stats.version,
        "uptime_s": stats.uptime_s,
        "streams": stats.streams,
        "topics": stats.topics,
        "partitions": stats.partitions,
        "segments": stats.segments,
        "messages": stats.messages,
        "messages_size_bytes": stats.messages_size_bytes,
        "clients": stats.clients,
        "consumer_groups": stats.consumer_groups,
        "threads": stats.threads,
        "free_disk_bytes": stats.free_disk_bytes,
        "total_disk_bytes": stats.total_disk_bytes,
        "free_disk_pct": _rounded(free_disk_pct(stats)),
        "memory_usage_bytes": stats.memory_usage_bytes,
        "available_memory_bytes": stats.available_memory_bytes,
        "total_memory_bytes": stats.total_memory_bytes,
        "cpu_usage": stats.cpu_usage,
        "process_id": stats.process_id,
        "hostname": stats.hostname,
        "cache_hit_ratios": [
            {
                "partition": r.partition,
                "hits": r.hits,
                "misses": r.misses,
                "hit_ratio": _rounded(r.hit_ratio, 3),
            }
            for r in rows[:MAX_ROWS]
        ],
        "cache_rows_left_out": max(0, len(rows) - MAX_ROWS),
    }


def _rounded(value: float | None, digits: int = 1) -> float | None:
    """round() that keeps None."""
    return None if value is None else round(value, digits)


def health_data(facts: HealthFacts) -> dict[str, Any]:
    """The check's data: where, how, and the stats when read."""
    stats = facts.stats.stats if facts.stats else None
    data: dict[str, Any] = {
        "url": facts.endpoint.base_url,
        "url_source": facts.endpoint.source,
        "tls": facts.endpoint.tls,
        "certificate_verified": facts.verified,
        "ping_ms": facts.ping.elapsed_ms if facts.ping.ok else None,
        "login": _login_word(facts),
        "stats_read": stats is not None,
        "metrics": _metrics_data(facts),
        "install": facts.where,
    }
    if stats is not None:
        data |= stats_data(stats)
    return data


def _login_word(facts: HealthFacts) -> str:
    """'password ok', 'token rejected', 'none configured'..."""
    if facts.login is None:
        return "none configured" if facts.credentials.unconfigured else "not usable"
    return f"{facts.login.method} {facts.login.outcome}"


def _metrics_data(facts: HealthFacts) -> dict[str, Any] | None:
    """Reachability and the picked series of /metrics."""
    got = facts.metrics
    if got is None:
        return None
    return {
        "path": facts.metrics_path,
        "reachable": got.reply.ok,
        "status": got.reply.status,
        "samples": got.samples,
        "series": got.series,
    }


def _summary(facts: HealthFacts) -> str:
    """'Iggy 0.8.0 up 3 d 4 h: 2 streams, 5 topics, 40 partitions, 1234567 messages; ...'."""
    ping = f"ping {facts.ping.elapsed_ms:g} ms"
    stats = facts.stats.stats if facts.stats else None
    if stats is None:
        return f"{_api(facts)} answers ({ping}); stats not read"
    up = f" up {format_duration(stats.uptime_s)}" if stats.uptime_s is not None else ""
    counts = ", ".join(
        f"{value} {name}"
        for name, value in (
            ("streams", stats.streams),
            ("topics", stats.topics),
            ("partitions", stats.partitions),
            ("messages", stats.messages),
        )
        if value is not None
    )
    disk = _disk_words(stats)
    return f"Iggy {stats.version or '(version unknown)'}{up}: {counts}; {disk}{ping}"


def _disk_words(stats: Stats) -> str:
    """'disk 20.0 GiB free of 1000.0 GiB (2.0%); ' or '' before 0.8.0."""
    pct = free_disk_pct(stats)
    if pct is None or stats.free_disk_bytes is None or stats.total_disk_bytes is None:
        return ""
    free, total = mib_or_gib(stats.free_disk_bytes), mib_or_gib(stats.total_disk_bytes)
    return f"disk {free} free of {total} ({pct:.1f}%); "


def judge_health(facts: HealthFacts, thresholds: dict[str, Any]) -> Result:
    """Compose the rules: ping, credentials, login, stats, fields, metrics, TLS.

    Free disk is data only: disk.usage and iggy.data_dir judge that filesystem.
    """
    ping = _ping_rule(facts, thresholds)
    if facts.ping.status is None or not facts.ping.ok:
        return Result.from_findings([ping] if ping else [], ok="", data=health_data(facts))
    findings = [ping, *_credential_rules(facts), _login_rule(facts), _stats_rule(facts)]
    stats = facts.stats.stats if facts.stats else None
    if stats is not None:
        findings.append(_field_rule(stats))
    findings += [_metrics_rule(facts), _tls_note(facts)]
    kept = [f for f in findings if f is not None]
    return Result.from_findings(kept, ok=_summary(facts), data=health_data(facts))


@check(
    id="iggy.health",
    category="iggy",
    title="Iggy broker health (HTTP API)",
    description="Ping, login and /stats of the broker's HTTP API: version, uptime, streams, "
    "messages, clients, cache hit ratios, disk free as the broker sees it (shown, not "
    "judged); /metrics.",
    timeout_s=30,
    bands=(PING_MS,),
    thresholds={"request_timeout_s": 5.0},
)
def iggy_health(ctx: Context) -> Result:
    """Ask the broker how it is over its HTTP API.

    Verdicts:
    - pass: a healthy 0.8.0 broker, password login, stats and metrics read
      [test_health_passes_on_a_healthy_broker]
    - pass: 0.5 and 0.6 brokers without credentials (their /stats is public)
      [test_health_reads_public_stats_of_old_brokers]
    - pass: a main-branch broker with a personal access token (metrics need it too)
      [test_health_main_branch_with_a_token]
    - pass: no credentials configured on 0.8.0: ping only, saying how to configure them
      [test_health_without_credentials_pings_only]
    - pass: byte sizes sent as plain numbers [test_health_reads_byte_sizes_sent_as_numbers]
    - pass: TLS on loopback with an unverifiable certificate (noted)
      [test_health_over_tls_says_whether_the_certificate_was_verified]
    - skipped: no Iggy broker, config or data dir on the node
      [test_health_skipped_without_iggy]
    - skipped: the broker's [http] transport is disabled
      [test_health_skipped_when_http_is_disabled]
    - fail: the API is down (connection refused) [test_health_fails_when_the_api_is_down]
    - fail: /ping does not answer within the request timeout
      [test_health_fails_when_ping_hangs]
    - warn: /ping answers slower than 250 ms [test_health_warns_on_a_slow_ping]
    - warn: the broker rejects the login (400 invalid_credentials, 401)
      [test_health_warns_when_login_is_rejected]
    - warn: the password file is missing or readable by everyone
      [test_health_warns_about_credential_files]
    - warn: /stats is malformed JSON, an HTML page, cut off, slow or full of garbage
      [test_health_names_what_was_wrong_with_stats]
    - warn: the user lacks read_servers (403) [test_health_warns_when_stats_is_forbidden]
    - pass: the broker sees 2% free disk: shown, not judged (disk.usage and iggy.data_dir
      judge that filesystem) [test_health_shows_free_disk_without_judging_it]
    - warn: credentials configured for a plain-http API off loopback: not sent, public
      endpoints still read [test_health_refuses_clear_text_credentials_off_loopback]
    - skipped: the broker runs in another network namespace and iggy.http_url is unset
      [test_health_skipped_for_a_broker_in_another_network_namespace]
    """
    found = find_api(ctx)
    if isinstance(found, Result):
        return found
    install, endpoint = found
    facts = read_health(ctx, install, api_client(ctx, endpoint, reserve_s=1.0))
    return judge_health(facts, ctx.thresholds)


# -- iggy.native_snapshot ----------------------------------------------------------------------


@dataclass
class NativeFacts:
    """Iggy's own snapshot: the request's reply, and what was kept of the zip."""

    reply: Reply
    kept: list[dict[str, Any]] = field(default_factory=list)  # artifact rows
    skipped: list[dict[str, str]] = field(default_factory=list)
    problem: str = ""  # why the zip could not be read


def _collect_members(ctx: Context, path: str, facts: NativeFacts) -> None:
    """Save each text member of the zip at `path` as native/<name> (a bounded tail)."""
    keep = min(ctx.artifact_cap, int(ctx.thresholds["max_member_bytes"]))
    try:
        with zipfile.ZipFile(path) as zf:
            members = snapshot_members(
                zf,
                max_members=int(ctx.thresholds["max_members"]),
                keep=keep,
                read_limit=int(ctx.thresholds["max_member_read_bytes"]),
                deadline=ctx.deadline - 1.0,
            )
            for item in members:
                if isinstance(item, Member):
                    facts.kept.append(_save_member(ctx, item))
                else:
                    facts.skipped.append({"member": item.name, "reason": item.reason})
    except (zipfile.BadZipFile, OSError) as exc:
        facts.problem = f"not a readable zip ({exc})"[:200]


def _save_member(ctx: Context, member: Member) -> dict[str, Any]:
    """Write one member's tail as an artifact (the pipeline redacts it on its way out)."""
    tail = member.tail
    note = truncation_note(tail.dropped, tail.kept) if tail.dropped else b""
    info = ctx.artifact(f"native/{member.name}", note + tail.getvalue())
    return {
        "member": member.name,
        "artifact": info.name,
        "bytes_read": member.read,
        "bytes_kept": tail.kept,
        "complete": member.complete and not tail.dropped,
    }


def read_native(ctx: Context, client: ApiClient, token: BearerToken) -> NativeFacts:
    """POST /snapshot into a temporary file, then keep its text members."""
    cap = int(ctx.thresholds["max_zip_bytes"])
    with tempfile.TemporaryDirectory(prefix="iggy-snapshot-") as tmp:
        path = f"{tmp}/snapshot.zip"
        with open(path, "wb") as sink:
            reply = fetch_snapshot(client, token, sink, cap)
        facts = NativeFacts(reply)
        if reply.ok:
            _collect_members(ctx, path, facts)
    return facts


def judge_native(facts: NativeFacts, endpoint: Endpoint, thresholds: dict[str, Any]) -> Result:
    """WARN when the snapshot could not be fetched or read; pass listing what was kept."""
    reply = facts.reply
    data = {"url": endpoint.base_url, "zip_bytes": reply.size, "members": facts.kept}
    data["left_out"] = facts.skipped
    if not reply.ok:
        if reply.oversize:
            why = f"larger than max_zip_bytes ({int(thresholds['max_zip_bytes'])} bytes)"
        else:
            why = reply.error or reply.api_error() or f"HTTP {reply.status}"
        return Result.from_findings(
            [_native_warn(endpoint, f"POST /snapshot failed: {why}")], ok="", data=data
        )
    if facts.problem:
        return Result.from_findings(
            [
                _native_warn(
                    endpoint, f"POST /snapshot answered {reply.size} bytes that are {facts.problem}"
                )
            ],
            ok="",
            data=data,
        )
    ok = (
        f"Iggy's own snapshot ({reply.size} bytes zipped): kept "
        f"{', '.join(m['member'] for m in facts.kept) or 'no text members'}"
    )
    return Result.from_findings([], ok=ok, data=data)


def _native_warn(endpoint: Endpoint, message: str) -> Finding:
    """A WARN about Iggy's snapshot with what to try."""
    return Finding(
        Severity.WARN,
        message,
        "Iggy builds its snapshot in memory by running shell tools (ls, ps, top) and "
        "reading every log file; a large log directory or a missing tool makes it fail. "
        "Try `iggy snapshot` by hand, or set `iggy.native_snapshot: false` to stop asking.",
        endpoint.base_url,
    )


@check(
    id="iggy.native_snapshot",
    category="iggy",
    title="Iggy's own diagnostic snapshot",
    description="Fetches Iggy's POST /snapshot zip (off unless iggy.native_snapshot is true) "
    "and keeps its text members under raw/.",
    timeout_s=60,
    thresholds={
        "request_timeout_s": 45.0,
        "max_zip_bytes": 256 * 1024 * 1024,
        "max_members": 16,
        "max_member_bytes": 8 * 1024 * 1024,
        "max_member_read_bytes": 512 * 1024 * 1024,
    },
)
def iggy_native_snapshot(ctx: Context) -> Result:
    """Add Iggy's own snapshot (its ls, ps, top, logs and config) to the archive.

    Verdicts:
    - pass: a 0.8.0 broker answers its zip; each text member is kept under raw/
      [test_native_snapshot_keeps_text_members]
    - skipped: off (the default) [test_native_snapshot_is_off_by_default]
    - skipped: no credentials configured [test_native_snapshot_needs_credentials]
    - warn: the zip is larger than max_zip_bytes, or not a zip
      [test_native_snapshot_warns_on_oversize_and_garbage]
    - warn: the login is rejected [test_native_snapshot_warns_when_login_is_rejected]
    """
    if not ctx.config.iggy.native_snapshot:
        return Result.skipped(
            "off: set `iggy.native_snapshot: true` in the agent's config to add Iggy's own "
            "POST /snapshot zip (ls, ps, top, its logs and config) under raw/"
        )
    found = find_api(ctx)
    if isinstance(found, Result):
        return found
    endpoint = found[1]
    creds = read_credentials(ctx)
    if not creds.usable:
        reason = "; ".join(creds.problems) or "no Iggy credentials configured"
        return Result.skipped(f"Iggy's snapshot needs a login: {reason}. {CONFIGURE}")
    client = api_client(ctx, endpoint, reserve_s=2.0)
    started = time.monotonic()
    result = login(client, creds)
    if result.token is None:
        message = f"logging in to {endpoint.base_url} for Iggy's snapshot failed: {result.detail}"
        return Result.from_findings(
            [Finding(Severity.WARN, message, CONFIGURE, endpoint.base_url)],
            ok="",
            data={"url": endpoint.base_url, "login": f"{result.method} {result.outcome}"},
        )
    facts = read_native(ctx, client, result.token)
    verdict = judge_native(facts, endpoint, ctx.thresholds)
    verdict.data["seconds"] = round(time.monotonic() - started, 2)
    return verdict
