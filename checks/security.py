"""Security posture checks: Linux security modules around the broker, and sshd settings."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from snapshot_agent.core.check import Requirements, check
from snapshot_agent.core.context import Context
from snapshot_agent.core.grading import Band
from snapshot_agent.core.results import Finding, Result, Severity
from snapshot_agent.node.confinement import Confinement, parse_label
from snapshot_agent.node.kernel_log import EXAMPLE_CHARS, read_file_tail, read_kernel_log
from snapshot_agent.node.processes import BROKER_NAME, BrokerProcess, find_brokers

AUDIT_LOG = "/var/log/audit/audit.log"
AUDIT_TAIL_BYTES = 2 * 1024 * 1024
# --------------------------------------------------------------------------------------
# security.lsm
# --------------------------------------------------------------------------------------


def parse_apparmor_profiles(text: str) -> list[tuple[str, str]]:
    """/sys/kernel/security/apparmor/profiles: 'name (mode)' lines."""
    out: list[tuple[str, str]] = []
    for line in text.splitlines():
        match = re.match(r"(.+?)\s*\((\w+)\)\s*$", line)
        if match:
            out.append((match[1], match[2]))
    return out


def parse_selinux_config(text: str) -> str | None:
    """SELINUX= from /etc/selinux/config (enforcing, permissive, disabled)."""
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key.strip() == "SELINUX":
            return value.strip().strip("\"'").lower()
    return None


_DENIAL = re.compile(r'apparmor="DENIED"|avc:\s+denied')
_COMM = re.compile(r'comm="([^"]*)"')
_PID = re.compile(r"\bpid=(\d+)")
_PROFILE = re.compile(r'profile="([^"]*)"')
_URING_WORKER = re.compile(r"^iou-(?:wrk|sqp)-(\d+)$")
_AUDIT_TIME = re.compile(r"audit\((\d+)(?:\.\d+)?:\d+\)")


def denial_concerns_broker(line: str, brokers: Sequence[BrokerProcess]) -> bool:
    """True when an LSM denial line is about the broker (by name, thread, io_uring worker)."""
    comm = _COMM.search(line)
    name = comm[1] if comm else ""
    if name == BROKER_NAME:
        return True
    profile = _PROFILE.search(line)
    if profile and "iggy" in profile[1].lower():
        return True
    pids = {b.pid for b in brokers}
    tids = {t for b in brokers for t in b.threads} | pids
    pid = _PID.search(line)
    if pid and int(pid[1]) in tids:
        return True
    worker = _URING_WORKER.match(name)
    return bool(worker and int(worker[1]) in pids)


def audit_lines_within(text: str, since: datetime) -> list[str]:
    """audit.log lines at or after `since` (they carry 'audit(<epoch>.<ms>:<serial>)')."""
    floor = since.timestamp()
    out = []
    for line in text.splitlines():
        match = _AUDIT_TIME.search(line)
        if match and int(match[1]) >= floor:
            out.append(line)
    return out


@dataclass
class LsmFacts:
    """SELinux and AppArmor state, the broker's confinement, and recent denials."""

    selinux_enforce: str | None = None  # /sys/fs/selinux/enforce: '1', '0'; None: no SELinux
    selinux_config: str | None = None  # SELINUX= of /etc/selinux/config
    apparmor_enabled: str | None = None  # 'Y' / 'N'; None: AppArmor not built in
    apparmor_profiles: list[tuple[str, str]] | None = None  # None when not readable
    brokers: list[BrokerProcess] = field(default_factory=list)
    denials: list[str] = field(default_factory=list)  # broker denials, oldest first
    other_denials: int = 0
    log_sources: list[str] = field(default_factory=list)
    window_hours: float = 24.0


