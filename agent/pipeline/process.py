"""A snapshot in its own process: start it, watch its events, cancel it, collect its outcome.

The runner forks one child per check and sets process-wide signal handlers and
priority, which a threaded or async server must not do inside itself. So a server runs
each snapshot as `snapshot-agent run --json --events-fd N` in a new session (fork+exec
through subprocess, safe from threads), reads progress from the pipe, and cancels by
signalling the session: the agent then stops its checks and removes its partial files.
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


def run_argv(
    output: Path, options: SnapshotOptions, config: Path | None, events_fd: int
) -> list[str]:
    """The `snapshot-agent run` command line that takes this snapshot."""
    argv = [sys.executable, "-m", "snapshot_agent", "run", "--json", "--quiet"]
    argv += ["--output", str(output), "--events-fd", str(events_fd)]
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
        output: Path,
        options: SnapshotOptions | None = None,
        config: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> SnapshotProcess:
        """Start a snapshot in a new session; returns at once."""
        read_fd, write_fd = os.pipe()
        try:
            proc = subprocess.Popen(
                run_argv(output, options or SnapshotOptions(), config, write_fd),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                pass_fds=(write_fd,),
                start_new_session=True,
                env=dict(env) if env is not None else None,
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
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
