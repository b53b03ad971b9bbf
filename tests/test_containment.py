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
from snapshot_agent.core.containment import MODE_ENV, RUN_PREFIX, Containment, own_cgroup_dir
from snapshot_agent.core.context import Context
from snapshot_agent.core.results import Result, Status
from snapshot_agent.core.runner import Outcome, Runner
from snapshot_agent.errors import Interrupted
from tests.conftest import run_cli

RUNS = 20
PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37

#: Detaches (the command itself exits 0 at once), then forever: setsid, fork, parent exits.
#: Given a path, it creates that file once detached: the test knows it is hopping.
HOPPER = """
import os, sys
if os.fork():
    os._exit(0)
null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
if sys.argv[1:]:
    open(sys.argv[1], "w").close()
while True:
    os.setsid()
    if os.fork():
        os._exit(0)
"""


def _prctl(option: int, value: int | ctypes.c_int) -> None:
    """prctl(2) with one argument: a value, or a pointer to an int for the kernel to fill."""
    arg = ctypes.byref(value) if isinstance(value, ctypes.c_int) else value
    ctypes.CDLL(None, use_errno=True).prctl(option, arg, 0, 0, 0)


def _children_of(pid: int) -> set[int]:
    """Children of `pid`, zombies included (independent of the code under test)."""
    found: set[int] = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children") as fh:
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
    keep = _children_of(os.getpid())
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    try:
        yield keep
    finally:
        end = time.monotonic() + 10  # a test that failed must still leave nothing behind
        while (strays := _children_of(os.getpid()) - keep) and time.monotonic() < end:
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
    found = [_cmdline(pid) for pid in _children_of(os.getpid()) - keep]
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


def _escapers(tmp_path: Path, tag: str) -> tuple[Path, Path]:
    """The fork-hopping daemon's script and a `sleep` whose argv has the tag."""
    hopper = tmp_path / f"hopper-{tag}.py"
    hopper.write_text(HOPPER)
    sleep = tmp_path / f"sleep-{tag}"
    if not sleep.exists():
        sleep.symlink_to(shutil.which("sleep") or "/bin/sleep")
    return hopper, sleep


def _escape_checks(tmp_path: Path, tag: str) -> list[Check]:
    """A daemon that re-forks (the check passes), the same then a hang (killed at its
    timeout), and a tight `setsid sleep &` loop."""
    hopper, sleep = _escapers(tmp_path, tag)
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
    assert not _tagged_anywhere(tag)


@pytest.mark.skipif(not _cgroups_allowed(), reason="no cgroup v2 the agent may write here")
def test_cgroups_of_the_run_are_removed_and_stale_ones_cleaned(
    tmp_path: Path, catcher: set[int], tag: str, nest: Path
) -> None:
    # What a SIGKILLed agent leaves: its run's cgroup with a process still in it. No
    # process has the pid pid_max: the agent that made this group is surely dead.
    dead = Path("/proc/sys/kernel/pid_max").read_text().strip()
    stale = nest / f"{RUN_PREFIX}{dead}-0"
    (stale / "check-0").mkdir(parents=True)
    sleeper = subprocess.Popen(["sleep", f"600.{secrets.randbelow(10**9):09d}"])
    (stale / "check-0" / "cgroup.procs").write_text(str(sleeper.pid))
    catcher.add(sleeper.pid)
    try:
        agent = _fork_agent(tmp_path, _escape_checks(tmp_path, tag)[:1], "auto", nest)
        assert os.waitpid(agent, 0)[1] == 0, "the agent's run did not pass in its cgroups"
        assert sleeper.wait(timeout=5) == -signal.SIGKILL
        assert not stale.exists()
        assert not list(nest.glob(f"{RUN_PREFIX}{agent}-*")), "the run left its cgroup"
    finally:
        sleeper.kill()


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


#: A check's process as the runner makes it in subreaper mode: a subreaper, with the
#: fork-hopping daemon (argv[1], told to touch argv[2] once it hops) below it.
DYING_CHECK = f"""
import ctypes, subprocess, sys, time
ctypes.CDLL(None).prctl({PR_SET_CHILD_SUBREAPER}, 1, 0, 0, 0)
subprocess.Popen([sys.executable, "-I", "-S", sys.argv[1], sys.argv[2]])
time.sleep(300)
"""


