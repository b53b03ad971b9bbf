"""Presigned URLs: a short-lived download link to a stored archive, and upload to a given PUT URL.

A presigned GET is signed locally (SigV4, no request is made) with the node's
credentials and expires after `storage.s3.presign_ttl_s` (15 minutes by default).

`PresignedPutSink` stores an archive through a URL someone else signed (the control
plane, over the RPC API): a PUT needs the body's length up front, so only this mode
stages the archive locally, in a locked `.<name>.run` directory beside the evidence
spool, after checking that the disk has room for the caller's estimate. The commit then
PUTs the file with a plain HTTP client, retrying network faults and 5xx with backoff,
and removes it. A URL's query is its signature: messages name only scheme, host and path.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from snapshot_agent.config import ArchiveConfig, S3Config
from snapshot_agent.errors import SnapshotError, UsageError, stop_signals_held
from snapshot_agent.pipeline.record import ArchiveLocation
from snapshot_agent.storage.local import MAX_SAME_NAME, RunDir, remove_dead_runs
from snapshot_agent.storage.s3 import claim_run_dir, ensure_spool_dir, s3_client

#: Free space kept beyond the estimate: the spool, the report, the rest of the disk's users.
RESERVE_BYTES = 256 * 1024 * 1024
#: A whole snapshot's evidence, compressed: 1 to 5 MB seen; each file capped besides.
EVIDENCE_ESTIMATE_BYTES = 64 * 1024 * 1024
BLOCK = 1024 * 1024  # bytes per send() of the staged file
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class PutRetry:
    """How a PUT is retried: attempts, the first pause (doubled each time), the stall timeout."""

    attempts: int = 5
    backoff_s: float = 1.0
    timeout_s: float = 60.0  # a stalled PUT fails after this long without progress


def staging_estimate(archive: ArchiveConfig, include_iggy: bool) -> int:
    """The staged archive's size to make room for: the evidence, plus the Iggy bundle's
    hard cap (archive.iggy_max_bytes) when it is included."""
    return EVIDENCE_ESTIMATE_BYTES + (archive.iggy_max_bytes if include_iggy else 0)


def presigned_get_url(
    settings: S3Config, key: str, *, ttl_s: int | None = None, client: Any = None
) -> str:
    """A URL that downloads `key` without credentials until it expires (presign_ttl_s)."""
    client = client or s3_client(settings)
    return str(
        client.generate_presigned_url(
            "get_object",
            Params={"Bucket": settings.bucket, "Key": key},
            ExpiresIn=ttl_s or settings.presign_ttl_s,
        )
    )


def shown_url(url: str) -> str:
    """The URL without its query (the signature) and credentials: safe in a message."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class PresignedPutSink:
    """An archive staged locally, then PUT to a caller's presigned URL at commit."""

    kind = "presigned-put"

    def __init__(
        self,
        url: str,
        stage_dir: Path,
        estimate_bytes: int,
        *,
        headers: Mapping[str, str] | None = None,
        retry: PutRetry = PutRetry(),
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(
                f"presigned URL {shown_url(url)}: not an http(s) URL; pass the PUT URL"
            )
        self.url = url
        self.stage_dir = stage_dir
        self.workdir = stage_dir  # the run's own locked directory once open() returns
        self.estimate_bytes = estimate_bytes
        self.headers = dict(headers or {})  # those the URL was signed with (Content-Type...)
        self.retry = retry
        self.removed: list[str] = []
        self._run: RunDir | None = None
        self._staged: Path | None = None
        self._stream: IO[bytes] | None = None

    @property
    def where(self) -> str:
        """The URL without its signature."""
        return shown_url(self.url)

    def open(self, name: str) -> tuple[str, IO[bytes]]:
        """Check free space for the estimate, then create the staging file."""
        ensure_spool_dir(self.stage_dir)
        free = shutil.disk_usage(self.stage_dir).free
        if free < self.estimate_bytes + RESERVE_BYTES:
            raise UsageError(
                f"staging directory {self.stage_dir}: {_mib(free)} free, but an upload to a "
                "presigned URL stages the archive there first (estimated "
                f"{_mib(self.estimate_bytes)}, the Iggy bundle's cap archive.iggy_max_bytes "
                f"included, plus {_mib(RESERVE_BYTES)} to spare); free space, stage on another "
                "disk with --output, lower the cap or pass --no-include-iggy, or use S3 "
                "storage, which streams"
            )
        self.removed = remove_dead_runs(self.stage_dir)
        for attempt in range(1, MAX_SAME_NAME + 1):
            candidate = name if attempt == 1 else f"{name}-{attempt}"
            with stop_signals_held():  # created and recorded as one step, so always removed
                if self._claim(candidate):
                    assert self._stream is not None
                    return candidate, self._stream
        raise UsageError(f"staging directory {self.stage_dir}: too many snapshots named {name}*")

    def commit(self, size_bytes: int, sha256: str) -> ArchiveLocation:
        """PUT the staged archive (with retries), then remove it."""
        assert self._stream is not None and self._staged is not None
        self._stream.close()
        self._stream = None
        put_file(self.url, self._staged, headers=self.headers, retry=self.retry)
        location = ArchiveLocation(self.kind, self.where, size_bytes, sha256)
        self.abort()  # the staged copy and the run directory: the archive is stored
        return location

    def abort(self) -> None:
        """Remove the staged file and the run directory; never raises."""
        if self._stream is not None:
            with contextlib.suppress(OSError):
                self._stream.close()
            self._stream = None
        self._staged = None
        if self._run is not None:
            self._run.remove()  # the staged file is inside it
            self._run = None
        self.workdir = self.stage_dir

    def _claim(self, candidate: str) -> bool:
        """Reserve the run directory and create the staging file in it; False if taken."""
        run = claim_run_dir(self.stage_dir, candidate)
        if run is None:
            return False
        staged = run.path / f"{candidate}.zip"
        try:
            fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except BaseException:
            run.remove()
            raise
        self._run, self._staged, self.workdir = run, staged, run.path
        self._stream = os.fdopen(fd, "wb")
        return True


def put_file(
    url: str,
    path: Path,
    *,
    headers: Mapping[str, str] | None = None,
    retry: PutRetry = PutRetry(),
) -> None:
    """PUT a file to a presigned URL; network faults and 5xx are retried, a 4xx is final."""
    problem = ""
    for attempt in range(1, retry.attempts + 1):
        try:
            status, body = _put_once(url, path, headers or {}, retry.timeout_s)
        except (OSError, http.client.HTTPException) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            if status < 300:
                return
            problem = f"HTTP {status}{_error_code(body)}"
            if status not in RETRY_STATUSES:
                raise SnapshotError(
                    f"upload to {shown_url(url)} refused ({problem}); nothing was kept. A "
                    "presigned URL expires: ask for a new one"
                )
        if attempt < retry.attempts:
            time.sleep(retry.backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.0))
    raise SnapshotError(
        f"upload to {shown_url(url)} failed {retry.attempts} times (last: {problem}); nothing was "
        "kept. Check that the node can reach the store, then retry"
    )


def _put_once(
    url: str, path: Path, headers: Mapping[str, str], timeout_s: float
) -> tuple[int, bytes]:
    """One PUT of the whole file; (status, the first KiB of the response)."""
    parts = urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(parts.hostname or "", parts.port, timeout=timeout_s, blocksize=BLOCK)
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    try:
        with path.open("rb") as body:
            size = os.fstat(body.fileno()).st_size
            conn.request("PUT", target, body=body, headers={**headers, "Content-Length": str(size)})
            response = conn.getresponse()
            return response.status, response.read(1024)
    finally:
        conn.close()


def _error_code(body: bytes) -> str:
    """`: Code` from an S3 error document, when there is one."""
    text = body.decode("utf-8", "replace")
    start, end = text.find("<Code>"), text.find("</Code>")
    return f": {text[start + 6 : end]}" if 0 <= start < end else ""


def _mib(size: int) -> str:
    return f"{size / 1024 / 1024:,.0f} MiB"
