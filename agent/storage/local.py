"""The local sink: `<dir>/<name>.zip.partial` while written, renamed when complete.

Each run also owns a hidden working directory, `<dir>/.<name>.run`, for its raw
evidence. Creating it reserves the name (so a `.partial` always belongs to the run whose
directory bears its name), and the run keeps a lock file in it locked (flock) for as
long as its process lives. A run killed outright (SIGKILL, the OOM killer, a power cut)
cannot clean up after itself, so `open()` first removes the directory and `.partial` of
every dead run: a lock nobody holds. A held lock is a live run's, and a directory
without our lock file is not ours; neither is touched.

Archives hold dmesg and node configs, so everything is private whatever the umask: the
archive 0600 (0640 when given to a group), the working directory 0700.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import os
import re
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from snapshot_agent.errors import UsageError, stop_signals_held
from snapshot_agent.pipeline.record import ArchiveLocation

MAX_SAME_NAME = 99  # snapshot-…-2 … -99 when several start in the same second
LOCK_NAME = "snapshot-agent.lock"
#: An empty working directory younger than this may be a live run between its mkdir and
#: its lock file: never removed.
FRESH_S = 10.0
#: What an archive's name ends with: a ZIP, or a ZIP encrypted to recipients' keys.
ARCHIVE_SUFFIXES = (".zip", ".zip.enc")
RUN_DIR = re.compile(r"\.(snapshot-\d{8}-\d{6}(?:-\d+)?)\.run")
ARCHIVE_MODE = 0o600
GROUP_ARCHIVE_MODE = 0o640
DIR_MODE = 0o700
REMOVE_TRIES = 20  # x 50 ms: a check killed a moment ago may still add a file
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC


class LocalSink:
    """An archive file in a directory; nothing appears under the final name until commit."""

    kind = "local"

    def __init__(
        self, directory: Path, group: str | int | None = None, suffix: str = ".zip"
    ) -> None:
        self.directory = directory
        self.suffix = suffix  # ".zip", or ".zip.enc" for an encrypted archive
        self.workdir = directory  # the run's own locked directory once open() returns
        self.group = group
        self.final: Path | None = None
        self.partial: Path | None = None
        #: What dead runs had left here (names), removed by open().
        self.removed: list[str] = []
        self._stream: IO[bytes] | None = None
        self._run: RunDir | None = None

    @property
    def where(self) -> str:
        """The partial file while writing, else the directory."""
        return str(self.partial or self.directory)

    def open(self, name: str) -> tuple[str, IO[bytes]]:
        """Create the directory, the run's working directory and `<name><suffix>.partial`."""
        _ensure_directory(self.directory)
        gid = _group_id(self.group)
        self.removed = remove_dead_runs(self.directory)
        for attempt in range(1, MAX_SAME_NAME + 1):
            candidate = name if attempt == 1 else f"{name}-{attempt}"
            # Held: a signal between creating a file and recording it here would leak it.
            with stop_signals_held():
                if self._claim(candidate, gid):
                    assert self._stream is not None
                    return candidate, self._stream
        raise UsageError(f"--output {self.directory}: too many snapshots named {name}*; clean up")

    def commit(self, size_bytes: int, sha256: str) -> ArchiveLocation:
        """Flush to disk and move into place atomically (raises OSError on a full disk)."""
        assert self._stream is not None and self.partial and self.final
        self._stream.flush()
        os.fsync(self._stream.fileno())
        self._stream.close()
        self._stream = None
        os.replace(self.partial, self.final)
        self.partial = None  # it is the archive now: abort() leaves it alone
        with contextlib.suppress(OSError):  # make the rename itself durable
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return ArchiveLocation(self.kind, str(self.final.resolve()), size_bytes, sha256)

    def abort(self) -> None:
        """Remove the partial file (unless committed), then the working directory; never raises."""
        if self._stream is not None:
            with contextlib.suppress(OSError):
                self._stream.close()
            self._stream = None
        if self.partial is not None:  # before the directory: a .partial never outlives it
            with contextlib.suppress(OSError):
                self.partial.unlink()
            self.partial = None
        if self._run is not None:
            self._run.remove()
            self._run = None
        self.workdir = self.directory

    def _claim(self, candidate: str, gid: int | None) -> bool:
        """Reserve `candidate` (its working directory, then its .partial); False if taken."""
        final = self.directory / f"{candidate}{self.suffix}"
        partial = self.directory / f"{candidate}{self.suffix}.partial"
        taken = [self.directory / f"{candidate}{suffix}" for suffix in ARCHIVE_SUFFIXES]
        if any(p.exists() for p in taken) or os.path.lexists(partial):
            return False
        try:
            run = RunDir.claim(self.directory / f".{candidate}.run")
        except OSError as exc:
            raise _unwritable(self.directory, exc) from None
        if run is None:
            return False
        try:
            stream = _create_private(partial, gid, self.group)
        except FileExistsError:
            run.remove()
            return False
        except BaseException as exc:
            run.remove()
            if isinstance(exc, OSError):
                raise _unwritable(self.directory, exc) from None
            raise
        self._run, self._stream = run, stream
        self.final, self.partial, self.workdir = final, partial, run.path
        return True


