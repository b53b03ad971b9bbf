"""Nothing a check starts survives it: daemons that detach and keep re-forking, under load.

The test process makes itself a subreaper first (`catcher`): whatever escapes a check
then lands on this process instead of init, where it is found (no scan of /proc can see
a process that forks and exits in a loop: it is never where the scan last looked),
killed, and reaped. Both containments are run: a cgroup per check where this machine
allows one, and the subreapers alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from snapshot_agent.config import ChecksConfig, Config
from snapshot_agent.core.check import Check, Requirements
from snapshot_agent.core.containment import RUN_PREFIX, Containment, own_cgroup_dir
from snapshot_agent.core.context import Context
from snapshot_agent.core.results import Result, Status
from snapshot_agent.core.runner import Outcome, Runner
from tests.conftest import run_cli

RUNS = 20
PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37

#: Detaches (the command itself exits 0 at once), then forever: setsid, fork, parent exits.
HOPPER = """
import os, sys
if os.fork():
    os._exit(0)
null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
while True:
    os.setsid()
    if os.fork():
        os._exit(0)
"""


def _prctl(option: int, value: int | ctypes.c_int) -> None:
    """prctl(2) with one argument: a value, or a pointer to an int for the kernel to fill."""
    arg = ctypes.byref(value) if isinstance(value, ctypes.c_int) else value
    ctypes.CDLL(None, use_errno=True).prctl(option, arg, 0, 0, 0)


def _own_children() -> set[int]:
    """This process's children, zombies included (independent of the code under test)."""
    found: set[int] = set()
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError), open(f"/proc/self/task/{tid}/children") as fh:
            found |= {int(p) for p in fh.read().split()}
    return found


def _cmdline(pid: int) -> str:
    """What a process runs, for a failure message."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip() or "<zombie>"
    except OSError:
        return "<gone>"


def _kill_and_reap(pids: set[int]) -> None:
    """SIGKILL these children and reap those already dead."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


@pytest.fixture
def catcher() -> Iterator[set[int]]:
    """This process as a subreaper; yields the children it may keep (all else escaped)."""
    was = ctypes.c_int(0)
    _prctl(PR_GET_CHILD_SUBREAPER, was)
    keep = _own_children()
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    try:
        yield keep
    finally:
        end = time.monotonic() + 10  # a test that failed must still leave nothing behind
        while (strays := _own_children() - keep) and time.monotonic() < end:
            _kill_and_reap(strays)
            time.sleep(0.001)
        _prctl(PR_SET_CHILD_SUBREAPER, was.value)


@pytest.fixture
def tag() -> str:
    """A word no other process on this machine has in its argv."""
    return f"contained{secrets.token_hex(6)}"


@pytest.fixture
def load(catcher: set[int]) -> Iterator[None]:
    """Every core busy, as on a node in trouble: the daemon and the agent fight for CPU."""
    burners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass", "cpu-burner"])
        for _ in range(os.cpu_count() or 2)
    ]
    catcher |= {p.pid for p in burners}
    yield
    for proc in burners:
        proc.kill()
        proc.wait()


def _escaped(keep: set[int]) -> list[str]:
    """What reached this subreaper, the living first: each escaped a check."""
    found = [_cmdline(pid) for pid in _own_children() - keep]
    return sorted(found, key=lambda cmdline: cmdline in ("<zombie>", "<gone>"))


@functools.cache
def _cgroups_allowed() -> bool:
    """Whether the agent gets a cgroup per check on this machine."""
    probe = Containment("auto")
    probe.open()
    probe.close()
    return probe.mode == "cgroup"


MODES = [
    pytest.param(
        "auto",
        marks=pytest.mark.skipif(
            not _cgroups_allowed(),
            reason="this machine lets the agent create no cgroup v2 (not root, no writable "
            "cgroup2 mount, or no cgroup.kill before Linux 5.14)",
        ),
        id="cgroup",
    ),
    pytest.param("subreaper", id="subreaper"),
]


def _escape_checks(tmp_path: Path, tag: str) -> list[Check]:
    """A daemon that re-forks (the check passes), the same then a hang (killed at its
    timeout), and a tight `setsid sleep &` loop."""
    hopper = tmp_path / f"hopper-{tag}.py"
    hopper.write_text(HOPPER)
    sleep = tmp_path / f"sleep-{tag}"
    if not sleep.exists():
        sleep.symlink_to(shutil.which("sleep") or "/bin/sleep")
    daemon = [sys.executable, "-I", "-S", str(hopper)]

    def detaches(ctx: Context) -> Result:
        res = ctx.run(daemon, timeout_s=5)
        return Result(Status.PASS if res.ok else Status.FAIL, res.describe())

    def detaches_then_hangs(ctx: Context) -> Result:
        ctx.run(daemon, timeout_s=5)
        time.sleep(600)
        return Result(Status.PASS, "unreachable")

    def sleeps(ctx: Context) -> Result:
        res = ctx.run(["sh", "-c", f"for i in $(seq 60); do setsid {sleep} 600 & done"])
        return Result(Status.PASS if res.ok else Status.FAIL, res.describe())

    def check(fn: Callable[[Context], Result], name: str, timeout_s: float | None = None) -> Check:
        return Check(
            id=f"escape.{name}",
            category="escape",
            title=name,
            description="tries to outlive its check",
            run=fn,
            timeout_s=timeout_s,
            requires=Requirements(linux=False),
        )

    return [
        check(detaches, "daemon"),
        check(detaches_then_hangs, "daemon_then_hang", timeout_s=0.4),
        check(sleeps, "sleeps"),
    ]


