"""The command helper: argv only, timeouts that kill the whole tree, tail-capped output."""

from __future__ import annotations

import random
import secrets
import sys
import time
from pathlib import Path

import psutil

from snapshot_agent.core.commands import run_command
from snapshot_agent.core.tail import TailBuffer


def test_records_argv_exit_code_and_output() -> None:
    res = run_command(
        [
            sys.executable,
            "-c",
            "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)",
        ],
        timeout_s=10,
    )
    assert res.argv[0] == sys.executable
    assert res.exit_code == 3 and not res.ok and not res.timed_out
    assert res.stdout == "out\n" and res.stderr == "err\n"
    assert res.duration_ms >= 0
    assert res.record()["exit_code"] == 3


def test_no_shell_is_involved() -> None:
    res = run_command(["echo", "$HOME; rm -rf /"], timeout_s=5)
    assert res.stdout == "$HOME; rm -rf /\n"


def test_missing_binary_is_an_error_not_an_exception() -> None:
    res = run_command(["definitely-not-a-command-xyz"], timeout_s=5)
    assert res.exit_code is None and res.error
    assert "could not run" in res.describe()


def test_timeout_kills_the_command_and_its_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = (
        "import subprocess, time\n"
        f"p = subprocess.Popen(['sleep', '600']); open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(600)\n"
    )
    start = time.monotonic()
    res = run_command([sys.executable, "-c", script], timeout_s=1.5)
    assert time.monotonic() - start < 4
    assert res.timed_out and res.exit_code is None
    grandchild = int(pidfile.read_text())
    end = time.monotonic() + 5
    while psutil.pid_exists(grandchild):
        if psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE:
            break
        assert time.monotonic() < end, "grandchild survived"
        time.sleep(0.05)


def test_timeout_keeps_partial_output() -> None:
    res = run_command(
        [sys.executable, "-u", "-c", "print('started'); import time; time.sleep(600)"], timeout_s=1
    )
    assert res.timed_out and "started" in res.stdout


def test_output_is_capped_keeping_the_tail() -> None:
    res = run_command(
        [sys.executable, "-c", "print('x' * 1_000_000); print('LAST')"], timeout_s=10, cap=1000
    )
    assert res.stdout.endswith("LAST\n")
    assert len(res.stdout) == 1000
    assert res.stdout_dropped == 1_000_006 - 1000


def test_tail_buffer_is_a_ring_that_never_outgrows_the_cap() -> None:
    buf = TailBuffer(10)
    for i in range(1000):
        buf.write(f"{i:04d}".encode())
        assert buf.kept <= 10
    assert buf.getvalue() == b"9709980999"
    assert buf.total == 4000 and buf.dropped == 3990


def test_tail_buffer_keeps_exactly_the_last_bytes_for_any_chunking() -> None:
    rng = random.Random(9)
    for cap in (1, 7, 64):
        buf, seen = TailBuffer(cap), bytearray()
        for _ in range(300):
            chunk = rng.randbytes(
                rng.choice([0, 1, cap - 1, cap, cap + 1, rng.randrange(3 * cap + 1)])
            )
            buf.write(chunk)
            seen += chunk
            assert buf.getvalue() == bytes(seen[-cap:])
            assert buf.total == len(seen) and buf.dropped == len(seen) - buf.kept
        assert buf.take() == bytes(seen[-cap:]) and buf.kept == 0


def test_error_lines_are_found_without_splitting_the_whole_output() -> None:
    script = (
        "import sys\n"
        "sys.stderr.write('\\n' * 300000 + '  first problem  \\nmiddle\\n' + 'x' * 2_000_000"
        " + '\\n  last words \\n\\n')\n"
        "sys.exit(2)"
    )
    res = run_command([sys.executable, "-c", script], timeout_s=10)
    assert res.first_error_line() == "first problem"
    assert res.first_error_line(5) == "first"
    assert res.last_line() == "last words" and res.last_line(4) == "last"
    assert res.explain(200).endswith("exited 2: first problem")
    quiet = run_command(["sh", "-c", "echo; echo '  only stdout  '; exit 1"], timeout_s=10)
    assert quiet.first_error_line() == "" and quiet.last_line() == "only stdout"


def test_a_daemon_holding_the_pipes_does_not_stretch_the_command() -> None:
    """The command exits at once; the process it left behind keeps stdout open."""
    daemon = ["sleep", f"603.{secrets.randbelow(10**9):09d}"]  # no other process has it
    start = time.monotonic()
    res = run_command(["sh", "-c", f"{' '.join(daemon)} & echo started; exit 4"], timeout_s=5)
    try:
        assert time.monotonic() - start < 2
        assert res.exit_code == 4 and not res.timed_out and res.stdout == "started\n"
    finally:
        for p in psutil.process_iter(["cmdline"]):
            if p.info["cmdline"] == daemon:
                p.kill()
