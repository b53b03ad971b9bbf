"""system.cloud against local IMDSv2 / GCP metadata servers; system.virtualization on cgroups."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from snapshot_agent.checks.cloud import detect_cloud, system_cloud, system_virtualization
from snapshot_agent.checks.memory import memory_usage
from snapshot_agent.config import ChecksConfig, CloudConfig, Config
from snapshot_agent.core.context import Context
from snapshot_agent.core.results import Result, Severity, Status
from snapshot_agent.node.cgroup import (
    charge_from_stat,
    parse_cpu_max,
    parse_limit,
    parse_pressure,
    parse_proc_cgroup,
)

from .conftest import closed_port_url, fixture_roots, make_context, run_check, write_tree

TOKEN = "AQAEAFakeTokenForTests=="
AWS_DMI = {
    "sys/class/dmi/id/sys_vendor": "Amazon EC2\n",
    "sys/class/dmi/id/product_name": "m6i.2xlarge\n",
    "sys/class/dmi/id/bios_vendor": "Amazon EC2\n",
    "sys/class/dmi/id/board_asset_tag": "i-0abc123def4567890\n",
}
GCP_DMI = {
    "sys/class/dmi/id/sys_vendor": "Google\n",
    "sys/class/dmi/id/product_name": "Google Compute Engine\n",
    "sys/class/dmi/id/bios_vendor": "Google\n",
}
QEMU_DMI = {
    "sys/class/dmi/id/sys_vendor": "QEMU\n",
    "sys/class/dmi/id/product_name": "Standard PC (i440FX + PIIX, 1996)\n",
    "sys/class/dmi/id/bios_vendor": "SeaBIOS\n",
}


class MetadataHandler(BaseHTTPRequestHandler):
    """IMDSv2 (token by PUT, GETs must carry it) and GCP (Metadata-Flavor required)."""

    aws: ClassVar[dict[str, str]] = {}
    gcp: ClassVar[dict[str, str]] = {}
    requests: ClassVar[list[tuple[str, str]]] = []

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `requests` instead."""

    def _send(self, code: int, body: str = "") -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self) -> None:
        self.requests.append(("PUT", self.path))
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
        if self.path != "/latest/api/token" or not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            self._send(400, "Bad Request")
        else:
            self._send(200, TOKEN)

    def do_GET(self) -> None:
        self.requests.append(("GET", self.path))
        if self.path.startswith("/latest/meta-data/"):
            if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
                self._send(401, "Unauthorized")  # IMDSv2 only: no token, no data
                return
            item = self.path.removeprefix("/latest/meta-data/")
            if item in self.aws:
                self._send(200, self.aws[item])
            else:
                self._send(404, "Not Found")
        elif self.path.startswith("/computeMetadata/v1/instance/"):
            if self.headers.get("Metadata-Flavor") != "Google":
                self._send(403, "Missing Metadata-Flavor:Google header")
                return
            item = self.path.removeprefix("/computeMetadata/v1/instance/")
            if item in self.gcp:
                self._send(200, self.gcp[item])
            else:
                self._send(404, "Not Found")
        else:
            self._send(404, "Not Found")


AWS_OK = {
    "instance-id": "i-0abc123def4567890",
    "instance-type": "m6i.2xlarge",
    "placement/availability-zone": "eu-west-1b",
    "placement/region": "eu-west-1",
    "ami-id": "ami-0123456789abcdef0",
    "instance-life-cycle": "on-demand",
    "events/maintenance/scheduled": "[]",
}
GCP_OK = {
    "id": "4520031799277582919",
    "machine-type": "projects/123456789/machineTypes/n2-standard-8",
    "zone": "projects/123456789/zones/europe-west1-b",
    "scheduling/preemptible": "FALSE",
    "maintenance-event": "NONE",
    "preempted": "FALSE",
}


