"""Signals, terminals and files, against the real CLI: what a run leaves behind, and to whom.

Every run here is `python -m snapshot_agent run` in a child process with a config of its
own; the processes looked at are that child's own descendants, the files those in the
test's tmp dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import signal
import stat
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from snapshot_agent.archive.verify import verify_archive
from snapshot_agent.errors import UsageError
from snapshot_agent.storage import local
from snapshot_agent.storage.local import LocalSink

from .conftest import wait_for_descendant

#: Only the lines below are this file's checks: a slow command, a fast one.
CONFIG = """
checks:
  commands:
    - {id: custom.slow, title: Slow, command: [sleep, "300"], timeout_s: 60}
    - {id: custom.quick, title: Quick, command: [echo, hello], timeout_s: 10}
"""
ENV = {**os.environ, "SNAPSHOT_AGENT_CONFIG": ""}  # empty: as if unset
START_S = 30  # a busy 2-core CI machine can take a while to import and fork


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    return path


def argv(config: Path, out: Path, *extra: str, only: str = "custom.slow") -> list[str]:
    """The real CLI: `snapshot-agent run` with this test's config and output directory."""
    cli = [sys.executable, "-m", "snapshot_agent", "run"]
    return [*cli, "-c", str(config), "-o", str(out), "--only", only, *extra]


def start(config: Path, out: Path, *extra: str, **popen: object) -> subprocess.Popen[str]:
    """A run of the slow check, started; see `slow_check_tree` for when it is under way."""
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(argv(config, out, *extra), text=True, env=ENV, **popen)  # type: ignore[call-overload]


def slow_check_tree(proc: subprocess.Popen[str]) -> list[psutil.Process]:
    """Wait until the run's `sleep 300` runs; every process below the run at that point."""
    try:
        return wait_for_descendant(proc.pid, ["sleep", "300"], START_S)
    except AssertionError:
        assert proc.poll() is None, proc.communicate()  # the run ended: what it said
        raise


