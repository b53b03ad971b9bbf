"""A snapshot in its own process: start it, watch its events, cancel it, collect its outcome.

The runner forks one child per check and sets process-wide signal handlers and
priority, which a threaded or async server must not do inside itself. So a server runs
each snapshot as `snapshot-agent run --json --events-fd N` in a new session (fork+exec
through subprocess, safe from threads), reads progress from the pipe, and cancels by
signalling the session: the agent then stops its checks and removes its partial files.

A presigned upload URL is a secret until it expires: it reaches the child on a pipe
(`--upload-url-file /dev/fd/N`), never on its command line, which every user can read.
A caller that must not leave a snapshot running behind it when it dies (the service,
killed outright) asks for `end_with_caller`: the child then gets SIGTERM when the
caller ends, and cleans up as on any stop.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from snapshot_agent.pipeline.record import SnapshotOptions

#: How long a cancelled snapshot gets to clean up before it is killed outright.
CANCEL_GRACE_S = 10.0
#: The longest upload URL passed on: its line and newline fit in a pipe's buffer (64 KiB),
#: so writing it never waits for the child to read.
MAX_UPLOAD_URL_BYTES = 60 * 1024
#: Run before the agent in the child when it is to end with its caller: PR_SET_PDEATHSIG
#: (1) with SIGTERM, kept across exec; a caller already gone means no snapshot at all.
#: argv: the caller's pid, then the agent's command line.
END_WITH_CALLER = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[1]): sys.exit(70)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def run_argv(
    output: Path | None,
    options: SnapshotOptions,
    config: Path | None,
    events_fd: int,
    upload_url_fd: int | None = None,
    name: str | None = None,
) -> list[str]:
    """The `snapshot-agent run` command line that takes this snapshot.

    `output` None: where the config stores archives (storage.s3, else the current
    directory: a caller that wants storage.local_dir passes it). `upload_url_fd`: an
    inherited descriptor to read the presigned PUT URL from. `name`: the archive's name
    (snapshot-YYYYMMDD-HHMMSS) instead of one from the run's clock.
    """
    argv = [sys.executable, "-m", "snapshot_agent", "run", "--json", "--quiet"]
    if output is not None:
        argv += ["--output", str(output)]
    argv += ["--events-fd", str(events_fd)]
    if upload_url_fd is not None:
        argv += ["--upload-url-file", f"/dev/fd/{upload_url_fd}"]
    if config is not None:
        argv += ["--config", str(config)]
    if not options.redact:
        argv.append("--no-redact")
    argv.append("--include-iggy" if options.include_iggy else "--no-include-iggy")
    if options.only:
        argv += ["--only", ",".join(options.only)]
    if options.skip:
        argv += ["--skip", ",".join(options.skip)]
    if not options.low_priority:
        argv.append("--no-low-priority")
    if name is not None:
        argv += ["--name", name]
    return argv


@dataclass
class Finished:
    """How a snapshot process ended: its exit code, `run --json`'s object, and its stderr."""

    exit_code: int
    outcome: dict[str, Any]
    stderr: str


class SnapshotProcess:
    """One running snapshot, started with `start()`."""

    def __init__(self, proc: subprocess.Popen[str], events: IO[str]) -> None:
        self.proc = proc
        self._events = events
        # A reader thread drains the pipe at once, so a caller that looks at events late
        # (or never) can never block the snapshot on a full pipe.
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._ended = False
        self._reader = threading.Thread(target=self._read, name=f"events-{proc.pid}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        """The agent's pid; also its session and process group id."""
        return self.proc.pid

    @classmethod
    def start(
        cls,
        output: Path | None,
        options: SnapshotOptions | None = None,
        config: Path | None = None,
        env: Mapping[str, str] | None = None,
        *,
        upload_url: str | None = None,
        end_with_caller: bool = False,
        name: str | None = None,
    ) -> SnapshotProcess:
        """Start a snapshot in a new session; returns at once.

        `upload_url`: PUT the archive there (passed on a pipe). `end_with_caller`: SIGTERM
        the snapshot when this process ends; call from a thread that lives as long as the
        process (the kernel ties the signal to the thread that started the child). `name`:
        the archive's name, as run_argv.
        """
        url = _url_pipe(upload_url) if upload_url is not None else None
        read_fd, write_fd = os.pipe()
        try:
            argv = run_argv(output, options or SnapshotOptions(), config, write_fd, url, name)
            if end_with_caller:
                argv = [sys.executable, "-c", END_WITH_CALLER, str(os.getpid()), *argv]
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                pass_fds=(write_fd,) if url is None else (write_fd, url),
                start_new_session=True,
                env=_child_env(os.environ if env is None else env),
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
            if url is not None:
                os.close(url)
        return cls(proc, os.fdopen(read_fd, "r", encoding="utf-8"))

    def events(self, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Each event as it arrives, until the snapshot closes the stream.

        Raises queue.Empty when no event came for `timeout` seconds.
        """
        while not self._ended:
            event = self._queue.get(timeout=timeout)
            if event is None:
                self._ended = True
                return
            yield event

    def _read(self) -> None:
        try:
            for line in self._events:
                with contextlib.suppress(ValueError):
                    self._queue.put(json.loads(line))
        finally:
            self._events.close()
            self._queue.put(None)

    def cancel(self, grace_s: float = CANCEL_GRACE_S) -> None:
        """Stop the snapshot: SIGTERM (it cleans up), then SIGKILL whatever is left."""
        if self.proc.poll() is not None:
            return  # already ended (and reaped: its pid may belong to someone else now)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self._kill_all()

    def wait(self, timeout: float | None = None) -> Finished:
        """Wait for the end; raises subprocess.TimeoutExpired after `timeout`."""
        stdout, stderr = self.proc.communicate(timeout=timeout)
        outcome: dict[str, Any] = {}
        with contextlib.suppress(ValueError):
            outcome = json.loads(stdout.strip().splitlines()[-1]) if stdout.strip() else {}
        return Finished(self.proc.returncode, outcome, stderr)

    def _kill_all(self) -> None:
        """SIGKILL the agent: its checks die with it (PR_SET_PDEATHSIG) and the run's
        guardian, in a group of its own, then kills whatever they started."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


def _url_pipe(url: str) -> int:
    """A pipe's read end holding `url` and a newline, its write end closed."""
    data = url.encode() + b"\n"
    if "\n" in url or "\r" in url or len(data) > MAX_UPLOAD_URL_BYTES:
        raise ValueError("upload URL: one line of at most 60 KiB expected")
    read_fd, write_fd = os.pipe()
    try:
        os.set_blocking(write_fd, False)  # a pipe the kernel made small: an error, not a hang
        if os.write(write_fd, data) != len(data):
            raise OSError(f"upload URL: a pipe took only part of its {len(data)} bytes")
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return read_fd


#: What only the service's own process may use: systemd's notify socket and watchdog
#: (NotifyAccess=main drops a child's messages; it must not send them by mistake).
SERVICE_ONLY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def _child_env(env: Mapping[str, str]) -> dict[str, str]:
    """The snapshot's environment: the caller's, without the service's own variables."""
    return {k: v for k, v in env.items() if k not in SERVICE_ONLY_ENV}
