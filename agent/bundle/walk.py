"""A walk of a hostile tree: never follows a symlink, never opens anything but directories.

Directories are opened relative to their parent's descriptor with O_NOFOLLOW, so a
directory swapped for a symlink while the walk runs is refused, not followed out of the
tree; a directory is entered only if it is still the one that was stat'ed. Names stay
bytes (invalid UTF-8 included). Memory holds one open directory per level; the walk
stops at the deadline, at an entry cap or past a depth, and says what it did not walk.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

from snapshot_agent.bundle.skips import VANISHED_REASON
from snapshot_agent.node.iggy_data import MAX_DEPTH, MAX_ENTRIES, MAX_LINK

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Found:
    """One entry of the tree: its path relative to the root, and its lstat (None if gone).

    `dir_fd` is the open parent directory, valid until the walk moves on: open the entry
    by `name` relative to it.
    """

    rel: bytes
    name: bytes
    dir_fd: int
    st: os.stat_result | None
    problem: str = ""  # why it could not be stat'ed or, for a directory, walked
    target: bytes = b""  # a symlink's target, as read


@dataclass
class _Level:
    """One open directory."""

    fd: int
    entries: Iterator[os.DirEntry[str]]
    rel: bytes
    st: os.stat_result

    @property
    def ident(self) -> tuple[int, int]:
        """(device, inode): the same directory seen twice is a loop."""
        return (self.st.st_dev, self.st.st_ino)


@dataclass
class WalkState:
    """How far the walk got."""

    entries: int = 0
    truncated: bool = False
    reason: str = ""  # why it stopped early


def open_root(root: Path) -> int:
    """The data directory's descriptor (the configured path itself may be a symlink)."""
    return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


class TreeWalk:
    """Depth-first over one tree; iterate it once."""

    def __init__(
        self,
        root_fd: int,
        deadline: float,
        *,
        max_entries: int = MAX_ENTRIES,
        max_depth: int = MAX_DEPTH,
    ) -> None:
        self.root_fd = root_fd
        self.deadline = deadline
        self.max_entries = max_entries
        self.max_depth = max_depth
        self.state = WalkState()

    def __iter__(self) -> Iterator[Found]:
        """Every entry, each directory before its content; a second row for one cut short."""
        st = os.fstat(self.root_fd)
        stack = [self._level(os.dup(self.root_fd), b"", st)]
        try:
            while stack:
                level = stack[-1]
                try:
                    entry = next(level.entries, None)
                except OSError as exc:
                    _close(stack.pop())
                    yield _cut(level, f"listing cut short: {exc.strerror or exc}")
                    continue
                if entry is None:
                    _close(stack.pop())
                    continue
                if self._must_stop():
                    for open_level in reversed(stack):
                        yield _cut(open_level, self.state.reason)
                    return
                self.state.entries += 1
                child = yield from self._entry(level, entry, stack)
                if child is not None:
                    stack.append(child)
        finally:
            for level in stack:
                _close(level)

    def _must_stop(self) -> bool:
        """True (the reason noted) at the deadline or the entry cap."""
        state = self.state
        if time.monotonic() >= self.deadline:
            state.truncated = True
            state.reason = "not walked to its end: the time for the bundle ran out"
        elif state.entries >= self.max_entries:
            state.truncated = True
            state.reason = (
                f"not walked to its end: the entry limit ({self.max_entries:,}) was reached"
            )
        return state.truncated

    def _entry(
        self, level: _Level, entry: os.DirEntry[str], stack: list[_Level]
    ) -> Generator[Found, None, _Level | None]:
        """Yield one entry; the level to descend into when it is a directory."""
        name = os.fsencode(entry.name)
        rel = level.rel + b"/" + name if level.rel else name
        try:
            st = os.lstat(name, dir_fd=level.fd)
        except FileNotFoundError:
            yield Found(rel, name, level.fd, None, VANISHED_REASON)
            return None
        except OSError as exc:
            yield Found(rel, name, level.fd, None, f"cannot stat: {exc.strerror or exc}")
            return None
        if stat.S_ISLNK(st.st_mode):
            yield Found(rel, name, level.fd, st, target=_readlink(name, level.fd))
            return None
        if not stat.S_ISDIR(st.st_mode):
            yield Found(rel, name, level.fd, st)
            return None
        child, problem = self._descend(level, name, rel, st, stack)
        yield Found(rel, name, level.fd, st, problem)
        return child

    def _descend(
        self, level: _Level, name: bytes, rel: bytes, st: os.stat_result, stack: list[_Level]
    ) -> tuple[_Level | None, str]:
        """The subdirectory opened, or why it is not walked."""
        if len(stack) > self.max_depth:
            return None, f"not walked: more than {self.max_depth} levels deep"
        ident = (st.st_dev, st.st_ino)
        loop = next((lv.rel for lv in stack if lv.ident == ident), None)
        if loop is not None:
            where = loop.decode("utf-8", "backslashreplace") or "the data directory"
            return None, f"not walked: the same directory as {where} (a bind-mount loop)"
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=level.fd)
        except FileNotFoundError:
            return None, VANISHED_REASON
        except OSError as exc:
            return None, f"not walked: {exc.strerror or exc}"
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != ident:
            os.close(fd)
            return None, "not walked: replaced during the walk"
        try:
            return self._level(fd, rel, now), ""
        except OSError as exc:
            os.close(fd)
            return None, f"not walked: {exc.strerror or exc}"

    @staticmethod
    def _level(fd: int, rel: bytes, st: os.stat_result) -> _Level:
        """An open directory and its listing."""
        return _Level(fd, os.scandir(fd), rel, st)


def _readlink(name: bytes, dir_fd: int) -> bytes:
    """A symlink's target (never followed), or why it could not be read."""
    try:
        return os.readlink(name, dir_fd=dir_fd)[:MAX_LINK]
    except OSError as exc:
        return f"? ({exc.strerror or exc})".encode()


def _cut(level: _Level, reason: str) -> Found:
    """A second row for a directory not walked to its end."""
    return Found(level.rel, level.rel.rpartition(b"/")[2], -1, level.st, reason)


def _close(level: _Level) -> None:
    """Close a directory's listing and descriptor."""
    close = getattr(level.entries, "close", None)
    if close is not None:
        close()
    os.close(level.fd)