def test_closing_kills_what_a_check_not_yet_dead_still_holds(
    tmp_path: Path, catcher: set[int], tag: str
) -> None:
    """The run closes while a check's process has not died yet (its SIGKILL not taken
    effect, on a loaded node): what hopped onto it, its subreaper, reaches the agent only
    once it is gone. Closing kills it and that daemon, and waits for both."""
    hopper, _ = _escapers(tmp_path, tag)
    hopping = tmp_path / "hopping"
    contain = Containment("subreaper")
    contain.open()
    check = subprocess.Popen([sys.executable, "-c", DYING_CHECK, str(hopper), str(hopping)])
    try:
        deadline = time.monotonic() + 30
        while not hopping.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert hopping.exists(), "the daemon never started hopping"
        contain.close([check.pid])
        assert check.poll() is not None  # the check is dead (and reaped here, by Popen)
        escaped = _escaped(catcher)
        assert not escaped, f"{len(escaped)} outlived the run: {escaped[:3]}"
    finally:
        check.kill()
        check.wait()


def test_an_unknown_containment_mode_is_refused(tmp_path: Path) -> None:
    out, config = tmp_path / "out", tmp_path / "config.yaml"
    config.write_text("checks: {}\n")
    env = {"SNAPSHOT_AGENT_CONTAINMENT": "jail"}
    proc = run_cli("run", "-c", config, "-o", out, "--only", "cpu.load", env=env)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert "SNAPSHOT_AGENT_CONTAINMENT='jail'" in line and "auto" in line
    assert not out.exists() or list(out.iterdir()) == []


# -- the agent killed outright: its guardian kills the run ---------------------------


def _living(pid: int) -> bool:
    """Whether `pid` runs (not a zombie, not gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] not in (b"Z", b"X")


def _tagged_anywhere(tag: str) -> list[str]:
    """Living processes with `tag` in their argv, anywhere (a second look: the first is
    what reached this subreaper, which a re-forking daemon cannot dodge)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid() and _living(int(name)):
            cmdline = _cmdline(int(name))
            if tag in cmdline:
                found.append(cmdline)
    return found


def _left_of_run(keep: set[int], seen: set[int], tag: str, groups: Path | None) -> list[str]:
    """What of a killed agent's run is still there (`groups`: where its run cgroups go).

    Everything the run leaves lands on this subreaper. A daemon that re-forks can dodge
    any one look (its pid has changed by the time it is read) but not two: each of its
    hops gives this process a new child. So a child not in `seen` (added to it) counts;
    dead ones are reaped.
    """
    kids = _children_of(os.getpid()) - keep
    left = [f"new child {_cmdline(pid)}" for pid in kids - seen]
    seen |= kids
    for pid in kids:
        if _living(pid):
            left.append(_cmdline(pid))
        else:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
    runs = list(groups.glob(f"{RUN_PREFIX}*")) if groups is not None else []
    return left + _tagged_anywhere(tag) + [f"cgroup {g.name}" for g in runs]


def _await_nothing_left(
    keep: set[int], tag: str, groups: Path | None, timeout: float = 10
) -> list[str]:
    """Wait until nothing of the killed agent's run is left, three looks in a row over
    40 ms; what is left after `timeout`."""
    end = time.monotonic() + timeout
    seen: set[int] = set()
    clear = 0
    while clear < 3:
        left = _left_of_run(keep, seen, tag, groups)
        if left and time.monotonic() > end:
            return left
        clear = 0 if left else clear + 1
        time.sleep(0.02)
    return []


@pytest.fixture
def nest(tag: str) -> Iterator[Path | None]:
    """A cgroup of this test's own, below this process's (None where the agent may make
    none). An agent moved into it makes its run cgroups there, where no other agent on
    this machine cleans up after dead ones: only its own guardian can."""
    base = own_cgroup_dir()
    if base is None or not _cgroups_allowed():
        yield None
        return
    group = base / f"test-{tag}"
    group.mkdir()
    try:
        yield group
    finally:
        _kill_and_remove(group)


def _kill_and_remove(group: Path) -> None:
    """Kill everything in a cgroup and below, then remove them all."""
    (group / "cgroup.kill").write_text("1")
    end = time.monotonic() + 5
    below = [p for p in group.rglob("*") if p.is_dir()]
    for sub in [*sorted(below, key=lambda p: -len(p.parts)), group]:  # leaves first
        while sub.is_dir():
            try:
                sub.rmdir()
            except OSError:
                assert time.monotonic() < end, f"{sub} stays busy"
                time.sleep(0.01)


def _enter(group: Path | None) -> None:
    """Move this process into `group` (None: stay)."""
    if group is not None:
        (group / "cgroup.procs").write_text("0")


