"""Running checks concurrently, each in its own killable child process.

Why a process per check: a check can hang where no Python code can interrupt it
(`statvfs` on a dead NFS mount, `open()` on a FIFO, a wedged command). A thread stuck
in such a syscall can never be cancelled and can even keep the agent from exiting.
A child process in its own process group can always be sent SIGKILL, along with every
command it started, and the runner never waits on it again. So the snapshot completes
on time whatever the checks do.

Each child gets a pipe for its pickled `Result` and a pipe for anything it prints
(kept to a bounded tail); artifacts are written by the child straight into the spool
directory under the cap. The parent is a single-threaded select loop, which is what
makes `fork` safe here. What a check starts is contained (core/containment.py): a
cgroup per check where the agent may make one, subreapers always, so a daemon that
detaches and re-forks still dies with its check; and a guardian process kills the
run's leftovers if the agent itself is killed outright.

Slots come from three pools of `concurrency` each: checks that sample over time, the
config's command checks, and the rest. A hung command can hold up only other commands,
never a built-in check.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import selectors
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from snapshot_agent.config import Config
from snapshot_agent.core.check import Check
from snapshot_agent.core.containment import (
    RUN_ENV,
    Containment,
    die_with_parent,
    join,
    reap_everything,
    resolve_mode,
    set_subreaper,
)
from snapshot_agent.core.context import Context, map_path
from snapshot_agent.core.results import ArtifactInfo, Finding, Result, Severity, Status
from snapshot_agent.core.tail import TailBuffer, truncation_note
from snapshot_agent.errors import STOP_SIGNALS, stop_signals_held

STRAY_OUTPUT_CAP = 64 * 1024  # what a check prints to stdout/stderr (it should not)
MAX_RESULT_BYTES = 32 * 1024 * 1024  # a pickled result larger than this is refused
HEADER = 8  # the result travels as an 8-byte big-endian length, then the pickle
MAX_FINDINGS = 200
MAX_DATA_BYTES = 2 * 1024 * 1024  # larger structured data moves to an artifact
MAX_FD = 65536
REAP_S = 1.0  # how long a finished check kills and reaps what it left before it reports


class Observer(Protocol):
    """Progress callbacks; the terminal display implements this."""

    def started(self, check: Check) -> None: ...

    def finished(self, check: Check, result: Result) -> None: ...

    def tick(self) -> None: ...


@dataclass
class Outcome:
    """A check and what came of it."""

    check: Check
    result: Result


@dataclass
class _Running:
    check: Check
    pid: int
    result_fd: int
    output_fd: int | None
    started: float
    deadline: float
    artifact_dir: Path
    cell: str | None = None  # the check's cgroup leaf, when it has one
    payload: bytearray = field(default_factory=bytearray)
    output: TailBuffer = field(default_factory=lambda: TailBuffer(STRAY_OUTPUT_CAP))
    result_eof: bool = False

    @property
    def complete(self) -> bool:
        """The whole framed result arrived, or the pipe closed: time to collect.

        Not waiting for EOF matters: a check thread stuck in the kernel (statvfs on a
        dead NFS mount) keeps the child, and so its end of the pipe, alive after
        the result was written.
        """
        if self.result_eof:
            return True
        if len(self.payload) < HEADER:
            return False
        size = int.from_bytes(self.payload[:HEADER], "big")
        return size > MAX_RESULT_BYTES or len(self.payload) >= HEADER + size


class Runner:
    """Runs a list of checks with bounded concurrency, per-check timeouts and a deadline."""

    def __init__(
        self,
        config: Config,
        spool: Path,
        thresholds: Callable[[Check], dict[str, Any]],
        observer: Observer | None = None,
        result_filter: Callable[[Check, Result], Result] | None = None,
        containment: str | None = None,
    ) -> None:
        self.config = config
        # auto or subreaper (None: $SNAPSHOT_AGENT_CONTAINMENT); refused here, before a
        # check runs, when it is neither.
        self.containment = resolve_mode(containment)
        self.contained_by = ""  # what contained the last run's checks: cgroup or subreaper
        # Every result passes this before anyone (the observer, the caller) sees it: the
        # pipeline's one exit for what a check says.
        self.result_filter = result_filter or (lambda check, result: result)
        self.spool = spool
        self.thresholds = thresholds
        self.observer = observer
        self.concurrency = config.checks.concurrency
        self.deadline_s = config.checks.deadline_s

    def timeout_for(self, check: Check) -> float:
        """The check's own timeout, or the config's default."""
        return check.timeout_s or self.config.checks.timeout_s

    def run(self, checks: Sequence[Check]) -> list[Outcome]:
        """Run every check; always returns one outcome per check, in the given order."""
        start = time.monotonic()
        deadline = start + self.deadline_s
        # Checks that sample over time start first, so their windows overlap the rest.
        pending = sorted(checks, key=lambda c: c.sampling_s <= 0)
        self._unreaped: list[int] = []
        running: dict[int, _Running] = {}  # by result fd
        results: dict[str, Result] = {}
        sel = selectors.DefaultSelector()
        self._contain = Containment(self.containment)
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])  # only reads it: restored at the end
        try:  # from the first step: a signal during `open` still leaves nothing behind
            self._contain.open()
            self.contained_by = self._contain.mode  # cgroup or subreaper, for logs and tests
            while pending or running:
                now = time.monotonic()
                if now < deadline:
                    self._start_ready(pending, now, deadline, running, sel)
                if now >= deadline:
                    for check in pending:
                        results[check.id] = self._finish_unstarted(check)
                    pending.clear()
                wake = min([r.deadline for r in running.values()], default=now)
                for key, _ in sel.select(timeout=max(0.0, min(wake - now, 0.1))):
                    self._read(key.data, key.fd, sel)
                now = time.monotonic()
                for fd, run in list(running.items()):
                    if run.complete:
                        results[run.check.id] = self._collect(run, sel)
                        del running[fd]
                    elif now >= run.deadline:
                        results[run.check.id] = self._kill(run, sel, overall=now >= deadline)
                        del running[fd]
                self._unreaped = [p for p in self._unreaped if _reap(p, wait_s=0) is None]
                self._contain.sweep(self._check_pids(running))
                if self.observer:
                    self.observer.tick()
        finally:
            # Held first thing, here: a signal that came just before is raised by this
            # very call (or at the entry of any function called first), and the checks
            # must be stopped all the same. Held, a second Ctrl-C cannot cut that short.
            try:
                signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            finally:
                self._stop_all(running, sel, mask)
        return [Outcome(c, results[c.id]) for c in checks]

    def _stop_all(
        self,
        running: dict[int, _Running],
        sel: selectors.BaseSelector,
        mask: set[signal.Signals],
    ) -> None:
        """Ctrl-C, a bug, or the end, with the stop signals held: kill every check and all
        they started, reap, clean; then the signal `mask` the run began with is back."""
        try:
            for run in running.values():
                self._contain.kill(run.pid, run.cell)
                _close(run, sel)
                self._unreaped.append(run.pid)
            running.clear()
            sel.close()
            end = time.monotonic() + 0.3  # a child stuck in the kernel is left behind
            self._unreaped = [
                p for p in self._unreaped if _reap(p, max(0.0, end - time.monotonic())) is None
            ]
            self._contain.close(self._unreaped)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def _check_pids(self, running: dict[int, _Running]) -> set[int]:
        """The agent's children that are checks (running, or ended and not yet reaped)."""
        return {r.pid for r in running.values()} | set(self._unreaped)

    # -- starting -----------------------------------------------------------------

    def _start_ready(
        self,
        pending: list[Check],
        now: float,
        overall_deadline: float,
        running: dict[int, _Running],
        sel: selectors.BaseSelector,
    ) -> None:
        """Start every pending check its pool has a slot for, in order.

        Not only the head of the queue: a full pool of hung commands must not keep a
        built-in check behind it waiting.
        """
        for check in list(pending):
            if self._has_slot(check, running):
                pending.remove(check)
                self._start(check, now, overall_deadline, running, sel)

    def _has_slot(self, check: Check, running: dict[int, _Running]) -> bool:
        """Room for `check` in its pool: each pool gets `concurrency` slots."""
        pool = _pool(check)
        return sum(1 for r in running.values() if _pool(r.check) == pool) < self.concurrency

    def _start(
        self,
        check: Check,
        now: float,
        overall_deadline: float,
        running: dict[int, _Running],
        sel: selectors.BaseSelector,
    ) -> None:
        """Fork the check's child and register it, so that Ctrl-C can never orphan it."""
        deadline = min(now + self.timeout_for(check), overall_deadline)
        artifact_dir = self.spool / check.id
        with contextlib.suppress(OSError):  # full disk: the check still runs, unsaved noted
            artifact_dir.mkdir(parents=True, exist_ok=True)
        cell = self._contain.cell()
        ctx = Context(
            check_id=check.id,
            config=self.config,
            thresholds=self.thresholds(check),
            artifact_dir=artifact_dir,
            artifact_cap=self.config.checks.artifact_cap_bytes,
            deadline=deadline,
        )
        result_r, result_w = os.pipe()
        output_r, output_w = os.pipe()
        # Ctrl-C or SIGTERM between fork and registration would orphan a child that
        # keeps writing into the spool: hold them until the child is in `running`.
        agent, tag = os.getpid(), self._contain.tag
        with stop_signals_held() as old_mask:  # the child starts from the mask before
            pid = os.fork()
            if pid == 0:  # child: never returns
                os.close(result_r)
                os.close(output_r)
                _child_main(check, ctx, result_w, output_w, old_mask, cell, agent, tag)
            with contextlib.suppress(OSError):  # the child does this too; first one wins
                os.setpgid(pid, pid)
            os.close(result_w)
            os.close(output_w)
            os.set_blocking(result_r, False)
            os.set_blocking(output_r, False)
            run = _Running(check, pid, result_r, output_r, now, deadline, artifact_dir, cell)
            running[result_r] = run
            sel.register(result_r, selectors.EVENT_READ, run)
            sel.register(output_r, selectors.EVENT_READ, run)
        if self.observer:
            self.observer.started(check)

    # -- reading ------------------------------------------------------------------

    def _read(self, run: _Running, fd: int, sel: selectors.BaseSelector) -> None:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        if fd == run.result_fd:
            if not chunk:
                run.result_eof = True
                sel.unregister(fd)
            elif not run.complete:
                run.payload += chunk
        elif chunk:
            run.output.write(chunk)
        else:
            sel.unregister(fd)
            os.close(fd)
            run.output_fd = None

    # -- finishing ----------------------------------------------------------------

    def _collect(self, run: _Running, sel: selectors.BaseSelector) -> Result:
        """The result arrived or the pipe closed: decode the result, or explain its death."""
        self._drain_output(run)
        self._contain.kill(run.pid, run.cell)  # anything the check left, wherever it went
        _close(run, sel)
        size = int.from_bytes(run.payload[:HEADER], "big") if len(run.payload) >= HEADER else -1
        result: Result
        if size > MAX_RESULT_BYTES:
            self._unreaped.append(run.pid)
            result = Result(Status.ERROR, "check returned an oversized result (over 32 MiB)")
        elif size < 0 or len(run.payload) < HEADER + size:
            status = _reap(run.pid, wait_s=0.5)  # why it died is worth a short wait
            result = Result(Status.ERROR, f"check process died: {_describe_exit(status)}")
        else:
            self._unreaped.append(run.pid)  # reaped later: never wait on a finished check
            try:
                result = pickle.loads(bytes(run.payload[HEADER : HEADER + size]))
            except Exception as exc:
                result = Result(Status.ERROR, f"check returned an unreadable result: {exc}")
        return self._finalize(run, result)

    def _kill(self, run: _Running, sel: selectors.BaseSelector, *, overall: bool) -> Result:
        """The check ran out of time: SIGKILL it and everything it started, and move on."""
        self._contain.kill(run.pid, run.cell)
        self._drain_output(run)
        self._unreaped.append(run.pid)
        _close(run, sel)
        took = time.monotonic() - run.started
        if overall:
            summary = f"stopped at the snapshot deadline ({self.deadline_s:g} s) after {took:.1f} s"
        else:
            summary = f"did not finish within {self.timeout_for(run.check):g} s and was killed"
        hint = (
            "A check that hangs often points at the node itself: a hung mount, a stuck "
            "command or a saturated disk. Look at the partial evidence, then run the check "
            "alone with `snapshot-agent run --only " + run.check.id + "`."
        )
        result = Result(
            Status.TIMEOUT, summary, [Finding(Severity.FAIL, summary, hint, run.check.id)]
        )
        return self._finalize(run, result)

    def _finish_unstarted(self, check: Check) -> Result:
        result = self.result_filter(
            check,
            Result(
                Status.TIMEOUT,
                f"not started: the snapshot deadline ({self.deadline_s:g} s) was reached first",
            ),
        )
        if self.observer:
            self.observer.finished(check, result)
        return result

    def _finalize(self, run: _Running, result: Result) -> Result:
        result.duration_ms = int((time.monotonic() - run.started) * 1000)
        if run.output.total:
            name = "check-output.txt"
            data = run.output.getvalue()
            if run.output.dropped:  # a flood of prints keeps its tail, and says so
                data = truncation_note(run.output.dropped, len(data)) + data
            with contextlib.suppress(OSError):  # a full disk loses this, not the verdict
                (run.artifact_dir / name).write_bytes(data)
                result.artifacts.append(ArtifactInfo(name, len(data), run.output.total))
        if result.status in (Status.TIMEOUT, Status.ERROR):
            result.artifacts = _scan_artifacts(run.artifact_dir, result.artifacts)
        result = self.result_filter(run.check, result)
        if self.observer:
            self.observer.finished(run.check, result)
        return result

    def _drain_output(self, run: _Running) -> None:
        if run.output_fd is None:
            return
        with contextlib.suppress(BlockingIOError, OSError):
            while chunk := os.read(run.output_fd, 1 << 16):
                run.output.write(chunk)


