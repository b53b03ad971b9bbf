"""The command helper: argv only, timeouts that kill the whole tree, tail-capped output."""

from __future__ import annotations

import random
import re
import secrets
import sys
import time
from pathlib import Path

import psutil
import pytest

from snapshot_agent.core.commands import run_command
from snapshot_agent.core.context import split_cap
from snapshot_agent.core.tail import SharedCap, TailBuffer


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
        # In one piece for decoding: the same bytes, and the tail takes no more.
        assert buf.contiguous() == bytes(seen[-cap:]) and buf.kept == len(seen[-cap:])
        assert buf.views()[0] == bytes(seen[-cap:])
        with pytest.raises(RuntimeError):
            buf.write(b"x")


def test_shared_tails_keep_what_one_file_of_the_cap_keeps() -> None:
    """stdout and stderr share one cap by split_cap's rule, however their output interleaves."""
    rng = random.Random(3)
    for cap in (1, 2, 9, 5000, 70_001):  # 70 001: many blocks of one page
        share = SharedCap(cap)
        tails, seen = (share.tail(), share.tail()), (bytearray(), bytearray())
        for _ in range(150):
            which = rng.randrange(2)
            size = rng.choice([0, 1, cap // 2, cap, cap + 1, rng.randrange(2 * cap + 2)])
            chunk = rng.randbytes(size)
            tails[which].write(chunk)
            seen[which].extend(chunk)
            totals = len(seen[0]), len(seen[1])
            kept = tails[0].kept, tails[1].kept
            assert kept == split_cap(cap, *totals)
            for tail, data in zip(tails, seen, strict=True):
                assert tail.getvalue() == bytes(data[len(data) - tail.kept :])
                assert tail.total == len(data)
            # The saved file takes a marker off the cap: the tails still hold its split.
            for marker in (15, 16):
                if marker < cap:
                    assert split_cap(cap - marker, *kept) == split_cap(cap - marker, *totals)


def _reference_lines(data: bytes, limit: int) -> tuple[bytes, bytes]:
    """First and last non-blank lines of `data`, from their first non-space, cut to `limit`."""
    first = re.search(rb"\S[^\n\r]*", data)
    head = data[first.start() : min(first.end(), first.start() + limit)] if first else b""
    end = len(data.rstrip())
    start = max(data.rfind(b"\n", 0, end), data.rfind(b"\r", 0, end)) + 1
    start += len(data[start:end]) - len(data[start:end].lstrip())
    return head, data[start : min(end, start + limit)]


def test_tail_lines_are_found_across_blocks() -> None:
    """first_line/last_line give what a scan of the whole tail would, for any blocks."""
    rng = random.Random(5)
    alphabet = [b"a", b"\xff", b" ", b"\t", b"\n", b"\r"]
    for _ in range(40):
        cap = rng.choice([10, 4096, 20_000])
        buf, seen = TailBuffer(cap), bytearray()
        for _ in range(rng.randrange(1, 30)):
            chunk = rng.choice(alphabet) * rng.choice([1, 3, 5000])
            buf.write(chunk)
            seen += chunk
        kept = bytes(seen[len(seen) - buf.kept :])
        for limit in (1, 7, 10**9):
            assert (buf.first_line(limit), buf.last_line(limit)) == _reference_lines(kept, limit)


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
