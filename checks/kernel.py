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
from snapshot_agent.core.grading import Band
from snapshot_agent.core.remedies import sysctl_fix
from snapshot_agent.core.results import Finding, Result, Severity
from snapshot_agent.node.confinement import parse_label
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


def kernel_version_limit(text: Any) -> tuple[int, int, int]:
    """A kernel.version threshold ('5.19') as a comparable version; ValueError if it is not one."""
    version = parse_kernel_version(str(text))
    if version is None:
        raise ValueError(f"{text!r} is not a kernel version")
    return version


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


#: Kernel releases below `fail_below` cannot run Iggy >= 0.6 (io_uring with
#: IORING_SETUP_COOP_TASKRUN); below `warn_below` they run it without later io_uring work.
KERNEL_BELOW = Band.minimum("below", warn="6.1", fail="5.19", parse=kernel_version_limit)

_VERSION_REMEDY = (
    "Upgrade to a kernel >= {want}: on Debian 12 the stock 6.1 kernel "
    "(`apt install linux-image-amd64`), on Ubuntu the HWE kernel "
    "(`apt install linux-generic-hwe-22.04`), on RHEL/Rocky 9 the 5.14 kernel is too old "
    "(use ELRepo kernel-ml or a newer release), on Amazon Linux 2023 the 6.1 kernel; "
    "then reboot into it and re-run this check."
)
_OSRELEASE = "/proc/sys/kernel/osrelease"


def below_versions(thresholds: dict[str, Any]) -> dict[str, str] | str:
    """fail_below and warn_below as shown ('5.19'), or why one is not a kernel version."""
    shown: dict[str, str] = {}
    for key in (KERNEL_BELOW.fail_key, KERNEL_BELOW.warn_key):
        raw = thresholds.get(key, KERNEL_BELOW.defaults()[key])
        limit = parse_kernel_version(str(raw))
        if limit is None:
            return f"threshold {key}={raw!r} is not a kernel version"
        shown[key] = format_version(limit)
    return shown


def only_pre_06_brokers(facts: KernelRelease) -> list[int]:
    """The brokers' pids when every running broker is a pre-0.6 one on tokio; else []."""
    # Threads seen, and none is a shard or has an io_uring fd: a pre-0.6 broker on tokio.
    legacy = [pid for pid, used in facts.brokers if used is False]
    return legacy if facts.brokers and len(legacy) == len(facts.brokers) else []


def _pre_06_broker_on_old_kernel(
    facts: KernelRelease, severity: Severity | None, data: dict[str, Any]
) -> list[Finding]:
    """Below fail_below with only pre-0.6 brokers: they run; upgrading Iggy would not."""
    pids = only_pre_06_brokers(facts)
    if severity != Severity.FAIL or not pids:
        return []
    shown = ", ".join(str(pid) for pid in pids)
    return [
        Finding(
            Severity.WARN,  # the running broker needs no io_uring; only an upgrade would
            f"kernel {facts.release} is older than {data['fail_below']}: the running "
            f"{BROKER_NAME} (pid {shown}) uses no io_uring (no io_uring fd, no shard-N threads: "
            "a pre-0.6 broker on tokio), which runs here, but upgrading Iggy to 0.6+ will need "
            f"kernel {data['fail_below']}+ (io_uring with IORING_SETUP_COOP_TASKRUN)",
            "Before upgrading Iggy to 0.6 or later: "
            + _VERSION_REMEDY.format(want=data["warn_below"]),
            _OSRELEASE,
        )
    ]


def _kernel_cannot_run_iggy(
    facts: KernelRelease, severity: Severity | None, data: dict[str, Any]
) -> list[Finding]:
    """Below fail_below (unless only pre-0.6 brokers run): Iggy >= 0.6 will not start."""
    if severity != Severity.FAIL or only_pre_06_brokers(facts):
        return []
    return [
        Finding(
            severity,
            f"kernel {facts.release} is older than {data['fail_below']}: Iggy >= 0.6 needs "
            "io_uring with IORING_SETUP_COOP_TASKRUN (5.19+) and will not start (0.5.x on "
            "tokio would)",
            _VERSION_REMEDY.format(want=data["warn_below"]),
            _OSRELEASE,
        )
    ]


def _kernel_below_recommended(
    facts: KernelRelease, severity: Severity | None, data: dict[str, Any]
) -> list[Finding]:
    """Below warn_below: Iggy runs, without io_uring's later fixes and performance work."""
    if severity != Severity.WARN:
        return []
    return [
        Finding(
            severity,
            f"kernel {facts.release} is older than the recommended {data['warn_below']}: it "
            "runs Iggy, but io_uring on older kernels lacks later fixes and performance work",
            _VERSION_REMEDY.format(want=data["warn_below"]),
            _OSRELEASE,
        )
    ]


_VERSION_RULES = (_pre_06_broker_on_old_kernel, _kernel_cannot_run_iggy, _kernel_below_recommended)


