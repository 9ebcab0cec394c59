"""Worker state from worker-* events: liveness, heartbeat payload, whether task events are on.

Liveness is computed from the exporter's own clock at read time, so a worker killed with
SIGKILL (which sends no worker-offline) reads down once --worker-timeout passes. A worker that
says goodbye (worker-offline) is departed: its gauges go at once (it is gone on purpose, not
down), its counters stay, no lower, until the purge, and continue if it comes back. Owned by the
tracker and written only from the event thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .event_fields import BadEvent, host_of, int_field, label_text, loadavg_of

log = logging.getLogger(__name__)

# Prefork workers batch task events and flush them about once a second; heartbeats come every
# 2 s. A `processed` count that grew this long ago with still no task event means events are off.
TASK_EVENTS_GRACE = 10.0


@dataclass(slots=True)
class WorkerRecord:
    worker: str  # full node name, e.g. celery@pod-1
    hostname: str  # the part after @
    last_seen: float  # exporter clock at the last worker-* event
    last_heartbeat: float | None = None
    offline_at: float | None = None  # set by worker-offline (a clean shutdown)
    active: int | None = None
    processed: int | None = None
    processed_before_restarts: int = 0  # summed `processed` of earlier lives under this name
    processed_at_start: int | None = None
    processed_grew_at: float | None = None
    loadavg: tuple[float, float, float] | None = None
    task_events_seen: bool = False
    warned_no_task_events: bool = False


@dataclass(frozen=True, slots=True)
class WorkerView:
    worker: str
    hostname: str
    up: bool
    last_heartbeat: float | None
    active: int | None
    processed_total: int | None  # a counter: never lower while the worker is tracked
    loadavg: tuple[float, float, float] | None
    task_events_enabled: bool | None  # None: not known yet
    departed: bool = False  # said goodbye (worker-offline): only its counters are reported


class WorkerTable:
    def __init__(self, worker_timeout: float, purge_after: float, max_workers: int) -> None:
        self.worker_timeout = worker_timeout
        self.purge_after = purge_after
        self.max_workers = max_workers
        self.records: dict[str, WorkerRecord] = {}
        self.overflowed = 0
        # Departed workers (said goodbye), the longest gone first: who gives way to a new one.
        self._departed: dict[str, None] = {}
        self._evicted: list[WorkerRecord] = []  # handed to the tracker by the next expire()

    def _record(self, nodename: str, now: float) -> WorkerRecord | None:
        record = self.records.get(nodename)
        if record is None:
            if len(self.records) >= self.max_workers and not self._evict_departed():
                self.overflowed += 1
                return None
            record = WorkerRecord(worker=nodename, hostname=host_of(nodename), last_seen=now)
            self.records[nodename] = record
            log.info("worker %s appeared", nodename)
        return record

    def heartbeat(self, event: dict[str, Any], now: float) -> None:
        """worker-online and worker-heartbeat."""
        nodename = label_text(event.get("hostname"), "hostname")
        active = int_field(event, "active")
        processed = int_field(event, "processed")
        loadavg = loadavg_of(event)
        record = self._record(nodename, now)
        if record is None:
            return
        if record.offline_at is not None or (
            record.last_heartbeat is not None and not self._alive(record, now)
        ):
            log.info("worker %s is back", nodename)
        record.last_seen = record.last_heartbeat = now
        record.offline_at = None
        self._departed.pop(nodename, None)
        # The wake-up heartbeat a monitor asks for carries no active/processed: keep the last.
        if active is not None:
            record.active = active
        if loadavg is not None:
            record.loadavg = loadavg
        if processed is not None:
            self._track_processed(record, processed, now)

    def _evict_departed(self) -> bool:
        """Make room for a new worker by forgetting the one that said goodbye longest ago: a
        live worker's series matter more than a departed one's last counts (churn faster than
        --purge-offline-worker-metrics, or the purge disabled)."""
        if not self._departed:
            return False
        oldest = self.records.pop(next(iter(self._departed)))
        del self._departed[oldest.worker]
        self._evicted.append(oldest)
        log.info("worker %s forgotten to make room (--max-workers)", oldest.worker)
        return True

    def _track_processed(self, record: WorkerRecord, processed: int, now: float) -> None:
        restarted = record.processed is not None and processed < record.processed
        if restarted:
            # A new process under the same name counts from 0 again; the exported counter
            # goes on from where the last one stopped instead of falling.
            record.processed_before_restarts += record.processed or 0
        if record.processed_at_start is None or restarted:
            # First sight, or the worker restarted under the same name.
            record.processed_at_start = processed
            record.processed_grew_at = None
        elif processed > record.processed_at_start and record.processed_grew_at is None:
            record.processed_grew_at = now
        record.processed = processed
        if (
            not record.task_events_seen
            and not record.warned_no_task_events
            and _task_events_enabled(record, now) is False
        ):
            record.warned_no_task_events = True
            log.warning(
                "worker %s processes tasks but sends no task events, so it has no task metrics: "
                "start it with -E (or set worker_send_task_events=True), and set "
                "task_send_sent_event=True on producers for task-sent and queue wait",
                record.worker,
            )

    def offline(self, event: dict[str, Any], now: float) -> None:
        nodename = label_text(event.get("hostname"), "hostname")
        processed = int_field(event, "processed")
        record = self.records.get(nodename)
        if record is not None:
            # Celery's goodbye carries the final count: the counter stays at that.
            if processed is not None and record.last_heartbeat is not None:
                self._track_processed(record, processed, now)
            record.offline_at = record.last_seen = now
            self._departed.pop(nodename, None)
            self._departed[nodename] = None  # to the newest end
            log.info("worker %s went offline (clean shutdown)", nodename)

    def saw_task_event(self, nodename: str, now: float) -> None:
        record = self.records.get(nodename) or self._record(nodename, now)
        if record is not None and not record.task_events_seen:
            record.task_events_seen = True
            if record.warned_no_task_events:
                log.info("worker %s now sends task events", nodename)

    def _alive(self, record: WorkerRecord, now: float) -> bool:
        if record.offline_at is not None or record.last_heartbeat is None:
            return False
        return not self.worker_timeout or now - record.last_heartbeat <= self.worker_timeout

    def _purgeable(self, record: WorkerRecord, now: float) -> bool:
        # Silent (SIGKILL, OOM) or departed (worker-offline) alike. A silent worker keeps
        # reading 0 until then, long enough for the shipped CeleryWorkerDown (for: 15m) to
        # fire; a departed one keeps only its counters, so a goodbye and hello (a consumer
        # restarting with the broker) never makes a counter vanish and come back.
        return bool(self.purge_after) and now - record.last_seen > self.purge_after

    def views(self, now: float) -> list[WorkerView]:
        return [
            WorkerView(
                worker=r.worker,
                hostname=r.hostname,
                up=self._alive(r, now),
                departed=r.offline_at is not None,
                last_heartbeat=r.last_heartbeat,
                active=r.active,
                processed_total=(
                    None if r.processed is None else r.processed_before_restarts + r.processed
                ),
                loadavg=r.loadavg,
                task_events_enabled=_task_events_enabled(r, now),
            )
            for r in self.records.values()
            # Known only from task events so far: no liveness to report until a heartbeat.
            if r.last_heartbeat is not None and not self._purgeable(r, now)
        ]

    def expire(self, now: float) -> list[WorkerRecord]:
        """Forget purgeable workers; returns them, and any evicted to make room, so their
        task series can go too."""
        gone = [r for r in self.records.values() if self._purgeable(r, now)]
        for record in gone:
            del self.records[record.worker]
            self._departed.pop(record.worker, None)
            log.info(
                "worker %s purged after %.0fs without a heartbeat",
                record.worker,
                now - record.last_seen,
            )
        # One evicted and back since then is a new record: its state must not be dropped.
        gone += [r for r in self._evicted if r.worker not in self.records]
        self._evicted = []
        return gone

    def live_hostnames(self) -> set[str]:
        return {r.hostname for r in self.records.values()}


def _task_events_enabled(record: WorkerRecord, now: float) -> bool | None:
    if record.task_events_seen:
        return True
    if record.processed_grew_at is not None and now - record.processed_grew_at >= TASK_EVENTS_GRACE:
        return False
    return None


__all__ = ["BadEvent", "WorkerRecord", "WorkerTable", "WorkerView"]
