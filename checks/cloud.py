"""Where the node runs: cloud instance metadata (AWS, GCP) and virtualization / cgroup limits."""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from snapshot_agent.core.check import check
from snapshot_agent.core.context import Context
from snapshot_agent.core.grading import Band
from snapshot_agent.core.results import Finding, Result, Severity, Status
from snapshot_agent.core.units import mib_or_gib
from snapshot_agent.node.processes import find_brokers
from snapshot_agent.node.procfs import parse_cpu_list, parse_kv, read_mem_total
from snapshot_agent.node.system import placement, read_system

DMI_FIELDS = (
    "sys_vendor",
    "product_name",
    "product_version",
    "bios_vendor",
    "bios_version",
    "board_asset_tag",
    "chassis_asset_tag",
)
MAX_BODY = 64 * 1024  # metadata answers are tiny; never read more
AWS_TOKEN_TTL_S = 60  # the token lives only as long as this check
AWS_ITEMS = (
    "instance-id",
    "instance-type",
    "placement/availability-zone",
    "placement/region",
    "ami-id",
    "instance-life-cycle",
    "events/maintenance/scheduled",
    "spot/instance-action",
)
GCP_ITEMS = (
    "id",
    "machine-type",
    "zone",
    "scheduling/preemptible",
    "maintenance-event",
    "preempted",
)
AZURE_ASSET_TAG = "7783-7084-3265-9085-8269-3286-77"


# -- system.cloud -------------------------------------------------------------------


def read_dmi(ctx: Context) -> dict[str, str]:
    """The DMI (SMBIOS) identity strings the kernel exposes; absent ones are left out."""
    out: dict[str, str] = {}
    for name in DMI_FIELDS:
        value = ctx.read_optional(f"/sys/class/dmi/id/{name}", max_bytes=256)
        if value is not None and value.strip():
            out[name] = value.strip()
    uuid = ctx.read_optional("/sys/hypervisor/uuid", max_bytes=64)
    if uuid and uuid.strip():
        out["hypervisor_uuid"] = uuid.strip()  # Xen-based EC2 instances: starts with ec2
    return out


def detect_cloud(dmi: dict[str, str]) -> str:
    """aws, gcp, azure, oracle, ... or '' when DMI names no cloud we know."""
    low = {k: v.lower() for k, v in dmi.items()}
    vendorish = " ".join(
        low.get(k, "")
        for k in ("sys_vendor", "bios_vendor", "product_version", "bios_version", "product_name")
    )
    if "amazon" in vendorish or low.get("hypervisor_uuid", "").startswith("ec2"):
        return "aws"
    if "google" in vendorish:
        return "gcp"
    if low.get("chassis_asset_tag") == AZURE_ASSET_TAG:
        return "azure"
    if low.get("chassis_asset_tag") == "oraclecloud.com":
        return "oracle"
    for needle, name in (
        ("alibaba", "alibaba"),
        ("digitalocean", "digitalocean"),
        ("hetzner", "hetzner"),
        ("openstack", "openstack"),
    ):
        if needle in vendorish:
            return name
    return ""


@dataclass
class HttpReply:
    """One metadata request's outcome."""

    status: int | None  # None: no HTTP answer at all (timeout, refused, unreachable)
    body: str = ""
    error: str = ""