def judge_kernel_version(facts: KernelRelease, thresholds: dict[str, Any]) -> Result:
    """Iggy >= 0.6 runs on io_uring: < fail_below cannot run it, < warn_below is not advised."""
    if not facts.release:
        return Result.skipped("cannot read /proc/sys/kernel/osrelease")
    version = parse_kernel_version(facts.release)
    if version is None:
        return Result.skipped(f"kernel release {facts.release!r} is not of the form X.Y[.Z]")
    limits = below_versions(thresholds)
    if isinstance(limits, str):
        return Result.skipped(limits)
    data = {
        "release": facts.release,
        "version": format_version(version),
        "build": facts.build,
        **limits,
        "brokers": [{"pid": pid, "io_uring": used} for pid, used in facts.brokers],
    }
    severity = KERNEL_BELOW.grade(version, thresholds)
    findings = [f for rule in _VERSION_RULES for f in rule(facts, severity, data)]
    return Result.from_findings(
        findings,
        ok=f"kernel {facts.release} (>= {data['warn_below']}, io_uring as Iggy needs it)",
        data=data,
    )


def too_old_for_iggy(release: str, thresholds: dict[str, Any]) -> bool:
    """The release is below fail_below, where the brokers' runtime changes the verdict."""
    version = parse_kernel_version(release)
    if version is None or isinstance(below_versions(thresholds), str):
        return False
    return KERNEL_BELOW.grade(version, thresholds) == Severity.FAIL


@check(
    id="kernel.version",
    category="kernel",
    title="Kernel version",
    description="Running kernel release against what Iggy's io_uring runtime needs (5.19+, 6.1+).",
    timeout_s=5,
    bands=(KERNEL_BELOW,),
)
def kernel_version(ctx: Context) -> Result:
    """The kernel release, judged against Iggy's io_uring requirements."""
    facts = read_kernel_release(ctx)
    if too_old_for_iggy(facts.release, ctx.thresholds):
        facts = replace(facts, brokers=read_broker_runtimes(ctx))
    return judge_kernel_version(facts, ctx.thresholds)


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

    @property
    def has_group(self) -> bool:
        """kernel.io_uring_group names a group (-1 means none)."""
        return self.group is not None and self.group >= 0


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
    if facts.has_group:
        groups = parse_group_file(ctx.read_optional("/etc/group") or "")
        facts.group_name = groups.get(facts.group, "")
    release = (ctx.read_optional("/proc/sys/kernel/osrelease") or "").strip()
    facts.kernel_config, facts.config_source = _read_kernel_config(ctx, release)
    facts.brokers = find_brokers(ctx)
    facts.io_uring_use = {b.pid: uses_io_uring(ctx, b.pid) for b in facts.brokers}
    return facts


_SYSCTL = "/proc/sys/kernel/io_uring_disabled"


def _kernel_without_io_uring(facts: IoUringFacts) -> list[Finding]:
    """The kernel config leaves io_uring out: Iggy >= 0.6 cannot start at all."""
    if facts.kernel_config != "n":
        return []
    return [
        Finding(
            Severity.FAIL,
            f"the kernel is built without io_uring (CONFIG_IO_URING not set, "
            f"{facts.config_source}): Iggy >= 0.6 cannot start",
            "Boot a distribution kernel built with CONFIG_IO_URING=y (every mainstream "
            "distribution kernel >= 5.19 has it); hardened or minimal kernels may leave it "
            "out.",
            facts.config_source,
        )
    ]


def _sysctl_absent(facts: IoUringFacts) -> list[Finding]:
    """No kernel.io_uring_disabled (kernels before 6.6): nothing can switch io_uring off."""
    if facts.disabled is not None:
        return []
    return [
        Finding(
            Severity.INFO,
            "kernel.io_uring_disabled does not exist (kernels before 6.6): io_uring cannot "
            "be switched off by sysctl here",
            "",
            _SYSCTL,
        )
    ]


def _disabled_for_everyone(facts: IoUringFacts) -> list[Finding]:
    """kernel.io_uring_disabled = 2: no process may create rings, so Iggy >= 0.6 cannot start."""
    if facts.disabled != "2":
        return []
    return [
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
            _SYSCTL,
        )
    ]


def _who_may_create_rings(facts: IoUringFacts) -> str:
    """Who kernel.io_uring_disabled = 1 lets create rings, in words."""
    if facts.has_group:
        return f"group {facts.group_name or '?'} (gid {facts.group}) and CAP_SYS_ADMIN processes"
    return "processes with CAP_SYS_ADMIN (kernel.io_uring_group is -1: no group)"


def _broker_may_create_rings(facts: IoUringFacts, broker: BrokerProcess) -> str:
    """Whether one broker passes kernel.io_uring_disabled = 1, in words."""
    if broker.has_sys_admin:
        return f"pid {broker.pid} has CAP_SYS_ADMIN, so it is allowed"
    if facts.has_group and facts.group in broker.gids:
        return f"pid {broker.pid} (uid {broker.uid}) is in that group, so allowed"
    return (
        f"pid {broker.pid} (uid {broker.uid}) is NOT in it and lacks CAP_SYS_ADMIN: "
        "rings it already has keep working, but a restart will fail"
    )


