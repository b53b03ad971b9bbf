"""How the broker is confined: its LSM label, and its systemd unit's user and syscall filter.

kernel.io_uring and security.lsm both ask how the broker is confined: `parse_label`
reads an AppArmor label ('docker-default (enforce)') or an SELinux context
('system_u:system_r:container_t:s0') into a `Confinement`. When the broker is not
running, its systemd unit says how it would be confined: `read_unit_sandbox` reads the
unit's user, groups, capabilities, SystemCallFilter=, LSM label, user namespace and command
(`systemctl show`), and `resolve_account` turns the user and groups into the uid and gids
its process gets.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass

from snapshot_agent.core.context import Context

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


# -- a systemd unit's sandbox: who its process runs as and which syscalls it may make --

#: systemd's syscall groups (src/shared/seccomp-util.c) holding each io_uring syscall:
#: @aio lists io_uring_enter/register/setup, @system-service includes @aio, @known
#: is every syscall. `systemctl show` prints filters expanded to syscall names; the
#: groups matter only when a filter is read as written.
SYSCALL_GROUPS_HOLDING = {
    name: frozenset({"@aio", "@system-service", "@known"})
    for name in ("io_uring_setup", "io_uring_enter", "io_uring_register")
}

#: The unit settings that decide whether its process may create io_uring rings, each one
#: a setting `systemd-run -p` takes: its account and capabilities (kernel.io_uring_disabled
#: = 1 lets only io_uring_group and CAP_SYS_ADMIN in the initial user namespace through),
#: its seccomp filter, its LSM label (SELinux and AppArmor can deny io_uring), and a user
#: namespace of its own (PrivateUsers=: its capabilities count only inside it).
SANDBOX_SETTINGS = (
    "User",
    "Group",
    "SupplementaryGroups",
    "DynamicUser",
    "SystemCallFilter",
    "SystemCallErrorNumber",
    "SystemCallArchitectures",
    "RestrictNamespaces",
    "NoNewPrivileges",
    "CapabilityBoundingSet",
    "AmbientCapabilities",
    "SecureBits",
    "PrivateUsers",
    "AppArmorProfile",
    "SELinuxContext",
)
#: `systemctl show -p` properties that decide what a unit's process may do: its last run,
#: its settings and the command it starts (a wrapper may confine the broker further).
SANDBOX_PROPERTIES = (
    "LoadState",
    "ActiveState",
    "Result",
    "ExecMainCode",
    "ExecMainStatus",
    *SANDBOX_SETTINGS,
    "ExecStart",
)
#: SecureBits= names by bit (systemd's secure_bits_to_string), as `systemd-run -p` takes them.
SECURE_BITS = (
    (1 << 0, "noroot"),
    (1 << 1, "noroot-locked"),
    (1 << 2, "no-setuid-fixup"),
    (1 << 3, "no-setuid-fixup-locked"),
    (1 << 4, "keep-caps"),
    (1 << 5, "keep-caps-locked"),
)
SHOW_TIMEOUT_S = 3
CAP_SYS_ADMIN_NAME = "cap_sys_admin"


@dataclass(frozen=True)
class SyscallFilter:
    """A unit's SystemCallFilter=: an allow-list, or a deny-list ('~' first)."""

    allow_list: bool
    names: frozenset[str]  # syscall names or @groups, without ':errno' suffixes

    def allows(self, syscall: str) -> bool:
        """Whether a process under this filter may make `syscall`."""
        listed = syscall in self.names or bool(
            SYSCALL_GROUPS_HOLDING.get(syscall, frozenset()) & self.names
        )
        return listed if self.allow_list else not listed

    def shown(self, limit: int = 8) -> str:
        """The filter as the unit would write it, shortened to `limit` names."""
        names = sorted(self.names)
        text = " ".join(names[:limit]) + (
            f" … (+{len(names) - limit})" if len(names) > limit else ""
        )
        return ("" if self.allow_list else "~") + text


def parse_syscall_filter(value: str) -> SyscallFilter | None:
    """`systemctl show`'s SystemCallFilter value; None when the unit has no filter."""
    value = value.strip()
    if value in ("", "~"):
        return None
    names = frozenset(n.split(":", 1)[0] for n in value.lstrip("~").split())
    return SyscallFilter(allow_list=not value.startswith("~"), names=names)