# -- the child side ---------------------------------------------------------------


def _child_main(
    check: Check,
    ctx: Context,
    result_fd: int,
    output_fd: int,
    mask: set[signal.Signals],
    cell: str | None,
    parent: int,
    tag: str,
) -> None:
    """Run one check in the forked child and write its pickled Result; never returns."""
    code = 0
    try:
        join(cell)  # before anything can fork: all the check starts is born in its cgroup
        die_with_parent(parent)
        # Every command the check starts carries the run's tag: if the agent is killed
        # outright, its guardian finds by it what the commands left (commands.py).
        os.environ[RUN_ENV] = tag
        os.setpgid(0, 0)
        for signum in STOP_SIGNALS:  # the agent's handlers are not the check's
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(output_fd, 1)
        os.dup2(output_fd, 2)
        # Nothing else of the parent's (selector, other checks' pipes) leaks into checks.
        os.closerange(3, result_fd)
        os.closerange(result_fd + 1, MAX_FD)
        # Whatever sys.stdout was in the parent (a terminal, a test's capture), a check's
        # print() now goes into the pipe the parent keeps a tail of.
        sys.stdout = open(1, "w", buffering=1, errors="replace", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, errors="replace", closefd=False)  # noqa: SIM115
        # What a command orphans (`setsid cmd &`, a daemon forking away) stays ours.
        set_subreaper(True)
        result = _run_check(check, ctx)
        _note_killed(result, reap_everything(REAP_S))  # before the verdict counts
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        payload = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        with os.fdopen(result_fd, "wb") as fh:
            fh.write(len(payload).to_bytes(HEADER, "big") + payload)
    except BaseException:
        code = 70
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        os._exit(code)


