"""What the bundle left out, for the outer manifest: every reason, a bounded number of items.

The listing inside iggy-data.zip names every file; the manifest gets the first few items
of each kind of skip by node path, then one line saying how many more there were, so a
tree of a million cut files does not make a million-line manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from snapshot_agent.bundle.listing import LISTING
from snapshot_agent.bundle.names import escape_path

MAX_PER_KIND = 20

# Kinds of skip.
SYMLINK = "symlink"
SPECIAL = "special"
UNREADABLE = "unreadable"
VANISHED = "vanished"
CHANGED = "changed"  # shrank, replaced, cut by a read error or the deadline
WITHHELD = "withheld"
CUT = "cut"  # over iggy_max_bytes
NOT_WALKED = "not walked"
LATE = "late"  # segments not reached before the deadline
SEGMENTS = "segments"  # metadata mode: one summary line, never items

#: How the walk and the reads word what they found; the kind of skip follows.
VANISHED_REASON = "vanished during the walk"
UNREADABLE_PREFIX = "unreadable: "


def kind_for(problem: str) -> str:
    """The kind of skip of a file that could not be read, from how it was worded."""
    if problem == VANISHED_REASON:
        return VANISHED
    if problem.startswith(UNREADABLE_PREFIX) or problem.startswith("cannot stat"):
        return UNREADABLE
    return CHANGED


@dataclass
class Skips:
    """Skipped items by kind: the first MAX_PER_KIND kept, all counted."""

    node_dir: str
    items: list[tuple[str, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    segment_bytes: int = 0

    def add(self, kind: str, rel: bytes, reason: str) -> None:
        """Count one skip; keep it while its kind has few."""
        seen = self.counts.get(kind, 0)
        self.counts[kind] = seen + 1
        if kind != SEGMENTS and seen < MAX_PER_KIND:
            self.items.append((self.node_path(rel), reason))

    def node_path(self, rel: bytes) -> str:
        """The path on the node, escaped."""
        root = self.node_dir.rstrip("/") or "/"
        return f"{root}/{escape_path(rel)}" if rel else root

    def report(self) -> list[tuple[str, str]]:
        """(node path, reason) items, then one summary line per kind with more."""
        out = list(self.items)
        root = self.node_path(b"")
        for kind, count in self.counts.items():
            if kind == SEGMENTS:
                out.append(
                    (
                        root,
                        f"{count:,} segment payloads ({self.segment_bytes:,} bytes) listed, "
                        "not copied: archive.iggy_mode is metadata",
                    )
                )
            elif count > MAX_PER_KIND:
                out.append(
                    (
                        root,
                        f"{count - MAX_PER_KIND:,} more {kind} entries not in the bundle: "
                        f"see {LISTING} in iggy-data.zip",
                    )
                )
        return out
