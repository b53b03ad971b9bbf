"""Runtime checks: versions of the agent, Python, the broker and the packages around it."""

from __future__ import annotations

import fnmatch
import platform
import re
import shutil
from dataclasses import dataclass, field
from typing import Any

import snapshot_agent
from snapshot_agent.core.check import check
from snapshot_agent.core.context import Context
from snapshot_agent.core.results import Finding, Result, Severity
from snapshot_agent.node.processes import BrokerProcess, find_brokers

VERSION_TIMEOUT_S = 3.0
#: The environment of every `--version` run. An old build that ignores its arguments
#: would start a second broker or connectors runtime (as root, for up to
#: VERSION_TIMEOUT_S): point it at configs that do not exist and at a data directory
#: that cannot be created even by root (nothing can be made under /dev/null), so such a
#: start fails at once instead of touching the real data. Env overrides follow Iggy's
#: IGGY_<SECTION>_<KEY> scheme (iggy-facts.md).
VERSION_ENV = {
    "IGGY_CONFIG_PATH": "/nonexistent/server.toml",
    "IGGY_CONNECTORS_CONFIG_PATH": "/nonexistent/connectors.toml",
    "IGGY_SYSTEM_PATH": "/dev/null/nonexistent",
    "IGGY_CONNECTORS_STATE_PATH": "/dev/null/nonexistent",
}
_VERSION_RE = re.compile(r"(?<![\d.])(\d+\.\d+(?:\.\d+)?(?:[-+.][0-9A-Za-z.+-]*)?)")


# -- runtime.versions ---------------------------------------------------------------


@dataclass
class ComponentVersion:
    """One program's version, or why it is unknown."""

    name: str
    version: str = ""
    source: str = ""  # how it was found (the command, or "module")
    note: str = ""  # why there is no version (not installed, command failed...)


@dataclass
class VersionFacts:
    """Versions of what runs on the node, plus the broker's running processes."""

    components: list[ComponentVersion] = field(default_factory=list)
    broker_processes: list[BrokerProcess] = field(default_factory=list)
    running_broker_version: str = ""  # from the running process's own binary
    path_broker_version: str = ""  # from iggy-server on PATH


def parse_version(text: str) -> str:
    """The first version number in `iggy-server --version` style output ('' if none)."""
    for line in text.splitlines():
        match = _VERSION_RE.search(line)
        if match:
            return match.group(1).rstrip(".-+")
    return ""


def _run_version(ctx: Context, binary: str, label: str) -> ComponentVersion:
    """Run `<binary> --version` with a short timeout and parse the version.

    The environment (VERSION_ENV) makes an accidental start fail fast.
    """
    # cwd=/: a binary that started for real would find no local_data/ or config to use.
    result = ctx.run([binary, "--version"], timeout_s=VERSION_TIMEOUT_S, env=VERSION_ENV, cwd="/")
    comp = ComponentVersion(label, source=f"{binary} --version")
    if result.ok:
        comp.version = parse_version(result.stdout) or parse_version(result.stderr)
        if not comp.version:
            first = (result.stdout.strip().splitlines() or [""])[0][:80]
            comp.note = f"no version in the output ({first!r})"
    else:
        comp.note = result.describe()
    return comp


def read_versions(ctx: Context) -> VersionFacts:
    """Agent and Python versions; broker and connectors versions from their binaries."""
    facts = VersionFacts()
    facts.components.append(
        ComponentVersion("snapshot-agent", snapshot_agent.__version__, "module")
    )
    facts.components.append(
        ComponentVersion(
            "python", platform.python_version(), f"{platform.python_implementation()} module"
        )
    )
    facts.broker_processes = find_brokers(ctx)
    # Prefer the running broker's own binary: through /proc/PID/exe it is the one that
    # runs even when the file on disk was replaced by an upgrade since it started.
    for proc in facts.broker_processes:
        comp = _run_version(ctx, str(ctx.path(f"/proc/{proc.pid}/exe")), "iggy-server (running)")
        comp.source = f"/proc/{proc.pid}/exe --version ({proc.exe or 'exe unreadable'})"
        facts.components.append(comp)
        facts.running_broker_version = comp.version
        break
    on_path = shutil.which("iggy-server")
    if on_path:
        comp = _run_version(ctx, on_path, "iggy-server (on PATH)")
        facts.components.append(comp)
        facts.path_broker_version = comp.version
    elif not facts.broker_processes:
        facts.components.append(
            ComponentVersion(
                "iggy-server", note="not on PATH and no iggy-server process is running"
            )
        )
    for binary in ("iggy-connectors", "iggy"):
        path = shutil.which(binary)
        if path:
            facts.components.append(_run_version(ctx, path, binary))
        else:
            facts.components.append(ComponentVersion(binary, note="not on PATH"))
    return facts


