"""Cluster state built from Celery events: the only writer of what the metrics report.

Pure code, no I/O; the clock is injected. The event thread calls record_message(); scrapes call
snapshot(), which copies the tables under the same short lock. Memory is bounded by
(task names x hosts x queues) plus a fixed-size table of in-flight tasks, never by tasks seen.

This module is the core: input (one guard per event, dispatch, counting), worker events, the
deferral of a new worker's first task events (deferred_events.py), housekeeping and the
snapshot. The task events and the tables they write are in task_events.py.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from typing import Any

from ..config import Config
from .beat_runs import BeatRuns
from .broker_evidence import BrokerEvidence
from .deferred_events import ArrivalNotices, DeferredEvents
from .event_fields import BadEvent, int_field, label_text, worker_time
from .held_tasks import HeldTasks
from .missed_events import MissedEvents
from .queue_age import QueueAge
from .running_tasks import RunningAges, oldest_running
from .task_events import TASK_KINDS, TaskEvents
from .task_rows import Labels
from .workers import WorkerTable, WorkerView

log = logging.getLogger(__name__)

TASK_EVENTS = frozenset(f"task-{kind}" for kind in TASK_KINDS)
WORKER_EVENTS = frozenset({"worker-online", "worker-heartbeat", "worker-offline"})


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
    running: RunningAges = field(default_factory=RunningAges)  # oldest running task ages
    # worker -> (prefetched, scheduled) tasks it holds
    held_tasks: dict[str, tuple[int, int]] = field(default_factory=dict)
    missed: dict[str, int] = field(default_factory=dict)  # worker -> task events missed


class Tracker:
    def __init__(
        self,
        config: Config,
        clock: Callable[[], float],
        worker_queues: Callable[[], Mapping[str, tuple[str, ...]]] = dict,
        arrivals: ArrivalNotices | None = None,
        broker_evidence: Callable[[], BrokerEvidence | None] = lambda: None,
        beat_tasks: Iterable[str] = (),
    ) -> None:
        self._config = config
        self._clock = clock
        self._worker_queues = worker_queues  # from the inspect poll; read-only here
        self._deferred = DeferredEvents(arrivals)
        self._broker_evidence = broker_evidence  # from the queue poll; read-only here
        self.queue_age = QueueAge(config.max_tracked_tasks, config.queue_expiry)
        self._lock = threading.Lock()
        self.workers = WorkerTable(
            config.worker_timeout, config.purge_offline_worker_metrics, config.max_workers
        )
        self.held_tasks = HeldTasks(config.max_tracked_tasks)
        self.missed = MissedEvents(config.max_workers)
        self.beat_runs = BeatRuns(())
        self.tasks = TaskEvents(
            config,
            clock(),
            worker_queues,
            self.workers,
            self.held_tasks,
            self.missed,
            self.queue_age,
            self.beat_runs,
        )
        # The beat_schedule's task names (--app) take their places under --max-task-names
        # first, so that their events are never folded into __overflow__ and always match;
        # the table is keyed by the label value, the schedule's name cut as every label is.
        self._beat_keys = {name: self.tasks.labels.name(name) for name in beat_tasks}
        self.beat_runs.add(self._beat_keys.values())
        self._events: dict[str, int] = {}  # a plain dict: twice as fast per event as a Counter
        self._errors: Counter[str] = Counter()
        self._last_event: float | None = None
        self._handlers: dict[str, Callable[[dict[str, Any], float], None]] = {
            **self.tasks.handlers(),
            "worker-online": self._worker_heartbeat,
            "worker-heartbeat": self._worker_heartbeat,
            "worker-offline": self._worker_offline,
        }

    # ---- input -------------------------------------------------------------------------

    def record_message(self, body: Any) -> None:
        """One decoded message: an event dict, or a list of them (prefork's task.multi).
        record_messages() for one body, without building a run list: every task-sent is a
        message of its own, so a quarter of all events pay this per-message cost."""
        now = self._clock()
        with self._lock:
            if self._deferred.nodes:
                self._release_deferred(now)
            self._record_events(body if type(body) is list else (body,), now)

    def record_messages(self, bodies: Sequence[Any]) -> None:
        """Messages read together (the bodies of one socket read on Redis): one clock
        reading and one lock for all of them, which per message cost as much as an event."""
        now = self._clock()
        with self._lock:
            if self._deferred.nodes:
                self._release_deferred(now)
            events: list[Any] = []  # one run of events, prefork's task.multi lists unpacked
            for body in bodies:
                if type(body) is list:
                    events += body
                else:
                    events.append(body)
            self._record_events(events, now)

    def record_error(self, reason: str) -> None:
        """A message the consumer could not even decode."""
        with self._lock:
            self._errors[reason] += 1

    def _record_events(self, events: Iterable[Any], now: float) -> None:
        """Count events that came at `now`, in order. The loop is the hot path: the events of
        a known type are dispatched inline, and only bad and unknown ones take _record(), which
        counts them the same way; _last_event is written once per call, not per event."""
        handlers = self._handlers
        counted = self._events
        deferred = self._deferred
        fresh = False  # events counted here since _last_event was written
        for event in events:
            try:  # no type() checks first: what is no dict, or has an unhashable type, raises
                kind = event.get("type")
                handler = handlers.get(kind)
            except (AttributeError, TypeError):
                handler = None
            if handler is None:  # other types and bad ones
                if fresh:  # in event order, as _record() writes it too
                    self._last_event, fresh = now, False
                self._record(event, now)
                continue
            if deferred.nodes and deferred.take(event, now):
                if deferred.count >= deferred.max_events:
                    if fresh:
                        self._last_event, fresh = now, False
                    self._release_deferred(now)
                continue  # counted when its worker's queues are known (state/deferred_events.py)
            try:
                handler(event, now)
            except BadEvent as exc:
                self._errors[exc.reason] += 1
                continue
            except Exception:  # the one guard around a single event: count it and go on
                log.debug("event handler failed", exc_info=True)
                self._errors["unexpected"] += 1
                continue
            counted[kind] = counted.get(kind, 0) + 1
            fresh = True
        if fresh:
            self._last_event = now

    def _record(self, event: Any, now: float) -> None:
        """An event of no known type, or no dict at all: counted as other, or as an error."""
        try:
            if type(event) is not dict:
                raise BadEvent("not_a_dict")
            kind = event.get("type")
            if not isinstance(kind, str):
                try:
                    hash(kind)
                except TypeError:  # a list or dict: the handler lookup used to raise on it,
                    raise BadEvent("unexpected") from None  # so counted "unexpected" still
                raise BadEvent("bad_type")
            if kind != "task-cancelled":
                kind = "other"  # custom event types must not mint label values
            self._events[kind] = self._events.get(kind, 0) + 1
            self._last_event = now
        except BadEvent as exc:
            self._errors[exc.reason] += 1

    # ---- new workers: ask their queues, defer their first task events (state/deferred_events.py)

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
            self._deferred.worker_appeared(nodename, now)

    def _release_deferred(self, now: float) -> None:
        released = self._deferred.due(now)
        if not released:
            return  # the common case while a deferral runs: asked before every message
        # Counted as they came: the events of one message share their time, so in runs.
        for came_at, run in groupby(released, key=itemgetter(1)):
            self._record_events([event for event, _ in run], came_at)

    def release_deferred(self) -> None:
        """Count deferred task events that are due. The event thread calls this between messages,
        so a quiet stream does not keep them past their worker's answer."""
        if self._deferred.nodes:
            with self._lock:
                self._release_deferred(self._clock())
        else:
            self._deferred.drop_settled()

    # ---- worker events -----------------------------------------------------------------

    def _worker_offline(self, event: dict[str, Any], now: float) -> None:
        self.workers.offline(event, now)
        self._worker_counts(event, now)
        # Its unacknowledged messages go back to the broker: it holds nothing any more.
        nodename = label_text(event.get("hostname"), "hostname")
        self.held_tasks.forget_worker(nodename)
        self.queue_age.worker_left(nodename, now)

    def _worker_counts(self, event: dict[str, Any], now: float) -> None:
        """What `active` and `processed` say about held tasks and missed task events."""
        nodename = label_text(event.get("hostname"), "hostname")
        sent_at = worker_time(event, now)
        processed = int_field(event, "processed")
        if processed is not None:
            self.missed.heartbeat(nodename, sent_at, processed)
        if int_field(event, "active") == 0:
            self.held_tasks.idle(nodename, sent_at)

    # ---- housekeeping and output -------------------------------------------------------

    def expire(self) -> None:
        """Forget purged workers and, where no live worker shares their host, their task
        series. Called from the event thread between messages."""
        evidence = self._broker_evidence()  # outside the lock: the poller has its own
        with self._lock:
            now = self._clock()
            self.queue_age.prune(now, self.workers.views(now), evidence)
            self.tasks.late_sends.expire(now)
            gone = self.workers.expire(now)
            if not gone:
                return
            for record in gone:
                self.held_tasks.forget_worker(record.worker)
                self.missed.forget(record.worker)
            self.tasks.forget_hosts({r.hostname for r in gone} - self.workers.live_hostnames())

    def beat_last_runs(self) -> dict[str, float]:
        """Scheduled task name (as the beat_schedule spells it) -> Unix time of its last run
        seen; names never seen are left out (state/beat_runs.py)."""
        with self._lock:
            runs = self.beat_runs.last_runs()
        return {name: runs[key] for name, key in self._beat_keys.items() if key in runs}

    def snapshot(self) -> Snapshot:
        now = self._clock()
        evidence = self._broker_evidence()
        tasks = self.tasks
        with self._lock:
            overflow = {**tasks.labels.overflowed(), "worker": self.workers.overflowed}
            views = self.workers.views(now)
            # Zero for every (name, queue) of a worker-side series (state/running_tasks.py),
            # in the series' order: a set's would change with the hash seed.
            known = dict.fromkeys((name, queue) for name, _, queue in tasks.task_rows.rows)
            running = oldest_running(tasks.tasks.values(), views, self.workers.records, known, now)
            return Snapshot(
                task_counts=tasks.counts(),
                runtime=tasks.runtime.copy(),
                queue_wait=tasks.queue_wait.copy(),
                failed_runtime=tasks.failed_runtime.copy(),
                workers=views,
                events=dict(self._events),
                errors=dict(self._errors),
                overflow=overflow,
                last_event=self._last_event,
                tracked_tasks=len(tasks.tasks),
                running=running,
                held_tasks=self.held_tasks.counts(now),
                missed=self.missed.totals(),
                queue_ages=self.queue_age.ages(now, evidence),
            )
