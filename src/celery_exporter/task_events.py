"""Task events: the handlers of task-sent ... task-revoked and the tables they write.

Per (name, hostname, queue) counts and the runtime and queue-wait histograms, plus a bounded
table of in-flight tasks (what a later event of the same task needs: its name, queue, send and
start times). Each handler is a few dict operations; the tracker calls them under its lock and
counts the event. The hooks of queue_age, holding and missed get what they need from here.

A task-sent may arrive after its task started or even finished (late_sends.py). Such a late
send still observes the wait, under the labels the worker-side events used; a retry's re-send
(stamped after the start, by the worker) makes the task wait again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from .config import Config
from .events import (
    MAX_DURATION,
    MAX_LABEL_LENGTH,
    BadEvent,
    duration,
    eta_timestamp,
    exception_class,
    timestamp_of,
    worker_time,
)
from .holding import HeldTasks
from .late_sends import LateSends, TaskRecord
from .metrics import UNKNOWN
from .missed import MissedEvents
from .queue_age import QueueAge
from .queue_evidence import timestamp_or_none
from .series import HistogramTable, Labels
from .task_labels import EventLabels
from .workers import WorkerTable

# Counters zero-initialised when a worker first reports a (name, hostname, queue) label set,
# so increase() sees the first real increment. Not `failed`: its exception is not known yet.
ZERO_INITIALISED = ("received", "started", "succeeded", "rejected", "revoked", "retried")
TASK_KINDS = (*ZERO_INITIALISED, "sent", "failed")


class TaskEvents:
    """The task-event handlers and the per-label tables they write, owned by one Tracker."""

    def __init__(
        self,
        config: Config,
        now: float,
        worker_queues: Callable[[], Mapping[str, tuple[str, ...]]],
        workers: WorkerTable,
        holdings: HeldTasks,
        missed: MissedEvents,
        queue_age: QueueAge,
    ) -> None:
        self._config = config
        self._worker_queues = worker_queues  # from the inspect poll; read-only here
        self.workers = workers
        self._worker_records = workers.records  # read-only here
        self.holdings = holdings
        self.missed = missed
        self.queue_age = queue_age
        self.tasks: OrderedDict[str, TaskRecord] = OrderedDict()
        self.counts: dict[str, dict[Labels, int]] = {kind: {} for kind in TASK_KINDS}
        self._initialised: set[Labels] = set()
        self.runtime = HistogramTable(config.runtime_buckets)
        self.queue_wait = HistogramTable(config.queue_wait_buckets)
        self.failed_runtime = HistogramTable(config.runtime_buckets)
        self._queue_by_name: dict[str, str] = {}
        self.labels = EventLabels(config)
        self._worker_nodes = self.labels.worker_nodes  # the hot path's first try
        self.late_sends = LateSends(now)  # finished tasks whose task-sent may still come

    def handlers(self) -> dict[str, Callable[[dict[str, Any], float], None]]:
        return {
            "task-sent": self.task_sent,
            "task-received": self.task_received,
            "task-started": self.task_started,
            "task-succeeded": self.task_succeeded,
            "task-failed": self.task_failed,
            "task-retried": self.task_retried,
            "task-rejected": self.task_rejected,
            "task-revoked": self.task_revoked,
        }

    # ---- housekeeping (event thread, under the tracker's lock) ---------------------------

    def forget_hosts(self, hosts: set[str]) -> None:
        """Drop the worker-side series of hosts no live worker has any more."""
        self.labels.release_hosts(hosts)

        def keep(labels: Labels) -> bool:
            return labels[1] not in hosts

        for kind, counts in self.counts.items():
            if kind != "sent":
                self.counts[kind] = {k: v for k, v in counts.items() if keep(k)}
        self._initialised = {labels for labels in self._initialised if keep(labels)}
        for table in (self.runtime, self.queue_wait, self.failed_runtime):
            table.drop(keep)

    # ---- the handlers (hot path) ---------------------------------------------------------

    def _uuid(self, event: dict[str, Any]) -> str:
        uuid = event.get("uuid")
        if not isinstance(uuid, str) or not uuid or len(uuid) > 255:
            raise BadEvent("bad_uuid")
        return uuid

    def _task(self, uuid: str) -> TaskRecord:
        """A new in-flight record (callers looked it up first)."""
        record = self.tasks[uuid] = TaskRecord(UNKNOWN)
        if len(self.tasks) > self._config.max_tracked_tasks:
            self.tasks.popitem(last=False)  # oldest first: long-done or lost tasks
        return record

    def _name(self, record: TaskRecord, event: dict[str, Any]) -> None:
        raw = event.get("name")
        if raw is not None and record.name == UNKNOWN:
            record.name = self.labels.name(raw)

    def task_sent(self, event: dict[str, Any], now: float) -> None:
        uuid = self._uuid(event)
        sent_at = timestamp_of(event, now)
        eta = eta_timestamp(event.get("eta"))
        raw = event.get("queue") or event.get("routing_key")
        queue = None if raw is None else self.labels.queue(raw)
        host = self.labels.producer_host(event.get("hostname"))
        self.late_sends.sends_seen = True
        record = self.tasks.get(uuid)
        if record is None and self.late_sends.tasks:
            finished = self.late_sends.tasks.pop(uuid, None)
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
        counts = self.counts["sent"]
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
        counts = self.counts["sent"]
        counts[labels] = counts.get(labels, 0) + 1
        if record.started_at is not None and record.started_labels is not None:
            self._observe_wait(record.started_labels, sent_at, eta or record.eta, record.started_at)

    def _worker_task(
        self, event: dict[str, Any], kind: str, now: float
    ) -> tuple[str, TaskRecord, Labels]:
        """Common to every worker-side task event: find the task, label it, count it."""
        uuid = event.get("uuid")
        if type(uuid) is not str or not uuid or len(uuid) > 255:
            raise BadEvent("bad_uuid")
        record = self.tasks.get(uuid) or self._task(uuid)
        raw = event.get("hostname")
        known = self._worker_nodes.get(raw) if type(raw) is str else None
        if known is None:
            known = self.labels.worker_node(raw)
        nodename, host = known
        if record.name == UNKNOWN:
            self._name(record, event)
        if record.queue is None:
            record.queue = self._resolve_queue(record.name, nodename)
        labels = (record.name, host, record.queue)
        if labels not in self._initialised:
            self._initialised.add(labels)
            for zero_kind in ZERO_INITIALISED:
                self.counts[zero_kind].setdefault(labels, 0)
        worker = self._worker_records.get(nodename)
        if worker is None or not worker.task_events_seen:  # else it would do nothing
            self.workers.saw_task_event(nodename, now)
        if kind != "failed":
            self.counts[kind][labels] += 1
        return uuid, record, labels

    def _resolve_queue(self, name: str, nodename: str) -> str:
        """Where task-sent did not say: the worker's only queue, then the queue this task
        name was last sent to, then --default-queue-name."""
        consumed = self._worker_queues().get(nodename, ())
        if len(consumed) == 1:
            return consumed[0]
        return self._queue_by_name.get(name, self._config.default_queue_name)

    def task_received(self, event: dict[str, Any], now: float) -> None:
        uuid, record, _ = self._worker_task(event, "received", now)
        eta = eta_timestamp(event.get("eta"))
        if eta is not None:
            record.eta = eta
        received_at = event.get("timestamp")
        if type(received_at) is not float:  # the common case needs no further check
            received_at = worker_time(event, now)
        # _worker_task has checked the node name: this is its label_text(), cheaply.
        self.holdings.received(uuid, event["hostname"][:MAX_LABEL_LENGTH], received_at, eta)
        if record.started_at is None and record.queue is not None:  # prefetched: still waits
            expires = event.get("expires")
            expires = None if expires is None else timestamp_or_none(expires)
            self.queue_age.received(
                uuid, record.queue, record.sent_at, record.eta, expires, event["hostname"], now
            )

    def task_started(self, event: dict[str, Any], now: float) -> None:
        started_at = timestamp_of(event, now)
        uuid, record, labels = self._worker_task(event, "started", now)
        record.started_at = started_at
        self.holdings.done(uuid)
        self.missed.started(event["hostname"][:MAX_LABEL_LENGTH], started_at)
        self.queue_age.ended(uuid)
        if record.sent_at is not None:
            self._observe_wait(labels, record.sent_at, record.eta, started_at)
        else:  # its task-sent may still come (the task is published first, task-sent after it)
            record.started_labels = labels

    def _observe_wait(
        self, labels: Labels, sent_at: float, eta: float | None, started_at: float
    ) -> None:
        ready_at = sent_at if eta is None or eta < sent_at else eta
        # Producer and worker clocks differ; a negative wait is skew, not time travel.
        wait = max(0.0, started_at - ready_at)
        if wait <= MAX_DURATION:  # a far-future ETA or clock is not a wait to average
            self.queue_wait.observe(labels, wait)

    def _finished(self, uuid: str, record: TaskRecord, now: float) -> None:
        """Succeeded or failed: it leaves the in-flight table (late_sends.py)."""
        del self.tasks[uuid]  # done: later events for it are rare, and get name "unknown"
        self.holdings.done(uuid)
        self.queue_age.ended(uuid)
        self.late_sends.finished(uuid, record, now)

    def task_succeeded(self, event: dict[str, Any], now: float) -> None:
        runtime = event.get("runtime")
        value = duration(runtime) if runtime is not None else None
        uuid, record, labels = self._worker_task(event, "succeeded", now)
        if value is not None:
            self.runtime.observe(labels, value)
        self._finished(uuid, record, now)

    def task_failed(self, event: dict[str, Any], now: float) -> None:
        failed_at = timestamp_of(event, now)
        uuid, record, labels = self._worker_task(event, "failed", now)
        name, host, queue = labels
        failed = (name, host, exception_class(event.get("exception")), queue)
        counts = self.counts["failed"]
        counts[failed] = counts.get(failed, 0) + 1
        if record.started_at is not None:
            # Both times come from the worker's own clock, so no skew between hosts.
            ran = max(0.0, failed_at - record.started_at)
            if ran <= MAX_DURATION:
                self.failed_runtime.observe(labels, ran)
        self._finished(uuid, record, now)

    def task_retried(self, event: dict[str, Any], now: float) -> None:
        self._worker_task(event, "retried", now)

    def task_rejected(self, event: dict[str, Any], now: float) -> None:
        uuid, _, _ = self._worker_task(event, "rejected", now)
        self.holdings.done(uuid)

        if event.get("requeue") is True:
            self.queue_age.requeued(uuid, now)
        else:
            self.queue_age.ended(uuid)

    def task_revoked(self, event: dict[str, Any], now: float) -> None:
        uuid, _, _ = self._worker_task(event, "revoked", now)
        self.holdings.done(uuid)
        self.queue_age.ended(uuid)
