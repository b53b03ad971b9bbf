"""The disk checks judge the host's mounts, even from a sandbox of their own.

Under its systemd unit (ProtectSystem=strict, PrivateTmp=yes) the agent's own mount table
shows / read-only and a private /tmp. These tests build that sandbox for real: a new mount
namespace (unshare, private propagation, so nothing reaches the machine) in which / is
remounted read-only and a tmpfs is mounted on a test directory, and run the checks in it.
What the host is, they ask `findmnt` and `df` outside the namespace, in the test process.
The walks beneath a root run on real trees of directories and symlinks.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from snapshot_agent.checks.disk import MountUsage, UsageFacts, judge_usage, read_usage
from snapshot_agent.checks.disk_mounts import MountsFacts, judge_mounts
from snapshot_agent.config import Config, IggyConfig
from snapshot_agent.core.results import Result, Severity, Status
from snapshot_agent.node.host_view import (
    OWN,
    MountView,
    mount_view,
    open_beneath,
    read_beneath,
    resolve_beneath,
    same_namespace,
    statvfs_beneath,
)
from snapshot_agent.node.mounts import MountEntry

from .conftest import REPO, make_context
from .oracles.test_disk import compare_usage, df, findmnt

#: What the child in the sandbox runs: both disk checks in both views, as JSON.
CHECKS_SCRIPT = """
import json, os, sys
from pathlib import Path
sys.path.insert(0, os.getcwd())  # the repository, for tests.conftest
from snapshot_agent.checks.disk import disk_usage, judge_usage, read_usage
from snapshot_agent.checks.disk_mounts import disk_mounts, judge_mounts, read_mounts
from snapshot_agent.config import Config, IggyConfig
from snapshot_agent.node.host_view import OWN, mount_view
from tests.conftest import make_context

pid, scratch = int(sys.argv[1]), Path(sys.argv[2])
config = Config(iggy=IggyConfig(data_dir=str(scratch)))
out = {}
for name in ("host", "own"):
    def ctx(check):
        art = scratch / f"art-{name}-{check.id}"
        art.mkdir(exist_ok=True)
        return make_context(art, thresholds=check.thresholds, config=config)
    view = mount_view(ctx(disk_usage), pid) if name == "host" else OWN
    usage = judge_usage(read_usage(ctx(disk_usage), view=view), disk_usage.thresholds)
    mounts = judge_mounts(read_mounts(ctx(disk_mounts), view=view), disk_mounts.thresholds)
    out[name] = {
        r_id: {"status": str(r.status), "summary": r.summary, "data": r.data,
               "findings": [f.to_dict() for f in r.findings]}
        for r_id, r in (("disk.usage", usage), ("disk.mounts", mounts))
    }
print(json.dumps(out, default=str))
"""


def _sandbox_or_skip() -> None:
    """Skip unless this process may build a mount namespace and remount in it (root)."""
    if os.geteuid() != 0:
        pytest.skip("building a mount namespace with a read-only / needs root")
    if shutil.which("unshare") is None or shutil.which("findmnt") is None:
        pytest.skip("unshare and findmnt (util-linux) are needed")
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "true"], capture_output=True, timeout=10
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.decode().strip()}")


def _root_options() -> list[str]:
    """The options of / as `findmnt` shows them in the test process (the host)."""
    text = subprocess.run(
        ["findmnt", "-n", "-o", "OPTIONS", "/"], capture_output=True, text=True, timeout=10
    ).stdout
    return text.strip().split(",")


def _in_sandbox(scratch: Path, command: str) -> list[str]:
    """stdout lines of `command` run in a new mount namespace: / read-only, tmpfs on scratch.

    Propagation is private, so the remount and the tmpfs never reach the test process;
    `remount,bind` changes this namespace's mount of / only, never the filesystem.
    The first line is what findmnt says of / inside.
    """
    script = (
        "set -e\n"
        "mount -o remount,bind,ro /\n"
        f"mount -t tmpfs -o size=16m snapshot-agent-test {scratch}\n"
        "findmnt -n -o OPTIONS /\n"
        f"export TMPDIR={scratch}\n"
        f"{command}\n"
    )
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "SNAPSHOT_AGENT_CONFIG": os.devnull},
    )
    if proc.returncode != 0 and "mount" in proc.stderr and not proc.stdout:
        pytest.skip(f"remounting / read-only in a namespace is refused: {proc.stderr.strip()}")
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and len(lines) == 2, proc.stdout + proc.stderr
    assert lines and lines[0].split(",")[0] == "ro", f"the sandbox's / is not read-only: {lines}"
    return lines[1:]


def _rows(data: dict[str, Any], key: str) -> set[str]:
    """Every mount point a check's data lists under `key` (also_at included)."""
    seen: set[str] = set()
    for row in data[key]:
        seen |= {row["mount"], *filter(None, str(row.get("also_at") or "").split(", "))}
    return seen


