"""One snapshot at a time, each in its own process: start it, follow it, record its end.

A create makes the `processing` record first (the store refuses a second one, across
processes) and then starts `snapshot-agent run` through SnapshotProcess: a server must
not fork the runner from inside itself. The run's events move the status line and the
metrics; its end completes or fails the record, and retention runs after it. A CLI `run`
holding the node's snapshot lock turns a create away too.

The run is tied to the service (`end_with_caller`): a service killed outright takes its
snapshot down with it (SIGTERM: the run removes its partial archive), so a restart never
finds a run going on without a record. On a stop, the running snapshot gets the time its
checks are allowed (checks.deadline_s, at most 60 s) to finish, then is cancelled and
recorded failed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snapshot_agent.config import LoadedConfig
from snapshot_agent.errors import AgentError, signal_name
from snapshot_agent.pipeline.process import Finished, SnapshotProcess
from snapshot_agent.pipeline.record import SnapshotOptions, SnapshotStatus
from snapshot_agent.service import retention
from snapshot_agent.service.archives import Archives
from snapshot_agent.service.exclusive import Busy, SnapshotLock
from snapshot_agent.service.metrics import Metrics
from snapshot_agent.service.notify import Notifier, child_environment
from snapshot_agent.service.records import Completion, Record, RecordStore

STOP_REASON = "agent stopped"
#: After a cancel, how long the run's end may take to be noticed before the record is
#: failed without it (a check's orphan holding the event pipe open, say).
AFTER_CANCEL_S = 5.0
#: The most a stop gives a running snapshot before cancelling it, whatever
#: checks.deadline_s says: with the cancel's grace (10 s) and AFTER_CANCEL_S, a stop ends
#: inside the unit's TimeoutStopSec=90s, so the record is failed by this process rather
#: than by the next start after a SIGKILL.
MAX_STOP_WAIT_S = 60.0
MAX_REASON_CHARS = 500
#: Recording a failed snapshot, when the store is busy: tries, and the pause between.
FAIL_TRIES = 5
FAIL_RETRY_S = 2.0

log = logging.getLogger(__name__)


class Unavailable(AgentError):
    """The service cannot take a snapshot now (stopping, or the process would not start)."""


@dataclass
class Running:
    """The snapshot in progress: its record, its process and how far it got."""

    record: Record
    process: SnapshotProcess
    started: float  # time.monotonic() of the request
    name: str
    checks: int = 0
    done: int = 0


class SnapshotRunner:
    """Takes the node's snapshots, one at a time, and keeps their records."""

    def __init__(
        self,
        loaded: LoadedConfig,
        store: RecordStore,
        archives: Archives,
        metrics: Metrics,
        notifier: Notifier,
    ) -> None:
        config = loaded.config
        self.node = config.node
        self.store = store
        self.archives = archives
        self.metrics = metrics
        self.notifier = notifier
        self.config_path = loaded.path or Path(os.devnull)  # never the child's own default
        # Local archives go to storage.local_dir (run's default is the current directory).
        self.output = None if config.storage.s3 is not None else Path(config.storage.local_dir)
        self.lock = SnapshotLock(Path(config.state_dir))
        self.policy = retention.policy(config.retention)
        self.stop_wait_s = min(config.checks.deadline_s, MAX_STOP_WAIT_S)
        self._running: Running | None = None
        self._task: asyncio.Task[None] | None = None
        self._starting: set[asyncio.Future[Record]] = set()
        self._stopping = False
        self._stop_reason: str | None = None
        self._retention_lock = threading.Lock()
        # Two threads that follow the run (its output, its events) for as long as it runs.
        self._watchers = ThreadPoolExecutor(2, thread_name_prefix="snapshot")

    @property
    def running(self) -> Record | None:
        """The record of the snapshot in progress, if any."""
        return self._running.record if self._running else None

    def status_line(self) -> str:
        """`idle`, or which snapshot runs and how far it got (for systemctl status)."""
        run = self._running
        if run is None:
            return "stopping" if self._stopping else "idle"
        progress = f" ({run.done}/{run.checks} checks)" if run.checks else ""
        return f"snapshot {run.record.id} {run.name} running{progress}"

    async def create(self, options: SnapshotOptions) -> Record:
        """Start a snapshot; its `processing` record. Busy while one is in progress."""
        if self._stopping:
            raise Unavailable("the agent is stopping; try again once it has restarted")
        # Its own task: a client that hangs up must not leave a record without a run.
        starting = asyncio.ensure_future(self._begin(options))
        self._starting.add(starting)
        starting.add_done_callback(self._starting.discard)
        return await asyncio.shield(starting)

    async def _begin(self, options: SnapshotOptions) -> Record:
        """Make the record, then start its process (from this thread: it outlives the run)."""
        holder = await asyncio.to_thread(self.lock.holder)
        if holder is not None and self._running is None:
            raise Busy(
                f"a snapshot started outside the service is in progress ({holder.describe()}); "
                "one snapshot at a time per node, try again when it ends",
                holder=holder,
            )
        record = await asyncio.to_thread(self.store.create, options, self.node)
        try:
            process = SnapshotProcess.start(
                self.output,
                options,
                self.config_path,
                child_environment(),
                end_with_caller=True,
                name=record.name,
            )
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            reason = f"could not start the snapshot process ({exc})"
            await asyncio.to_thread(self.store.fail, record.id, reason)
            raise Unavailable(f"snapshot {record.id}: {reason}") from None
        run = Running(record, process, time.monotonic(), record.name)
        self._running = run
        self._task = asyncio.create_task(self._follow(run))
        log.info("snapshot %s started (%s, pid %s)", record.id, record.name, process.pid)
        self.notifier.status(self.status_line())
        return record

    async def _follow(self, run: Running) -> None:
        """Watch the run to its end, record the end, then apply retention."""
        loop = asyncio.get_running_loop()

        def on_event(event: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(self._on_event, run, event)

        record = run.record
        try:
            finished, _ = await asyncio.gather(
                loop.run_in_executor(self._watchers, run.process.wait),  # drains its output
                loop.run_in_executor(self._watchers, _drain, run.process, on_event),
            )
            record = await self.archives.run(self._finish, run, finished)
        except Exception as exc:  # a bug, or the store failing: never leave it processing
            log.exception("snapshot %s: following it failed", run.record.id)
            record = await self._fail_retried(run, f"the agent lost track of it ({exc})")
        finally:
            self._running = None
            self.notifier.status(self.status_line())
        self.metrics.ended(record, time.monotonic() - run.started)
        try:
            await self.apply_retention()
        except Exception:  # the store failing: the hourly pass tries again
            log.exception("retention after snapshot %s failed", record.id)

    async def _fail_retried(self, run: Running, reason: str) -> Record:
        """Record the run failed, trying again while the store is busy (a record left
        processing would refuse every create until the next restart)."""
        for attempt in range(FAIL_TRIES):
            try:
                return await asyncio.to_thread(self._fail, run, reason)
            except Exception:
                log.exception("snapshot %s: recording its failure failed", run.record.id)
                if attempt + 1 < FAIL_TRIES:
                    await asyncio.sleep(FAIL_RETRY_S)
        return run.record  # the next start's recovery marks it failed

    def _on_event(self, run: Running, event: dict[str, Any]) -> None:
        """Progress from the run (in the event loop)."""
        kind = event.get("event")
        if kind == "snapshot_started":
            run.checks = _count(event.get("checks"))
            run.name = str(event.get("name") or run.name)
        elif kind == "check_finished":
            run.done += 1
            if event.get("status") == "timeout":
                self.metrics.timed_out(str(event.get("id")))
        else:
            return
        self.notifier.status(self.status_line())

    def _finish(self, run: Running, finished: Finished) -> Record:
        """Complete or fail the record as the run ended (in a worker thread)."""
        if finished.exit_code in (0, 1):  # 1: a check failed; the snapshot is made
            try:
                completion = Completion.from_outline(finished.outcome)
            except ValueError as exc:
                return self._fail(run, str(exc))
            record = self.store.complete(run.record.id, completion)
            if record is not None:
                log.info(
                    "snapshot %s completed: %s, %s bytes, verdict %s",
                    record.id,
                    completion.location.uri,
                    completion.location.size_bytes,
                    completion.summary.verdict,
                )
                return record
            # Someone else ended the record meanwhile: an archive nobody names must go.
            orphan = dataclasses.replace(run.record, location=completion.location)
            self.archives.remove(orphan)
            return self.store.get(run.record.id) or run.record
        return self._fail(run, self._stop_reason or _reason(finished))

    def _fail(self, run: Running, reason: str) -> Record:
        """Record the run failed for `reason`; the record as it stands after."""
        log.warning("snapshot %s failed: %s", run.record.id, reason)
        return (
            self.store.fail(run.record.id, reason)
            or self.store.get(run.record.id)
            or dataclasses.replace(run.record, status=SnapshotStatus.FAILED, error=reason)
        )

    async def stop(self) -> None:
        """Let the running snapshot finish within stop_wait_s, else cancel it; new ones refused."""
        self._stopping = True
        if self._starting:
            await asyncio.gather(*self._starting, return_exceptions=True)
        task, run = self._task, self._running
        if task is None or task.done() or run is None:
            return
        log.info(
            "stopping: snapshot %s may take %g s more to finish", run.record.id, self.stop_wait_s
        )
        self.notifier.status(f"stopping: waiting for snapshot {run.record.id} {run.name}")
        with_time = await asyncio.wait({task}, timeout=self.stop_wait_s)
        if task in with_time[0]:
            return
        self._stop_reason = STOP_REASON
        log.warning("stopping: cancelling snapshot %s", run.record.id)
        await asyncio.to_thread(run.process.cancel)
        done, _ = await asyncio.wait({task}, timeout=AFTER_CANCEL_S)
        if not done:
            await asyncio.to_thread(self._fail, run, STOP_REASON)

    async def apply_retention(self) -> list[Record]:
        """Let go of what the retention policy no longer keeps; those records."""
        return await self.archives.run(self._retention)

    def _retention(self) -> list[Record]:
        if self.policy.max_count is None and self.policy.max_age_days is None:
            return []  # keeps everything: no need to read every record
        with self._retention_lock:
            deleted = retention.apply(self.store, self.policy, self.archives.remove)
        for record in deleted:
            log.info("retention: removed snapshot %s (%s)", record.id, record.name)
        return deleted


def _drain(process: SnapshotProcess, on_event: Callable[[dict[str, Any]], None]) -> None:
    """Hand each event on until the run closes the stream (in a worker thread)."""
    for event in process.events():
        on_event(event)


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _reason(finished: Finished) -> str:
    """Why a run made no snapshot, in one line: its own words when it said any."""
    error = finished.outcome.get("error")
    if isinstance(error, str) and error.strip():
        return _one_line(error)
    lines = [line for line in finished.stderr.splitlines() if line.strip()]
    if lines:
        return _one_line(lines[-1].removeprefix("snapshot-agent: "))
    if finished.exit_code < 0:
        return f"the snapshot process was killed by {signal_name(-finished.exit_code)}"
    return f"the snapshot process ended with exit code {finished.exit_code}"


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_REASON_CHARS else flat[: MAX_REASON_CHARS - 1] + "…"
