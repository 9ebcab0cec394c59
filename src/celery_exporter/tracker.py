"""Cluster state built from Celery events: the only writer of what the metrics report.

Pure code, no I/O; the clock is injected. The event thread calls record_message(); scrapes call
snapshot(), which copies the tables under the same short lock. Memory is bounded by
(task names x hosts x queues) plus a fixed-size table of in-flight tasks, never by tasks seen.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .arrivals import WorkerArrivals
from .config import Config
from .events import (
    MAX_DURATION,
    MAX_LABEL_LENGTH,
    BadEvent,
    duration,
    eta_timestamp,
    exception_class,
    host_of,
    int_field,
    label_text,
    timestamp_of,
)
from .held import HeldEvents
from .holding import HeldTasks
from .metrics import UNKNOWN
from .missed import MissedEvents
from .queue_age import QueueAge, newest
from .queue_evidence import BrokerEvidence, timestamp_or_none
from .series import HistogramTable, LabelCap, Labels
from .workers import WorkerTable, WorkerView

log = logging.getLogger(__name__)

GENERIC_HOSTNAME = "generic"
# Counters zero-initialised when a worker first reports a (name, hostname, queue) label set,
# so increase() sees the first real increment. Not `failed`: its exception is not known yet.
ZERO_INITIALISED = ("received", "started", "succeeded", "rejected", "revoked", "retried")
TASK_EVENTS = frozenset(f"task-{kind}" for kind in (*ZERO_INITIALISED, "sent", "failed"))
WORKER_EVENTS = frozenset({"worker-online", "worker-heartbeat", "worker-offline"})
# How long finished tasks are remembered for a late task-sent before any task-sent was seen.
SENDS_GRACE = 600.0
# Finished tasks remembered for a late task-sent: seconds of a busy cluster's events (~1 MB).
RECENTLY_FINISHED = 10_000


@dataclass(slots=True)
class TaskRecord:
    name: str
    queue: str | None = None
    sent_at: float | None = None  # producer's clock
    eta: float | None = None
    started_at: float | None = None  # worker's clock
    # Set when it started before its task-sent was seen: the labels its wait is observed
    # under if that task-sent arrives late.
    started_labels: Labels | None = None


class LateSends:
    """Finished tasks whose task-sent was not seen yet. Celery publishes a task before it
    sends task-sent on another connection, so that event may come after the task finished:
    remembered, it is counted with the wait the task had, and makes no in-flight record."""

    def __init__(self) -> None:
        self.tasks: dict[str, TaskRecord] = {}  # uuid -> its record, oldest first

    def remember(self, uuid: str, record: TaskRecord) -> None:
        self.tasks[uuid] = record
        if len(self.tasks) > RECENTLY_FINISHED:
            self.tasks = newest(self.tasks, RECENTLY_FINISHED)


@dataclass(frozen=True)
class Snapshot:
    task_counts: dict[str, dict[Labels, int]]  # "sent", "failed", ... -> labels -> count
    runtime: dict[Labels, list[float]]
    queue_wait: dict[Labels, list[float]]
    failed_runtime: dict[Labels, list[float]]
    workers: list[WorkerView]
    events: dict[str, int]
    errors: dict[str, int]
    overflow: dict[str, int]
    last_event: float | None
    tracked_tasks: int
    queue_ages: dict[str, float]
    # worker -> (prefetched, scheduled) tasks it holds
    holdings: dict[str, tuple[int, int]] = field(default_factory=dict)
    missed: dict[str, int] = field(default_factory=dict)  # worker -> task events missed


class Tracker:
    def __init__(
        self,
        config: Config,
        clock: Callable[[], float],
        worker_queues: Callable[[], Mapping[str, tuple[str, ...]]] = dict,
        arrivals: WorkerArrivals | None = None,
        broker_evidence: Callable[[], BrokerEvidence | None] = lambda: None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._worker_queues = worker_queues  # from the inspect poll; read-only here
        self._held = HeldEvents(arrivals)
        self._broker_evidence = broker_evidence  # from the queue poll; read-only here
        self.queue_age = QueueAge(config.max_tracked_tasks, config.queue_expiry)
        self._lock = threading.Lock()
        self._tasks: OrderedDict[str, TaskRecord] = OrderedDict()
        self._counts: dict[str, dict[Labels, int]] = {
            kind: {} for kind in (*ZERO_INITIALISED, "sent", "failed")
        }
        self._initialised: set[Labels] = set()
        self._runtime = HistogramTable(config.runtime_buckets)
        self._queue_wait = HistogramTable(config.queue_wait_buckets)
        self._failed_runtime = HistogramTable(config.runtime_buckets)
        self._queue_by_name: dict[str, str] = {}
        self._names = LabelCap(config.max_task_names)
        self._hosts = LabelCap(config.max_workers)
        self._producer_hosts = LabelCap(config.max_workers)
        self.workers = WorkerTable(
            config.worker_timeout, config.purge_offline_worker_metrics, config.max_workers
        )
        self.holdings = HeldTasks(config.max_tracked_tasks)
        self.missed = MissedEvents(config.max_workers)
        # Finished tasks whose task-sent may still arrive. Kept once a task-sent was seen, or
        # in the first minutes, before it is known whether producers send any (the first
        # task-sent of a producer is the one most often late).
        self._late_sends = LateSends()
        self._sends_seen = False
        self._sends_grace_until = clock() + SENDS_GRACE
        self._events: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._last_event: float | None = None
        self._handlers: dict[str, Callable[[dict[str, Any], float], None]] = {
            "task-sent": self._task_sent,
            "task-received": self._task_received,
            "task-started": self._task_started,
            "task-succeeded": self._task_succeeded,
            "task-failed": self._task_failed,
            "task-retried": self._task_retried,
            "task-rejected": self._task_rejected,
            "task-revoked": self._task_revoked,
            "worker-online": self._worker_heartbeat,
            "worker-heartbeat": self._worker_heartbeat,
            "worker-offline": self._worker_offline,
        }

    # ---- input -------------------------------------------------------------------------

    def record_message(self, body: Any) -> None:
        """One decoded message: an event dict, or a list of them (prefork's task.multi)."""
        now = self._clock()
        with self._lock:
            if self._held.nodes:
                self._release_held(now)
            if type(body) is list:
                for event in body:
                    self._record(event, now)
            else:
                self._record(body, now)

    def record_error(self, reason: str) -> None:
        """A message the consumer could not even decode."""
        with self._lock:
            self._errors[reason] += 1

    def _record(self, event: Any, now: float) -> None:
        try:
            if type(event) is not dict:
                raise BadEvent("not_a_dict")
            kind = event.get("type")
            handler = self._handlers.get(kind)  # type: ignore[arg-type]
            if handler is not None:
                if self._held.nodes and self._held.take(event, now):
                    if self._held.count >= self._held.max_events:
                        self._release_held(now)
                    return  # counted when its worker's queues are known (held.py)
                handler(event, now)
            elif not isinstance(kind, str):
                raise BadEvent("bad_type")
            elif kind != "task-cancelled":
                kind = "other"  # custom event types must not mint label values
            self._events[kind] += 1  # type: ignore[index]
            self._last_event = now
        except BadEvent as exc:
            self._errors[exc.reason] += 1
        except Exception:  # the one guard around a single event: count it and go on
            log.debug("event handler failed", exc_info=True)
            self._errors["unexpected"] += 1

    # ---- new workers: ask their queues, hold their first task events (held.py)

    def _worker_heartbeat(self, event: dict[str, Any], now: float) -> None:
        """worker-online and worker-heartbeat."""
        nodename = label_text(event.get("hostname"), "hostname")
        known = self.workers.records.get(nodename)
        new = known is None or known.last_heartbeat is None  # at most task events seen so far
        self.workers.heartbeat(event, now)
        if nodename not in self.workers.records:
            return  # over --max-workers
        self._worker_counts(event, now)
        # worker-online may be a restart under the same name, with other queues.
        if event["type"] == "worker-online" or (new and nodename not in self._worker_queues()):
            self._held.worker_appeared(nodename, now)

    def _release_held(self, now: float) -> None:
        for event, came_at in self._held.due(now):
            self._record(event, came_at)

    def release_held(self) -> None:
        """Count held task events that are due. The event thread calls this between messages,
        so a quiet stream does not keep them past their worker's answer."""
        if self._held.nodes:
            with self._lock:
                self._release_held(self._clock())
        else:
            self._held.drop_settled()

    # ---- task events -------------------------------------------------------------------

    def _uuid(self, event: dict[str, Any]) -> str:
        uuid = event.get("uuid")
        if not isinstance(uuid, str) or not uuid or len(uuid) > 255:
            raise BadEvent("bad_uuid")
        return uuid

    def _task(self, uuid: str) -> TaskRecord:
        record = self._tasks.get(uuid)
        if record is None:
            record = self._tasks[uuid] = TaskRecord(UNKNOWN)
            if len(self._tasks) > self._config.max_tracked_tasks:
                self._tasks.popitem(last=False)  # oldest first: long-done or lost tasks
        return record

    def _name(self, record: TaskRecord, event: dict[str, Any]) -> None:
        name = event.get("name")
        if name is not None and record.name == UNKNOWN:
            record.name = self._names.admit(label_text(name, "name"))

    def _task_sent(self, event: dict[str, Any], now: float) -> None:
        uuid = self._uuid(event)
        sent_at = timestamp_of(event, now)
        eta = eta_timestamp(event.get("eta"))
        queue = event.get("queue") or event.get("routing_key")
        queue = label_text(queue, "queue") if queue is not None else None
        nodename = label_text(event.get("hostname"), "hostname")
        if self._config.generic_hostname_task_sent_metric:
            host = GENERIC_HOSTNAME
        else:
            host = self._producer_hosts.admit(host_of(nodename))
        self._sends_seen = True
        record = self._tasks.get(uuid)
        if record is None and self._late_sends.tasks:
            finished = self._late_sends.tasks.pop(uuid, None)
            if finished is not None:  # it ran and finished before this send was seen
                self._count_late_send(finished, event, host, queue, sent_at, eta)
                return
        if record is None:
            record = self._task(uuid)
        self._name(record, event)
        started_at = record.started_at
        if started_at is not None and record.sent_at is None and sent_at <= started_at:
            # Published before it started, seen after: the original send, not a retry's
            # re-send (the worker stamps that after the start). It waits no more.
            record.sent_at, record.eta = sent_at, eta or record.eta
            self._count_late_send(record, event, host, queue, sent_at, eta)
            return
        # A retry re-sends the same uuid: it waits again from this send.
        record.sent_at, record.eta, record.started_at = sent_at, eta, None
        if queue is not None:
            record.queue = queue
            if record.name != UNKNOWN:
                self._queue_by_name[record.name] = queue
        labels = (record.name, host, queue or self._resolve_queue(record.name, ""))
        counts = self._counts["sent"]
        counts[labels] = counts.get(labels, 0) + 1
        expires = event.get("expires")
        expires = None if expires is None else timestamp_or_none(expires)
        self.queue_age.sent(uuid, labels[2], sent_at, eta, expires, now)

    def _count_late_send(
        self,
        record: TaskRecord,
        event: dict[str, Any],
        host: str,
        queue: str | None,
        sent_at: float,
        eta: float | None,
    ) -> None:
        """A task-sent seen after its task started: count it, and observe the wait it had
        under the labels its worker-side events used. It waits no more (no queue_age)."""
        self._name(record, event)
        if queue is not None and record.name != UNKNOWN:
            self._queue_by_name[record.name] = queue
        # The queue its worker-side events were counted under does not move.
        labels = (record.name, host, queue or self._resolve_queue(record.name, ""))
        counts = self._counts["sent"]
        counts[labels] = counts.get(labels, 0) + 1
        if record.started_at is not None and record.started_labels is not None:
            self._observe_wait(record.started_labels, sent_at, eta or record.eta, record.started_at)

    def _worker_task(
        self, event: dict[str, Any], kind: str, now: float
    ) -> tuple[str, TaskRecord, Labels]:
        """Common to every worker-side task event: find the task, label it, count it."""
        uuid = self._uuid(event)
        record = self._task(uuid)
        nodename = label_text(event.get("hostname"), "hostname")
        self._name(record, event)
        if record.queue is None:
            record.queue = self._resolve_queue(record.name, nodename)
        if self._config.generic_hostname_worker_task_metric:
            host = GENERIC_HOSTNAME
        else:
            host = self._hosts.admit(host_of(nodename))
        labels = (record.name, host, record.queue)
        if labels not in self._initialised:
            self._initialised.add(labels)
            for zero_kind in ZERO_INITIALISED:
                self._counts[zero_kind].setdefault(labels, 0)
        self.workers.saw_task_event(nodename, now)
        if kind != "failed":
            self._counts[kind][labels] += 1
        return uuid, record, labels

    def _resolve_queue(self, name: str, nodename: str) -> str:
        """Where task-sent did not say: the worker's only queue, then the queue this task
        name was last sent to, then --default-queue-name."""
        consumed = self._worker_queues().get(nodename, ())
        if len(consumed) == 1:
            return consumed[0]
        return self._queue_by_name.get(name, self._config.default_queue_name)

    def _task_received(self, event: dict[str, Any], now: float) -> None:
        uuid, record, _ = self._worker_task(event, "received", now)
        eta = eta_timestamp(event.get("eta"))
        if eta is not None:
            record.eta = eta
        received_at = event.get("timestamp")
        if type(received_at) is not float:  # the common case needs no further check
            received_at = _worker_time(event, now)
        # _worker_task has checked the node name: this is its label_text(), cheaply.
        self.holdings.received(uuid, event["hostname"][:MAX_LABEL_LENGTH], received_at, eta)
        if record.started_at is None and record.queue is not None:  # prefetched: still waits
            expires = event.get("expires")
            expires = None if expires is None else timestamp_or_none(expires)
            self.queue_age.received(
                uuid, record.queue, record.sent_at, record.eta, expires, event["hostname"], now
            )

    def _task_started(self, event: dict[str, Any], now: float) -> None:
        started_at = timestamp_of(event, now)
        uuid, record, labels = self._worker_task(event, "started", now)
        record.started_at = started_at
        self.holdings.done(uuid)
        self.missed.started(event["hostname"][:MAX_LABEL_LENGTH], started_at)
        self.queue_age.ended(uuid)
        if record.sent_at is not None:
            self._observe_wait(labels, record.sent_at, record.eta, started_at)
        else:  # its task-sent may still come (published first, sent on another connection)
            record.started_labels = labels

    def _observe_wait(
        self, labels: Labels, sent_at: float, eta: float | None, started_at: float
    ) -> None:
        ready_at = sent_at if eta is None or eta < sent_at else eta
        # Producer and worker clocks differ; a negative wait is skew, not time travel.
        wait = max(0.0, started_at - ready_at)
        if wait <= MAX_DURATION:  # a far-future ETA or clock is not a wait to average
            self._queue_wait.observe(labels, wait)

    def _finished(self, uuid: str, record: TaskRecord, now: float) -> None:
        """Succeeded or failed: it leaves the in-flight table. One whose task-sent was not
        seen yet is remembered a while, if producers send task-sent at all."""
        del self._tasks[uuid]  # done: later events for it are rare, and get name "unknown"
        self.holdings.done(uuid)
        self.queue_age.ended(uuid)
        if record.sent_at is None and (self._sends_seen or now < self._sends_grace_until):
            self._late_sends.remember(uuid, record)

    def _task_succeeded(self, event: dict[str, Any], now: float) -> None:
        runtime = event.get("runtime")
        value = duration(runtime) if runtime is not None else None
        uuid, record, labels = self._worker_task(event, "succeeded", now)
        if value is not None:
            self._runtime.observe(labels, value)
        self._finished(uuid, record, now)

    def _task_failed(self, event: dict[str, Any], now: float) -> None:
        failed_at = timestamp_of(event, now)
        uuid, record, labels = self._worker_task(event, "failed", now)
        name, host, queue = labels
        failed = (name, host, exception_class(event.get("exception")), queue)
        counts = self._counts["failed"]
        counts[failed] = counts.get(failed, 0) + 1
        if record.started_at is not None:
            # Both times come from the worker's own clock, so no skew between hosts.
            ran = max(0.0, failed_at - record.started_at)
            if ran <= MAX_DURATION:
                self._failed_runtime.observe(labels, ran)
        self._finished(uuid, record, now)

    def _task_retried(self, event: dict[str, Any], now: float) -> None:
        self._worker_task(event, "retried", now)

    def _task_rejected(self, event: dict[str, Any], now: float) -> None:
        uuid, _, _ = self._worker_task(event, "rejected", now)
        self.holdings.done(uuid)

        if event.get("requeue") is True:
            self.queue_age.requeued(uuid, now)
        else:
            self.queue_age.ended(uuid)

    def _task_revoked(self, event: dict[str, Any], now: float) -> None:
        uuid, _, _ = self._worker_task(event, "revoked", now)
        self.holdings.done(uuid)
        self.queue_age.ended(uuid)

    # ---- worker events -----------------------------------------------------------------

    def _worker_offline(self, event: dict[str, Any], now: float) -> None:
        self.workers.offline(event, now)
        self._worker_counts(event, now)
        # Its unacknowledged messages go back to the broker: it holds nothing any more.
        nodename = label_text(event.get("hostname"), "hostname")
        self.holdings.forget_worker(nodename)
        self.queue_age.worker_left(nodename, now)

    def _worker_counts(self, event: dict[str, Any], now: float) -> None:
        """What `active` and `processed` say about held tasks and missed task events."""
        nodename = label_text(event.get("hostname"), "hostname")
        sent_at = _worker_time(event, now)
        processed = int_field(event, "processed")
        if processed is not None:
            self.missed.heartbeat(nodename, sent_at, processed)
        if int_field(event, "active") == 0:
            self.holdings.idle(nodename, sent_at)

    # ---- housekeeping and output -------------------------------------------------------

    def expire(self) -> None:
        """Forget purged workers and, where no live worker shares their host, their task
        series. Called from the event thread between messages."""
        evidence = self._broker_evidence()  # outside the lock: the poller has its own
        with self._lock:
            now = self._clock()
            self.queue_age.prune(now, self.workers.views(now), evidence)
            if not self._sends_seen and now >= self._sends_grace_until:
                self._late_sends.tasks.clear()  # producers send no task-sent events
            gone = self.workers.expire(now)
            if not gone:
                return
            for record in gone:
                self.holdings.forget_worker(record.worker)
                self.missed.forget(record.worker)
            hosts = {r.hostname for r in gone} - self.workers.live_hostnames()
            for host in hosts:
                self._hosts.release(host)

            def keep(labels: Labels) -> bool:
                return labels[1] not in hosts

            for kind, counts in self._counts.items():
                if kind != "sent":
                    self._counts[kind] = {k: v for k, v in counts.items() if keep(k)}
            self._initialised = {labels for labels in self._initialised if keep(labels)}
            for table in (self._runtime, self._queue_wait, self._failed_runtime):
                table.drop(keep)

    def snapshot(self) -> Snapshot:
        now = self._clock()
        evidence = self._broker_evidence()
        with self._lock:
            overflow = {
                "task_name": self._names.overflowed,
                "hostname": self._hosts.overflowed + self._producer_hosts.overflowed,
                "worker": self.workers.overflowed,
            }
            return Snapshot(
                task_counts={kind: counts.copy() for kind, counts in self._counts.items()},
                runtime=self._runtime.copy(),
                queue_wait=self._queue_wait.copy(),
                failed_runtime=self._failed_runtime.copy(),
                workers=self.workers.views(now),
                events=dict(self._events),
                errors=dict(self._errors),
                overflow=overflow,
                last_event=self._last_event,
                tracked_tasks=len(self._tasks),
                holdings=self.holdings.counts(now),
                missed=self.missed.totals(),
                queue_ages=self.queue_age.ages(now, evidence),
            )


def _worker_time(event: dict[str, Any], now: float) -> float:
    """The sender's clock, or the exporter's where the event has no usable timestamp."""
    try:
        return timestamp_of(event, now)
    except BadEvent:
        return now
