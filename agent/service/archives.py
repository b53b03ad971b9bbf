"""The stored archive a record names: a file under storage.local_dir, or an S3 object.

Removing one removes what the sink stored for it: the local file, or the object and its
`.sha256` sidecar. Something already gone counts as removed: retention and a DELETE may
race for the same archive, and an archive removed by hand must not keep its record
forever. Downloading one is a path to stream (local) or a presigned URL (S3).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import stat
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from snapshot_agent.config import StorageConfig
from snapshot_agent.errors import AgentError
from snapshot_agent.service.records import Record

#: Only files the sinks name so are removed, whatever a record says.
ARCHIVE_NAME = re.compile(r"snapshot-[0-9A-Za-z._-]+\.zip(\.enc)?")
SIDECAR_SUFFIX = ".sha256"  # storage/s3.py's: the archive's digest beside it
#: Threads for storage calls, apart from the store's: an object store that stalls (each
#: request may take a minute before its retries give up) must not hold up the records.
STORAGE_THREADS = 2

T = TypeVar("T")


class ArchiveError(AgentError):
    """A stored archive cannot be reached or removed (the store refused, a file is odd)."""


class Archives:
    """The archives of the node's records, where storage put them."""

    def __init__(self, storage: StorageConfig) -> None:
        self.storage = storage
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(STORAGE_THREADS, thread_name_prefix="storage")

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` in a storage thread (it may wait on the object store)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def local_path(self, record: Record) -> Path | None:
        """The local archive file of a completed record, or None (not local, or gone)."""
        location = record.location
        if location is None or location.sink != "local":
            return None
        path = Path(location.uri)
        if not self._in_store(path):
            return None
        try:
            mode = path.lstat().st_mode
        except OSError:
            return None
        return path if stat.S_ISREG(mode) and ARCHIVE_NAME.fullmatch(path.name) else None

    def _in_store(self, path: Path) -> bool:
        """Whether `path` is a file directly in storage.local_dir (its real directory, no
        symlinked parent): a record never leads the service to a file elsewhere."""
        try:
            return path.parent.resolve(strict=True) == Path(self.storage.local_dir).resolve()
        except OSError:
            return False

    def download_url(self, record: Record) -> str:
        """A presigned GET URL for a record stored in S3 (ArchiveError when not reachable)."""
        from snapshot_agent.storage.presign import presigned_get_url

        bucket, key = self._s3_object(record)
        try:
            return presigned_get_url(self._settings(bucket), key, client=self._s3())
        except AgentError:
            raise
        except Exception as exc:
            raise ArchiveError(f"s3://{bucket}/{key}: cannot sign a download URL ({exc})") from exc

    def remove(self, record: Record) -> None:
        """Remove the record's stored archive; nothing to do when it has none or it is gone."""
        location = record.location
        if location is None:
            return
        if location.sink == "local":
            self._remove_file(Path(location.uri))
        elif location.sink == "s3":
            self._remove_object(record)
        # "presigned-put": stored at a URL the caller gave; it is theirs to remove

    def _remove_file(self, path: Path) -> None:
        """Unlink an archive file (never a symlink's target, never another kind of file)."""
        if not ARCHIVE_NAME.fullmatch(path.name):
            raise ArchiveError(f"{path}: not an archive name; left in place, remove it by hand")
        if not self._in_store(path):
            if not path.parent.exists():
                return  # its directory is gone, and the archive with it
            raise ArchiveError(
                f"{path}: not in storage.local_dir {self.storage.local_dir}; left in place"
            )
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ArchiveError(f"{path}: cannot look at it ({exc.strerror})") from None
        if not stat.S_ISREG(mode):
            raise ArchiveError(f"{path}: not a regular file; left in place, remove it by hand")
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ArchiveError(f"{path}: cannot remove it ({exc.strerror})") from None
        with contextlib.suppress(OSError):  # the removal itself durable, as the commit was
            fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _remove_object(self, record: Record) -> None:
        """Delete the object and its sidecar (S3 says yes to deleting what is not there)."""
        from snapshot_agent.storage.s3 import explain

        bucket, key = self._s3_object(record)
        client = self._s3()
        for name in (key, key + SIDECAR_SUFFIX):
            try:
                client.delete_object(Bucket=bucket, Key=name)
            except Exception as exc:
                raise ArchiveError(
                    explain(exc, self._settings(bucket), f"deleting s3://{bucket}/{name}")
                ) from exc

    def _s3_object(self, record: Record) -> tuple[str, str]:
        """(bucket, key) of a record stored in S3."""
        location = record.location
        uri = location.uri if location is not None and location.sink == "s3" else ""
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        if not uri.startswith("s3://") or not bucket or not key:
            raise ArchiveError(f"snapshot {record.id}: not stored in S3 ({uri or 'nowhere'})")
        return bucket, key

    def _settings(self, bucket: str) -> Any:
        """storage.s3 for `bucket` (the record's: the config may have moved on since)."""
        settings = self.storage.s3
        if settings is None:
            raise ArchiveError(
                f"s3://{bucket}: the config has no storage.s3 any more; restore it to reach "
                "the archives stored there"
            )
        return (
            settings
            if settings.bucket == bucket
            else msgspec.structs.replace(settings, bucket=bucket)
        )

    def _s3(self) -> Any:
        """One S3 client for the service's life (boto3 is loaded on first use only)."""
        from snapshot_agent.storage.s3 import s3_client

        with self._client_lock:
            if self._client is None:
                bucket = self.storage.s3.bucket if self.storage.s3 is not None else "?"
                self._client = s3_client(self._settings(bucket))
            return self._client
