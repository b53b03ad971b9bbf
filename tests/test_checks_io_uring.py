"""kernel.io_uring when the broker is down: its unit's sandbox, the account it runs as, a probe.

The node is a fixture tree; `systemctl` and `systemd-run` are fakes on PATH (this machine
has no systemd as PID 1). The io_uring_setup probe itself runs for real where it matters:
as a plain child of the test, and under a real seccomp filter a fake systemd-run installs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import snapshot_agent.checks.kernel as kernel
from snapshot_agent.checks.kernel import (
    RING_PROBE,
    kernel_io_uring,
    parse_ring_probe,
    probe_settings,
    sandbox_probe_argv,
)
from snapshot_agent.core.context import Context
from snapshot_agent.core.results import Result, Severity, Status
from snapshot_agent.node.confinement import (
    UnitSandbox,
    parse_syscall_filter,
    resolve_account,
)

from .conftest import fake_tools, fixture_roots, make_context, write_tree

UNIT = "iggy-server.service"
PASSWD = "root:x:0:0:root:/root:/bin/bash\niggy:x:998:998::/var/lib/iggy:/usr/sbin/nologin\n"
GROUP = "root:x:0:\niggy:x:998:\niouring:x:1001:{members}\n"
# `systemctl show -p ...` of a hardened iggy-server.service that failed to start.
SHOW = {
    "LoadState": "loaded",
    "ActiveState": "failed",
    "Result": "exit-code",
    "ExecMainCode": "1",
    "ExecMainStatus": "1",
    "User": "iggy",
    "Group": "",
    "SupplementaryGroups": "",
    "DynamicUser": "no",
    "SystemCallFilter": "",
    "SystemCallErrorNumber": "EPERM",
    "SystemCallArchitectures": "native",
    "RestrictNamespaces": "yes",
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "cap_net_bind_service",
    "AmbientCapabilities": "",
    "SecureBits": "0",
    "PrivateUsers": "no",
    "AppArmorProfile": "",
    "SELinuxContext": "",
    "ExecStart": "{ path=/usr/bin/iggy-server ; argv[]=/usr/bin/iggy-server ; "
    "ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; "
    "status=0/0 }",
}
# What RING_PROBE prints under User=iggy with the iouring group (no filter, no caps).
PROBE_AS_IGGY = (
    "status Uid:\t998\t998\t998\t998\nstatus Gid:\t998\t998\t998\t998\n"
    "status Groups:\t998 1001\nstatus NoNewPrivs:\t1\nstatus Seccomp:\t{seccomp}\n"
    "status CapEff:\t0000000000000000\nsetup\n{outcome}"
)
#: The same as root (uid 0, every capability), e.g. inside a PrivateUsers= user namespace.
PROBE_AS_ROOT = (
    "status Uid:\t0\t0\t0\t0\nstatus Gid:\t0\t0\t0\t0\nstatus Groups:\t0\n"
    "status NoNewPrivs:\t0\nstatus Seccomp:\t0\nstatus CapEff:\t000001ffffffffff\nsetup\n{outcome}"
)
DENY_IO_URING = "~io_uring_enter io_uring_register io_uring_setup"


def down_node(node: Path, disabled: str = "0", *, systemd: bool = True, members: str = "") -> Path:
    """A node where iggy-server is not running (only sshd), optionally with systemd as PID 1."""
    write_tree(
        node,
        {
            "proc/sys/kernel/osrelease": "6.6.13-amd64\n",
            "proc/sys/kernel/io_uring_disabled": disabled + "\n",
            "proc/sys/kernel/io_uring_group": "1001\n",
            "etc/passwd": PASSWD,
            "etc/group": GROUP.format(members=members),
            "proc/77/comm": "sshd\n",
            "proc/77/status": "Name:\tsshd\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nSeccomp:\t0\n",
        },
    )
    if systemd:
        (node / "run/systemd/system").mkdir(parents=True)
    return node


def show(**overrides: str) -> str:
    return "".join(f"{k}={v}\n" for k, v in (SHOW | overrides).items())


def tools(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    unit: str,
    probe_out: str | None = None,
    probe_exit: int = 0,
) -> None:
    """Fake systemctl (the unit's settings) and, when given, systemd-run (the probe's output)."""
    fakes = {"systemctl": [(("show", UNIT), unit, 0)]}
    if probe_out is not None:
        fakes["systemd-run"] = [(("--wait", "--pipe"), probe_out, probe_exit)]
    fake_tools(tmp_path, monkeypatch, fakes)


def fake_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, out: str, code: int = 0) -> None:
    """Point the plain probe at a fake interpreter that prints `out`."""
    script = tmp_path / "fake-python"
    script.write_text(
        f"#!{sys.executable}\nimport sys\nsys.stdout.write({out!r})\nsys.exit({code})\n"
    )
    script.chmod(0o755)
    monkeypatch.setattr(kernel, "PROBE_PYTHON", str(script))


def as_root(monkeypatch: pytest.MonkeyPatch, root: bool = True) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0 if root else 1000)


def run(tmp_path: Path, node: Path) -> tuple[Result, Context]:
    ctx = make_context(tmp_path, roots=fixture_roots(node))
    return kernel_io_uring.run(ctx), ctx


# ---------------------------------------------------------------- the case: broker down


def test_io_uring_broker_down_unit_filter_blocks_fails_under_sandbox_probe(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The unit denies io_uring (Docker-like hardening copied into SystemCallFilter=~...);
    # the broker is not running. A probe under the unit's sandbox is refused: fail.
    down_node(node)
    as_root(monkeypatch)
    tools(
        tmp_path,
        monkeypatch,
        show(SystemCallFilter=DENY_IO_URING, SupplementaryGroups="iouring"),
        PROBE_AS_IGGY.format(seccomp=2, outcome="errno 1\n"),
    )
    result, ctx = run(tmp_path, node)
    assert result.status == Status.FAIL
    fail = next(f for f in result.findings if f.severity == Severity.FAIL)
    assert "failed with EPERM in a probe run under iggy-server.service's sandbox" in fail.message
    assert "a seccomp filter (iggy-server.service's SystemCallFilter= denies it)" in fail.message
    assert "SystemCallFilter=" in fail.remediation
    assert result.data["probe"]["mode"] == "sandbox" and result.data["probe"]["uid"] == 998
    # systemd-run got the unit's user, groups and filter.
    [probe_cmd] = [c["argv"] for c in ctx.commands if c["argv"][0] == "systemd-run"]
    assert "User=iggy" in probe_cmd and "SupplementaryGroups=iouring" in probe_cmd
    assert f"SystemCallFilter={DENY_IO_URING}" in probe_cmd
    assert "CapabilityBoundingSet=cap_net_bind_service" in probe_cmd
    assert probe_cmd[-2:] == ["-c", RING_PROBE]


def test_io_uring_broker_down_real_seccomp_filter_under_fake_systemd_run(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real seccomp filter: this fake systemd-run installs one that makes io_uring_setup
    # return EPERM when it is given SystemCallFilter=~...io_uring_setup, then runs the probe.
    down_node(node)
    as_root(monkeypatch)
    tools(tmp_path, monkeypatch, show(SystemCallFilter=DENY_IO_URING, User=""))
    systemd_run = tmp_path / "bin/systemd-run"
    systemd_run.write_text(f"#!{sys.executable}\n{SECCOMP_SYSTEMD_RUN}")
    systemd_run.chmod(0o755)
    result, _ = run(tmp_path, node)
    probe = result.data["probe"]
    if probe["mode"] == "plain" and "seccomp unavailable" in probe["how"]:
        pytest.skip(f"cannot install a seccomp filter here: {probe['how']}")
    assert probe["mode"] == "sandbox" and probe["seccomp"] == 2
    assert (probe["created"], probe["error"]) == (False, "EPERM")
    assert result.status == Status.FAIL
    assert "under iggy-server.service's sandbox" in result.summary


#: A stand-in for systemd-run: applies a real seccomp filter for SystemCallFilter=~io_uring_setup.
SECCOMP_SYSTEMD_RUN = r"""
import ctypes, os, struct, sys
args = sys.argv[1:]
props = []
while args and args[0].startswith("-"):
    if args[0] == "-p":
        props.append(args[1])
        args = args[2:]
    else:
        args = args[1:]