def judge_versions(facts: VersionFacts, thresholds: dict[str, Any]) -> Result:
    """What runs where; warns when the running broker's binary was replaced on disk."""
    findings: list[Finding] = []
    for proc in facts.broker_processes:
        if proc.exe_deleted:
            findings.append(
                Finding(
                    Severity.WARN,
                    f"the running iggy-server (pid {proc.pid}) was started from {proc.exe}, "
                    "which has since been replaced or deleted on disk",
                    "An upgrade installed a new binary but the broker was not restarted: it "
                    "still runs the old version. Restart it in a maintenance window "
                    "(`systemctl restart iggy-server`) so the node runs what was installed.",
                    f"/proc/{proc.pid}/exe",
                )
            )
    running, on_path = facts.running_broker_version, facts.path_broker_version
    if running and on_path and running != on_path:
        findings.append(
            Finding(
                Severity.INFO,
                f"the running broker is {running} but iggy-server on PATH is {on_path}",
                "The broker was not restarted after an upgrade (or PATH points at another "
                "install); restart it so the node runs the intended version, and make sure "
                "every node of the cluster runs the same one.",
                "iggy-server",
            )
        )
    known = [c for c in facts.components if c.version]
    missing = [c.name for c in facts.components if not c.version]
    summary = ", ".join(f"{c.name} {c.version}" for c in known)
    if missing:
        summary += f"; not found: {', '.join(missing)}"
    data = {
        "versions": [
            {"component": c.name, "version": c.version, "source": c.source, "note": c.note}
            for c in facts.components
        ],
        "broker_processes": [
            {"pid": p.pid, "exe": p.exe, "exe_deleted": p.exe_deleted}
            for p in facts.broker_processes
        ],
    }
    return Result.from_findings(findings, ok=summary, data=data)


@check(
    id="runtime.versions",
    category="runtime",
    title="Software versions",
    description="Versions of the agent, Python, the running iggy-server and the connectors.",
    timeout_s=10,
)
def runtime_versions(ctx: Context) -> Result:
    """Which versions run on this node.

    Verdicts:
    - pass: broker 0.6.1 running while 0.7.0 is on PATH (an info note: PATH may be
      another install) [test_runtime_versions_running_broker_and_path]
    - pass: no broker installed or running [test_runtime_versions_without_broker]
    - warn: the running broker's binary was replaced on disk (an upgrade not yet
      applied) [test_runtime_versions_binary_replaced_under_the_broker]
    """
    return judge_versions(read_versions(ctx), ctx.thresholds)


# -- runtime.packages ---------------------------------------------------------------

#: Packages whose versions matter to a broker node (fnmatch patterns).
RELEVANT_PACKAGES = (
    "openssl",
    "libssl*",
    "libc6",
    "glibc",
    "systemd",
    "chrony",
    "ntp",
    "ntpsec",
    "smartmontools",
    "nvme-cli",
    "iggy*",
    "snapshot-agent",
    "linux-image-*",
    "kernel",
    "kernel-core",
    "ca-certificates",
    "liburing*",
)
DPKG_FORMAT = "${Package}\t${Version}\t${Status}\t${Architecture}\n"
RPM_FORMAT = "%{NAME}\t%{VERSION}-%{RELEASE}\tinstall ok installed\t%{ARCH}\n"
_OK_STATES = {"installed", "config-files", "not-installed"}


@dataclass(frozen=True)
class Package:
    """One line of the package database."""

    name: str
    version: str
    want: str  # dpkg selection: install, hold, deinstall, purge
    flag: str  # ok or reinst-required
    state: str  # installed, half-configured, unpacked, config-files...
    arch: str = ""

    @property
    def installed(self) -> bool:
        """Present on disk (fully or partly), not just remembered."""
        return self.state not in ("config-files", "not-installed")

    @property
    def broken(self) -> bool:
        """dpkg left it half-done: half-installed, unpacked, half-configured, reinst-required."""
        return self.flag != "ok" or self.state not in _OK_STATES


@dataclass
class PackageFacts:
    """The package database as the package manager reports it."""

    manager: str  # dpkg or rpm
    packages: list[Package] = field(default_factory=list)
    raw: str = ""
    reboot_required: bool = False
    reboot_packages: list[str] = field(default_factory=list)


def parse_package_list(text: str) -> list[Package]:
    """Parse `dpkg-query -W -f '${Package}\\t${Version}\\t${Status}\\t${Architecture}\\n'`."""
    out: list[Package] = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or not parts[0]:
            continue
        status = parts[2].split()
        if len(status) != 3:
            status = [*status, "", "", ""][:3]
        out.append(
            Package(
                name=parts[0],
                version=parts[1],
                want=status[0],
                flag=status[1],
                state=status[2],
                arch=parts[3] if len(parts) > 3 else "",
            )
        )
    return out


