"""Kernel checks: release and io_uring availability.

The kernel log and the checks built on it (kernel.log, memory.oom) are in kernel_log.py.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field, replace
from typing import Any

from snapshot_agent.core.check import check
from snapshot_agent.core.context import Context
from snapshot_agent.core.remedies import sysctl_fix
from snapshot_agent.core.results import Finding, Result, Severity
from snapshot_agent.node.processes import BROKER_NAME, BrokerProcess, find_brokers, uses_io_uring
from snapshot_agent.node.procfs import read_int

# --------------------------------------------------------------------------------------
# Kernel version
# --------------------------------------------------------------------------------------


def parse_kernel_version(text: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) of a release like '6.1.0-18-amd64' or '5.15.0-1051-aws'."""
    match = re.match(r"\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?", text)
    if not match:
        return None
    return int(match[1]), int(match[2] or 0), int(match[3] or 0)


def format_version(version: tuple[int, int, int]) -> str:
    """'6.1.0' -> '6.1', '5.15.3' stays."""
    major, minor, patch = version
    return f"{major}.{minor}" + (f".{patch}" if patch else "")


@dataclass(frozen=True)
class KernelRelease:
    """What /proc/sys/kernel says about the running kernel."""

    release: str  # as osrelease prints it, '' when unreadable
    build: str = ""  # /proc/sys/kernel/version: '#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 ...'
    # Running brokers as (pid, uses io_uring: True / False / None unknown); read only when
    # the kernel is below fail_below, where a pre-0.6 (tokio) broker changes the verdict.
    brokers: tuple[tuple[int, bool | None], ...] = ()


def read_broker_runtimes(ctx: Context) -> tuple[tuple[int, bool | None], ...]:
    """Every running broker's pid and whether it uses io_uring (an io_uring fd or shards)."""
    return tuple((b.pid, uses_io_uring(ctx, b.pid)) for b in find_brokers(ctx))


def read_kernel_release(ctx: Context) -> KernelRelease:
    """Read the running kernel's release and build string."""
    return KernelRelease(
        (ctx.read_optional("/proc/sys/kernel/osrelease") or "").strip(),
        (ctx.read_optional("/proc/sys/kernel/version") or "").strip(),
    )


def judge_kernel_version(facts: KernelRelease, thresholds: dict[str, Any]) -> Result:
    """Iggy >= 0.6 runs on io_uring: < fail_below cannot run it, < warn_below is not advised."""
    if not facts.release:
        return Result.skipped("cannot read /proc/sys/kernel/osrelease")
    version = parse_kernel_version(facts.release)
    if version is None:
        return Result.skipped(f"kernel release {facts.release!r} is not of the form X.Y[.Z]")
    limits = {}
    for key in ("fail_below", "warn_below"):
        limit = parse_kernel_version(str(thresholds[key]))
        if limit is None:
            return Result.skipped(f"threshold {key}={thresholds[key]!r} is not a kernel version")
        limits[key] = limit
    data = {
        "release": facts.release,
        "version": format_version(version),
        "build": facts.build,
        "fail_below": format_version(limits["fail_below"]),
        "warn_below": format_version(limits["warn_below"]),
        "brokers": [{"pid": pid, "io_uring": used} for pid, used in facts.brokers],
    }
    shown = f"kernel {facts.release}"
    remedy = (
        "Upgrade to a kernel >= {want}: on Debian 12 the stock 6.1 kernel "
        "(`apt install linux-image-amd64`), on Ubuntu the HWE kernel "
        "(`apt install linux-generic-hwe-22.04`), on RHEL/Rocky 9 the 5.14 kernel is too old "
        "(use ELRepo kernel-ml or a newer release), on Amazon Linux 2023 the 6.1 kernel; "
        "then reboot into it and re-run this check."
    )
    findings: list[Finding] = []
    # Every running broker shows threads and none is a shard or has an io_uring fd: a
    # pre-0.6 broker on tokio, which runs on this kernel; only an upgrade would need more.
    legacy = [pid for pid, used in facts.brokers if used is False]
    if version < limits["fail_below"] and facts.brokers and len(legacy) == len(facts.brokers):
        pids = ", ".join(str(pid) for pid in legacy)
        findings.append(
            Finding(
                Severity.WARN,
                f"{shown} is older than {data['fail_below']}: the running {BROKER_NAME} "
                f"(pid {pids}) uses no io_uring (no io_uring fd, no shard-N threads: a pre-0.6 "
                f"broker on tokio), which runs here, but upgrading Iggy to 0.6+ will need "
                f"kernel {data['fail_below']}+ (io_uring with IORING_SETUP_COOP_TASKRUN)",
                "Before upgrading Iggy to 0.6 or later: " + remedy.format(want=data["warn_below"]),
                "/proc/sys/kernel/osrelease",
            )
        )
    elif version < limits["fail_below"]:
        findings.append(
            Finding(
                Severity.FAIL,
                f"{shown} is older than {data['fail_below']}: Iggy >= 0.6 needs io_uring with "
                "IORING_SETUP_COOP_TASKRUN (5.19+) and will not start (0.5.x on tokio would)",
                remedy.format(want=data["warn_below"]),
                "/proc/sys/kernel/osrelease",
            )
        )
    elif version < limits["warn_below"]:
        findings.append(
            Finding(
                Severity.WARN,
                f"{shown} is older than the recommended {data['warn_below']}: it runs Iggy, but "
                "io_uring on older kernels lacks later fixes and performance work",
                remedy.format(want=data["warn_below"]),
                "/proc/sys/kernel/osrelease",
            )
        )
    return Result.from_findings(
        findings,
        ok=f"{shown} (>= {data['warn_below']}, io_uring as Iggy needs it)",
        data=data,
    )