def read_lsm(ctx: Context, window_hours: float, now: datetime | None = None) -> LsmFacts:
    """Read LSM state from /sys and /etc, and denials from the kernel and audit logs."""
    facts = LsmFacts(window_hours=window_hours)
    enforce = ctx.read_optional("/sys/fs/selinux/enforce")
    facts.selinux_enforce = enforce.strip() if enforce is not None else None
    config = ctx.read_optional("/etc/selinux/config")
    facts.selinux_config = parse_selinux_config(config) if config is not None else None
    enabled = ctx.read_optional("/sys/module/apparmor/parameters/enabled")
    facts.apparmor_enabled = enabled.strip() if enabled is not None else None
    profiles = ctx.read_optional("/sys/kernel/security/apparmor/profiles")
    facts.apparmor_profiles = parse_apparmor_profiles(profiles) if profiles is not None else None
    facts.brokers = find_brokers(ctx)
    if facts.selinux_enforce is None and facts.apparmor_enabled != "Y":
        return facts  # no LSM that could deny anything: do not read the logs
    now = now or datetime.now().astimezone()
    lines: list[str] = []
    log = read_kernel_log(ctx, window_hours, now)
    if log.source:
        facts.log_sources.append(log.source)
        lines += [line for line in log.lines if _DENIAL.search(line)]
    audit = read_file_tail(ctx, AUDIT_LOG, AUDIT_TAIL_BYTES)
    if audit is not None:
        facts.log_sources.append(AUDIT_LOG)
        since = now - timedelta(hours=window_hours)
        lines += [line for line in audit_lines_within(audit, since) if _DENIAL.search(line)]
    for line in lines:
        if denial_concerns_broker(line, facts.brokers):
            facts.denials.append(line.strip())
        else:
            facts.other_denials += 1
    return facts


#: LSM denials of the broker in the window that warn (INFO when SELinux only logged them).
BROKER_DENIALS = Band("broker_denials", warn=1)


def selinux_enforcing(facts: LsmFacts) -> bool | None:
    """SELinux enforces (True), only logs (False), or is not active (None)."""
    return None if facts.selinux_enforce is None else facts.selinux_enforce == "1"


def iggy_profiles(facts: LsmFacts) -> list[tuple[str, str]]:
    """The loaded AppArmor profiles named for iggy, as (name, mode)."""
    if facts.apparmor_enabled != "Y" or facts.apparmor_profiles is None:
        return []
    return [p for p in facts.apparmor_profiles if "iggy" in p[0].lower()]


def broker_confinement(facts: LsmFacts) -> list[tuple[BrokerProcess, Confinement]]:
    """Each running broker with how its LSM label confines it."""
    enforcing = selinux_enforcing(facts)
    return [(broker, parse_label(broker.label, enforcing)) for broker in facts.brokers]


def _selinux_mode_changes_at_reboot(facts: LsmFacts) -> list[Finding]:
    """SELinux runs in another mode than /etc/selinux/config sets for the next boot."""
    enforcing = selinux_enforcing(facts)
    mode = "enforcing" if enforcing else "permissive"
    if enforcing is None or not facts.selinux_config or facts.selinux_config == mode:
        return []
    return [
        Finding(
            Severity.INFO,
            f"SELinux runs {mode} but /etc/selinux/config says {facts.selinux_config}: "
            "the mode changes at the next reboot",
            "Make them agree (`setenforce`, and SELINUX= in /etc/selinux/config) so a "
            "reboot does not change what the broker may do.",
            "/etc/selinux/config",
        )
    ]


def _iggy_apparmor_profile_loaded(facts: LsmFacts) -> list[Finding]:
    """An AppArmor profile for the broker is loaded: it must allow what the broker needs."""
    return [
        Finding(
            Severity.INFO,
            f"AppArmor profile {name!r} for the broker is loaded in {mode} mode",
            "A profile must allow the data directory, the listening ports, memlock and "
            "io_uring (AppArmor 4 mediates io_uring); denials appear in the kernel log as "
            'apparmor="DENIED".',
            "/sys/kernel/security/apparmor/profiles",
        )
        for name, mode in iggy_profiles(facts)
    ]