@pytest.fixture
def metadata() -> Iterator[str]:
    """A metadata server on 127.0.0.1; yields its base URL."""
    MetadataHandler.aws = dict(AWS_OK)
    MetadataHandler.gcp = dict(GCP_OK)
    MetadataHandler.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), MetadataHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def cloud_ctx(tmp_path: Path, node: Path, url: str, *, enabled: bool = True) -> Context:
    """A context whose AWS and GCP metadata URLs point at `url`."""
    ctx = make_context(tmp_path, roots=fixture_roots(node))
    cloud = CloudConfig(enabled=enabled, aws_url=url, gcp_url=url, timeout_s=1.0)
    ctx.config = Config(checks=ChecksConfig(roots=fixture_roots(node), cloud=cloud))
    return ctx


def test_server_rejects_gets_without_the_token(metadata: str) -> None:
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(urllib.error.HTTPError) as err:
        no_proxy.open(f"{metadata}/latest/meta-data/instance-id", timeout=2)
    assert err.value.code == 401


def test_aws_imdsv2_pass(tmp_path: Path, node: Path, metadata: str) -> None:
    write_tree(node, AWS_DMI)
    result = system_cloud.run(cloud_ctx(tmp_path, node, metadata))
    assert result.status == Status.PASS
    assert result.summary == "AWS i-0abc123def4567890, m6i.2xlarge, eu-west-1b"
    assert result.data["instance"]["region"] == "eu-west-1"
    assert MetadataHandler.requests[0] == ("PUT", "/latest/api/token")
    assert "spot/instance-action" in result.data["missing"]  # 404: no interruption
    assert TOKEN not in json.dumps(result.data)


def test_aws_scheduled_maintenance_warns(tmp_path: Path, node: Path, metadata: str) -> None:
    MetadataHandler.aws["events/maintenance/scheduled"] = json.dumps(
        [
            {
                "NotBefore": "21 Jan 2027 09:00:43 GMT",
                "Code": "system-reboot",
                "Description": "scheduled reboot",
                "EventId": "instance-event-0d59937288b749b32",
                "NotAfter": "21 Jan 2027 09:17:23 GMT",
                "State": "active",
            }
        ]
    )
    write_tree(node, AWS_DMI)
    result = system_cloud.run(cloud_ctx(tmp_path, node, metadata))
    assert result.status == Status.WARN
    assert "AWS scheduled system-reboot for this instance" in result.summary
    assert "i-0abc123def4567890" in result.findings[0].remediation


def test_aws_spot_interruption_fails(tmp_path: Path, node: Path, metadata: str) -> None:
    MetadataHandler.aws["instance-life-cycle"] = "spot"
    MetadataHandler.aws["spot/instance-action"] = (
        '{"action": "terminate", "time": "2027-01-21T09:17:23Z"}'
    )
    write_tree(node, AWS_DMI)
    result = system_cloud.run(cloud_ctx(tmp_path, node, metadata))
    assert result.status == Status.FAIL
    assert result.summary == "AWS will terminate this spot instance at 2027-01-21T09:17:23Z"


def test_aws_spot_instance_without_notice_passes(tmp_path: Path, node: Path, metadata: str) -> None:
    MetadataHandler.aws["instance-life-cycle"] = "spot"
    write_tree(node, AWS_DMI)
    result = system_cloud.run(cloud_ctx(tmp_path, node, metadata))
    assert result.status == Status.PASS
    [finding] = result.findings
    assert finding.severity == Severity.INFO and "two minutes' notice" in finding.message


def test_aws_unreachable_imds_warns(tmp_path: Path, node: Path) -> None:
    write_tree(node, AWS_DMI)
    url = closed_port_url()
    result = system_cloud.run(cloud_ctx(tmp_path, node, url))
    assert result.status == Status.WARN
    [finding] = result.findings
    assert finding.message.startswith(f"DMI says AWS but its metadata service ({url})")
    assert "--http-put-response-hop-limit 2" in finding.remediation
    assert finding.subject == url


def test_gcp_pass_and_header(tmp_path: Path, node: Path, metadata: str) -> None:
    write_tree(node, GCP_DMI)
    result = system_cloud.run(cloud_ctx(tmp_path, node, metadata))
    assert result.status == Status.PASS
    assert result.summary == "GCP 4520031799277582919, n2-standard-8, europe-west1-b"
    assert all(path.startswith("/computeMetadata/v1/") for _, path in MetadataHandler.requests)


