"""Kernel checks: release and io_uring availability.

The kernel log and the checks built on it (kernel.log, memory.oom) are in kernel_log.py.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import sys
import zlib
from dataclasses import dataclass, field, replace
from typing import Any

from snapshot_agent.core.check import check
from snapshot_agent.core.commands import CommandResult
from snapshot_agent.core.context import Context
from snapshot_agent.core.grading import Band
from snapshot_agent.core.remedies import sysctl_fix
from snapshot_agent.core.results import Finding, Result, Severity
from snapshot_agent.node.confinement import (
    SANDBOX_SETTINGS,
    UnitAccount,
    UnitSandbox,
    parse_label,
    read_unit_sandbox,
    resolve_account,
    secure_bits_names,
)
from snapshot_agent.node.processes import (
    BROKER_NAME,
    BrokerProcess,
    broker_from_status,
    find_brokers,
    uses_io_uring,
)
from snapshot_agent.node.procfs import read_int
from snapshot_agent.node.system import parse_kernel_version

# --------------------------------------------------------------------------------------
# Kernel version
# --------------------------------------------------------------------------------------


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
    """The kernel release, judged against Iggy's io_uring requirements.

    Verdicts:
    - pass: a Debian 12 6.1 kernel, or a newer one such as 6.18
      [test_kernel_version_verdicts]
    - pass: exactly 6.1.0, which is not below the recommended 6.1
      [test_kernel_version_below_is_strict]
    - warn: a 5.15 kernel running a pre-0.6 broker on tokio (no shards, no io_uring
      fd): it runs, only an Iggy upgrade would not
      [test_kernel_version_old_kernel_with_pre_06_broker_warns]
    - warn: 5.19 to 6.0, which run Iggy 0.6 without later io_uring fixes
      [test_kernel_version_verdicts]
    - fail: below 5.19 with a 0.6+ broker (shard threads) or one that cannot be told
      [test_kernel_version_old_kernel_fails_unless_broker_is_pre_06]
    - fail: below 5.19 with a broker holding an io_uring fd
      [test_kernel_version_old_kernel_with_io_uring_fd_fails]
    - skipped: osrelease is not a version [test_kernel_version_thresholds_and_garbage]
    """
    facts = read_kernel_release(ctx)
    if too_old_for_iggy(facts.release, ctx.thresholds):
        facts = replace(facts, brokers=read_broker_runtimes(ctx))
    return judge_kernel_version(facts, ctx.thresholds)


# --------------------------------------------------------------------------------------
# io_uring availability
# --------------------------------------------------------------------------------------


#: A child that says who it runs as (its /proc/self/status), then asks the kernel for a
#: 4-entry io_uring ring and closes it. 425 is io_uring_setup on every architecture but
#: alpha (535). 'setup' is flushed first, so a child killed inside the syscall (a seccomp
#: filter that kills, SIGSYS) is told apart from one that never got that far.
RING_PROBE = """\
import ctypes, os, platform
for line in open('/proc/self/status'):
    if line.split(':')[0] in ('Uid', 'Gid', 'Groups', 'Seccomp', 'NoNewPrivs', 'CapEff'):
        print('status', line.rstrip())
print('setup', flush=True)
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)
nr = 535 if platform.machine().startswith('alpha') else 425
fd = libc.syscall(ctypes.c_long(nr), ctypes.c_uint(4), params)
if fd < 0:
    print('errno', ctypes.get_errno(), flush=True)
else:
    os.close(fd)
    print('ring', flush=True)
