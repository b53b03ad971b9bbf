"""Where the node runs: cloud instance metadata (AWS, GCP) and virtualization / cgroup limits.

The cgroup itself is read by node/cgroup.py, shared with memory.usage (which judges memory
against the cgroup's limit).
"""

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
from snapshot_agent.node.cgroup import MIN_PERIODS, CgroupFacts, MemoryLevel, read_cgroup
from snapshot_agent.node.procfs import parse_cpu_list, read_mem_total
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
    """Which cloud instance this is, asked only where DMI says AWS or GCP.

    Verdicts:
    - pass: an AWS instance answering IMDSv2, nothing scheduled [test_aws_imdsv2_pass]
    - pass: a spot instance with no interruption notice (noted)
      [test_aws_spot_instance_without_notice_passes]
    - pass: a GCP VM, no maintenance event [test_gcp_pass_and_header]
    - skipped: DMI names no cloud (a QEMU VM): no request is sent
      [test_not_a_cloud_sends_no_traffic]
    - skipped: disabled in the config [test_disabled_skips]
    - warn: AWS scheduled a reboot of the instance [test_aws_scheduled_maintenance_warns]
    - warn: DMI says AWS but IMDS does not answer [test_aws_unreachable_imds_warns]
    - warn: GCP host maintenance under way [test_gcp_maintenance_warns_and_preemption_fails]
    - fail: AWS will terminate this spot instance [test_aws_spot_interruption_fails]
    - fail: GCP is preempting the VM [test_gcp_maintenance_warns_and_preemption_fails]
    """
    if not ctx.config.checks.cloud.enabled:
        return Result.skipped("disabled in the config (checks.cloud.enabled: false)")
    return judge_cloud(read_cloud(ctx), ctx.thresholds)


# -- system.virtualization -----------------------------------------------------------


@dataclass
class VirtFacts:
    """Hypervisor and container (as system.info sees them) plus cgroup limits and host size."""

    virtualization: str
    container: str
    detected_by: list[str]
    host_cores: int
    mem_total: int | None
    cgroup: CgroupFacts


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


#: Tasks in the cgroup as percent of its pids.max.
PIDS = Band("pids_pct", warn=80, fail=95)
#: Scheduling periods in which the cgroup was CPU-throttled, percent (from 100 periods on).
CPU_THROTTLED = Band("cpu_throttled_pct", warn=10)


def _over_high(level: MemoryLevel) -> float | None:
    """What a level cannot reclaim as a share of its own memory.high; None when not over."""
    mem, high = level.charge, level.high
    if high is None or high <= 0 or mem is None or mem.unreclaimable < high:
        return None  # page cache above memory.high is simply reclaimed: not a finding
    return mem.unreclaimable / high


def _over_memory_high(cg: CgroupFacts) -> list[Finding]:
    """What a level of the cgroup cannot reclaim is over its memory.high (v2): throttled."""
    if cg.version != "v2":
        return []
    # Each level against its own memory.high (a slice's may be the one exceeded).
    over = [(share, lvl) for lvl in cg.memory_levels if (share := _over_high(lvl)) is not None]
    if not over:
        return []
    _, level = max(over, key=lambda o: o[0])
    mem, high = level.charge, level.high or 0
    who = "the cgroup" if level is cg.leaf else f"the cgroup's ancestor {level.path}"
    return [
        Finding(
            Severity.WARN,
            f"{who} holds {mib_or_gib(mem.unreclaimable if mem else 0)} it cannot reclaim "
            f"(anonymous memory, shmem, kernel; page cache excluded), over its memory.high "
            f"of {mib_or_gib(high)}: the kernel throttles every allocation",
            "Over memory.high the kernel slows each allocation of the broker and reclaims "
            "hard, so its shards stall. Raise it (systemd `MemoryHigh=` on the unit or slice "
            "that sets it, Kubernetes memory.high via the runtime) or reduce the broker's "
            "memory use ([system.memory_pool] size, caches).",
            f"{level.at}/memory.high",
        )
    ]


