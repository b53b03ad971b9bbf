"""What the bundle does with each regular file of the data directory, by its path.

- Segment payloads (`*.log` under the streams directory, or `<digits>.log` anywhere)
  hold customer messages: copied only in `full` mode, after everything else.
- With redaction on, the password and token hashes are withheld: `state/log` (users
  and PATs, argon2 hashes), `state/tokens` (revoked JWTs) and main's metadata log
  (`metadata/journal.wal`, `metadata/snapshot.bin`), which replaces state/log.
- With redaction on, every other file passes the redactor except Iggy's binary formats
  (indexes, offsets, superblocks, msgpack state), whose bytes no text rule can read and
  which must stay byte-exact to be of use: configs (runtime/current_config.toml, any
  *.toml, *.yaml, *.json, *.env, .env), the server logs (a generated root password may
  be printed there) and any stray file somebody left in the tree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

from snapshot_agent.node.iggy_data import DirNames

_DIGITS_LOG = re.compile(rb"\d+\.log")
#: Iggy's binary files: (directory prefix or None for anywhere, name pattern).
_BINARY_NAMES = re.compile(
    rb"\d+\.(?:index|timeindex)|superblock\.[ab]|purge\.gen|journal\.wal|snapshot\.bin"
    rb"|[^/]*\.staging"
)
_BINARY_PATHS = frozenset({b"state/info"})
#: Withheld when redaction is on: password hashes, PAT hashes, revoked tokens.
SECRET_STATE = frozenset(
    {b"state/log", b"state/tokens", b"metadata/journal.wal", b"metadata/snapshot.bin"}
)
WITHHELD_REASON = "withheld: password and token hashes (redaction is on)"
SEGMENT_REASON = "segment payload: listed, not copied (archive.iggy_mode is metadata)"


class Action(Enum):
    """What happens to a file."""

    COPY = "copy"  # byte for byte
    REDACT = "redact"  # through the redactor
    SEGMENT = "segment"  # a segment payload: the second pass in full mode
    LEAVE = "leave"  # listed only (metadata mode's segments)
    WITHHOLD = "withhold"  # listed only: secrets


@dataclass(frozen=True)
class Policy:
    """The rules of one bundle."""

    full: bool  # archive.iggy_mode == "full"
    redact: bool  # a redactor was given
    names: DirNames = field(default_factory=DirNames)

    def action(self, rel: bytes) -> Action:
        """What to do with the regular file at `rel` (relative to the data directory)."""
        if self.is_segment(rel):
            return Action.SEGMENT if self.full else Action.LEAVE
        if self.redact and rel in SECRET_STATE:
            return Action.WITHHOLD
        if not self.redact or self.is_binary(rel):
            return Action.COPY
        return Action.REDACT

    def is_segment(self, rel: bytes) -> bool:
        """A `.log` segment payload (not state/log, not the server's logs/*.log)."""
        name = rel.rpartition(b"/")[2]
        if _DIGITS_LOG.fullmatch(name):
            return True
        top = rel.partition(b"/")[0]
        return name.endswith(b".log") and top == self.names.streams.encode() and b"/" in rel

    def is_binary(self, rel: bytes) -> bool:
        """One of Iggy's binary formats (never redacted: the rules read text)."""
        if rel in _BINARY_PATHS:
            return True
        name = rel.rpartition(b"/")[2]
        if _BINARY_NAMES.fullmatch(name):
            return True
        return self._is_offset(rel)

    def _is_offset(self, rel: bytes) -> bool:
        """streams/…/offsets/consumers/<id> or …/offsets/groups/<id>."""
        parts = rel.split(b"/")
        return (
            len(parts) >= 3
            and parts[0] == self.names.streams.encode()
            and parts[-3] == b"offsets"
            and parts[-2] in (b"consumers", b"groups")
        )
