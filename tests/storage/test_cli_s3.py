"""The real CLI into object storage: run -> url -> download -> verify, signed, with the
store's server-side encryption, and encrypted to recipients (-> decrypt) as well."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

from tests.conftest import run_cli

from . import FaultProxy, MotoS3, aws_credentials, moto_fixture, proxy_fixture  # noqa: F401

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def config(tmp_path: Path, moto: MotoS3, bucket: str, extra: str = "") -> Path:
    """An agent config that stores archives in `bucket` on the moto server."""
    path = tmp_path / "agent.yaml"
    path.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        "node: {deployment_id: 611298765432109056, node_id: 610809900976570889}\n"
        f"storage:\n  local_dir: {tmp_path / 'spool'}\n"
        f"  s3: {{bucket: {bucket}, region: us-east-1, endpoint_url: '{moto.endpoint}', "
        "part_size_mb: 5, sse: AES256}\n" + extra
    )
    return path


def env(tmp_path: Path) -> dict[str, str]:
    """Dummy credentials, and no shared AWS files to find."""
    return {**CREDENTIALS, "AWS_CONFIG_FILE": os.devnull, "HOME": str(tmp_path)}


def run_to_s3(tmp_path: Path, cfg: Path, bucket: str, suffix: str) -> tuple[str, str]:
    """`run` one quick check into the store; the archive's name and its object's key."""
    run = run_cli("run", "-c", cfg, "--only", "system.info", "--json", "-q", env=env(tmp_path))
    assert run.returncode == 0, run.stderr
    outline = json.loads(run.stdout)
    key = f"snapshots/611298765432109056/610809900976570889/{outline['name']}{suffix}"
    assert outline["path"] == f"s3://{bucket}/{key}"
    return outline["name"], key


def download(tmp_path: Path, cfg: Path, name: str, to: Path) -> None:
    """Fetch archive `name` through the presigned URL `url` prints (no credentials)."""
    url = run_cli("url", "-c", cfg, name, env=env(tmp_path))
    assert url.returncode == 0, url.stderr
    with urllib.request.urlopen(url.stdout.strip(), timeout=30) as answer:
        to.write_bytes(answer.read())


def test_run_to_s3_then_url_download_and_verify(tmp_path: Path, moto: MotoS3) -> None:
    bucket = moto.bucket()
    (tmp_path / "state").mkdir()  # an installed agent: its node key signs the manifest
    cfg = config(tmp_path, moto, bucket)
    name, key = run_to_s3(tmp_path, cfg, bucket, ".zip")
    head = moto.client().head_object(Bucket=bucket, Key=key)
    assert head["ServerSideEncryption"] == "AES256"
    assert not moto.client().list_multipart_uploads(Bucket=bucket).get("Uploads")
    # Nothing but the spool's parent is left locally.
    assert not [p for p in (tmp_path / "spool").iterdir()]

    archive = tmp_path / "downloaded.zip"
    download(tmp_path, cfg, name, archive)
    public = tmp_path / "state/keys/node-ed25519.pub"
    verify = run_cli("verify", archive, "--public-key", public)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "signature: valid" in verify.stdout


def test_a_missing_bucket_is_one_line_and_nothing_runs(tmp_path: Path, moto: MotoS3) -> None:
    cfg = config(tmp_path, moto, "no-such-bucket-here")
    run = run_cli("run", "-c", cfg, "--only", "system.info", "-q", env=env(tmp_path))
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "no-such-bucket-here" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


def test_url_of_a_name_that_is_not_there(tmp_path: Path, moto: MotoS3) -> None:
    cfg = config(tmp_path, moto, moto.bucket())
    url = run_cli("url", "-c", cfg, "snapshot-20000101-000000", env=env(tmp_path))
    assert url.returncode == 2 and "no archive snapshot-20000101-000000" in url.stderr


def presigned_put(moto: MotoS3, bucket: str, key: str) -> str:
    """A PUT URL signed by someone else (the control plane), as the node would get it."""
    return str(
        moto.client().generate_presigned_url(
            "put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=300
        )
    )


def test_run_uploads_to_a_given_presigned_url_then_verifies(tmp_path: Path, moto: MotoS3) -> None:
    bucket, stage = moto.bucket(), tmp_path / "stage"
    url_file = tmp_path / "url.txt"
    url_file.write_text(presigned_put(moto, bucket, "cp/given-name.zip") + "\n")
    # No credentials at all: the URL is the only authority the node needs.
    run = run_cli(
        "run", "--upload-url-file", url_file, "-o", stage, "--only", "system.info",
        "--json", "-q", env={"HOME": str(tmp_path), "AWS_CONFIG_FILE": os.devnull},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    outline = json.loads(run.stdout)
    assert outline["path"] == f"{moto.endpoint}/{bucket}/cp/given-name.zip"  # no signature
    assert "Signature" not in run.stdout + run.stderr
    archive = tmp_path / "got.zip"
    archive.write_bytes(
        moto.client().get_object(Bucket=bucket, Key="cp/given-name.zip")["Body"].read()
    )
    verify = run_cli("verify", archive)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert list(stage.iterdir()) == []  # the staged copy is gone once uploaded


def test_a_refused_presigned_url_fails_cleanly(tmp_path: Path, moto: MotoS3) -> None:
    stage = tmp_path / "stage"
    url = presigned_put(moto, "no-such-bucket-here", "k.zip")
    run = run_cli(
        "run", "--upload-url", url, "-o", stage, "--only", "system.info", "-q",
        env={"HOME": str(tmp_path), "AWS_CONFIG_FILE": os.devnull},
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and "refused (HTTP 404: NoSuchBucket)" in run.stderr
    assert "Signature" not in run.stderr and "Traceback" not in run.stderr
    assert list(stage.iterdir()) == []


def test_an_empty_url_file_is_bad_input(tmp_path: Path) -> None:
    empty = tmp_path / "url.txt"
    empty.write_text("\n")
    run = run_cli("run", "--upload-url-file", empty, "-o", tmp_path, "-q")
    assert run.returncode == 2
    assert (
        run.stderr
        == f"snapshot-agent: --upload-url-file {empty}: empty; put the presigned PUT URL in it\n"
    )
    assert list(tmp_path.iterdir()) == [empty]


def test_an_upload_the_store_will_not_abort_is_named(
    tmp_path: Path, moto: MotoS3, proxy: FaultProxy
) -> None:
    """The part is refused, then so is every AbortMultipartUpload: the run fails in one
    line, and a second says which upload is left and how it goes away."""
    bucket = moto.bucket()
    cfg = config(tmp_path, moto, bucket)
    cfg.write_text(
        cfg.read_text()
        .replace(moto.endpoint, proxy.endpoint)
        .replace("sse:", "max_attempts: 1, sse:")
    )
    proxy.fail(r"partNumber=\d+ ", "403", times=100)
    proxy.fail("^DELETE ", "503", times=100)
    run = run_cli("run", "-c", cfg, "--only", "system.info", "-q", env=env(tmp_path))
    assert run.returncode == 2, run.stderr
    first, also = run.stderr.splitlines()
    assert "access denied while uploading a part" in first
    assert also.startswith("snapshot-agent: also: s3://") and "could not abort multipart" in also
    assert "AbortIncompleteMultipartUpload" in also
    upload = moto.client().list_multipart_uploads(Bucket=bucket)["Uploads"][0]["UploadId"]
    assert upload in also


def test_a_url_file_longer_than_a_url_is_bad_input(tmp_path: Path) -> None:
    long = tmp_path / "url.txt"
    long.write_text("http://127.0.0.1:9/b/k?X-Amz-Signature=" + "a" * 70_000 + "\n")
    run = run_cli("run", "--upload-url-file", long, "-o", tmp_path, "-q")
    assert run.returncode == 2 and "its first line is longer than 65536" in run.stderr
    assert list(tmp_path.iterdir()) == [long]


def test_encrypted_run_to_s3_then_url_download_decrypt_and_verify(
    tmp_path: Path, moto: MotoS3
) -> None:
    """archive.encrypt_to with storage.s3: the object is the sealed .zip.enc, served as
    bytes (not application/zip); downloaded through `url`, `decrypt` gives back the
    signed ZIP that `verify` accepts."""
    keys = tmp_path / "keys"
    keygen = run_cli("keygen", "--out", keys)
    assert keygen.returncode == 0, keygen.stderr
    bucket = moto.bucket()
    (tmp_path / "state").mkdir()
    recipient = keys / "snapshot-recipient.pub"
    cfg = config(tmp_path, moto, bucket, f"archive: {{encrypt_to: ['{recipient}']}}\n")
    name, key = run_to_s3(tmp_path, cfg, bucket, ".zip.enc")
    head = moto.client().head_object(Bucket=bucket, Key=key)
    assert head["ContentType"] == "application/octet-stream"
    assert head["ServerSideEncryption"] == "AES256"

    sealed = tmp_path / f"{name}.zip.enc"
    download(tmp_path, cfg, name, sealed)
    assert not sealed.read_bytes().startswith(b"PK")  # sealed: no ZIP to be read
    refused = run_cli("verify", sealed)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    opened = run_cli("decrypt", sealed, "--key", keys / "snapshot-recipient.pem")
    assert opened.returncode == 0, opened.stderr
    archive = Path(opened.stdout.strip())
    assert archive == tmp_path / f"{name}.zip"
    public = tmp_path / "state/keys/node-ed25519.pub"
    verify = run_cli("verify", archive, "--public-key", public)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "signature: valid" in verify.stdout