def _broker_confined(facts: LsmFacts) -> list[Finding]:
    """A broker confined in enforce mode: fine while no denial shows (INFO, not WARN)."""
    return [
        Finding(
            Severity.INFO,
            f"{BROKER_NAME} (pid {broker.pid}) is confined by {conf.lsm} "
            f"{conf.name!r} in {conf.mode} mode; its rules can block io_uring, memlock "
            "or data-directory access",
            "Nothing to do while no denials show; if the broker fails with "
            "'Permission denied' or 'Operation not permitted', look for denials "
            "(`journalctl -k | grep -E 'apparmor=\"DENIED\"|avc: +denied'`, "
            f"`ausearch -m avc -c {BROKER_NAME}`) and extend the policy.",
            f"/proc/{broker.pid}/attr/current",
        )
        for broker, conf in broker_confinement(facts)
        if conf.confined and conf.mode in ("enforce", "enforcing", "kill")
    ]


def _broker_denied(facts: LsmFacts, thresholds: dict[str, Any]) -> list[Finding]:
    """The LSM denied the broker something: warns, INFO when every denial was permissive."""
    severity = BROKER_DENIALS.grade_count(len(facts.denials), thresholds)
    if severity is None:
        return []
    permissive_only = all("permissive=1" in line for line in facts.denials)
    return [
        Finding(
            Severity.INFO if permissive_only else severity,
            f"{len(facts.denials)} LSM denial(s) for {BROKER_NAME} in the last "
            f"{facts.window_hours:g} h"
            + (" (permissive: logged, not enforced)" if permissive_only else "")
            + f"; newest: {facts.denials[-1][:EXAMPLE_CHARS]}",
            "Each denial names the operation and path: extend the profile/policy for "
            "them (`aa-logprof` for AppArmor, `audit2allow -a -M iggy` for SELinux) "
            "rather than disabling the LSM; io_uring denials stop the broker from starting.",
            BROKER_NAME,
        )
    ]


def _lsm_summary(facts: LsmFacts) -> str:
    """SELinux and AppArmor state, the broker's confinement and the logs read, in one line."""
    enforcing = selinux_enforcing(facts)
    parts = [
        "SELinux off"
        if enforcing is None
        else f"SELinux {'enforcing' if enforcing else 'permissive'}"
    ]
    if facts.apparmor_enabled != "Y":
        parts.append("AppArmor off")
    elif facts.apparmor_profiles is None:
        parts.append("AppArmor enabled (profiles not readable; not root?)")
    else:
        parts.append(
            f"AppArmor enabled ({len(facts.apparmor_profiles)} profiles, "
            f"{len(iggy_profiles(facts)) or 'none'} for iggy)"
        )
    confined = [conf for _, conf in broker_confinement(facts) if conf.confined]
    if not facts.brokers:
        parts.append(f"{BROKER_NAME} not running")
    elif confined:
        parts.append(f"{BROKER_NAME} confined by {confined[0].name}")
    else:
        parts.append(f"{BROKER_NAME} unconfined")
    if facts.log_sources:
        parts.append(f"no broker denials in {', '.join(facts.log_sources)}")
    return "; ".join(parts)


def _lsm_data(facts: LsmFacts) -> dict[str, Any]:
    """LSM state, each broker's label and confinement, and the newest broker denials."""
    return {
        "selinux_enforce": facts.selinux_enforce,
        "selinux_config": facts.selinux_config,
        "apparmor_enabled": facts.apparmor_enabled,
        "apparmor_profile_count": (
            len(facts.apparmor_profiles) if facts.apparmor_profiles is not None else None
        ),
        "iggy_profiles": [{"profile": n, "mode": m} for n, m in iggy_profiles(facts)],
        "brokers": [
            {
                "pid": broker.pid,
                "label": broker.label or "(none)",
                "lsm": conf.lsm,
                "domain": conf.name,
                "mode": conf.mode,
                "confined": conf.confined,
            }
            for broker, conf in broker_confinement(facts)
        ],
        "broker_denials": [line[:EXAMPLE_CHARS] for line in facts.denials[-10:]],
        "other_denials": facts.other_denials,
        "logs_read": facts.log_sources,
    }


