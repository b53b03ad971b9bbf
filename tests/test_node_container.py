"""Container detection: namespaces and cgroups decide, marker files only corroborate.

Fixture trees for each class of node (a real container, a VM whose image kept a
/.dockerenv, bare metal, a container sharing the host's PID namespace), and two live
tests: this machine as it is, and a real PID namespace the test starts with unshare(1).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from snapshot_agent.node.system import (
    INIT_MNT_NAMESPACE,
    INIT_NAMESPACES,
    read_container,
    read_system,
)

from .conftest import fixture_roots, make_context, write_tree

HOST_PID = INIT_NAMESPACES["pid"]
HOST_USER = INIT_NAMESPACES["user"]
HOST_CGROUP = INIT_NAMESPACES["cgroup"]
#: Inodes the kernel hands out to namespaces a runtime creates (as on this machine).
CHILD_PID, CHILD_CGROUP = 4026532178, 4026532180
CGROUP_V1_ROOT = "".join(
    f"{n}:{c}:/\n"
    for n, c in enumerate(
        ["cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids"], 1
    )
)
DOCKER_ID = "4aba226333b106980cf796e35105658a" * 2


def namespaces(node: Path, proc: str = "1", **inodes: int) -> None:
    """/proc/<proc>/ns/<kind> symlinks as the kernel shows them ('pid:[4026531836]')."""
    for kind, inode in inodes.items():
        link = node / f"proc/{proc}/ns/{kind}"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(f"{kind}:[{inode}]")


def detect(tmp_path: Path, node: Path) -> tuple[str, list[str]]:
    """read_container on the fixture tree: (name, evidence and overruled claims)."""
    facts = read_container(make_context(tmp_path, roots=fixture_roots(node)))
    return facts.name, facts.evidence + facts.overruled


def test_real_container_own_pid_namespace(tmp_path: Path, node: Path) -> None:
    # docker run on cgroup v2: private PID and cgroup namespaces, host user namespace.
    namespaces(node, pid=CHILD_PID, user=HOST_USER, cgroup=CHILD_CGROUP)
    write_tree(node, {".dockerenv": "", "proc/1/cgroup": "0::/\n", "proc/1/sched": "sh (1, #"})
    name, evidence = detect(tmp_path, node)
    assert name == "docker"  # the marker names the runtime the namespaces proved
    assert evidence[0].startswith("PID 1 is in a pid namespace of its own (pid:[4026532178]")
    assert any("cgroup namespace of its own" in e for e in evidence)
    assert "/.dockerenv says docker" in evidence


def test_vm_with_dockerenv_in_the_host_pid_namespace_is_not_a_container(
    tmp_path: Path, node: Path
) -> None:
    # The machine of issue 8 case 3: a KVM microVM whose root filesystem was built from a
    # container image (so it kept /.dockerenv); PID 1 is the guest's own init.
    namespaces(node, pid=HOST_PID, user=HOST_USER, cgroup=HOST_CGROUP, mnt=INIT_MNT_NAMESPACE)
    write_tree(
        node,
        {
            ".dockerenv": "",
            "proc/1/cgroup": "9:name=systemd:/\n" + CGROUP_V1_ROOT + "0::/\n",
            "proc/1/sched": "process_api (1, #threads: 14)\n------\n",
            "proc/self/cgroup": f"4:memory:/process_api/{DOCKER_ID[:32]}\n0::/\n",
            "proc/cpuinfo": "flags\t\t: fpu vme de pse tsc msr pae hypervisor lahf_lm\n",
            "sys/devices/system/clocksource/clocksource0/available_clocksource": "tsc kvm-clock \n",
        },
    )
    name, evidence = detect(tmp_path, node)
    assert name == "none"
    assert evidence[0] == "PID 1 is in the host's PID namespace (pid:[4026531836])"
    assert any(e.startswith("/.dockerenv says docker, overruled") for e in evidence)
    system = read_system(make_context(tmp_path, roots=fixture_roots(node)))
    assert (system.virtualization, system.container) == ("kvm", "none")
    assert "clock source kvm-clock is available" in system.evidence


def test_bare_metal(tmp_path: Path, node: Path) -> None:
    namespaces(node, pid=HOST_PID, user=HOST_USER, cgroup=HOST_CGROUP, mnt=4026531840)
    write_tree(
        node,
        {
            "proc/1/cgroup": "0::/init.scope\n",
            # dockerd runs on this host: its unit's cgroup is not a container's.
            "proc/self/cgroup": "0::/system.slice/docker.service\n",
            "sys/class/dmi/id/sys_vendor": "Dell Inc.\n",
            "proc/cpuinfo": "flags\t\t: fpu vme de pse tsc msr pae lahf_lm\n",
            "sys/devices/system/clocksource/clocksource0/available_clocksource": "tsc hpet\n",
        },
    )
    name, evidence = detect(tmp_path, node)
    assert name == "none" and evidence == [
        "PID 1 is in the host's PID namespace (pid:[4026531836])"
    ]
    system = read_system(make_context(tmp_path, roots=fixture_roots(node)))
    assert (system.virtualization, system.container) == ("none", "none")


def test_pid1_unreadable_falls_back_to_this_process_pid_namespace(
    tmp_path: Path, node: Path
) -> None:
    # Without ptrace access to PID 1 its ns links are unreadable; ours never are.
    namespaces(node, proc="self", pid=CHILD_PID)
    write_tree(node, {"run/.containerenv": ""})
    assert detect(tmp_path, node)[0] == "podman"
    host = node.parent / "host"
    # The agent's own user namespace (a PrivateUsers= sandbox) is not a container.
    namespaces(host, proc="self", pid=HOST_PID, user=4026532300)
    write_tree(host, {".dockerenv": ""})
    name, evidence = detect(tmp_path, host)
    assert name == "none"
    assert evidence[0] == "this process is in the host's PID namespace (pid:[4026531836])"


def test_old_kernel_sched_shows_the_host_pid(tmp_path: Path, node: Path) -> None:
    # Before /proc/PID/sched used namespace pids, a container's PID 1 showed its host pid.
    write_tree(node, {"proc/1/sched": "bash (24601, #threads: 1)\n", "proc/1/cgroup": "0::/\n"})
    name, evidence = detect(tmp_path, node)
    assert name == "unknown" and "the host's pid 24601" in evidence[0]


def test_container_sharing_the_host_pid_namespace_is_found_by_its_cgroup(
    tmp_path: Path, node: Path
) -> None:
    # docker run --pid=host --cgroupns=host: PID 1 is the host's init, the agent is not.
    namespaces(node, pid=HOST_PID)
    write_tree(
        node,
        {
            "proc/1/cgroup": "0::/init.scope\n",
            "proc/self/cgroup": f"0::/system.slice/docker-{DOCKER_ID}.scope\n",
        },
    )
    name, evidence = detect(tmp_path, node)
    assert name == "docker"
    assert (
        evidence[0]
        == f"this process's cgroup /system.slice/docker-{DOCKER_ID}.scope is a docker container's"
    )


@pytest.mark.parametrize(
    ("files", "name"),
    [
        ({"proc/1/cgroup": "0::/kubepods/besteffort/pod1/abc\n", ".dockerenv": ""}, "kubernetes"),
        ({"proc/1/cgroup": f"0::/machine.slice/libpod-{DOCKER_ID}.scope\n"}, "podman"),
        ({"proc/1/cgroup": "0::/lxc.payload.broker\n"}, "lxc"),
        ({"run/systemd/container": "systemd-nspawn\n"}, "systemd-nspawn"),
        ({"proc/1/environ": "PATH=/bin\0container=lxc\0"}, "lxc"),
        ({".dockerenv": ""}, "docker"),  # marker only, namespaces unreadable: best guess
        ({}, "none"),
    ],
)
def test_without_namespaces_cgroups_then_claims_then_markers(
    tmp_path: Path, node: Path, files: dict[str, str], name: str
) -> None:
    write_tree(node, files)
    assert detect(tmp_path, node)[0] == name


# -- live ----------------------------------------------------------------------------


def test_this_machine_is_judged_by_its_pid_namespace(tmp_path: Path) -> None:
    """Whatever marker files exist here, the PID namespace decides."""
    ours = os.readlink("/proc/self/ns/pid")
    facts = read_container(make_context(tmp_path))
    if ours == f"pid:[{HOST_PID}]":
        assert facts.name == "none", facts
        markers = [m for m in ("/.dockerenv", "/run/.containerenv") if os.path.exists(m)]
        for marker in markers:  # e.g. this Firecracker microVM's /.dockerenv
            assert any(o.startswith(marker) for o in facts.overruled), facts
    else:
        assert facts.name != "none", facts


def _unshare_works() -> bool:
    """unshare(1) can make a PID namespace here (root, or user namespaces allowed)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, timeout=10
    )
    return probe.returncode == 0


def test_a_real_pid_namespace_is_a_container(tmp_path: Path) -> None:
    """A process in a PID namespace this test creates sees itself as in a container."""
    if not _unshare_works():
        pytest.skip("unshare --pid --mount-proc is not permitted here")
    script = (
        "import json, pathlib, tempfile\n"
        "from snapshot_agent.node.system import read_container\n"
        "from tests.conftest import make_context\n"
        "f = read_container(make_context(pathlib.Path(tempfile.mkdtemp())))\n"
        "print(json.dumps({'name': f.name, 'evidence': f.evidence}))\n"
    )
    out = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.returncode == 0, out.stderr
    facts = json.loads(out.stdout)
    assert facts["name"] != "none"
    assert facts["evidence"][0].startswith("PID 1 is in a pid namespace of its own")