def run_quick(config: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """A run of the quick check, to its end."""
    return subprocess.run(
        argv(config, out, *extra, only="custom.quick"),
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )


def assert_all_gone(procs: list[psutil.Process]) -> None:
    _gone, alive = psutil.wait_procs(procs, timeout=5)
    assert not alive, f"left running: {[p.cmdline() for p in alive]}"


def kill_all(procs: list[psutil.Process]) -> None:
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(procs, timeout=5)


@contextlib.contextmanager
def killed_at_exit(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """A failing assertion must not leave the run (or its checks) running."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                kill_all([*psutil.Process(proc.pid).children(recursive=True)])
            proc.kill()
            proc.wait()


def archive_in(out: Path) -> Path:
    (archive,) = [p for p in out.iterdir() if p.name.endswith(".zip")]
    return archive


def verdict_code(archive: Path) -> int:
    with zipfile.ZipFile(archive) as zf:
        return 1 if json.loads(zf.read("report.json"))["verdict"] == "fail" else 0


# -- item 6: stop signals ------------------------------------------------------------


# SIGINT and SIGTERM: test_cli.py::test_interrupt_leaves_nothing_behind
@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGQUIT], ids=lambda s: s.name)
def test_a_stop_signal_stops_the_checks_and_leaves_nothing(
    tmp_path: Path, config: Path, sig: signal.Signals
) -> None:
    out = tmp_path / "out"
    with killed_at_exit(start(config, out)) as proc:
        tree = slow_check_tree(proc)
        assert any(n.endswith(".zip.partial") for n in os.listdir(out))
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert f"interrupted by {sig.name}; no archive was written" in err
    assert "Traceback" not in err
    assert os.listdir(out) == []
    assert_all_gone(tree)


@pytest.mark.parametrize(
    "burst",
    [[signal.SIGINT] * 5, [signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGQUIT] * 2],
    ids=["5-sigint", "mixed"],
)
def test_a_burst_of_signals_cannot_cut_the_cleanup_short(
    tmp_path: Path, config: Path, burst: list[signal.Signals]
) -> None:
    for attempt in range(2):  # the later signals land at different points of the cleanup
        out = tmp_path / f"out{attempt}"
        with killed_at_exit(start(config, out)) as proc:
            tree = slow_check_tree(proc)
            for sig in burst:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, sig)
                time.sleep(0.005 * attempt)
            _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert "Traceback" not in err and err.count("interrupted") == 1, err
        assert os.listdir(out) == []
        assert_all_gone(tree)


def test_a_terminal_that_hangs_up_is_a_sighup(tmp_path: Path, config: Path) -> None:
    """An SSH session dropping: the run's controlling terminal goes away mid-snapshot."""
    out = tmp_path / "out"
    master, slave = pty.openpty()
    try:
        proc = start(
            config,
            out,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            preexec_fn=lambda: os.login_tty(0),  # its own session, the pty its terminal
        )
    finally:
        os.close(slave)
    with killed_at_exit(proc):
        tree = slow_check_tree(proc)
        os.close(master)  # the kernel sends SIGHUP; every later write gets EIO
        proc.wait(timeout=30)
    assert proc.returncode == 130
    assert os.listdir(out) == []
    assert_all_gone(tree)


def test_the_next_run_removes_what_a_killed_run_left(tmp_path: Path, config: Path) -> None:
    out = tmp_path / "out"
    with killed_at_exit(start(config, out)) as proc:
        tree = slow_check_tree(proc)
        proc.kill()  # SIGKILL: no cleanup is possible
        proc.wait()
    assert_all_gone(tree)  # its checks and their commands die with it (PR_SET_PDEATHSIG)
    left = sorted(os.listdir(out))
    assert len(left) == 2 and left[1].endswith(".zip.partial"), left
    (run_dir,) = [out / n for n in left if n.startswith(".")]
    assert (run_dir / local.LOCK_NAME).is_file()
    assert any(p.name == "custom.slow" for p in run_dir.rglob("*"))  # its raw evidence

    proc2 = run_quick(config, out)
    assert proc2.returncode == 0, proc2.stderr
    assert f"removed what a dead run left in {out}: {left[1]}, {left[0]}" in proc2.stderr
    assert os.listdir(out) == [Path(proc2.stdout.strip()).name]


def test_only_dead_runs_are_cleaned_never_a_live_one_or_anything_else(
    tmp_path: Path, config: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    decoys = {
        ".snapshot-20200101-000000.run/notes.txt": "a directory without our lock file",
        "snapshot-20200101-000000.zip.partial": "paired with the directory above",
        ".snapshot-20200101-000001.abcd1234/raw.txt": "an older agent's working directory",
        "snapshot-20200101-000002.zip.partial": "a partial with no working directory",
        ".snapshot-notes.run/x": "not a snapshot name",
    }
    for rel, text in decoys.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    (out / ".snapshot-20200101-000003.run").symlink_to(tmp_path)  # never followed
    with killed_at_exit(start(config, out)) as live:
        slow_check_tree(live)
        mine = set(os.listdir(out)) - {p.split("/")[0] for p in decoys}
        mine.discard(".snapshot-20200101-000003.run")
        assert len(mine) == 2  # the live run's .partial and working directory

        quick = run_quick(config, out)
        assert quick.returncode == 0, quick.stderr
        assert "removed" not in quick.stderr
        assert mine <= set(os.listdir(out))  # the live run's files are untouched
        assert live.poll() is None
        live.terminate()
        live.communicate(timeout=30)
    assert live.returncode == 130
    for rel, text in decoys.items():
        assert (out / rel).read_text() == text
    assert (out / ".snapshot-20200101-000003.run").is_symlink()
    assert not mine & set(os.listdir(out))


# -- item 7: who can read an archive ---------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_archives_and_working_files_are_private_whatever_the_umask(
    tmp_path: Path, config: Path
) -> None:
    umask = 0o000  # the worst: the umask takes nothing off what a file is created with
    out = tmp_path / "out"
    with killed_at_exit(start(config, out, preexec_fn=lambda: os.umask(umask))) as proc:
        slow_check_tree(proc)
        (partial,) = out.glob("*.zip.partial")
        (run_dir,) = out.glob(".snapshot-*")
        assert mode(partial) == 0o600
        assert mode(run_dir) == 0o700
        assert {mode(p) for p in run_dir.iterdir() if p.is_dir()} == {0o700}  # the spool
        proc.terminate()
        proc.communicate(timeout=30)

    done = subprocess.run(
        argv(config, out, only="custom.quick"),
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
        preexec_fn=lambda: os.umask(umask),
    )
    assert done.returncode == 0, done.stderr
    archive = Path(done.stdout.strip())
    assert mode(archive) == 0o600
    assert verify_archive(archive).ok


def test_a_group_given_the_archive_reads_it_and_no_one_else(tmp_path: Path) -> None:
    sink = LocalSink(tmp_path, group=os.getgid())
    name, stream = sink.open("snapshot-20260101-000000")
    assert sink.partial is not None
    assert mode(sink.partial) == 0o640 and sink.partial.stat().st_gid == os.getgid()
    stream.write(b"data")
    location = sink.commit(4, "0" * 64)
    sink.abort()
    archive = Path(location.uri)
    assert mode(archive) == 0o640 and archive.stat().st_gid == os.getgid()
    assert os.listdir(tmp_path) == [f"{name}.zip"]

    with pytest.raises(UsageError, match="no-such-group-7c1e: no such group"):
        LocalSink(tmp_path / "x", group="no-such-group-7c1e").open("snapshot-20260101-000001")


# -- item 5: stdout and stderr that go away ----------------------------------------------


def quick_run(config: Path, out: Path, *extra: str, **popen: object) -> subprocess.Popen[str]:
    """A run of the quick check, started."""
    cmd = argv(config, out, *extra, only="custom.quick")
    return subprocess.Popen(cmd, text=True, env=ENV, **popen)  # type: ignore[call-overload]


def test_stderr_whose_reader_quits_changes_nothing(tmp_path: Path, config: Path) -> None:
    """`run 2>&1 >out | head -1`: progress is best effort."""
    out, stdout = tmp_path / "out", tmp_path / "stdout"
    with stdout.open("w") as fh:
        proc = quick_run(config, out, stdout=fh, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    with killed_at_exit(proc):
        first = proc.stderr.readline()
        proc.stderr.close()  # `head -1` is done: every later write gets EPIPE
        code = proc.wait(timeout=120)
    assert "custom.quick" in first
    archive = archive_in(out)
    assert code == verdict_code(archive) == 0
    assert stdout.read_text() == f"{archive}\n"
    assert verify_archive(archive).ok


@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["path", "json"])
def test_stdout_whose_reader_quit_still_writes_the_archive(
    tmp_path: Path, config: Path, json_flag: list[str]
) -> None:
    """`run | true`: no traceback; the verdict's exit code, and the path on stderr."""
    out = tmp_path / "out"
    proc = quick_run(config, out, *json_flag, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader quits before the path is printed
    with killed_at_exit(proc):
        err = proc.stderr.read()
        code = proc.wait(timeout=120)
    archive = archive_in(out)
    assert code == verdict_code(archive) == 0, err
    assert "Traceback" not in err and "Exception ignored" not in err
    assert f"stdout is closed, so the archive's path was not printed; it is {archive}" in err


@pytest.mark.parametrize(
    ("closed", "stdout_open", "stderr_open"),
    [("2>&-", True, False), (">&-", False, True)],
)
def test_a_descriptor_closed_at_start_is_never_reused(
    tmp_path: Path, config: Path, closed: str, stdout_open: bool, stderr_open: bool
) -> None:
    """`run --json 2>&-`: stdout stays one JSON object; nothing lands in the archive."""
    out = tmp_path / "out"
    command = " ".join(map(repr, argv(config, out, "--json", only="custom.quick")))
    proc = subprocess.run(
        ["sh", "-c", f"exec {command} {closed}"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    archive = archive_in(out)
    assert proc.returncode == verdict_code(archive) == 0, proc.stderr
    assert verify_archive(archive).ok
    if stdout_open:
        assert json.loads(proc.stdout)["path"] == str(archive)  # the whole of stdout
    if stderr_open:
        assert "stdout is closed" in proc.stderr and "Traceback" not in proc.stderr


def test_no_file_of_the_run_becomes_stdout_or_stderr(tmp_path: Path, config: Path) -> None:
    """With fds 1 and 2 closed at start, the .partial must not become one of them."""
    out = tmp_path / "out"
    command = " ".join(map(repr, argv(config, out)))
    proc = subprocess.Popen(["sh", "-c", f"exec {command} >&- 2>&-"], env=ENV, text=True)
    with killed_at_exit(proc):
        slow_check_tree(proc)
        assert {fd: os.readlink(f"/proc/{proc.pid}/fd/{fd}") for fd in (1, 2)} == {
            1: os.devnull,
            2: os.devnull,
        }
        proc.terminate()
        assert proc.wait(timeout=30) == 130
    assert os.listdir(out) == []


@pytest.mark.parametrize("command", [["checks"], ["checks", "--json"]], ids=" ".join)
def test_a_listing_into_a_closed_pipe_is_quiet(config: Path, command: list[str]) -> None:
    """`snapshot-agent checks --json | head -1`: no traceback, and no error to report."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "snapshot_agent", *command, "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and err == b""


def test_nohup_keeps_the_run_alive_through_a_hangup(tmp_path: Path) -> None:
    """A signal the caller ignores (nohup: SIGHUP) stays ignored; the run completes."""
    out = tmp_path / "out"
    quick = tmp_path / "quick.yaml"
    quick.write_text(
        "checks:\n  commands:\n"
        "    - {id: custom.pause, title: Pause, command: [sleep, '1.5'], timeout_s: 10}\n"
    )
    cmd = argv(quick, out, only="custom.pause")
    proc = subprocess.Popen(
        ["nohup", *cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    with killed_at_exit(proc):
        wait_for_descendant(proc.pid, ["sleep", "1.5"], START_S)
        proc.send_signal(signal.SIGHUP)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert archive_in(out).is_file()


def test_runs_into_one_directory_at_once_never_take_each_others_names(tmp_path: Path) -> None:
    """Ten runs at a time, while another process keeps cleaning the directory of dead runs."""
    out = tmp_path / "out"
    out.mkdir()
    # No state_dir: the node's snapshot lock would turn nine of each ten away.
    config = tmp_path / "agent.yaml"
    config.write_text(f"state_dir: {tmp_path / 'not-installed'}\n")
    cleaner = subprocess.Popen(  # until killed: however long the runs take under load
        [
            sys.executable,
            "-c",
            "from pathlib import Path\n"
            "from snapshot_agent.storage.local import remove_dead_runs\n"
            "while True:\n"
            f"    remove_dead_runs(Path({str(out)!r}))\n",
        ],
        env=ENV,
    )
    try:
        for _ in range(3):
            runs = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "snapshot_agent",
                        "run",
                        "--config",
                        str(config),
                        "-o",
                        str(out),
                        "--only",
                        "cpu.load",
                        "-q",
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=ENV,
                )
                for _ in range(10)
            ]
            for run in runs:
                stdout, stderr = run.communicate(timeout=120)
                assert run.returncode in (0, 1), stderr
                assert Path(stdout.strip()).is_file()
            assert cleaner.poll() is None  # it cleaned all the while
    finally:
        cleaner.kill()
        cleaner.wait()
    assert len([p for p in out.iterdir() if p.name.endswith(".zip")]) == 30
    assert not [p for p in out.iterdir() if not p.name.endswith(".zip")]


def test_a_run_a_moment_old_is_not_taken_for_a_dead_one(tmp_path: Path) -> None:
    """Between its mkdir and its lock file a live run's directory is empty: leave it."""
    fresh = tmp_path / ".snapshot-20261126-120000.run"
    fresh.mkdir(mode=0o700)
    assert local.remove_dead_runs(tmp_path) == []
    assert fresh.is_dir()
    # An empty one left long ago by a run that died removing it is removed.
    old = time.time() - 3600
    os.utime(fresh, (old, old))
    assert local.remove_dead_runs(tmp_path) == [fresh.name]
    # And a run whose name was taken under it (the lock already there) takes another name.
    taken = tmp_path / ".snapshot-20261126-120001.run"
    taken.mkdir(mode=0o700)
    (taken / local.LOCK_NAME).write_text("")
    real_mkdir = os.mkdir

    def mkdir_then_lose_the_race(path: object, mode: int = 0o777) -> None:
        if Path(str(path)) == taken:
            return  # as if our mkdir won, and another run's lock appeared after
        real_mkdir(path, mode)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "mkdir", mkdir_then_lose_the_race)
        assert local.RunDir.claim(taken) is None