def _hanging_escapers(tmp_path: Path, tag: str) -> tuple[list[Check], list[Path]]:
    """A fork-hopping daemon and 20 `setsid sleep &`, each check hanging once they run;
    the files that say they run."""
    hopper, sleep = _escapers(tmp_path, tag)
    ready = [tmp_path / "hopping", tmp_path / "sleeping"]

    def hops_then_hangs(ctx: Context) -> Result:
        ctx.run([sys.executable, "-I", "-S", str(hopper), str(ready[0])], timeout_s=5)
        time.sleep(600)
        return Result(Status.PASS, "unreachable")

    def sleeps_then_hangs(ctx: Context) -> Result:
        ctx.run(["sh", "-c", f"for i in $(seq 20); do setsid {sleep} 600 & done; touch {ready[1]}"])
        time.sleep(600)
        return Result(Status.PASS, "unreachable")

    def check(fn: Callable[[Context], Result], name: str) -> Check:
        return Check(
            id=f"escape.{name}",
            category="escape",
            title=name,
            description="outlives a killed agent",
            run=fn,
            requires=Requirements(linux=False),
        )

    return [check(hops_then_hangs, "hopper"), check(sleeps_then_hangs, "sleeps")], ready


def _await_files(paths: list[Path], alive: Callable[[], bool]) -> None:
    """Wait until every file exists (what the checks started runs), the agent alive."""
    end = time.monotonic() + 30  # a loaded 2-core machine can take a while to fork
    while not all(p.exists() for p in paths):
        assert alive(), "the agent ended before its checks got going"
        assert time.monotonic() < end, f"never created: {[p.name for p in paths]}"
        time.sleep(0.005)


def _fork_agent(tmp_path: Path, checks: list[Check], mode: str, group: Path | None) -> int:
    """An agent in a child of this process (in cgroup `group`), running `checks`; its pid.

    It exits 0 when the checks ran as `mode` asked (a cgroup each, or subreapers), and
    they passed.
    """
    pid = os.fork()
    if pid == 0:  # never returns into pytest
        code = 70
        try:
            _enter(group)
            outcomes, used = _run(tmp_path, checks, mode)
            passed = all(o.result.status == Status.PASS for o in outcomes)
            code = 0 if passed and used == ("cgroup" if mode == "auto" else "subreaper") else 1
        finally:
            os._exit(code)
    return pid


def _alive_child(pid: int) -> Callable[[], bool]:
    """Whether this process's child `pid` is still running (not reaped here)."""
    return lambda: os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.usefixtures("load")
def test_an_agent_killed_outright_leaves_nothing_of_its_run(
    tmp_path: Path, catcher: set[int], tag: str, mode: str, nest: Path | None
) -> None:
    """SIGKILL mid-run, at a different moment each time: the run's guardian kills the
    re-forking daemon, the detached sleeps and the run's cgroup, then exits."""
    checks, ready = _hanging_escapers(tmp_path, tag)
    group = nest if mode == "auto" else None
    for run in range(RUNS):
        for path in ready:
            path.unlink(missing_ok=True)
        agent = _fork_agent(tmp_path, checks, mode, group)
        _await_files(ready, _alive_child(agent))
        time.sleep(secrets.randbelow(50) / 1000)
        os.kill(agent, signal.SIGKILL)
        os.waitpid(agent, 0)
        left = _await_nothing_left(catcher, tag, group)
        assert not left, f"run {run}: {len(left)} left after the agent was killed: {left[:3]}"


