"""Presigned URLs against moto's S3 server: `url NAME` downloads, and uploads to a given PUT URL."""

from __future__ import annotations

import hashlib
import io
import os
import urllib.request
from pathlib import Path

import pytest

from snapshot_agent.config import Config, NodeConfig, S3Config, StorageConfig
from snapshot_agent.errors import SnapshotError, UsageError
from snapshot_agent.storage.command import archive_url, print_archive_url
from snapshot_agent.storage.presign import PresignedPutSink, PutRetry
from snapshot_agent.storage.s3 import MIB, S3Sink, s3_client

from . import FaultProxy, MotoS3, aws_credentials, moto_fixture, proxy_fixture  # noqa: F401

FAST = PutRetry(backoff_s=0.05)


def node_config(bucket: str, endpoint: str, **s3: object) -> Config:
    """A config naming the node (deployment 42, node 7) and the bucket."""
    settings = S3Config(bucket=bucket, endpoint_url=endpoint, region="us-east-1", **s3)  # type: ignore[arg-type]
    return Config(node=NodeConfig(deployment_id=42, node_id=7), storage=StorageConfig(s3=settings))


def store(config: Config, tmp_path: Path, name: str, data: bytes, suffix: str = ".zip") -> str:
    """Upload `data` as archive `name` through the S3 sink; its sha256."""
    assert config.storage.s3 is not None
    sink = S3Sink(config.storage.s3, tmp_path, deployment_id=42, node_id=7, suffix=suffix)
    _, stream = sink.open(name)
    stream.write(data)
    sha256 = hashlib.sha256(data).hexdigest()
    sink.commit(len(data), sha256)
    return sha256


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


def test_url_prints_a_link_that_downloads_the_archive(moto: MotoS3, tmp_path: Path) -> None:
    config = node_config(moto.bucket(), moto.endpoint, presign_ttl_s=60)
    data = os.urandom(6 * MIB)
    sha256 = store(config, tmp_path, "snapshot-20260101-130000", data)
    out = io.StringIO()
    assert print_archive_url(config, "snapshot-20260101-130000", out) == 0
    url = out.getvalue().strip()
    assert "/snapshots/42/7/snapshot-20260101-130000.zip?" in url and "X-Amz-Expires=60" in url
    assert hashlib.sha256(fetch(url)).hexdigest() == sha256
    assert archive_url(config, "snapshot-20260101-130000.zip", ttl_s=30).count("Expires=30") == 1


def test_url_finds_an_encrypted_archive(moto: MotoS3, tmp_path: Path) -> None:
    config = node_config(moto.bucket(), moto.endpoint)
    store(config, tmp_path, "snapshot-20260101-130001", b"sealed", suffix=".zip.enc")
    assert fetch(archive_url(config, "snapshot-20260101-130001")) == b"sealed"


def test_url_of_a_missing_archive_is_one_line(moto: MotoS3) -> None:
    bucket = moto.bucket()
    with pytest.raises(UsageError) as raised:
        archive_url(node_config(bucket, moto.endpoint), "snapshot-20260101-130002")
    assert str(raised.value) == (
        f"url: no archive snapshot-20260101-130002 in s3://{bucket}/snapshots/42/7/ (or no "
        "permission to read it); check the name `run` printed, and node.deployment_id and "
        "node.node_id"
    )


@pytest.mark.parametrize("name", ["../other/snapshot", "a/b", "", "x\ny", "-rf"])
def test_url_refuses_what_is_not_a_name(moto: MotoS3, name: str) -> None:
    with pytest.raises(UsageError, match="is not an archive name"):
        archive_url(node_config("diag", moto.endpoint), name)


def test_url_without_s3_storage_says_so() -> None:
    with pytest.raises(UsageError, match=r"no storage\.s3 in the config"):
        archive_url(Config(), "snapshot-20260101-130003")


