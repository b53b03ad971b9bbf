"""A snapshot with the Iggy data bundle (full mode) streams to S3 and to a local directory
with memory flat in the data's size: the same peak RSS for 32 MiB and 512 MiB of segments.

Segments are sparse files (zeros), so the large tree costs no disk; the bytes still pass
through the walk, the deflate threads, the outer archive and the multipart upload.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from tests.conftest import run_measured
from tests.iggy.fixture import Spec, build

from . import MotoS3, aws_credentials, moto_fixture  # noqa: F401

MIB = 1024 * 1024
#: Allowed growth of peak RSS from the small tree to the 16 times larger one.
SLACK = 24 * MIB


def node_with(tmp_path: Path, total: int) -> Path:
    """A 0.8 data dir whose 8 segments hold `total` bytes (sparse)."""
    node = tmp_path / "node"
    build(node, Spec(layout="0.8", partitions=2, segments=4, segment_bytes=total // 8))
    return node


def agent_config(tmp_path: Path, node: Path, storage: str) -> Path:
    """Full-mode bundle of the fixture's data dir; `storage` is the storage section."""
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        f"iggy: {{data_dir: {node / 'var/lib/iggy/local_data'}}}\n"
        "archive: {iggy_mode: full, iggy_max_bytes: 2147483648}\n" + storage
    )
    return config


def peak(tmp_path: Path, total: int, storage: str, *args: str) -> tuple[int, dict]:
    """Peak RSS of `run` on a tree of `total` bytes, and its --json outline."""
    node = node_with(tmp_path, total)
    config = agent_config(tmp_path, node, storage)
    proc, rss = run_measured(
        tmp_path, "run", "-c", config, "--only", "system.info", "--json", "-q", *args,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return rss, json.loads(proc.stdout)


def test_memory_is_flat_in_data_size_to_s3(tmp_path: Path, moto: MotoS3) -> None:
    bucket = moto.bucket()
    storage = (
        f"storage:\n  local_dir: {tmp_path / 'spool'}\n"
        f"  s3: {{bucket: {bucket}, region: us-east-1, endpoint_url: '{moto.endpoint}', "
        "part_size_mb: 5}\n"
    )
    small, _ = peak(tmp_path / "small", 32 * MIB, storage)
    large, outline = peak(tmp_path / "large", 512 * MIB, storage)
    assert large <= small + SLACK, (small // MIB, large // MIB)
    key = outline["path"].removeprefix(f"s3://{bucket}/")
    stored = moto.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    archive = tmp_path / "stored.zip"
    archive.write_bytes(stored)
    with zipfile.ZipFile(archive) as outer:
        assert "iggy-data.zip" in outer.namelist()


def test_memory_is_flat_in_data_size_to_a_local_dir(tmp_path: Path) -> None:
    small, _ = peak(tmp_path / "small", 32 * MIB, "", "-o", str(tmp_path / "out-small"))
    large, outline = peak(tmp_path / "large", 512 * MIB, "", "-o", str(tmp_path / "out-large"))
    assert large <= small + SLACK, (small // MIB, large // MIB)
    with zipfile.ZipFile(outline["path"]) as outer:
        bundled = outer.getinfo("iggy-data.zip")
        assert bundled.file_size > 0