"""
PROBE_TIMEOUT_S = 5
#: The interpreter of the plain probe (the agent's own; tests point it at a fake).
PROBE_PYTHON = sys.executable
#: The interpreter of the sandboxed probe: one any unit user may run.
SYSTEM_PYTHON = "/usr/bin/python3"
SIGSYS = 31
#: A unit value `systemd-run -p KEY=VALUE` is given as is (names, labels, profile paths).
_SETTING_VALUE = re.compile(r"^[\w@:~ .,/-]+$")
#: Programs that start the broker under confinement of their own (a container runtime's
#: seccomp profile and LSM label, a jail, another label or user namespace): a probe under
#: the unit's settings runs without it.
CONFINING_WRAPPERS = frozenset(
    {
        "docker",
        "podman",
        "nerdctl",
        "ctr",
        "runc",
        "crun",
        "systemd-nspawn",
        "firejail",
        "bwrap",
        "nsjail",
        "minijail0",
        "aa-exec",
        "runcon",
        "setpriv",
        "capsh",
        "unshare",
    }
)


@dataclass(frozen=True)
class RingProbe:
    """What happened when a child process asked the kernel for an io_uring ring."""

    mode: str  # 'sandbox': under the broker unit's settings (systemd-run); 'plain': agent's child
    how: str  # how it was run and why that way, in words
    created: bool | None  # True: a ring; False: refused; None: it never reached io_uring_setup
    error: str = ""  # 'EPERM', 'SIGSYS'... or why it never reached the syscall
    prober: BrokerProcess | None = None  # the child's uid, gids, seccomp, caps
    ended: str = ""  # how the command ended
    # Confinement the unit gives the broker that the sandboxed probe ran without.
    left_out: tuple[str, ...] = ()


def parse_ring_probe(
    stdout: str, exit_code: int | None
) -> tuple[bool | None, str, BrokerProcess | None]:
    """(created, error, the child's identity) from RING_PROBE's output."""
    lines = stdout.splitlines()
    status = "\n".join(line[len("status ") :] for line in lines if line.startswith("status "))
    prober = broker_from_status(0, status) if status else None
    if "ring" in lines:
        return True, "", prober
    for line in lines:
        number = line.removeprefix("errno ").strip()
        if line.startswith("errno ") and number.isdigit():
            return False, errno.errorcode.get(int(number), f"errno {number}"), prober
    if "setup" in lines:  # it died inside io_uring_setup
        return False, "SIGSYS" if exit_code == -SIGSYS else "killed in io_uring_setup", prober
    return None, "", prober


def probe_settings(sandbox: UnitSandbox) -> tuple[list[str], list[str]]:
    """The unit's settings as `systemd-run -p` values, and the confinement they cannot carry.

    What cannot be carried: a value `systemd-run -p` would not take as written, and a
    confining program in ExecStart= (the probe runs python, not the unit's command).
    """
    settings, left_out = [], []
    for key in SANDBOX_SETTINGS:
        value = sandbox.properties.get(key)
        if key == "CapabilityBoundingSet" and value == "":
            settings.append(f"{key}=")  # empty: no capabilities at all
            continue
        if not value or value == "0":  # empty (and SystemCallErrorNumber=0): the default
            continue
        if key == "SELinuxContext":
            value = value.removeprefix("-")  # '-': the unit ignores a failure to set it
        elif key == "SecureBits":
            value = secure_bits_names(value) or ""
        if value and _SETTING_VALUE.match(value):
            settings.append(f"{key}={value}")
        else:
            left_out.append(f"{key}={sandbox.properties[key][:60]}")
    for path in sandbox.exec_paths:
        wrapper = path.rsplit("/", 1)[-1]
        if wrapper in CONFINING_WRAPPERS:
            left_out.append(f"ExecStart={path} (the broker runs under {wrapper}'s confinement)")
    return settings, left_out


def sandbox_probe_argv(settings: list[str], python: str) -> list[str]:
    """`systemd-run` of RING_PROBE with the unit's user, groups, capabilities, seccomp
    filter, LSM label and user namespace (`settings`: the first list of probe_settings)."""
    argv = ["systemd-run", "--wait", "--pipe", "--quiet", "--collect"]
    for setting in settings:
        argv += ["-p", setting]
    return [*argv, python, "-c", RING_PROBE]


def _how_it_ended(res: CommandResult) -> str:
    """How a probe command ended, with its first error line (its argv holds the program)."""
    if res.error:
        return f"{res.argv[0]} could not run: {res.error}"
    if res.timed_out:
        return f"{res.argv[0]} did not finish in {PROBE_TIMEOUT_S} s"
    code = res.exit_code
    ended = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited {code}"
    error = res.first_error_line(200)
    return f"{res.argv[0]} {ended}" + (f": {error}" if error else "")


def _run_probe(ctx: Context, mode: str, argv: list[str], how: str) -> RingProbe:
    """Run one probe and read its output."""
    res = ctx.run(argv, timeout_s=PROBE_TIMEOUT_S, save_as=f"io-uring-probe-{mode}.txt")
    created, error, prober = parse_ring_probe(res.stdout, res.exit_code)
    ended = _how_it_ended(res)
    return RingProbe(mode, how, created, error or ("" if created else ended), prober, ended)


def sandbox_unavailable(sandbox: UnitSandbox | None, unit_unread: str) -> str:
    """Why the probe cannot run under the unit's sandbox; '' when it can."""
    if sandbox is None:
        return unit_unread or "the broker's unit could not be read"
    if os.geteuid() != 0:
        return "the agent is not root, and only root may start a probe as the unit's user"
    if shutil.which("systemd-run") is None:
        return "systemd-run is not installed"
    return ""


def read_ring_probe(ctx: Context, sandbox: UnitSandbox | None, unit_unread: str) -> RingProbe:
    """Probe io_uring_setup under the unit's sandbox when possible, else as a plain child."""
    why = sandbox_unavailable(sandbox, unit_unread)
    if sandbox is not None and not why:
        python = SYSTEM_PYTHON if os.access(SYSTEM_PYTHON, os.X_OK) else sys.executable
        settings, left_out = probe_settings(sandbox)
        without = f"; without {'; '.join(left_out)}" if left_out else ""
        probe = _run_probe(
            ctx,
            "sandbox",
            sandbox_probe_argv(settings, python),
            f"under {sandbox.unit}'s sandbox (systemd-run with its User=, groups, capabilities, "
            f"SystemCallFilter=, LSM label and PrivateUsers={without})",
        )
        if probe.created is not None:
            return replace(probe, left_out=tuple(left_out))
        why = (
            f"the probe under {sandbox.unit}'s sandbox never reached io_uring_setup: {probe.error}"
        )
    return _run_probe(
        ctx,
        "plain",
        [PROBE_PYTHON, "-c", RING_PROBE],
        f"as a plain child of the agent, not under the broker's sandbox ({why})",
    )


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
    # Read only when no broker runs: its unit's sandbox, the account the unit runs it as,
    # and a child process that tried to create a ring.
    unit_name: str = ""
    unit: UnitSandbox | None = None
    unit_unread: str = ""  # why the unit was not read
    account: UnitAccount | None = None
    probe: RingProbe | None = None

    @property
    def has_group(self) -> bool:
        """kernel.io_uring_group names a group (-1 means none)."""
        return self.group is not None and self.group >= 0

    @property
    def filter_blocks(self) -> bool:
        """The broker unit's SystemCallFilter= does not allow io_uring_setup."""
        rules = self.unit.syscall_filter if self.unit else None
        return rules is not None and not rules.allows("io_uring_setup")

    def may_create_rings(self, gids: tuple[int, ...], sys_admin: bool) -> bool:
        """Under kernel.io_uring_disabled = 1: CAP_SYS_ADMIN, or a member of io_uring_group."""
        return sys_admin or (self.has_group and self.group in gids)


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
    """io_uring sysctls, the kernel config, the brokers' seccomp and groups; if none runs,
    its unit's sandbox and a probe."""
    facts = IoUringFacts()
    raw = ctx.read_optional("/proc/sys/kernel/io_uring_disabled")
    facts.disabled = raw.strip() if raw is not None else None
    facts.group = read_int(ctx, "/proc/sys/kernel/io_uring_group")
    group_text: str | None = None
    if facts.has_group:
        group_text = ctx.read_optional("/etc/group") or ""
        facts.group_name = parse_group_file(group_text).get(facts.group, "")
    release = (ctx.read_optional("/proc/sys/kernel/osrelease") or "").strip()
    facts.kernel_config, facts.config_source = _read_kernel_config(ctx, release)
    facts.brokers = find_brokers(ctx)
    facts.io_uring_use = {b.pid: uses_io_uring(ctx, b.pid) for b in facts.brokers}
    if not facts.brokers:
        _read_broker_unit(ctx, facts, group_text)
    return facts


def _read_broker_unit(ctx: Context, facts: IoUringFacts, group_text: str | None) -> None:
    """No broker runs: read how its unit would run it, and probe for a ring.

    `group_text` is /etc/group when already read (None: read it here when needed).
    """
    facts.unit_name = ctx.config.iggy.service
    facts.unit, facts.unit_unread = read_unit_sandbox(ctx, facts.unit_name)
    if facts.unit is not None:
        facts.account = resolve_account(
            facts.unit,
            ctx.read_optional("/etc/passwd") or "",
            (ctx.read_optional("/etc/group") or "") if group_text is None else group_text,
        )
    facts.probe = read_ring_probe(ctx, facts.unit, facts.unit_unread)


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


def _running_brokers_covered(facts: IoUringFacts) -> tuple[Severity, str]:
    """Every running broker is in io_uring_group or has CAP_SYS_ADMIN (INFO), else WARN."""
    words = "; ".join(_broker_may_create_rings(facts, b) for b in facts.brokers)
    uncovered = [b for b in facts.brokers if not facts.may_create_rings(b.gids, b.has_sys_admin)]
    return (Severity.WARN if uncovered else Severity.INFO), f"{BROKER_NAME} {words}"


def _unit_account_covered(facts: IoUringFacts) -> tuple[Severity, str]:
    """No broker runs: the account its unit runs it as is covered (INFO), is not (FAIL), or
    is unknown (WARN)."""
    account, unit = facts.account, facts.unit_name
    if account is None:
        return Severity.WARN, (
            f"{BROKER_NAME} is not running and the account it would run as is unknown "
            f"({facts.unit_unread})"
        )
    runs_as = f"{BROKER_NAME} is not running; {unit} runs it as {account.describe()}"
    if account.has_sys_admin:
        return Severity.INFO, f"{runs_as}, which has CAP_SYS_ADMIN, so it is allowed"
    if facts.may_create_rings(account.gids, False):
        return Severity.INFO, f"{runs_as}, which is in that group, so it is allowed"
    missing = f" ({', '.join(account.unresolved)} not found)" if account.unresolved else ""
    return Severity.FAIL, (
        f"{runs_as}{missing}, which is neither in that group nor has CAP_SYS_ADMIN: it "
        "cannot create its rings and will not start"
    )


def _group_only(facts: IoUringFacts) -> list[Finding]:
    """kernel.io_uring_disabled = 1: fine when the group (or CAP_SYS_ADMIN) covers the broker."""
    if facts.disabled != "1":
        return []
    if facts.brokers:
        severity, who = _running_brokers_covered(facts)
    else:
        severity, who = _unit_account_covered(facts)
    unit = facts.unit_name or "the broker's unit"
    remedy = (
        ""
        if severity == Severity.INFO
        else "Put the broker's service user in that group (`usermod -aG GROUP iggy`, or "
        f"`SupplementaryGroups=GROUP` via `systemctl edit {unit}`) and set the group: "
        + sysctl_fix("kernel.io_uring_group", "<gid>")
        + " Or allow everyone: "
        + sysctl_fix("kernel.io_uring_disabled", 0)
    )
    return [
        Finding(
            severity,
            f"kernel.io_uring_disabled = 1: only {_who_may_create_rings(facts)} may create "
            f"io_uring rings; {who}",
            remedy,
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


_SECCOMP_REMEDY = (
    "Let the unit make the io_uring syscalls: `systemctl edit {unit}` and, for a deny-list "
    "(SystemCallFilter=~...), drop io_uring_setup/io_uring_enter/io_uring_register or "
    "@aio/@system-service from it; for an allow-list add `SystemCallFilter=io_uring_setup "
    "io_uring_enter io_uring_register`. Then `systemctl daemon-reload` and "
    "`systemctl restart {unit}`. The audit log names a blocked call (`ausearch -m SECCOMP`: "
    "syscall=425 is io_uring_setup)."
)


def _broker_not_running(facts: IoUringFacts) -> list[Finding]:
    """No broker runs: it is judged from its unit and a probe instead of its process."""
    if facts.brokers:
        return []
    unit = (
        f"from {facts.unit_name}'s settings (`systemctl show`)"
        if facts.unit
        else f"without its unit ({facts.unit_unread})"
    )
    return [
        Finding(
            Severity.INFO,
            f"{BROKER_NAME} is not running here: judged {unit} and a probe of io_uring_setup "
            "instead of its process",
            "",
            "/proc",
        )
    ]


def _unit_killed_by_sigsys(facts: IoUringFacts) -> list[Finding]:
    """The broker's last run ended on SIGSYS: a seccomp filter killed it."""
    if facts.brokers or facts.unit is None or not facts.unit.killed_by_sigsys:
        return []
    return [
        Finding(
            Severity.FAIL,
            f"{BROKER_NAME} is not running: the last run of {facts.unit_name} was killed by "
            "SIGSYS, i.e. its seccomp filter (SystemCallFilter=) refused a system call",
            _SECCOMP_REMEDY.format(unit=facts.unit_name),
            facts.unit_name,
        )
    ]


def _sandbox_probe_decided(facts: IoUringFacts) -> bool:
    """A probe under the unit's sandbox got an answer that outranks reading the filter: a
    refusal, or a ring made under all of the unit's confinement. A ring made without some
    of it (`left_out`) does not speak for the broker."""
    probe = facts.probe
    if probe is None or probe.mode != "sandbox" or probe.created is None:
        return False
    return not probe.created or not probe.left_out


def _unit_filter_blocks_io_uring(facts: IoUringFacts) -> list[Finding]:
    """The broker is down and its unit's SystemCallFilter= does not allow io_uring_setup."""
    if facts.brokers or not facts.filter_blocks or _sandbox_probe_decided(facts):
        return []
    assert facts.unit is not None  # filter_blocks needs a unit
    shown = facts.unit.syscall_filter.shown() if facts.unit.syscall_filter else ""
    probe = facts.probe
    overruled = (
        f" (a probe under its sandbox created a ring, but without {'; '.join(probe.left_out)}, "
        "which it could not reproduce: the unit's settings decide)"
        if probe is not None and probe.created and probe.left_out
        else ""
    )
    return [
        Finding(
            Severity.FAIL,
            f"{BROKER_NAME} is not running and {facts.unit_name} has SystemCallFilter={shown}, "
            "which does not allow io_uring_setup: Iggy >= 0.6 cannot create its rings and "
            f"will not start{overruled}",
            _SECCOMP_REMEDY.format(unit=facts.unit_name),
            facts.unit_name,
        )
    ]


def _refusal_cause(facts: IoUringFacts, probe: RingProbe) -> tuple[str, bool]:
    """Why the probe was refused, and whether a node rule already judges that cause."""
    prober = probe.prober
    if probe.error == "ENOSYS" and facts.kernel_config == "n":
        return "the kernel is built without io_uring", True
    if facts.disabled == "2":
        return "kernel.io_uring_disabled = 2", True
    # Under PrivateUsers= the probe's capabilities are its own user namespace's: they do
    # not count for kernel.io_uring_disabled = 1.
    own_userns = probe.mode == "sandbox" and facts.unit is not None and facts.unit.private_users
    sys_admin = prober is not None and prober.has_sys_admin and not own_userns
    if facts.disabled == "1" and (
        prober is None or not facts.may_create_rings(prober.gids, sys_admin)
    ):
        uid = f"uid {prober.uid}" if prober else "the probe"
        userns = (
            " (its CAP_SYS_ADMIN is inside the unit's own user namespace, PrivateUsers=yes, "
            "where it does not count)"
            if own_userns and prober is not None and prober.has_sys_admin
            else ""
        )
        return (
            f"kernel.io_uring_disabled = 1 and {uid} is not in io_uring_group{userns}",
            probe.mode == "plain",
        )
    if prober is not None and prober.seccomp == 2:
        unit = f" ({facts.unit_name}'s SystemCallFilter= denies it)" if facts.filter_blocks else ""
        return f"a seccomp filter{unit}", False
    return (
        "neither kernel.io_uring_disabled nor a seccomp filter: a security module (SELinux, "
        "AppArmor, a BPF LSM) or the kernel refused it",
        False,
    )


_CONTAINER_SECCOMP_REMEDY = (
    "If the broker runs confined like the agent (the same container or pod), give it a "
    "seccomp profile that allows io_uring_setup, io_uring_enter and io_uring_register "
    "(docker run --security-opt seccomp=/path/iggy-seccomp.json; Kubernetes "
    "securityContext.seccompProfile Localhost): Docker 25+ and containerd 1.7+ default "
    "profiles block them."
)
_FIND_REFUSER_REMEDY = (
    "Find what refuses it: `ausearch -m AVC,SECCOMP -ts recent`, `dmesg | grep -i io_uring`, "
    "and `sysctl kernel.io_uring_disabled kernel.io_uring_group`."
)


def _refusal_verdict(
    facts: IoUringFacts, probe: RingProbe, cause: str, judged_elsewhere: bool
) -> tuple[Severity, str, str]:
    """(severity, what it means for the broker, remedy) of a refused probe."""
    if probe.mode == "sandbox":
        remedy = _SECCOMP_REMEDY.format(unit=facts.unit_name) if "seccomp" in cause else ""
        return (
            Severity.FAIL,
            f"{BROKER_NAME} started by this unit cannot create its rings and will not start",
            remedy or _FIND_REFUSER_REMEDY,
        )
    if judged_elsewhere:  # the sysctl or kernel config rule says it already
        return Severity.INFO, "expected from the setting above", ""
    if probe.prober is not None and probe.prober.seccomp == 2:
        return (
            Severity.WARN,
            "the agent itself runs under that filter; a broker confined like the agent could "
            "not start",
            _CONTAINER_SECCOMP_REMEDY,
        )
    return (
        Severity.FAIL,
        f"it applies to every process, so {BROKER_NAME} could not start",
        _FIND_REFUSER_REMEDY,
    )


def _probe_refused(facts: IoUringFacts) -> list[Finding]:
    """The probe could not create a ring: under the unit's sandbox that is the broker's fate."""
    probe = facts.probe
    if probe is None or probe.created is not False:
        return []
    cause, judged_elsewhere = _refusal_cause(facts, probe)
    severity, then, remedy = _refusal_verdict(facts, probe, cause, judged_elsewhere)
    return [
        Finding(
            severity,
            f"io_uring_setup failed with {probe.error} in a probe run {probe.how}: {cause}; {then}",
            remedy,
            f"{facts.unit_name} (probe)",
        )
    ]


_UNREPRODUCED_REMEDY = (
    "Start {unit} and read its log (`journalctl -u {unit}`) for 'Operation not permitted' "
    "creating its rings. A broker in a container needs a seccomp profile that allows "
    "io_uring_setup, io_uring_enter and io_uring_register (Docker 25+ and containerd 1.7+ "
    "default profiles block them); an AppArmor or SELinux policy must allow io_uring."
)


def _probe_outcome(facts: IoUringFacts) -> list[Finding]:
    """The probe created a ring, or never reached io_uring_setup: information. A ring made
    without some of the unit's confinement does not show the broker may: a warning."""
    probe = facts.probe
    if probe is None or probe.created is False:
        return []
    if probe.created and probe.left_out:
        return [_ring_without_confinement(facts, probe)]
    if probe.created:
        message = f"a probe run {probe.how} created an io_uring ring"
    else:
        message = f"the io_uring probe never reached io_uring_setup: {probe.error}"
    return [Finding(Severity.INFO, message, "", f"{facts.unit_name} (probe)")]


def _ring_without_confinement(facts: IoUringFacts, probe: RingProbe) -> Finding:
    """A sandboxed probe created a ring without confinement the unit gives the broker."""
    # The unit's filter rule already fails this node and says why.
    severity = Severity.INFO if facts.filter_blocks else Severity.WARN
    return Finding(
        severity,
        f"a probe under {facts.unit_name}'s sandbox created an io_uring ring, but the unit "
        f"also confines {BROKER_NAME} in ways the probe could not reproduce "
        f"({'; '.join(probe.left_out)}): the ring does not show that {BROKER_NAME} may create "
        "its rings",
        "" if severity == Severity.INFO else _UNREPRODUCED_REMEDY.format(unit=facts.unit_name),
        f"{facts.unit_name} (probe)",
    )


#: Rules about the node, then rules about each broker process, then, when no broker
#: runs, rules about its unit and the probe, in the order reported.
_NODE_RULES = (
    _kernel_without_io_uring,
    _sysctl_absent,
    _disabled_for_everyone,
    _group_only,
    _unexpected_sysctl,
)
_BROKER_RULES = (_seccomp_lets_io_uring_through, _seccomp_may_block_io_uring, _lsm_confines_broker)
_BROKER_DOWN_RULES = (
    _broker_not_running,
    _unit_killed_by_sigsys,
    _unit_filter_blocks_io_uring,
    _probe_refused,
    _probe_outcome,
)


def _unit_data(facts: IoUringFacts) -> dict[str, Any] | None:
    """The broker unit's sandbox and the account it resolves to (None when not read)."""
    if facts.unit is None:
        return (
            None if not facts.unit_name else {"name": facts.unit_name, "unread": facts.unit_unread}
        )
    account = facts.account
    return {
        "name": facts.unit_name,
        "properties": facts.unit.properties,
        "syscall_filter_allows_io_uring_setup": not facts.filter_blocks,
        "account": None
        if account is None
        else {
            "user": account.user,
            "uid": account.uid,
            "gids": list(account.gids),
            "unresolved": list(account.unresolved),
            "cap_sys_admin": account.has_sys_admin,
        },
    }


def _probe_data(probe: RingProbe | None) -> dict[str, Any] | None:
    """How the probe ran and what it got."""
    if probe is None:
        return None
    prober = probe.prober
    return {
        "mode": probe.mode,
        "how": probe.how,
        "created": probe.created,
        "error": probe.error,
        "ended": probe.ended,
        "uid": prober.uid if prober else None,
        "gids": list(prober.gids) if prober else [],
        "seccomp": prober.seccomp if prober else None,
        "left_out": list(probe.left_out),
    }


def _io_uring_data(facts: IoUringFacts) -> dict[str, Any]:
    """The sysctls, the kernel config, each broker's seccomp, groups and label; the unit and
    probe when no broker runs."""
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
        "unit": _unit_data(facts),
        "probe": _probe_data(facts.probe),
    }


def _io_uring_ok(facts: IoUringFacts) -> str:
    """The summary when nothing stands in io_uring's way."""
    state = (
        "no io_uring_disabled sysctl"
        if facts.disabled is None
        else f"io_uring_disabled = {facts.disabled}"
    )
    if facts.disabled == "1":
        state += f", group {facts.group_name or facts.group} covers {BROKER_NAME}"
    filtered = sum(1 for b in facts.brokers if b.seccomp == 2)
    if not facts.brokers:
        probe = facts.probe
        tried = (
            f": a probe run {probe.how} created a ring"
            if probe is not None and probe.created
            else ""
        )
        brokers = f"{BROKER_NAME} not running{tried}"
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
    """Can the broker create io_uring rings: kernel config, sysctl, group, seccomp, probe."""
    findings = [f for rule in _NODE_RULES for f in rule(facts)]
    for broker in facts.brokers:
        findings += [f for rule in _BROKER_RULES for f in rule(facts, broker)]
    findings += [f for rule in _BROKER_DOWN_RULES for f in rule(facts)]
    return Result.from_findings(findings, ok=_io_uring_ok(facts), data=_io_uring_data(facts))


@check(
    id="kernel.io_uring",
    category="kernel",
    title="io_uring availability",
    description="Whether the broker may create io_uring rings: kernel config, "
    "kernel.io_uring_disabled/io_uring_group, seccomp filter of iggy-server; when it is not "
    "running, its unit's user, SystemCallFilter=, LSM label and user namespace, and a probe "
    "of io_uring_setup under them.",
    timeout_s=15,
)
def kernel_io_uring(ctx: Context) -> Result:
    """Judge what could stop Iggy's io_uring runtime from starting.

    Verdicts:
    - pass: io_uring_disabled = 0 and a running broker with shard threads
      [test_io_uring_allowed]
    - pass: io_uring_disabled = 1 and the running broker's groups include io_uring_group
      [test_io_uring_group_covering_running_broker_passes]
    - pass: io_uring_disabled = 1 and the broker holds CAP_SYS_ADMIN
      [test_io_uring_cap_sys_admin_broker_passes_group_restriction]
    - pass: a broker under a seccomp filter that already uses io_uring (shards)
      [test_io_uring_seccomp_filter_with_shards_is_info]
    - pass: broker stopped, io_uring_disabled = 1, its unit runs it in io_uring_group and
      a probe under the unit's sandbox creates a ring
      [test_io_uring_broker_down_sandbox_probe_creates_ring_passes]
    - pass: broker stopped, the unit's user is in io_uring_group through /etc/group
      [test_io_uring_broker_down_group_membership_from_etc_group_passes]
    - pass: broker stopped, no systemd, and a real probe creates a ring
      [test_io_uring_broker_down_real_plain_probe_passes]
    - warn: io_uring_disabled = 1 and the running broker is not in the group
      [test_io_uring_group_broker_not_member]
    - warn: a broker under a seccomp filter that shows no io_uring use
      [test_io_uring_seccomp_filter_warns_without_io_uring_use]
    - warn: broker stopped, no systemd, and the agent's own seccomp filter refuses the probe
      [test_io_uring_broker_down_plain_probe_refused]
    - fail: broker stopped, its unit's SystemCallFilter= denies io_uring_setup and a probe
      under that sandbox (a real seccomp filter) gets EPERM
      [test_io_uring_broker_down_real_seccomp_filter_under_fake_systemd_run]
    - fail: broker stopped, the agent is not root, and the unit's filter denies
      io_uring_setup [test_io_uring_broker_down_not_root_falls_back_to_plain_probe_and_unit_filter]
    - fail: broker stopped, an allow-list filter without io_uring
      [test_io_uring_broker_down_allow_list_without_io_uring_fails]
    - fail: broker stopped, io_uring_disabled = 1 and the unit's user is not in the group
      [test_io_uring_broker_down_unit_user_not_in_group_fails]
    - fail: broker stopped, its last run was killed by SIGSYS
      [test_io_uring_broker_down_killed_by_sigsys_fails]
    - fail: broker stopped, its unit's AppArmor profile or SELinux context denies io_uring;
      the probe runs under that label and is refused
      [test_io_uring_broker_down_probe_carries_the_units_lsm_label]
    - fail: broker stopped, io_uring_disabled = 1 and a root unit with PrivateUsers=yes: its
      CAP_SYS_ADMIN is its own user namespace's and does not count
      [test_io_uring_broker_down_private_users_root_unit_not_in_group_fails]
    - fail: broker stopped, the unit's filter denies io_uring_setup and it starts the broker
      through bwrap: a probe's ring made without bwrap does not overrule the filter
      [test_io_uring_broker_down_unit_filter_stands_when_probe_lacks_the_wrapper]
    - warn: broker stopped, its unit runs it in a Docker container: a probe's ring under the
      unit's settings on the host does not show the container may
      [test_io_uring_broker_down_container_unit_probe_ring_warns]
    - fail: io_uring_disabled = 2 [test_io_uring_disabled_fails]
    - fail: a kernel built without CONFIG_IO_URING [test_io_uring_kernel_built_without_it]
    """
    return judge_io_uring(read_io_uring(ctx), ctx.thresholds)