def _read_only_findings(result: dict[str, Any]) -> list[dict[str, str]]:
    """The findings of a disk.mounts result that call a mount read-only."""
    return [f for f in result["findings"] if "read-only" in f["message"]]


def test_host_view_from_a_read_only_namespace_judges_the_hosts_mounts(tmp_path: Path) -> None:
    """A sandbox like the unit's: the host's writable / is judged, the sandbox's tmpfs not."""
    _sandbox_or_skip()
    if "ro" in _root_options():
        pytest.skip("/ is read-only on this machine already: the sandbox would change nothing")
    scratch = tmp_path / "sandbox-tmp"
    scratch.mkdir()
    me = os.getpid()  # the host, as seen from the sandbox: this test process
    script = tmp_path / "checks.py"
    script.write_text(CHECKS_SCRIPT)
    [line] = _in_sandbox(scratch, f"{sys.executable} {script} {me} {scratch}")
    out = json.loads(line)
    own, host = out["own"], out["host"]

    # The sandbox reproduces the bug: its own view sees / read-only and its private tmpfs.
    assert "/" in own["disk.usage"]["data"]["read_only_not_judged"]
    assert str(scratch) in _rows(own["disk.usage"]["data"], "filesystems")
    assert own["disk.mounts"]["data"]["data_mount"] == str(scratch)
    assert any(f["subject"] == "/" for f in _read_only_findings(own["disk.mounts"]))

    # The host's view: what findmnt and df say in the test process.
    label = f"host (PID {me}'s mount namespace, read through /proc/{me}/root)"
    for result in host.values():
        assert result["data"]["mount_view"] == label
        assert f"read in the host's view (PID {me}'s mount namespace" in result["summary"]
    usage, mounts = host["disk.usage"]["data"], host["disk.mounts"]["data"]
    assert "/" in _rows(usage, "filesystems") and "/" not in usage["read_only_not_judged"]
    assert str(scratch) not in _rows(usage, "filesystems") | _rows(mounts, "mounts")
    assert compare_usage(usage, df()) == []
    theirs = findmnt()
    ours = {row["mount"]: row for row in mounts["mounts"]}
    if len(ours) < 300:
        assert set(ours) == set(theirs)
    assert ours["/"]["read_only"] is False
    for mp in set(ours) & set(theirs):
        assert ours[mp]["read_only"] == ("ro" in theirs[mp]["options"].split(",")), mp
    target = subprocess.run(
        ["findmnt", "-n", "-o", "TARGET", "-T", str(scratch)], capture_output=True, text=True
    ).stdout.strip()
    assert mounts["data_mount"] == target
    assert _read_only_findings(host["disk.mounts"]) == []

    # Judged from the sandbox as the host judges itself: the same verdicts and subjects.
    config = Config(iggy=IggyConfig(data_dir=str(scratch)))
    for check_id, run in (("disk.usage", _plain_usage), ("disk.mounts", _plain_mounts)):
        plain = run(tmp_path / check_id, config)
        assert host[check_id]["status"] == str(plain.status), (check_id, plain.summary)
        subjects = {(f["severity"], f["subject"]) for f in host[check_id]["findings"]}
        assert subjects == {(str(f.severity), f.subject) for f in plain.findings}


def _plain_usage(tmp: Path, config: Config) -> Result:
    """disk.usage in the test process, in its own view."""
    from snapshot_agent.checks.disk import disk_usage

    tmp.mkdir()
    return disk_usage.run(make_context(tmp, thresholds=disk_usage.thresholds, config=config))


def _plain_mounts(tmp: Path, config: Config) -> Result:
    """disk.mounts in the test process, in its own view."""
    from snapshot_agent.checks.disk_mounts import disk_mounts

    tmp.mkdir()
    return disk_mounts.run(make_context(tmp, thresholds=disk_mounts.thresholds, config=config))


def _pid1_reachable() -> bool:
    """This process can compare its mount namespace with PID 1's and reach PID 1's root."""
    try:
        os.stat("/proc/1/ns/mnt")
        os.close(os.open("/proc/1/root", os.O_PATH | os.O_DIRECTORY))
    except OSError:
        return False
    return True


