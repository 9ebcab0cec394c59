"""The in-flight table: uuid -> TaskRecord of tasks not finished yet, and how a worker-side task
event finds its task, its labels and the TaskRow it counts in.

A bounded table (--max-tracked-tasks, oldest dropped first) of what a later event of the same
task needs: its name, queue, send and start times, and the row of its last worker-side label
set, kept so that the next event of the task counts without hashing the label tuple (task_rows.py).
Written only from the event thread, under the tracker's lock (task_events.py calls it).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..config import Config
from .event_fields import UNKNOWN, BadEvent
from .task_labels import EventLabels
from .task_rows import Labels, TaskRow, TaskRowTable
from .workers import WorkerTable


@dataclass(slots=True)
class TaskRecord:
    name: str
    queue: str | None = None
    sent_at: float | None = None  # producer's clock
    eta: float | None = None
    started_at: float | None = None  # worker's clock
    # The run under way: the node name of the worker that started it, and when its
    # task-started arrived (exporter clock). Set by task-started; a run that ends without the
    # task leaving the table (retried, rejected, revoked) clears running_on. Read at scrape
    # time only (state/running_tasks.py).
    running_on: str | None = None
    running_since: float = 0.0
    # Set when it started before its task-sent was seen: the labels its wait is observed
    # under if that task-sent arrives late.
    started_labels: Labels | None = None
    # The row its worker-side events counted in last (state/in_flight.py checks it still fits).
    row: TaskRow | None = None


class InFlight:
    def __init__(
        self,
        config: Config,
        worker_queues: Callable[[], Mapping[str, tuple[str, ...]]],
        workers: WorkerTable,
    ) -> None:
        self._max_tasks = config.max_tracked_tasks
        self._default_queue = config.default_queue_name
        self._worker_queues = worker_queues  # from the inspect poll; read-only here
        self.workers = workers
        self._worker_records = workers.records  # read-only here
        self.tasks: OrderedDict[str, TaskRecord] = OrderedDict()
        self.task_rows = TaskRowTable()  # the zero-initialised kinds' counts
        self.queue_by_name: dict[str, str] = {}  # the queue each task name was last sent to
        self.labels = EventLabels(config)
        self._worker_nodes = self.labels.worker_nodes  # the memos: the hot path's first try
        self._name_memo = self.labels.name_memo

    def new(self, uuid: str, event: dict[str, Any] | None = None) -> TaskRecord:
        """A new in-flight record (callers looked it up first), named from `event` if given:
        name() inlined, after the record is in the table, as a bad name leaves it there."""
        record = self.tasks[uuid] = TaskRecord(UNKNOWN)
        if len(self.tasks) > self._max_tasks:
            self.tasks.popitem(last=False)  # oldest first: long-done or lost tasks
        raw = None if event is None else event.get("name")
        if raw is not None:
            name = self._name_memo.get(raw) if type(raw) is str else None
            record.name = name if name is not None else self.labels.name(raw)
        return record

    def name(self, record: TaskRecord, event: dict[str, Any]) -> None:
        """Names an unnamed record from the event's `name`, if it has one."""
        raw = event.get("name")
        if raw is not None and record.name == UNKNOWN:
            name = self._name_memo.get(raw) if type(raw) is str else None
            record.name = name if name is not None else self.labels.name(raw)

    def worker_task(
        self, event: dict[str, Any], now: float
    ) -> tuple[str, TaskRecord, TaskRow, str]:
        """Common to every worker-side task event: find the task and the row it counts in
        (the caller counts it). Returns uuid, record, task_row, the worker's node name."""
        uuid: Any = event.get("uuid")
        record = self.tasks.get(uuid) if type(uuid) is str else None
        if record is None:  # a uuid in the table was checked when it came in: only new ones
            if type(uuid) is not str or not uuid or len(uuid) > 255:
                raise BadEvent("bad_uuid")
            record = self.new(uuid)
        raw = event.get("hostname")
        known = self._worker_nodes.get(raw) if type(raw) is str else None
        if known is None:
            known = self.labels.worker_node(raw)
        nodename, host = known
        # The kept row is this event's while the event's host is its host (a redelivery may
        # move the task) and that host was not forgotten since. Its name and queue are the
        # record's: it is kept only once the task is named, and task_sent() drops it when
        # it moves the task's queue (three comparisons per event fewer).
        task_row = record.row
        if task_row is None or task_row.labels[1] != host or not task_row.live:
            task_row = self._row(record, event, nodename, host)
        worker = self._worker_records.get(nodename)
        if worker is None or not worker.task_events_seen:  # else it would do nothing
            self.workers.saw_task_event(nodename, now)
        return uuid, record, task_row, nodename

    def _row(self, record: TaskRecord, event: dict[str, Any], nodename: str, host: str) -> TaskRow:
        """The record's labels from this event, and their row (zero-initialised when new)."""
        if record.name == UNKNOWN:
            self.name(record, event)
        queue = record.queue
        if queue is None:
            queue = record.queue = self.resolve_queue(record.name, nodename)
        task_row = self.task_rows.get((record.name, host, queue))
        if record.name != UNKNOWN:  # else the next event may name it: not kept
            record.row = task_row
        return task_row

    def resolve_queue(self, name: str, nodename: str) -> str:
        """Where task-sent did not say: the worker's only queue, then the queue this task
        name was last sent to, then --default-queue-name."""
        consumed = self._worker_queues().get(nodename, ())
        if len(consumed) == 1:
            return consumed[0]
        return self.queue_by_name.get(name, self._default_queue)
