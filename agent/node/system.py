"""What the node says about itself: OS release, kernel, uptime, hypervisor and container.

system.info reports these facts; system.virtualization and time.sync need to know
whether this is a VM or a container.
"""

from __future__ import annotations

import math
import os
import re
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
#: Clock sources only a hypervisor offers (/sys/devices/system/clocksource): they name the
#: hypervisor where there is no DMI table (Firecracker, cloud-hypervisor microVMs).
_CLOCKSOURCE_VIRT = (
    ("kvm-clock", "kvm"),
    ("hyperv_clocksource", "microsoft"),
    ("xen", "xen"),
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


#: Inode numbers the kernel gives its initial namespaces (include/uapi/linux/nsfs.h; fixed
#: since Linux 3.8, cgroup namespaces since 4.6). PID 1 of a host, bare metal or VM, is in
#: these; PID 1 of a container is in namespaces its runtime made.
INIT_NAMESPACES = {"pid": 0xEFFFFFFC, "user": 0xEFFFFFFD, "cgroup": 0xEFFFFFFB}
#: The initial mount namespace has a fixed inode only on recent kernels (6.18 has it): equal
#: proves the host's mount namespace, different proves nothing on an older kernel.
INIT_MNT_NAMESPACE = 0xEFFFFFF8
_NS_LINK = re.compile(r"^(\w+):\[(\d+)\]$")
_SCHED_PID = re.compile(r"\((\d+), #threads")
#: cgroup paths container runtimes give their containers (not dockerd's own docker.service).
_CGROUP_RUNTIMES = (
    (re.compile(r"kubepods"), "kubernetes"),
    (re.compile(r"libpod[-_]"), "podman"),
    (re.compile(r"docker[-/][0-9a-f]{12,64}"), "docker"),
    (re.compile(r"cri-containerd-[0-9a-f]{12,}"), "containerd"),
    (re.compile(r"/lxc(?:\.payload)?[./]"), "lxc"),
)
#: Files a runtime or an image build leaves behind; they survive into VM images built from
#: container images, so they only name a runtime, never prove one.
_MARKER_FILES = (("/run/.containerenv", "podman"), ("/.dockerenv", "docker"))


@dataclass
class ContainerSignals:
    """What the node shows about PID 1's isolation, before anything is concluded."""

    namespaces: dict[str, int] = field(default_factory=dict)  # kind -> namespace inode
    namespaces_of: str = "PID 1"  # or "this process" when PID 1's are unreadable
    sched_pid: int | None = None  # PID 1's pid as the first line of /proc/1/sched gives it
    cgroups: dict[str, str] = field(default_factory=dict)  # "PID 1"/"this process" -> file
    claims: list[tuple[str, str]] = field(default_factory=list)  # (who says so, technology)
    markers: list[tuple[str, str]] = field(default_factory=list)  # (marker file, technology)


@dataclass
class ContainerFacts:
    """Whether this node is a container, what decided it, and what was overruled."""

    name: str = "none"  # container technology, "unknown", or "none"
    evidence: list[str] = field(default_factory=list)
    overruled: list[str] = field(default_factory=list)  # claims the namespaces contradict


def _namespace_inode(ctx: Context, pid: str, kind: str) -> int | None:
    """The inode of /proc/<pid>/ns/<kind> ('pid:[4026531836]'); None when unreadable."""
    path = ctx.path(f"/proc/{pid}/ns/{kind}")
    try:
        text = os.readlink(path)
    except OSError:  # EACCES without ptrace access to PID 1, or missing
        return None
    match = _NS_LINK.match(text.strip())
    return int(match.group(2)) if match and match.group(1) == kind else None


def _read_namespaces(ctx: Context, signals: ContainerSignals) -> None:
    """PID 1's namespaces; this process's PID namespace when PID 1's cannot be read."""
    for kind in (*INIT_NAMESPACES, "mnt"):
        inode = _namespace_inode(ctx, "1", kind)
        if inode is not None:
            signals.namespaces[kind] = inode
    if "pid" not in signals.namespaces:
        # Only the PID namespace: the agent's own user or cgroup namespace may be its
        # service sandbox (PrivateUsers=, ProtectControlGroups=private), not a container.
        inode = _namespace_inode(ctx, "self", "pid")
        if inode is not None:
            signals.namespaces = {"pid": inode}
            signals.namespaces_of = "this process"


def _container_env(environ: str) -> str:
    """The container= variable container managers give PID 1 ('' when unset)."""
    for item in environ.split("\0"):
        if item.startswith("container="):
            return item.partition("=")[2].strip()
    return ""


def read_container_signals(ctx: Context) -> ContainerSignals:
    """Namespaces and cgroups of PID 1, /proc/1/sched, and what systemd and markers claim."""
    signals = ContainerSignals()
    _read_namespaces(ctx, signals)
    sched = _SCHED_PID.search((ctx.read_optional("/proc/1/sched", 256) or "").split("\n")[0])
    signals.sched_pid = int(sched.group(1)) if sched else None
    for who, pid in (("PID 1", "1"), ("this process", "self")):
        text = ctx.read_optional(f"/proc/{pid}/cgroup", 64 * 1024)
        if text:
            signals.cgroups[who] = text
    if ctx.live and shutil.which("systemd-detect-virt"):
        res = ctx.run(["systemd-detect-virt", "--container"], timeout_s=3)
        if res.exit_code is not None and res.stdout.strip() not in ("", "none"):
            signals.claims.append(("systemd-detect-virt --container", res.stdout.strip()))
    marker = (ctx.read_optional("/run/systemd/container", 256) or "").strip()
    if marker:
        signals.claims.append(("/run/systemd/container", marker))
    env = _container_env(ctx.read_optional("/proc/1/environ", 64 * 1024) or "")
    if env:
        signals.claims.append(("container= in PID 1's environment", env))
    signals.markers = [(m, name) for m, name in _MARKER_FILES if ctx.path(m).exists()]
    return signals


def _cgroup_runtime(text: str) -> tuple[str, str] | None:
    """(technology, cgroup path) when a cgroup file names a container runtime's cgroup."""
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        for pattern, name in _CGROUP_RUNTIMES:
            if pattern.search(path):
                return name, path
    return None


def _isolation(signals: ContainerSignals) -> tuple[list[str], list[str]]:
    """(what shows a container, what shows the host) from namespaces, sched and cgroups."""
    inside: list[str] = []
    host: list[str] = []
    who = signals.namespaces_of
    for kind, init in INIT_NAMESPACES.items():
        inode = signals.namespaces.get(kind)
        if inode is None:
            continue
        if inode != init:
            inside.append(
                f"{who} is in a {kind} namespace of its own ({kind}:[{inode}]; the "
                f"host's is {kind}:[{init}])"
            )
        elif kind == "pid":
            host.append(f"{who} is in the host's PID namespace (pid:[{inode}])")
    if signals.namespaces.get("mnt") == INIT_MNT_NAMESPACE:
        host.append(f"PID 1 is in the host's mount namespace (mnt:[{INIT_MNT_NAMESPACE}])")
    if signals.sched_pid not in (None, 1):
        inside.append(f"/proc/1/sched gives PID 1 the host's pid {signals.sched_pid}")
    for owner, text in signals.cgroups.items():
        runtime = _cgroup_runtime(text)
        if runtime:
            inside.append(f"{owner}'s cgroup {runtime[1]} is a {runtime[0]} container's")
    return inside, host


def _runtime_name(signals: ContainerSignals) -> str:
    """The container technology: from a runtime's cgroup, then claims, then marker files."""
    for text in signals.cgroups.values():
        runtime = _cgroup_runtime(text)
        if runtime:
            return runtime[0]
    named = [*signals.claims, *signals.markers]
    return named[0][1] if named else "unknown"


def judge_container(signals: ContainerSignals) -> ContainerFacts:
    """A container when namespaces, sched or cgroups show one; marker files only corroborate.

    When PID 1 is in the host's PID namespace, claims (a /.dockerenv baked into a VM image,
    systemd-detect-virt trusting it) are overruled. Only when no namespace could be read
    (a fixture tree without /proc/*/ns) do the claims and marker files decide.
    """
    inside, host = _isolation(signals)
    said = [f"{source} says {name}" for source, name in [*signals.claims, *signals.markers]]
    if inside:
        return ContainerFacts(_runtime_name(signals), inside + said)
    if host:
        overruled = [f"{claim}, overruled: {host[0]}" for claim in said]
        return ContainerFacts("none", host, overruled)
    if signals.claims:
        source, name = signals.claims[0]
        return ContainerFacts(name, [f"{source} (namespaces unreadable)"])
    if signals.markers:
        marker, name = signals.markers[0]
        return ContainerFacts(name, [f"{marker} (a marker file only; namespaces unreadable)"])
    return ContainerFacts()


def read_container(ctx: Context) -> ContainerFacts:
    """Whether this node is a container, judged from namespaces and cgroups."""
    return judge_container(read_container_signals(ctx))


def detect_container(ctx: Context) -> tuple[str, list[str]]:
    """The container technology this node runs in ('none' on a host), and the evidence."""
    facts = read_container(ctx)
    return facts.name, facts.evidence + facts.overruled


def _hypervisor_from_files(ctx: Context) -> tuple[str, str] | None:
    """(hypervisor, evidence) from DMI, /sys/hypervisor, the clock sources or CPU flags."""
    dmi = " ".join(
        (ctx.read_optional(f"/sys/class/dmi/id/{name}") or "").strip().lower()
        for name in ("sys_vendor", "product_name", "bios_vendor")
    )
    for needle, name in _DMI_VIRT:
        if needle in dmi:
            return name, f"DMI says {needle}"
    xen = (ctx.read_optional("/sys/hypervisor/type", 64) or "").strip()
    if xen:
        return xen, f"/sys/hypervisor/type says {xen}"
    sources = ctx.read_optional(
        "/sys/devices/system/clocksource/clocksource0/available_clocksource", 4096
    )
    for needle, name in _CLOCKSOURCE_VIRT:
        if needle in (sources or "").split():
            return name, f"clock source {needle} is available"
    flags = ctx.read_optional("/proc/cpuinfo", max_bytes=64 * 1024) or ""
    if " hypervisor" in flags:
        return "unknown hypervisor", "cpu flag 'hypervisor'"
    return None


def _detect_virtualization(ctx: Context, facts: SystemFacts) -> None:
    """Fill in the hypervisor and the container, with the evidence for each."""
    if ctx.live and shutil.which("systemd-detect-virt"):
        vm = ctx.run(["systemd-detect-virt", "--vm"], timeout_s=3)
        if vm.exit_code is not None and vm.stdout.strip() not in ("", "none"):
            facts.virtualization = vm.stdout.strip()
            facts.evidence.append("systemd-detect-virt --vm")
    facts.container, evidence = detect_container(ctx)
    facts.evidence += evidence
    if facts.virtualization == "none" and (found := _hypervisor_from_files(ctx)):
        facts.virtualization = found[0]
        facts.evidence.append(found[1])
