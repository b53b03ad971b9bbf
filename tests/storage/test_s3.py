"""The S3 sink against moto's S3 server over HTTP, with faults injected by a TCP proxy."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
import urllib.request
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from snapshot_agent import __version__
from snapshot_agent.archive.writer import ArchiveWriter, Entry
from snapshot_agent.config import S3Config
from snapshot_agent.errors import SnapshotError, UsageError
from snapshot_agent.storage.presign import presigned_get_url
from snapshot_agent.storage.s3 import (
    MIB,
    STALE_UPLOAD_S,
    UNASSIGNED,
    S3Sink,
    S3UploadError,
    multipart_etag,
    s3_client,
    stale_uploads,
)

from . import FaultProxy, MotoS3, aws_credentials, moto_fixture, proxy_fixture  # noqa: F401

PART = r"partNumber=\d+ "  # in the request line of every UploadPart
COMPLETE = r"^POST .*\?uploadId="  # CompleteMultipartUpload


def settings(bucket: str, endpoint: str, **overrides: Any) -> S3Config:
    """Small parts, two in flight, few attempts: a test's upload takes moments."""
    values: dict[str, Any] = {
        "bucket": bucket,
        "endpoint_url": endpoint,
        "region": "us-east-1",
        "part_size_mb": 5,
        "concurrency": 2,
        "max_attempts": 3,
        **overrides,
    }
    return S3Config(**values)


def sink_for(config: S3Config, tmp_path: Path, read_timeout_s: float = 2.0) -> S3Sink:
    """A sink on node 7 of deployment 42, its spool in tmp_path, short timeouts."""
    client = s3_client(config, connect_timeout_s=2.0, read_timeout_s=read_timeout_s)
    return S3Sink(
        config,
        tmp_path / "spool",
        deployment_id=42,
        node_id=7,
        client=client,
        part_backoff_s=0.05,
    )


