"""The S3 sink: the archive streamed into a multipart upload, parts sent as they fill.

The stream copies what it is given into one part's buffer (`part_size_mb`, at least
5 MiB, S3's minimum) and hands the full buffer to a pool of `concurrency` uploaders; a
writer that gets ahead waits for a free slot, so memory stays within part size x
(concurrency + 1) however large the archive. Each
request is retried by botocore (standard mode, `max_attempts`, exponential backoff with
jitter, read timeouts for stalls) and a part that still fails is sent again, twice, after
a longer pause. Any failure aborts the multipart upload: no partial object is ever
visible under the archive's key.

The object is `{prefix}/{deployment_id}/{node_id}/{name}.zip` (`unassigned` for an id
the config does not give; `.zip.enc`, application/octet-stream rather than
application/zip, when the archive is encrypted to recipients), with the store's
server-side encryption when asked (AES256, or aws:kms with a key id) and `agent-version`
in its metadata. The archive's sha256 is known only once its last byte is written, after
the upload began, and S3 metadata cannot change without copying the object; so it goes
in a sidecar, `<key>.sha256` (the `sha256sum -c` format, with the digest and size in its
metadata too), written before the upload is completed: an archive is never visible
without its digest. (S3's own per-part checksums do not give a whole-object sha256 for a
multipart upload; botocore adds its CRC32 per part, and signs each part's sha256 over
plain HTTP, which guards every part on the wire.)

Credentials come only from the standard AWS chain (instance role, AWS_* environment,
shared files) and are never read, stored or logged here. The raw evidence spool is
local: a locked `.<name>.run` directory under the spool directory (the config's
`storage.local_dir`), bounded by the artifact caps and removed when the run ends, or by
the next run if this one is killed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import IO, Any

from snapshot_agent import __version__
from snapshot_agent.config import S3Config
from snapshot_agent.errors import SnapshotError, UsageError, stop_signals_held
from snapshot_agent.pipeline.record import ArchiveLocation
from snapshot_agent.storage.local import MAX_SAME_NAME, RunDir, remove_dead_runs

MIB = 1024 * 1024
MAX_PARTS = 10_000  # S3's limit: the largest archive is 10,000 parts
#: A word for an id the config does not give, so keys keep their shape.
UNASSIGNED = "unassigned"
SIDECAR_SUFFIX = ".sha256"
CHECKSUM_ALGORITHM = "CRC32"  # per part, checked by the store (awscli's default too)
CHECKSUM_MEMBER = "ChecksumCRC32"
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0  # a stalled request fails after this long, then is retried
PART_ROUNDS = 3  # a part is sent up to this many times, each with botocore's retries
PART_BACKOFF_S = 2.0  # before a part's second round; doubled for the third
ABORT_TRIES = 3
#: An upload of this node's prefix started this long ago is a run killed outright
#: (SIGKILL, power loss) that could not abort it: the next run aborts it.
STALE_UPLOAD_S = 24 * 3600
MAX_STALE_LISTED = 1000  # uploads looked at per run: one listing page
#: How long an abort waits for the parts in flight before aborting the upload anyway
#: (a part that lands after the abort is removed by the store, or by a lifecycle rule).
CANCEL_WAIT_S = 10.0
#: Errors a part may be sent again after (as botocore retries them, once more).
RETRYABLE_CODES = frozenset(
    {
        "InternalError",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
    }
)
CREDENTIAL_CODES = frozenset(
    {
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "TokenRefreshRequired",
    }
)
CHAIN = "instance role, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or ~/.aws/credentials"


class S3UploadError(SnapshotError):
    """The archive could not be stored; the multipart upload is (being) aborted."""


def s3_client(
    settings: S3Config,
    *,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    read_timeout_s: float = READ_TIMEOUT_S,
) -> Any:
    """A boto3 S3 client for `settings`; credentials from the standard chain, else UsageError."""
    import boto3  # imported only when S3 is used: a second or so of start-up
    from botocore.config import Config as BotoConfig

    session = boto3.session.Session()
    if session.get_credentials() is None:
        raise UsageError(
            f"storage.s3.bucket {settings.bucket}: no AWS credentials found ({CHAIN}); "
            "give this node credentials that may write the bucket (never in the config)"
        )
    config = BotoConfig(
        region_name=settings.region or session.region_name or "us-east-1",
        signature_version="s3v4",  # presigned URLs too (v2 cannot sign KMS objects)
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        retries={"total_max_attempts": settings.max_attempts, "mode": "standard"},
        max_pool_connections=max(10, settings.concurrency + 2),
        tcp_keepalive=True,
    )
    return session.client("s3", endpoint_url=settings.endpoint_url, config=config)


def node_prefix(settings: S3Config, deployment_id: int | None, node_id: int | None) -> str:
    """`{prefix}/{deployment_id}/{node_id}/`: where one node's archives are."""
    parts = [settings.prefix.strip("/"), _id(deployment_id), _id(node_id)]
    return "/".join(p for p in parts if p) + "/"