def test_gcp_maintenance_warns_and_preemption_fails(
    tmp_path: Path, node: Path, metadata: str
) -> None:
    write_tree(node, GCP_DMI)
    MetadataHandler.gcp["maintenance-event"] = "MIGRATE_ON_HOST_MAINTENANCE"
    result = system_cloud.run(cloud_ctx(tmp_path, node, metadata))
    assert result.status == Status.WARN and "MIGRATE_ON_HOST_MAINTENANCE" in result.summary
    MetadataHandler.gcp["preempted"] = "TRUE"
    result = system_cloud.run(cloud_ctx(tmp_path, node, metadata))
    assert result.status == Status.FAIL and "preempting" in result.summary


def test_gcp_unreachable_warns(tmp_path: Path, node: Path) -> None:
    write_tree(node, GCP_DMI)
    result = system_cloud.run(cloud_ctx(tmp_path, node, closed_port_url()))
    assert result.status == Status.WARN and "DMI says GCP" in result.summary


def test_not_a_cloud_sends_no_traffic(tmp_path: Path, node: Path, metadata: str) -> None:
    write_tree(node, QEMU_DMI)
    result = system_cloud.run(cloud_ctx(tmp_path, node, metadata))
    assert result.status == Status.SKIPPED
    assert result.summary == (
        "not on AWS or GCP (DMI: QEMU Standard PC (i440FX + PIIX, 1996)); "
        "no metadata service was contacted"
    )
    assert MetadataHandler.requests == []
    empty = system_cloud.run(cloud_ctx(tmp_path, tmp_path / "nothing", metadata))
    assert "no DMI data" in empty.summary and MetadataHandler.requests == []


def test_disabled_skips(tmp_path: Path, node: Path, metadata: str) -> None:
    write_tree(node, AWS_DMI)
    result = system_cloud.run(cloud_ctx(tmp_path, node, metadata, enabled=False))
    assert result.status == Status.SKIPPED and "checks.cloud.enabled" in result.summary
    assert MetadataHandler.requests == []


def test_detect_cloud() -> None:
    assert detect_cloud({"sys_vendor": "Xen", "bios_version": "4.11.amazon"}) == "aws"
    assert detect_cloud({"hypervisor_uuid": "ec2e1916-9099-7caf-fd21-012345abcdef"}) == "aws"
    assert detect_cloud({"product_name": "Google Compute Engine"}) == "gcp"
    azure = {
        "sys_vendor": "Microsoft Corporation",
        "chassis_asset_tag": "7783-7084-3265-9085-8269-3286-77",
    }
    assert detect_cloud(azure) == "azure"
    assert detect_cloud({"sys_vendor": "QEMU"}) == ""


# -- system.virtualization -----------------------------------------------------------

VIRT_T = dict(system_virtualization.thresholds)
GIB = 2**30


def v2_node(node: Path, files: dict[str, str], cgroup: str = "0::/\n") -> Path:
    """A cgroup v2 container node with 8 online cores and 32 GiB of RAM."""
    base = {
        "proc/self/cgroup": cgroup,
        "proc/1/cgroup": "0::/\n",
        "proc/meminfo": f"MemTotal:       {32 * GIB // 1024} kB\nMemFree: 1 kB\n",
        "sys/devices/system/cpu/online": "0-7\n",
        "sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory pids\n",
        ".dockerenv": "",
    }
    return write_tree(node, base | files)