def write_archive(stream: Any, size: int = 12 * MIB) -> tuple[int, str]:
    """A real snapshot ZIP of incompressible members, `size` bytes of them."""
    writer = ArchiveWriter(stream)
    members = [Entry(f"raw/test.data/{i}.bin", [os.urandom(MIB)]) for i in range(size // MIB)]
    writer.add_all(members)
    return writer.close()


def pending_uploads(moto: MotoS3, bucket: str) -> list[Any]:
    return moto.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def keys(moto: MotoS3, bucket: str) -> list[str]:
    listed = moto.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    return sorted(o["Key"] for o in listed)


def test_archive_streams_in_parts_with_sse_metadata_and_sidecar(
    moto: MotoS3, proxy: FaultProxy, tmp_path: Path
) -> None:
    bucket = moto.bucket()
    sink = sink_for(settings(bucket, proxy.endpoint, sse="AES256"), tmp_path)
    name, stream = sink.open("snapshot-20260101-120000")
    assert sink.workdir.parent == tmp_path / "spool" and sink.workdir.is_dir()
    size, sha256 = write_archive(stream)
    location = sink.commit(size, sha256)

    key = "snapshots/42/7/snapshot-20260101-120000.zip"
    assert name == "snapshot-20260101-120000"
    assert location.sink == "s3" and location.uri == f"s3://{bucket}/{key}"
    assert (location.size_bytes, location.sha256) == (size, sha256)
    assert proxy.seen(PART) == 3  # 12 MiB and a little: two 5 MiB parts and the rest
    head = moto.client().head_object(Bucket=bucket, Key=key)
    assert head["ServerSideEncryption"] == "AES256"
    assert head["Metadata"] == {"agent-version": __version__}
    body = moto.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == sha256 and len(body) == size
    assert zipfile.ZipFile(io.BytesIO(body)).testzip() is None
    sidecar = moto.client().get_object(Bucket=bucket, Key=key + ".sha256")
    assert sidecar["Body"].read() == f"{sha256}  snapshot-20260101-120000.zip\n".encode()
    assert sidecar["Metadata"]["sha256"] == sha256
    assert pending_uploads(moto, bucket) == []
    sink.abort()  # after the commit: only the local spool directory goes
    assert keys(moto, bucket) == [key, key + ".sha256"]
    assert list((tmp_path / "spool").iterdir()) == []


def test_presigned_get_downloads_the_archive(moto: MotoS3, tmp_path: Path) -> None:
    bucket = moto.bucket()
    config = settings(bucket, moto.endpoint, sse="AES256")
    sink = sink_for(config, tmp_path)
    _, stream = sink.open("snapshot-20260101-120001")
    size, sha256 = write_archive(stream, 6 * MIB)
    sink.commit(size, sha256)
    assert sink.key is not None
    url = presigned_get_url(config, sink.key, client=s3_client(config))
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=900" in url  # SigV4, 15 minutes
    with urllib.request.urlopen(url, timeout=10) as response:  # no credentials: the URL only
        assert hashlib.sha256(response.read()).hexdigest() == sha256


def test_ids_absent_from_the_config_are_unassigned(moto: MotoS3, tmp_path: Path) -> None:
    bucket = moto.bucket()
    config = settings(bucket, moto.endpoint, prefix="diag/snaps/")
    sink = S3Sink(config, tmp_path, client=s3_client(config))
    _, stream = sink.open("snapshot-20260101-120002")
    stream.write(b"tiny")
    sink.commit(4, hashlib.sha256(b"tiny").hexdigest())
    assert sink.key == f"diag/snaps/{UNASSIGNED}/{UNASSIGNED}/snapshot-20260101-120002.zip"


def test_a_name_already_stored_gets_the_next_free_variant(moto: MotoS3, tmp_path: Path) -> None:
    bucket = moto.bucket()
    moto.client().put_object(Bucket=bucket, Key="snapshots/42/7/snapshot-20260101-120003.zip")
    sink = sink_for(settings(bucket, moto.endpoint), tmp_path)
    name, _ = sink.open("snapshot-20260101-120003")
    assert name == "snapshot-20260101-120003-2"
    sink.abort()
    assert pending_uploads(moto, bucket) == []


def test_resets_503s_and_stalls_are_retried(
    moto: MotoS3, proxy: FaultProxy, tmp_path: Path
) -> None:
    bucket = moto.bucket()
    sink = sink_for(settings(bucket, proxy.endpoint), tmp_path, read_timeout_s=1.0)
    proxy.fail(r"\?uploads ", "503")  # CreateMultipartUpload
    proxy.fail("partNumber=1 ", "reset")
    proxy.fail("partNumber=2 ", "503", times=2)
    proxy.fail("partNumber=3 ", "stall")
    proxy.fail(COMPLETE, "reset")
    _, stream = sink.open("snapshot-20260101-120004")
    size, sha256 = write_archive(stream)
    location = sink.commit(size, sha256)

    assert proxy.seen(PART, "pass") == 3
    assert proxy.seen(r"\?uploads ", "503") == proxy.seen(COMPLETE, "reset") == 1
    assert proxy.seen("partNumber=1 ", "reset") == proxy.seen("partNumber=3 ", "stall") == 1
    assert proxy.seen("partNumber=2 ", "503") == 2
    body = moto.client().get_object(Bucket=bucket, Key=sink.key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == location.sha256
    assert pending_uploads(moto, bucket) == []


def test_a_part_that_keeps_failing_aborts_the_upload(
    moto: MotoS3, proxy: FaultProxy, tmp_path: Path
) -> None:
    bucket = moto.bucket()
    sink = sink_for(settings(bucket, proxy.endpoint, max_attempts=2), tmp_path)
    proxy.fail("partNumber=2 ", "503", times=1000)
    _, stream = sink.open("snapshot-20260101-120005")
    assert len(pending_uploads(moto, bucket)) == 1
    with pytest.raises(S3UploadError) as raised:
        size, sha256 = write_archive(stream)
        sink.commit(size, sha256)
    sink.abort()
    message = str(raised.value)
    assert "\n" not in message and "SlowDown" in message and "nothing was kept" in message
    assert f"storage.s3.bucket {bucket}" in message
    # 3 rounds of 2 attempts each (max_attempts), then given up.
    assert proxy.seen("partNumber=2 ", "503") == 6
    assert pending_uploads(moto, bucket) == [] and keys(moto, bucket) == []
    assert list((tmp_path / "spool").iterdir()) == []


def test_a_failed_completion_leaves_no_object_and_no_sidecar(
    moto: MotoS3, proxy: FaultProxy, tmp_path: Path
) -> None:
    bucket = moto.bucket()
    sink = sink_for(settings(bucket, proxy.endpoint), tmp_path)
    _, stream = sink.open("snapshot-20260101-120006")
    size, sha256 = write_archive(stream, 1 * MIB)
    proxy.fail(COMPLETE, "403", times=1000)
    with pytest.raises(S3UploadError, match="access denied while completing the upload"):
        sink.commit(size, sha256)
    sink.abort()
    assert pending_uploads(moto, bucket) == [] and keys(moto, bucket) == []


@pytest.mark.parametrize("retry_answer", ["as-aws", "no-such-upload"])
def test_a_completion_whose_answer_was_lost_is_kept(
    moto: MotoS3, proxy: FaultProxy, tmp_path: Path, retry_answer: str
) -> None:
    """The store completed the upload but its answer never came back. The retry is answered
    200 (AWS, moto) or NoSuchUpload (stores that forget a completed upload at once); either
    way the archive is there, and it is kept and reported, not called lost."""
    bucket = moto.bucket()
    sink = sink_for(settings(bucket, proxy.endpoint), tmp_path)
    _, stream = sink.open(f"snapshot-20260101-120009-{retry_answer}")
    size, sha256 = write_archive(stream)
    proxy.fail(COMPLETE, "lost")
    if retry_answer != "as-aws":
        proxy.fail(COMPLETE, retry_answer, times=1000)
    location = sink.commit(size, sha256)
    sink.abort()  # as the pipeline does in its finally: the committed archive stays

    assert proxy.seen(COMPLETE, "lost") == 1 and proxy.seen(COMPLETE) >= 2
    assert location.size_bytes == size and location.uri == f"s3://{bucket}/{sink.key}"
    body = moto.client().get_object(Bucket=bucket, Key=sink.key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == sha256
    assert sink.key is not None and f"{sink.key}.sha256" in keys(moto, bucket)
    assert pending_uploads(moto, bucket) == []


def test_another_archive_at_the_key_is_not_taken_for_this_one(
    moto: MotoS3, proxy: FaultProxy, tmp_path: Path
) -> None:
    """Completing fails and an object of the same size, made of as many parts by this
    agent, is at the key: its ETag says it is not this upload, so the failure stands."""
    bucket = moto.bucket()
    sink = sink_for(settings(bucket, proxy.endpoint), tmp_path)
    _, stream = sink.open("snapshot-20260101-120010")
    size, sha256 = write_archive(stream)
    direct = moto.client()
    other = direct.create_multipart_upload(
        Bucket=bucket, Key=sink.key, Metadata={"agent-version": __version__}
    )
    parts = []
    for number, part_size in enumerate((5 * MIB, 5 * MIB, size - 10 * MIB), 1):
        sent = direct.upload_part(
            Bucket=bucket,
            Key=sink.key,
            UploadId=other["UploadId"],
            PartNumber=number,
            Body=os.urandom(part_size),
        )
        parts.append({"PartNumber": number, "ETag": sent["ETag"]})
    direct.complete_multipart_upload(
        Bucket=bucket, Key=sink.key, UploadId=other["UploadId"], MultipartUpload={"Parts": parts}
    )
    proxy.fail(COMPLETE, "403", times=1000)
    with pytest.raises(S3UploadError, match="access denied while completing the upload"):
        sink.commit(size, sha256)
    sink.abort()
    assert direct.head_object(Bucket=bucket, Key=sink.key)["ContentLength"] == size
    assert pending_uploads(moto, bucket) == []


def test_the_multipart_etag_is_computed_only_from_md5_part_etags() -> None:
    a, b = hashlib.md5(b"a").hexdigest(), hashlib.md5(b"b").hexdigest()
    joined = bytes.fromhex(a) + bytes.fromhex(b)
    assert multipart_etag([f'"{a}"', b]) == f"{hashlib.md5(joined).hexdigest()}-2"
    assert multipart_etag(['"not-an-md5"']) is None and multipart_etag(["abcd"]) is None


def test_memory_is_bounded_while_the_store_stalls(
    moto: MotoS3, proxy: FaultProxy, tmp_path: Path
) -> None:
    """With every part stalled, the writer stops after part size x (concurrency + 1)."""
    bucket = moto.bucket()
    config = settings(bucket, proxy.endpoint, concurrency=1)
    sink = sink_for(config, tmp_path, read_timeout_s=5.0)
    proxy.fail(PART, "stall")  # the first part: five seconds of no progress
    _, stream = sink.open("snapshot-20260101-120007")
    data = os.urandom(MIB)
    written = threading.Thread(target=lambda: [stream.write(data) for _ in range(16)])
    written.start()
    bound = 2 * 5 * MIB  # one part in flight, one filling
    deadline = time.monotonic() + 4
    while stream.size < bound and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    assert written.is_alive() and stream.size == bound
    written.join(30)
    sink.commit(16 * MIB, hashlib.sha256(data * 16).hexdigest())
    assert proxy.seen(PART, "pass") == 4
    assert pending_uploads(moto, bucket) == []


def test_an_abandoned_archive_is_aborted(moto: MotoS3, tmp_path: Path) -> None:
    bucket = moto.bucket()
    sink = sink_for(settings(bucket, moto.endpoint), tmp_path)
    _, stream = sink.open("snapshot-20260101-120008")
    stream.write(os.urandom(11 * MIB))  # two parts sent, one buffered
    sink.abort()
    assert pending_uploads(moto, bucket) == [] and keys(moto, bucket) == []
    assert sink.abort_problem is None


def test_a_missing_bucket_is_named_before_anything_runs(moto: MotoS3, tmp_path: Path) -> None:
    sink = sink_for(settings("no-such-bucket", moto.endpoint), tmp_path)
    with pytest.raises(UsageError) as raised:
        sink.open("snapshot-20260101-120009")
    message = str(raised.value)
    assert message.startswith("storage.s3.bucket no-such-bucket: no such bucket at http://")
    assert "create it" in message
    assert list((tmp_path / "spool").iterdir()) == []


def test_an_unreachable_endpoint_is_one_line(tmp_path: Path) -> None:
    with socket_closed() as port:
        config = settings("diag", f"http://127.0.0.1:{port}", max_attempts=1)
        with pytest.raises(UsageError) as raised:
            sink_for(config, tmp_path).open("snapshot-20260101-120010")
    message = str(raised.value)
    assert f"cannot reach http://127.0.0.1:{port}" in message and "\n" not in message


def test_no_credentials_is_one_line(
    moto: MotoS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(UsageError) as raised:
        S3Sink(settings("diag", moto.endpoint), tmp_path).open("snapshot-20260101-120011")
    assert str(raised.value).startswith("storage.s3.bucket diag: no AWS credentials found")


def test_wrong_credentials_are_named(moto: MotoS3, proxy: FaultProxy, tmp_path: Path) -> None:
    assert issubclass(S3UploadError, SnapshotError)  # exit 2, one line, through the CLI
    bucket = moto.bucket()
    proxy.fail(r"\?uploads ", "403")
    with pytest.raises(UsageError, match=f"storage.s3.bucket {bucket}: access denied"):
        sink_for(settings(bucket, proxy.endpoint), tmp_path).open("snapshot-20260101-120012")


class socket_closed:
    """A port on 127.0.0.1 that nothing listens on (bound, then closed)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])

    def __exit__(self, *_exc: object) -> None:
        return None


def test_uploads_a_killed_run_left_are_aborted_by_the_next(moto: MotoS3, tmp_path: Path) -> None:
    """A run killed outright cannot abort its upload; the next run on the node does (moto
    dates every upload 2010, so it is stale), and leaves other nodes' uploads alone."""
    bucket = moto.bucket()
    client = moto.client()
    mine = client.create_multipart_upload(Bucket=bucket, Key="snapshots/42/7/snapshot-1.zip")
    other = client.create_multipart_upload(Bucket=bucket, Key="snapshots/42/8/snapshot-1.zip")
    sink = sink_for(settings(bucket, moto.endpoint), tmp_path)
    sink.open("snapshot-20260101-120011")
    assert sink.aborted == [f"s3://{bucket}/snapshots/42/7/snapshot-1.zip"]
    sink.abort()
    left = {u["UploadId"] for u in pending_uploads(moto, bucket)}
    assert left == {other["UploadId"]} and mine["UploadId"] not in left


def test_only_uploads_older_than_the_cutoff_are_stale() -> None:
    now = datetime.now(UTC)
    uploads = [
        {"Key": "old", "Initiated": now - timedelta(days=2)},
        {"Key": "live", "Initiated": now - timedelta(minutes=5)},
        {"Key": "undated"},
    ]
    cutoff = now.timestamp() - STALE_UPLOAD_S
    assert [u["Key"] for u in stale_uploads(uploads, cutoff)] == ["old"]