@check(
    id="kernel.version",
    category="kernel",
    title="Kernel version",
    description="Running kernel release against what Iggy's io_uring runtime needs (5.19+, 6.1+).",
    timeout_s=5,
    thresholds={"fail_below": "5.19", "warn_below": "6.1"},
)
def kernel_version(ctx: Context) -> Result:
    """The kernel release, judged against Iggy's io_uring requirements."""
    facts = read_kernel_release(ctx)
    version = parse_kernel_version(facts.release)
    fail_below = parse_kernel_version(str(ctx.thresholds["fail_below"]))
    if version is not None and fail_below is not None and version < fail_below:
        facts = replace(facts, brokers=read_broker_runtimes(ctx))
    return judge_kernel_version(facts, ctx.thresholds)


# --------------------------------------------------------------------------------------
# LSM confinement of the broker (shared with security.py)
# --------------------------------------------------------------------------------------


#: SELinux domains that are not confined in practice.
UNCONFINED_SELINUX_TYPES = frozenset(
    {"unconfined_t", "unconfined_service_t", "spc_t", "kernel_t", "initrc_t", "init_t"}
)


@dataclass(frozen=True)
class Confinement:
    """How one broker process is confined by its LSM label."""

    lsm: str  # 'apparmor', 'selinux' or ''
    name: str  # AppArmor profile or SELinux type
    mode: str  # 'enforce', 'complain', 'permissive'... ('' when unknown)
    confined: bool


def parse_label(label: str, selinux_enforcing: bool | None) -> Confinement:
    """Interpret /proc/<pid>/attr/current: 'docker-default (enforce)' or 'u:r:type:s0'."""
    label = label.strip()
    if not label or label == "unconfined":
        return Confinement("", "unconfined", "", False)
    if label.count(":") >= 2 and " " not in label:
        selinux_type = label.split(":")[2]
        mode = (
            "enforcing"
            if selinux_enforcing
            else "permissive"
            if selinux_enforcing is not None
            else ""
        )
        return Confinement(
            "selinux", selinux_type, mode, selinux_type not in UNCONFINED_SELINUX_TYPES
        )
    match = re.match(r"(.+?)\s*\((\w+)\)$", label)
    name, mode = (match[1], match[2]) if match else (label, "")
    return Confinement("apparmor", name, mode, mode not in ("unconfined", ""))


# --------------------------------------------------------------------------------------
# io_uring availability
# --------------------------------------------------------------------------------------


@dataclass
class IoUringFacts:
    """What decides whether the broker may create io_uring instances."""

    disabled: str | None = None  # kernel.io_uring_disabled raw value; None when absent
    group: int | None = None  # kernel.io_uring_group; -1 means no group
    group_name: str = ""
    kernel_config: str | None = None  # 'y', 'n' or None when the config is not readable
    config_source: str = ""
    brokers: list[BrokerProcess] = field(default_factory=list)
    # pid -> the broker uses io_uring (an io_uring fd or shard-N threads); None: unknown
    io_uring_use: dict[int, bool | None] = field(default_factory=dict)


def parse_group_file(text: str) -> dict[int, str]:
    """/etc/group as gid -> name."""
    out: dict[int, str] = {}
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 3 and parts[2].isdigit():
            out.setdefault(int(parts[2]), parts[0])
    return out


def config_io_uring(config_text: str) -> str | None:
    """'y' / 'n' for CONFIG_IO_URING in a kernel .config text, None when not mentioned."""
    for line in config_text.splitlines():
        if line.startswith("CONFIG_IO_URING="):
            return "y" if line.split("=", 1)[1].strip() in ("y", "m") else "n"
        if line.strip() == "# CONFIG_IO_URING is not set":
            return "n"
    return None