def _run(tmp_path: Path, checks: list[Check], mode: str) -> tuple[list[Outcome], str]:
    """One run of the checks; the outcomes and what contained them."""
    spool = tmp_path / "spool"
    shutil.rmtree(spool, ignore_errors=True)
    spool.mkdir()
    runner = Runner(Config(checks=ChecksConfig()), spool, lambda c: {}, containment=mode)
    outcomes = runner.run(checks)
    return outcomes, runner.contained_by


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.usefixtures("load")
def test_fork_hopping_daemons_never_outlive_their_check(
    tmp_path: Path, catcher: set[int], tag: str, mode: str
) -> None:
    checks = _escape_checks(tmp_path, tag)
    for run in range(RUNS):
        outcomes, used = _run(tmp_path, checks, mode)
        assert used == ("cgroup" if mode == "auto" else "subreaper")
        statuses = [o.result.status for o in outcomes]
        assert statuses == [Status.PASS, Status.TIMEOUT, Status.PASS], [
            (run, o.result.summary) for o in outcomes
        ]
        escaped = _escaped(catcher)
        time.sleep(0.05)  # anything still on its way up the tree arrives meanwhile
        escaped += _escaped(catcher)
        assert not escaped, f"run {run}: {len(escaped)} escaped: {escaped[:3]}"
        killed = outcomes[0].result.findings
        assert any("left running were killed" in f.message for f in killed)
    assert not [p for p in os.listdir("/proc") if p.isdigit() and tag in _cmdline(int(p))]


@pytest.mark.skipif(not _cgroups_allowed(), reason="no cgroup v2 the agent may write here")
def test_cgroups_of_the_run_are_removed_and_stale_ones_cleaned(
    tmp_path: Path, catcher: set[int], tag: str
) -> None:
    base = own_cgroup_dir()
    assert base is not None
    # What a SIGKILLed agent leaves: its run's cgroup with a process still in it. No
    # process has the pid pid_max: the agent that made this group is surely dead.
    dead = Path("/proc/sys/kernel/pid_max").read_text().strip()
    stale = base / f"{RUN_PREFIX}{dead}-0"
    (stale / "check-0").mkdir(parents=True)
    sleeper = subprocess.Popen(["sleep", f"600.{secrets.randbelow(10**9):09d}"])
    (stale / "check-0" / "cgroup.procs").write_text(str(sleeper.pid))
    catcher.add(sleeper.pid)
    try:
        outcomes, used = _run(tmp_path, _escape_checks(tmp_path, tag)[:1], "auto")
        assert used == "cgroup" and outcomes[0].result.status == Status.PASS
        assert sleeper.wait(timeout=5) == -signal.SIGKILL
        assert not stale.exists()
        assert not list(base.glob(f"{RUN_PREFIX}{os.getpid()}-*")), "the run left its cgroup"
    finally:
        sleeper.kill()
        with contextlib.suppress(OSError):
            (stale / "check-0").rmdir()
            stale.rmdir()


@pytest.mark.parametrize("mode", ["auto", "subreaper"])
def test_the_cli_kills_a_fork_hopping_custom_command(
    tmp_path: Path, catcher: set[int], tag: str, mode: str
) -> None:
    hopper = tmp_path / f"hopper-{tag}.py"
    hopper.write_text(HOPPER)
    argv = [sys.executable, "-I", "-S", str(hopper)]
    config = tmp_path / "config.yaml"
    config.write_text(
        "checks:\n  commands:\n"
        f"    - {{id: custom.daemon, title: Daemon, command: {json.dumps(argv)}, timeout_s: 5}}\n"
    )
    out = tmp_path / "out"
    proc = run_cli(
        "run", "-c", config, "-o", out, "--only", "custom", "--json", "-q",
        env={"SNAPSHOT_AGENT_CONTAINMENT": mode},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["summary"]["pass"] == 1
    escaped = _escaped(catcher)
    assert not escaped, f"{len(escaped)} escaped the CLI: {escaped[:3]}"


@pytest.mark.parametrize("mode", ["auto", "subreaper"])
def test_ctrl_c_kills_a_fork_hopping_command_too(
    tmp_path: Path, catcher: set[int], tag: str, mode: str
) -> None:
    hopper = tmp_path / f"hopper-{tag}.py"
    hopper.write_text(HOPPER)
    argv = ["sh", "-c", f"{sys.executable} -I -S {hopper}; sleep 300"]
    config = tmp_path / "config.yaml"
    config.write_text(
        "checks:\n  commands:\n"
        f"    - {{id: custom.daemon, title: Daemon, command: {json.dumps(argv)}, timeout_s: 60}}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SNAPSHOT_AGENT_CONFIG"}
    run = ["run", "-c", str(config), "-o", str(tmp_path / "out"), "--only", "custom", "-q"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "snapshot_agent", *run],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**env, "SNAPSHOT_AGENT_CONTAINMENT": mode},
    )
    time.sleep(1.5)  # the daemon is hopping by now
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    escaped = _escaped(catcher)
    assert not escaped, f"{len(escaped)} escaped the interrupted run: {escaped[:3]}"


def test_an_unknown_containment_mode_is_refused(tmp_path: Path) -> None:
    out, config = tmp_path / "out", tmp_path / "config.yaml"
    config.write_text("checks: {}\n")
    env = {"SNAPSHOT_AGENT_CONTAINMENT": "jail"}
    proc = run_cli("run", "-c", config, "-o", out, "--only", "cpu.load", env=env)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert "SNAPSHOT_AGENT_CONTAINMENT='jail'" in line and "auto" in line
    assert not out.exists() or list(out.iterdir()) == []
