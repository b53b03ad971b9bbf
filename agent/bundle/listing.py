"""listing.tsv: one row per entry of the data directory, and what the bundle did with it.

Columns: path (relative, escaped as member names are), kind, size, mode, uid, user, gid,
group, mtime (UTC), bundled (yes, partial, no, or - for a directory), reason, target (a
symlink's, escaped). Every field is one line without tabs: names are escaped, reasons
are ours. Rows are spooled to a compressed temporary file, so a tree of millions of
files costs no memory.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Callable
from dataclasses import dataclass

from snapshot_agent.bundle.names import escape_name, escape_path
from snapshot_agent.core.units import utc_iso
from snapshot_agent.node.iggy_data import special_kind

LISTING = "listing.tsv"
COLUMNS = (
    "path", "kind", "size", "mode", "uid", "user", "gid", "group", "mtime", "bundled",
    "reason", "target",
)  # fmt: skip
HEADER = ("\t".join(COLUMNS) + "\n").encode()
MAX_NAMES = 4096  # distinct uids and gids resolved (and remembered)

YES, PARTIAL, NO, DIRECTORY = "yes", "partial", "no", "-"
_KINDS = ((stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "symlink"))


def kind_of(st: os.stat_result | None) -> str:
    """file, dir, symlink, FIFO, socket, block device... ('?' when it could not be stat'ed)."""
    if st is None:
        return "?"
    found = next((name for test, name in _KINDS if test(st.st_mode)), None)
    return found or special_kind(st.st_mode)


@dataclass(frozen=True)
class Row:
    """One listed entry."""

    rel: bytes
    st: os.stat_result | None
    bundled: str
    reason: str = ""
    target: bytes = b""


class Owners:
    """uid/gid -> name, looked up once each ('' when the node does not know it)."""

    def __init__(self) -> None:
        self._users: dict[int, str] = {}
        self._groups: dict[int, str] = {}

    def user(self, uid: int) -> str:
        """The user name of `uid`, or ''."""
        return _cached(self._users, uid, lambda: pwd.getpwuid(uid).pw_name)

    def group(self, gid: int) -> str:
        """The group name of `gid`, or ''."""
        return _cached(self._groups, gid, lambda: grp.getgrgid(gid).gr_name)


def _cached(cache: dict[int, str], key: int, look_up: Callable[[], str]) -> str:
    """A remembered lookup; at most MAX_NAMES kept."""
    found = cache.get(key)
    if found is not None:
        return found
    try:
        name = escape_name(os.fsencode(look_up()))
    except (KeyError, OverflowError, OSError):
        name = ""
    if len(cache) < MAX_NAMES:
        cache[key] = name
    return name


def format_row(row: Row, owners: Owners) -> bytes:
    """One TSV line."""
    st = row.st
    fields = [escape_path(row.rel) or ".", kind_of(st)]  # as the member is named
    if st is None:
        fields += [""] * 7
    else:
        fields += [
            str(st.st_size),
            stat.filemode(st.st_mode),
            str(st.st_uid),
            owners.user(st.st_uid),
            str(st.st_gid),
            owners.group(st.st_gid),
            utc_iso(st.st_mtime),
        ]
    fields += [row.bundled, _one_line(row.reason), escape_name(row.target)]
    return ("\t".join(fields) + "\n").encode()


def _one_line(text: str) -> str:
    """A reason with any tab or newline escaped (reasons quote error strings)."""
    return escape_name(text.encode()) if "\t" in text or "\n" in text else text
