"""Where a finished archive goes: a sink is opened, streamed into, then committed or aborted.

There are three: a local directory (`LocalSink`, storage/local.py), an S3 multipart
upload (`S3Sink`, storage/s3.py) and a PUT to a presigned URL someone else signed
(`PresignedPutSink`, storage/presign.py, which stages the archive locally first). A sink
never exposes a half-written archive: until `commit()` returns, readers see nothing (a
`.partial` file, an unfinished multipart upload, a staged file not yet sent), and
`abort()` removes whatever was written.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Protocol

from snapshot_agent.pipeline.record import ArchiveLocation


class Sink(Protocol):
    """A place one archive is written to, as a stream."""

    #: Short name of the kind of sink, recorded with the archive ("local", "s3",
    #: "presigned-put").
    kind: str
    #: A local directory for the snapshot's bounded working files (the evidence spool).
    workdir: Path
    #: Where the archive is being written, for messages (a path, an s3:// URI).
    where: str

    def open(self, name: str) -> tuple[str, IO[bytes]]:
        """Reserve `name` (or a free variant of it) and return (name, writable stream).

        Raises UsageError when the destination cannot be written at all.
        """
        ...

    def commit(self, size_bytes: int, sha256: str) -> ArchiveLocation:
        """Make the written archive visible and durable; where it is now."""
        ...

    def abort(self) -> None:
        """Remove everything written so far; never raises."""
        ...
