"""Kernel checks: release, io_uring availability, the kernel log, and OOM kills."""

from __future__ import annotations

import re
import shutil
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from fnmatch import fnmatch
from typing import Any

from snapshot_agent.check import check
from snapshot_agent.context import Context
from snapshot_agent.processes import (
    BROKER_NAME,
    BrokerProcess,
    find_brokers,
    is_broker,
    uses_io_uring,
)
from snapshot_agent.procfs import read_int
from snapshot_agent.remedies import sysctl_fix
from snapshot_agent.results import Finding, Result, Severity
from snapshot_agent.tail import read_tail
from snapshot_agent.units import mib_or_gib

#: Upper bounds that keep the checks fast on a node with a huge log or process table.
MAX_LOG_LINES = 20000
LOG_TAIL_BYTES = 4 * 1024 * 1024
LOG_LINE_CHARS = 2000  # a single kernel line longer than this is cut
EXAMPLE_CHARS = 300
EXAMPLES_PER_CATEGORY = 3

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


# --------------------------------------------------------------------------------------
# The kernel log (shared with memory.oom and security.lsm)
# --------------------------------------------------------------------------------------


@dataclass
class KernelLog:
    """Kernel log lines of the recent window, and where they came from."""

    lines: list[str]
    source: str  # 'journalctl', 'dmesg', '/var/log/kern.log', ... ; '' when nothing was readable
    window_hours: float
    attempts: list[str] = field(default_factory=list)  # why earlier sources were not used
    truncated: bool = False  # older lines of the window were dropped (MAX_LOG_LINES)


_ISO_TIME = re.compile(
    r"^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:[.,](\d+))?(Z|[+-]\d{2}:?\d{2})?(?=\s)"
)
_SYSLOG_TIME = re.compile(r"^([A-Z][a-z]{2}) +(\d{1,2}) (\d{2}:\d{2}:\d{2})\s")
_CTIME = re.compile(r"^\[([A-Z][a-z]{2} [A-Z][a-z]{2} +\d{1,2} \d{2}:\d{2}:\d{2} \d{4})\]")


def parse_log_time(line: str, now: datetime) -> datetime | None:
    """The timestamp a log line starts with (ISO, syslog 'Nov 23 14:04:16', dmesg -T)."""
    try:
        if match := _ISO_TIME.match(line):
            date, clock, frac, tz = match.groups()
            text = f"{date}T{clock}" + (f".{frac[:6]}" if frac else "")
            if tz and tz != "Z":
                text += tz if ":" in tz else f"{tz[:3]}:{tz[3:]}"
            elif tz == "Z":
                text += "+00:00"
            stamp = datetime.fromisoformat(text)
            return stamp if stamp.tzinfo else stamp.astimezone()
        if match := _SYSLOG_TIME.match(line):
            mon, day, clock = match.groups()
            # Traditional syslog has no year: take this year, or last year if that is ahead.
            stamp = datetime.strptime(f"{now.year} {mon} {day} {clock}", "%Y %b %d %H:%M:%S")
            stamp = stamp.astimezone()
            if stamp > now + timedelta(days=1):
                stamp = stamp.replace(year=now.year - 1)
            return stamp
        if match := _CTIME.match(line):
            return datetime.strptime(match[1], "%a %b %d %H:%M:%S %Y").astimezone()
    except ValueError:
        return None
    return None


def within_window(lines: Iterable[str], since: datetime, now: datetime) -> list[str]:
    """Lines at or after `since`; a line without a timestamp follows the line before it."""
    kept: list[str] = []
    keep = False
    for line in lines:
        stamp = parse_log_time(line, now)
        if stamp is not None:
            keep = stamp >= since
        if keep and line.strip():
            kept.append(line[:LOG_LINE_CHARS])
    return kept


def journal_lines(text: str) -> list[str]:
    """Kernel lines from `journalctl -o short-iso` output, without '-- Boot ... --' markers."""
    return [
        line[:LOG_LINE_CHARS]
        for line in text.splitlines()
        if line.strip() and not (line.startswith("-- ") and line.rstrip().endswith("--"))
    ]