def _id(value: int | None) -> str:
    return UNASSIGNED if value is None else str(value)


def content_type(suffix: str) -> str:
    """The archive object's Content-Type: a `.zip.enc` is no ZIP to a browser or a tool
    that sniffs it, only bytes."""
    return "application/zip" if suffix == ".zip" else "application/octet-stream"


def sse_arguments(settings: S3Config) -> dict[str, str]:
    """The server-side encryption arguments of a PutObject or CreateMultipartUpload."""
    if settings.sse is None:
        return {}
    found = {"ServerSideEncryption": settings.sse}
    if settings.sse == "aws:kms" and settings.kms_key_id:
        found["SSEKMSKeyId"] = settings.kms_key_id
    return found


def checksum_arguments(client: Any) -> dict[str, str]:
    """CRC32 part checksums, as awscli asks for them: the store checks every part as it
    arrives and keeps a composite checksum, rather than hashing the whole object again
    when the upload completes. Not when the client is set to send checksums only where
    required (a store that refuses them)."""
    if getattr(client.meta.config, "request_checksum_calculation", None) == "when_required":
        return {}
    return {"ChecksumAlgorithm": CHECKSUM_ALGORITHM}


def explain(exc: BaseException, settings: S3Config, doing: str) -> str:
    """One line for a person: what failed on which bucket, and what to do."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
    )

    bucket = f"storage.s3.bucket {settings.bucket}"
    where = settings.endpoint_url or f"S3 in {settings.region or 'the default region'}"
    if isinstance(exc, NoCredentialsError):
        return f"{bucket}: no AWS credentials found ({CHAIN}); give this node credentials"
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
        return _one_line(
            f"{bucket}: cannot reach {where} while {doing} ({exc}); check "
            "storage.s3.endpoint_url and region, and that the node can reach the store"
        )
    if not isinstance(exc, ClientError):
        return _one_line(f"{bucket}: {doing} failed ({type(exc).__name__}: {exc})")
    error = exc.response.get("Error", {})
    code, message = str(error.get("Code", "")), str(error.get("Message", ""))
    if code == "NoSuchBucket":
        return (
            f"{bucket}: no such bucket at {where}; create it, or fix storage.s3.bucket "
            "(and endpoint_url or region)"
        )
    if code in CREDENTIAL_CODES:
        return _one_line(
            f"{bucket}: the AWS credentials were refused while {doing} ({code}); "
            f"check this node's credentials ({CHAIN})"
        )
    if code in ("AccessDenied", "AllAccessDisabled", "403"):
        return _one_line(
            f"{bucket}: access denied while {doing}; allow this node's credentials "
            "s3:PutObject, s3:GetObject and s3:AbortMultipartUpload on the bucket"
            + (" and kms:GenerateDataKey on the key" if settings.sse == "aws:kms" else "")
        )
    return _one_line(f"{bucket}: {doing} failed ({code or 'error'}: {message or exc})")


def retryable(exc: BaseException) -> bool:
    """Whether a failed request may succeed if sent again (a network fault, a 5xx)."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(exc, ConnectionError | HTTPClientError):
        return True  # resets, closed connections, read and connect timeouts
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500 or exc.response.get("Error", {}).get("Code") in RETRYABLE_CODES
    return False


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