def http_request(
    url: str, *, headers: dict[str, str], timeout: float, method: str = "GET"
) -> HttpReply:
    """One small HTTP request; never through a proxy (metadata is link-local)."""
    req = urllib.request.Request(
        url, data=b"" if method == "PUT" else None, headers=headers, method=method
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as resp:
            return HttpReply(resp.status, resp.read(MAX_BODY).decode("utf-8", "replace"))
    except urllib.error.HTTPError as exc:
        exc.close()
        return HttpReply(exc.code, error=f"HTTP {exc.code} {exc.reason}")
    except urllib.error.URLError as exc:
        return HttpReply(None, error=str(exc.reason))
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return HttpReply(None, error=str(exc) or type(exc).__name__)


@dataclass
class CloudFacts:
    """What DMI and (on AWS/GCP) the metadata service say about this instance."""

    provider: str  # aws, gcp, azure, ... or ''
    dmi: dict[str, str] = field(default_factory=dict)
    endpoint: str = ""
    queried: bool = False
    unreachable: str = ""  # why the metadata service did not answer
    metadata: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # item -> why


def query_aws(ctx: Context, facts: CloudFacts, base: str, timeout: float) -> None:
    """IMDSv2: a session token by PUT, then GETs carrying it."""
    token = http_request(
        f"{base}/latest/api/token",
        method="PUT",
        headers={"X-aws-ec2-metadata-token-ttl-seconds": str(AWS_TOKEN_TTL_S)},
        timeout=timeout,
    )
    if token.status != 200 or not token.body.strip():
        facts.unreachable = "the IMDSv2 token request (PUT /latest/api/token) got " + (
            token.error or f"HTTP {token.status} with an empty token"
        )
        return
    headers = {"X-aws-ec2-metadata-token": token.body.strip()}
    _get_items(
        ctx, facts, [(i, f"{base}/latest/meta-data/{i}") for i in AWS_ITEMS], headers, timeout
    )


def query_gcp(ctx: Context, facts: CloudFacts, base: str, timeout: float) -> None:
    """GCP metadata server: GETs with the Metadata-Flavor header."""
    items = [(i, f"{base}/computeMetadata/v1/instance/{i}") for i in GCP_ITEMS]
    _get_items(ctx, facts, items, {"Metadata-Flavor": "Google"}, timeout)


def _get_items(
    ctx: Context,
    facts: CloudFacts,
    items: list[tuple[str, str]],
    headers: dict[str, str],
    timeout: float,
) -> None:
    """GET each item; stop at the first request without an answer (no stacking timeouts)."""
    for name, url in items:
        if ctx.remaining() < timeout + 0.5:
            facts.missing[name] = "not asked: the check ran out of time"
            continue
        reply = http_request(url, headers=headers, timeout=timeout)
        if reply.status == 200:
            facts.metadata[name] = reply.body.strip()
        else:
            facts.missing[name] = reply.error or f"HTTP {reply.status}"
            if reply.status is None:
                if not facts.metadata:
                    facts.unreachable = f"GET {url} got {facts.missing[name]}"
                break


def read_cloud(ctx: Context) -> CloudFacts:
    """DMI first; the metadata service only when DMI says AWS or GCP."""
    cfg = ctx.config.checks.cloud
    dmi = read_dmi(ctx)
    facts = CloudFacts(detect_cloud(dmi), dmi)
    if facts.provider == "aws":
        facts.endpoint, facts.queried = cfg.aws_url.rstrip("/"), True
        query_aws(ctx, facts, facts.endpoint, cfg.timeout_s)
    elif facts.provider == "gcp":
        facts.endpoint, facts.queried = cfg.gcp_url.rstrip("/"), True
        query_gcp(ctx, facts, facts.endpoint, cfg.timeout_s)
    if facts.queried and not facts.metadata and not facts.unreachable:
        first = next(iter(facts.missing.items()), ("", "no answer"))
        facts.unreachable = f"no item could be read ({first[0]}: {first[1]})"
    return facts


def _dmi_words(dmi: dict[str, str]) -> str:
    """'DMI: QEMU Standard PC (i440FX + PIIX, 1996)' or a note that there is no DMI."""
    words = [dmi[k] for k in ("sys_vendor", "product_name") if k in dmi]
    return "DMI: " + " ".join(words) if words else "no DMI data in /sys/class/dmi/id"


def _aws_events(facts: CloudFacts) -> list[Finding]:
    """Scheduled maintenance and spot interruption notices from IMDS."""
    findings: list[Finding] = []
    raw = facts.metadata.get("events/maintenance/scheduled", "")
    try:
        events = json.loads(raw) if raw else []
    except ValueError:
        events = []
    for event in events if isinstance(events, list) else []:
        if not isinstance(event, dict):
            continue
        state = str(event.get("State", ""))
        if state.lower() in ("completed", "canceled", "cancelled"):
            continue
        findings.append(
            Finding(
                Severity.WARN,
                f"AWS scheduled {event.get('Code', 'maintenance')} for this instance between "
                f"{event.get('NotBefore', '?')} and {event.get('NotAfter', '?')} "
                f"({event.get('Description', '')})".rstrip(" ()"),
                "Plan it before AWS does it for you: move partition leadership / drain "
                "clients, then stop-start or reboot the instance in a maintenance window "
                "(`aws ec2 describe-instance-status --include-all-instances "
                f"--instance-ids {facts.metadata.get('instance-id', '<id>')}`).",
                "events/maintenance/scheduled",
            )
        )
    action = facts.metadata.get("spot/instance-action", "")
    if action:
        try:
            parsed = json.loads(action)
        except ValueError:
            parsed = {}
        what = parsed.get("action", "interrupt") if isinstance(parsed, dict) else "interrupt"
        when = parsed.get("time", "soon") if isinstance(parsed, dict) else "soon"
        findings.append(
            Finding(
                Severity.FAIL,
                f"AWS will {what} this spot instance at {when}",
                "The node goes away within minutes: stop sending it traffic and make sure "
                "its partitions are replicated or flushed (`fsync`) elsewhere now.",
                "spot/instance-action",
            )
        )
    elif facts.metadata.get("instance-life-cycle") == "spot":
        findings.append(
            Finding(
                Severity.INFO,
                "this is a spot instance: AWS may reclaim it with two minutes' notice",
                "Run brokers holding unreplicated data on on-demand or reserved instances.",
                "instance-life-cycle",
            )
        )
    return findings


def _gcp_events(facts: CloudFacts) -> list[Finding]:
    """Host maintenance and preemption notices from the GCP metadata server."""
    findings: list[Finding] = []
    event = facts.metadata.get("maintenance-event", "NONE").upper()
    if event and event != "NONE":
        findings.append(
            Finding(
                Severity.WARN,
                f"GCP host maintenance is under way or imminent ({event})",
                "Live migration pauses the VM briefly, a terminate stops it: expect latency "
                "spikes or a restart; drain clients if the event is TERMINATE_ON_HOST_"
                "MAINTENANCE (`gcloud compute instances describe <name> --format="
                "'value(scheduling)'`).",
                "maintenance-event",
            )
        )
    if facts.metadata.get("preempted", "").upper() == "TRUE":
        findings.append(
            Finding(
                Severity.FAIL,
                "GCP is preempting this instance now",
                "The node is about to stop: move its traffic and data elsewhere now.",
                "preempted",
            )
        )
    elif facts.metadata.get("scheduling/preemptible", "").upper() == "TRUE":
        findings.append(
            Finding(
                Severity.INFO,
                "this is a preemptible (spot) VM: GCP may stop it at any time",
                "Run brokers holding unreplicated data on standard VMs.",
                "scheduling/preemptible",
            )
        )
    return findings


def _unreachable(facts: CloudFacts) -> Finding:
    """The metadata service did not answer on a node whose DMI names the cloud."""
    if facts.provider == "aws":
        remedy = (
            "In a container the IMDSv2 token reply needs two network hops: raise the "
            "hop limit (`aws ec2 modify-instance-metadata-options --instance-id <id> "
            "--http-put-response-hop-limit 2 --http-endpoint enabled`); also check that "
            "IMDS is enabled and that no firewall rule drops 169.254.169.254. Without it "
            "the snapshot cannot see the instance type, AZ or scheduled maintenance."
        )
    else:
        remedy = (
            "Check that metadata.google.internal resolves (it is 169.254.169.254, normally "
            "via /etc/hosts or the VPC resolver) and that no egress rule or network "
            "namespace blocks it; set checks.cloud.gcp_url if it must be reached otherwise."
        )
    name = {"aws": "AWS", "gcp": "GCP"}[facts.provider]
    return Finding(
        Severity.WARN,
        f"DMI says {name} but its metadata service ({facts.endpoint}) did not answer: "
        f"{facts.unreachable}",
        remedy,
        facts.endpoint,
    )


def judge_cloud(facts: CloudFacts, thresholds: dict[str, Any]) -> Result:
    """Instance identity; maintenance, interruption and an unreachable metadata service."""
    data: dict[str, Any] = {"provider": facts.provider or "none", "dmi": facts.dmi}
    if not facts.queried:
        where = _dmi_words(facts.dmi)
        if facts.provider:
            reason = f"on {facts.provider} ({where}); only AWS and GCP metadata are queried"
        else:
            reason = f"not on AWS or GCP ({where}); no metadata service was contacted"
        return Result(Status.SKIPPED, reason, data=data)
    data |= {"endpoint": facts.endpoint, "metadata": facts.metadata, "missing": facts.missing}
    if facts.unreachable:
        return Result.from_findings([_unreachable(facts)], ok="", data=data)
    md = facts.metadata
    if facts.provider == "aws":
        findings = _aws_events(facts)
        ident = [
            md.get("instance-id", "?"),
            md.get("instance-type", "?"),
            md.get("placement/availability-zone", "?"),
        ]
        ok = "AWS " + ", ".join(ident)
        data["instance"] = {
            "id": md.get("instance-id", ""),
            "type": md.get("instance-type", ""),
            "zone": md.get("placement/availability-zone", ""),
            "region": md.get("placement/region", ""),
        }
    else:
        findings = _gcp_events(facts)
        mtype = md.get("machine-type", "?").rsplit("/", 1)[-1]
        zone = md.get("zone", "?").rsplit("/", 1)[-1]
        ok = f"GCP {md.get('id', '?')}, {mtype}, {zone}"
        data["instance"] = {"id": md.get("id", ""), "type": mtype, "zone": zone}
    return Result.from_findings(findings, ok=ok, data=data)


@check(
    id="system.cloud",
    category="system",
    title="Cloud instance",
    description="Cloud from DMI; on AWS/GCP the instance metadata, maintenance and spot notices.",
    timeout_s=10,
)
def system_cloud(ctx: Context) -> Result:
    """Which cloud instance this is, asked only where DMI says AWS or GCP."""
    if not ctx.config.checks.cloud.enabled:
        return Result.skipped("disabled in the config (checks.cloud.enabled: false)")
    return judge_cloud(read_cloud(ctx), ctx.thresholds)


# -- system.virtualization -----------------------------------------------------------

V1_UNLIMITED = 2**62  # cgroup v1 reports "no limit" as a huge page-aligned number
MAX_DEPTH = 32


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


@dataclass
class CgroupFacts:
    """The limits that bind the broker's (or the agent's) cgroup, and the usage under them."""

    version: str = ""  # "v2", "v1", or "" when unknown
    path: str = ""  # the cgroup path from /proc/PID/cgroup
    of: str = ""  # whose cgroup: "iggy-server (pid N)" or "this agent"
    memory_max: int | None = None
    memory_high: int | None = None
    memory_usage: int | None = None  # at the level that sets the limit
    memory_inactive_file: int = 0  # reclaimable page cache inside the usage
    memory_limit_at: str = ""
    oom_kills: int = 0
    cpu_quota: float | None = None  # cores
    cpu_limit_at: str = ""
    nr_periods: int = 0
    nr_throttled: int = 0
    cpuset_cores: int | None = None
    pids_max: int | None = None
    pids_current: int | None = None
    pids_limit_at: str = ""


@dataclass
class VirtFacts:
    """Hypervisor and container (as system.info sees them) plus cgroup limits and host size."""

    virtualization: str
    container: str
    detected_by: list[str]
    host_cores: int
    mem_total: int | None
    cgroup: CgroupFacts


def _levels(base: str, path: str) -> list[str]:
    """Node dirs of a cgroup and its ancestors under `base`, leaf first."""
    parts = [p for p in path.split("/") if p and p not in (".", "..")][:MAX_DEPTH]
    return [base + "".join("/" + p for p in parts[:n]) for n in range(len(parts), -1, -1)]


def _tightest(
    ctx: Context, dirs: list[str], filename: str, parse: Any = parse_limit
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
    broker = find_brokers(ctx)
    text = None
    if broker:
        text = ctx.read_optional(f"/proc/{broker[0].pid}/cgroup", max_bytes=16 * 1024)
        facts.of = f"iggy-server (pid {broker[0].pid})"
    if text is None:
        text = ctx.read_optional("/proc/self/cgroup", max_bytes=16 * 1024)
        facts.of = "this agent (no iggy-server process found)"
    return parse_proc_cgroup(text or "")


def _read_v2(ctx: Context, facts: CgroupFacts, paths: dict[str, str]) -> tuple[str | None, str]:
    """Fill in the cgroup v2 limits; return the cpuset and the dir whose cpu.stat counts."""
    facts.version = "v2"
    facts.path = paths.get("", "/")
    # In a container with its own cgroup namespace the path may not exist as such:
    # then the container's cgroup is mounted at /sys/fs/cgroup itself.
    dirs = _existing(ctx, _levels("/sys/fs/cgroup", facts.path)) or ["/sys/fs/cgroup"]
    leaf = dirs[0]
    facts.memory_max, facts.memory_limit_at = _tightest(ctx, dirs, "memory.max")
    facts.memory_high, _ = _tightest(ctx, dirs, "memory.high")
    at = facts.memory_limit_at or leaf
    facts.memory_usage = parse_limit(ctx.read_optional(f"{at}/memory.current"))
    stat = parse_kv(ctx.read_optional(f"{at}/memory.stat", max_bytes=64 * 1024))
    facts.memory_inactive_file = stat.get("inactive_file", 0)
    facts.oom_kills = parse_kv(ctx.read_optional(f"{leaf}/memory.events")).get("oom_kill", 0)
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
        base = f"/sys/fs/cgroup/{mount}"
        if (mount == ctrl or ctrl in mount.split(",")) and ctx.path(base).is_dir():
            return _existing(ctx, _levels(base, path)) or [base]
    return []


def _read_v1_memory(ctx: Context, facts: CgroupFacts, mem: list[str]) -> None:
    """Fill in the v1 memory limit, the usage under it and the OOM kills."""
    facts.memory_max, facts.memory_limit_at = _tightest(ctx, mem, "memory.limit_in_bytes")
    facts.memory_high, _ = _tightest(ctx, mem, "memory.soft_limit_in_bytes")
    at = facts.memory_limit_at or mem[0]
    facts.memory_usage = parse_limit(ctx.read_optional(f"{at}/memory.usage_in_bytes"))
    stat = parse_kv(ctx.read_optional(f"{at}/memory.stat", max_bytes=64 * 1024))
    facts.memory_inactive_file = stat.get("total_inactive_file", 0)
    oom = parse_kv(ctx.read_optional(f"{mem[0]}/memory.oom_control"))
    facts.oom_kills = oom.get("oom_kill", 0)


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
    """The broker's cgroup (else the agent's), limits min'ed over its ancestors."""
    facts = CgroupFacts()
    paths = _proc_cgroup(ctx, facts)
    if ctx.path("/sys/fs/cgroup/cgroup.controllers").exists():
        cpus, stat_at = _read_v2(ctx, facts, paths)
    elif paths and ctx.path("/sys/fs/cgroup").is_dir():
        cpus, stat_at = _read_v1(ctx, facts, paths)
    else:
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


def read_virtualization(ctx: Context) -> VirtFacts:
    """Hypervisor and container as system.info sees them; cgroup limits; host cores and RAM."""
    system = read_system(ctx)
    online = ctx.read_optional("/sys/devices/system/cpu/online", max_bytes=4096)
    try:
        cores = parse_cpu_list(online) if online else os.cpu_count() or 1
    except ValueError:
        cores = os.cpu_count() or 1
    return VirtFacts(
        virtualization=system.virtualization,
        container=system.container,
        detected_by=list(system.evidence),
        host_cores=cores,
        mem_total=read_mem_total(ctx),
        cgroup=read_cgroup(ctx),
    )


#: The cgroup's working set (page cache excluded) as percent of its memory limit.
MEM = Band("mem_pct", warn=85, fail=95)
#: Tasks in the cgroup as percent of its pids.max.
PIDS = Band("pids_pct", warn=80, fail=95)
#: Scheduling periods in which the cgroup was CPU-throttled, percent (from 100 periods on).
CPU_THROTTLED = Band("cpu_throttled_pct", warn=10)


def _working_set(cg: CgroupFacts) -> int | None:
    """Memory the cgroup uses, without the page cache the kernel can drop."""
    if cg.memory_usage is None:
        return None
    # Page cache the kernel can drop is not pressure; a broker has lots of it.
    return max(0, cg.memory_usage - cg.memory_inactive_file)


def _binding_memory_limit(facts: VirtFacts) -> int | None:
    """The cgroup memory limit, unless it is at or above the RAM (then it never binds)."""
    limit = facts.cgroup.memory_max
    if limit is not None and facts.mem_total is not None and limit >= facts.mem_total:
        return None
    return limit


def _near_memory_limit(facts: VirtFacts, thresholds: dict[str, Any]) -> list[Finding]:
    """The working set nears the cgroup memory limit, where the kernel OOM-kills the broker."""
    working, limit = _working_set(facts.cgroup), _binding_memory_limit(facts)
    if limit is None or working is None:
        return []
    pct = 100 * working / limit
    severity = MEM.grade(pct, thresholds)
    if severity is None:
        return []
    warn, fail = MEM.limits(thresholds)
    return [
        Finding(
            severity,
            f"the cgroup uses {mib_or_gib(working)} of its {mib_or_gib(limit)} "
            f"memory limit ({pct:.0f}%, page cache excluded; warn at {warn:g}%, "
            f"fail at {fail:g}%)",
            "At the limit the kernel OOM-kills the broker. Raise the limit (docker "
            "`--memory`, Kubernetes resources.limits.memory, or a systemd drop-in "
            "`[Service] MemoryMax=`) or shrink the broker's memory "
            "([system.memory_pool] size, default 4 GiB; caches).",
            facts.cgroup.memory_limit_at or "memory.max",
        )
    ]


def _over_memory_high(cg: CgroupFacts) -> list[Finding]:
    """The working set is over memory.high (v2): every allocation is throttled."""
    high = cg.memory_high if cg.version == "v2" else None
    working = _working_set(cg)
    if high is None or working is None or working < high:
        return []
    return [
        Finding(
            Severity.WARN,
            f"the cgroup uses {mib_or_gib(working)}, over its memory.high of "
            f"{mib_or_gib(high)}: the kernel throttles it and reclaims hard",
            "memory.high slows every allocation of the broker; raise it "
            "(systemd `MemoryHigh=`) or reduce the broker's memory use.",
            "memory.high",
        )
    ]


def _cgroup_oom_kills(cg: CgroupFacts) -> list[Finding]:
    """The OOM killer already fired inside the cgroup."""
    if cg.oom_kills <= 0:
        return []
    return [
        Finding(
            Severity.WARN,
            f"the OOM killer fired {cg.oom_kills} time(s) inside this cgroup",
            "A process of the broker's cgroup was killed for memory (since the cgroup "
            "was created); read `journalctl -k | grep -i oom` or `dmesg` and raise the "
            "memory limit or lower the broker's memory use.",
            "memory.events" if cg.version == "v2" else "memory.oom_control",
        )
    ]


def _visible_cores(facts: VirtFacts) -> int:
    """The cores the broker sees: its cpuset, else the host's online CPUs."""
    return facts.cgroup.cpuset_cores or facts.host_cores


def _quota_below_cores(facts: VirtFacts) -> list[Finding]:
    """The CPU quota is smaller than the cores the broker starts shards for."""
    cg, sees = facts.cgroup, _visible_cores(facts)
    if cg.cpu_quota is None or cg.cpu_quota >= sees:
        return []
    return [
        Finding(
            Severity.INFO,
            f"the broker sees {sees} cores but may use {cg.cpu_quota:g} (CPU quota)",
            "Iggy starts one shard thread per visible core; with a smaller quota "
            "they are throttled together. Set [system.sharding] cpu_allocation to "
            f"{max(1, int(cg.cpu_quota))} (or a cpuset), or raise the quota "
            "(docker `--cpus`, Kubernetes limits.cpu, systemd `CPUQuota=`).",
            cg.cpu_limit_at or "cpu.max",
        )
    ]


def _cpu_throttling(cg: CgroupFacts, thresholds: dict[str, Any]) -> list[Finding]:
    """The quota throttles the cgroup: its shards stall for the rest of a period."""
    throttle_pct = 100 * cg.nr_throttled / cg.nr_periods if cg.nr_periods >= 100 else 0.0
    severity = CPU_THROTTLED.grade(throttle_pct, thresholds)
    if severity is None:
        return []
    return [
        Finding(
            severity,
            f"the cgroup was CPU-throttled in {throttle_pct:.0f}% of its scheduling "
            f"periods ({cg.nr_throttled} of {cg.nr_periods}; "
            f"warn at {CPU_THROTTLED.limit(severity, thresholds):g}%)",
            "Throttling stalls the broker's shards for the rest of a period: latency "
            "spikes. Raise the CPU quota or lower cpu_allocation to the quota.",
            cg.cpu_limit_at or "cpu.stat",
        )
    ]


def _near_pids_limit(cg: CgroupFacts, thresholds: dict[str, Any]) -> list[Finding]:
    """The cgroup nears pids.max, where thread and process creation fails."""
    if cg.pids_max is None or cg.pids_current is None:
        return []
    pct = 100 * cg.pids_current / cg.pids_max
    severity = PIDS.grade(pct, thresholds)
    if severity is None:
        return []
    warn, fail = PIDS.limits(thresholds)
    return [
        Finding(
            severity,
            f"{cg.pids_current} tasks of a pids.max of {cg.pids_max} ({pct:.0f}%; "
            f"warn at {warn:g}%, fail at {fail:g}%)",
            "At the limit thread and process creation fails (the broker cannot "
            "spawn threads or accept work). Raise it (docker `--pids-limit`, "
            "systemd `TasksMax=`, Kubernetes podPidsLimit) and look for a thread leak.",
            cg.pids_limit_at or "pids.max",
        )
    ]


def _virt_summary(facts: VirtFacts) -> str:
    """Where the broker runs and the limits that apply, in one line."""
    cg, working, limit = facts.cgroup, _working_set(facts.cgroup), _binding_memory_limit(facts)
    parts = [placement(facts.virtualization, facts.container)]
    if limit is not None and working is not None:
        pct = 100 * working / limit
        parts.append(f"memory {mib_or_gib(working)} of {mib_or_gib(limit)} ({pct:.0f}%)")
    elif working is not None:
        parts.append(f"memory {mib_or_gib(working)}, no limit")
    sees = _visible_cores(facts)
    if cg.cpu_quota is not None:
        parts.append(f"CPU quota {cg.cpu_quota:g} of {sees} cores")
    else:
        parts.append(f"no CPU quota ({sees} cores)")
    if cg.pids_max is not None and cg.pids_current is not None:
        parts.append(f"{cg.pids_current} of {cg.pids_max} pids")
    ok = "; ".join(parts)
    if cg.version:
        ok += f" (cgroup {cg.version} of {cg.of.split(' (')[0]})"
    return ok


def _virt_data(facts: VirtFacts) -> dict[str, Any]:
    """Hypervisor, container, host size and every cgroup figure read."""
    cg = facts.cgroup
    return {
        "virtualization": facts.virtualization,
        "container": facts.container,
        "detected_by": facts.detected_by,
        "host_cores": facts.host_cores,
        "mem_total": facts.mem_total,
        "cgroup": {
            "version": cg.version,
            "of": cg.of,
            "path": cg.path,
            "memory_max": cg.memory_max,
            "memory_high": cg.memory_high,
            "memory_usage": cg.memory_usage,
            "memory_inactive_file": cg.memory_inactive_file,
            "memory_working_set": _working_set(cg),
            "memory_limit_at": cg.memory_limit_at,
            "oom_kills": cg.oom_kills,
            "cpu_quota_cores": cg.cpu_quota,
            "cpu_limit_at": cg.cpu_limit_at,
            "cpuset_cores": cg.cpuset_cores,
            "nr_periods": cg.nr_periods,
            "nr_throttled": cg.nr_throttled,
            "pids_max": cg.pids_max,
            "pids_current": cg.pids_current,
        },
    }


def judge_virtualization(facts: VirtFacts, thresholds: dict[str, Any]) -> Result:
    """Memory against the cgroup limit, CPU quota against the cores, pids against pids.max."""
    cg = facts.cgroup
    findings = [
        *_near_memory_limit(facts, thresholds),
        *_over_memory_high(cg),
        *_cgroup_oom_kills(cg),
        *_quota_below_cores(facts),
        *_cpu_throttling(cg, thresholds),
        *_near_pids_limit(cg, thresholds),
    ]
    return Result.from_findings(findings, ok=_virt_summary(facts), data=_virt_data(facts))


@check(
    id="system.virtualization",
    category="system",
    title="Virtualization and cgroup limits",
    description="Hypervisor, container runtime and the cgroup memory, CPU and pids limits.",
    timeout_s=8,
    bands=(MEM, PIDS, CPU_THROTTLED),
)
def system_virtualization(ctx: Context) -> Result:
    """What the broker runs inside, and whether its cgroup limits bind."""
    return judge_virtualization(read_virtualization(ctx), ctx.thresholds)
