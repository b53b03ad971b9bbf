"""The service serves and removes only archives directly in storage.local_dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from snapshot_agent.config import StorageConfig
from snapshot_agent.pipeline.record import ArchiveLocation, SnapshotOptions, SnapshotStatus
from snapshot_agent.service.archives import ArchiveError, Archives
from snapshot_agent.service.records import Record

NAME = "snapshot-20260101-120000.zip"


def record(path: Path) -> Record:
    location = ArchiveLocation("local", str(path), 7, "0" * 64)
    return Record(
        1, NAME[:-4], 7, 42, SnapshotStatus.COMPLETED, "2026-01-01T12:00:00Z",
        "2026-01-01T12:00:01Z", SnapshotOptions(), location=location,
    )  # fmt: skip


def test_a_record_pointing_elsewhere_is_neither_served_nor_removed(tmp_path: Path) -> None:
    store, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    store.mkdir()
    elsewhere.mkdir()
    (elsewhere / NAME).write_bytes(b"not ours")
    (store / "link").symlink_to(elsewhere)  # a symlinked parent leads out too
    archives = Archives(StorageConfig(local_dir=str(store)))
    for path in (elsewhere / NAME, store / "link" / NAME):
        assert archives.local_path(record(path)) is None
        with pytest.raises(ArchiveError, match=r"not in storage\.local_dir"):
            archives.remove(record(path))
    assert (elsewhere / NAME).read_bytes() == b"not ours"
    (store / NAME).write_bytes(b"ours")
    assert archives.local_path(record(store / NAME)) == store / NAME
    archives.remove(record(store / NAME))
    assert not (store / NAME).exists()
