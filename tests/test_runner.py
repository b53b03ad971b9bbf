"""The runner with real child processes: hangs, crashes, floods, deadlines, concurrency."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import psutil

from snapshot_agent.config import ChecksConfig, Config
from snapshot_agent.core.check import Check, Requirements
from snapshot_agent.core.context import Context
from snapshot_agent.core.results import Result, Status
from snapshot_agent.core.runner import Outcome, Runner


def make_check(fn, *, id: str = "test.check", timeout_s: float | None = None, **kw) -> Check:
    return Check(
        id=id,
        category="test",
        title=id,
        description="a test check",
        run=fn,
        timeout_s=timeout_s,
        requires=kw.pop("requires", Requirements(linux=False)),
        **kw,
    )


def run_checks(tmp_path: Path, checks: list[Check], **checks_config) -> list[Outcome]:
    config = Config(checks=ChecksConfig(**checks_config))
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    return Runner(config, spool, lambda c: dict(c.thresholds)).run(checks)


def ok(ctx: Context) -> Result:
    return Result(Status.PASS, "fine")


def test_passing_check_returns_its_result(tmp_path: Path) -> None:
    [outcome] = run_checks(tmp_path, [make_check(ok)])
    assert outcome.result.status == Status.PASS
    assert outcome.result.summary == "fine"
    assert outcome.result.duration_ms >= 0


def test_python_hang_becomes_timeout_on_time(tmp_path: Path) -> None:
    def hang(ctx: Context) -> Result:
        time.sleep(600)
        raise AssertionError("unreachable")

    start = time.monotonic()
    [outcome] = run_checks(tmp_path, [make_check(hang, timeout_s=1)])
    elapsed = time.monotonic() - start
    assert outcome.result.status == Status.TIMEOUT
    assert "within 1 s" in outcome.result.summary
    assert elapsed < 3


def test_busy_loop_becomes_timeout(tmp_path: Path) -> None:
    def spin(ctx: Context) -> Result:
        while True:
            pass

    [outcome] = run_checks(tmp_path, [make_check(spin, timeout_s=1)])
    assert outcome.result.status == Status.TIMEOUT


def test_hang_in_a_syscall_becomes_timeout(tmp_path: Path) -> None:
    """open() of a FIFO with no writer blocks in the kernel, like a read on a dead mount."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def blocked(ctx: Context) -> Result:
        with open(fifo, "rb") as fh:
            fh.read()
        return Result(Status.PASS, "unreachable")

    start = time.monotonic()
    [outcome] = run_checks(tmp_path, [make_check(blocked, timeout_s=1)])
    assert outcome.result.status == Status.TIMEOUT
    assert time.monotonic() - start < 3


