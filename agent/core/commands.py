"""Running external commands safely: argv only, a timeout, output capped to its tail."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import psutil

from snapshot_agent.core.containment import die_with_parent
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
#: All a command inherits from the agent's own environment: never its secrets (an
#: AWS_SECRET_ACCESS_KEY, a token in the unit's Environment=) unless a caller names them.
INHERITED_ENV = ("PATH", "HOME", "TZ")
#: PATH when the agent has none (systemd's default for services).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
READ_CHUNK = 256 * 1024  # one pipe read; a flood is drained in few, large reads
#: Whitespace then the rest of the line: the first non-empty line of a byte string.
_FIRST_LINE = re.compile(rb"[^\s][^\n\r]*")


def command_env(
    env: Mapping[str, str] | None = None, pass_env: Iterable[str] = ()
) -> dict[str, str]:
    """A command's whole environment: the few inherited names, QUIET_ENV, then the caller's.

    `pass_env` names more of the agent's variables to hand over (a config's list);
    `env` sets values outright and wins over everything.
    """
    full = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
    full.setdefault("PATH", DEFAULT_PATH)
    full.update(QUIET_ENV)
    full.update({name: os.environ[name] for name in pass_env if name in os.environ})
    full.update(env or {})
    return full


@dataclass
class CommandResult:
    """What a command did: its argv, exit code, duration and (tail of) its output.

    The output is kept as the bytes the command printed (at most the cap of each
    stream); `stdout` and `stderr` decode them on first use only, so a check that
    saves the output without reading it never holds a second copy.
    """

    argv: list[str]
    exit_code: int | None  # None when it never started or was killed at its timeout
    duration_ms: int
    raw_stdout: bytes = b""
    raw_stderr: bytes = b""
    timed_out: bool = False
    stdout_dropped: int = 0  # bytes dropped from the head because of the cap
    stderr_dropped: int = 0
    error: str = ""  # why it could not start, when it could not

    @cached_property
    def stdout(self) -> str:
        """The kept tail of stdout as text (undecodable bytes replaced)."""
        return self.raw_stdout.decode("utf-8", "replace")

    @cached_property
    def stderr(self) -> str:
        """The kept tail of stderr as text (undecodable bytes replaced)."""
        return self.raw_stderr.decode("utf-8", "replace")

    @property
    def stdout_total(self) -> int:
        """Bytes the command printed on stdout, kept or not."""
        return len(self.raw_stdout) + self.stdout_dropped

    @property
    def stderr_total(self) -> int:
        """Bytes the command printed on stderr, kept or not."""
        return len(self.raw_stderr) + self.stderr_dropped

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
        # Found in the bytes: splitting megabytes of stderr into lines costs far more.
        match = _FIRST_LINE.search(self.raw_stderr)
        if not match:
            return ""
        end = match.end() if max_chars is None else min(match.end(), match.start() + 4 * max_chars)
        text = self.raw_stderr[match.start() : end].decode("utf-8", "replace")
        return (text.splitlines() or [""])[0].strip()[:max_chars]

    def last_line(self, max_chars: int | None = None) -> str:
        """The last non-empty line of stderr, else of stdout, stripped and cut ('' if none)."""
        return _last_line(self.raw_stderr, max_chars) or _last_line(self.raw_stdout, max_chars)

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
            "stdout_bytes": self.stdout_total,
            "stderr_bytes": self.stderr_total,
            "stdout_bytes_dropped": self.stdout_dropped,
            "stderr_bytes_dropped": self.stderr_dropped,
            "error": self.error,
        }


def _last_line(data: bytes, max_chars: int | None) -> str:
    """The last non-empty line of `data`, decoded, stripped, cut to `max_chars`."""
    end = len(data.rstrip())  # one bounded copy; a backwards scan in Python is slower
    if not end:
        return ""
    start = max(data.rfind(b"\n", 0, end), data.rfind(b"\r", 0, end)) + 1
    return data[start:end].decode("utf-8", "replace").strip()[:max_chars]


def run_command(
    argv: Sequence[str],
    *,
    timeout_s: float,
    cap: int = DEFAULT_CAP,
    env: Mapping[str, str] | None = None,
    pass_env: Iterable[str] = (),
    cwd: str | None = None,
) -> CommandResult:
    """Run `argv` (no shell), kill it and its children after `timeout_s`, keep output tails.

    The command gets command_env(env, pass_env), never the agent's whole environment.
    Each stream is read into a ring of `cap` bytes, so memory stays about twice the cap
    whatever the command prints.
    """
    argv = [str(a) for a in argv]
    if not argv:
        raise ValueError("empty argv")
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=command_env(env, pass_env),
            cwd=cwd,
            close_fds=True,
            # The check that runs it is single-threaded, so a preexec hook is safe here.
            preexec_fn=functools.partial(die_with_parent, os.getpid()),
        )
    except OSError as exc:
        return CommandResult(argv, None, 0, error=exc.strerror or str(exc))

    out, err = TailBuffer(cap), TailBuffer(cap)
    timed_out = _pump(proc, out, err, deadline=start + timeout_s)
    if timed_out:
        _kill_tree(proc)
    exit_code = None if timed_out else proc.wait()
    raw_out, raw_err = out.take(), err.take()
    return CommandResult(
        argv=argv,
        exit_code=exit_code,
        duration_ms=int((time.monotonic() - start) * 1000),
        raw_stdout=raw_out,
        raw_stderr=raw_err,
        timed_out=timed_out,
        stdout_dropped=out.total - len(raw_out),
        stderr_dropped=err.total - len(raw_err),
    )


def _pump(proc: subprocess.Popen[bytes], out: TailBuffer, err: TailBuffer, deadline: float) -> bool:
    """Drain both pipes until EOF and exit, or until the deadline; True when it timed out."""
    assert proc.stdout is not None and proc.stderr is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, out)
    sel.register(proc.stderr, selectors.EVENT_READ, err)
    exited_at: float | None = None
    scratch = bytearray(READ_CHUNK)
    view = memoryview(scratch)
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
                # Into one reused buffer: a flood allocates nothing per read.
                got = os.readv(key.fd, [scratch])
                if got:
                    key.data.write(view[:got])
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