def judge_lsm(facts: LsmFacts, thresholds: dict[str, Any]) -> Result:
    """Mostly informational; denials hitting the broker warn.

    A profile that confines iggy-server in enforce mode is reported as INFO, not WARN:
    a deliberately written profile is not a fault, and a running broker proves its rings
    were allowed. What shows a real problem is a denial in the logs, which warns.
    """
    findings = (
        _selinux_mode_changes_at_reboot(facts)
        + _iggy_apparmor_profile_loaded(facts)
        + _broker_confined(facts)
        + _broker_denied(facts, thresholds)
    )
    return Result.from_findings(findings, ok=_lsm_summary(facts), data=_lsm_data(facts))


@check(
    id="security.lsm",
    category="security",
    title="SELinux and AppArmor",
    description="SELinux mode and AppArmor profiles, how iggy-server is confined, and LSM "
    "denials against it in the kernel and audit logs.",
    timeout_s=10,
    thresholds={"window_hours": 24},
    bands=(BROKER_DENIALS,),
)
def security_lsm(ctx: Context) -> Result:
    """Which LSM confines the broker, and whether it denied it anything.

    Verdicts:
    - pass: no LSM active, the broker unconfined [test_lsm_none_active]
    - pass: the broker confined by its own AppArmor profile, denials for other programs
      only [test_lsm_apparmor_confined_is_info]
    - pass: SELinux permissive: denials logged, not enforced, and a mode that changes at
      reboot [test_lsm_selinux_permissive_denials_and_mode_mismatch]
    - pass: one broker denial, below a warn_broker_denials raised to 2
      [test_lsm_broker_denials_band]
    - warn: an enforcing profile denied the broker something in the window
      [test_lsm_broker_denials_warn]
    """
    return judge_lsm(read_lsm(ctx, float(ctx.thresholds["window_hours"])), ctx.thresholds)


# --------------------------------------------------------------------------------------
# security.ssh
# --------------------------------------------------------------------------------------

SSHD_CONFIG = "/etc/ssh/sshd_config"
MAX_INCLUDE_DEPTH = 16
#: Keywords sshd treats as the same setting (deprecated alias -> current name).
SSHD_ALIASES = {"challengeresponseauthentication": "kbdinteractiveauthentication"}
#: OpenSSH's built-in defaults for the settings judged here.
SSHD_DEFAULTS = {
    "permitrootlogin": "prohibit-password",
    "passwordauthentication": "yes",
    "permitemptypasswords": "no",
    "kbdinteractiveauthentication": "yes",
    "usepam": "no",
}


@dataclass
class SshdConfig:
    """Effective global sshd settings (first value wins) and the Match-block overrides."""

    settings: dict[str, tuple[str, str]] = field(default_factory=dict)  # kw -> (value, file)
    matches: list[dict[str, str]] = field(default_factory=list)  # match, keyword, value, file
    files: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def value(self, keyword: str) -> tuple[str, str]:
        """(value, where) for a keyword, falling back to OpenSSH's default."""
        if keyword in self.settings:
            return self.settings[keyword]
        return SSHD_DEFAULTS.get(keyword, ""), "default"


_LINE = re.compile(r"(\S+?)(?:\s*=\s*|\s+)(.*)$")