def test_commands_left_by_a_killed_check_are_killed_too(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"

    def spawn_and_hang(ctx: Context) -> Result:
        proc = subprocess.Popen(["sleep", "600"])
        pidfile.write_text(str(proc.pid))
        time.sleep(600)
        return Result(Status.PASS, "unreachable")

    [outcome] = run_checks(tmp_path, [make_check(spawn_and_hang, timeout_s=1)])
    assert outcome.result.status == Status.TIMEOUT
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the check's sleep 600 survived the kill"
        time.sleep(0.05)


def test_exception_becomes_error_with_traceback(tmp_path: Path) -> None:
    def boom(ctx: Context) -> Result:
        raise ValueError("unexpected /proc format")

    [outcome] = run_checks(tmp_path, [make_check(boom)])
    assert outcome.result.status == Status.ERROR
    assert "ValueError: unexpected /proc format" in outcome.result.summary
    names = [a.name for a in outcome.result.artifacts]
    assert "traceback.txt" in names
    tb = (tmp_path / "spool/test.check/traceback.txt").read_text()
    assert "in boom" in tb and "ValueError" in tb


def test_sys_exit_and_wrong_return_type_are_errors(tmp_path: Path) -> None:
    def exits(ctx: Context) -> Result:
        sys.exit(3)

    def wrong(ctx: Context) -> Result:
        return "fine"  # type: ignore[return-value]

    a, b = run_checks(tmp_path, [make_check(exits, id="t.exits"), make_check(wrong, id="t.wrong")])
    assert a.result.status == Status.ERROR and "SystemExit" in a.result.summary
    assert b.result.status == Status.ERROR and "not Result" in b.result.summary


def test_process_death_is_reported(tmp_path: Path) -> None:
    def die(ctx: Context) -> Result:
        os.kill(os.getpid(), signal.SIGKILL)
        return Result(Status.PASS, "unreachable")

    [outcome] = run_checks(tmp_path, [make_check(die)])
    assert outcome.result.status == Status.ERROR
    assert "SIGKILL" in outcome.result.summary


def test_oversized_artifact_keeps_the_tail_and_says_so(tmp_path: Path) -> None:
    def flood(ctx: Context) -> Result:
        ctx.artifact("big.txt", b"A" * 500_000 + b"THE END")
        return Result(Status.PASS, "flooded")

    [outcome] = run_checks(tmp_path, [make_check(flood)], artifact_cap_bytes=4096)
    [art] = outcome.result.artifacts
    assert art.truncated and art.original_size == 500_007
    body = (tmp_path / "spool/test.check/big.txt").read_bytes()
    assert body.startswith(b"[snapshot-agent: output capped; the first")
    assert body.endswith(b"THE END")
    assert len(body) < 4096 + 200


def test_command_flood_is_capped_to_its_tail(tmp_path: Path) -> None:
    script = "import sys\nfor i in range(200000): sys.stdout.write(f'line {i}\\n')"

    def noisy(ctx: Context) -> Result:
        res = ctx.run([sys.executable, "-c", script], save_as="out.txt")
        return Result(Status.PASS, f"dropped {res.stdout_dropped}")

    [outcome] = run_checks(tmp_path, [make_check(noisy)], artifact_cap_bytes=8192)
    body = (tmp_path / "spool/test.check/out.txt").read_text()
    assert "output capped" in body.splitlines()[0]
    assert body.rstrip().endswith("line 199999")
    assert len(body) < 8192 + 200
    assert {a.name for a in outcome.result.artifacts} == {"out.txt"}
    # The command is recorded in the result, for the pipeline to filter and store.
    [command] = outcome.result.commands
    assert command["argv"][0] == sys.executable and command["output"] == "out.txt"
    assert command["stdout_bytes_dropped"] > 0


def test_overall_deadline_stops_everything(tmp_path: Path) -> None:
    def hang(ctx: Context) -> Result:
        time.sleep(600)
        return Result(Status.PASS, "unreachable")

    checks = [make_check(hang, id=f"t.hang{i}", timeout_s=100) for i in range(4)]
    start = time.monotonic()
    outcomes = run_checks(tmp_path, checks, deadline_s=1.5, concurrency=2)
    assert time.monotonic() - start < 4
    summaries = [o.result.summary for o in outcomes]
    assert all(o.result.status == Status.TIMEOUT for o in outcomes)
    assert sum("snapshot deadline" in s and "stopped" in s for s in summaries) == 2
    assert sum(s.startswith("not started") for s in summaries) == 2


def test_concurrency_is_bounded(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()

    def sleeper(ctx: Context) -> Result:
        (marks / f"{ctx.check_id}.start").write_text(str(time.monotonic()))
        time.sleep(0.3)
        (marks / f"{ctx.check_id}.end").write_text(str(time.monotonic()))
        return Result(Status.PASS, "slept")

    checks = [make_check(sleeper, id=f"t.s{i}") for i in range(6)]
    run_checks(tmp_path, checks, concurrency=2)
    spans = [
        (float((marks / f"t.s{i}.start").read_text()), float((marks / f"t.s{i}.end").read_text()))
        for i in range(6)
    ]
    for start, _ in spans:
        overlapping = sum(1 for s, e in spans if s <= start < e)
        assert overlapping <= 2


def test_checks_run_in_parallel(tmp_path: Path) -> None:
    def sleeper(ctx: Context) -> Result:
        time.sleep(1)
        return Result(Status.PASS, "slept")

    start = time.monotonic()
    run_checks(tmp_path, [make_check(sleeper, id=f"t.p{i}") for i in range(6)], concurrency=6)
    assert time.monotonic() - start < 3


def test_stray_output_is_captured_not_printed(tmp_path: Path, capfd) -> None:
    def chatty(ctx: Context) -> Result:
        print("hello from a check")
        print("oops" * 100_000, file=sys.stderr)
        return Result(Status.PASS, "chatted")

    [outcome] = run_checks(tmp_path, [make_check(chatty)])
    out, err = capfd.readouterr()
    assert "hello from a check" not in out and "oops" not in err
    [art] = [a for a in outcome.result.artifacts if a.name == "check-output.txt"]
    assert art.truncated
    assert (tmp_path / "spool/test.check/check-output.txt").read_bytes().endswith(b"oops\n")


def test_unmet_requirements_skip_with_reason(tmp_path: Path) -> None:
    checks = [
        make_check(ok, id="t.bin", requires=Requirements(linux=False, binaries=("no-such-tool",))),
        make_check(ok, id="t.path", requires=Requirements(linux=False, paths=("/no/such/path",))),
    ]
    a, b = run_checks(tmp_path, checks)
    assert a.result.status == Status.SKIPPED and "no-such-tool" in a.result.summary
    assert b.result.status == Status.SKIPPED and "/no/such/path" in b.result.summary


def test_huge_findings_and_data_are_bounded(tmp_path: Path) -> None:
    from snapshot_agent.core.results import Finding, Severity

    def flood(ctx: Context) -> Result:
        findings = [Finding(Severity.WARN, f"problem {i}") for i in range(1000)]
        return Result(Status.WARN, "many", findings, {"blob": "x" * 3_000_000})

    [outcome] = run_checks(tmp_path, [make_check(flood)])
    assert len(outcome.result.findings) == 200
    assert "800 more findings" in outcome.result.summary
    assert "data.json" in outcome.result.data["note"]
    assert {"findings-all.json", "data.json"} <= {a.name for a in outcome.result.artifacts}


def test_result_counts_even_if_the_pipe_stays_open(tmp_path: Path) -> None:
    """Like a statvfs thread wedged on a dead NFS mount, which keeps the child (and its
    end of the result pipe) alive after the result is written: here a forked sleeper
    holds the pipe open. The result must still count, and the sleeper must die."""
    pidfile = tmp_path / "pid"

    def keeps_pipe_open(ctx: Context) -> Result:
        pid = os.fork()
        if pid == 0:
            time.sleep(600)
            os._exit(0)
        pidfile.write_text(str(pid))
        return Result(Status.WARN, "one mount did not answer")

    start = time.monotonic()
    [outcome] = run_checks(tmp_path, [make_check(keeps_pipe_open, timeout_s=5)])
    assert outcome.result.status == Status.WARN
    assert time.monotonic() - start < 3
    sleeper = int(pidfile.read_text())
    end = time.monotonic() + 5
    while psutil.pid_exists(sleeper) and psutil.Process(sleeper).status() != "zombie":
        assert time.monotonic() < end, "the forked sleeper survived"
        time.sleep(0.05)


def _gone(pid: int, seconds: float = 5) -> bool:
    end = time.monotonic() + seconds
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def test_detached_commands_die_with_the_check(tmp_path: Path) -> None:
    """`setsid cmd &` leaves the check's process group; the check still reaps it."""
    pids = tmp_path / "pids"

    def detaches(ctx: Context) -> Result:
        ctx.run(["sh", "-c", f"setsid sleep 601 & echo $! > {pids}"], timeout_s=5)
        return Result(Status.PASS, "started a daemon")

    def detaches_and_hangs(ctx: Context) -> Result:
        ctx.run(["sh", "-c", f"setsid sleep 602 & echo $! > {pids}-hang"], timeout_s=5)
        time.sleep(600)
        return Result(Status.PASS, "unreachable")

    checks = [
        make_check(detaches, id="t.detach"),
        make_check(detaches_and_hangs, id="t.detach_hang", timeout_s=1.5),
    ]
    a, b = run_checks(tmp_path, checks)
    assert a.result.status == Status.PASS and b.result.status == Status.TIMEOUT
    for path in (pids, Path(f"{pids}-hang")):
        assert _gone(int(path.read_text())), f"{path.name}: the detached sleep survived"


def finish_times(tmp_path: Path, checks: list[Check]) -> tuple[list[Status], dict[str, float]]:
    """Run `checks` with one slot per pool: their statuses, and when each finished (s)."""
    done_at: dict[str, float] = {}
    start = time.monotonic()

    class Clock:
        def started(self, check: Check) -> None: ...

        def finished(self, check: Check, result: Result) -> None:
            done_at[check.id] = time.monotonic() - start

        def tick(self) -> None: ...

    spool = tmp_path / "spool"
    spool.mkdir()
    config = Config(checks=ChecksConfig(concurrency=1))
    outcomes = Runner(config, spool, lambda c: {}, Clock()).run(checks)
    return [o.result.status for o in outcomes], done_at


def test_sampling_checks_do_not_take_the_other_checks_slots(tmp_path: Path) -> None:
    """With one slot, a check that samples for 2 s must not hold up a quick one."""

    def sampler(ctx: Context) -> Result:
        time.sleep(2)
        return Result(Status.PASS, "sampled")

    checks = [make_check(sampler, id="t.sampler", sampling_s=2.0), make_check(ok, id="t.quick")]
    statuses, done_at = finish_times(tmp_path, checks)
    assert statuses == [Status.PASS, Status.PASS]
    assert done_at["t.quick"] < 1.0 < done_at["t.sampler"]


def test_hung_commands_do_not_take_the_built_in_checks_slots(tmp_path: Path) -> None:
    """With one slot, a config command that hangs must not hold up a built-in check."""

    def hangs(ctx: Context) -> Result:
        time.sleep(600)
        return Result(Status.PASS, "unreachable")

    checks = [
        make_check(hangs, id="custom.hang", timeout_s=2, source="config"),
        make_check(ok, id="t.builtin"),
    ]
    statuses, done_at = finish_times(tmp_path, checks)
    assert statuses == [Status.TIMEOUT, Status.PASS]
    assert done_at["t.builtin"] < 1.0 < 2.0 <= done_at["custom.hang"]


#: Built-in checks that run anywhere in well under a second, all sorted after `custom.`.
QUICK_BUILTINS = (
    "disk.mounts",
    "kernel.version",
    "memory.hugepages",
    "memory.swap",
    "network.routes",
    "sysctl.fs",
    "system.info",
    "time.timezone",
)


def test_hung_custom_commands_leave_the_built_ins_their_slots(tmp_path: Path) -> None:
    """8 x `sleep 300` (timeout 25 s) sorted before the built-ins, against a 5 s deadline:
    the built-ins run at once, and every summary says what really happened."""
    deadline = 5
    hung = "".join(
        f'    - {{id: custom.hang{i}, title: Hang {i}, command: [sleep, "300"], timeout_s: 25}}\n'
        for i in range(8)
    )
    config = tmp_path / "config.yaml"
    config.write_text(
        f"checks:\n  deadline_s: {deadline}\n  commands:\n"
        '    - {id: custom.a_short, title: Short, command: [sleep, "300"], timeout_s: 1}\n' + hung
    )
    read_fd, write_fd = os.pipe()
    env = {k: v for k, v in os.environ.items() if k != "SNAPSHOT_AGENT_CONFIG"}
    argv = ["run", "-c", config, "-o", tmp_path / "out", "--json", "-q"]
    argv += ["--only", ",".join(("custom", *QUICK_BUILTINS)), "--events-fd", str(write_fd)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "snapshot_agent", *map(str, argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        pass_fds=(write_fd,),
    )
    os.close(write_fd)
    finished_at: dict[str, float] = {}
    with os.fdopen(read_fd) as events:
        for line in events:  # when each check ended, counted from the snapshot's start
            event = json.loads(line)
            if event["event"] == "snapshot_started":
                start = time.monotonic()
            elif event["event"] == "check_finished":
                finished_at[event["id"]] = time.monotonic() - start
    out, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, 1), err
    with zipfile.ZipFile(json.loads(out)["path"]) as zf:
        checks = {c["id"]: c for c in json.loads(zf.read("report.json"))["checks"]}

    for check_id in QUICK_BUILTINS:
        assert checks[check_id]["status"] != "timeout", checks[check_id]["summary"]
        assert finished_at[check_id] < deadline / 2, (check_id, finished_at[check_id])

    short = checks["custom.a_short"]
    assert short["status"] == "timeout"
    assert short["summary"] == "`sleep 300` did not finish within 1 s and was killed"
    for i in range(8):
        hang = checks[f"custom.hang{i}"]
        ran_s = hang["data"]["duration_ms"] / 1000  # how long `sleep 300` really ran
        assert hang["status"] == "timeout"
        assert hang["summary"] == (
            f"`sleep 300` was stopped at the snapshot deadline ({deadline} s) after {ran_s:.1f} s"
        )
        assert abs(ran_s - hang["duration_ms"] / 1000) < 1.0
    # The last hang got its slot when the short one ended: it ran 1 s less, and says so.
    ran = sorted(checks[f"custom.hang{i}"]["data"]["duration_ms"] for i in range(8))
    assert ran[0] < ran[-1] - 500


def test_artifact_names_are_stored_as_verify_expects_them(tmp_path: Path) -> None:
    """'sub//a' and './b' would be refused by verify: they are recorded as 'sub/a' and 'b'."""

    def odd_names(ctx: Context) -> Result:
        ctx.artifact("sub//a.txt", "a")
        ctx.artifact("./b.txt", "b")
        return Result(Status.PASS, "ok")

    [outcome] = run_checks(tmp_path, [make_check(odd_names)])
    assert [a.name for a in outcome.result.artifacts] == ["sub/a.txt", "b.txt"]
    assert (tmp_path / "spool/test.check/sub/a.txt").read_text() == "a"
