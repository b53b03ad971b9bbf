"""What the node says about itself: OS release, kernel, uptime, hypervisor and container.

system.info reports these facts; system.virtualization and time.sync need to know
whether this is a VM or a container.
"""

from __future__ import annotations

import math
import shlex
import shutil
from dataclasses import dataclass, field

from snapshot_agent.core.context import Context

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


def placement(virtualization: str, container: str) -> str:
    """'VM (kvm), container (docker)', 'VM (xen)' or 'bare metal'."""
    where = []
    if virtualization != "none":
        where.append(f"VM ({virtualization})")
    if container != "none":
        where.append(f"container ({container})")
    return ", ".join(where) or "bare metal"


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