class S3Sink:
    """An archive streamed into an S3 multipart upload; visible only once committed."""

    kind = "s3"

    def __init__(
        self,
        settings: S3Config,
        spool_dir: Path,
        *,
        deployment_id: int | None = None,
        node_id: int | None = None,
        suffix: str = ".zip",
        client: Any = None,
        part_backoff_s: float = PART_BACKOFF_S,
        stale_upload_s: float = STALE_UPLOAD_S,
    ) -> None:
        self.settings = settings
        self.stale_upload_s = stale_upload_s
        self.spool_dir = spool_dir  # storage.local_dir: only the evidence spool lives here
        self.workdir = spool_dir  # the run's own locked directory once open() returns
        self.prefix = node_prefix(settings, deployment_id, node_id)
        self.suffix = suffix
        self.key: str | None = None
        self.removed: list[str] = []  # what dead runs had left in spool_dir
        self.aborted: list[str] = []  # their uploads, older than stale_upload_s
        #: Set when abort() could not abort the upload (the store unreachable): its id.
        self.abort_problem: str | None = None
        self.part_backoff_s = part_backoff_s
        self._client = client
        self._run: RunDir | None = None
        self._stream: MultipartStream | None = None
        self._sidecar: str | None = None

    @property
    def where(self) -> str:
        """s3://bucket/key while writing, else s3://bucket/prefix."""
        return f"s3://{self.settings.bucket}/{self.key or self.prefix}"

    def open(self, name: str) -> tuple[str, IO[bytes]]:
        """Start the multipart upload of `<name><suffix>` (a free variant of it) and the spool."""
        if self._client is None:
            self._client = s3_client(self.settings)
        ensure_spool_dir(self.spool_dir)
        self.removed = remove_dead_runs(self.spool_dir)
        self.aborted = self._abort_stale_uploads()
        for attempt in range(1, MAX_SAME_NAME + 1):
            candidate = name if attempt == 1 else f"{name}-{attempt}"
            key = f"{self.prefix}{candidate}{self.suffix}"
            if self._exists(key):
                continue
            with stop_signals_held():  # created and recorded as one step, so always removed
                self._run = claim_run_dir(self.spool_dir, candidate)
            if self._run is None:
                continue
            self.workdir = self._run.path
            # Not held: a store that is slow to answer must not hold up a Ctrl-C.
            self._stream = self._start_upload(key)
            self.key = key
            return candidate, self._stream  # type: ignore[return-value]
        raise UsageError(f"{self.where}: too many snapshots named {name}*; clean up")

    def commit(self, size_bytes: int, sha256: str) -> ArchiveLocation:
        """Send the last part, write the sha256 sidecar, then complete the upload."""
        assert self._stream is not None and self.key is not None
        parts = self._stream.finish()
        if self._stream.size != size_bytes:
            raise S3UploadError(
                f"{self.where}: {self._stream.size} bytes were uploaded but the archive "
                f"has {size_bytes}; nothing was kept. This is a bug: please report it"
            )
        filename = self.key.rsplit("/", 1)[-1]
        self._request(
            "writing the sha256 sidecar",
            self._client.put_object,
            Key=f"{self.key}{SIDECAR_SUFFIX}",
            Body=f"{sha256}  {filename}\n".encode(),
            ContentType="text/plain",
            Metadata={"agent-version": __version__, "sha256": sha256, "size": str(size_bytes)},
            **sse_arguments(self.settings),
        )
        self._sidecar = f"{self.key}{SIDECAR_SUFFIX}"
        try:
            self._request(
                "completing the upload",
                self._client.complete_multipart_upload,
                Key=self.key,
                UploadId=self._stream.upload_id,
                MultipartUpload={"Parts": parts},
            )
        except S3UploadError:
            if not self._completed_anyway(size_bytes, parts):
                raise
        self._stream, self._sidecar = None, None  # it is the archive now: abort() keeps it
        return ArchiveLocation(
            self.kind, f"s3://{self.settings.bucket}/{self.key}", size_bytes, sha256
        )

    def abort(self) -> None:
        """Abort the upload (unless committed) and remove the spool; never raises."""
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.cancel()
            if not self._abort_upload(stream):
                self.abort_problem = (
                    f"{self.where}: could not abort multipart upload {stream.upload_id}; "
                    "a lifecycle rule (AbortIncompleteMultipartUpload) removes it, or abort it "
                    "by hand"
                )
        if self._sidecar is not None:
            with contextlib.suppress(Exception):
                self._client.delete_object(Bucket=self.settings.bucket, Key=self._sidecar)
            self._sidecar = None
        if self._run is not None:
            self._run.remove()
            self._run = None
        self.workdir = self.spool_dir

    def _start_upload(self, key: str) -> MultipartStream:
        """CreateMultipartUpload at `key`: the first request, so a bad bucket, endpoint or
        credentials are refused here, before any check runs."""
        try:
            created = self._client.create_multipart_upload(
                Bucket=self.settings.bucket,
                Key=key,
                ContentType=content_type(self.suffix),
                Metadata={"agent-version": __version__},
                **sse_arguments(self.settings),
                **checksum_arguments(self._client),
            )
        except Exception as exc:
            self.abort()  # the spool directory
            raise UsageError(explain(exc, self.settings, "starting the upload")) from None
        return MultipartStream(
            self._client,
            self.settings,
            key,
            created["UploadId"],
            part_backoff_s=self.part_backoff_s,
        )

    def _abort_stale_uploads(self) -> list[str]:
        """Abort this node's uploads older than stale_upload_s (a run killed outright left
        them; they cost storage until aborted); best effort: without
        s3:ListBucketMultipartUploads the lifecycle rule is left to do it."""
        try:
            listed = self._client.list_multipart_uploads(
                Bucket=self.settings.bucket, Prefix=self.prefix, MaxUploads=MAX_STALE_LISTED
            )
        except Exception:
            return []
        aborted = []
        for upload in stale_uploads(listed.get("Uploads", []), time.time() - self.stale_upload_s):
            with contextlib.suppress(Exception):
                self._client.abort_multipart_upload(
                    Bucket=self.settings.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                aborted.append(f"s3://{self.settings.bucket}/{upload['Key']}")
        return aborted

    def _exists(self, key: str) -> bool:
        """Whether an object is at `key` already (a 404, or a 403 without s3:ListBucket: not)."""
        from botocore.exceptions import ClientError

        try:
            self._client.head_object(Bucket=self.settings.bucket, Key=key)
        except ClientError:
            return False
        except Exception as exc:  # the store unreachable: say so now, not after more retries
            raise UsageError(
                explain(exc, self.settings, "looking for the archive's name")
            ) from None
        return True

    def _completed_anyway(self, size_bytes: int, parts: list[dict[str, Any]]) -> bool:
        """Whether the archive is at the key although completing it failed.

        The store may complete the upload and lose its answer; the retry then finds no such
        upload (some stores), or times out too. The object at the key is this upload only
        if its ETag is the one a store gives a multipart object made of exactly these parts
        (the MD5 of their ETags, then `-<count>`) and its size is the archive's. A store
        whose ETags are otherwise made is not matched: the failure stands.
        """
        expected = multipart_etag([str(p["ETag"]) for p in parts])
        if expected is None:
            return False
        try:
            head = self._client.head_object(Bucket=self.settings.bucket, Key=self.key)
        except Exception:
            return False
        etag = str(head.get("ETag", "")).strip('"').lower()
        return etag == expected and head.get("ContentLength") == size_bytes

    def _request(self, doing: str, call: Any, **kwargs: Any) -> Any:
        """One request on the bucket; a failure is an S3UploadError in one line."""
        try:
            return call(Bucket=self.settings.bucket, **kwargs)
        except Exception as exc:
            raise S3UploadError(
                f"{explain(exc, self.settings, doing)}; nothing was kept ({self.where})"
            ) from None

    def _abort_upload(self, stream: MultipartStream) -> bool:
        """AbortMultipartUpload, a few times; True once the store has no such upload."""
        from botocore.exceptions import ClientError

        for _ in range(ABORT_TRIES):
            try:
                self._client.abort_multipart_upload(
                    Bucket=self.settings.bucket, Key=stream.key, UploadId=stream.upload_id
                )
                return True
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "NoSuchUpload":
                    return True
            except Exception:
                continue
        return False


class MultipartStream:
    """The writable side of a multipart upload: full parts go to a bounded pool of uploaders."""

    def __init__(
        self,
        client: Any,
        settings: S3Config,
        key: str,
        upload_id: str,
        *,
        part_backoff_s: float = PART_BACKOFF_S,
    ) -> None:
        self.client, self.settings, self.key, self.upload_id = client, settings, key, upload_id
        self.part_size = settings.part_size_mb * MIB
        self.size = 0  # bytes written so far
        self.part_backoff_s = part_backoff_s
        #: The part being filled; handed to an uploader whole, never written to again.
        self._buffer = bytearray()
        self._buffered = 0
        self._number = 0  # of the last part handed to the pool
        self._parts: dict[int, dict[str, Any]] = {}  # number -> PartNumber, ETag, checksum
        self._futures: list[Future[None]] = []
        self._slots = threading.BoundedSemaphore(settings.concurrency)
        self._pool = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="s3-part")
        self._stop = threading.Event()  # set on the first failure, or by cancel()
        self._error: BaseException | None = None

    def writable(self) -> bool:
        """Always: the stream is write-only."""
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Buffer `data`; each full part is handed to the pool (waiting for a free slot)."""
        self._raise_failure()
        view = memoryview(data).cast("B")
        written = len(view)
        while view:
            if not self._buffer:
                self._buffer = bytearray(self.part_size)
            take = min(len(view), self.part_size - self._buffered)
            self._buffer[self._buffered : self._buffered + take] = view[:take]
            self._buffered += take
            self.size += take
            view = view[take:]
            if self._buffered == self.part_size:
                self._send_part()
        return written

    def flush(self) -> None:
        """Wait for the parts in flight (the writer's close calls this before the commit,
        which holds the stop signals: the waiting happens while Ctrl-C still works).

        The buffered rest is not sent: only the last part may be under 5 MiB.
        """
        wait(self._futures)
        self._raise_failure()

    def close(self) -> None:
        """Nothing to do: commit() finishes the upload, abort() cancels it."""

    def finish(self) -> list[dict[str, Any]]:
        """Send the last part and wait for every part; the parts of CompleteMultipartUpload
        in order (PartNumber, ETag and the part's checksum when the store gave one)."""
        if self._buffered or self._number == 0:  # an empty archive is one empty part
            self._send_part()
        wait(self._futures)
        self._pool.shutdown(wait=True)
        self._raise_failure()
        return [self._parts[n] for n in sorted(self._parts)]

    def cancel(self) -> None:
        """Stop sending: parts not started are dropped; those in flight get CANCEL_WAIT_S
        to end (a stalled store must not hold up a Ctrl-C for minutes); never raises."""
        self._stop.set()
        self._buffer = bytearray()
        with contextlib.suppress(Exception):
            self._pool.shutdown(wait=False, cancel_futures=True)
            wait(self._futures, timeout=CANCEL_WAIT_S)

    def _send_part(self) -> None:
        """Hand the buffered bytes to the pool as the next part, once a slot is free."""
        if self._number >= MAX_PARTS:
            raise S3UploadError(
                f"s3://{self.settings.bucket}/{self.key}: the archive is larger than "
                f"{MAX_PARTS} parts of {self.settings.part_size_mb} MiB; raise "
                "storage.s3.part_size_mb; nothing was kept"
            )
        self._slots.acquire()  # memory: at most `concurrency` parts in flight plus this one
        try:
            self._raise_failure()
        except BaseException:
            self._slots.release()
            raise
        body, self._buffer = self._buffer, bytearray()  # the next part's is made when needed
        del body[self._buffered :]  # the last part is shorter
        self._buffered = 0
        self._number += 1
        self._futures = [f for f in self._futures if not f.done()]
        self._futures.append(self._pool.submit(self._upload, self._number, body))

    def _upload(self, number: int, body: bytearray) -> None:
        """Send one part (up to PART_ROUNDS rounds of botocore's retries); record its ETag."""
        try:
            for round_ in range(1, PART_ROUNDS + 1):
                if self._stop.is_set():
                    return
                try:
                    sent = self.client.upload_part(
                        Bucket=self.settings.bucket,
                        Key=self.key,
                        UploadId=self.upload_id,
                        PartNumber=number,
                        Body=body,
                    )
                except Exception as exc:
                    if round_ == PART_ROUNDS or not retryable(exc):
                        raise
                    pause = self.part_backoff_s * 2 ** (round_ - 1)
                    self._stop.wait(pause * random.uniform(0.5, 1.0))
                    continue
                part = {"PartNumber": number, "ETag": sent["ETag"]}
                if sent.get(CHECKSUM_MEMBER):
                    part[CHECKSUM_MEMBER] = sent[CHECKSUM_MEMBER]
                self._parts[number] = part
                return
        except BaseException as exc:
            if self._error is None:
                self._error = exc
            self._stop.set()
        finally:
            self._slots.release()

    def _raise_failure(self) -> None:
        """A part that failed for good ends the archive, in one line."""
        if self._error is not None:
            doing = "uploading a part"
            raise S3UploadError(
                f"{explain(self._error, self.settings, doing)}; the upload was aborted and "
                f"nothing was kept (s3://{self.settings.bucket}/{self.key})"
            ) from None
        if self._stop.is_set():
            raise S3UploadError(f"s3://{self.settings.bucket}/{self.key}: the upload was cancelled")


def multipart_etag(part_etags: list[str]) -> str | None:
    """The ETag S3 gives an object completed from parts with these ETags, or None when a
    part's ETag is not an MD5 (then nothing can be said)."""
    try:
        digests = b"".join(bytes.fromhex(e.strip('"')) for e in part_etags)
    except ValueError:
        return None
    if len(digests) != 16 * len(part_etags):
        return None
    return f"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{len(part_etags)}"


def stale_uploads(uploads: list[dict[str, Any]], cutoff: float) -> list[dict[str, Any]]:
    """The listed uploads initiated before `cutoff` (a Unix time); one without a time is
    left alone."""
    return [u for u in uploads if u.get("Initiated") and u["Initiated"].timestamp() <= cutoff]


def ensure_spool_dir(directory: Path) -> None:
    """The local directory of the run directories exists (0700 when created here)."""
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise _unwritable(directory, exc) from None
    if not directory.is_dir():
        raise UsageError(
            f"storage.local_dir {directory}: not a directory; the evidence spool needs a "
            "writable local directory there"
        )


def claim_run_dir(directory: Path, candidate: str) -> RunDir | None:
    """The locked run directory `.<candidate>.run` in `directory`; None if the name is taken."""
    try:
        return RunDir.claim(directory / f".{candidate}.run")
    except OSError as exc:
        raise _unwritable(directory, exc) from None


def _unwritable(directory: Path, exc: OSError) -> UsageError:
    return UsageError(
        f"storage.local_dir {directory}: cannot write there ({exc.strerror}); make it "
        "writable or point storage.local_dir elsewhere"
    )
