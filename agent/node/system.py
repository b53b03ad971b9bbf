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
from snapshot_agent.node.mounts import decode_mount_field
from snapshot_agent.node.processes import read_stat

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
    container: str = "none"  # container technology, "none", or "unknown" (UNDETERMINED)
    evidence: list[str] = field(default_factory=list)


def parse_kernel_version(text: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) of a release like '6.1.0-18-amd64' or '5.15.0-1051-aws'."""
    match = re.match(r"\s*([0-9]+)(?:\.([0-9]+))?(?:\.([0-9]+))?", text)
    if not match:
        return None
    return int(match[1]), int(match[2] or 0), int(match[3] or 0)


def read_kernel_version(ctx: Context) -> tuple[int, int, int] | None:
    """The running kernel's version from /proc/sys/kernel/osrelease; None when unknown."""
    return parse_kernel_version(ctx.read_optional("/proc/sys/kernel/osrelease", 256) or "")


def placement(virtualization: str, container: str) -> str:
    """'VM (kvm), container (docker)', 'bare metal', or 'container or host: undetermined'."""
    where = []
    if virtualization != "none":
        where.append(f"VM ({virtualization})")
    if container == UNDETERMINED:
        where.append("container or host: undetermined")
    elif container != "none":
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
#: The initial UTS namespace (fixed since 3.8). Not a proof about PID 1: a pod sharing the
#: host's network shares its UTS namespace too, and a ProtectHostname= unit has its own.
INIT_UTS_NAMESPACE = 0xEFFFFFFE
#: The initial mount namespace has a fixed inode only on recent kernels (6.18 has it): equal
#: proves the host's mount namespace, different proves nothing on an older kernel.
INIT_MNT_NAMESPACE = 0xEFFFFFF8
#: ContainerFacts.name when the evidence conflicts: maybe a container, maybe the host.
UNDETERMINED = "unknown"
#: ContainerFacts.name for a proven container whose runtime nothing names.
UNNAMED_RUNTIME = "unknown runtime"
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
#: Mount points a runtime bind-mounts into every container from its own state directory;
#: a host's /etc/hosts is never mounted from there.
_RUNTIME_MOUNT_POINTS = ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/dev/termination-log")
#: Where those files come from (the path inside their file system, so /var/lib/kubelet on
#: a partition of its own matches too).
_RUNTIME_MOUNT_SOURCES = (
    (re.compile(r"/pods/[0-9a-f-]{36}/(?:etc-hosts|containers/|volumes/)"), "kubernetes"),
    (re.compile(r"/overlay-containers/[0-9a-f]{64}/userdata/"), "podman"),
    (re.compile(r"/containers/[0-9a-f]{64}/(?:hostname|hosts|resolv\.conf)$"), "docker"),
    (re.compile(r"/io\.containerd\.grpc\.v1\.cri/sandboxes/[0-9a-f]{64}/"), "containerd"),
    (re.compile(r"/nerdctl/"), "containerd"),
)
#: The comm (15 characters at most) of the process a runtime leaves as a container's parent.
_SHIMS = (
    ("containerd-shim", "containerd"),  # containerd-shim-runc-v2 and its siblings
    ("docker-containe", "docker"),  # docker-containerd-shim (Docker before 18.09)
    ("conmon", "podman"),  # podman and CRI-O
    ("lxc-start", "lxc"),
    ("systemd-nspawn", "systemd-nspawn"),
)
#: Root file systems made of image layers.
_LAYERED_ROOTS = ("overlay", "aufs", "fuse.fuse-overlayfs")
_MAX_ANCESTORS = 64


@dataclass
class ContainerSignals:
    """What the node shows about PID 1's isolation and the agent's, before any conclusion."""

    namespaces: dict[str, int] = field(default_factory=dict)  # kind -> namespace inode
    namespaces_of: str = "PID 1"  # or "this process" when PID 1's are unreadable
    sched_pid: int | None = None  # PID 1's pid as the first line of /proc/1/sched gives it
    cgroups: dict[str, str] = field(default_factory=dict)  # "PID 1"/"this process" -> file
    claims: list[tuple[str, str]] = field(default_factory=list)  # (who says so, technology)
    markers: list[tuple[str, str]] = field(default_factory=list)  # (marker file, technology)
    own_namespaces: dict[str, int] = field(default_factory=dict)  # this process's pid/mnt/...
    root_fs: str = ""  # file system type of this process's / (mountinfo); "" when unread
    runtime_mounts: list[tuple[str, str, str]] = field(default_factory=list)  # point, from, tech
    ancestors: list[tuple[int, str]] = field(default_factory=list)  # (pid, comm), parent first