class RunDir:
    """A run's hidden working directory, locked for as long as the run's process lives."""

    def __init__(self, path: Path, lock_fd: int) -> None:
        self.path = path
        self._lock_fd: int | None = lock_fd

    @classmethod
    def claim(cls, path: Path) -> RunDir | None:
        """Create `path` and lock it; None when the name is taken (or was, a moment ago)."""
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            return None
        lock = path / LOCK_NAME
        try:
            os.chmod(path, DIR_MODE)  # exactly, whatever the umask took off or left on
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, ARCHIVE_MODE)
        except (FileNotFoundError, FileExistsError):
            # Another run's cleanup took the empty directory (and a third run may have
            # made it again, lock and all): the name is not ours, take another.
            return None
        except OSError:
            with contextlib.suppress(OSError):
                os.rmdir(path)
            raise
        # Blocks only while another run's cleanup, which took the lock first, looks at it;
        # if that cleanup removed the directory meanwhile, the name is not ours.
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not _same_file(lock, fd):
            os.close(fd)
            return None
        with contextlib.suppress(OSError):  # for a person looking: who holds it
            os.write(fd, f"{os.getpid()}\n".encode())
        return cls(path, fd)

    def remove(self) -> None:
        """Delete the directory (the lock file last), then let the lock go; never raises."""
        if self._lock_fd is None:
            return
        _remove_run_dir(self.path)
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)
        self._lock_fd = None


def remove_dead_runs(directory: Path) -> list[str]:
    """Remove the working directories and .partial files of dead runs; the names removed."""
    removed: list[str] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        match = RUN_DIR.fullmatch(entry.name)
        with contextlib.suppress(OSError):
            if match and entry.is_dir(follow_symlinks=False):
                partials = [directory / f"{match[1]}{s}.partial" for s in ARCHIVE_SUFFIXES]
                removed += _remove_if_dead(Path(entry.path), partials)
    return removed


def _remove_if_dead(run_dir: Path, partials: list[Path]) -> list[str]:
    """Remove a run's directory and .partial if its lock is free: the run is dead."""
    lock = run_dir / LOCK_NAME
    try:
        fd = os.open(lock, os.O_RDWR | _OPEN_FLAGS)
    except FileNotFoundError:
        # Between mkdir and the lock file (a live run a moment old), or after the lock
        # file went last (a run that died while removing its directory): empty either
        # way. Only the second is ours to remove, and it is not fresh.
        with contextlib.suppress(OSError):
            if time.time() - os.stat(run_dir, follow_symlinks=False).st_mtime < FRESH_S:
                return []
            os.rmdir(run_dir)
            return [run_dir.name]
        return []
    except OSError:
        return []  # a symlink, another user's run: not ours to judge
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return []  # held: a live run
        if not _same_file(lock, fd):
            return []  # replaced meanwhile: a new run's, and live
        removed = [p.name for p in partials if _unlink_regular_file(p)]
        _remove_run_dir(run_dir)
        return [*removed, run_dir.name]
    finally:
        os.close(fd)


def retry_removal(attempt: Callable[[], bool]) -> None:
    """Call `attempt` until it returns True (all gone): up to REMOVE_TRIES times, 50 ms apart.

    A check killed a moment ago may still add a file to what is being removed.
    """
    for _ in range(REMOVE_TRIES):
        if attempt():
            return
        time.sleep(0.05)


def _remove_run_dir(path: Path) -> None:
    """Delete everything but the lock file, then the lock file, then the directory."""
    retry_removal(lambda: not _clear(path))
    with contextlib.suppress(OSError):
        os.unlink(path / LOCK_NAME)
    with contextlib.suppress(OSError):
        os.rmdir(path)


def _clear(path: Path) -> bool:
    """Delete everything in `path` but the lock file; True when something is back already."""
    try:
        for entry in [e for e in os.scandir(path) if e.name != LOCK_NAME]:
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
        return any(e.name != LOCK_NAME for e in os.scandir(path))
    except OSError:
        return False


def _create_private(path: Path, gid: int | None, group: str | int | None) -> IO[bytes]:
    """Create `path` exclusively, readable by the owner only (and `gid`, when given)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, ARCHIVE_MODE)
    try:
        if gid is not None:
            try:
                os.fchown(fd, -1, gid)
            except OSError as exc:
                raise UsageError(
                    f"archive.group {group}: cannot give the archive to this group "
                    f"({exc.strerror}); run as root or as a member of {group}, or remove it"
                ) from None
        # The umask only ever takes bits off: set the mode exactly, whatever it is.
        os.fchmod(fd, ARCHIVE_MODE if gid is None else GROUP_ARCHIVE_MODE)
        return os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        raise


def _ensure_directory(directory: Path) -> None:
    """`--output` exists as a directory, or is created; anything else is refused."""
    if directory.exists() and not directory.is_dir():
        raise UsageError(
            f"--output {directory}: not a directory (a file is there); pass a directory, "
            "or a new path to create one"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a dangling symlink, or a file that appeared meanwhile
        raise UsageError(
            f"--output {directory}: not a directory; pass a directory, or a new path to create one"
        ) from None
    except OSError as exc:
        raise UsageError(
            f"--output {directory}: cannot create the directory ({exc.strerror}); "
            "pass a writable directory"
        ) from None


def _group_id(group: str | int | None) -> int | None:
    """The gid of the group archives are given to; None for the owner only."""
    if group is None or isinstance(group, int):
        return group
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise UsageError(
            f"archive.group {group}: no such group on this node; name an existing group "
            "or remove the setting"
        ) from None


def _unwritable(directory: Path, exc: OSError) -> UsageError:
    return UsageError(
        f"--output {directory}: cannot write there ({exc.strerror}); "
        "pass a writable directory with free space"
    )


def _same_file(path: Path, fd: int) -> bool:
    """`path` still names the file open as `fd` (not removed, not replaced)."""
    try:
        here, there = os.stat(path, follow_symlinks=False), os.fstat(fd)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _unlink_regular_file(path: Path) -> bool:
    """Unlink `path` if it is a regular file (never what a symlink points to)."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        os.unlink(path)
    except OSError:
        return False
    return True