@pytest.mark.parametrize("mode", MODES)
def test_the_cli_killed_outright_leaves_nothing_of_its_run(
    tmp_path: Path, catcher: set[int], tag: str, mode: str, nest: Path | None
) -> None:
    """The issue's case, through the real CLI: a custom command starts a fork-hopping
    daemon, the agent is killed with SIGKILL. Two runs, without the CPU burners: each
    starts Python afresh (the 20 runs under load are the test above)."""
    hopper, _ = _escapers(tmp_path, tag)
    ready = tmp_path / "hopping"
    argv = ["sh", "-c", f"{sys.executable} -I -S {hopper} {ready}; exec sleep 300"]
    config = tmp_path / "k.yaml"
    config.write_text(
        "checks:\n  commands:\n"
        f"    - {{id: custom.d, title: Daemon, command: {json.dumps(argv)}, timeout_s: 60}}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SNAPSHOT_AGENT_CONFIG"}
    env[MODE_ENV] = mode
    group = nest if mode == "auto" else None
    for run in range(2):
        ready.unlink(missing_ok=True)
        cli = [sys.executable, "-m", "snapshot_agent", "run", "-c", str(config)]
        proc = subprocess.Popen(
            [*cli, "-o", str(tmp_path / f"D{run}"), "--only", "custom.d", "-q"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            preexec_fn=functools.partial(_enter, group),
        )
        _await_files([ready], functools.partial(_running, proc))
        proc.kill()
        proc.wait()
        left = _await_nothing_left(catcher, tag, group)
        assert not left, f"run {run}: {len(left)} left after the agent was killed: {left[:3]}"


def _running(proc: subprocess.Popen[bytes]) -> bool:
    """Whether a child started with Popen still runs."""
    return proc.poll() is None


def _parents_children(ctx: Context) -> Result:
    """A check that lists the agent's children with their process groups."""
    agent = os.getppid()
    found = [[pid, os.getpgid(pid)] for pid in _children_of(agent) if pid != os.getpid()]
    return Result(Status.PASS, "looked", data={"children": found})


@pytest.mark.parametrize("mode", MODES)
def test_a_run_has_a_guardian_while_it_runs_and_none_after(
    tmp_path: Path, catcher: set[int], mode: str
) -> None:
    look = Check(
        id="guard.look",
        category="guard",
        title="look",
        description="lists the agent's children",
        run=_parents_children,
        requires=Requirements(linux=False),
    )
    outcomes, _ = _run(tmp_path, [look], mode)
    others = outcomes[0].result.data["children"]
    guardians = [pid for pid, group in others if pid not in catcher and group == pid]
    assert len(guardians) == 1, f"the agent's children during the run: {others}"
    assert not _children_of(os.getpid()) - catcher, "the run left a process behind (its guardian?)"


@pytest.mark.skipif(not _cgroups_allowed(), reason="no cgroup v2 the agent may write here")
def test_a_run_cgroup_whose_pid_was_reused_is_cleaned_and_a_live_one_kept(
    tmp_path: Path, catcher: set[int], tag: str, nest: Path
) -> None:
    """A killed agent's group outlives it; its pid now names another process (started at
    another time than the group records), which must not keep the group alive."""
    _, sleep = _escapers(tmp_path, tag)
    reuser, live, inmate = (subprocess.Popen([str(sleep), f"60{i}"]) for i in range(3))
    catcher |= {reuser.pid, live.pid, inmate.pid}
    stale = nest / f"{RUN_PREFIX}{reuser.pid}-{_start_ticks(reuser.pid) - 1}-0"
    kept = nest / f"{RUN_PREFIX}{live.pid}-{_start_ticks(live.pid)}-0"  # a live agent's
    try:
        for group in (stale, kept):
            (group / "check-0").mkdir(parents=True)
        (stale / "check-0" / "cgroup.procs").write_text(str(inmate.pid))
        agent = _fork_agent(tmp_path, _escape_checks(tmp_path, tag)[:1], "auto", nest)
        assert os.waitpid(agent, 0)[1] == 0, "the agent's run did not pass in its cgroups"
        assert inmate.wait(timeout=5) == -signal.SIGKILL
        assert not stale.exists()
        assert kept.exists() and reuser.poll() is None and live.poll() is None
    finally:
        for proc in (reuser, live, inmate):
            proc.kill()
            proc.wait()


def _start_ticks(pid: int) -> int:
    """When `pid` started, in clock ticks after boot (field 22 of /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rfind(")") + 2 :].split()[19])


def _runs_under_ctrl_c(spool: Path, report: Path, seconds: float) -> None:
    """In a child: runs with nothing to run, one after another, each stopped by the first
    Ctrl-C wherever it lands (later ones are noted only, as in the CLI); after each, any
    run cgroup it left is written to `report`, and it stops."""
    stopped = [True]  # True: this run was stopped already, or none is under way

    def interrupt(signum: int, _frame: object) -> None:
        if not stopped[0]:
            stopped[0] = True
            raise Interrupted(signum)

    signal.signal(signal.SIGINT, interrupt)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    base = own_cgroup_dir()
    assert base is not None
    runner = Runner(Config(checks=ChecksConfig()), spool, lambda c: {}, containment="auto")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with contextlib.suppress(Interrupted):  # one raised between two of these steps
            stopped[0] = False
            with contextlib.suppress(Interrupted):
                runner.run([])
            stopped[0] = True
            left = [g.name for g in base.glob(f"{RUN_PREFIX}{os.getpid()}-*")]
            if left:
                report.write_text(" ".join(left))
                return


@pytest.mark.skipif(not _cgroups_allowed(), reason="no cgroup v2 the agent may write here")
def test_a_ctrl_c_as_a_run_opens_leaves_no_cgroup(
    tmp_path: Path, catcher: set[int], tag: str, nest: Path
) -> None:
    """Hundreds of Ctrl-C, each landing somewhere in a run's start or end."""
    report, spool = tmp_path / "left", tmp_path / "spool"
    spool.mkdir()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # until its handler is set
    agent = os.fork()
    if agent == 0:  # never returns into pytest
        try:
            _enter(nest)
            _runs_under_ctrl_c(spool, report, seconds=1.5)
        finally:
            os._exit(0)
    signal.pthread_sigmask(signal.SIG_SETMASK, old)
    alive = _alive_child(agent)
    while alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(agent, signal.SIGINT)
        time.sleep(secrets.randbelow(2000) / 1e6)
    os.waitpid(agent, 0)
    assert not report.exists(), f"a run left its cgroup: {report.read_text()}"
    assert not _await_nothing_left(catcher, tag, nest)  # nor a guardian