@dataclass
class ContainerFacts:
    """Whether this node is a container, what decided it, and what was overruled."""

    name: str = "none"  # container technology, "unknown runtime", "unknown" or "none"
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
    """PID 1's namespaces and this process's; its PID namespace stands in for PID 1's."""
    for kind in (*INIT_NAMESPACES, "mnt", "uts"):
        inode = _namespace_inode(ctx, "1", kind)
        if inode is not None:
            signals.namespaces[kind] = inode
    for kind in ("pid", "mnt", "uts", "cgroup"):
        inode = _namespace_inode(ctx, "self", kind)
        if inode is not None:
            signals.own_namespaces[kind] = inode
    if "pid" not in signals.namespaces and "pid" in signals.own_namespaces:
        # Only the PID namespace stands in: the agent's own user or cgroup namespace may be
        # its service sandbox (PrivateUsers=, ProtectControlGroups=private), and the host's
        # PID namespace may be a hostPID pod's, so _agent_hints weighs the rest.
        signals.namespaces = {"pid": signals.own_namespaces["pid"]}
        signals.namespaces_of = "this process"


def _container_env(environ: str) -> str:
    """The container= variable container managers give PID 1 ('' when unset)."""
    for item in environ.split("\0"):
        if item.startswith("container="):
            return item.partition("=")[2].strip()
    return ""


def parse_mountinfo_root(text: str) -> tuple[str, list[tuple[str, str, str]]]:
    """(file system type of /, runtime bind mounts) from /proc/<pid>/mountinfo."""
    root_fs = ""
    mounts: list[tuple[str, str, str]] = []
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, after = head.split(), tail.split()
        if not sep or len(fields) < 5 or not after:
            continue
        source, point = decode_mount_field(fields[3]), decode_mount_field(fields[4])
        if point == "/":
            root_fs = after[0]  # the last mount on / is the one in use
        if point in _RUNTIME_MOUNT_POINTS:
            for pattern, name in _RUNTIME_MOUNT_SOURCES:
                if pattern.search(source):
                    mounts.append((point, source, name))
                    break
    return root_fs, mounts


def _read_ancestors(ctx: Context) -> list[tuple[int, str]]:
    """(pid, comm) of this process's parent, its parent, ... up to PID 1; [] when unread."""
    own = (ctx.read_optional("/proc/self/stat", 4096) or "").rpartition(")")[2].split()
    try:
        pid = int(own[1])
    except (IndexError, ValueError):
        return []
    chain: list[tuple[int, str]] = []
    while pid > 0 and len(chain) < _MAX_ANCESTORS:
        stat = read_stat(ctx, pid)
        if stat is None:  # gone, or hidden (hidepid=): the chain is incomplete
            return []
        chain.append((pid, stat.name))
        if pid == 1:
            break
        pid = stat.ppid
    return chain


def read_container_signals(ctx: Context) -> ContainerSignals:
    """Namespaces, cgroups and mounts of PID 1 and this process, and what claims a container."""
    signals = ContainerSignals()
    _read_namespaces(ctx, signals)
    sched = _SCHED_PID.search((ctx.read_optional("/proc/1/sched", 256) or "").split("\n")[0])
    signals.sched_pid = int(sched.group(1)) if sched else None
    for who, pid in (("PID 1", "1"), ("this process", "self")):
        text = ctx.read_optional(f"/proc/{pid}/cgroup", 64 * 1024)
        if text:
            signals.cgroups[who] = text
    mountinfo = ctx.read_optional("/proc/self/mountinfo", 1024 * 1024) or ""
    signals.root_fs, signals.runtime_mounts = parse_mountinfo_root(mountinfo)
    signals.ancestors = _read_ancestors(ctx)
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


def _unified_path(text: str) -> str | None:
    """The cgroup v2 path ('0::/init.scope' -> '/init.scope'); None without a 0:: line."""
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:].strip()
    return None


def _shim(ancestors: list[tuple[int, str]]) -> tuple[int, str, str] | None:
    """(pid, comm, technology) of the first ancestor that is a container runtime's shim."""
    for pid, comm in ancestors:
        for prefix, name in _SHIMS:
            if comm.startswith(prefix):
                return pid, comm, name
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


def _agent_inside(signals: ContainerSignals) -> list[str]:
    """What proves the agent itself runs in a container though PID 1 may be the host's."""
    inside = [
        f"{point} is mounted from {source}, a {name} container's"
        for point, source, name in signals.runtime_mounts[:1]
    ]
    if shim := _shim(signals.ancestors):
        inside.append(
            f"this process descends from {shim[1]} (pid {shim[0]}), a {shim[2]} "
            "container's runtime shim"
        )
    return inside