def read_file_tail(ctx: Context, node_path: str, max_bytes: int = LOG_TAIL_BYTES) -> str | None:
    """The last `max_bytes` of a node file, starting at a whole line; None when unreadable."""
    try:
        return read_tail(ctx.path(node_path), max_bytes)
    except OSError:
        return None


def read_kernel_log(
    ctx: Context, window_hours: float = 24.0, now: datetime | None = None
) -> KernelLog:
    """Kernel messages of the last `window_hours`: journald, else dmesg, else kern.log.

    journald is asked for `_TRANSPORT=kernel` (not `-k`, which means the current boot
    only), so an OOM or hardware error just before a crash and reboot is still seen.
    """
    now = now or datetime.now().astimezone()
    since = now - timedelta(hours=window_hours)
    log = KernelLog([], "", window_hours)
    if ctx.live and shutil.which("journalctl"):
        minutes = max(1, round(window_hours * 60))
        res = ctx.run(
            [
                "journalctl",
                "_TRANSPORT=kernel",
                "--since",
                f"-{minutes}min",
                "-o",
                "short-iso",
                "--no-pager",
                "-q",
                "-n",
                str(MAX_LOG_LINES),
            ],
            timeout_s=6,
        )
        lines = journal_lines(res.stdout) if res.ok else []
        if lines:
            log.lines, log.source = lines, "journalctl"
            log.truncated = len(lines) >= MAX_LOG_LINES
            return log
        log.attempts.append(
            f"journalctl: {'no kernel entries in the journal' if res.ok else res.describe()}"
            + (f" ({res.first_error_line()})" if res.first_error_line() else "")
        )
    if ctx.live and shutil.which("dmesg"):
        # ISO time instead of -T: unambiguous and carries the UTC offset.
        res = ctx.run(["dmesg", "--time-format=iso"], timeout_s=4)
        if res.ok:
            lines = within_window(res.stdout.splitlines(), since, now)
            log.lines, log.source = lines[-MAX_LOG_LINES:], "dmesg"
            log.truncated = len(lines) > MAX_LOG_LINES
            return log
        log.attempts.append(
            f"dmesg: {res.describe()}"
            + (f" ({res.first_error_line()})" if res.first_error_line() else "")
        )
    for path, kernel_only in (
        ("/var/log/kern.log", False),
        ("/var/log/messages", True),
        ("/var/log/syslog", True),
    ):
        current = read_file_tail(ctx, path)
        if current is None:
            log.attempts.append(f"{path}: not readable")
            continue
        # The rotated file may hold the start of the window.
        previous = read_file_tail(ctx, path + ".1", LOG_TAIL_BYTES // 2) or ""
        raw = (previous + "\n" + current).splitlines()
        if kernel_only:
            raw = [line for line in raw if " kernel: " in line]
        lines = within_window(raw, since, now)
        log.lines, log.source = lines[-MAX_LOG_LINES:], path
        log.truncated = len(lines) > MAX_LOG_LINES
        return log
    return log


def kernel_log_unavailable(log: KernelLog) -> str:
    """The skip reason when no kernel log source could be read."""
    return "no kernel log readable: " + "; ".join(log.attempts or ["no source tried"])


# Category -> (label, pattern); the first matching category wins, so order matters.
LOG_CATEGORIES: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    (
        "hardware_corrected",
        "corrected hardware error",
        re.compile(
            r"severity: corrected|severity=Corrected|EDAC .*\bCE\b|\bCorrected error",
            re.IGNORECASE,
        ),
    ),
    (
        "hardware",
        "hardware error (MCE/EDAC/AER)",
        re.compile(
            r"\[Hardware Error\]|Machine check|EDAC .*\bUE\b|Uncorrected|uncorrectable|"
            r"Memory failure:|PCIe Bus Error: severity=(?:Uncorrected|Fatal)"
        ),
    ),
    (
        "io",
        "I/O or filesystem error",
        re.compile(
            r"I/O error|blk_update_request|critical medium error|critical target error|"
            r"Sense Key : (?:Medium|Hardware) Error|"
            r"nvme\d*\S*: .*(?:timeout|controller is down|Device not ready|"
            r"Removing after probe failure|resetting controller)|"
            r"EXT4-fs error|remounting filesystem read-only|potential data loss|"
            r"XFS \([^)]*\): .*(?:metadata I/O error|[Cc]orruption|log I/O error|"
            r"[Ss]hut(?:ting)? down|writeback error)|"
            r"BTRFS (?:error|critical)|"
            r"ata\d+(?:\.\d+)?: (?:failed command|exception Emask)",
            re.IGNORECASE,
        ),
    ),
    ("hung_task", "hung task", re.compile(r"blocked for more than \d+ seconds")),
    (
        "lockup",
        "CPU lockup or RCU stall",
        re.compile(
            r"soft lockup|hard LOCKUP|rcu_\w+ (?:self-)?detected stall|"
            r"rcu: INFO: \w+ (?:self-)?detected stall|detected stalls on CPUs",
            re.IGNORECASE,
        ),
    ),
    ("oom", "OOM kill", re.compile(r"Killed process \d+")),
    (
        "segfault",
        "process crash (segfault/trap)",
        re.compile(r"segfault at|traps: \S+\[\d+\] (?:general protection|trap)"),
    ),
    (
        "oops",
        "kernel oops/BUG",
        re.compile(r"\bOops\b|BUG: |kernel BUG at|Kernel panic"),
    ),
)