def _group_only(facts: IoUringFacts) -> list[Finding]:
    """kernel.io_uring_disabled = 1: only one group and CAP_SYS_ADMIN may create rings."""
    if facts.disabled != "1":
        return []
    who = [_broker_may_create_rings(facts, broker) for broker in facts.brokers]
    return [
        Finding(
            Severity.WARN,
            f"kernel.io_uring_disabled = 1: only {_who_may_create_rings(facts)} may create "
            "io_uring rings"
            + (f"; {BROKER_NAME} " + "; ".join(who) if who else f"; {BROKER_NAME} not running"),
            "Make sure the broker's service user is in that group (`usermod -aG GROUP "
            "iggy` and `SupplementaryGroups=GROUP` in the unit) and set the group: "
            + sysctl_fix("kernel.io_uring_group", "<gid>")
            + " Or allow everyone: "
            + sysctl_fix("kernel.io_uring_disabled", 0),
            _SYSCTL,
        )
    ]


def _unexpected_sysctl(facts: IoUringFacts) -> list[Finding]:
    """kernel.io_uring_disabled holds something other than 0, 1 or 2."""
    if facts.disabled in (None, "0", "1", "2"):
        return []
    return [
        Finding(
            Severity.WARN,
            f"kernel.io_uring_disabled has an unexpected value {facts.disabled!r}",
            "Read it with `sysctl kernel.io_uring_disabled`; 0 allows io_uring.",
            _SYSCTL,
        )
    ]


def _seccomp_lets_io_uring_through(facts: IoUringFacts, broker: BrokerProcess) -> list[Finding]:
    """A broker under a seccomp filter already uses io_uring: the filter allows it."""
    if broker.seccomp != 2 or not facts.io_uring_use.get(broker.pid):
        return []
    return [
        Finding(
            Severity.INFO,
            f"{BROKER_NAME} (pid {broker.pid}) runs under a seccomp filter and already "
            "uses io_uring (an io_uring fd or shard-N threads): the filter lets it through",
            "",
            f"/proc/{broker.pid}/status",
        )
    ]


def _seccomp_may_block_io_uring(facts: IoUringFacts, broker: BrokerProcess) -> list[Finding]:
    """A broker under a seccomp filter shows no io_uring use: the filter may block it."""
    in_use = facts.io_uring_use.get(broker.pid)
    if broker.seccomp != 2 or in_use:
        return []
    seen = (
        "it shows no io_uring use (no io_uring fd, no shard-N threads)"
        if in_use is False
        else "its fds and threads could not be read to see whether it uses io_uring"
    )
    return [
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
    ]


def _lsm_confines_broker(facts: IoUringFacts, broker: BrokerProcess) -> list[Finding]:
    """A broker confined by an enforcing LSM profile: its rules can deny io_uring too."""
    confinement = parse_label(broker.label, None)
    if not confinement.confined or confinement.mode in ("complain", "permissive"):
        return []
    return [
        Finding(
            Severity.INFO,
            f"{BROKER_NAME} (pid {broker.pid}) is confined by {confinement.lsm} "
            f"{broker.label!r}; its rules can deny io_uring too (see security.lsm)",
            "",
            f"/proc/{broker.pid}/attr/current",
        )
    ]


def _broker_not_running(facts: IoUringFacts) -> list[Finding]:
    """No broker runs: its seccomp filter and groups could not be judged."""
    if facts.brokers:
        return []
    return [
        Finding(
            Severity.INFO,
            f"{BROKER_NAME} is not running here: its seccomp filter and groups were not read",
            "",
            "/proc",
        )
    ]


#: Rules about the node, then rules about each broker process, in the order reported.
_NODE_RULES = (
    _kernel_without_io_uring,
    _sysctl_absent,
    _disabled_for_everyone,
    _group_only,
    _unexpected_sysctl,
)
_BROKER_RULES = (_seccomp_lets_io_uring_through, _seccomp_may_block_io_uring, _lsm_confines_broker)


def _io_uring_data(facts: IoUringFacts) -> dict[str, Any]:
    """The sysctls, the kernel config and each broker's seccomp, groups and label."""
    return {
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


def _io_uring_ok(facts: IoUringFacts) -> str:
    """The summary when nothing stands in io_uring's way."""
    state = (
        "no io_uring_disabled sysctl"
        if facts.disabled is None
        else f"io_uring_disabled = {facts.disabled}"
    )
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
    return f"io_uring allowed ({state}); {brokers}"


def judge_io_uring(facts: IoUringFacts, thresholds: dict[str, Any]) -> Result:
    """Can the broker create io_uring rings: kernel config, sysctl, group, seccomp."""
    findings = [f for rule in _NODE_RULES for f in rule(facts)]
    for broker in facts.brokers:
        findings += [f for rule in _BROKER_RULES for f in rule(facts, broker)]
    findings += _broker_not_running(facts)
    return Result.from_findings(findings, ok=_io_uring_ok(facts), data=_io_uring_data(facts))


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
