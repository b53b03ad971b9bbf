"""Retention: plan presets and overrides, which records expire (ties, the clock's edges),
and applying it to a real store with archives that cannot always be removed."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from snapshot_agent.config import NodeConfig, RetentionConfig
from snapshot_agent.pipeline.record import ArchiveLocation, SnapshotOptions, SnapshotStatus
from snapshot_agent.service import retention
from snapshot_agent.service.records import Completion, Record, RecordStore, Summary
from snapshot_agent.service.retention import Policy, select_expired

NOW = datetime(2026, 6, 30, 12, 0, 0, tzinfo=UTC)
ISO = "%Y-%m-%dT%H:%M:%SZ"


def record(id: int, age: timedelta, status: str = "completed") -> Record:
    """A synthetic record created `age` before NOW."""
    return Record(
        id=id,
        name=f"snapshot-{id}",
        node_id=1,
        deployment_id=2,
        status=SnapshotStatus(status),
        created_at=(NOW - age).strftime(ISO),
        completed_at=None,
        options=SnapshotOptions(),
    )


def ids(records: Iterable[Record]) -> list[int]:
    return [r.id for r in records]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (RetentionConfig(plan="basic"), Policy(3, 7)),
        (RetentionConfig(plan="pro"), Policy(5, 14)),
        (RetentionConfig(), Policy(5, 14)),  # pro is the default plan
        (RetentionConfig(plan="enterprise"), Policy(20, 90)),
        (RetentionConfig(plan="basic", max_count=10), Policy(10, 7)),
        (RetentionConfig(plan="enterprise", max_age_days=1), Policy(20, 1)),
        (RetentionConfig(plan=None, max_count=2), Policy(2, None)),
        (RetentionConfig(plan=None), Policy(None, None)),
    ],
)
def test_a_plan_gives_the_limits_and_explicit_settings_override_them(
    config: RetentionConfig, expected: Policy
) -> None:
    assert retention.policy(config) == expected


def test_beyond_max_count_the_oldest_go_and_ids_break_ties_of_the_same_second() -> None:
    same_second = [record(i, timedelta(hours=1)) for i in (4, 2, 5, 1, 3)]
    assert ids(select_expired(same_second, Policy(3, None), NOW)) == [1, 2]
    # the clock stepped back: id 6 is dated before the others, and is still the newest
    stepped = [*same_second, record(6, timedelta(days=1))]
    assert ids(select_expired(stepped, Policy(3, None), NOW)) == [1, 2, 3]


def test_the_age_limit_keeps_a_record_exactly_at_it_and_one_from_the_future() -> None:
    records = [
        record(1, timedelta(days=14, seconds=1)),
        record(2, timedelta(days=14)),
        record(3, timedelta(days=-1)),  # dated tomorrow: a clock set back since
        record(4, timedelta(0)),
    ]
    assert ids(select_expired(records, Policy(None, 14), NOW)) == [1]


def test_both_limits_together_expire_each_record_once() -> None:
    records = [record(i, timedelta(days=2 * (11 - i))) for i in range(1, 11)]  # 20 .. 2 days
    # 1-5 are beyond the newest five, and old too; 6 and 7 (10 and 8 days) only old
    assert ids(select_expired(records, Policy(5, 7), NOW)) == [1, 2, 3, 4, 5, 6, 7]
    assert select_expired(records, Policy(None, None), NOW) == []


def test_processing_never_expires_and_failures_are_counted_apart() -> None:
    records = [
        record(1, timedelta(days=400), "processing"),
        record(2, timedelta(days=3), "completed"),
        record(3, timedelta(days=2), "completed"),
        *(record(i, timedelta(days=1), "failed") for i in range(4, 10)),
    ]
    expired = select_expired(records, Policy(2, 7), NOW)
    # six failures in a row do not push out the two good archives before them
    assert ids(expired) == [4, 5, 6, 7]
    assert {r.status for r in expired} == {SnapshotStatus.FAILED}
    assert select_expired(records, Policy(1, 1), NOW)[0].id == 2
    assert 1 not in ids(select_expired(records, Policy(1, 1), NOW))


def stored(store: RecordStore, tmp_path: Path, age_days: int, fail: bool = False) -> Record:
    """A finished record in `store`, created `age_days` before NOW, with its archive file."""
    record = store.create(SnapshotOptions(), NodeConfig(), now=NOW - timedelta(days=age_days))
    if fail:
        finished = store.fail(record.id, "disk full")
    else:
        archive = tmp_path / f"{record.name}-{record.id}.zip"
        archive.write_bytes(b"PK")
        location = ArchiveLocation("local", str(archive), 2, "ab")
        finished = store.complete(record.id, Completion(location, Summary({}, "pass")))
    assert finished is not None
    return finished


def test_apply_removes_archives_then_records_and_keeps_what_it_could_not_remove(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = RecordStore(tmp_path / "records.sqlite3")
    old = [stored(store, tmp_path, 30 - i) for i in range(3)]
    failed_old = stored(store, tmp_path, 20, fail=True)
    young = stored(store, tmp_path, 1)
    stuck = old[1]
    removed = []

    def remove(record: Record) -> None:
        assert store.get(record.id) is not None  # the archive goes first
        assert record.location is not None
        if record.id == stuck.id:
            raise PermissionError(13, "Permission denied", record.location.uri)
        Path(record.location.uri).unlink()
        removed.append(record.id)

    with caplog.at_level(logging.WARNING, logger="snapshot_agent.service.retention"):
        deleted = retention.apply(store, Policy(None, 14), remove, now=NOW)
    assert ids(deleted) == [old[0].id, old[2].id, failed_old.id]
    assert removed == [old[0].id, old[2].id]  # a failed record has no archive to remove
    assert ids(store.all()) == [young.id, stuck.id]
    assert stuck.location is not None and Path(stuck.location.uri).exists()
    assert f"snapshot {stuck.id} ({stuck.name}): cannot remove its archive" in caplog.text
    assert "Permission denied" in caplog.text

    # the next pass tries again, and succeeds once the archive can go
    stuck_archive = Path(stuck.location.uri)
    again = retention.apply(store, Policy(None, 14), lambda r: stuck_archive.unlink(), now=NOW)
    assert ids(again) == [stuck.id] and ids(store.all()) == [young.id]
    assert not stuck_archive.exists()
    assert retention.apply(store, Policy(None, 14), remove, now=NOW) == []
    store.close()


def test_apply_leaves_a_processing_snapshot_alone(tmp_path: Path) -> None:
    with RecordStore(tmp_path / "records.sqlite3") as store:
        running = store.create(SnapshotOptions(), NodeConfig(), now=NOW - timedelta(days=999))
        assert retention.apply(store, Policy(0, 1), lambda r: None, now=NOW) == []
        assert store.processing() == running
