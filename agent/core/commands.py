"""Running external commands safely: argv only, a timeout, output capped to its tail."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psutil

from snapshot_agent.core.tail import TailBuffer

DEFAULT_CAP = 10 * 1024 * 1024
EXIT_GRACE_S = 0.2  # after the command exits, how long its pipes are still drained

#: Commands run with a plain, parsable, non-interactive environment.
QUIET_ENV = {
    "LC_ALL": "C",
    "LANG": "C",
    "TERM": "dumb",
    "PAGER": "cat",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
    "SYSTEMD_LESS": "",
}


@dataclass
class CommandResult:
    """What a command did: its argv, exit code, duration and (tail of) its output."""

    argv: list[str]
    exit_code: int | None  # None when it never started or was killed at its timeout
    duration_ms: int
    stdout: str
    stderr: str
    timed_out: bool = False
    stdout_dropped: int = 0  # bytes dropped from the head because of the cap
    stderr_dropped: int = 0
    error: str = ""  # why it could not start, when it could not

    @property
    def ok(self) -> bool:
        """Started, finished in time and exited 0."""
        return self.exit_code == 0 and not self.timed_out

    def describe(self) -> str:
        """One line for summaries: how the command ended."""
        cmd = " ".join(self.argv)
        if self.error:
            return f"`{cmd}` could not run: {self.error}"
        if self.timed_out:
            return f"`{cmd}` did not finish in time and was killed"
        if self.exit_code is not None and self.exit_code < 0:
            return f"`{cmd}` was killed by signal {-self.exit_code}"
        return f"`{cmd}` exited {self.exit_code}"

    def first_error_line(self, max_chars: int | None = None) -> str:
        """The first non-empty line of stderr, stripped and cut to `max_chars` ('' if none)."""
        line = next((ln.strip() for ln in self.stderr.splitlines() if ln.strip()), "")
        return line[:max_chars]

    def explain(self, max_chars: int | None = None) -> str:
        """describe() plus the first line of stderr: why a command gave nothing usable."""
        err = self.first_error_line(max_chars)
        return self.describe() + (f": {err}" if err else "")

    def record(self) -> dict[str, Any]:
        """What the archive keeps about the command (output goes to its own artifact)."""
        return {
            "argv": self.argv,
            "exit_code": self.exit_code,
            "duration_ms": self.duration_ms,
            "timed_out": self.timed_out,
            "stdout_bytes_dropped": self.stdout_dropped,
            "stderr_bytes_dropped": self.stderr_dropped,
            "error": self.error,
        }


def run_command(
    argv: Sequence[str],
    *,
    timeout_s: float,
    cap: int = DEFAULT_CAP,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> CommandResult:
    """Run `argv` (no shell), kill it and its children after `timeout_s`, keep output tails."""
    argv = [str(a) for a in argv]
    if not argv:
        raise ValueError("empty argv")
    full_env = {**os.environ, **QUIET_ENV, **(env or {})}
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd=cwd,
            close_fds=True,
        )
    except OSError as exc:
        return CommandResult(argv, None, 0, "", "", error=exc.strerror or str(exc))

    out, err = TailBuffer(cap), TailBuffer(cap)
    timed_out = _pump(proc, out, err, deadline=start + timeout_s)
    if timed_out:
        _kill_tree(proc)
    exit_code = None if timed_out else proc.wait()
    return CommandResult(
        argv=argv,
        exit_code=exit_code,
        duration_ms=int((time.monotonic() - start) * 1000),
        stdout=out.getvalue().decode("utf-8", "replace"),
        stderr=err.getvalue().decode("utf-8", "replace"),
        timed_out=timed_out,
        stdout_dropped=out.dropped,
        stderr_dropped=err.dropped,
    )


def _pump(proc: subprocess.Popen[bytes], out: TailBuffer, err: TailBuffer, deadline: float) -> bool:
    """Drain both pipes until EOF and exit, or until the deadline; True when it timed out."""
    assert proc.stdout is not None and proc.stderr is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, out)
    sel.register(proc.stderr, selectors.EVENT_READ, err)
    exited_at: float | None = None
    try:
        while sel.get_map():
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                return True
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > EXIT_GRACE_S:
                break  # it exited; whatever still holds its pipes (a daemon it left) is not it
            for key, _ in sel.select(timeout=min(remaining, 0.1)):
                chunk = os.read(key.fd, 65536)
                if chunk:
                    key.data.write(chunk)
                else:
                    sel.unregister(key.fileobj)
        # Pipes closed; the process may still be running (it closed its stdout).
        remaining = deadline - time.monotonic()
        try:
            proc.wait(timeout=max(remaining, 0))
        except subprocess.TimeoutExpired:
            return True
        return False
    finally:
        sel.close()
        proc.stdout.close()
        proc.stderr.close()


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the command and every process it started; never wait on a stuck one."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        children = []
    for p in [proc, *children]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p.pid, signal.SIGKILL)
    # A process stuck in the kernel (D state) is left to init: never hang on it.
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=1)