def _read_kernel_config(ctx: Context, release: str) -> tuple[str | None, str]:
    """CONFIG_IO_URING from /boot/config-<release> or /proc/config.gz."""
    if release:
        text = ctx.read_optional(f"/boot/config-{release}", 2 * 1024 * 1024)
        if text is not None:
            return config_io_uring(text), f"/boot/config-{release}"
    try:
        with ctx.path("/proc/config.gz").open("rb") as fh:
            raw = fh.read(1024 * 1024)
        # Bounded inflate: a kernel config is ~300 KB.
        text = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(raw, 4 * 1024 * 1024)
    except (OSError, zlib.error):
        return None, ""
    return config_io_uring(text.decode("utf-8", "replace")), "/proc/config.gz"


def read_io_uring(ctx: Context) -> IoUringFacts:
    """io_uring sysctls, the kernel config, and the broker processes' seccomp and groups."""
    facts = IoUringFacts()
    raw = ctx.read_optional("/proc/sys/kernel/io_uring_disabled")
    facts.disabled = raw.strip() if raw is not None else None
    facts.group = read_int(ctx, "/proc/sys/kernel/io_uring_group")
    if facts.group is not None and facts.group >= 0:
        groups = parse_group_file(ctx.read_optional("/etc/group") or "")
        facts.group_name = groups.get(facts.group, "")
    release = (ctx.read_optional("/proc/sys/kernel/osrelease") or "").strip()
    facts.kernel_config, facts.config_source = _read_kernel_config(ctx, release)
    facts.brokers = find_brokers(ctx)
    facts.io_uring_use = {b.pid: uses_io_uring(ctx, b.pid) for b in facts.brokers}
    return facts