def split_directive(line: str) -> tuple[str, str] | None:
    """'PermitRootLogin no' / 'PermitRootLogin=no' -> ('permitrootlogin', 'no')."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    match = _LINE.match(line)
    if not match:
        return None
    keyword = match[1].lower()
    return SSHD_ALIASES.get(keyword, keyword), match[2].strip()


def first_arg(value: str) -> str:
    """The first argument of a directive, unquoted and lower-cased."""
    parts = value.split()
    return parts[0].strip("\"'").lower() if parts else ""


def parse_sshd_config(
    read: Callable[[str], str | None],
    expand: Callable[[str], list[str]],
    path: str = SSHD_CONFIG,
) -> SshdConfig:
    """Follow sshd_config and its Include files in order, as sshd does.

    `read(node_path)` gives a file's text (None when unreadable); `expand(pattern)` gives
    the sorted node paths a glob matches. A Match block lasts until the next Match or
    the end of its file (approximation: sshd also ends it at the end of the whole config).
    """
    config = SshdConfig()

    def walk(node_path: str, match: str, depth: int) -> None:
        """Read one file; `match` is the Match condition in force ('' for global)."""
        if depth > MAX_INCLUDE_DEPTH:
            config.problems.append(f"{node_path}: Include nested deeper than {MAX_INCLUDE_DEPTH}")
            return
        text = read(node_path)
        if text is None:
            config.problems.append(f"{node_path}: not readable")
            return
        if node_path not in config.files:
            config.files.append(node_path)
        current = match
        for line in text.splitlines():
            directive = split_directive(line)
            if directive is None:
                continue
            keyword, value = directive
            if keyword == "match":
                current = "" if value.strip().lower() == "all" else value
                continue
            if keyword == "include":
                for pattern in value.split():
                    pattern = pattern.strip("\"'")
                    if not pattern.startswith("/"):
                        pattern = "/etc/ssh/" + pattern
                    for included in expand(pattern):
                        walk(included, current, depth + 1)
                continue
            if current:
                config.matches.append(
                    {"match": current, "keyword": keyword, "value": value, "file": node_path}
                )
            else:
                config.settings.setdefault(keyword, (value, node_path))

    walk(path, "", 0)
    return config


SSH_REMEDY_TAIL = (
    " Put it in a drop-in such as /etc/ssh/sshd_config.d/10-hardening.conf (Debian and Ubuntu "
    "include sshd_config.d/*.conf at the top, and sshd keeps the first value it reads), then "
    "`sshd -t && systemctl reload ssh` (sshd on RHEL). Keep a second session open while you "
    "test."
)


def _where(source: str) -> str:
    """Where a value came from, in words."""
    return "OpenSSH default, not set" if source == "default" else f"set in {source}"


def _subject(source: str) -> str:
    """The file a finding is about (sshd_config when the value is a default)."""
    return SSHD_CONFIG if source == "default" else source


def _is_yes(config: SshdConfig, keyword: str) -> bool:
    """The effective value of `keyword` is yes."""
    return first_arg(config.value(keyword)[0]) == "yes"


def _root_password_login(config: SshdConfig) -> list[Finding]:
    """PermitRootLogin yes: root can log in over SSH with a password."""
    if not _is_yes(config, "permitrootlogin"):
        return []
    source = config.value("permitrootlogin")[1]
    return [
        Finding(
            Severity.WARN,
            f"PermitRootLogin yes ({_where(source)}): root can log in over SSH with a password",
            "Set `PermitRootLogin prohibit-password` (keys only) or `no` and use sudo."
            + SSH_REMEDY_TAIL,
            _subject(source),
        )
    ]


def _password_login(config: SshdConfig) -> list[Finding]:
    """PasswordAuthentication yes: passwords can be guessed or reused."""
    if not _is_yes(config, "passwordauthentication"):
        return []
    source = config.value("passwordauthentication")[1]
    return [
        Finding(
            Severity.WARN,
            f"PasswordAuthentication yes ({_where(source)}): SSH accepts passwords, "
            "which can be guessed or reused",
            "Set `PasswordAuthentication no` once every operator has a key installed."
            + SSH_REMEDY_TAIL,
            _subject(source),
        )
    ]


def _empty_password_login(config: SshdConfig) -> list[Finding]:
    """PermitEmptyPasswords yes with password logins on: no password needed at all."""
    if not (_is_yes(config, "passwordauthentication") and _is_yes(config, "permitemptypasswords")):
        return []
    source = config.value("permitemptypasswords")[1]
    return [
        Finding(
            Severity.FAIL,
            f"PermitEmptyPasswords yes ({_where(source)}) with password logins on: an "
            "account without a password can log in over SSH",
            "Set `PermitEmptyPasswords no`." + SSH_REMEDY_TAIL,
            _subject(source),
        )
    ]


def _pam_password_prompt(config: SshdConfig) -> list[Finding]:
    """KbdInteractiveAuthentication yes with UsePAM yes: PAM still asks for passwords."""
    if not (_is_yes(config, "kbdinteractiveauthentication") and _is_yes(config, "usepam")):
        return []
    source = config.value("kbdinteractiveauthentication")[1]
    return [
        Finding(
            Severity.WARN,
            f"KbdInteractiveAuthentication yes ({_where(source)}) with UsePAM yes: PAM "
            "still asks for passwords"
            + (
                " even though PasswordAuthentication is no"
                if not _is_yes(config, "passwordauthentication")
                else ""
            ),
            "Set `KbdInteractiveAuthentication no` unless you use PAM for one-time "
            "passwords." + SSH_REMEDY_TAIL,
            _subject(source),
        )
    ]


#: (keyword, value) pairs a Match block should not turn on without a reviewer noticing.
RISKY_MATCH_SETTINGS = frozenset(
    {
        ("permitrootlogin", "yes"),
        ("passwordauthentication", "yes"),
        ("permitemptypasswords", "yes"),
    }
)


def _risky_match_overrides(config: SshdConfig) -> list[Finding]:
    """A Match block turns root, password or empty-password logins on for some connections."""
    return [
        Finding(
            Severity.INFO,
            f"`Match {item['match']}` sets {item['keyword']} {item['value']} ({item['file']})",
            "Check that the Match block is as narrow as intended (a user or address "
            "range), since it overrides the global setting for those connections.",
            item["file"],
        )
        for item in config.matches
        if (item["keyword"], first_arg(item["value"])) in RISKY_MATCH_SETTINGS
    ]


def _include_problems(config: SshdConfig) -> list[Finding]:
    """Include files that could not be read or nest too deep."""
    return [
        Finding(Severity.INFO, f"sshd config include: {problem}", "", SSHD_CONFIG)
        for problem in config.problems
    ]


_SSHD_RULES = (
    _root_password_login,
    _password_login,
    _empty_password_login,
    _pam_password_prompt,
    _risky_match_overrides,
    _include_problems,
)


def judge_sshd(config: SshdConfig, thresholds: dict[str, Any]) -> Result:
    """Root login with a password and password logins warn; empty passwords fail."""
    findings = [finding for rule in _SSHD_RULES for finding in rule(config)]
    effective = [
        {"keyword": kw, "value": config.value(kw)[0], "source": config.value(kw)[1]}
        for kw in SSHD_DEFAULTS
    ]
    data = {
        "effective": effective,
        "match_overrides": config.matches[:50],
        "files": config.files,
    }
    shown = {kw: first_arg(config.value(kw)[0]) for kw in SSHD_DEFAULTS}
    ok = (
        f"PermitRootLogin {shown['permitrootlogin']}, "
        f"PasswordAuthentication {shown['passwordauthentication']}, "
        f"KbdInteractiveAuthentication {shown['kbdinteractiveauthentication']} "
        f"({len(config.files)} config file(s))"
    )
    return Result.from_findings(findings, ok=ok, data=data)


@check(
    id="security.ssh",
    category="security",
    title="SSH daemon settings",
    description="Root and password logins allowed by sshd_config and its Include files "
    "(first value wins, as sshd reads them).",
    requires=Requirements(paths=(SSHD_CONFIG,)),
    timeout_s=5,
)
def security_ssh(ctx: Context) -> Result:
    """Judge sshd's root and password login settings; copies the config files, never keys.

    Verdicts:
    - pass: a cloud-init drop-in turns passwords off before the main file's `yes`
      [test_ssh_dropin_wins_and_passes]
    - pass: root may log in with keys only (prohibit-password, without-password, no)
      [test_ssh_root_login_without_password_is_fine]
    - warn: Debian's stock config: password logins by OpenSSH's default
      [test_ssh_defaults_allow_passwords]
    - warn: PermitRootLogin yes, keyboard-interactive passwords through PAM
      [test_ssh_root_login_and_kbd_interactive]
    - fail: PermitEmptyPasswords yes [test_ssh_empty_passwords_fail]
    - skipped: no /etc/ssh/sshd_config [test_ssh_skipped_without_sshd_config]
    """
    config = parse_sshd_config(
        lambda p: ctx.read_optional(p, 256 * 1024),
        lambda g: [p for p in ctx.glob(g) if ctx.path(p).is_file()],
    )
    for path in config.files:
        try:
            ctx.copy_file(path)
        except OSError:
            continue
    return judge_sshd(config, ctx.thresholds)
