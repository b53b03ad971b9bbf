"""One snapshot at a time per node, between real processes: refused with the holder's pid,
waited for when asked, freed when the holder is killed, and no guard where none is possible."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from snapshot_agent.service.exclusive import Busy, Holder, Lease, SnapshotLock

T = "2026-06-01T10:30:00Z"
HOLD = """
import sys
from pathlib import Path
from snapshot_agent.service.exclusive import SnapshotLock

with SnapshotLock(Path(sys.argv[1])).acquire() as lease:
    print("held" if lease.path else lease.note, flush=True)
    sys.stdin.read()  # until the test closes stdin
"""

TRY = """
import sys
from pathlib import Path
from snapshot_agent.service.exclusive import Busy, SnapshotLock

try:
    with SnapshotLock(Path(sys.argv[1])).acquire(hint="; pass --wait SECONDS to wait for it"):
        print("acquired")
except Busy as exc:
    print(exc)
    sys.exit(2)
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A process holding the lock of tmp_path/state until its stdin closes."""
    (tmp_path / "state").mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / "state")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "held\n", proc.communicate()[1]
    yield proc
    proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        pipe.close()  # type: ignore[union-attr]


def lease_started(lease: Lease) -> str | None:
    """The start time the holder wrote into the lock file."""
    assert lease.path is not None
    return Holder.parse(lease.path.read_bytes()).started_at


def release(proc: subprocess.Popen[str]) -> None:
    """Let the holder go: it leaves its block and exits."""
    assert proc.stdin is not None
    proc.stdin.close()


def test_a_second_process_is_refused_naming_the_holder(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    second = subprocess.run(
        [sys.executable, "-c", TRY, str(tmp_path / "state")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 2, second.stderr
    message = second.stdout.strip()
    assert message.startswith(
        f"another snapshot is in progress on this node (pid {holder.pid}, started 20"
    )
    assert message.endswith("Z); pass --wait SECONDS to wait for it")

    lock = SnapshotLock(tmp_path / "state")
    seen = lock.holder()
    assert seen is not None and seen.pid == holder.pid
    with pytest.raises(Busy) as refused, lock.acquire():
        pass
    assert refused.value.holder == seen


def test_a_waiting_acquire_gets_the_lock_once_the_holder_ends(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    lock = SnapshotLock(tmp_path / "state")
    timer = threading.Timer(0.5, release, args=(holder,))
    started = time.monotonic()
    timer.start()
    try:
        with lock.acquire(wait_s=30) as lease:
            waited = time.monotonic() - started
            assert lease.path == tmp_path / "state" / "snapshot.lock"
            assert lock.holder() == Holder(os.getpid(), lease_started(lease))
    finally:
        timer.cancel()
    assert 0.4 < waited < 10
    assert lock.holder() is None
    assert lease.path.read_bytes() == b""  # no stale holder left behind


def test_a_wait_that_runs_out_is_refused_saying_so(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    started = time.monotonic()
    with (
        pytest.raises(Busy, match=rf"pid {holder.pid}.*still running after 0.3 s of waiting"),
        SnapshotLock(tmp_path / "state").acquire(wait_s=0.3),
    ):
        pass
    assert 0.3 <= time.monotonic() - started < 5


def test_the_lock_is_free_once_its_holder_is_killed(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    lock = SnapshotLock(tmp_path / "state")
    assert lock.holder() is None
    started = time.monotonic()
    with lock.acquire() as lease:
        assert lease.path is not None
    assert time.monotonic() - started < 1


LOOK = """
import sys
from pathlib import Path
from snapshot_agent.service.exclusive import SnapshotLock

lock = SnapshotLock(Path(sys.argv[1]))
print("looking", flush=True)
while True:
    lock.holder()
"""


def test_looking_at_the_holder_never_turns_an_acquirer_away(tmp_path: Path) -> None:
    lock = SnapshotLock(tmp_path)
    with lock.acquire():
        pass  # the file exists: the looker looks from its first loop
    looker = subprocess.Popen(
        [sys.executable, "-c", LOOK, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert looker.stdout is not None and looker.stdout.readline() == "looking\n"
        end = time.monotonic() + 0.5  # thousands of tries, many of them during a look
        while time.monotonic() < end:
            with lock.acquire():
                pass
    finally:
        looker.kill()
        looker.communicate()


def test_the_lock_file_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        with SnapshotLock(tmp_path).acquire() as lease:
            assert lease.path is not None
            assert lease.path.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_without_a_state_dir_the_run_takes_no_lock_and_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    for state in (tmp_path / "var/lib/snapshot-agent", tmp_path / "file" / "state"):
        ran = False
        with SnapshotLock(state).acquire() as lease:
            ran = True
        assert ran and lease == Lease(None, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_lock_that_cannot_be_used_leaves_the_run_unguarded_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "snapshot.lock").symlink_to(tmp_path / "elsewhere")  # refused for root too
    ran = False
    with SnapshotLock(tmp_path).acquire() as lease:
        ran = True
    assert ran and lease.path is None and lease.note is not None
    assert lease.note.startswith(f"no snapshot lock: cannot use {tmp_path / 'snapshot.lock'} (")
    assert lease.note.endswith("a concurrent snapshot on this node is not detected")
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize(
    ("text", "described"),
    [
        (f'{{"pid": 42, "started_at": "{T}"}}'.encode(), f"pid 42, started {T}"),
        (b'{"pid": true, "started_at": "\\u001b[31m"}', "a process that did not say which"),
        (b"", "a process that did not say which"),
        (b"[1, 2]", "a process that did not say which"),
        (b'{"pid": 7}', "pid 7"),
    ],
)
def test_what_a_holder_wrote_is_described_safely(text: bytes, described: str) -> None:
    assert Holder.parse(text).describe() == described


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give files away")
def test_root_leaves_the_lock_file_to_the_state_dirs_owner(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 65534, 65534)  # the service's user, say
    with SnapshotLock(state).acquire() as lease:  # an SRE's `sudo snapshot-agent run`
        assert lease.path is not None
        st = lease.path.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (65534, 65534, 0o600)


@pytest.mark.parametrize("wait_s", [-1.0, float("nan"), float("inf"), 86401.0])
def test_a_wait_that_could_be_forever_is_refused(tmp_path: Path, wait_s: float) -> None:
    with (
        pytest.raises(ValueError, match="must be from 0 to 86400 seconds"),
        SnapshotLock(tmp_path).acquire(wait_s),
    ):
        pass