def _run_check(check: Check, ctx: Context) -> Result:
    """Requirements, then the check; exceptions become `error` with the traceback kept."""
    try:
        reason = check.requires.unmet(lambda p: map_path(ctx.roots, p))
        if reason:
            return Result.skipped(reason)
        result = check.run(ctx)
        if not isinstance(result, Result):
            raise TypeError(f"check returned {type(result).__name__}, not Result")
    except BaseException as exc:  # SystemExit from a check is a bug in the check too
        ctx.artifact("traceback.txt", traceback.format_exc())  # never raises
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        result = Result(
            Status.ERROR,
            f"check crashed: {type(exc).__name__}" + (f": {first}" if first else ""),
            [],
        )
    result.commands = ctx.commands + result.commands
    _bound(result, ctx)
    for problem in ctx.unsaved:
        result.findings.append(
            Finding(
                Severity.INFO,
                f"evidence not saved: {problem}",
                "Free space where the snapshot is written (--output) and run it again.",
            )
        )
    result.artifacts = ctx.artifacts + result.artifacts
    return result


def _note_killed(result: Result, killed: int) -> None:
    """Say that the check left processes running, which were killed when it ended."""
    if killed:
        result.findings.append(
            Finding(
                Severity.INFO,
                f"{killed} process(es) the check left running were killed when it ended",
                "A command that daemonises itself is not a check: run something that "
                "finishes, or give the daemon its own service.",
            )
        )


