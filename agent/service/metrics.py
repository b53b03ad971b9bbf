"""What `/metrics` tells Prometheus: snapshots by status, their duration, check timeouts,
the last success, and the service process itself (memory, CPU, open files)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from snapshot_agent.core.units import from_utc_iso
from snapshot_agent.service.records import MAX_RESULTS, Record, RecordStore

PREFIX = "snapshot_agent"
#: A snapshot takes seconds; one with the Iggy data directory or a slow upload, minutes.
DURATION_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)


class _Records(Collector):
    """Records per status, read from the store at each scrape (so deletes show too)."""

    def __init__(self, store: RecordStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            f"{PREFIX}_snapshots",
            "Snapshot records kept, by status (processing, completed, failed).",
            labels=["status"],
        )
        for status, count in self.store.counts().items():
            family.add_metric([status], count)
        yield family


class Metrics:
    """The service's metrics, in a registry of their own."""

    def __init__(self, store: RecordStore) -> None:
        disable_created_metrics()  # no `_created` series: they double the output for nothing
        self.registry = CollectorRegistry()
        self.registry.register(_Records(store))
        self.finished = Counter(
            f"{PREFIX}_snapshots_finished",
            "Snapshots this service has seen to an end, by how they ended.",
            ["status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            f"{PREFIX}_snapshot_duration_seconds",
            "How long snapshots took, from the request to the record's end.",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.check_timeouts = Counter(
            f"{PREFIX}_check_timeouts",
            "Checks killed for running past their timeout, by check id.",
            ["check"],
            registry=self.registry,
        )
        self.last_success = Gauge(
            f"{PREFIX}_last_success_timestamp_seconds",
            "When the newest completed snapshot finished (Unix time; 0: none yet).",
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)
        newest = _newest_completed(store)
        if newest is not None:
            self.succeeded(newest)

    def ended(self, record: Record, seconds: float) -> None:
        """A snapshot ended as `record` says, `seconds` after it was asked for."""
        self.finished.labels(str(record.status)).inc()
        self.duration.observe(seconds)
        if record.status == "completed":
            self.succeeded(record)

    def succeeded(self, record: Record) -> None:
        """`record` completed: the last success is its end."""
        assert record.completed_at is not None
        ended = from_utc_iso(record.completed_at)
        self.last_success.set(ended.timestamp())

    def timed_out(self, check_id: str) -> None:
        """A check of the running snapshot timed out."""
        self.check_timeouts.labels(check_id).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _newest_completed(store: RecordStore, looked_at: int = 1000) -> Record | None:
    """The newest completed record among the newest `looked_at`, a page at a time (a few
    are kept, by retention; loading them all would only grow the service for nothing)."""
    for number in range(1, looked_at // MAX_RESULTS + 1):
        page = store.page(number, MAX_RESULTS)
        found = next((r for r in page.items if r.status == "completed"), None)
        if found is not None or number >= page.total_pages:
            return found
    return None