def test_snapshot_run_in_a_sandbox_says_which_view_it_judged(tmp_path: Path) -> None:
    """The real CLI in the sandbox: PID 1's view when it can reach it, else says it cannot."""
    _sandbox_or_skip()
    scratch = tmp_path / "sandbox-tmp"
    scratch.mkdir()
    show = tmp_path / "show.py"
    show.write_text(
        "import json, sys, zipfile\n"
        "archive = json.load(sys.stdin)['path']\n"
        "report = json.loads(zipfile.ZipFile(archive).read('report.json'))\n"
        "print(json.dumps({c['id']: c for c in report['checks']}))\n"
    )
    run = (
        f"{sys.executable} -m snapshot_agent run -o {scratch} -q --json "
        f"--only disk.usage,disk.mounts --no-include-iggy | {sys.executable} {show}"
    )
    [line] = _in_sandbox(scratch, run)
    checks = json.loads(line)
    assert set(checks) == {"disk.usage", "disk.mounts"}
    ctx = make_context(tmp_path)
    host_is_ours = same_namespace(ctx, 1)[0] is True
    for check in checks.values():
        data = check["data"]
        if _pid1_reachable():
            assert data["mount_view"].startswith("host (PID 1's mount namespace"), data
            assert "read in the host's view (PID 1's" in check["summary"]
            listed = [*data.get("mounts", []), *data.get("filesystems", [])]
            assert str(scratch) not in {row["mount"] for row in listed}
            if host_is_ours and "ro" not in _root_options():
                assert "/" not in {f["subject"] for f in _read_only_findings(check)}
        else:  # PID 1's namespace is out of reach: the sandbox's figures, said as such
            assert data["mount_view"] == "own", data
            assert "cannot read PID 1's" in data["mount_view_note"]
            assert "figures from the agent's own sandbox, not the host's" in check["summary"]
            [note] = [f for f in check["findings"] if f["subject"] == "/proc/1/root"]
            assert note["severity"] == "info" and "CAP_SYS_PTRACE" in note["remediation"]


def test_same_namespace_reads_its_own_table_as_before(tmp_path: Path) -> None:
    """Outside any sandbox (the test process shares PID 1's namespace) nothing changes."""
    ctx = make_context(tmp_path, thresholds={"mount_timeout_s": 2.0, "small_volume_gib": 10.0})
    same, why = same_namespace(ctx, os.getpid())
    assert same is True and why == ""
    assert mount_view(ctx, os.getpid()) == OWN
    if same_namespace(ctx, 1)[0] is not True:
        pytest.skip("this test process does not share PID 1's mount namespace")
    view = mount_view(ctx)
    assert view == OWN and view.label == "own"
    result = judge_usage(read_usage(ctx), ctx.thresholds)
    assert result.data["mount_view"] == "own" and "mount_view_note" not in result.data
    assert "host's view" not in result.summary and "sandbox" not in result.summary


def test_fixture_trees_always_use_their_own_table(tmp_path: Path) -> None:
    """A fixture tree (not live) has one table: the host's view is never tried."""
    from .conftest import fixture_roots

    assert mount_view(make_context(tmp_path, roots=fixture_roots(tmp_path))) == OWN


# -- walking beneath a root: real trees --------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/a/b (dirs), root/a/f.txt, and symlinks that try to lead out of root."""
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "f.txt").write_text("inside\n")
    (root / "abs").symlink_to("/a")  # absolute: means root/a, never the machine's /a
    (root / "up").symlink_to("../../../..")  # '..' stops at root
    (root / "hostname").symlink_to("/etc/hostname")  # the machine's, not under root
    (root / "loop").symlink_to("/loop")
    (root / "a" / "rel").symlink_to("b")
    return root


def test_resolve_beneath_keeps_symlinks_inside_the_root(tree: Path) -> None:
    root = str(tree)
    assert resolve_beneath(root, "/abs/b") == ("/a/b", True)
    assert resolve_beneath(root, "/a/rel") == ("/a/b", True)
    assert resolve_beneath(root, "/up/a/./b/") == ("/a/b", True)
    assert resolve_beneath(root, "/a/b/../../a") == ("/a", True)
    assert resolve_beneath(root, "/hostname") == ("/etc/hostname", False)  # not the machine's
    assert resolve_beneath(root, "/a/f.txt") == ("/a/f.txt", False)
    assert resolve_beneath(root, "/missing/x") == ("/missing/x", False)
    assert resolve_beneath(root, "/") == ("/", True)
    with pytest.raises(OSError) as raised:
        resolve_beneath(root, "/loop")
    assert raised.value.errno == errno.ELOOP


