"""Custom collectors: turn a tracker snapshot and the exporter's health into metric families.

Built at scrape time from copies, so a scrape never waits on the broker and never holds the
tracker's lock while formatting.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.utils import floatToGoString

from ..state.task_rows import Labels
from ..state.tracker import Snapshot, Tracker
from ..state.workers import WorkerView
from .catalogue import FamilyFactory
from .families import Family, FamilyCollector

LOADAVG_PERIODS = ("1m", "5m", "15m")


class TrackerCollector(FamilyCollector):
    """Task, worker and event-stream metrics from the tracker."""

    def __init__(
        self,
        tracker: Tracker,
        factory: FamilyFactory,
        runtime_buckets: tuple[float, ...],
        queue_wait_buckets: tuple[float, ...],
    ) -> None:
        self._tracker = tracker
        self._factory = factory
        self._runtime_le = [floatToGoString(b) for b in runtime_buckets]
        self._queue_wait_le = [floatToGoString(b) for b in queue_wait_buckets]

    def families(self) -> Iterator[Family]:
        snap = self._tracker.snapshot()
        f = self._factory
        for kind, counts in snap.task_counts.items():
            yield from self._counter(f"task_{kind}", counts)
        for name, table, les in (
            ("task_runtime", snap.runtime, self._runtime_le),
            ("task_queue_wait_time", snap.queue_wait, self._queue_wait_le),
            ("task_failed_runtime_seconds", snap.failed_runtime, self._runtime_le),
        ):
            yield from self._histogram(name, table, les)
        yield from self._workers(snap.workers)
        yield from self._held_and_missed(snap)
        yield from self._counter("exporter_events", {(k,): v for k, v in snap.events.items()})
        yield from self._counter("exporter_event_errors", {(k,): v for k, v in snap.errors.items()})
        yield from self._counter(
            "exporter_cardinality_overflow", {(k,): v for k, v in snap.overflow.items()}
        )
        if f.enabled("exporter_last_event_timestamp_seconds") and snap.last_event is not None:
            family = f.new("exporter_last_event_timestamp_seconds")
            family.add_metric(f.labels(()), snap.last_event)
            yield family
        if f.enabled("queue_oldest_task_age_seconds"):
            family = f.new("queue_oldest_task_age_seconds")
            for queue, age in snap.queue_ages.items():
                family.add_metric(f.labels((queue,)), age)
            yield family
        yield from self._running(snap)
        if f.enabled("exporter_tracked_tasks"):
            family = f.new("exporter_tracked_tasks")
            family.add_metric(f.labels(()), snap.tracked_tasks)
            yield family

    def _counter(self, name: str, counts: dict[Labels, int]) -> Iterator[Family]:
        if not self._factory.enabled(name):
            return
        family = self._factory.new(name)
        for labels, value in counts.items():
            family.add_metric(self._factory.labels(labels), value)
        yield family

    def _histogram(
        self, name: str, table: dict[Labels, list[float]], les: list[str]
    ) -> Iterator[Family]:
        if not self._factory.enabled(name):
            return
        family = self._factory.new(name)
        for labels, row in table.items():
            cumulative, buckets = 0.0, []
            for le, count in zip(les, row, strict=False):  # row ends with the sum
                cumulative += count
                buckets.append((le, cumulative))
            family.add_metric(self._factory.labels(labels), buckets, row[-1])
        yield family

    def _workers(self, workers: list[WorkerView]) -> Iterator[Family]:
        """Per-worker series from heartbeats. A departed worker (it said goodbye) keeps only
        its counter: gauges would make alerts on them see a clean shutdown as trouble."""
        f = self._factory
        families = {
            name: f.new(name)
            for name in (
                "worker_up",
                "worker_tasks_active",
                "worker_last_heartbeat_timestamp_seconds",
                "worker_tasks_processed",
                "worker_loadavg",
                "worker_task_events_enabled",
            )
            if f.enabled(name)
        }
        for w in workers:
            labels = f.labels((w.hostname, w.worker))
            values: dict[str, float | None] = {"worker_tasks_processed": w.processed_total}
            if not w.departed:
                values["worker_up"] = 1.0 if w.up else 0.0
                values["worker_tasks_active"] = w.active if w.up else 0
                values["worker_last_heartbeat_timestamp_seconds"] = w.last_heartbeat
                if w.task_events_enabled is not None:
                    values["worker_task_events_enabled"] = float(w.task_events_enabled)
            for name, value in values.items():
                if name in families and value is not None:
                    families[name].add_metric(labels, value)
            if "worker_loadavg" in families and w.loadavg is not None and not w.departed:
                for period, load in zip(LOADAVG_PERIODS, w.loadavg, strict=True):
                    families["worker_loadavg"].add_metric(
                        f.labels((w.hostname, w.worker, period)), load
                    )
        yield from families.values()

    def _held_and_missed(self, snap: Snapshot) -> Iterator[Family]:
        """Prefetched and scheduled tasks (gauges: not for a departed worker) and missed task
        events (a counter: kept for a departed worker until it is purged), per worker."""
        f = self._factory
        names = ("worker_tasks_prefetched", "worker_tasks_scheduled", "exporter_task_events_missed")
        families = {name: f.new(name) for name in names if f.enabled(name)}
        for w in snap.workers:
            labels = f.labels((w.hostname, w.worker))
            values: list[tuple[str, int | None]] = [
                ("exporter_task_events_missed", snap.missed.get(w.worker))
            ]
            if not w.departed:
                # A worker that is down holds nothing we can vouch for: its messages go back.
                prefetched, scheduled = snap.held_tasks.get(w.worker, (0, 0)) if w.up else (0, 0)
                values += [
                    ("worker_tasks_prefetched", prefetched),
                    ("worker_tasks_scheduled", scheduled),
                ]
            for name, value in values:
                if name in families and value is not None:
                    families[name].add_metric(labels, value)
        yield from families.values()

    def _running(self, snap: Snapshot) -> Iterator[Family]:
        """The oldest running task's age per (name, queue) and per queue (running_tasks.py)."""
        f = self._factory
        if f.enabled("task_oldest_running_age_seconds"):
            family = f.new("task_oldest_running_age_seconds")
            for labels, age in snap.running.tasks.items():
                family.add_metric(f.labels(labels), age)
            yield family
        if f.enabled("queue_oldest_running_task_age_seconds"):
            family = f.new("queue_oldest_running_task_age_seconds")
            for queue, age in snap.running.queues.items():
                family.add_metric(f.labels((queue,)), age)
            yield family
