"""The local sink: `<dir>/<name>.zip.partial` while written, renamed when complete."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO

from snapshot_agent.errors import UsageError
from snapshot_agent.pipeline.record import ArchiveLocation

MAX_SAME_NAME = 99  # snapshot-…-2 … -99 when several start in the same second


class LocalSink:
    """An archive file in a directory; nothing appears under the final name until commit."""

    kind = "local"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.workdir = directory
        self.final: Path | None = None
        self.partial: Path | None = None
        self._stream: IO[bytes] | None = None

    @property
    def where(self) -> str:
        """The partial file while writing, else the directory."""
        return str(self.partial or self.directory)

    def open(self, name: str) -> tuple[str, IO[bytes]]:
        """Create the directory and `<name>.zip.partial` (the proof it is writable)."""
        directory = self.directory
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"--output {directory}: cannot create the directory ({exc.strerror}); "
                "pass a writable directory"
            ) from None
        if not directory.is_dir():
            raise UsageError(f"--output {directory}: not a directory; pass a writable directory")
        for attempt in range(1, MAX_SAME_NAME + 1):
            candidate = name if attempt == 1 else f"{name}-{attempt}"
            final = directory / f"{candidate}.zip"
            partial = directory / f"{candidate}.zip.partial"
            if final.exists():
                continue
            try:
                self._stream = open(partial, "xb")  # noqa: SIM115 - closed in commit()/abort()
            except FileExistsError:
                continue
            except OSError as exc:
                raise UsageError(
                    f"--output {directory}: cannot write there ({exc.strerror}); "
                    "pass a writable directory with free space"
                ) from None
            self.final, self.partial = final, partial
            return candidate, self._stream
        raise UsageError(f"--output {directory}: too many snapshots named {name}*; clean up")

    def commit(self, size_bytes: int, sha256: str) -> ArchiveLocation:
        """Flush to disk and move into place atomically (raises OSError on a full disk)."""
        assert self._stream is not None and self.partial and self.final
        self._stream.flush()
        os.fsync(self._stream.fileno())
        self._stream.close()
        self._stream = None
        os.replace(self.partial, self.final)
        with contextlib.suppress(OSError):  # make the rename itself durable
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return ArchiveLocation(self.kind, str(self.final.resolve()), size_bytes, sha256)

    def abort(self) -> None:
        """Remove the partial file; never raises."""
        if self._stream is not None:
            with contextlib.suppress(OSError):
                self._stream.close()
            self._stream = None
        if self.partial is not None:
            with contextlib.suppress(OSError):
                self.partial.unlink()