def test_open_beneath_follows_no_symlink(tree: Path) -> None:
    root = str(tree)
    for path in ("/abs", "/abs/b", "/hostname", "/a/rel"):
        with pytest.raises(OSError) as raised:
            os.close(open_beneath(root, path))
        assert raised.value.errno in (errno.ELOOP, errno.ENOTDIR), path
    with pytest.raises(OSError) as raised:
        open_beneath(root, "/a/../a")
    assert raised.value.errno == errno.EINVAL
    with pytest.raises(FileNotFoundError):
        open_beneath(root, "/missing")
    assert read_beneath(root, "/abs/f.txt", 100) == "inside\n"
    with pytest.raises(OSError):
        read_beneath(root, "/hostname", 100)  # the machine's file stays out of reach
    assert statvfs_beneath(root, "/a/b").f_blocks == os.statvfs(tree / "a" / "b").f_blocks


def test_statvfs_through_a_process_root_matches_the_direct_path() -> None:
    """statvfs of / through /proc/PID/root is the filesystem's own (this process's root)."""
    through = statvfs_beneath(f"/proc/{os.getpid()}/root", "/")
    direct = os.statvfs("/")
    assert (through.f_blocks, through.f_files, through.f_frsize) == (
        direct.f_blocks,
        direct.f_files,
        direct.f_frsize,
    )


def test_host_view_keeps_the_hung_mount_timeout(tmp_path: Path) -> None:
    """statvfs through /proc/PID/root that never returns is a FAIL per mount, on time."""
    ctx = make_context(tmp_path, thresholds={"mount_timeout_s": 2.0, "small_volume_gib": 10.0})
    release = threading.Event()

    def stuck(fd: int) -> Any:
        """A statvfs stuck in the kernel, as on a dead NFS mount."""
        release.wait(30)
        return os.statvfs(fd)

    me = os.getpid()
    start = time.monotonic()
    try:
        facts = read_usage(ctx, statvfs=stuck, timeout_s=0.3, view=MountView(me, host_pid=me))
    finally:
        release.set()
    assert time.monotonic() - start < 5
    assert facts.usages and {u.state for u in facts.usages} == {"hung"}
    result = judge_usage(facts, ctx.thresholds)
    assert result.status == Status.FAIL and "is not responding" in result.summary


# -- what the judges say about the view (facts in) ---------------------------------------------

ROOT_RW = MountEntry("/dev/vda1", "/", "ext4", ("rw", "relatime"))
HOST = MountView(1, host_pid=1)
SANDBOXED = MountView(note="cannot read PID 1's (/proc/1/root: Permission denied)", sandboxed=True)


def _usage(view: MountView) -> Result:
    """disk.usage on one healthy 100 GiB root, in `view`."""
    gib = 1024**3
    u = MountUsage(ROOT_RW, size=100 * gib, used=20 * gib, avail=80 * gib, inodes=1000)
    return judge_usage(UsageFacts(usages=[u], view=view), {})


def test_judges_name_the_host_view_in_data_and_summary() -> None:
    usage = _usage(HOST)
    assert usage.status == Status.PASS
    assert usage.data["mount_view"] == "host (PID 1's mount namespace, read through /proc/1/root)"
    assert usage.summary.endswith(
        "; read in the host's view (PID 1's mount namespace, through /proc/1/root): the agent "
        "runs in a mount namespace of its own"
    )
    mounts = judge_mounts(MountsFacts(mounts=[ROOT_RW], view=HOST), {})
    assert mounts.data["mount_view"] == usage.data["mount_view"]
    assert "read in the host's view" in mounts.summary


def test_sandbox_standing_in_is_a_note_not_a_verdict() -> None:
    own, sandboxed = _usage(OWN), _usage(SANDBOXED)
    assert sandboxed.status == own.status == Status.PASS
    assert sandboxed.summary == own.summary + (
        "; figures from the agent's own sandbox, not the host's: the host's mount namespace "
        "is out of its reach"
    )
    assert sandboxed.data["mount_view"] == "own"
    assert sandboxed.data["mount_view_note"] == SANDBOXED.note
    [note] = sandboxed.findings
    assert note.severity == Severity.INFO and note.subject == "/proc/1/root"
    ro_root = MountEntry("/dev/vda1", "/", "ext4", ("ro", "relatime"))
    plain = judge_mounts(MountsFacts(mounts=[ro_root]), {})
    seen = judge_mounts(MountsFacts(mounts=[ro_root], view=SANDBOXED), {})
    assert seen.status == plain.status == Status.FAIL  # what the sandbox shows, still judged
    assert [f for f in seen.findings if f.severity == Severity.INFO][-1].subject == "/proc/1/root"