def parse_show(text: str) -> dict[str, str]:
    """`systemctl show` output (Key=value lines) as a dict; the first '=' splits."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


def _yes(value: str | None) -> bool | None:
    """systemd's booleans ('yes'/'no'); None when absent or something else."""
    if value in ("yes", "true", "1"):
        return True
    if value in ("no", "false", "0"):
        return False
    return None


def secure_bits_names(value: str) -> str | None:
    """`systemctl show`'s SecureBits (a number, or names) as names; None for unknown bits."""
    value = value.strip()
    if not value.isdigit():
        known = {name for _, name in SECURE_BITS}
        return value if all(word in known for word in value.split()) else None
    bits = int(value)
    names = [name for bit, name in SECURE_BITS if bits & bit]
    if bits & ~sum(bit for bit, _ in SECURE_BITS):
        return None
    return " ".join(names)


def _cap_names(value: str | None) -> frozenset[str] | None:
    """A capability list ('cap_chown cap_sys_admin'); None when the property is absent."""
    return None if value is None else frozenset(value.lower().split())


@dataclass(frozen=True)
class UnitSandbox:
    """What systemd applies to a unit's process, as `systemctl show` reports it."""

    unit: str
    properties: dict[str, str]  # the raw Key=value pairs read

    @property
    def loaded(self) -> bool:
        """The unit file exists and systemd loaded it."""
        return self.properties.get("LoadState") == "loaded"

    @property
    def user(self) -> str:
        """User= as written ('' means root)."""
        return self.properties.get("User", "")

    @property
    def group(self) -> str:
        """Group= as written ('' means the user's primary group)."""
        return self.properties.get("Group", "")

    @property
    def supplementary_groups(self) -> tuple[str, ...]:
        """SupplementaryGroups= names or gids."""
        return tuple(self.properties.get("SupplementaryGroups", "").split())

    @property
    def dynamic_user(self) -> bool:
        """DynamicUser=yes: a uid allocated at start, in no /etc/group list."""
        return bool(_yes(self.properties.get("DynamicUser")))

    @property
    def syscall_filter(self) -> SyscallFilter | None:
        """SystemCallFilter=, None when the unit has none."""
        return parse_syscall_filter(self.properties.get("SystemCallFilter", ""))

    @property
    def capability_bounding_set(self) -> frozenset[str] | None:
        """CapabilityBoundingSet= names; None when not reported (no restriction known)."""
        return _cap_names(self.properties.get("CapabilityBoundingSet"))

    @property
    def ambient_capabilities(self) -> frozenset[str]:
        """AmbientCapabilities= names (what a non-root User= keeps)."""
        return _cap_names(self.properties.get("AmbientCapabilities")) or frozenset()

    @property
    def private_users(self) -> bool:
        """PrivateUsers=: a user namespace of its own, where its capabilities stay."""
        return bool(_yes(self.properties.get("PrivateUsers")))

    @property
    def noroot(self) -> bool:
        """SecureBits=noroot: root gets no capabilities from running as root."""
        names = secure_bits_names(self.properties.get("SecureBits", "") or "0") or ""
        return "noroot" in names.split()

    @property
    def exec_paths(self) -> tuple[str, ...]:
        """The programs ExecStart= runs ('{ path=/usr/bin/iggy-server ; argv[]=... }')."""
        return tuple(re.findall(r"\{\s*path=([^\s;]+)", self.properties.get("ExecStart", "")))

    @property
    def killed_by_sigsys(self) -> bool:
        """Its last run ended on SIGSYS: a seccomp filter killed it on a denied syscall."""
        status = self.properties.get("ExecMainStatus", "")
        # ExecMainCode is the waitid() si_code: 2 CLD_KILLED, 3 CLD_DUMPED; 31 is SIGSYS.
        return self.properties.get("ExecMainCode") in ("2", "3") and status == "31"


def systemd_is_init(ctx: Context) -> bool:
    """systemd is PID 1 on the node (/run/systemd/system exists)."""
    return ctx.path("/run/systemd/system").is_dir()


def read_unit_sandbox(ctx: Context, unit: str) -> tuple[UnitSandbox | None, str]:
    """The unit's sandbox from `systemctl show`, or None and why it could not be read."""
    if not systemd_is_init(ctx):
        return None, "systemd is not PID 1 here"
    if shutil.which("systemctl") is None:
        return None, "systemctl is not installed"
    res = ctx.run(
        ["systemctl", "show", "--no-pager", "-p", ",".join(SANDBOX_PROPERTIES), unit],
        timeout_s=SHOW_TIMEOUT_S,
        save_as="unit-sandbox.txt",
    )
    if not res.ok:
        return None, res.explain(200)
    sandbox = UnitSandbox(unit, parse_show(res.stdout))
    if not sandbox.loaded:
        state = sandbox.properties.get("LoadState", "unknown")
        return None, f"{unit} is not installed (LoadState={state})"
    return sandbox, ""


