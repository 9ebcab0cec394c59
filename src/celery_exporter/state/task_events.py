"""Task events: the handlers of task-sent ... task-revoked and the tables they write.

Per (name, hostname, queue) counts and the runtime and queue-wait histograms; the in-flight
tasks are in state/in_flight.py. Each handler is a few dict operations; the tracker calls them under
its lock and counts the event. The hooks of queue_age, holding and missed get what they need
from here.

A task-sent may arrive after its task started or even finished (state/late_sends.py). Such a late
send still observes the wait, under the labels the worker-side events used; a retry's re-send
(stamped after the start, by the worker) makes the task wait again.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Mapping
from typing import Any

from ..config import Config
from .beat_runs import BeatRuns
from .broker_evidence import timestamp_or_none
from .event_fields import (
    MAX_DURATION,
    REVOKE_REASONS,
    UNKNOWN,
    BadEvent,
    duration,
    eta_timestamp,
    exception_class,
    revoke_reason,
    timestamp_of,
    worker_time,
)
from .held_tasks import HeldTasks
from .in_flight import InFlight, TaskRecord
from .late_sends import LateSends
from .missed_events import MissedEvents
from .queue_age import QueueAge
from .task_rows import (
    RECEIVED,
    REJECTED,
    RETRIED,
    REVOKED,
    STARTED,
    SUCCEEDED,
    ZERO_INITIALISED,
    HistogramTable,
    Labels,
)
from .workers import WorkerTable

TASK_KINDS = (*ZERO_INITIALISED, "sent", "failed")


class TaskEvents:
    """The task-event handlers and the per-label tables they write, owned by one Tracker.

    The handlers are the exporter's hot path: four of them (sent, received, started,
    succeeded) take about 95% of all events. They are written for speed where it was measured
    to pay (bench/tracker_ingest.py): the common case of a check is tested inline and the
    general function is called only when it fails; the other modules' tables are bound once
    and asked inline, so a hook that has nothing to do costs a dict lookup, not a call.
    """

    def __init__(
        self,
        config: Config,
        now: float,
        worker_queues: Callable[[], Mapping[str, tuple[str, ...]]],
        workers: WorkerTable,
        held_tasks: HeldTasks,
        missed: MissedEvents,
        queue_age: QueueAge,
        beat_runs: BeatRuns | None = None,
    ) -> None:
        self.in_flight = InFlight(config, worker_queues, workers)
        self.tasks = self.in_flight.tasks
        self.labels = self.in_flight.labels
        self.task_rows = self.in_flight.task_rows
        self._worker_task = self.in_flight.worker_task
        self._queue_memo = self.labels.queue_memo  # the memos: the hot path's first try
        self._producer_memo = self.labels.producer_memo
        self.held_tasks = held_tasks
        self._holder_of = held_tasks.owner  # held_tasks.done() is inlined: a pop and a del
        self.missed = missed
        self.queue_age = queue_age
        self._waiting = queue_age.waiting  # queue_age.ended() is a pop from it
        self.sent: dict[Labels, int] = {}  # labels with the producer's host
        self.failed: dict[Labels, int] = {}  # (name, hostname, exception, queue)
        self.runtime = HistogramTable(config.runtime_buckets)
        self._runtime_bounds = config.runtime_buckets
        self.queue_wait = HistogramTable(config.queue_wait_buckets)
        self._wait_bounds = config.queue_wait_buckets
        self.failed_runtime = HistogramTable(config.runtime_buckets)
        self.late_sends = LateSends(now)  # finished tasks whose task-sent may still come
        # Runs of the beat_schedule's tasks (state/beat_runs.py): empty without --app, so an
        # event pays one lookup in an empty dict.
        self.beat_runs = BeatRuns(()) if beat_runs is None else beat_runs
        self._beat_sent = self.beat_runs.sent
        self._beat_received = self.beat_runs.received

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

        self.task_rows.drop(keep)
        self.failed = {labels: n for labels, n in self.failed.items() if keep(labels)}
        for table in (self.runtime, self.queue_wait, self.failed_runtime):
            table.drop(keep)

    def counts(self) -> dict[str, dict[Labels, int]]:
        """kind -> labels -> count: a copy, in TASK_KINDS order, then revoked_by_reason."""
        return {
            **self.task_rows.counts(),
            "sent": self.sent.copy(),
            "failed": self.failed.copy(),
            "revoked_by_reason": self._revoked_by_reason(),
        }

    def _revoked_by_reason(self) -> dict[Labels, int]:
        """(name, hostname, queue, reason) -> count: every reason of a row once it has any
        revoke, so that the first of another reason is an increase from 0."""
        return {
            (*labels, reason): by_reason[index]
            for labels, task_row in self.task_rows.rows.items()
            if (by_reason := task_row.revoked_by) is not None
            for index, reason in enumerate(REVOKE_REASONS)
        }

    # ---- the handlers (hot path) ---------------------------------------------------------

    def task_sent(self, event: dict[str, Any], now: float) -> None:  # noqa: PLR0915 (inlined)
        uuid = event.get("uuid")
        if type(uuid) is not str or not uuid or len(uuid) > 255:
            raise BadEvent("bad_uuid")
        sent_at = event.get("timestamp")
        if type(sent_at) is not float or not abs(sent_at - now) <= MAX_DURATION:
            sent_at = timestamp_of(event, now)  # not the common case: the full check
        eta = event.get("eta")
        if eta is not None:
            eta = eta_timestamp(eta)
        raw = event.get("queue") or event.get("routing_key")
        if raw is None:
            queue = None
        else:
            queue = self._queue_memo.get(raw) if type(raw) is str else None
            if queue is None:
                queue = self.labels.queue(raw)
        raw = event.get("hostname")
        host = self._producer_memo.get(raw) if type(raw) is str else None
        if host is None:
            host = self.labels.producer_host(raw)
        late_sends = self.late_sends
        late_sends.sends_seen = True
        record = self.tasks.get(uuid)
        if record is None and late_sends.tasks:
            finished = late_sends.tasks.pop(uuid, None)
            if finished is not None:  # it ran and finished before this send was seen
                self._count_late_send(finished, event, host, queue, sent_at, eta)
                return
        if record is None:
            record = self.in_flight.new(uuid, event)  # named from the event: one call, not two
        elif record.name == UNKNOWN:
            self.in_flight.name(record, event)
        started_at = record.started_at
        if started_at is not None and record.sent_at is None and sent_at <= started_at:
            # Published before it started, seen after: the original send, not a retry's
            # re-send (the worker stamps that after the start). It waits no more.
            record.sent_at, record.eta = sent_at, eta or record.eta
            self._count_late_send(record, event, host, queue, sent_at, eta)
            return
        # A retry re-sends the same uuid: it waits again from this send.
        record.sent_at, record.eta, record.started_at = sent_at, eta, None
        name = record.name
        if name in self._beat_sent:
            self.beat_runs.saw_sent(name, sent_at)
        if queue is not None:
            if queue != record.queue:  # its kept row was of the old queue (state/in_flight.py)
                record.queue, record.row = queue, None
            if name != UNKNOWN:
                self.in_flight.queue_by_name[name] = queue
        else:
            queue = self.in_flight.resolve_queue(name, "")
        labels = (name, host, queue)
        counts = self.sent
        counts[labels] = counts.get(labels, 0) + 1
        expires = event.get("expires")
        expires = None if expires is None else timestamp_or_none(expires)
        self.queue_age.sent(uuid, queue, sent_at, eta, expires, now)

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
        self.in_flight.name(record, event)
        if record.name in self._beat_sent:
            self.beat_runs.saw_sent(record.name, sent_at)
        if queue is not None and record.name != UNKNOWN:
            self.in_flight.queue_by_name[record.name] = queue
        # The queue its worker-side events were counted under does not move.
        labels = (record.name, host, queue or self.in_flight.resolve_queue(record.name, ""))
        counts = self.sent
        counts[labels] = counts.get(labels, 0) + 1
        if record.started_at is not None and record.started_labels is not None:
            self._observe_wait(record.started_labels, sent_at, eta or record.eta, record.started_at)

    def task_received(self, event: dict[str, Any], now: float) -> None:
        uuid, record, task_row, nodename = self._worker_task(event, now)
        task_row.counts[RECEIVED] += 1
        eta = event.get("eta")
        if eta is not None:
            eta = record.eta = eta_timestamp(eta)
        received_at = event.get("timestamp")
        if type(received_at) is not float:  # the common case needs no further check
            received_at = worker_time(event, now)
        if record.name in self._beat_received:  # checked in full: it decides an alert
            self.beat_runs.saw_received(record.name, worker_time(event, now))
        self.held_tasks.received(uuid, nodename, received_at, eta)
        if record.started_at is None:  # prefetched: still waits
            entry = self._waiting.get(uuid)
            if entry is not None:  # queue_age.received() inlined for a task whose send was seen
                ready = record.eta
                if ready is not None and ready > entry.ready_at:
                    entry.ready_at = ready
                entry.holder, entry.held_since = event["hostname"], now
                return
            expires = event.get("expires")
            expires = None if expires is None else timestamp_or_none(expires)
            self.queue_age.received(
                uuid,
                task_row.labels[2],
                record.sent_at,
                record.eta,
                expires,
                event["hostname"],
                now,
            )

    def task_started(self, event: dict[str, Any], now: float) -> None:
        started_at = event.get("timestamp")
        if type(started_at) is not float or not abs(started_at - now) <= MAX_DURATION:
            started_at = timestamp_of(event, now)  # not the common case: the full check
        uuid, record, task_row, nodename = self._worker_task(event, now)
        task_row.counts[STARTED] += 1
        record.started_at = started_at
        record.running_on, record.running_since = nodename, now  # state/running_tasks.py
        held_in = self._holder_of.pop(uuid, None)  # held_tasks.done(), inlined
        if held_in is not None:
            del held_in[uuid]
        self.missed.started(nodename, started_at)
        self._waiting.pop(uuid, None)  # queue_age.ended()
        sent_at = record.sent_at
        if sent_at is None:  # its task-sent may still come (published first, task-sent after)
            record.started_labels = task_row.labels
            return
        eta = record.eta
        ready_at = sent_at if eta is None or eta < sent_at else eta
        # Producer and worker clocks differ; a negative wait is skew, not time travel.
        wait = started_at - ready_at if started_at > ready_at else 0.0  # (max() is a call)
        if wait <= MAX_DURATION:  # a far-future ETA or clock is not a wait to average
            row = task_row.wait
            if row is None:
                row = task_row.wait = self.queue_wait.row(task_row.labels)
            row[bisect_left(self._wait_bounds, wait)] += 1  # task_rows.observe_into(), inlined
            row[-1] += wait

    def _observe_wait(
        self, labels: Labels, sent_at: float, eta: float | None, started_at: float
    ) -> None:
        """task_started's observation, for a late send (by labels: its series may be gone)."""
        ready_at = sent_at if eta is None or eta < sent_at else eta
        wait = max(0.0, started_at - ready_at)
        if wait <= MAX_DURATION:
            self.queue_wait.observe(labels, wait)

    def _finished(self, uuid: str, record: TaskRecord, now: float) -> None:
        """Succeeded or failed: it leaves the in-flight table (state/late_sends.py)."""
        del self.tasks[uuid]  # done: later events for it are rare, and get name "unknown"
        self.held_tasks.done(uuid)
        self._waiting.pop(uuid, None)  # queue_age.ended()
        if record.sent_at is None:  # else late_sends.finished() would do nothing
            self.late_sends.finished(uuid, record, now)

    def task_succeeded(self, event: dict[str, Any], now: float) -> None:
        runtime = event.get("runtime")
        if runtime is not None and (
            type(runtime) is not float or not 0.0 <= runtime <= MAX_DURATION
        ):
            runtime = duration(runtime)  # not the common case: the full check
        uuid, record, task_row, _ = self._worker_task(event, now)
        task_row.counts[SUCCEEDED] += 1
        if runtime is not None:
            row = task_row.runtime
            if row is None:
                row = task_row.runtime = self.runtime.row(task_row.labels)
            row[bisect_left(self._runtime_bounds, runtime)] += 1  # observe_into(), inlined
            row[-1] += runtime
        # _finished() inlined: a third of all tasks' events end here.
        del self.tasks[uuid]
        if uuid in self._holder_of:  # rarely held still: task-started took it out
            self.held_tasks.done(uuid)
        self._waiting.pop(uuid, None)
        if record.sent_at is None:
            self.late_sends.finished(uuid, record, now)

    def task_failed(self, event: dict[str, Any], now: float) -> None:
        failed_at = timestamp_of(event, now)
        uuid, record, task_row, _ = self._worker_task(event, now)
        name, host, queue = labels = task_row.labels
        failed = (name, host, exception_class(event.get("exception")), queue)
        self.failed[failed] = self.failed.get(failed, 0) + 1
        if record.started_at is not None:
            # Both times come from the worker's own clock, so no skew between hosts.
            ran = max(0.0, failed_at - record.started_at)
            if ran <= MAX_DURATION:
                self.failed_runtime.observe(labels, ran)
        self._finished(uuid, record, now)

    def task_retried(self, event: dict[str, Any], now: float) -> None:
        _, record, task_row, _ = self._worker_task(event, now)
        task_row.counts[RETRIED] += 1
        record.running_on = None  # this run ended; a retry's run starts again

    def task_rejected(self, event: dict[str, Any], now: float) -> None:
        uuid, record, task_row, nodename = self._worker_task(event, now)
        task_row.counts[REJECTED] += 1
        if record.running_on == nodename:  # another worker's copy does not end this run
            record.running_on = None
        self.held_tasks.done(uuid)
        if event.get("requeue") is True:
            self.queue_age.requeued(uuid, now)
        else:
            self.queue_age.ended(uuid)

    def task_revoked(self, event: dict[str, Any], now: float) -> None:
        uuid, record, task_row, nodename = self._worker_task(event, now)
        task_row.counts[REVOKED] += 1
        by_reason = task_row.revoked_by
        if by_reason is None:
            by_reason = task_row.revoked_by = [0] * len(REVOKE_REASONS)
        by_reason[revoke_reason(event)] += 1
        if record.running_on == nodename:  # terminated; another worker's copy ends nothing
            record.running_on = None
        self.held_tasks.done(uuid)
        self.queue_age.ended(uuid)