def _limits_unknown(cg: CgroupFacts) -> list[Finding]:
    """The broker's cgroup is not visible to the agent: its limits are unknown, not absent."""
    if not cg.hidden:
        return []
    return [
        Finding(
            Severity.INFO,
            f"{cg.why_hidden()}: its {', '.join(cg.hidden)} limits are unknown",
            "Let the agent see the broker's cgroup: run it in the host's cgroup namespace "
            "(docker `--cgroupns=host`, or on the host), or let it read "
            f"/proc/{cg.broker_pid}/root (a shared process namespace, the broker's user or "
            "CAP_SYS_PTRACE). Meanwhile read the limits with `kubectl describe pod` or "
            "`docker inspect`.",
            f"/proc/{cg.broker_pid}/cgroup",
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
    throttle_pct = 100 * cg.nr_throttled / cg.nr_periods if cg.nr_periods >= MIN_PERIODS else 0.0
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
            cg.cpu_stat_at or "cpu.stat",
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


def _memory_words(facts: VirtFacts) -> str:
    """The memory charged at the level with least headroom against its limit (memory.usage's)."""
    cg = facts.cgroup
    if not cg.memory_known and cg.version:
        return "memory limit unknown (the broker's cgroup is not visible here)"
    level = cg.memory_level(facts.mem_total)
    shown = level or cg.leaf
    limit = level.limit if level else None
    if shown is None or shown.charge is None:
        return f"memory limit {mib_or_gib(limit)}" if limit is not None else "no memory limit"
    charged = mib_or_gib(shown.charge.usage)
    cache = f"{mib_or_gib(shown.charge.reclaimable)} of it reclaimable cache"
    if limit is None:
        return f"memory {charged} ({cache}), no limit"
    at = "" if shown is cg.leaf else f" set on {shown.path}"
    return f"memory {charged} of {mib_or_gib(limit)}{at} ({cache}; judged by memory.usage)"


def _virt_summary(facts: VirtFacts) -> str:
    """Where the broker runs and the limits that apply, in one line."""
    cg = facts.cgroup
    parts = [placement(facts.virtualization, facts.container), _memory_words(facts)]
    sees = _visible_cores(facts)
    if "cpu" in cg.hidden:
        parts.append(f"CPU quota unknown ({sees} cores)")
    elif cg.cpu_quota is not None:
        parts.append(f"CPU quota {cg.cpu_quota:g} of {sees} cores")
    else:
        parts.append(f"no CPU quota ({sees} cores)")
    if cg.pids_max is not None and cg.pids_current is not None:
        parts.append(f"{cg.pids_current} of {cg.pids_max} pids")
    ok = "; ".join(parts)
    if cg.hidden:
        ok += f" (cgroup {cg.version}; {cg.why_hidden()})"
    elif cg.version:
        seen = f", read through {cg.seen_through}" if cg.seen_through else ""
        ok += f" (cgroup {cg.version} of {cg.owner}{seen})"
    return ok


def _virt_data(facts: VirtFacts) -> dict[str, Any]:
    """Hypervisor, container, host size and every cgroup figure read."""
    cg = facts.cgroup
    level = cg.memory_level(facts.mem_total)
    shown = level or cg.leaf
    mem = shown.charge if shown else None
    highs = [lvl.high for lvl in cg.memory_levels if lvl.high is not None]
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
            "hidden": cg.hidden,
            "seen_through": cg.seen_through or None,
            "memory_max": level.limit if level else None,
            "memory_high": min(highs) if highs else None,
            "memory_usage": mem.usage if mem else None,
            "memory_reclaimable": mem.reclaimable if mem else None,
            "memory_unreclaimable": mem.unreclaimable if mem else None,
            "memory_limit_at": level.at if level else "",
            "memory_events": shown.events if shown else {},
            "memory_levels": [
                {
                    "path": lvl.path,
                    "at": lvl.at,
                    "max": lvl.limit,
                    "high": lvl.high,
                    "usage": lvl.charge.usage if lvl.charge else None,
                    "unreclaimable": lvl.charge.unreclaimable if lvl.charge else None,
                }
                for lvl in cg.memory_levels
            ],
            "cpu_quota_cores": cg.cpu_quota,
            "cpu_limit_at": cg.cpu_limit_at,
            "cpu_stat_at": cg.cpu_stat_at,
            "cpuset_cores": cg.cpuset_cores,
            "nr_periods": cg.nr_periods,
            "nr_throttled": cg.nr_throttled,
            "pids_max": cg.pids_max,
            "pids_current": cg.pids_current,
            "pids_limit_at": cg.pids_limit_at,
        },
        "note": (
            "memory against the limit (page cache counted as reclaimable, pressure and "
            "OOM events) is judged by memory.usage; nr_throttled/nr_periods are counted "
            "since the cgroup was created"
        ),
    }


def judge_virtualization(facts: VirtFacts, thresholds: dict[str, Any]) -> Result:
    """CPU quota against the cores, throttling, pids against pids.max, memory.high."""
    cg = facts.cgroup
    findings = [
        *_limits_unknown(cg),
        *_over_memory_high(cg),
        *_quota_below_cores(facts),
        *_cpu_throttling(cg, thresholds),
        *_near_pids_limit(cg, thresholds),
    ]
    return Result.from_findings(findings, ok=_virt_summary(facts), data=_virt_data(facts))


@check(
    id="system.virtualization",
    category="system",
    title="Virtualization and cgroup limits",
    description="Hypervisor, container runtime and the cgroup CPU, pids and memory.high limits.",
    timeout_s=8,
    bands=(PIDS, CPU_THROTTLED),
)
def system_virtualization(ctx: Context) -> Result:
    """What the broker runs inside, and whether its cgroup limits bind.

    Verdicts:
    - pass: a broker container whose memory limit is nearly full of active page cache
      (hot segments), no memory pressure, no OOM event; no CPU quota or pids limit
      [test_virtualization_limit_full_of_active_page_cache_passes]
    - pass: a container without limits on a VM [test_virtualization_pass_without_limits]
    - pass: a cgroup v1 container at half its memory limit [test_virtualization_cgroup_v1]
    - pass: a sidecar agent that cannot see the broker's cgroup: its limits reported
      unknown, never the agent's own quota, pids or memory limit
      [test_virtualization_sidecar_does_not_report_its_own_limits_as_the_broker]
    - pass: a slice above the broker's unit with a larger limit, the fuller level named
      [test_virtualization_memory_limit_of_an_ancestor_is_named]
    - warn: a pod near its pids.max, CPU-throttled in 30% of its periods
      [test_virtualization_limit_from_an_ancestor_cgroup]
    - warn: reaching each warn threshold (pids, throttled periods)
      [test_virtualization_bands_use_the_warn_fail_names]
    - warn: anonymous memory over memory.high [test_virtualization_over_memory_high_warns]
    - warn: the slice above the broker's unit over its own memory.high with anonymous
      memory [test_virtualization_memory_high_of_an_ancestor_slice_warns]
    - fail: 96 of a pids.max of 100 tasks [test_virtualization_pids_near_the_limit_fails]
    - fail: the slice at 990 of its 1000 tasks while the unit's smaller pids.max has room
      [test_virtualization_pids_judged_at_every_level]
    """
    return judge_virtualization(read_virtualization(ctx), ctx.thresholds)
