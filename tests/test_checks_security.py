"""security.lsm and security.ssh against fixture node trees."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from snapshot_agent.checks.security import (
    audit_lines_within,
    denial_concerns_broker,
    parse_apparmor_profiles,
    parse_selinux_config,
    parse_sshd_config,
    security_lsm,
    security_ssh,
    split_directive,
)
from snapshot_agent.core.results import Severity, Status
from snapshot_agent.node.confinement import parse_label
from snapshot_agent.node.processes import BrokerProcess

from .conftest import fixture_roots, make_context, write_tree

LSM_T = {"window_hours": 24, "warn_broker_denials": 1}

# Ubuntu 24.04: /sys/kernel/security/apparmor/profiles
PROFILES = """\
docker-default (enforce)
/usr/sbin/chronyd (enforce)
iggy-server (enforce)
/usr/bin/man (complain)
"""
APPARMOR_DENIED = (
    'audit: type=1400 audit(1763900000.123:456): apparmor="DENIED" operation="open" '
    'class="file" profile="docker-default" name="/data/iggy/streams/1/topics/1" pid=4330 '
    'comm="shard-0" requested_mask="wc" denied_mask="wc" fsuid=998 ouid=998'
)
SELINUX_DENIED = (
    "type=AVC msg=audit({epoch}.412:1102): avc:  denied  {{ create }} for  pid=4321 "
    'comm="iggy-server" anonclass=[io_uring] scontext=system_u:system_r:iggy_t:s0 '
    "tcontext=system_u:object_r:io_uring_t:s0 tclass=anon_inode permissive={permissive}"
)
OTHER_DENIED = (
    'audit: type=1400 audit(1763900001.000:457): apparmor="DENIED" operation="capable" '
    'profile="/usr/sbin/cupsd" pid=900 comm="cupsd" capability=12 capname="net_admin"'
)


def broker_proc(node: Path, label: str) -> None:
    write_tree(
        node,
        {
            "proc/4321/comm": "iggy-server\n",
            "proc/4321/status": "Name:\tiggy-server\nUid:\t998\t998\t998\t998\n",
            "proc/4321/attr/current": label + "\x00",
            "proc/4321/task/4321/stat": "",
            "proc/4321/task/4330/stat": "",
        },
    )


def kern_log(node: Path, *lines: str) -> None:
    stamp = (datetime.now().astimezone() - timedelta(hours=1)).isoformat()
    write_tree(node, {"var/log/kern.log": "".join(f"{stamp} h kernel: {x}\n" for x in lines)})


def test_lsm_parsers() -> None:
    assert parse_apparmor_profiles(PROFILES)[2] == ("iggy-server", "enforce")
    assert parse_selinux_config("# c\nSELINUX=enforcing\nSELINUXTYPE=targeted\n") == "enforcing"
    assert parse_label("docker-default (enforce)", None).confined
    assert not parse_label("unconfined", None).confined
    conf = parse_label("system_u:system_r:container_t:s0:c1,c2", True)
    assert (conf.lsm, conf.name, conf.mode, conf.confined) == (
        "selinux",
        "container_t",
        "enforcing",
        True,
    )
    assert not parse_label("system_u:system_r:unconfined_service_t:s0", True).confined


def test_denial_matching() -> None:
    broker = BrokerProcess(4321, threads=(4321, 4330))
    assert denial_concerns_broker(APPARMOR_DENIED, [broker])  # by thread id
    assert denial_concerns_broker(SELINUX_DENIED.format(epoch=1, permissive=0), [])  # by name
    assert denial_concerns_broker('apparmor="DENIED" pid=1 comm="iou-wrk-4321"', [broker])
    assert not denial_concerns_broker(OTHER_DENIED, [broker])


def test_audit_window() -> None:
    now = datetime.now().astimezone()
    recent = SELINUX_DENIED.format(epoch=int(time.time()) - 60, permissive=0)
    old = SELINUX_DENIED.format(epoch=int(time.time()) - 3 * 86400, permissive=0)
    assert audit_lines_within(f"{old}\n{recent}\n", now - timedelta(hours=24)) == [recent]


def test_lsm_none_active(tmp_path: Path, node: Path) -> None:
    broker_proc(node, "")
    result = security_lsm.run(make_context(tmp_path, roots=fixture_roots(node), thresholds=LSM_T))
    assert result.status == Status.PASS
    assert result.summary == "SELinux off; AppArmor off; iggy-server unconfined"
    assert result.data["logs_read"] == []


def test_lsm_apparmor_confined_is_info(tmp_path: Path, node: Path) -> None:
    broker_proc(node, "iggy-server (enforce)")
    write_tree(
        node,
        {
            "sys/module/apparmor/parameters/enabled": "Y\n",
            "sys/kernel/security/apparmor/profiles": PROFILES,
        },
    )
    kern_log(node, OTHER_DENIED)
    result = security_lsm.run(make_context(tmp_path, roots=fixture_roots(node), thresholds=LSM_T))
    assert result.status == Status.PASS
    assert "AppArmor enabled (4 profiles, 1 for iggy)" in result.summary
    assert "iggy-server confined by iggy-server" in result.summary
    assert {f.severity for f in result.findings} == {Severity.INFO}
    assert result.data["other_denials"] == 1 and result.data["broker_denials"] == []


def test_lsm_broker_denials_warn(tmp_path: Path, node: Path) -> None:
    broker_proc(node, "docker-default (enforce)")
    write_tree(
        node,
        {
            "sys/module/apparmor/parameters/enabled": "Y\n",
            "sys/kernel/security/apparmor/profiles": PROFILES,
        },
    )
    kern_log(node, APPARMOR_DENIED, OTHER_DENIED)
    result = security_lsm.run(make_context(tmp_path, roots=fixture_roots(node), thresholds=LSM_T))
    assert result.status == Status.WARN
    warn = next(f for f in result.findings if f.severity == Severity.WARN)
    assert warn.message.startswith("1 LSM denial(s) for iggy-server")
    assert "aa-logprof" in warn.remediation


def test_lsm_broker_denials_band(tmp_path: Path, node: Path) -> None:
    assert security_lsm.thresholds == LSM_T
    broker_proc(node, "docker-default (enforce)")
    write_tree(node, {"sys/module/apparmor/parameters/enabled": "Y\n"})
    kern_log(node, APPARMOR_DENIED)
    roots = fixture_roots(node)
    quiet = LSM_T | {"warn_broker_denials": 2}
    result = security_lsm.run(make_context(tmp_path, roots=roots, thresholds=quiet))
    assert result.status == Status.PASS and result.data["broker_denials"] != []
    result = security_lsm.run(make_context(tmp_path, roots=roots, thresholds=LSM_T))
    assert result.status == Status.WARN


def test_lsm_selinux_permissive_denials_and_mode_mismatch(tmp_path: Path, node: Path) -> None:
    broker_proc(node, "system_u:system_r:iggy_t:s0")
    epoch = int(time.time()) - 120
    write_tree(
        node,
        {
            "sys/fs/selinux/enforce": "0",
            "etc/selinux/config": "SELINUX=enforcing\n",
            "var/log/audit/audit.log": SELINUX_DENIED.format(epoch=epoch, permissive=1) + "\n",
        },
    )
    result = security_lsm.run(make_context(tmp_path, roots=fixture_roots(node), thresholds=LSM_T))
    assert result.status == Status.PASS
    messages = " | ".join(f.message for f in result.findings)
    assert "the mode changes at the next reboot" in messages
    assert "(permissive: logged, not enforced)" in messages
    assert result.data["logs_read"] == ["/var/log/audit/audit.log"]


# ---------------------------------------------------------------- security.ssh

# Debian 12's shipped sshd_config (abridged, same directives and order).
DEBIAN_SSHD = """\
# This is the sshd server system-wide configuration file.
Include /etc/ssh/sshd_config.d/*.conf

#PermitRootLogin prohibit-password
#PasswordAuthentication yes
KbdInteractiveAuthentication no
UsePAM yes
X11Forwarding yes
PrintMotd no
AcceptEnv LANG LC_*
Subsystem\tsftp\t/usr/lib/openssh/sftp-server
"""


def ssh_node(node: Path, main: str, dropins: dict[str, str] | None = None) -> Path:
    files = {"etc/ssh/sshd_config": main}
    for name, text in (dropins or {}).items():
        files[f"etc/ssh/sshd_config.d/{name}"] = text
    return write_tree(node, files)


def test_split_directive() -> None:
    assert split_directive("PermitRootLogin=no") == ("permitrootlogin", "no")
    assert split_directive("  PasswordAuthentication   yes # x") == (
        "passwordauthentication",
        "yes # x",
    )
    assert split_directive("ChallengeResponseAuthentication no") == (
        "kbdinteractiveauthentication",
        "no",
    )
    assert split_directive("# PermitRootLogin yes") is None


def test_ssh_dropin_wins_and_passes(tmp_path: Path, node: Path) -> None:
    ssh_node(
        node,
        DEBIAN_SSHD + "PasswordAuthentication yes\n",
        {"50-cloud-init.conf": "PasswordAuthentication no\n", "README": "PermitRootLogin yes\n"},
    )
    result = security_ssh.run(make_context(tmp_path, roots=fixture_roots(node)))
    assert result.status == Status.PASS
    effective = {row["keyword"]: row for row in result.data["effective"]}
    assert effective["passwordauthentication"]["value"] == "no"
    assert (
        effective["passwordauthentication"]["source"] == "/etc/ssh/sshd_config.d/50-cloud-init.conf"
    )
    assert effective["permitrootlogin"]["source"] == "default"
    assert (tmp_path / "artifacts/files/etc/ssh/sshd_config.d/50-cloud-init.conf").exists()


def test_ssh_defaults_allow_passwords(tmp_path: Path, node: Path) -> None:
    ssh_node(node, DEBIAN_SSHD)
    result = security_ssh.run(make_context(tmp_path, roots=fixture_roots(node)))
    assert result.status == Status.WARN
    [warn] = result.findings
    assert "PasswordAuthentication yes (OpenSSH default, not set)" in warn.message
    assert warn.subject == "/etc/ssh/sshd_config"
    assert "PasswordAuthentication no" in warn.remediation


def test_ssh_root_login_and_kbd_interactive(tmp_path: Path, node: Path) -> None:
    ssh_node(
        node,
        "PermitRootLogin yes\nPasswordAuthentication no\nUsePAM yes\n"
        "Match User deploy\n  PasswordAuthentication yes\n",
    )
    result = security_ssh.run(make_context(tmp_path, roots=fixture_roots(node)))
    assert result.status == Status.WARN
    messages = [(f.severity, f.message.split(":")[0]) for f in result.findings]
    assert (Severity.WARN, "PermitRootLogin yes (set in /etc/ssh/sshd_config)") in messages
    # KbdInteractiveAuthentication defaults to yes: PAM still takes passwords.
    assert any("KbdInteractiveAuthentication yes" in m for _, m in messages)
    assert any(s == Severity.INFO and "Match User deploy" in m for s, m in messages)


def test_ssh_empty_passwords_fail(tmp_path: Path, node: Path) -> None:
    ssh_node(node, "PermitEmptyPasswords yes\nKbdInteractiveAuthentication no\n")
    result = security_ssh.run(make_context(tmp_path, roots=fixture_roots(node)))
    assert result.status == Status.FAIL
    assert "PermitEmptyPasswords yes" in result.summary


def test_ssh_relative_and_nested_includes() -> None:
    files = {
        "/etc/ssh/sshd_config": "Include extra.conf\nPermitRootLogin yes\n",
        "/etc/ssh/extra.conf": "Include /etc/ssh/extra.conf\nPermitRootLogin no\n",
    }
    config = parse_sshd_config(files.get, lambda p: [p] if p in files else [])
    assert config.settings["permitrootlogin"] == ("no", "/etc/ssh/extra.conf")
    assert any("nested deeper" in p for p in config.problems)


def test_ssh_skipped_without_sshd_config(tmp_path: Path, node: Path) -> None:
    ctx = make_context(tmp_path, roots=fixture_roots(node))
    reason = security_ssh.requires.unmet(ctx.path)
    assert reason is not None and "/etc/ssh/sshd_config" in reason


@pytest.mark.parametrize("value", ["prohibit-password", "without-password", "no"])
def test_ssh_root_login_without_password_is_fine(tmp_path: Path, node: Path, value: str) -> None:
    ssh_node(node, f"PermitRootLogin {value}\nPasswordAuthentication no\nUsePAM no\n")
    result = security_ssh.run(make_context(tmp_path, roots=fixture_roots(node)))
    assert result.status == Status.PASS
