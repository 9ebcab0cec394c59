"""How long the oldest running task of each queue, and of each (task name, queue), has run.

A started task that never finishes (a call with no timeout, a deadlock) shows in no other
figure until the queue behind it backs up, and on a quiet queue never. This module reads it off
the in-flight table (state/in_flight.py) at scrape time: the event path pays only the two
fields task-started sets (TaskRecord.running_on, running_since) and the one that retried,
rejected and revoked clear. Pure; Tracker.snapshot() calls oldest_running() under its lock.
Cost per scrape: one pass over the in-flight table (at most --max-tracked-tasks records),
and a sort of one worker's running tasks where its heartbeat says it runs fewer.

Clock: a run is timed from when its task-started reached the exporter, on the exporter's clock,
against the exporter's clock at the scrape. The worker's own timestamp is not used: a worker
whose clock is off would age or rejuvenate its tasks by that much. Events are batched (about a
second on prefork), so the age is a lower bound by that delay.

What counts as running: started, and the run not ended (task-succeeded and task-failed take
the record out of the table; task-retried, and a task-rejected or task-revoked from the worker
running it, end the run), on a worker that is still there:
- a worker that is down (no heartbeat for --worker-timeout) or said goodbye takes its running
  tasks out of this figure: they are lost with it (the lost-task counters), not hung;
- a worker no longer in the worker table (purged, evicted, or past --max-workers) likewise;
- a worker known only from task events so far (no heartbeat yet) keeps all of its tasks.

Phantoms: a task whose terminal event was missed would look like it runs forever. A worker's
last heartbeat says how many tasks it runs (`active`): of its tasks whose task-started came
more than HEARTBEAT_GRACE before that heartbeat, at most `active` count, the newest; those that
started later all count. So a missed terminal event ages nothing once the worker's heartbeat
says it runs fewer tasks (idle: none), at the price of reading low where a hung task and a
phantom newer than it share a worker. The in-flight table's bound (oldest dropped first) ends
any phantom at last, and the worker's departure at once.

Output is bounded like the table's labels: task names by --max-task-names (`__overflow__`),
pairs by the worker-side series (task_rows.py). Every (name, queue) with a worker-side series
reads 0 while none of its tasks runs, every queue of those likewise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter

from .in_flight import TaskRecord
from .task_rows import Labels
from .workers import WorkerRecord, WorkerView

# Task events are flushed about once a second and heartbeats come every 2 s: a task-started
# this long before a heartbeat is one that heartbeat's `active` counted, if it still ran.
HEARTBEAT_GRACE = 10.0

_since = attrgetter("running_since")


@dataclass(frozen=True, slots=True)
class RunningAges:
    tasks: dict[Labels, float] = field(default_factory=dict)  # (name, queue) -> seconds
    queues: dict[str, float] = field(default_factory=dict)  # queue -> seconds


def oldest_running(
    records: Iterable[TaskRecord],
    views: Iterable[WorkerView],
    workers: Mapping[str, WorkerRecord],
    known: Iterable[Labels],
    now: float,
) -> RunningAges:
    """Seconds the oldest running task of each (name, queue) and each queue has run.

    `records`: the in-flight table; `views`: the workers' liveness (WorkerTable.views(now));
    `workers`: the worker table itself; `known`: the (name, queue) pairs that read 0 when
    nothing of theirs runs."""
    by_worker: dict[str, list[TaskRecord]] = {}
    for record in records:
        worker = record.running_on
        if worker is not None and record.started_at is not None:  # a retry's re-send: waits
            runs = by_worker.get(worker)
            if runs is None:
                by_worker[worker] = [record]
            else:
                runs.append(record)
    alive = {view.worker: view for view in views}
    started: dict[tuple[str, str], float] = {}  # (name, queue) -> the earliest running_since
    for worker, runs in by_worker.items():
        for record in _counted(runs, alive.get(worker), workers.get(worker)):
            queue = record.queue
            if queue is None:  # resolved by its first worker-side event: never here
                continue
            pair = (record.name, queue)
            since = record.running_since
            if since < started.get(pair, math.inf):
                started[pair] = since
    tasks = dict.fromkeys(known, 0.0)
    queues = dict.fromkeys((queue for _, queue in tasks), 0.0)
    for pair, since in started.items():
        age = tasks[pair] = max(now - since, 0.0)
        if age > queues.get(pair[1], -1.0):
            queues[pair[1]] = age
    return RunningAges(tasks, queues)


def _counted(
    runs: list[TaskRecord], view: WorkerView | None, worker: WorkerRecord | None
) -> list[TaskRecord]:
    """The runs of one worker that count as running (see the module docstring)."""
    if view is None:
        # No view: no heartbeat yet (all count), or not tracked, or purgeable (none).
        return runs if worker is not None and worker.last_heartbeat is None else []
    if not view.up:
        return []
    active, heartbeat = view.active, view.last_heartbeat
    if active is None or heartbeat is None or len(runs) <= active:
        return runs
    settled = heartbeat - HEARTBEAT_GRACE
    judged = [run for run in runs if run.running_since < settled]
    if len(judged) <= active:
        return runs
    judged.sort(key=_since, reverse=True)
    return [run for run in runs if run.running_since >= settled] + judged[:active]