def relevant(packages: list[Package]) -> list[Package]:
    """The installed packages matching RELEVANT_PACKAGES."""
    return [
        p
        for p in packages
        if p.installed and any(fnmatch.fnmatchcase(p.name, pat) for pat in RELEVANT_PACKAGES)
    ]


def read_packages(ctx: Context) -> PackageFacts | str:
    """The package list from dpkg-query or rpm; a reason string when neither works."""
    if shutil.which("dpkg-query"):
        argv = ["dpkg-query", "-W", "-f", DPKG_FORMAT]
        if not ctx.live:
            # A fixture tree (or a chroot) has its own dpkg database.
            argv.insert(1, f"--admindir={ctx.path('/var/lib/dpkg')}")
        manager = "dpkg"
    elif shutil.which("rpm"):
        argv = ["rpm", "-qa", "--qf", RPM_FORMAT]
        if not ctx.live:
            argv[1:1] = ["--root", ctx.roots.root]
        manager = "rpm"
    else:
        return "neither dpkg-query nor rpm is installed; package versions are unknown"
    result = ctx.run(argv, timeout_s=8)
    if not result.ok:
        return result.explain(200)
    facts = PackageFacts(manager, parse_package_list(result.stdout), raw=result.stdout)
    marker = ctx.read_optional("/run/reboot-required", max_bytes=4096)
    if marker is not None:
        facts.reboot_required = True
        pkgs = ctx.read_optional("/run/reboot-required.pkgs", max_bytes=64 * 1024) or ""
        facts.reboot_packages = sorted({p.strip() for p in pkgs.splitlines() if p.strip()})
    return facts


def judge_packages(facts: PackageFacts, thresholds: dict[str, Any]) -> Result:
    """Informational versions; packages left half-installed by dpkg are a warning."""
    findings: list[Finding] = []
    broken = [p for p in facts.packages if p.broken]
    if broken:
        names = ", ".join(f"{p.name} ({p.state or '?'}, {p.flag or '?'})" for p in broken[:10])
        more = f" and {len(broken) - 10} more" if len(broken) > 10 else ""
        findings.append(
            Finding(
                Severity.WARN,
                f"{len(broken)} package(s) are in a broken state: {names}{more}",
                "An interrupted upgrade left them half-done; the files on disk may not "
                "match any version (a half-configured openssl or libc can break the broker "
                "at its next start). Finish it: `dpkg --configure -a`, then "
                "`apt-get -f install`; check `dpkg --audit` until it prints nothing.",
                "dpkg",
            )
        )
    if facts.reboot_required:
        what = ", ".join(facts.reboot_packages[:10]) or "unspecified packages"
        findings.append(
            Finding(
                Severity.INFO,
                f"a reboot is pending to finish an upgrade ({what})",
                "Updated libraries or a new kernel are installed but not in use until the "
                "node reboots; plan a rolling restart of the cluster, one node at a time.",
                "/run/reboot-required",
            )
        )
    rel = relevant(facts.packages)
    installed = sum(1 for p in facts.packages if p.installed)
    key = {p.name: p.version for p in rel}
    highlights = [
        f"{name} {key[name]}"
        for name in ("openssl", "libc6", "glibc", "systemd", "iggy-server")
        if name in key
    ]
    ok = f"{installed} packages ({facts.manager})" + (
        f"; {', '.join(highlights)}" if highlights else ""
    )
    data = {
        "manager": facts.manager,
        "installed": installed,
        "relevant": [
            {"package": p.name, "version": p.version, "arch": p.arch, "state": p.state} for p in rel
        ],
        "broken": [
            {"package": p.name, "version": p.version, "status": f"{p.want} {p.flag} {p.state}"}
            for p in broken
        ],
        "reboot_required": facts.reboot_required,
    }
    return Result.from_findings(findings, ok=ok, data=data)


@check(
    id="runtime.packages",
    category="runtime",
    title="Installed packages",
    description="Versions of the packages a broker node depends on; packages dpkg left broken.",
    timeout_s=10,
)
def runtime_packages(ctx: Context) -> Result:
    """Relevant package versions and the package database's health.

    Verdicts:
    - pass: a healthy dpkg database with a removed package's leftover config files
      [test_runtime_packages_pass]
    - pass: a reboot pending after an upgrade and a held iggy-server (info notes)
      [test_runtime_packages_pending_reboot_and_held_package_pass]
    - warn: libssl3 left half-configured by an interrupted upgrade
      [test_runtime_packages_warns_on_half_configured]
    - skipped: a dpkg database dpkg-query cannot parse
      [test_runtime_packages_skips_on_a_corrupt_database]
    """
    facts = read_packages(ctx)
    if isinstance(facts, str):
        return Result.skipped(facts)
    ctx.artifact("packages.txt", facts.raw)
    return judge_packages(facts, ctx.thresholds)