def put_url(moto: MotoS3, bucket: str, key: str, endpoint: str) -> str:
    """A presigned PUT URL, as the control plane would hand one to the agent."""
    client = s3_client(S3Config(bucket=bucket, endpoint_url=endpoint, region="us-east-1"))
    return str(
        client.generate_presigned_url(
            "put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=300
        )
    )


def test_presigned_put_stages_then_uploads_through_faults(
    moto: MotoS3, proxy: FaultProxy, tmp_path: Path
) -> None:
    bucket = moto.bucket()
    url = put_url(moto, bucket, "given/key.zip", proxy.endpoint)
    proxy.fail("^PUT ", "reset")
    proxy.fail("^PUT ", "503")
    sink = PresignedPutSink(url, tmp_path, estimate_bytes=64 * MIB, retry=FAST)
    name, stream = sink.open("snapshot-20260101-130004")
    assert sink.workdir.parent == tmp_path
    staged = sink.workdir / "snapshot-20260101-130004.zip"
    data = os.urandom(7 * MIB)
    stream.write(data)
    assert name == "snapshot-20260101-130004" and staged.is_file()
    assert staged.stat().st_mode & 0o777 == 0o600
    location = sink.commit(len(data), hashlib.sha256(data).hexdigest())
    assert location.uri == f"{proxy.endpoint}/{bucket}/given/key.zip"  # no signature in it
    assert proxy.seen("^PUT ") == 3 and proxy.seen("^PUT ", "pass") == 1
    got = moto.client().get_object(Bucket=bucket, Key="given/key.zip")["Body"].read()
    assert hashlib.sha256(got).hexdigest() == location.sha256
    assert list(tmp_path.iterdir()) == []  # the staged copy and its directory are gone


def test_a_refused_presigned_put_is_final_and_one_line(
    moto: MotoS3, proxy: FaultProxy, tmp_path: Path
) -> None:
    bucket = moto.bucket()
    url = put_url(moto, bucket, "given/key.zip", proxy.endpoint)
    proxy.fail("^PUT ", "403", times=100)
    sink = PresignedPutSink(url, tmp_path, estimate_bytes=MIB, retry=FAST)
    _, stream = sink.open("snapshot-20260101-130005")
    stream.write(b"archive")
    with pytest.raises(SnapshotError) as raised:
        sink.commit(7, hashlib.sha256(b"archive").hexdigest())
    sink.abort()
    message = str(raised.value)
    assert "HTTP 403: AccessDenied" in message and "ask for a new one" in message
    assert "Signature" not in message and "?" not in message and "\n" not in message
    assert proxy.seen("^PUT ") == 1  # a 4xx is not retried
    assert list(tmp_path.iterdir()) == []


def test_presigned_put_gives_up_after_its_attempts(
    moto: MotoS3, proxy: FaultProxy, tmp_path: Path
) -> None:
    url = put_url(moto, moto.bucket(), "k.zip", proxy.endpoint)
    proxy.fail("^PUT ", "reset", times=100)
    sink = PresignedPutSink(url, tmp_path, estimate_bytes=MIB, retry=PutRetry(3, 0.01))
    _, stream = sink.open("snapshot-20260101-130006")
    stream.write(b"archive")
    with pytest.raises(SnapshotError, match="failed 3 times"):
        sink.commit(7, hashlib.sha256(b"archive").hexdigest())
    sink.abort()
    assert proxy.seen("^PUT ") == 3
    assert list(tmp_path.iterdir()) == []


def test_presigned_put_needs_room_for_the_estimate(tmp_path: Path) -> None:
    sink = PresignedPutSink("http://127.0.0.1:9/b/k?X-Amz-Signature=s", tmp_path, 1 << 50)
    with pytest.raises(UsageError) as raised:
        sink.open("snapshot-20260101-130007")
    assert f"staging directory {tmp_path}:" in str(raised.value)
    assert "or use S3 storage, which streams" in str(raised.value)
    assert list(tmp_path.iterdir()) == []
