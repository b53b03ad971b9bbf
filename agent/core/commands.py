"""Running external commands safely: argv only, a timeout, output capped to its tail."""

from __future__ import annotations

import contextlib
import functools
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import psutil

from snapshot_agent.core.containment import RUN_ENV, die_with_parent
from snapshot_agent.core.tail import SharedCap, TailBuffer

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
#: Bytes of UTF-8 for one character at most: how much of a line to decode for N characters.
MAX_CHAR_BYTES = 4


def command_env(
    env: Mapping[str, str] | None = None, pass_env: Iterable[str] = ()
) -> dict[str, str]:
    """A command's whole environment: the few inherited names, QUIET_ENV, then the caller's.

    `pass_env` names more of the agent's variables to hand over (a config's list);
    `env` sets values outright and wins over everything but the run's tag.
    """
    full = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
    full.setdefault("PATH", DEFAULT_PATH)
    full.update(QUIET_ENV)
    full.update({name: os.environ[name] for name in pass_env if name in os.environ})
    full.update(env or {})
    # Set in a check's process by the runner: the command, and every process it starts
    # that keeps its environment, is found and killed by it if the agent is killed.
    if RUN_ENV in os.environ:
        full[RUN_ENV] = os.environ[RUN_ENV]
    return full


def _no_output() -> TailBuffer:
    """The tail of a stream that printed nothing (it holds no memory)."""
    return TailBuffer(1)


@dataclass
class CommandResult:
    """What a command did: its argv, exit code, duration and (tail of) its output.

    The output is kept as the bytes the command printed, in the tails of both streams
    (which share one cap); `stdout` and `stderr` decode them on first use only, so a
    check that saves the output without reading it never holds a second copy.
    """

    argv: list[str]
    exit_code: int | None  # None when it never started or was killed at its timeout
    duration_ms: int
    stdout_tail: TailBuffer = field(default_factory=_no_output)
    stderr_tail: TailBuffer = field(default_factory=_no_output)
    timed_out: bool = False
    error: str = ""  # why it could not start, when it could not

    @cached_property
    def stdout(self) -> str:
        """The kept tail of stdout as text (undecodable bytes replaced)."""
        return _decode(self.stdout_tail)

    @cached_property
    def stderr(self) -> str:
        """The kept tail of stderr as text (undecodable bytes replaced)."""
        return _decode(self.stderr_tail)

    @property
    def stdout_total(self) -> int:
        """Bytes the command printed on stdout, kept or not."""
        return self.stdout_tail.total

    @property
    def stderr_total(self) -> int:
        """Bytes the command printed on stderr, kept or not."""
        return self.stderr_tail.total

    @property
    def stdout_dropped(self) -> int:
        """Bytes of stdout dropped from the head because of the cap."""
        return self.stdout_tail.dropped

    @property
    def stderr_dropped(self) -> int:
        """Bytes of stderr dropped from the head because of the cap."""
        return self.stderr_tail.dropped

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
        # Found in the bytes, and only its start decoded: a flood without a newline is
        # one line of the whole cap.
        raw = self.stderr_tail.first_line(_byte_limit(max_chars))
        text = raw.decode("utf-8", "replace")
        return (text.splitlines() or [""])[0].strip()[:max_chars]

    def last_line(self, max_chars: int | None = None) -> str:
        """The last non-empty line of stderr, else of stdout, stripped and cut ('' if none)."""
        limit = _byte_limit(max_chars)
        for tail in (self.stderr_tail, self.stdout_tail):
            if text := tail.last_line(limit).decode("utf-8", "replace").strip()[:max_chars]:
                return text
        return ""

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


def _decode(tail: TailBuffer) -> str:
    """A stream's kept tail as text: decoded from one copy that replaces its blocks."""
    return tail.contiguous().decode("utf-8", "replace")


def _byte_limit(max_chars: int | None) -> int | None:
    """How many bytes can hold `max_chars` characters of UTF-8 (None: no limit)."""
    return None if max_chars is None else MAX_CHAR_BYTES * max_chars


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
    Both streams are read into tails sharing one budget of `cap` bytes (split as
    context.split_cap splits a saved file), so the output held stays within the cap
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

    share = SharedCap(cap)
    out, err = share.tail(), share.tail()
    timed_out = _pump(proc, out, err, deadline=start + timeout_s)
    share.release()  # no more output: the spare blocks go back to the kernel
    if timed_out:
        _kill_tree(proc)
    exit_code = None if timed_out else proc.wait()
    return CommandResult(
        argv=argv,
        exit_code=exit_code,
        duration_ms=int((time.monotonic() - start) * 1000),
        stdout_tail=out,
        stderr_tail=err,
        timed_out=timed_out,
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
