"""Container detection: namespaces and cgroups decide, marker files only corroborate.

Fixture trees for each class of node (a real container, a VM whose image kept a
/.dockerenv, bare metal, a container sharing the host's PID namespace, a hostPID pod that
may not read PID 1's namespaces, a sandboxed service on a host), and live tests: this
machine as it is, a real PID namespace the test starts with unshare(1), and real processes
in private cgroup, mount and UTS namespaces, with and without a runtime shim as parent.
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
    INIT_UTS_NAMESPACE,
    UNDETERMINED,
    ContainerSignals,
    judge_container,
    parse_mountinfo_root,
    placement,
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
POD_UID = "6f1c2a4e-9b7d-4c3a-8e21-0d5f7a9b3c11"
#: Namespaces a sandbox or a runtime makes for the agent alone (not PID 1's).
OWN_MNT, OWN_UTS = 4026532400, 4026532401
#: /proc/self/mountinfo of a containerd container: an overlay root (image layers).
OVERLAY_ROOT = (
    "1012 900 0:312 / / rw,relatime master:301 - overlay overlay rw,lowerdir=/var/lib/"
    "containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/41/fs,upperdir=/u,workdir=/w\n"
)


def namespaces(node: Path, proc: str = "1", **inodes: int) -> None:
    """/proc/<proc>/ns/<kind> symlinks as the kernel shows them ('pid:[4026531836]')."""
    for kind, inode in inodes.items():
        link = node / f"proc/{proc}/ns/{kind}"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(f"{kind}:[{inode}]")


def stat(node: Path, pid: int, comm: str, ppid: int, *, own: bool = False) -> None:
    """/proc/<pid>/stat (/proc/self/stat when `own`): enough to name it and its parent."""
    line = f"{pid} ({comm}) S {ppid} 1 1 0 -1 0 0 0 0 0 5 5 0 0 20 0 1 0 9 9 9\n"
    write_tree(node, {f"proc/{'self' if own else pid}/stat": line})


def hostpid_pod(node: Path) -> None:
    """Issue 8 review: a Kubernetes pod with hostPID: true (containerd, cgroup v2).

    The agent may not ptrace PID 1 (the host's systemd), so /proc/1/ns/* is unreadable and
    its own PID namespace, the host's, stands in. Its cgroup namespace is private: it sees
    itself at 0::/ and PID 1 outside its root.
    """
    namespaces(node, proc="self", pid=HOST_PID)
    write_tree(node, {"proc/1/cgroup": "0::/init.scope\n", "proc/self/cgroup": "0::/\n"})


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
    assert name == "unknown runtime" and "the host's pid 24601" in evidence[0]


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


def test_hostpid_pod_without_ptrace_on_pid1_is_undetermined(tmp_path: Path, node: Path) -> None:
    # Before: 'none' (the host's PID namespace alone decided), and time.sync told the SRE
    # to install chrony in the pod.
    hostpid_pod(node)
    name, evidence = detect(tmp_path, node)
    assert name == UNDETERMINED
    assert evidence == [
        "this process sees its own cgroup as 0::/ but PID 1's as 0::/init.scope: a cgroup "
        "namespace of its own",
        "this process is in the host's PID namespace (pid:[4026531836])",
    ]
    assert placement("kvm", name) == "VM (kvm), container or host: undetermined"


@pytest.mark.parametrize(
    ("own", "files", "hint"),
    [
        ({"cgroup": CHILD_CGROUP}, {"proc/1/cgroup": "0::/../../init.scope\n"}, "cgroup name"),
        ({"uts": OWN_UTS}, {}, "uts namespace (uts:[4026532401]) other than the host's"),
        ({}, {"proc/self/mountinfo": OVERLAY_ROOT}, "root file system is overlay"),
    ],
    ids=["own-cgroup-namespace", "own-uts-namespace", "overlay-root"],
)
def test_agent_isolated_in_the_host_pid_namespace_is_undetermined(
    tmp_path: Path, node: Path, own: dict[str, int], files: dict[str, str], hint: str
) -> None:
    # Each sign of the agent's own isolation, against only the host's PID namespace.
    namespaces(node, proc="self", pid=HOST_PID, **own)
    write_tree(node, files)
    name, evidence = detect(tmp_path, node)
    assert name == UNDETERMINED and any(hint in e for e in evidence), evidence


def test_reviewer_reproduction_is_undetermined() -> None:
    # /tmp/rv/t_ctr.py: the signals of a hostPID pod, judged directly.
    signals = ContainerSignals(
        namespaces={"pid": HOST_PID},
        namespaces_of="this process",
        sched_pid=1,
        cgroups={"PID 1": "0::/init.scope\n", "this process": "0::/\n"},
    )
    assert judge_container(signals).name == UNDETERMINED


def test_hostpid_pod_is_found_by_its_runtime_shim(tmp_path: Path, node: Path) -> None:
    # The host's process tree is visible in a hostPID pod: the agent's parent is the shim.
    hostpid_pod(node)
    stat(node, 4300, "snapshot-agent", 4211, own=True)
    stat(node, 4211, "containerd-shim", 1)
    stat(node, 1, "systemd", 0)
    name, evidence = detect(tmp_path, node)
    assert name == "containerd"
    assert evidence == [
        "this process descends from containerd-shim (pid 4211), a containerd container's "
        "runtime shim"
    ]


def test_privileged_hostpid_pod_is_found_by_its_kubelet_mounts(tmp_path: Path, node: Path) -> None:
    # Allowed to read PID 1's namespaces (the host's): the pod's own mounts tell.
    namespaces(node, pid=HOST_PID, user=HOST_USER, cgroup=HOST_CGROUP, mnt=4026531840)
    namespaces(node, proc="self", pid=HOST_PID, mnt=OWN_MNT)
    hosts = f"/var/lib/kubelet/pods/{POD_UID}/etc-hosts"
    write_tree(
        node,
        {
            "proc/1/cgroup": "0::/init.scope\n",
            "proc/self/cgroup": "0::/\n",
            "proc/self/mountinfo": OVERLAY_ROOT
            + f"1020 1012 253:1 {hosts} /etc/hosts rw,relatime - ext4 /dev/vda1 rw\n",
        },
    )
    name, evidence = detect(tmp_path, node)
    assert name == "kubernetes"
    assert evidence[0] == f"/etc/hosts is mounted from {hosts}, a kubernetes container's"


def sandboxed_service(node: Path) -> None:
    """The agent as a systemd unit with PrivateTmp= and ProtectHostname= on a host."""
    namespaces(
        node, pid=HOST_PID, user=HOST_USER, cgroup=HOST_CGROUP, mnt=4026531840,
        uts=INIT_UTS_NAMESPACE,
    )  # fmt: skip
    namespaces(node, proc="self", pid=HOST_PID, mnt=OWN_MNT, uts=OWN_UTS, cgroup=HOST_CGROUP)
    write_tree(
        node,
        {
            "proc/1/cgroup": "0::/init.scope\n",
            "proc/self/cgroup": "0::/system.slice/snapshot-agent.service\n",
        },
    )


def test_sandboxed_service_on_a_host_is_not_a_container(tmp_path: Path, node: Path) -> None:
    sandboxed_service(node)
    stat(node, 812, "snapshot-agent", 1, own=True)
    stat(node, 1, "systemd", 0)
    name, evidence = detect(tmp_path, node)
    assert name == "none"
    assert (
        "none of this process's 1 ancestors up to the host's PID 1 (systemd) is a container "
        "runtime's shim" in evidence
    )
    overruled = [e for e in evidence if "overruled" in e]
    assert [o.split(",")[0] for o in overruled] == [
        "this process is in a mnt namespace (mnt:[4026532400]) other than PID 1's "
        "(mnt:[4026531840])",
        "this process is in a uts namespace (uts:[4026532401]) other than PID 1's "
        "(uts:[4026531838])",
    ]


def test_sandboxed_service_with_its_ancestry_hidden_is_undetermined(
    tmp_path: Path, node: Path
) -> None:
    # hidepid= hides the parent: nothing tells the sandbox from a privileged hostPID pod.
    sandboxed_service(node)
    stat(node, 812, "snapshot-agent", 1, own=True)
    assert detect(tmp_path, node)[0] == UNDETERMINED


def test_parse_mountinfo_root() -> None:
    text = (
        "22 1 254:0 / / rw - ext4 /dev/vda rw\n"
        "30 22 0:40 / / rw - overlay overlay rw,lowerdir=/l\n"  # mounted over: in use
        "31 30 254:0 /var/lib/docker/containers/" + DOCKER_ID + "/hostname /etc/hostname rw - "
        "ext4 /dev/vda rw\n"
        "32 30 254:0 /srv/my\\040hosts /etc/hosts rw - ext4 /dev/vda rw\n"  # the host's own
        "garbage\n"
    )
    root_fs, mounts = parse_mountinfo_root(text)
    assert root_fs == "overlay"
    assert mounts == [
        ("/etc/hostname", f"/var/lib/docker/containers/{DOCKER_ID}/hostname", "docker")
    ]


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


#: The agent's view, judged in a child process the live tests start.
JUDGE_SCRIPT = (
    "import json, pathlib, tempfile\n"
    "from snapshot_agent.node.system import read_container\n"
    "from tests.conftest import make_context\n"
    "f = read_container(make_context(pathlib.Path(tempfile.mkdtemp())))\n"
    "print(json.dumps({'name': f.name, 'evidence': f.evidence, 'overruled': f.overruled}))\n"
)
#: What `unshare` gives the child: a hostPID pod's (or a sandbox's) private namespaces.
PRIVATE = ["unshare", "--cgroup", "--mount", "--uts"]


def _judged(argv: list[str]) -> dict[str, object]:
    """Run JUDGE_SCRIPT under `argv` (a launcher prefix) and return its verdict."""
    out = subprocess.run(
        [*argv, sys.executable, "-c", JUDGE_SCRIPT],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _private_namespaces_work() -> bool:
    """unshare(1) can give a process its own cgroup, mount and UTS namespaces here."""
    if shutil.which("unshare") is None:
        return False
    return subprocess.run([*PRIVATE, "true"], capture_output=True, timeout=10).returncode == 0


def test_real_process_in_private_namespaces_under_a_shim_is_a_container(tmp_path: Path) -> None:
    """A hostPID pod, for real: own cgroup, mount, UTS namespaces; parent named a shim."""
    if not _private_namespaces_work():
        pytest.skip("unshare --cgroup --mount --uts is not permitted here")
    # The shim: a Python whose comm is 'containerd-shim' (exec'd through a symlink of that
    # name), waiting for its child as containerd-shim-runc-v2 does.
    shim = tmp_path / "containerd-shim-runc-v2"
    shim.symlink_to(os.path.realpath(sys.executable))
    launcher = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"
    facts = _judged([str(shim), "-c", launcher, *PRIVATE])
    assert facts["name"] == "containerd", facts
    assert any("descends from containerd-shim (pid" in e for e in facts["evidence"]), facts


def test_real_sandboxed_process_is_judged_as_its_parent(tmp_path: Path) -> None:
    """Own cgroup, mount, UTS namespaces but no shim (a service sandbox): as the test is."""
    if not _private_namespaces_work():
        pytest.skip("unshare --cgroup --mount --uts is not permitted here")
    ours = read_container(make_context(tmp_path)).name
    facts = _judged(PRIVATE)
    assert facts["name"] == ours, facts
    if ours == "none":  # the sandbox's namespaces were seen, and overruled
        assert any("cgroup namespace of its own" in o for o in facts["overruled"]), facts
