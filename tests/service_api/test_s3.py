"""With storage.s3 (moto's S3 server on 127.0.0.1): download is a presigned URL, delete and
retention remove the object and its .sha256 sidecar."""

from __future__ import annotations

import os
import time
import urllib.request
from pathlib import Path
from typing import Any

from ..conftest import run_cli
from ..storage import MotoS3, aws_credentials, moto_fixture  # noqa: F401
from .conftest import ENV, Server


def keys(moto: MotoS3, bucket: str) -> list[str]:
    listing = moto.client().list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def test_presigned_download_then_delete_and_retention_in_s3(
    serve: Any, moto: MotoS3, tmp_path: Path
) -> None:
    bucket = moto.bucket()
    server: Server = serve(
        storage={
            "local_dir": str(tmp_path / "spool"),
            "s3": {"bucket": bucket, "region": "us-east-1", "endpoint_url": moto.endpoint},
        },
        node={"deployment_id": 611298765432109056, "node_id": 610809900976570889},
        retention={"max_count": 1},
    )
    env = {
        **ENV,
        **{k: v for k, v in os.environ.items() if k.startswith("AWS_")},
        "HOME": str(tmp_path),
    }
    server.start(env=env)
    first = server.snapshot()
    assert first["status"] == "completed", first
    prefix = "snapshots/611298765432109056/610809900976570889/"
    key = f"{prefix}{first['name']}.zip"
    assert keys(moto, bucket) == [key, key + ".sha256"]

    download = server.get(f"/v1/snapshots/{first['id']}/download")
    assert download.status == 200 and download.headers["cache-control"] == "no-store"
    url = download.json()["url"]
    assert url.startswith(f"{moto.endpoint}/{bucket}/{key}?") and "Signature" in url
    with urllib.request.urlopen(url, timeout=30) as response:
        archive = response.read()
    assert len(archive) == first["size_bytes"]
    saved = tmp_path / "got.zip"
    saved.write_bytes(archive)
    assert run_cli("verify", saved).returncode == 0

    second = server.snapshot()  # max_count 1: the first one's object and sidecar go
    kept = f"{prefix}{second['name']}.zip"
    deadline = time.monotonic() + 30  # retention runs just after the record is completed
    # The archive goes before its record: poll for both.
    while (
        keys(moto, bucket) != [kept, kept + ".sha256"]
        or server.get(f"/v1/snapshots/{first['id']}").status != 404
    ):
        assert time.monotonic() < deadline, keys(moto, bucket)
        time.sleep(0.1)

    assert server.request("DELETE", f"/v1/snapshots/{second['id']}").status == 204
    assert keys(moto, bucket) == []
    assert server.get("/v1/snapshots").json()["total_results"] == 0
    assert server.stop() == 0
    assert "Traceback" not in server.logs(), server.logs()