def _private_cgroup_view(signals: ContainerSignals) -> str | None:
    """The agent sees its own cgroup as the root: it has a cgroup namespace of its own."""
    own = signals.own_namespaces.get("cgroup")
    if own is not None:
        if own == INIT_NAMESPACES["cgroup"]:
            return None  # its '0::/' is the real root (a VM's init, or no cgroup v2 at all)
        return f"this process is in a cgroup namespace of its own (cgroup:[{own}])"
    mine = _unified_path(signals.cgroups.get("this process", ""))
    init = _unified_path(signals.cgroups.get("PID 1", ""))
    if mine == "/" and init not in (None, "/"):
        return (
            f"this process sees its own cgroup as 0::/ but PID 1's as 0::{init}: a cgroup "
            "namespace of its own"
        )
    return None


def _agent_hints(signals: ContainerSignals) -> list[str]:
    """The agent's own isolation: a container shows it, and so may a service sandbox."""
    hints = [h for h in [_private_cgroup_view(signals)] if h]
    pid1 = signals.namespaces if signals.namespaces_of == "PID 1" else {}
    for kind, init in (("mnt", None), ("uts", INIT_UTS_NAMESPACE)):
        own = signals.own_namespaces.get(kind)
        other, whose = (pid1[kind], "PID 1's") if kind in pid1 else (init, "the host's")
        if own is not None and other is not None and own != other:
            hints.append(
                f"this process is in a {kind} namespace ({kind}:[{own}]) other than "
                f"{whose} ({kind}:[{other}])"
            )
    if signals.root_fs in _LAYERED_ROOTS:
        hints.append(f"this process's root file system is {signals.root_fs} (image layers)")
    return hints


def _agent_host(signals: ContainerSignals) -> list[str]:
    """What proves the agent itself is a host process, whatever sandbox it runs in."""
    host = []
    own_mnt = signals.own_namespaces.get("mnt")
    if own_mnt == INIT_MNT_NAMESPACE:
        host.append(f"this process is in the host's mount namespace (mnt:[{own_mnt}])")
    elif (
        own_mnt is not None
        and signals.namespaces_of == "PID 1"
        and own_mnt == signals.namespaces.get("mnt")
        and signals.namespaces.get("pid") == INIT_NAMESPACES["pid"]
    ):
        host.append(f"this process shares the host PID 1's mount namespace (mnt:[{own_mnt}])")
    in_host_pids = INIT_NAMESPACES["pid"] in (
        signals.own_namespaces.get("pid"),
        signals.namespaces.get("pid") if signals.namespaces_of == "this process" else None,
    )
    if in_host_pids and signals.ancestors and signals.ancestors[-1][0] == 1:
        host.append(
            f"none of this process's {len(signals.ancestors)} ancestors up to the host's "
            f"PID 1 ({signals.ancestors[-1][1]}) is a container runtime's shim"
        )
    return host


def _runtime_name(signals: ContainerSignals) -> str:
    """The container technology: a runtime's cgroup, mount or shim, then claims, markers."""
    for text in signals.cgroups.values():
        runtime = _cgroup_runtime(text)
        if runtime:
            return runtime[0]
    if signals.runtime_mounts:
        return signals.runtime_mounts[0][2]
    if shim := _shim(signals.ancestors):
        return shim[2]
    named = [*signals.claims, *signals.markers]
    return named[0][1] if named else UNNAMED_RUNTIME


def judge_container(signals: ContainerSignals) -> ContainerFacts:
    """A container when namespaces, sched, cgroups, mounts or a shim show one.

    When PID 1 is in the host's PID namespace, claims (a /.dockerenv baked into a VM image,
    systemd-detect-virt trusting it) are overruled. The agent's own isolation (a private
    cgroup, mount or UTS namespace, an overlay root) is a container's or a service
    sandbox's: a host process proof (the host's mount namespace, no shim up to PID 1)
    overrules it; otherwise it conflicts with the host's PID namespace and the answer is
    "unknown". Only when nothing could be read do the claims and marker files decide.
    """
    inside, host = _isolation(signals)
    inside += _agent_inside(signals)
    said = [f"{source} says {name}" for source, name in [*signals.claims, *signals.markers]]
    if inside:
        return ContainerFacts(_runtime_name(signals), inside + said)
    hints, own_host = _agent_hints(signals), _agent_host(signals)
    if hints and own_host:
        overruled = [f"{what}, overruled: {own_host[0]}" for what in hints + said]
        return ContainerFacts("none", host + own_host, overruled)
    if hints and host:
        return ContainerFacts(UNDETERMINED, hints + host + said)
    if host or own_host:
        overruled = [f"{claim}, overruled: {(host + own_host)[0]}" for claim in said]
        return ContainerFacts("none", host + own_host, overruled)
    if signals.claims:
        source, name = signals.claims[0]
        return ContainerFacts(name, [f"{source} (namespaces unreadable)"])
    if signals.markers:
        marker, name = signals.markers[0]
        return ContainerFacts(name, [f"{marker} (a marker file only; namespaces unreadable)"])
    if hints:
        return ContainerFacts(UNDETERMINED, hints)
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