if any(p.startswith("SystemCallFilter=~") and "io_uring_setup" in p for p in props):
    insn = lambda code, jt, jf, k: struct.pack("HBBI", code, jt, jf, k)
    prog = (
        insn(0x20, 0, 0, 0)                # ld [0]: the syscall number
        + insn(0x15, 0, 1, 425)            # jeq 425 (io_uring_setup)
        + insn(0x06, 0, 0, 0x00050000 | 1)  # ret ERRNO(EPERM)
        + insn(0x06, 0, 0, 0x7FFF0000)      # ret ALLOW
    )
    buf = ctypes.create_string_buffer(prog, len(prog))

    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = Fprog(4, ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    ul = ctypes.c_ulong
    if libc.prctl(38, ul(1), ul(0), ul(0), ul(0)) != 0 or libc.prctl(
        22, ul(2), ctypes.byref(fprog), ul(0), ul(0)
    ) != 0:
        sys.stderr.write("seccomp unavailable: errno %d\n" % ctypes.get_errno())
        sys.exit(1)
os.execv(args[0], args)
"""


def confining_systemd_run(
    tmp_path: Path, refused_with: str, refused: str, allowed: str = PROBE_AS_IGGY
) -> Path:
    """A stand-in for systemd-run whose probe is refused only when given a `-p` setting
    starting with `refused_with` (an LSM profile that denies io_uring, a user namespace):
    prints `refused`, else `allowed` (a ring). Logs its argv to the returned file."""
    log = tmp_path / "systemd-run-argv"
    ring = allowed.format(seccomp=0, outcome="ring\n")
    script = (
        "import sys\n"
        f"open({str(log)!r}, 'w').write('\\n'.join(sys.argv[1:]))\n"
        f"refused = any(a.startswith({refused_with!r}) for a in sys.argv[1:])\n"
        f"sys.stdout.write({refused!r} if refused else {ring!r})\n"
    )
    systemd_run = tmp_path / "bin/systemd-run"
    systemd_run.write_text(f"#!{sys.executable}\n{script}")
    systemd_run.chmod(0o755)
    return log


@pytest.mark.parametrize(
    ("setting", "value", "passed"),
    [
        ("AppArmorProfile", "iggy-server", "AppArmorProfile=iggy-server"),
        # '-': the unit goes on when the label cannot be set; systemd-run takes it bare.
        (
            "SELinuxContext",
            "-system_u:system_r:iggy_t:s0",
            "SELinuxContext=system_u:system_r:iggy_t:s0",
        ),
    ],
)
def test_io_uring_broker_down_probe_carries_the_units_lsm_label(
    tmp_path: Path,
    node: Path,
    monkeypatch: pytest.MonkeyPatch,
    setting: str,
    value: str,
    passed: str,
) -> None:
    # The unit confines the broker with an LSM label whose policy denies io_uring (EACCES).
    # The probe used to run without the label, created a ring, and the node passed.
    down_node(node)
    as_root(monkeypatch)
    tools(tmp_path, monkeypatch, show(**{setting: value}))
    refused = PROBE_AS_IGGY.format(seccomp=0, outcome="errno 13\n")
    log = confining_systemd_run(tmp_path, f"{setting}=", refused)
    result, _ = run(tmp_path, node)
    assert result.status == Status.FAIL, result.findings
    assert passed in log.read_text().splitlines()
    [fail] = [f for f in result.findings if f.severity == Severity.FAIL]
    assert "io_uring_setup failed with EACCES in a probe run under iggy-server.service's" in (
        fail.message
    )
    assert "a security module (SELinux, AppArmor, a BPF LSM)" in fail.message
    assert "will not start" in fail.message


@pytest.mark.parametrize("root", [True, False])
def test_io_uring_broker_down_private_users_root_unit_not_in_group_fails(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch, root: bool
) -> None:
    # io_uring_disabled = 1 lets CAP_SYS_ADMIN through only in the initial user namespace:
    # a root unit with PrivateUsers=yes has it only inside its own. The account rule used
    # to count it (pass), and the probe, run without PrivateUsers=, created a ring.
    down_node(node, "1")
    as_root(monkeypatch, root)
    unit = show(User="", PrivateUsers="yes", CapabilityBoundingSet="cap_sys_admin cap_chown")
    tools(tmp_path, monkeypatch, unit)
    refused = PROBE_AS_ROOT.format(outcome="errno 1\n")
    log = confining_systemd_run(tmp_path, "PrivateUsers=yes", refused, PROBE_AS_ROOT)
    fake_python(tmp_path, monkeypatch, PROBE_AS_ROOT.format(outcome="ring\n"))
    result, _ = run(tmp_path, node)
    assert result.status == Status.FAIL, result.findings
    group = result.findings[0]
    assert group.severity == Severity.FAIL
    assert "runs it as user root (uid 0, gids 0), which is neither in that group nor has " in (
        group.message
    )
    assert result.data["unit"]["account"]["cap_sys_admin"] is False
    if root:
        assert "PrivateUsers=yes" in log.read_text().splitlines()
        refusal = next(f for f in result.findings if "io_uring_setup failed" in f.message)
        assert refusal.severity == Severity.FAIL
        assert "inside the unit's own user namespace, PrivateUsers=yes" in refusal.message


WRAPPED = (
    "{{ path={path} ; argv[]={path} {args} ; ignore_errors=no ; start_time=[n/a] ; "
    "stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }}"
)


def test_io_uring_broker_down_unit_filter_stands_when_probe_lacks_the_wrapper(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The unit denies io_uring and starts the broker through bwrap. A probe under the unit's
    # settings created a ring anyway; it ran without bwrap, so it does not speak for the
    # broker and the unit's filter decides (this used to pass on the probe's word).
    down_node(node)
    as_root(monkeypatch)
    exec_start = WRAPPED.format(path="/usr/bin/bwrap", args="--unshare-all /usr/bin/iggy-server")
    tools(
        tmp_path,
        monkeypatch,
        show(SystemCallFilter=DENY_IO_URING, ExecStart=exec_start),
        PROBE_AS_IGGY.format(seccomp=2, outcome="ring\n"),
    )
    result, _ = run(tmp_path, node)
    assert result.status == Status.FAIL, result.findings
    [fail] = [f for f in result.findings if f.severity == Severity.FAIL]
    assert "does not allow io_uring_setup" in fail.message
    assert (
        "(a probe under its sandbox created a ring, but without ExecStart=/usr/bin/bwrap (the "
        "broker runs under bwrap's confinement), which it could not reproduce: the unit's "
        "settings decide)" in fail.message
    )
    assert result.data["probe"]["left_out"] == [
        "ExecStart=/usr/bin/bwrap (the broker runs under bwrap's confinement)"
    ]


def test_io_uring_broker_down_container_unit_probe_ring_warns(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The unit runs the broker in a Docker container, whose default seccomp profile (25+)
    # blocks io_uring; the probe under the unit's settings runs on the host and gets a
    # ring. That ring says nothing about the container: a warning, no longer a pass.
    down_node(node)
    as_root(monkeypatch)
    exec_start = WRAPPED.format(path="/usr/bin/docker", args="run --rm --name iggy apache/iggy")
    tools(
        tmp_path,
        monkeypatch,
        show(User="", CapabilityBoundingSet="", ExecStart=exec_start),
        PROBE_AS_IGGY.format(seccomp=0, outcome="ring\n"),
    )
    result, _ = run(tmp_path, node)
    assert result.status == Status.WARN, result.findings
    [warn] = [f for f in result.findings if f.severity == Severity.WARN]
    assert warn.message.startswith(
        "a probe under iggy-server.service's sandbox created an io_uring ring, but the unit "
        "also confines iggy-server in ways the probe could not reproduce (ExecStart="
        "/usr/bin/docker (the broker runs under docker's confinement)): the ring does not "
        "show that iggy-server may create its rings"
    )
    assert "seccomp profile" in warn.remediation and "journalctl -u" in warn.remediation


def test_io_uring_broker_down_not_root_falls_back_to_plain_probe_and_unit_filter(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not root: no systemd-run as the unit's user. The plain probe succeeds (the agent is
    # not filtered), but the unit's parsed filter denies io_uring_setup: still a fail.
    down_node(node)
    as_root(monkeypatch, False)
    tools(tmp_path, monkeypatch, show(SystemCallFilter=DENY_IO_URING))
    fake_python(tmp_path, monkeypatch, PROBE_AS_IGGY.format(seccomp=0, outcome="ring\n"))
    result, _ = run(tmp_path, node)
    assert result.status == Status.FAIL
    [fail] = [f for f in result.findings if f.severity == Severity.FAIL]
    assert "iggy-server.service has SystemCallFilter=~io_uring_enter" in fail.message
    assert "does not allow io_uring_setup" in fail.message
    info = next(f for f in result.findings if "created an io_uring ring" in f.message)
    assert "as a plain child of the agent" in info.message and "not root" in info.message
    assert result.data["probe"]["mode"] == "plain"


def test_io_uring_broker_down_allow_list_without_io_uring_fails(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An allow-list that lists @system-service's calls of an older systemd, without io_uring.
    down_node(node, systemd=True)
    as_root(monkeypatch, False)
    tools(tmp_path, monkeypatch, show(SystemCallFilter="accept4 bind epoll_wait read write"))
    fake_python(tmp_path, monkeypatch, PROBE_AS_IGGY.format(seccomp=0, outcome="ring\n"))
    result, _ = run(tmp_path, node)
    assert result.status == Status.FAIL
    assert "SystemCallFilter=accept4 bind" in result.summary


def test_io_uring_broker_down_sandbox_probe_creates_ring_passes(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # io_uring_disabled = 1 and the unit runs the broker as iggy with the iouring group:
    # healthy, the broker is merely stopped. The sandbox probe agrees.
    down_node(node, "1")
    as_root(monkeypatch)
    tools(
        tmp_path,
        monkeypatch,
        show(SupplementaryGroups="iouring", SystemCallFilter="@system-service"),
        PROBE_AS_IGGY.format(seccomp=2, outcome="ring\n"),
    )
    result, _ = run(tmp_path, node)
    assert result.status == Status.PASS, result.findings
    group = result.findings[0]
    assert group.severity == Severity.INFO
    assert "runs it as user iggy (uid 998, gids 998, 1001), which is in that group" in group.message
    assert "group iouring covers iggy-server" in result.summary
    assert "a probe run under iggy-server.service's sandbox" in result.summary
    assert result.data["unit"]["account"]["gids"] == [998, 1001]


def test_io_uring_broker_down_unit_user_not_in_group_fails(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    down_node(node, "1")
    as_root(monkeypatch, False)
    tools(tmp_path, monkeypatch, show())
    fake_python(tmp_path, monkeypatch, PROBE_AS_IGGY.format(seccomp=0, outcome="ring\n"))
    result, _ = run(tmp_path, node)
    assert result.status == Status.FAIL
    assert "neither in that group nor has CAP_SYS_ADMIN" in result.summary
    assert "SupplementaryGroups=GROUP" in result.findings[0].remediation


def test_io_uring_broker_down_group_membership_from_etc_group_passes(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No SupplementaryGroups=: systemd gives User=iggy the groups /etc/group lists it in.
    down_node(node, "1", members="iggy")
    as_root(monkeypatch, False)
    tools(tmp_path, monkeypatch, show())
    fake_python(tmp_path, monkeypatch, PROBE_AS_IGGY.format(seccomp=0, outcome="ring\n"))
    result, _ = run(tmp_path, node)
    assert result.status == Status.PASS


def test_io_uring_broker_down_killed_by_sigsys_fails(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    down_node(node)
    as_root(monkeypatch, False)
    tools(tmp_path, monkeypatch, show(Result="signal", ExecMainCode="2", ExecMainStatus="31"))
    fake_python(tmp_path, monkeypatch, PROBE_AS_IGGY.format(seccomp=0, outcome="ring\n"))
    result, _ = run(tmp_path, node)
    assert result.status == Status.FAIL
    assert "killed by SIGSYS" in result.summary


def test_io_uring_broker_down_sandbox_probe_that_never_starts_falls_back(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    down_node(node)
    as_root(monkeypatch)
    tools(tmp_path, monkeypatch, show(), probe_out="", probe_exit=1)
    fake_python(tmp_path, monkeypatch, PROBE_AS_IGGY.format(seccomp=0, outcome="ring\n"))
    result, _ = run(tmp_path, node)
    assert result.status == Status.PASS
    probe = result.data["probe"]
    assert probe["mode"] == "plain" and probe["created"] is True
    assert "never reached io_uring_setup" in probe["how"]


@pytest.mark.parametrize(
    ("disabled", "seccomp", "status", "words"),
    [
        # Refused with no filter on the prober and io_uring allowed by sysctl: every process is.
        ("0", 0, Status.FAIL, "it applies to every process"),
        # The agent itself is filtered (a container profile): a broker confined alike is too.
        ("0", 2, Status.WARN, "the agent itself runs under that filter"),
    ],
)
def test_io_uring_broker_down_plain_probe_refused(
    tmp_path: Path,
    node: Path,
    monkeypatch: pytest.MonkeyPatch,
    disabled: str,
    seccomp: int,
    status: Status,
    words: str,
) -> None:
    down_node(node, disabled, systemd=False)
    fake_python(tmp_path, monkeypatch, PROBE_AS_IGGY.format(seccomp=seccomp, outcome="errno 1\n"))
    result, _ = run(tmp_path, node)
    assert result.status == status
    refused = next(f for f in result.findings if "io_uring_setup failed with EPERM" in f.message)
    assert words in refused.message and "systemd is not PID 1" in refused.message


def test_io_uring_broker_down_plain_probe_refused_by_sysctl_is_explained(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A non-root agent under io_uring_disabled = 1 is refused as expected; the broker's own
    # account is unknown without systemd, so the group rule warns, the probe only informs.
    down_node(node, "1", systemd=False)
    not_in_group = PROBE_AS_IGGY.replace("998 1001", "998")
    fake_python(tmp_path, monkeypatch, not_in_group.format(seccomp=0, outcome="errno 1\n"))
    result, _ = run(tmp_path, node)
    assert result.status == Status.WARN
    refused = next(f for f in result.findings if "io_uring_setup failed" in f.message)
    assert refused.severity == Severity.INFO and "not in io_uring_group" in refused.message
    assert "the account it would run as is unknown" in result.summary


def test_io_uring_broker_down_real_plain_probe_passes(tmp_path: Path, node: Path) -> None:
    # No systemd, no broker: the real probe (this interpreter, ctypes io_uring_setup) runs.
    down_node(node, systemd=False)
    result, _ = run(tmp_path, node)
    probe = result.data["probe"]
    if not probe["created"]:
        pytest.skip(f"io_uring_setup is refused on this machine: {probe['error']}")
    assert result.status == Status.PASS
    assert "created a ring" in result.summary and "as a plain child of the agent" in result.summary


# ---------------------------------------------------------------- the pieces


def test_real_ring_probe_creates_a_ring(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    res = ctx.run([sys.executable, "-c", RING_PROBE], timeout_s=10)
    created, error, prober = parse_ring_probe(res.stdout, res.exit_code)
    assert prober is not None and prober.uid == os.getuid()
    if not created:
        disabled = Path("/proc/sys/kernel/io_uring_disabled")
        state = disabled.read_text().strip() if disabled.exists() else "absent"
        pytest.skip(f"io_uring_setup refused here ({error}, io_uring_disabled={state})")
    assert (created, error) == (True, "")


def test_parse_ring_probe_outcomes() -> None:
    assert parse_ring_probe("setup\nerrno 38\n", 0)[:2] == (False, "ENOSYS")
    assert parse_ring_probe("setup\n", -31)[:2] == (False, "SIGSYS")
    assert parse_ring_probe("setup\n", 1)[:2] == (False, "killed in io_uring_setup")
    assert parse_ring_probe("", 1)[:2] == (None, "")


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        ("", True),  # no filter
        (DENY_IO_URING, False),
        ("~io_uring_setup:EPERM", False),  # a per-call errno
        ("~@aio", False),  # io_uring_* sit in @aio
        ("~@mount @swap", True),
        ("@system-service", True),  # includes @aio
        ("read write io_uring_setup io_uring_enter", True),
        ("read write epoll_wait", False),
    ],
)
def test_syscall_filter_allows_io_uring_setup(value: str, allowed: bool) -> None:
    rules = parse_syscall_filter(value)
    assert (rules is None or rules.allows("io_uring_setup")) == allowed


def test_resolve_account() -> None:
    group = GROUP.format(members="iggy")
    plain = resolve_account(UnitSandbox(UNIT, {"User": "iggy"}), PASSWD, group)
    assert (plain.uid, plain.gids, plain.has_sys_admin) == (998, (998, 1001), False)
    dynamic = UnitSandbox(
        UNIT, {"User": "iggy", "DynamicUser": "yes", "SupplementaryGroups": "iouring nosuch"}
    )
    account = resolve_account(dynamic, PASSWD, group)
    assert account.uid is None and account.gids == (1001,)
    assert account.unresolved == ("group nosuch",)
    root = resolve_account(UnitSandbox(UNIT, {"User": ""}), PASSWD, group)
    assert root.uid == 0 and root.has_sys_admin
    bounded = UnitSandbox(UNIT, {"User": "", "CapabilityBoundingSet": "cap_net_bind_service"})
    assert not resolve_account(bounded, PASSWD, group).has_sys_admin
    ambient = UnitSandbox(UNIT, {"User": "iggy", "AmbientCapabilities": "cap_sys_admin"})
    assert resolve_account(ambient, PASSWD, group).has_sys_admin


def test_resolve_account_private_users_and_noroot_lose_cap_sys_admin() -> None:
    group = GROUP.format(members="")
    for extra in ({"PrivateUsers": "yes"}, {"SecureBits": "1"}, {"SecureBits": "noroot"}):
        root = resolve_account(UnitSandbox(UNIT, {"User": "", **extra}), PASSWD, group)
        assert root.uid == 0 and not root.has_sys_admin, extra
    ambient = {"User": "iggy", "AmbientCapabilities": "cap_sys_admin", "PrivateUsers": "yes"}
    assert not resolve_account(UnitSandbox(UNIT, ambient), PASSWD, group).has_sys_admin
    kept = {"User": "", "SecureBits": "16", "PrivateUsers": "no"}  # keep-caps only
    assert resolve_account(UnitSandbox(UNIT, kept), PASSWD, group).has_sys_admin


def test_probe_settings_carry_lsm_labels_user_namespace_and_secure_bits() -> None:
    sandbox = UnitSandbox(
        UNIT,
        {
            "User": "iggy",
            "PrivateUsers": "yes",
            "SecureBits": "17",
            "AppArmorProfile": "-/usr/bin/iggy-server",
            "SELinuxContext": "-system_u:system_r:iggy_t:s0:c0.c1023",
            "ExecStart": WRAPPED.format(path="/usr/bin/podman", args="run apache/iggy"),
        },
    )
    settings, left_out = probe_settings(sandbox)
    assert settings == [
        "User=iggy",
        "SecureBits=noroot keep-caps",
        "PrivateUsers=yes",
        "AppArmorProfile=-/usr/bin/iggy-server",
        "SELinuxContext=system_u:system_r:iggy_t:s0:c0.c1023",
    ]
    assert left_out == ["ExecStart=/usr/bin/podman (the broker runs under podman's confinement)"]
    odd = UnitSandbox(UNIT, {"SecureBits": "64", "AppArmorProfile": "iggy;rm -rf"})
    assert probe_settings(odd) == ([], ["SecureBits=64", "AppArmorProfile=iggy;rm -rf"])


def test_sandbox_probe_argv_keeps_an_empty_bounding_set() -> None:
    sandbox = UnitSandbox(
        UNIT, {"User": "iggy", "CapabilityBoundingSet": "", "SystemCallErrorNumber": "0"}
    )
    argv = sandbox_probe_argv(probe_settings(sandbox)[0], "/usr/bin/python3")
    assert argv[:5] == ["systemd-run", "--wait", "--pipe", "--quiet", "--collect"]
    assert "User=iggy" in argv and "CapabilityBoundingSet=" in argv
    assert not any(a.startswith("SystemCallErrorNumber") for a in argv)