def judge_io_uring(facts: IoUringFacts, thresholds: dict[str, Any]) -> Result:
    """Can the broker create io_uring rings: kernel config, sysctl, group, seccomp."""
    findings: list[Finding] = []
    subject = "/proc/sys/kernel/io_uring_disabled"
    if facts.kernel_config == "n":
        findings.append(
            Finding(
                Severity.FAIL,
                f"the kernel is built without io_uring (CONFIG_IO_URING not set, "
                f"{facts.config_source}): Iggy >= 0.6 cannot start",
                "Boot a distribution kernel built with CONFIG_IO_URING=y (every mainstream "
                "distribution kernel >= 5.19 has it); hardened or minimal kernels may leave it "
                "out.",
                facts.config_source,
            )
        )
    group_text = "processes with CAP_SYS_ADMIN (kernel.io_uring_group is -1: no group)"
    if facts.group is not None and facts.group >= 0:
        group_text = (
            f"group {facts.group_name or '?'} (gid {facts.group}) and CAP_SYS_ADMIN processes"
        )
    if facts.disabled is None:
        findings.append(
            Finding(
                Severity.INFO,
                "kernel.io_uring_disabled does not exist (kernels before 6.6): io_uring cannot "
                "be switched off by sysctl here",
                "",
                subject,
            )
        )
    elif facts.disabled == "2":
        findings.append(
            Finding(
                Severity.FAIL,
                "kernel.io_uring_disabled = 2: io_uring is disabled for every process, so "
                "Iggy >= 0.6 cannot create its rings and will not start",
                "Allow it: "
                + sysctl_fix(
                    "kernel.io_uring_disabled",
                    0,
                    "Or set 1 with `kernel.io_uring_group` = the broker's group to allow only "
                    "the broker. Check first which hardening baseline set 2 (grep -r io_uring "
                    "/etc/sysctl.d /usr/lib/sysctl.d).",
                ),
                subject,
            )
        )
    elif facts.disabled == "1":
        who = []
        for broker in facts.brokers:
            if broker.has_sys_admin:
                who.append(f"pid {broker.pid} has CAP_SYS_ADMIN, so it is allowed")
            elif facts.group is not None and facts.group >= 0 and facts.group in broker.gids:
                who.append(f"pid {broker.pid} (uid {broker.uid}) is in that group, so allowed")
            else:
                who.append(
                    f"pid {broker.pid} (uid {broker.uid}) is NOT in it and lacks CAP_SYS_ADMIN: "
                    "rings it already has keep working, but a restart will fail"
                )
        findings.append(
            Finding(
                Severity.WARN,
                f"kernel.io_uring_disabled = 1: only {group_text} may create io_uring rings"
                + (f"; {BROKER_NAME} " + "; ".join(who) if who else f"; {BROKER_NAME} not running"),
                "Make sure the broker's service user is in that group (`usermod -aG GROUP "
                "iggy` and `SupplementaryGroups=GROUP` in the unit) and set the group: "
                + sysctl_fix("kernel.io_uring_group", "<gid>")
                + " Or allow everyone: "
                + sysctl_fix("kernel.io_uring_disabled", 0),
                subject,
            )
        )
    elif facts.disabled != "0":
        findings.append(
            Finding(
                Severity.WARN,
                f"kernel.io_uring_disabled has an unexpected value {facts.disabled!r}",
                "Read it with `sysctl kernel.io_uring_disabled`; 0 allows io_uring.",
                subject,
            )
        )
    for broker in facts.brokers:
        in_use = facts.io_uring_use.get(broker.pid)
        if broker.seccomp == 2 and in_use:
            findings.append(
                Finding(
                    Severity.INFO,
                    f"{BROKER_NAME} (pid {broker.pid}) runs under a seccomp filter and already "
                    "uses io_uring (an io_uring fd or shard-N threads): the filter lets it through",
                    "",
                    f"/proc/{broker.pid}/status",
                )
            )
        elif broker.seccomp == 2:
            seen = (
                "it shows no io_uring use (no io_uring fd, no shard-N threads)"
                if in_use is False
                else "its fds and threads could not be read to see whether it uses io_uring"
            )
            findings.append(
                Finding(
                    Severity.WARN,
                    f"{BROKER_NAME} (pid {broker.pid}) runs under a seccomp filter, which can "
                    "block io_uring_setup/io_uring_enter/io_uring_register: Docker 25+ and "
                    f"containerd 1.7+ default profiles block them since late 2023; {seen}",
                    "If the broker logs 'Operation not permitted' creating its rings, run the "
                    "container with a seccomp profile that allows the three io_uring_* syscalls "
                    "(docker run --security-opt seccomp=/path/iggy-seccomp.json; Kubernetes "
                    "securityContext.seccompProfile Localhost), or as a last resort "
                    "seccomp=unconfined; for systemd, remove io_uring from SystemCallFilter=.",
                    f"/proc/{broker.pid}/status",
                )
            )
        confinement = parse_label(broker.label, None)
        if confinement.confined and confinement.mode not in ("complain", "permissive"):
            findings.append(
                Finding(
                    Severity.INFO,
                    f"{BROKER_NAME} (pid {broker.pid}) is confined by {confinement.lsm} "
                    f"{broker.label!r}; its rules can deny io_uring too (see security.lsm)",
                    "",
                    f"/proc/{broker.pid}/attr/current",
                )
            )
    if not facts.brokers:
        findings.append(
            Finding(
                Severity.INFO,
                f"{BROKER_NAME} is not running here: its seccomp filter and groups were not read",
                "",
                "/proc",
            )
        )
    state = {
        None: "no io_uring_disabled sysctl",
        "0": "io_uring_disabled = 0",
        "1": "io_uring_disabled = 1",
        "2": "io_uring_disabled = 2",
    }.get(facts.disabled, f"io_uring_disabled = {facts.disabled}")
    data = {
        "io_uring_disabled": facts.disabled,
        "io_uring_group": facts.group,
        "io_uring_group_name": facts.group_name,
        "config_io_uring": facts.kernel_config,
        "config_source": facts.config_source,
        "brokers": [
            {
                "pid": b.pid,
                "uid": b.uid,
                "groups": list(b.gids),
                "seccomp": b.seccomp,
                "no_new_privs": b.no_new_privs,
                "cap_sys_admin": b.has_sys_admin,
                "lsm_label": b.label,
                "io_uring_in_use": facts.io_uring_use.get(b.pid),
            }
            for b in facts.brokers
        ],
    }
    filtered = sum(1 for b in facts.brokers if b.seccomp == 2)
    if not facts.brokers:
        brokers = f"{BROKER_NAME} not running"
    elif filtered:
        # Shown only on a pass, where every filtered broker already uses io_uring.
        brokers = (
            f"{len(facts.brokers)} {BROKER_NAME}, {filtered} under a seccomp filter that lets "
            "io_uring through"
        )
    else:
        brokers = f"{len(facts.brokers)} {BROKER_NAME} without a seccomp filter"
    return Result.from_findings(findings, ok=f"io_uring allowed ({state}); {brokers}", data=data)


@check(
    id="kernel.io_uring",
    category="kernel",
    title="io_uring availability",
    description="Whether the broker may create io_uring rings: kernel config, "
    "kernel.io_uring_disabled/io_uring_group, seccomp filter of iggy-server.",
    timeout_s=5,
)
def kernel_io_uring(ctx: Context) -> Result:
    """Judge what could stop Iggy's io_uring runtime from starting."""
    return judge_io_uring(read_io_uring(ctx), ctx.thresholds)