_DEVICE_PATTERNS = (
    re.compile(r"\bdev(?:ice)?[ =]([a-z][a-z0-9]*(?:-\d+)?)"),
    re.compile(r"(?:EXT4-fs|XFS|BTRFS)(?: \w+)? \((?:device )?([a-z][\w-]*)\)"),
    re.compile(r"\b(nvme\d+(?:n\d+)?(?:p\d+)?)\b"),
    re.compile(r"\b(ata\d+(?:\.\d+)?)\b"),
    re.compile(r"\b(sd[a-z]+\d*|vd[a-z]+\d*|xvd[a-z]+\d*)\b"),
)
_CRASHED = re.compile(r"(?:traps: )?(\S+?)\[(\d+)\]:? (?:segfault at|general protection|trap)")


def devices_in(line: str) -> list[str]:
    """Block devices a kernel I/O error line names (sda, nvme0n1, dm-0, ata1.00...)."""
    found: list[str] = []
    for pattern in _DEVICE_PATTERNS:
        for name in pattern.findall(line):
            if name not in found:
                found.append(name)
    return found


@dataclass
class LogSummary:
    """Kernel log lines sorted into categories."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)  # newest last
    devices: dict[str, int] = field(default_factory=dict)  # device -> I/O error lines
    crashed: dict[str, int] = field(default_factory=dict)  # process name -> segfault lines
    ignored: int = 0  # I/O lines about ignored devices (fd0, sr0...)


def categorize(line: str) -> str | None:
    """The category of one kernel log line, or None for ordinary messages."""
    for name, _, pattern in LOG_CATEGORIES:
        if pattern.search(line):
            return name
    return None


def summarize_log(lines: Sequence[str], ignore_devices: Sequence[str] = ()) -> LogSummary:
    """Count each category and keep the newest examples, devices and crashed processes."""
    summary = LogSummary()
    for line in lines:
        category = categorize(line)
        if category is None:
            continue
        if category == "io":
            devices = devices_in(line)
            if devices and all(any(fnmatch(d, g) for g in ignore_devices) for d in devices):
                summary.ignored += 1
                continue
            for device in devices:
                summary.devices[device] = summary.devices.get(device, 0) + 1
        if category == "segfault" and (match := _CRASHED.search(line)):
            summary.crashed[match[1]] = summary.crashed.get(match[1], 0) + 1
        summary.counts[category] = summary.counts.get(category, 0) + 1
        examples = summary.examples.setdefault(category, [])
        examples.append(line.strip()[:EXAMPLE_CHARS])
        del examples[:-EXAMPLES_PER_CATEGORY]
    return summary


TAINT_FLAGS = (
    ("P", "proprietary module loaded"),
    ("F", "module force-loaded"),
    ("S", "out-of-spec system"),
    ("R", "module force-unloaded"),
    ("M", "machine check exception"),
    ("B", "bad page referenced"),
    ("U", "taint requested by user space"),
    ("D", "kernel died recently (OOPS or BUG)"),
    ("A", "ACPI table overridden"),
    ("W", "kernel warning (WARN_ON)"),
    ("C", "staging driver loaded"),
    ("I", "platform firmware workaround"),
    ("O", "out-of-tree module loaded"),
    ("E", "unsigned module loaded"),
    ("L", "soft lockup occurred"),
    ("K", "kernel live-patched"),
    ("X", "auxiliary taint"),
    ("T", "built with struct randomization"),
    ("N", "in-kernel test"),
)
#: Taint flags that mean the kernel itself went wrong since boot.
SERIOUS_TAINTS = frozenset("MBDL")


def decode_taint(value: int) -> list[tuple[str, str]]:
    """The (letter, meaning) pairs set in /proc/sys/kernel/tainted."""
    return [flag for bit, flag in enumerate(TAINT_FLAGS) if value >> bit & 1]


def _ignored_globs(thresholds: dict[str, Any]) -> list[str]:
    """The ignore_devices threshold as a list of globs."""
    return [g.strip() for g in str(thresholds.get("ignore_devices", "")).split(",") if g.strip()]


_LOG_REMEDIES = {
    "hardware": (
        "Read the details with `ras-mc-ctl --errors` (rasdaemon) or `mcelog --client`, and "
        "the BMC log (`ipmitool sel elist`); on a cloud VM stop/start the instance to move it "
        "to other hardware. Hardware errors can corrupt data silently: move the broker's "
        "partitions/replicas off this node until the hardware is checked."
    ),
    "hardware_corrected": (
        "Corrected errors (ECC, PCIe AER) are repaired, but a rising count predicts a failing "
        "DIMM or device: `ras-mc-ctl --summary` / `edac-util -v` name the DIMM; plan a "
        "replacement before it turns uncorrectable."
    ),
    "io": (
        "Check the device: `smartctl -a /dev/DEV` or `nvme smart-log /dev/DEV`, `iostat -x 1`, "
        "and whether the filesystem holding the Iggy data dir went read-only "
        "(`findmnt -o TARGET,SOURCE,OPTIONS`): the broker cannot append to segments then. "
        "Replace the disk / cloud volume, then fsck the filesystem."
    ),
    "hung_task": (
        "Tasks stuck for minutes in the kernel are almost always waiting on storage or a "
        "network filesystem: check disk latency (`iostat -x 1`), NFS/iSCSI mounts, and the "
        "stack traces after these lines in raw/kernel.log/kernel.log."
    ),
    "lockup": (
        "A CPU was stuck in the kernel. On VMs this is usually host contention (check steal "
        "time with `mpstat 1`); otherwise a kernel or driver bug: keep the stack trace from "
        "raw/kernel.log/kernel.log and update the kernel."
    ),
    "segfault": (
        "Find the crashed programs' core dumps (`coredumpctl list`) and logs; a crashing "
        "{broker} restarts (systemd/container) and its clients see disconnects: collect its "
        "log and the core for the Iggy developers."
    ),
    "oops": (
        "The kernel hit a BUG or oops and may be in an inconsistent state: keep the trace "
        "(raw/kernel.log/kernel.log), reboot at the next opportunity, and update the kernel."
    ),
}


def judge_kernel_log(
    log: KernelLog, thresholds: dict[str, Any], taint: int | None = None
) -> Result:
    """Judge hardware, I/O, lockup and crash messages of the recent kernel log."""
    summary = summarize_log(log.lines, _ignored_globs(thresholds))
    window = f"{log.source}, last {log.window_hours:g} h"
    labels = {name: label for name, label, _ in LOG_CATEGORIES}
    limits = {
        "hardware": ("hardware_fail", Severity.FAIL),
        "io": ("io_fail", Severity.FAIL),
        "hardware_corrected": ("corrected_warn", Severity.WARN),
        "hung_task": ("hung_task_warn", Severity.WARN),
        "lockup": ("lockup_warn", Severity.WARN),
        "segfault": ("segfault_warn", Severity.WARN),
        "oops": ("oops_warn", Severity.WARN),
    }
    findings: list[Finding] = []
    for category, (key, severity) in limits.items():
        count = summary.counts.get(category, 0)
        limit = float(thresholds[key])
        if count == 0 or count < limit:
            continue
        newest = summary.examples[category][-1]
        subject = "kernel log"
        message = f"{count} {labels[category]} line(s) in the kernel log ({window})"
        if category == "io" and summary.devices:
            subject = ", ".join(sorted(summary.devices))
            message += f" about {subject}"
        if category == "segfault":
            subject = ", ".join(sorted(summary.crashed)) or subject
            message += f" from {subject}"
            if any(name == BROKER_NAME or name.startswith("shard-") for name in summary.crashed):
                severity = Severity.FAIL
                message += f": {BROKER_NAME} crashed"
        message += f"; newest: {newest}"
        remedy = _LOG_REMEDIES[category].format(broker=BROKER_NAME)
        findings.append(Finding(severity, message, remedy, subject))
    if summary.counts.get("oom"):
        findings.append(
            Finding(
                Severity.INFO,
                f"{summary.counts['oom']} OOM kill(s) in the kernel log ({window}); "
                "memory.oom names the victims",
                "",
                "kernel log",
            )
        )
    taints = decode_taint(taint) if taint else []
    if taints:
        serious = [f"{c} ({m})" for c, m in taints if c in SERIOUS_TAINTS]
        if serious:
            findings.append(
                Finding(
                    Severity.WARN,
                    "the kernel is tainted since boot: " + ", ".join(serious),
                    "Something went wrong inside the kernel since it booted, even if the log "
                    "lines have rotated away: look for the first trace with `journalctl -k -b` "
                    "and reboot into an updated kernel when you can.",
                    "/proc/sys/kernel/tainted",
                )
            )
        else:
            findings.append(
                Finding(
                    Severity.INFO,
                    "the kernel is tainted: " + ", ".join(f"{c} ({m})" for c, m in taints),
                    "",
                    "/proc/sys/kernel/tainted",
                )
            )
    examples = [
        {"category": category, "line": line}
        for category in summary.examples
        for line in summary.examples[category]
    ]
    data = {
        "source": log.source,
        "window_hours": log.window_hours,
        "lines_read": len(log.lines),
        "truncated": log.truncated,
        "counts": summary.counts,
        "io_devices": summary.devices,
        "ignored_io_lines": summary.ignored,
        "crashed_processes": summary.crashed,
        "tainted": taint,
        "taint_flags": "".join(c for c, _ in taints),
        "examples": examples,
        "not_used": log.attempts,
    }
    return Result.from_findings(
        findings,
        ok=f"no hardware, I/O, lockup or crash messages in {len(log.lines)} kernel log lines "
        f"({window})",
        data=data,
    )


@check(
    id="kernel.log",
    category="kernel",
    title="Kernel log errors",
    description="Hardware (MCE/EDAC), I/O and filesystem errors, lockups, hung tasks, segfaults "
    "and OOM kills in the recent kernel log (journald, dmesg or kern.log).",
    timeout_s=10,
    thresholds={
        "window_hours": 24,
        "hardware_fail": 1,
        "io_fail": 1,
        "corrected_warn": 10,
        "hung_task_warn": 1,
        "lockup_warn": 1,
        "segfault_warn": 1,
        "oops_warn": 1,
        "ignore_devices": "fd0,sr0",
    },
)
def kernel_log(ctx: Context) -> Result:
    """Read the recent kernel log and judge the errors in it."""
    log = read_kernel_log(ctx, float(ctx.thresholds["window_hours"]))
    if not log.source:
        return Result.skipped(kernel_log_unavailable(log))
    header = f"# kernel log from {log.source}, last {log.window_hours:g} h\n"
    ctx.artifact("kernel.log", header + "\n".join(log.lines) + ("\n" if log.lines else ""))
    taint = read_int(ctx, "/proc/sys/kernel/tainted")
    return judge_kernel_log(log, ctx.thresholds, taint)


# --------------------------------------------------------------------------------------
# OOM kills
# --------------------------------------------------------------------------------------


@dataclass
class OomKill:
    """One process the OOM killer killed, as the kernel reported it."""

    process: str
    pid: int
    time: str = ""  # the line's timestamp as logged
    cgroup: bool = False  # a memory cgroup limit, not the whole machine, ran out
    memcg: str = ""  # the cgroup whose limit was hit (oom_memcg) or the victim's task_memcg
    trigger: str = ""  # the process whose allocation invoked the OOM killer
    total_vm_kb: int | None = None
    anon_rss_kb: int | None = None
    file_rss_kb: int | None = None
    shmem_rss_kb: int | None = None
    uid: int | None = None
    oom_score_adj: int | None = None
    limit_kb: int | None = None  # the cgroup's memory limit when the kernel printed it
    line: str = ""


_KILLED = re.compile(r"Killed process (\d+) \((.*?)\)")
_KILL_FIELDS = {
    "total_vm_kb": re.compile(r"total-vm:(\d+)kB"),
    "anon_rss_kb": re.compile(r"anon-rss:(\d+)kB"),
    "file_rss_kb": re.compile(r"file-rss:(\d+)kB"),
    "shmem_rss_kb": re.compile(r"shmem-rss:(\d+)kB"),
    "uid": re.compile(r"UID:(\d+)"),
    "oom_score_adj": re.compile(r"oom_score_adj:(-?\d+)"),
}
_INVOKED = re.compile(r"(\S+) invoked oom-killer:")
_CONSTRAINT = re.compile(r"oom-kill:(constraint=\S+)")
_MEMCG_USAGE = re.compile(r"memory: usage (\d+)kB, limit (\d+)kB")
_LINE_TIME = re.compile(r"^(\S+T\S+|\[[^\]]+\]|[A-Z][a-z]{2} +\d{1,2} \d{2}:\d{2}:\d{2})")


def _log_prefix_time(line: str) -> str:
    """The timestamp a log line starts with, as text ('' when none)."""
    match = _LINE_TIME.match(line)
    return match[1].strip("[]") if match else ""


def parse_oom_kills(lines: Iterable[str]) -> list[OomKill]:
    """Every 'Killed process' report, with the context lines the kernel prints before it."""
    kills: list[OomKill] = []
    trigger, constraint, limit_kb = "", {}, None
    for line in lines:
        if match := _INVOKED.search(line):
            trigger, constraint, limit_kb = match[1], {}, None
            continue
        if match := _CONSTRAINT.search(line):
            constraint = dict(
                part.partition("=")[::2] for part in match[1].split(",") if "=" in part
            )
            continue
        if match := _MEMCG_USAGE.search(line):
            limit_kb = int(match[2])
            continue
        if not (match := _KILLED.search(line)):
            continue
        pid, name = int(match[1]), match[2]
        if constraint.get("pid") not in (None, str(pid)):
            constraint = {}
        kill = OomKill(process=name, pid=pid, time=_log_prefix_time(line), line=line.strip())
        for key, pattern in _KILL_FIELDS.items():
            if found := pattern.search(line):
                setattr(kill, key, int(found[1]))
        kill.cgroup = (
            "Memory cgroup out of memory" in line
            or constraint.get("constraint") == "CONSTRAINT_MEMCG"
        )
        kill.memcg = constraint.get("oom_memcg") or constraint.get("task_memcg", "")
        kill.trigger = trigger
        kill.limit_kb = limit_kb if kill.cgroup else None
        kills.append(kill)
        trigger, constraint, limit_kb = "", {}, None
    return kills


def oom_report_lines(lines: Iterable[str], cap: int = 5000) -> list[str]:
    """The lines of every OOM report (from 'invoked oom-killer' to 'Killed process')."""
    out: list[str] = []
    inside = False
    for line in lines:
        if "invoked oom-killer" in line:
            inside = True
        if inside or "Killed process" in line or "oom_reaper" in line:
            out.append(line)
        if "Killed process" in line:
            inside = False
            out.append("")
    return out[-cap:]


def _mib(kb: int | None) -> str:
    """kB as a short MiB/GiB text."""
    return "?" if kb is None else mib_or_gib(kb * 1024)


def judge_oom(kills: Sequence[OomKill], window: str, thresholds: dict[str, Any]) -> Result:
    """The broker killed by the OOM killer fails; other victims warn."""
    findings: list[Finding] = []
    broker = [k for k in kills if is_broker(k.process)]
    others = [k for k in kills if not is_broker(k.process)]
    if broker and len(broker) >= float(thresholds["fail_broker_kills"]):
        newest = broker[-1]
        where = (
            f"its memory cgroup {newest.memcg or '?'} hit its limit"
            + (f" of {_mib(newest.limit_kb)}" if newest.limit_kb else "")
            if newest.cgroup
            else "the whole node ran out of memory"
        )
        findings.append(
            Finding(
                Severity.FAIL,
                f"{BROKER_NAME} was OOM-killed {len(broker)} time(s) ({window}); newest: pid "
                f"{newest.pid} at {newest.time or '?'}, anon-rss {_mib(newest.anon_rss_kb)}, "
                f"total-vm {_mib(newest.total_vm_kb)}: {where}",
                (
                    "Raise the cgroup limit above the broker's working set (systemd "
                    "`MemoryMax=` in a drop-in, the container's --memory / Kubernetes "
                    "resources.limits.memory), or shrink the broker: [system.memory_pool] size "
                    "(default 4 GiB) and the caches count against it."
                    if newest.cgroup
                    else "Find the other large processes in the OOM report "
                    "(raw/memory.oom/oom.txt lists every task's RSS) and move them off the "
                    "node or add RAM; protect the broker with `OOMScoreAdjust=-500` in a "
                    "systemd drop-in, and size [system.memory_pool] to leave room for the "
                    "page cache."
                )
                + " Clients were disconnected and unflushed messages may need to be re-sent.",
                f"{BROKER_NAME} pid {newest.pid}",
            )
        )
    if others and len(others) >= float(thresholds["warn_kills"]):
        names: dict[str, int] = {}
        for kill in others:
            names[kill.process] = names.get(kill.process, 0) + 1
        listed = ", ".join(f"{n} x{c}" if c > 1 else n for n, c in sorted(names.items()))
        cgroup = sum(1 for k in others if k.cgroup)
        newest = others[-1]
        findings.append(
            Finding(
                Severity.WARN,
                f"{len(others)} OOM kill(s) of other processes ({window}): {listed}"
                + (f" ({cgroup} by a cgroup limit)" if cgroup else "")
                + f"; newest: {newest.process} pid {newest.pid}, anon-rss "
                f"{_mib(newest.anon_rss_kb)}",
                "Memory is short on this node: see raw/memory.oom/oom.txt for who held the "
                "memory; raise the limit of the cgroup that was hit or move the workload; the "
                "broker may be next (set `OOMScoreAdjust=-500` for iggy-server).",
                listed,
            )
        )
    data = {
        "kills": [
            {
                "time": k.time,
                "process": k.process,
                "pid": k.pid,
                "kind": "cgroup" if k.cgroup else "global",
                "memcg": k.memcg,
                "anon_rss_mib": round(k.anon_rss_kb / 1024) if k.anon_rss_kb is not None else None,
                "total_vm_mib": round(k.total_vm_kb / 1024) if k.total_vm_kb is not None else None,
                "limit_mib": round(k.limit_kb / 1024) if k.limit_kb is not None else None,
                "trigger": k.trigger,
            }
            for k in kills[-50:]
        ],
        "total": len(kills),
        "broker_kills": len(broker),
    }
    return Result.from_findings(findings, ok=f"no OOM kills ({window})", data=data)


@check(
    id="memory.oom",
    category="memory",
    title="OOM kills",
    description="Processes the kernel's OOM killer killed recently (global and cgroup), "
    "with their memory; fails when it was the broker.",
    timeout_s=10,
    thresholds={"window_hours": 24, "fail_broker_kills": 1, "warn_kills": 1},
)
def memory_oom(ctx: Context) -> Result:
    """OOM kills from the kernel log; the broker as victim fails."""
    log = read_kernel_log(ctx, float(ctx.thresholds["window_hours"]))
    if not log.source:
        return Result.skipped(kernel_log_unavailable(log))
    if report := oom_report_lines(log.lines):
        ctx.artifact("oom.txt", "\n".join(report) + "\n")
    window = f"{log.source}, last {log.window_hours:g} h"
    result = judge_oom(parse_oom_kills(log.lines), window, ctx.thresholds)
    result.data["source"] = log.source
    return result
