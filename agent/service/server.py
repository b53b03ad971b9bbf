"""`serve`'s life: start up, listen, tell systemd, stop cleanly.

Start: state_dir usable and held by this service alone, the records store open,
records a dead service left `processing` failed ("agent restarted") and the partial
archives of dead runs removed, the socket (and TCP) listening; only then READY=1. While
up: a WATCHDOG=1 ping from the event loop itself (a wedged loop stops them), retention
every hour besides after each snapshot. On SIGTERM (or SIGINT, SIGHUP, SIGQUIT): stop
accepting connections, STOPPING=1, give a running snapshot its time then cancel it,
close the connections, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
from pathlib import Path

from aiohttp import web

from snapshot_agent.config import LoadedConfig
from snapshot_agent.errors import STOP_SIGNALS, signal_name
from snapshot_agent.service.app import Service, build_app
from snapshot_agent.service.archives import Archives
from snapshot_agent.service.auth import Tokens
from snapshot_agent.service.catalog import Catalog
from snapshot_agent.service.exclusive import open_private
from snapshot_agent.service.listeners import (
    BACKLOG,
    HANDSHAKE_TIMEOUT_S,
    Gate,
    UnixListener,
    bind_unix,
    tcp_endpoint,
    tls_context,
)
from snapshot_agent.service.metrics import Metrics
from snapshot_agent.service.notify import Notifier, child_environment
from snapshot_agent.service.records import RecordStore
from snapshot_agent.service.snapshots import SnapshotRunner
from snapshot_agent.storage.local import remove_dead_runs

SERVE_LOCK = "serve.lock"
#: Headers not complete this long after a connection opened (or after the last
#: response): the connection is closed. A slowloris holds a slot no longer than this.
HEADER_TIMEOUT_S = 15.0
LINGER_S = 2.0  # reading what is left of a refused body before closing
SHUTDOWN_TIMEOUT_S = 5.0  # for requests in flight at a stop
RETENTION_EVERY_S = 3600.0

log = logging.getLogger("snapshot_agent.service")


def serve(loaded: LoadedConfig) -> int:
    """Run the service until a stop signal; the exit code (0)."""
    return asyncio.run(_serve(loaded))


async def _serve(loaded: LoadedConfig) -> int:
    config = loaded.config
    state_dir = Path(config.state_dir)
    held = _hold_state_dir(loaded, state_dir)
    try:
        store = RecordStore.in_state_dir(state_dir)
        try:
            return await _run(loaded, store)
        finally:
            store.close()
    finally:
        os.close(held)


async def _run(loaded: LoadedConfig, store: RecordStore) -> int:
    """Recover, listen, serve until stopped."""
    config = loaded.config
    _check_local_dir(loaded)
    _recover(loaded, store)
    endpoint = tcp_endpoint(loaded)
    context = tls_context(loaded) if endpoint is not None else None
    tokens = Tokens(config.api.tokens)
    notifier = Notifier()
    metrics = Metrics(store)
    archives = Archives(config.storage)
    runner = SnapshotRunner(loaded, store, archives, metrics, notifier)
    env = child_environment()
    catalog = Catalog(loaded.path or Path(os.devnull), env)
    app = build_app(Service(store, runner, archives, metrics, catalog, tokens))
    web_runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        keepalive_timeout=HEADER_TIMEOUT_S,
        lingering_time=LINGER_S,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )
    await web_runner.setup()
    assert web_runner.server is not None
    loop = asyncio.get_running_loop()
    servers: list[asyncio.AbstractServer] = []
    unix = bind_unix(loaded)
    try:
        servers.append(
            await loop.create_unix_server(Gate(web_runner.server), sock=unix.sock, backlog=BACKLOG)
        )
        where = [f"unix:{unix.path}"]
        if endpoint is not None:
            try:
                servers.append(
                    await loop.create_server(
                        Gate(web_runner.server),
                        endpoint.host,
                        endpoint.port,
                        ssl=context,
                        ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S,
                        backlog=BACKLOG,
                        reuse_address=True,
                    )
                )
            except OSError as exc:
                raise loaded.error(
                    ("api", "listen"),
                    f"cannot listen on {endpoint} ({exc.strerror or exc}); is another "
                    "server on that port?",
                ) from None
            where.append(f"https://{endpoint} (mutual TLS)")
            if not tokens:
                log.warning("api.listen is set but api.tokens is empty: TCP clients get 401")
        return await _until_stopped(runner, notifier, servers, web_runner, unix, where)
    finally:
        for server in servers:
            server.close()
        unix.sock.close()
        unix.remove()
        await web_runner.cleanup()


async def _until_stopped(
    runner: SnapshotRunner,
    notifier: Notifier,
    servers: list[asyncio.AbstractServer],
    web_runner: web.AppRunner,
    unix: UnixListener,
    where: list[str],
) -> int:
    """Serve until a stop signal; then stop as the module says."""
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[int] = loop.create_future()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, _set_once, stop, signum)
    tasks = [asyncio.create_task(_retention_loop(runner))]
    if notifier.ping_every_s:
        tasks.append(asyncio.create_task(_watchdog(notifier, notifier.ping_every_s)))
    log.info("listening on %s", " and ".join(where))
    notifier.ready(runner.status_line())
    try:
        signum = await stop
        log.info("stopping (%s)", signal_name(signum))
        notifier.stopping("stopping")
        for server in servers:
            server.close()  # no new connections; those open finish what they asked
        unix.remove()
        await runner.stop()
        await web_runner.shutdown()
    finally:
        for task in tasks:
            task.cancel()
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
    log.info("stopped")
    return 0


def _set_once(stop: asyncio.Future[int], signum: int) -> None:
    if not stop.done():
        stop.set_result(signum)


async def _watchdog(notifier: Notifier, every_s: float) -> None:
    """WATCHDOG=1 from the event loop, every `every_s`."""
    while True:
        notifier.watchdog()
        await asyncio.sleep(every_s)


async def _retention_loop(runner: SnapshotRunner) -> None:
    """Retention now, then every RETENTION_EVERY_S (archives age while no snapshot runs)."""
    while True:
        try:
            await runner.apply_retention()
        except Exception:
            log.exception("retention failed; trying again in %g s", RETENTION_EVERY_S)
        await asyncio.sleep(RETENTION_EVERY_S)


def _recover(loaded: LoadedConfig, store: RecordStore) -> None:
    """What a dead service left: its records failed, its runs' partial files removed."""
    for record in store.recover("agent restarted"):
        log.warning(
            "snapshot %s (%s) was in progress when the agent ended: failed", record.id, record.name
        )
    local_dir = Path(loaded.config.storage.local_dir)  # archives, or the S3 evidence spool
    if local_dir.is_dir():
        try:
            removed = remove_dead_runs(local_dir)
        except OSError as exc:
            log.warning("could not clean up %s (%s)", local_dir, exc.strerror or exc)
            return
        if removed:
            log.info("removed what dead runs left in %s: %s", local_dir, ", ".join(removed))