# -- the account a unit's process runs as -------------------------------------------


@dataclass(frozen=True)
class UnitAccount:
    """The uid and groups a unit's process gets, resolved through /etc/passwd and /etc/group."""

    user: str  # as the unit names it; 'root' when User= is empty
    uid: int | None  # None: a DynamicUser or a user /etc/passwd does not list
    gids: tuple[int, ...]  # primary gid first, then supplementary groups
    unresolved: tuple[str, ...] = ()  # user or group names not found
    has_sys_admin: bool = False  # CAP_SYS_ADMIN: root with it bounded in, or ambient

    def describe(self) -> str:
        """'user iggy (uid 998, gids 998, 1001)'."""
        uid = "uid ?" if self.uid is None else f"uid {self.uid}"
        gids = ", ".join(str(g) for g in self.gids) or "none known"
        return f"user {self.user} ({uid}, gids {gids})"


def parse_passwd(text: str) -> dict[str, tuple[int, int]]:
    """/etc/passwd as user -> (uid, primary gid)."""
    out: dict[str, tuple[int, int]] = {}
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 4 and parts[2].isdigit() and parts[3].isdigit():
            out.setdefault(parts[0], (int(parts[2]), int(parts[3])))
    return out


def parse_groups(text: str) -> dict[str, tuple[int, tuple[str, ...]]]:
    """/etc/group as group name -> (gid, member users)."""
    out: dict[str, tuple[int, tuple[str, ...]]] = {}
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 4 and parts[2].isdigit():
            members = tuple(m for m in parts[3].strip().split(",") if m)
            out.setdefault(parts[0], (int(parts[2]), members))
    return out


def _gid_of(name: str, groups: dict[str, tuple[int, tuple[str, ...]]]) -> int | None:
    """A group name or numeric gid as a gid; None when /etc/group does not name it."""
    if name.isdigit():
        return int(name)
    return groups[name][0] if name in groups else None


def resolve_account(sandbox: UnitSandbox, passwd_text: str, group_text: str) -> UnitAccount:
    """Who the unit's process runs as: User=, Group=, /etc/group membership, SupplementaryGroups=.

    systemd gives a User= the groups /etc/group lists it in (initgroups), then adds
    SupplementaryGroups=; a DynamicUser gets only Group= and SupplementaryGroups=.
    """
    users, groups = parse_passwd(passwd_text), parse_groups(group_text)
    user = sandbox.user or "root"
    unresolved: list[str] = []
    uid: int | None = None
    primary: int | None = None
    if user.isdigit():
        uid = int(user)
    elif user in users and not sandbox.dynamic_user:
        uid, primary = users[user]
    elif not sandbox.dynamic_user:
        unresolved.append(f"user {user}")
    gids: list[int] = []
    names = [sandbox.group] if sandbox.group else []
    if not sandbox.dynamic_user:
        names += [g for g, (_, members) in groups.items() if user in members]
    names += list(sandbox.supplementary_groups)
    if not sandbox.group and primary is not None:
        gids.append(primary)
    for name in names:
        gid = _gid_of(name, groups)
        if gid is None:
            unresolved.append(f"group {name}")
        elif gid not in gids:
            gids.append(gid)
    return UnitAccount(user, uid, tuple(gids), tuple(unresolved), _has_sys_admin(sandbox, uid))


def _has_sys_admin(sandbox: UnitSandbox, uid: int | None) -> bool:
    """CAP_SYS_ADMIN in the initial user namespace (what kernel.io_uring_disabled = 1 asks).

    Root has it unless the bounding set drops it or SecureBits=noroot withholds root's
    capabilities; any user has it as an ambient capability. Under PrivateUsers= every
    capability belongs to the unit's own user namespace, where it does not count.
    """
    if sandbox.private_users:
        return False
    bounding = sandbox.capability_bounding_set
    bounded_in = bounding is None or CAP_SYS_ADMIN_NAME in bounding
    root_admin = uid == 0 and bounded_in and not sandbox.noroot
    return root_admin or CAP_SYS_ADMIN_NAME in sandbox.ambient_capabilities