def _bound(result: Result, ctx: Context) -> None:
    """Keep a result small enough to travel and to read: excess goes to artifacts."""
    if len(result.findings) > MAX_FINDINGS:
        extra = len(result.findings) - MAX_FINDINGS
        ctx.json_artifact("findings-all.json", [f.to_dict() for f in result.findings])
        result.findings = result.findings[:MAX_FINDINGS]
        result.summary += f" ({extra} more findings in findings-all.json)"
    encoded = json.dumps(result.data, default=str)
    if len(encoded) > MAX_DATA_BYTES:
        ctx.artifact("data.json", encoded)
        result.data = {"note": f"data too large to inline ({len(encoded)} bytes); see data.json"}


# -- process helpers --------------------------------------------------------------


def _pool(check: Check) -> str:
    """The pool whose slots `check` takes.

    A sampling check spends its time asleep between two reads; a config command may hang
    until its timeout. Either holding the slots the other checks need would make every
    snapshot wait on them.
    """
    if check.sampling_s > 0:
        return "sampling"
    return "commands" if check.source == "config" else "checks"


def _reap(pid: int, wait_s: float) -> int | None:
    """waitpid without blocking for more than `wait_s`; None when still not gone."""
    end = time.monotonic() + wait_s
    while True:  # WNOHANG in a loop: a child in D state must not block the runner
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return status
        if time.monotonic() >= end:
            return None
        time.sleep(0.005)


def _close(run: _Running, sel: selectors.BaseSelector) -> None:
    for fd in (run.result_fd, run.output_fd):
        if fd is None:
            continue
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(fd)
        with contextlib.suppress(OSError):
            os.close(fd)
    run.output_fd = None


def _describe_exit(status: int | None) -> str:
    if status is None:
        return "it did not exit"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else sig
        hint = " (killed: out of memory?)" if sig == signal.SIGKILL else ""
        return f"killed by signal {name}{hint}"
    return f"exited with code {os.WEXITSTATUS(status)} without a result"


def _scan_artifacts(directory: Path, known: list[ArtifactInfo]) -> list[ArtifactInfo]:
    """List what a killed or crashed check left in its spool (partial evidence)."""
    names = {a.name for a in known}
    found = list(known)
    if directory.is_dir():
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            name = path.relative_to(directory).as_posix()
            if name not in names:
                size = path.stat().st_size
                found.append(ArtifactInfo(name, size, size))
    return found