def test_virtualization_pass_without_limits(tmp_path: Path, node: Path) -> None:
    v2_node(
        node,
        {
            "sys/fs/cgroup/memory.max": "max\n",
            "sys/fs/cgroup/memory.current": f"{3 * GIB}\n",
            "sys/fs/cgroup/cpu.max": "max 100000\n",
            "sys/fs/cgroup/pids.max": "max\n",
            "sys/fs/cgroup/pids.current": "40\n",
            "sys/class/dmi/id/sys_vendor": "QEMU\n",
        },
    )
    result = virt_run(tmp_path, node)
    assert result.status == Status.PASS
    assert result.data["container"] == "docker" and result.data["virtualization"] == "qemu"
    assert result.summary.startswith(
        "VM (qemu), container (docker); memory 3.0 GiB (0 MiB of it reclaimable cache), no limit"
    )
    assert "no CPU quota (8 cores)" in result.summary
    assert not result.findings


def virt_run(tmp_path: Path, node: Path, thresholds: dict[str, Any] | None = None) -> Result:
    """system.virtualization against the fixture tree under `node`."""
    ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds=thresholds or VIRT_T)
    return system_virtualization.run(ctx)


def test_virtualization_limit_full_of_active_page_cache_passes(tmp_path: Path, node: Path) -> None:
    # Issue 8 case 2: a healthy broker whose 8 GiB limit is 98% charged, nearly all of it
    # *active* page cache (hot segments), no pressure, no OOM. Before: fail ("uses 7.7 GiB of
    # its 8.0 GiB memory limit (97%, page cache excluded") because only inactive_file counted.
    cg = "sys/fs/cgroup/system.slice/iggy-server.service"
    v2_node(
        node,
        {
            "proc/812/comm": "iggy-server\n",
            "proc/812/cgroup": "0::/system.slice/iggy-server.service\n",
            f"{cg}/memory.max": f"{8 * GIB}\n",
            f"{cg}/memory.current": f"{int(7.84 * GIB)}\n",
            f"{cg}/memory.stat": (
                f"anon {GIB // 2}\nfile {int(7.2 * GIB)}\nactive_file {int(7.1 * GIB)}\n"
                f"inactive_file {GIB // 10}\nslab_reclaimable {GIB // 10}\n"
            ),
            f"{cg}/memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
            f"{cg}/memory.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
            "proc/meminfo": f"MemTotal: {32 * GIB >> 10} kB\nMemAvailable: {20 * GIB >> 10} kB\n",
        },
    )
    result = virt_run(tmp_path, node)
    assert result.status == Status.PASS and not result.findings
    assert (
        "memory 7.8 GiB of 8.0 GiB (7.3 GiB of it reclaimable cache; judged by memory.usage)"
        in (result.summary)
    )
    assert result.data["cgroup"]["memory_reclaimable"] == int(7.1 * GIB) + 2 * (GIB // 10)
    # memory.usage reads the same cgroup and passes it too.
    usage = run_check(memory_usage, tmp_path, node, {})
    assert usage.status == Status.PASS
    assert usage.data["judged_against"]["limit_at"] == f"/{cg}"


def test_virtualization_leaves_the_memory_verdict_to_memory_usage(
    tmp_path: Path, node: Path
) -> None:
    # A limit full of anonymous memory: memory.usage judges it, the figures are shown here.
    v2_node(
        node,
        {
            "sys/fs/cgroup/memory.max": f"{4 * GIB}\n",
            "sys/fs/cgroup/memory.current": f"{int(3.9 * GIB)}\n",
            "sys/fs/cgroup/memory.stat": f"anon {int(3.9 * GIB)}\n",
        },
    )
    result = virt_run(tmp_path, node)
    assert result.status == Status.PASS
    assert result.data["cgroup"]["memory_unreclaimable"] == int(3.9 * GIB)
    assert "memory 3.9 GiB of 4.0 GiB (0 MiB of it reclaimable cache; judged by memory.usage)" in (
        result.summary
    )
    usage = run_check(memory_usage, tmp_path, node, {})
    assert usage.status == Status.FAIL  # no PSI in this tree to say otherwise
    assert usage.summary.startswith("this agent's cgroup / holds 3.9 GiB it cannot reclaim")


def test_virtualization_over_memory_high_warns(tmp_path: Path, node: Path) -> None:
    files = {
        "sys/fs/cgroup/memory.high": f"{2 * GIB}\n",
        "sys/fs/cgroup/memory.current": f"{3 * GIB}\n",
        "sys/fs/cgroup/memory.stat": f"anon {int(2.5 * GIB)}\nactive_file {GIB // 2}\n",
    }
    v2_node(node, files)
    result = virt_run(tmp_path, node)
    assert result.status == Status.WARN
    assert result.summary.startswith("the cgroup holds 2.5 GiB it cannot reclaim")
    assert "MemoryHigh=" in result.findings[0].remediation
    # Page cache above memory.high is simply reclaimed: not a finding.
    write_tree(node, {"sys/fs/cgroup/memory.stat": f"anon {GIB}\nactive_file {2 * GIB}\n"})
    assert virt_run(tmp_path, node).status == Status.PASS


def test_virtualization_pids_near_the_limit_fails(tmp_path: Path, node: Path) -> None:
    v2_node(node, {"sys/fs/cgroup/pids.max": "100\n", "sys/fs/cgroup/pids.current": "96\n"})
    result = virt_run(tmp_path, node)
    assert result.status == Status.FAIL
    assert result.summary == "96 tasks of a pids.max of 100 (96%; warn at 80%, fail at 95%)"


def test_virtualization_limit_from_an_ancestor_cgroup(tmp_path: Path, node: Path) -> None:
    # A Kubernetes pod: the container's own memory.max is unlimited, the pod's is 4 GiB.
    pod = "sys/fs/cgroup/kubepods.slice/pod1"
    v2_node(
        node,
        {
            f"{pod}/memory.max": f"{4 * GIB}\n",
            f"{pod}/memory.current": f"{int(3.9 * GIB)}\n",
            f"{pod}/memory.stat": f"anon {int(3.8 * GIB)}\ninactive_file {GIB // 10}\n",
            f"{pod}/memory.events": "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n",
            f"{pod}/ctr/memory.max": "max\n",
            f"{pod}/ctr/memory.current": f"{1 * GIB}\n",
            f"{pod}/ctr/cpu.max": "200000 100000\n",
            f"{pod}/ctr/cpu.stat": "usage_usec 1\nnr_periods 1000\nnr_throttled 300\n",
            f"{pod}/ctr/pids.max": "100\n",
            f"{pod}/ctr/pids.current": "85\n",
            f"{pod}/ctr/memory.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        },
        cgroup="0::/kubepods.slice/pod1/ctr\n",
    )
    result = virt_run(tmp_path, node)
    assert result.status == Status.WARN
    messages = " | ".join(f.message for f in result.findings)
    assert "the broker sees 8 cores but may use 2 (CPU quota)" in messages
    assert "CPU-throttled in 30% of its scheduling periods" in messages
    assert "85 tasks of a pids.max of 100 (85%" in messages
    info = [f for f in result.findings if f.severity == Severity.INFO]
    assert "cpu_allocation to 2" in info[0].remediation
    cg = result.data["cgroup"]
    assert cg["memory_limit_at"] == f"/{pod}" and cg["memory_events"]["oom_kill"] == 1
    # memory.usage judges the pod's limit: full of anon, an OOM kill, fails.
    usage = run_check(memory_usage, tmp_path, node, {})
    assert usage.status == Status.FAIL
    assert "1 OOM event since the cgroup was created" in usage.summary
    judged = usage.data["judged_against"]
    assert judged["pressure"]["source"] == f"/{pod}/ctr/memory.pressure"


def test_virtualization_bands_use_the_warn_fail_names(tmp_path: Path, node: Path) -> None:
    assert {"warn_pids_pct", "fail_pids_pct", "warn_cpu_throttled_pct"} <= set(VIRT_T)
    assert "warn_mem_pct" not in VIRT_T  # memory.usage's warn/fail_limit_used_pct now
    assert {"warn_limit_used_pct", "fail_limit_used_pct"} <= set(memory_usage.thresholds)
    v2_node(
        node,
        {
            "sys/fs/cgroup/memory.max": f"{4 * GIB}\n",
            "sys/fs/cgroup/memory.current": f"{2 * GIB}\n",
            "sys/fs/cgroup/cpu.stat": "nr_periods 1000\nnr_throttled 50\n",
            "sys/fs/cgroup/pids.max": "100\n",
            "sys/fs/cgroup/pids.current": "50\n",
        },
    )
    thresholds = VIRT_T | {"warn_pids_pct": 50, "warn_cpu_throttled_pct": 5}
    result = virt_run(tmp_path, node, thresholds)
    # Reaching each warn threshold counts: 50% pids, 5% of periods throttled.
    assert result.status == Status.WARN
    messages = " | ".join(f.message for f in result.findings)
    assert "(50%; warn at 50%, fail at 95%)" in messages
    assert "in 5% of its scheduling periods (50 of 1000; warn at 5%)" in messages


def test_virtualization_cgroup_v1(tmp_path: Path, node: Path) -> None:
    path = "/docker/4f2a9c1e7b3d"
    write_tree(
        node,
        {
            "proc/self/cgroup": (
                f"12:pids:{path}\n11:memory:{path}\n4:cpu,cpuacct:{path}\n0::/system.slice\n"
            ),
            "proc/1/cgroup": f"11:memory:{path}\n",
            "sys/devices/system/cpu/online": "0-3\n",
            f"sys/fs/cgroup/memory{path}/memory.limit_in_bytes": f"{2 * GIB}\n",
            f"sys/fs/cgroup/memory{path}/memory.usage_in_bytes": f"{GIB}\n",
            f"sys/fs/cgroup/memory{path}/memory.stat": "total_inactive_file 0\n",
            "sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
            f"sys/fs/cgroup/cpu,cpuacct{path}/cpu.cfs_quota_us": "-1\n",
            f"sys/fs/cgroup/cpu,cpuacct{path}/cpu.cfs_period_us": "100000\n",
            f"sys/fs/cgroup/pids{path}/pids.max": "max\n",
            f"sys/fs/cgroup/pids{path}/pids.current": "12\n",
        },
    )
    result = virt_run(tmp_path, node)
    assert result.status == Status.PASS
    assert result.data["container"] == "docker"
    cg = result.data["cgroup"]
    assert cg["version"] == "v1" and cg["memory_max"] == 2 * GIB and cg["cpu_quota_cores"] is None
    assert "memory 1.0 GiB of 2.0 GiB (0 MiB of it reclaimable cache;" in result.summary


def test_virtualization_uses_the_broker_cgroup(tmp_path: Path, node: Path) -> None:
    v2_node(
        node,
        {
            "proc/812/comm": "iggy-server\n",
            "proc/812/cgroup": "0::/system.slice/iggy-server.service\n",
            "sys/fs/cgroup/system.slice/iggy-server.service/memory.max": f"{GIB}\n",
            "sys/fs/cgroup/system.slice/iggy-server.service/memory.current": f"{GIB // 2}\n",
        },
        cgroup="0::/system.slice/snapshot-agent.service\n",
    )
    result = virt_run(tmp_path, node)
    assert result.data["cgroup"]["of"] == "iggy-server (pid 812)"
    assert "memory 512 MiB of 1.0 GiB (0 MiB of it reclaimable cache;" in result.summary
    assert result.summary.endswith("(cgroup v2 of iggy-server)")


def test_virtualization_sidecar_does_not_report_its_own_limits_as_the_broker(
    tmp_path: Path, node: Path
) -> None:
    # Review of issue 8: a sidecar agent in its own cgroup namespace sees the broker's
    # cgroup as `/../cri-containerd-….scope`. Before: the `..` was dropped and the agent's own
    # container at /sys/fs/cgroup (its 0.5 CPU quota, its 512 MiB, its pids) was reported
    # as iggy-server's.
    v2_node(
        node,
        {
            "proc/812/comm": "iggy-server\n",
            "proc/812/cgroup": "0::/../cri-containerd-aaaabbbbccccdddd.scope\n",
            "sys/fs/cgroup/cgroup.procs": "1\n",
            "sys/fs/cgroup/memory.max": f"{GIB // 2}\n",
            "sys/fs/cgroup/memory.current": f"{GIB // 4}\n",
            "sys/fs/cgroup/cpu.max": "50000 100000\n",
            "sys/fs/cgroup/cpu.stat": "nr_periods 1000\nnr_throttled 600\n",
            "sys/fs/cgroup/pids.max": "20\n",
            "sys/fs/cgroup/pids.current": "19\n",
        },
    )
    result = virt_run(tmp_path, node)
    assert result.status == Status.PASS
    assert "memory limit unknown (the broker's cgroup is not visible here)" in result.summary
    assert "CPU quota unknown (8 cores)" in result.summary and "pids" not in result.summary
    cg = result.data["cgroup"]
    assert cg["hidden"] == ["memory", "cpu", "pids", "cpuset"]
    assert (cg["memory_max"], cg["cpu_quota_cores"], cg["pids_max"]) == (None, None, None)
    [info] = result.findings
    assert info.severity == Severity.INFO
    assert info.message.startswith(
        "iggy-server's cgroup /../cri-containerd-aaaabbbbccccdddd.scope is outside this "
        "agent's cgroup namespace"
    )
    # Readable through the broker's own mount: its limits, said where they were read.
    root = "proc/812/root/sys/fs/cgroup"
    write_tree(
        node,
        {
            f"{root}/cgroup.procs": "812\n",
            f"{root}/memory.max": f"{4 * GIB}\n",
            f"{root}/memory.current": f"{GIB}\n",
            f"{root}/cpu.max": "800000 100000\n",
            f"{root}/pids.max": "1000\n",
            f"{root}/pids.current": "40\n",
        },
    )
    result = virt_run(tmp_path, node)
    assert result.status == Status.PASS and not result.findings
    assert "memory 1.0 GiB of 4.0 GiB (" in result.summary
    assert "CPU quota 8 of 8 cores; 40 of 1000 pids" in result.summary
    assert result.summary.endswith(f"(cgroup v2 of iggy-server, read through /{root})")


def slice_node(node: Path, slice_files: dict[str, str], unit_files: dict[str, str]) -> None:
    """The broker's systemd unit and the slice above it, each with its own files."""
    unit = "sys/fs/cgroup/system.slice/iggy-server.service"
    files = {f"sys/fs/cgroup/system.slice/{k}": v for k, v in slice_files.items()}
    files |= {f"{unit}/{k}": v for k, v in unit_files.items()}
    files |= {
        "proc/812/comm": "iggy-server\n",
        "proc/812/cgroup": "0::/system.slice/iggy-server.service\n",
    }
    v2_node(node, files, cgroup="0::/system.slice/snapshot-agent.service\n")


def test_virtualization_memory_high_of_an_ancestor_slice_warns(tmp_path: Path, node: Path) -> None:
    # The slice's memory.high (4 GiB) is exceeded by 5 GiB of anonymous memory; the unit's
    # own memory.high (8 GiB) has room. Before: the smallest memory.high (the slice's) was
    # compared with the unit's usage (1 GiB): pass.
    slice_node(
        node,
        {
            "memory.high": f"{4 * GIB}\n",
            "memory.current": f"{6 * GIB}\n",
            "memory.stat": f"anon {5 * GIB}\nactive_file {GIB}\n",
        },
        {
            "memory.high": f"{8 * GIB}\n",
            "memory.current": f"{GIB}\n",
            "memory.stat": f"anon {GIB}\n",
        },
    )
    result = virt_run(tmp_path, node)
    assert result.status == Status.WARN
    assert result.summary.startswith(
        "the cgroup's ancestor /system.slice holds 5.0 GiB it cannot reclaim"
    )
    assert result.findings[0].subject == "/sys/fs/cgroup/system.slice/memory.high"
    # The same slice full of page cache only: reclaimed, not a finding.
    write_tree(
        node, {"sys/fs/cgroup/system.slice/memory.stat": f"anon {GIB}\nactive_file {5 * GIB}\n"}
    )
    assert virt_run(tmp_path, node).status == Status.PASS


def test_virtualization_pids_judged_at_every_level(tmp_path: Path, node: Path) -> None:
    # The slice has 990 of its 1000 tasks; the unit 10 of its 500. Before: the smallest
    # pids.max (the unit's) was judged: 2%, pass.
    slice_node(
        node,
        {"pids.max": "1000\n", "pids.current": "990\n"},
        {"pids.max": "500\n", "pids.current": "10\n"},
    )
    result = virt_run(tmp_path, node)
    assert result.status == Status.FAIL
    assert result.summary == "990 tasks of a pids.max of 1000 (99%; warn at 80%, fail at 95%)"
    assert result.findings[0].subject == "/sys/fs/cgroup/system.slice"


def test_virtualization_memory_limit_of_an_ancestor_is_named(tmp_path: Path, node: Path) -> None:
    # Healthy: the unit has 10 GiB with 2 GiB used, the slice 12 GiB with 6 GiB, mostly
    # page cache: the slice has the least headroom and is named; memory.usage passes it.
    slice_node(
        node,
        {
            "memory.max": f"{12 * GIB}\n",
            "memory.current": f"{6 * GIB}\n",
            "memory.stat": f"anon {GIB}\nactive_file {5 * GIB}\n",
        },
        {
            "memory.max": f"{10 * GIB}\n",
            "memory.current": f"{2 * GIB}\n",
            "memory.stat": f"anon {GIB}\nactive_file {GIB}\n",
        },
    )
    result = virt_run(tmp_path, node)
    assert result.status == Status.PASS
    assert "memory 2.0 GiB of 10.0 GiB (1.0 GiB of it reclaimable cache;" in result.summary
    # 10% of the unit's limit, 8.3% of the slice's: the unit has the least headroom.
    write_tree(node, {"sys/fs/cgroup/system.slice/memory.stat": f"anon {4 * GIB}\n"})
    result = virt_run(tmp_path, node)
    assert "memory 6.0 GiB of 12.0 GiB set on /system.slice (0 MiB of it" in result.summary
    assert result.data["cgroup"]["memory_limit_at"] == "/sys/fs/cgroup/system.slice"


def test_cgroup_parsers() -> None:
    assert parse_proc_cgroup("12:pids:/a\n4:cpu,cpuacct:/b\n1:name=systemd:/c\n0::/d\n") == {
        "pids": "/a",
        "cpu": "/b",
        "cpuacct": "/b",
        "systemd": "/c",
        "": "/d",
    }
    assert parse_limit("max\n") is None and parse_limit("9223372036854771712") is None
    assert parse_limit("1073741824\n") == GIB and parse_limit("garbage") is None
    assert parse_cpu_max("150000 100000\n") == 1.5 and parse_cpu_max("max 100000") is None
    psi = parse_pressure("some avg10=1.50 avg60=0.20 avg300=0 total=9\nfull garbage\n", "/x")
    assert psi is not None and (psi.some_avg10, psi.some_avg60, psi.full_avg10) == (1.5, 0.2, 0)
    assert parse_pressure("", "/x") is None and parse_pressure("some avg10=x\n", "/x") is None


def test_page_cache_counts_as_reclaimable() -> None:
    # Active and inactive file pages and reclaimable slab; shmem and anon are not.
    v2 = charge_from_stat(
        1000,
        {
            "anon": 300,
            "shmem": 100,
            "active_file": 400,
            "inactive_file": 150,
            "slab_reclaimable": 50,
        },
        v1=False,
    )
    assert (v2.reclaimable, v2.unreclaimable) == (600, 400)
    v1 = charge_from_stat(
        1000, {"total_rss": 700, "total_active_file": 250, "total_inactive_file": 50}, v1=True
    )
    assert (v1.anon, v1.reclaimable, v1.unreclaimable) == (700, 300, 700)
    # A memory.stat that claims more cache than the usage never makes usage negative.
    assert charge_from_stat(10, {"active_file": 50}, v1=False).unreclaimable == 0
