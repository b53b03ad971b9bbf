"""System identity checks."""

from __future__ import annotations

import math
import shlex
import shutil
from dataclasses import dataclass, field
from typing import Any

from snapshot_agent.core.check import check
from snapshot_agent.core.context import Context
from snapshot_agent.core.results import Finding, Result, Severity

#: DMI vendor/product substrings -> hypervisor or cloud.
_DMI_VIRT = (
    ("amazon ec2", "amazon"),
    ("google", "google"),
    ("qemu", "qemu"),
    ("kvm", "kvm"),
    ("vmware", "vmware"),
    ("virtualbox", "oracle"),
    ("microsoft corporation", "microsoft"),
    ("xen", "xen"),
    ("openstack", "openstack"),
    ("digitalocean", "digitalocean"),
    ("hetzner", "hetzner"),
)
_CGROUP_CONTAINERS = (
    ("kubepods", "kubernetes"),
    ("docker", "docker"),
    ("containerd", "containerd"),
    ("lxc", "lxc"),
    ("libpod", "podman"),
)


@dataclass
class SystemFacts:
    """What the node says about itself."""

    os_release: dict[str, str] = field(default_factory=dict)
    kernel: str = ""
    kernel_version: str = ""
    hostname: str = ""
    uptime_s: float | None = None
    virtualization: str = "none"  # hypervisor name, or "none"
    container: str = "none"  # container technology, or "none"
    evidence: list[str] = field(default_factory=list)


def parse_os_release(text: str) -> dict[str, str]:
    """Parse os-release(5): KEY=value lines with shell quoting."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            parts = shlex.split(value)
        except ValueError:
            parts = [value.strip("\"'")]
        out[key.strip()] = parts[0] if parts else ""
    return out


def parse_uptime(text: str) -> float | None:
    """Seconds since boot from /proc/uptime ('90061.5 170000.0'); None when not a number."""
    fields = text.split()
    try:
        value = float(fields[0])
    except (IndexError, ValueError):
        return None
    return value if math.isfinite(value) and value >= 0 else None


def read_system(ctx: Context) -> SystemFacts:
    """Gather identity facts from /etc, /proc, /sys and systemd-detect-virt when present."""
    facts = SystemFacts()
    text = ctx.read_optional("/etc/os-release") or ctx.read_optional("/usr/lib/os-release")
    facts.os_release = parse_os_release(text or "")
    facts.kernel = (ctx.read_optional("/proc/sys/kernel/osrelease") or "").strip()
    facts.kernel_version = (ctx.read_optional("/proc/sys/kernel/version") or "").strip()
    facts.hostname = (ctx.read_optional("/proc/sys/kernel/hostname") or "").strip()
    facts.uptime_s = parse_uptime(ctx.read_optional("/proc/uptime", 4096) or "")
    _detect_virtualization(ctx, facts)
    return facts


def detect_container(ctx: Context) -> tuple[str, list[str]]:
    """The container technology this node runs in ('none' on a host), and the evidence.

    systemd-detect-virt on a live node, then what systemd, the runtimes and the cgroup of
    PID 1 leave behind (those work in fixture trees and without systemd too).
    """
    container, evidence = "none", []
    if ctx.live and shutil.which("systemd-detect-virt"):
        ct = ctx.run(["systemd-detect-virt", "--container"], timeout_s=3)
        if ct.exit_code is not None and ct.stdout.strip():
            container = ct.stdout.strip()
            evidence.append("systemd-detect-virt --container")
    if container == "none":
        marker = (ctx.read_optional("/run/systemd/container", 256) or "").strip()
        if marker:
            return marker, [*evidence, "/run/systemd/container"]
        cgroup = (ctx.read_optional("/proc/1/cgroup") or "").lower()
        for needle, name in _CGROUP_CONTAINERS:
            if needle in cgroup:
                return name, [*evidence, f"/proc/1/cgroup mentions {needle}"]
        for marker, name in (("/run/.containerenv", "podman"), ("/.dockerenv", "docker")):
            if ctx.path(marker).exists():
                return name, [*evidence, marker]
    return container, evidence


def _detect_virtualization(ctx: Context, facts: SystemFacts) -> None:
    """Fill in the hypervisor and the container, with the evidence for each."""
    if ctx.live and shutil.which("systemd-detect-virt"):
        vm = ctx.run(["systemd-detect-virt", "--vm"], timeout_s=3)
        if vm.exit_code is not None and vm.stdout.strip():
            facts.virtualization = vm.stdout.strip()
            facts.evidence.append("systemd-detect-virt --vm")
    facts.container, evidence = detect_container(ctx)
    facts.evidence += evidence
    if facts.virtualization == "none":
        dmi = " ".join(
            (ctx.read_optional(f"/sys/class/dmi/id/{name}") or "").strip().lower()
            for name in ("sys_vendor", "product_name", "bios_vendor")
        )
        for needle, name in _DMI_VIRT:
            if needle in dmi:
                facts.virtualization = name
                facts.evidence.append(f"DMI says {needle}")
                break
        else:
            flags = ctx.read_optional("/proc/cpuinfo", max_bytes=64 * 1024) or ""
            if " hypervisor" in flags:
                facts.virtualization = "unknown hypervisor"
                facts.evidence.append("cpu flag 'hypervisor'")


def format_duration(seconds: float) -> str:
    """12 d 3 h, 4 h 10 min, 7 min."""
    minutes = int(seconds // 60)
    days, rem = divmod(minutes, 1440)
    hours, mins = divmod(rem, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {mins} min"
    return f"{mins} min"


def judge_system(facts: SystemFacts, thresholds: dict[str, Any]) -> Result:
    """Identity is informational; a very recent boot is worth pointing out."""
    os_name = facts.os_release.get("PRETTY_NAME") or facts.os_release.get("NAME") or "unknown OS"
    where = []
    if facts.virtualization != "none":
        where.append(f"VM ({facts.virtualization})")
    if facts.container != "none":
        where.append(f"container ({facts.container})")
    parts = [os_name, f"kernel {facts.kernel or 'unknown'}"]
    if facts.uptime_s is not None:
        parts.append(f"up {format_duration(facts.uptime_s)}")
    parts.append(", ".join(where) or "bare metal")
    findings = []
    recent = float(thresholds["recent_boot_minutes"]) * 60
    if facts.uptime_s is not None and facts.uptime_s < recent:
        findings.append(
            Finding(
                Severity.INFO,
                f"the node booted {format_duration(facts.uptime_s)} ago",
                "If the reboot was not planned, read the previous boot's journal "
                "(`journalctl -b -1 -p warning`) and the kernel log for the cause.",
                "/proc/uptime",
            )
        )
    data = {
        "os": os_name,
        "os_id": facts.os_release.get("ID", ""),
        "os_version": facts.os_release.get("VERSION_ID", ""),
        "kernel": facts.kernel,
        "kernel_build": facts.kernel_version,
        "hostname": facts.hostname,
        "uptime_s": facts.uptime_s,
        "virtualization": facts.virtualization,
        "container": facts.container,
        "detected_by": facts.evidence,
    }
    return Result.from_findings(findings, ok=", ".join(parts), data=data)


@check(
    id="system.info",
    category="system",
    title="System identity",
    description="OS release, kernel, hostname, uptime, and whether this is a VM or a container.",
    timeout_s=8,
    thresholds={"recent_boot_minutes": 60},
)
def system_info(ctx: Context) -> Result:
    """Who and what this node is."""
    facts = read_system(ctx)
    if (text := ctx.read_optional("/etc/os-release")) is not None:
        ctx.artifact("os-release", text)
    return judge_system(facts, ctx.thresholds)