def _hold_state_dir(loaded: LoadedConfig, state_dir: Path) -> int:
    """Create state_dir if needed and lock it for this service: one service per state_dir.

    Two would each take the other's snapshots for a dead service's. Returns the lock's fd.
    """
    path = state_dir / SERVE_LOCK
    try:
        fd = open_private(path, make_dir=True)
    except OSError as exc:
        raise loaded.error(("state_dir",), _unwritable(state_dir, exc)) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = _read_pid(fd)
        os.close(fd)
        raise loaded.error(
            ("state_dir",),
            f"{state_dir}: another `snapshot-agent serve` uses it{other}; one service per "
            "state_dir (stop that one first)",
        ) from None
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _read_pid(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        return f" (pid {int(os.pread(fd, 32, 0).decode().strip())})"
    return ""


def _check_local_dir(loaded: LoadedConfig) -> None:
    """storage.local_dir, where local archives go, exists (made 0700) and is writable."""
    if loaded.config.storage.s3 is not None:
        return  # only the evidence spool lives there: the run makes it, and says so
    local_dir = Path(loaded.config.storage.local_dir)
    try:
        local_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not os.access(local_dir, os.W_OK | os.X_OK):
            rofs = os.statvfs(local_dir).f_flag & os.ST_RDONLY
            raise OSError(
                errno.EROFS if rofs else errno.EACCES,
                os.strerror(errno.EROFS if rofs else errno.EACCES),
            )
    except OSError as exc:
        raise loaded.error(("storage", "local_dir"), _unwritable(local_dir, exc)) from None


def _unwritable(directory: Path, exc: OSError) -> str:
    """Why a directory the service writes cannot be used, and what to do."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.EROFS:  # systemd's ProtectSystem=strict, most likely
        return (
            f"{directory}: read-only here ({reason}); under systemd add "
            f"ReadWritePaths={directory} with `systemctl edit snapshot-agent`, or keep it "
            "under /var/lib/snapshot-agent"
        )
    return f"{directory}: cannot use it ({reason}); create it, owned by the agent's user"
