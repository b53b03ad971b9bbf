"""A snapshot with the Iggy data bundle (full mode) streams to S3 and to a local directory
with memory flat in the data's size: the same peak RSS (within SLACK) for SMALL and LARGE
(8 times as much) of segments.

The segments hold random bytes, which deflate cannot shrink: every byte of them passes
through the walk, the deflate threads and the outer archive, and comes out the other side
as about as many bytes for the multipart upload (LARGE makes about 50 parts of 5 MiB) or
the local file. They are written a chunk at a time, so the test holds no more than a chunk.
The S3 upload runs with `concurrency: 2`, so its part buffers (5 MiB x 3) are all in use
with SMALL already: what could still grow with the data would show as the difference.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from tests.conftest import run_measured
from tests.iggy.fixture import Spec, build

from . import MotoS3, aws_credentials, moto_fixture  # noqa: F401

MIB = 1024 * 1024
#: The two data sizes: 8 segments of 4 MiB, then of 32 MiB.
SMALL, LARGE = 32 * MIB, 256 * MIB
#: Allowed growth of peak RSS from the SMALL tree to the LARGE one.
SLACK = 24 * MIB
#: Random bytes are written this much at a time.
CHUNK = MIB


def node_with(tmp_path: Path, total: int) -> Path:
    """A 0.8 data dir whose 8 segments hold `total` bytes of random (incompressible) data."""
    node = tmp_path / "node"
    built = build(node, Spec(layout="0.8", partitions=2, segments=4, segment_bytes=total // 8))
    segments = sorted(built.data_dir.rglob("*.log"))
    segments = [s for s in segments if s.stat().st_size == total // 8]
    assert len(segments) == 8, segments
    for segment in segments:  # the fixture's sparse zeros, overwritten in place
        with segment.open("r+b") as file:
            for _ in range(total // 8 // CHUNK):
                file.write(os.urandom(CHUNK))
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
        "part_size_mb: 5, concurrency: 2}\n"
    )
    small, _ = peak(tmp_path / "small", SMALL, storage)
    large, outline = peak(tmp_path / "large", LARGE, storage)
    assert large <= small + SLACK, (small // MIB, large // MIB)
    key = outline["path"].removeprefix(f"s3://{bucket}/")
    archive = tmp_path / "stored.zip"
    moto.client().download_file(bucket, key, str(archive))
    # The upload carried the data, not a deflated trace of it.
    assert archive.stat().st_size > LARGE
    with zipfile.ZipFile(archive) as outer:
        assert outer.getinfo("iggy-data.zip").compress_size > LARGE


def test_memory_is_flat_in_data_size_to_a_local_dir(tmp_path: Path) -> None:
    small, _ = peak(tmp_path / "small", SMALL, "", "-o", str(tmp_path / "out-small"))
    large, outline = peak(tmp_path / "large", LARGE, "", "-o", str(tmp_path / "out-large"))
    assert large <= small + SLACK, (small // MIB, large // MIB)
    assert Path(outline["path"]).stat().st_size > LARGE
    with zipfile.ZipFile(outline["path"]) as outer:
        assert outer.getinfo("iggy-data.zip").compress_size > LARGE
