"""Retention: which finished snapshots to let go, and letting them go (archive, then record).

Plans as the supervisor sells them: basic keeps 3 snapshots for 7 days, pro 5 for 14,
enterprise 20 for 90; `max_count` / `max_age_days` override the plan's. A record goes
when it is older than max_age_days, or beyond the newest max_count of its kind. Completed
and failed records are counted apart: a failed one holds no archive, and a node failing
snapshot after snapshot (a sick node, the one worth looking at) must not lose its last
good archives to its failures. A processing record is never touched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from snapshot_agent.config import RetentionConfig
from snapshot_agent.pipeline.record import SnapshotStatus
from snapshot_agent.service.records import Record, RecordStore

log = logging.getLogger(__name__)

#: plan -> (max_count, max_age_days)
PLANS = {"basic": (3, 7), "pro": (5, 14), "enterprise": (20, 90)}


@dataclass(frozen=True)
class Policy:
    """How many finished snapshots of each kind to keep, and for how long (None: no limit)."""

    max_count: int | None
    max_age_days: int | None


def policy(config: RetentionConfig) -> Policy:
    """The plan's limits, each overridden by an explicit setting; no plan, no setting: none."""
    count, days = PLANS[config.plan] if config.plan else (None, None)
    return Policy(
        config.max_count if config.max_count is not None else count,
        config.max_age_days if config.max_age_days is not None else days,
    )


def select_expired(records: Iterable[Record], policy: Policy, now: datetime) -> list[Record]:
    """The records `policy` lets go at `now`, oldest first.

    Newest is the higher id (ids follow creation even when the clock steps back). A record
    exactly max_age_days old stays; one dated in the future (a clock set back since) is
    young.
    """
    records = list(records)
    expired: list[Record] = []
    for status in (SnapshotStatus.COMPLETED, SnapshotStatus.FAILED):
        kind = sorted((r for r in records if r.status == status), key=lambda r: r.id, reverse=True)
        if policy.max_count is not None:
            expired += kind[policy.max_count :]
            kind = kind[: policy.max_count]
        if policy.max_age_days is not None:
            oldest = now - timedelta(days=policy.max_age_days)
            expired += [r for r in kind if r.created < oldest]
    return sorted(expired, key=lambda r: r.id)


def apply(
    store: RecordStore,
    policy: Policy,
    remove_archive: Callable[[Record], None],
    now: datetime | None = None,
) -> list[Record]:
    """Delete what `policy` lets go: each archive first, then its record; those deleted.

    An archive that cannot be removed keeps its record (logged), so the next pass tries
    again and no archive is left without a record that names it.
    """
    deleted = []
    for record in select_expired(store.all(), policy, now or datetime.now(UTC)):
        if record.location is not None:
            try:
                remove_archive(record)
            except Exception as exc:
                log.warning(
                    "retention: snapshot %s (%s): cannot remove its archive %s (%s); "
                    "kept, to try again",
                    record.id,
                    record.name,
                    record.location.uri,
                    exc,
                )
                continue
        if store.delete(record.id) is not None:
            deleted.append(record)
    return deleted
